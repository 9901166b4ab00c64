//! Planning one request: the order of a route's targets, and which of them can serve
//! the request at all.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use super::{Route, RouteProvider, Target};
use crate::config::{FailoverPolicy, RegionStrategy, TargetOrder};
use crate::request::Needs;

/// The reason a target was not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its circuit breaker is open.
    CircuitOpen,
    /// Its provider's rate limit (`[providers.NAME.rate_limit]`) is reached.
    RateLimited,
    /// The provider reported no requests left for it until its quota resets.
    ProviderQuota,
    /// Its model's weight is below the request's `x-adpa-min-quality`.
    BelowMinQuality,
    /// The estimated prompt and completion do not fit its model's context window.
    ContextWindow,
    /// Its model lacks `tools` support the request needs.
    NoTools,
    /// Its model lacks the JSON mode the request needs.
    NoJsonMode,
    /// Its model lacks the image input the request needs.
    NoVision,
    /// An earlier target's model rejected the prompt as too long, and this model's
    /// window is not larger.
    ContextLengthExceeded,
}

impl SkipReason {
    /// Returns the snake_case label used in logs and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
            Self::ProviderQuota => "provider_quota",
            Self::BelowMinQuality => "below_min_quality",
            Self::ContextWindow => "context_window",
            Self::NoTools => "no_tools",
            Self::NoJsonMode => "no_json_mode",
            Self::NoVision => "no_vision",
            Self::ContextLengthExceeded => "context_length_exceeded",
        }
    }
}

/// A target that was not tried, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The target's id.
    pub target: Arc<str>,
    /// The reason it was not tried.
    pub reason: SkipReason,
}

impl Route {
    /// Returns the targets in the order this request tries them: by model weight then
    /// provider order (or the reverse with `order = "provider_first"`), each provider's
    /// regions in its region strategy's order.
    pub(crate) fn plan<R: Rng + ?Sized>(&self, now: Instant, rng: &mut R) -> Vec<Arc<Target>> {
        let providers = self.provider_order(rng);
        let mut targets = Vec::with_capacity(self.target_count);
        match self.order {
            TargetOrder::ModelFirst => {
                for model in 0..self.models.len() {
                    for &provider in &providers {
                        self.providers[provider].push_regions(model, now, &mut targets);
                    }
                }
            }
            TargetOrder::ProviderFirst => {
                for &provider in &providers {
                    for model in 0..self.models.len() {
                        self.providers[provider].push_regions(model, now, &mut targets);
                    }
                }
            }
        }
        targets
    }

    /// Returns the targets in configured order, without rotation or latency ordering.
    pub(crate) fn configured_order(&self) -> Vec<Arc<Target>> {
        let mut targets = Vec::with_capacity(self.target_count);
        let mut push = |provider: &RouteProvider, model: usize| {
            targets.extend(provider.targets[model].iter().cloned());
        };
        match self.order {
            TargetOrder::ModelFirst => {
                for model in 0..self.models.len() {
                    self.providers
                        .iter()
                        .for_each(|provider| push(provider, model));
                }
            }
            TargetOrder::ProviderFirst => {
                for provider in &self.providers {
                    (0..self.models.len()).for_each(|model| push(provider, model));
                }
            }
        }
        targets
    }

    fn provider_order<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<usize> {
        let count = self.providers.len();
        let start = match self.failover_policy {
            FailoverPolicy::Sequential => 0,
            FailoverPolicy::RoundRobin if count > 1 => {
                self.next_start.fetch_add(1, Ordering::Relaxed) % count
            }
            FailoverPolicy::RoundRobin => 0,
            FailoverPolicy::Weighted => return weighted_order(&self.provider_weights, rng),
        };
        (0..count).map(|index| (start + index) % count).collect()
    }
}

impl RouteProvider {
    /// Appends this provider's targets for `model`, in region strategy order.
    fn push_regions(&self, model: usize, now: Instant, out: &mut Vec<Arc<Target>>) {
        let regions = &self.targets[model];
        if regions.len() <= 1 {
            out.extend(regions.iter().cloned());
            return;
        }

        match self.region_strategy {
            RegionStrategy::Sequential => out.extend(regions.iter().cloned()),
            RegionStrategy::RoundRobin => {
                let start = self.next_region.fetch_add(1, Ordering::Relaxed) % regions.len();
                out.extend(regions[start..].iter().chain(&regions[..start]).cloned());
            }
            RegionStrategy::LatencyBased => {
                // Healthy regions before failing ones, fastest first. One region not
                // tried for `region_exploration` goes first, so a slow or failing region
                // can show it recovered. Only that one is claimed, so the claim is not
                // spent on a region this request will not reach.
                let mut ordered = regions.to_vec();
                ordered.sort_by_key(|target| target.latency.rank());
                let due = ordered.iter().position(|target| {
                    target.latency.exploration_due(self.region_exploration, now)
                });
                if let Some(index) = due {
                    if ordered[index]
                        .latency
                        .claim_exploration(self.region_exploration, now)
                    {
                        let explored = ordered.remove(index);
                        ordered.insert(0, explored);
                    }
                }
                out.append(&mut ordered);
            }
        }
    }
}

/// Orders indices by weighted random sampling without replacement: the first is drawn
/// with probability proportional to its weight, then the next among the rest, and so on.
pub(crate) fn weighted_order<R: Rng + ?Sized>(weights: &[f64], rng: &mut R) -> Vec<usize> {
    let mut left: Vec<usize> = (0..weights.len()).collect();
    let mut order = Vec::with_capacity(weights.len());
    while !left.is_empty() {
        let total: f64 = left.iter().map(|&index| weights[index]).sum();
        let mut draw = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
        let mut chosen = left.len() - 1;
        for (position, &index) in left.iter().enumerate() {
            if draw < weights[index] {
                chosen = position;
                break;
            }
            draw -= weights[index];
        }
        order.push(left.remove(chosen));
    }
    order
}

/// Returns why `target` cannot serve a request with `needs`, if it cannot.
pub(crate) fn ineligible(
    target: &Target,
    needs: &Needs,
    min_quality: Option<f64>,
) -> Option<SkipReason> {
    let model = &target.model;
    if min_quality.is_some_and(|min| model.weight < min) {
        return Some(SkipReason::BelowMinQuality);
    }
    if model
        .context_window
        .is_some_and(|window| needs.estimated_tokens > window)
    {
        return Some(SkipReason::ContextWindow);
    }
    if needs.tools && !model.tools {
        return Some(SkipReason::NoTools);
    }
    if needs.json_mode && !model.json_mode {
        return Some(SkipReason::NoJsonMode);
    }
    if needs.vision && !model.vision {
        return Some(SkipReason::NoVision);
    }
    None
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn weighted_order_follows_weights() {
        let mut rng = SmallRng::seed_from_u64(5);
        let weights = [3.0, 1.0];
        let mut first = [0usize; 2];
        for _ in 0..10_000 {
            let order = weighted_order(&weights, &mut rng);
            assert_eq!(order.len(), 2);
            assert_ne!(order[0], order[1]);
            first[order[0]] += 1;
        }
        // Expected shares: 75% and 25%.
        assert!((7_200..7_800).contains(&first[0]), "{first:?}");
    }

    #[test]
    fn weighted_order_keeps_every_index() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut order = weighted_order(&[1.0, 5.0, 2.0, 0.5], &mut rng);
        order.sort_unstable();
        assert_eq!(order, [0, 1, 2, 3]);
    }
}
