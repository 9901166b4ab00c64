//! Descriptions of routes for people: the order targets are tried in, and warnings about
//! gaps in a fallback chain.

use std::fmt::Write;

use super::{Engine, ModelSpec, Route};
use crate::config::{ConfigIssue, FailoverPolicy, HedgeDelay, RegionStrategy, TargetOrder};

impl Engine {
    /// Describes how `route` orders its targets, or `None` for an unknown route.
    pub fn explain(&self, route: &str) -> Option<String> {
        self.routes.get(route).map(|route| route.explain())
    }

    /// Returns the requests and tokens the rate limit of `route` would admit now, or
    /// `None` when the route is unknown or has no rate limit.
    pub fn route_limits(&self, route: &str) -> Option<(u64, Option<u64>)> {
        let limiter = self.routes.get(route)?.limiter.as_ref()?;
        let now = adpa_resilience::clock::now();
        Some((
            limiter.remaining_requests(now),
            limiter.remaining_tokens(now),
        ))
    }

    /// Returns warnings about routes whose fallback chain has a gap: a capability that
    /// only the first model has, or that no model has.
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        self.routes
            .values()
            .filter(|route| !route.implicit)
            .flat_map(|route| route.warnings())
            .collect()
    }
}

/// Reads one capability of a model.
type HasCapability = fn(&ModelSpec) -> bool;

impl Route {
    fn explain(&self) -> String {
        let mut text = String::new();
        let policy = match self.failover_policy {
            FailoverPolicy::Sequential => "sequential".to_owned(),
            FailoverPolicy::RoundRobin => {
                "round_robin (each request starts one provider later)".to_owned()
            }
            FailoverPolicy::Weighted => {
                let shares: Vec<String> = self
                    .providers
                    .iter()
                    .zip(&self.provider_weights)
                    .map(|(provider, weight)| format!("{} {weight}", provider.name))
                    .collect();
                format!(
                    "weighted (providers drawn per request by weight: {})",
                    shares.join(", ")
                )
            }
        };
        let order = match self.order {
            TargetOrder::ModelFirst => "by model weight, then provider",
            TargetOrder::ProviderFirst => "by provider, then model weight",
        };
        let _ = writeln!(
            text,
            "route {}: targets ordered {order}; failover_policy = {policy}",
            self.name
        );

        for (index, target) in self.configured_order().iter().enumerate() {
            let _ = writeln!(
                text,
                "  {:>2}. {:<40} weight {:.2}  {}",
                index + 1,
                target.id,
                target.model.weight,
                describe_model(&target.model)
            );
        }

        for provider in &self.providers {
            let regions = provider.targets.iter().map(Vec::len).max().unwrap_or(0);
            if regions > 1 {
                let strategy = match provider.region_strategy {
                    RegionStrategy::Sequential => "sequential: in the order written".to_owned(),
                    RegionStrategy::RoundRobin => "round_robin: each request starts one region later".to_owned(),
                    RegionStrategy::LatencyBased => format!(
                        "latency_based: fastest healthy region first; a region idle for {:?} is tried first once",
                        provider.region_exploration
                    ),
                };
                let _ = writeln!(text, "  regions of {}: {strategy}", provider.name);
            }
        }
        match self.hedge_delay {
            Some(HedgeDelay::Fixed(delay)) => {
                let _ = writeln!(
                    text,
                    "  hedging: an attempt without an answer after {delay:?} gets one more on the next target"
                );
            }
            Some(HedgeDelay::Percentile(percent)) => {
                let _ = writeln!(
                    text,
                    "  hedging: an attempt without an answer after p{percent} of its target's recent latency gets one more on the next target"
                );
            }
            None => {}
        }
        text.push_str(
            "  skipped per request: targets whose breaker is open, whose weight is below \
             x-adpa-min-quality, whose context window is too small for the prompt, or whose \
             model lacks tools, JSON mode or images the request uses\n",
        );
        text
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        let path = format!("routes.{}.models", self.name);
        let capabilities: [(&str, HasCapability); 3] = [
            ("tools", |model| model.tools),
            ("json_mode", |model| model.json_mode),
            ("vision", |model| model.vision),
        ];

        let mut warnings = Vec::new();
        for (capability, has) in capabilities {
            let capable: Vec<&str> = self
                .models
                .iter()
                .filter(|model| has(model))
                .map(|model| &*model.name)
                .collect();
            if capable.is_empty() {
                warnings.push(ConfigIssue::new(
                    &path,
                    format!(
                        "no model supports {capability}; requests that use it will be rejected"
                    ),
                ));
            } else if self.models.len() > 1 && capable == [&*self.models[0].name] {
                warnings.push(ConfigIssue::new(
                    &path,
                    format!(
                        "only `{}` supports {capability}; requests that use it have no fallback",
                        capable[0]
                    ),
                ));
            }
        }
        warnings.extend(self.hedge_warning());
        warnings
    }

    /// Warns about a hedge delay under which no hedge can ever start.
    fn hedge_warning(&self) -> Option<ConfigIssue> {
        let delay = self.hedge_delay?;
        let path = format!("routes.{}.hedge_delay", self.name);
        if self.target_count < 2 {
            return Some(ConfigIssue::new(
                path,
                "the route has one target, so no hedge can start; add secondaries or remove it",
            ));
        }
        match delay {
            HedgeDelay::Fixed(delay) if delay >= self.timeouts.total_timeout => {
                Some(ConfigIssue::new(
                    path,
                    format!(
                        "{delay:?} is not shorter than total_timeout ({:?}), so no hedge can start",
                        self.timeouts.total_timeout
                    ),
                ))
            }
            _ => None,
        }
    }
}

fn describe_model(model: &ModelSpec) -> String {
    let window = model.context_window.map_or_else(
        || "window ?".to_owned(),
        |window| format!("window {window}"),
    );
    let mut capabilities = Vec::new();
    for (name, has) in [
        ("tools", model.tools),
        ("json", model.json_mode),
        ("vision", model.vision),
    ] {
        capabilities.push(if has {
            name.to_owned()
        } else {
            format!("no-{name}")
        });
    }
    format!("{window}  {}", capabilities.join(" "))
}
