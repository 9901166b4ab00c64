//! Building an engine from its config, with every problem reported by key path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::concurrency::{ConcurrencyConfig, ConcurrencyLimiter};
use adpa_resilience::latency::PeakEwma;
use adpa_resilience::load_shed::{LoadShedConfig, LoadShedder};
use adpa_resilience::rate_limit::{RateLimitConfig, RateLimiter};
use adpa_resilience::retry::RetryBudget;
use adpa_resilience::{
    CircuitBreaker, CircuitBreakerConfig, ConfigError, RetryConfig, TimeoutConfig,
};
use http::HeaderValue;
use indexmap::IndexMap;

use super::quota::QuotaTracker;
use super::{Endpoint, Engine, Latencies, ModelSpec, Route, RouteProvider, Target};
use crate::config::{
    expand_env, ConfigErrors, ConfigIssue, EngineConfig, FailoverPolicy, PolicyConfig,
    ProviderConfig, ProviderKind, RegionStrategy, RouteConfig, TargetOrder,
};
use crate::http::HttpClient;

/// Time constant of each target's latency average: recovery from a slow sample takes
/// about this long of fresh samples.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// The window of the latency percentiles a hedge delay such as `"p95"` reads.
const HEDGE_WINDOW: Duration = Duration::from_secs(20);

/// A provider's config with its endpoints, one per region.
struct BuiltProvider<'a> {
    config: &'a ProviderConfig,
    endpoints: Vec<Arc<Endpoint>>,
    /// The provider's limits per endpoint (by index) and model, shared by every route
    /// that reaches them: the provider counts its limits per key and model, whatever
    /// the route.
    limits: RefCell<HashMap<(usize, Arc<str>), ProviderLimits>>,
}

/// The limits of one provider endpoint and model: the configured rate limit and the
/// quota the provider reports.
#[derive(Clone)]
struct ProviderLimits {
    limiter: Option<Arc<RateLimiter>>,
    quota: Arc<QuotaTracker>,
}

impl BuiltProvider<'_> {
    /// Returns the limits of the endpoint at `index` for `model`, created on first use.
    fn limits(&self, index: usize, model: &Arc<str>) -> ProviderLimits {
        self.limits
            .borrow_mut()
            .entry((index, Arc::clone(model)))
            .or_insert_with(|| ProviderLimits {
                limiter: new_limiter(self.config.rate_limit.as_ref()),
                quota: Arc::default(),
            })
            .clone()
    }
}

impl Engine {
    /// Builds an engine, reading `${VAR}` references from the process environment.
    ///
    /// # Errors
    ///
    /// Returns every problem found, each with the key path it concerns.
    pub fn new(config: &EngineConfig) -> Result<Self, ConfigErrors> {
        Self::with_env(config, |name| std::env::var(name).ok())
    }

    /// Builds an engine, reading `${VAR}` references through `lookup`.
    ///
    /// # Errors
    ///
    /// Returns every problem found, each with the key path it concerns.
    pub fn with_env(
        config: &EngineConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut issues = Vec::new();

        let mut providers: IndexMap<&str, BuiltProvider<'_>> = IndexMap::new();
        for (name, provider) in &config.providers {
            match build_endpoints(name, provider, &lookup) {
                Ok(endpoints) => {
                    providers.insert(
                        name,
                        BuiltProvider {
                            config: provider,
                            endpoints,
                            limits: RefCell::default(),
                        },
                    );
                }
                Err(mut found) => issues.append(&mut found),
            }
        }

        check_policies(
            "defaults",
            &config.defaults.retry,
            &config.defaults.circuit_breaker,
            &config.defaults.timeouts,
            None,
            &mut issues,
        );
        check_rate_limit("defaults", config.defaults.rate_limit.as_ref(), &mut issues);
        check_concurrency(
            "defaults",
            config.defaults.concurrency.as_ref(),
            &mut issues,
        );
        check_load_shedding(
            "defaults",
            config.defaults.load_shedding.as_ref(),
            config.defaults.concurrency.is_some(),
            &mut issues,
        );
        for (name, provider) in &config.providers {
            check_rate_limit(
                &format!("providers.{name}"),
                provider.rate_limit.as_ref(),
                &mut issues,
            );
        }

        let mut routes = IndexMap::new();
        for (name, route) in &config.routes {
            if let Some(built) = build_route(name, route, config, &providers, &mut issues) {
                routes.insert(name.clone(), Arc::new(built));
            }
        }

        add_implicit_routes(config, &providers, &mut routes, &mut issues);

        if routes.is_empty() && issues.is_empty() {
            issues.push(ConfigIssue::new(
                "routes",
                "nothing to serve: add a [routes.NAME] table, or list `models` under a provider",
            ));
        }
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        Ok(Self { routes })
    }
}

fn build_route(
    name: &str,
    route: &RouteConfig,
    config: &EngineConfig,
    providers: &IndexMap<&str, BuiltProvider<'_>>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Route> {
    let path = format!("routes.{name}");
    let issues_before = issues.len();
    check_policies(
        &path,
        &route.retry,
        &route.circuit_breaker,
        &route.timeouts,
        Some(&config.defaults),
        issues,
    );
    if route.rate_limit != config.defaults.rate_limit {
        check_rate_limit(&path, route.rate_limit.as_ref(), issues);
    }
    if route.concurrency != config.defaults.concurrency {
        check_concurrency(&path, route.concurrency.as_ref(), issues);
    }
    check_load_shedding(
        &path,
        route.load_shedding.as_ref(),
        route.concurrency.is_some(),
        issues,
    );

    // The route's providers, in order, each checked to exist once.
    let mut members: Vec<(&str, &BuiltProvider<'_>)> = Vec::new();
    let listed = std::iter::once((format!("{path}.primary"), &route.primary)).chain(
        route
            .secondaries
            .iter()
            .enumerate()
            .map(|(index, provider)| (format!("{path}.secondaries[{index}]"), provider)),
    );
    for (member_path, provider_name) in listed {
        if members
            .iter()
            .any(|(seen, _)| *seen == provider_name.as_str())
        {
            issues.push(ConfigIssue::new(
                member_path,
                format!("provider `{provider_name}` is listed twice in this route"),
            ));
            continue;
        }
        match providers.get(provider_name.as_str()) {
            Some(built) => members.push((provider_name.as_str(), built)),
            None if config.providers.contains_key(provider_name) => {}
            None => issues.push(ConfigIssue::new(
                member_path,
                unknown_provider(provider_name, config),
            )),
        }
    }

    check_weights(&path, route, &members, issues);

    let (models, serves, order) = if route.models.is_empty() {
        models_from_providers(name, &members)
    } else {
        models_from_route(&path, route, &members, issues)
    };

    let client = match HttpClient::new(route.timeouts.connect_timeout, route.timeouts.write_timeout)
    {
        Ok(client) => client,
        Err(err) => {
            issues.push(ConfigIssue::new(path, err.to_string()));
            return None;
        }
    };
    if issues.len() > issues_before {
        return None;
    }

    let route_providers = members
        .iter()
        .enumerate()
        .map(|(index, (provider_name, built))| {
            route_provider(
                provider_name,
                built,
                &models,
                &serves[index],
                &route.circuit_breaker,
            )
        })
        .collect();
    let weights = members
        .iter()
        .map(|(provider_name, _)| route.weights.get(*provider_name).copied().unwrap_or(1.0))
        .collect();
    let mut built = new_route(
        name,
        models,
        route_providers,
        weights,
        route.failover_policy,
        order,
        route.failover_on_content_filter,
        &route.retry,
        &route.timeouts,
        client,
        false,
        route.rate_limit.as_ref(),
        route.concurrency.as_ref(),
        route.load_shedding.as_ref(),
    );
    built.hedge_delay = route.hedge_delay;
    Some(built)
}

fn check_weights(
    path: &str,
    route: &RouteConfig,
    members: &[(&str, &BuiltProvider<'_>)],
    issues: &mut Vec<ConfigIssue>,
) {
    if !route.weights.is_empty() && route.failover_policy != FailoverPolicy::Weighted {
        issues.push(ConfigIssue::new(
            format!("{path}.weights"),
            "weights only apply with failover_policy = \"weighted\"",
        ));
    }
    for (provider, weight) in &route.weights {
        let key = format!("{path}.weights.{provider}");
        if !members.iter().any(|(name, _)| name == provider) {
            issues.push(ConfigIssue::new(
                key,
                format!("provider `{provider}` is not in this route"),
            ));
        } else if !(weight.is_finite() && *weight > 0.0) {
            issues.push(ConfigIssue::new(
                key,
                format!("must be a number above 0, got {weight}"),
            ));
        }
    }
}

/// Models of a route without `models`: each provider's first listed model, or the route
/// name. Returns the models, which provider serves which, and provider-first order so
/// that `round_robin` rotates across providers.
fn models_from_providers(
    route_name: &str,
    members: &[(&str, &BuiltProvider<'_>)],
) -> (Vec<Arc<ModelSpec>>, Vec<Vec<bool>>, TargetOrder) {
    let mut models: Vec<Arc<ModelSpec>> = Vec::new();
    let mut chosen = Vec::new();
    for (_, built) in members {
        let model = built
            .config
            .models
            .first()
            .map_or(route_name, String::as_str);
        let index = match models.iter().position(|spec| &*spec.name == model) {
            Some(index) => index,
            None => {
                models.push(Arc::new(ModelSpec::assumed(model)));
                models.len() - 1
            }
        };
        chosen.push(index);
    }
    let serves = chosen
        .iter()
        .map(|index| (0..models.len()).map(|model| model == *index).collect())
        .collect();
    (models, serves, TargetOrder::ProviderFirst)
}

/// Models of a route with `models`, by descending weight, and which provider serves
/// each: every route provider that lists the model, or only the provider an entry such
/// as `provider/model` names.
fn models_from_route(
    path: &str,
    route: &RouteConfig,
    members: &[(&str, &BuiltProvider<'_>)],
    issues: &mut Vec<ConfigIssue>,
) -> (Vec<Arc<ModelSpec>>, Vec<Vec<bool>>, TargetOrder) {
    let mut entries: Vec<_> = route.models.iter().enumerate().collect();
    // Stable, so equal weights keep their written order.
    entries.sort_by(|(_, a), (_, b)| b.weight.total_cmp(&a.weight));

    let mut models = Vec::new();
    let mut serves = vec![Vec::new(); members.len()];
    for (index, entry) in entries {
        let entry_path = format!("{path}.models[{index}]");
        if !(0.0..=1.0).contains(&entry.weight) {
            issues.push(ConfigIssue::new(
                format!("{entry_path}.weight"),
                format!("must be in 0.0..=1.0, got {}", entry.weight),
            ));
            continue;
        }
        if entry.model().is_empty() {
            issues.push(ConfigIssue::new(
                format!("{entry_path}.name"),
                "must not be empty",
            ));
            continue;
        }
        if let Some(bound) = entry.provider() {
            if !members.iter().any(|(name, _)| *name == bound) {
                issues.push(ConfigIssue::new(
                    format!("{entry_path}.name"),
                    format!(
                        "`{}` names provider `{bound}`, which is not in this route",
                        entry.name
                    ),
                ));
                continue;
            }
        }

        let served: Vec<bool> = members
            .iter()
            .map(|(name, built)| match entry.provider() {
                Some(bound) => bound == *name,
                None => built
                    .config
                    .models
                    .iter()
                    .any(|model| model == entry.model()),
            })
            .collect();
        if !served.contains(&true) {
            issues.push(ConfigIssue::new(
                format!("{entry_path}.name"),
                format!(
                    "no provider of this route lists model `{}`; add it to a provider's `models`",
                    entry.model()
                ),
            ));
            continue;
        }

        models.push(Arc::new(ModelSpec {
            name: Arc::from(entry.model()),
            weight: entry.weight,
            context_window: entry.context_window,
            tools: entry.tools.unwrap_or(true),
            json_mode: entry.json_mode.unwrap_or(true),
            vision: entry.vision.unwrap_or(true),
        }));
        for (provider, served) in served.into_iter().enumerate() {
            serves[provider].push(served);
        }
    }
    (models, serves, route.order)
}

fn route_provider(
    name: &str,
    built: &BuiltProvider<'_>,
    models: &[Arc<ModelSpec>],
    serves: &[bool],
    breaker: &CircuitBreakerConfig,
) -> RouteProvider {
    let targets = models
        .iter()
        .zip(serves)
        .map(|(model, served)| {
            if !served {
                return Vec::new();
            }
            built
                .endpoints
                .iter()
                .enumerate()
                .filter_map(|(index, endpoint)| {
                    let limits = built.limits(index, &model.name);
                    build_target(endpoint, model, breaker, limits)
                })
                .collect()
        })
        .collect();
    RouteProvider {
        name: Arc::from(name),
        targets,
        region_strategy: built.config.region_strategy,
        region_exploration: built.config.region_exploration,
        next_region: AtomicUsize::new(0),
    }
}

#[allow(clippy::too_many_arguments)]
fn new_route(
    name: &str,
    models: Vec<Arc<ModelSpec>>,
    providers: Vec<RouteProvider>,
    provider_weights: Vec<f64>,
    failover_policy: FailoverPolicy,
    order: TargetOrder,
    failover_on_content_filter: bool,
    retry: &RetryConfig,
    timeouts: &TimeoutConfig,
    client: HttpClient,
    implicit: bool,
    rate_limit: Option<&RateLimitConfig>,
    concurrency: Option<&ConcurrencyConfig>,
    load_shedding: Option<&LoadShedConfig>,
) -> Route {
    let target_count = providers
        .iter()
        .flat_map(|provider| &provider.targets)
        .map(Vec::len)
        .sum();
    Route {
        name: Arc::from(name),
        models,
        providers,
        provider_weights,
        failover_policy,
        order,
        failover_on_content_filter,
        retry: retry.clone(),
        timeouts: timeouts.clone(),
        client,
        implicit,
        target_count,
        limiter: new_limiter(rate_limit),
        concurrency: concurrency.and_then(|config| ConcurrencyLimiter::new(config.clone()).ok()),
        shedder: load_shedding.and_then(|config| LoadShedder::new(config.clone()).ok()),
        retry_budget: RetryBudget::new(
            retry.budget_ratio,
            retry.budget_window,
            retry.budget_min_per_second,
            adpa_resilience::clock::now(),
        ),
        hedge_delay: None,
        next_start: AtomicUsize::new(0),
    }
}

/// Creates a limiter from settings that were validated and reported before.
fn new_limiter(config: Option<&RateLimitConfig>) -> Option<Arc<RateLimiter>> {
    let base = adpa_resilience::clock::now();
    config
        .and_then(|config| RateLimiter::new(config.clone(), base).ok())
        .map(Arc::new)
}

/// Serves each model a provider lists, under the model's own name, through the providers
/// that list it, with the policies of `[defaults]`. A written route of the same name wins.
fn add_implicit_routes(
    config: &EngineConfig,
    providers: &IndexMap<&str, BuiltProvider<'_>>,
    routes: &mut IndexMap<String, Arc<Route>>,
    issues: &mut Vec<ConfigIssue>,
) {
    let defaults = &config.defaults;
    let mut listed: IndexMap<&str, Vec<(&str, &BuiltProvider<'_>)>> = IndexMap::new();
    for (name, built) in providers {
        for model in &built.config.models {
            if !routes.contains_key(model) {
                listed
                    .entry(model.as_str())
                    .or_default()
                    .push((name, built));
            }
        }
    }
    if listed.is_empty() {
        return;
    }

    let client = match HttpClient::new(
        defaults.timeouts.connect_timeout,
        defaults.timeouts.write_timeout,
    ) {
        Ok(client) => client,
        Err(err) => {
            issues.push(ConfigIssue::new("defaults", err.to_string()));
            return;
        }
    };
    for (model, members) in listed {
        let models = vec![Arc::new(ModelSpec::assumed(model))];
        let route_providers: Vec<RouteProvider> = members
            .iter()
            .map(|(name, built)| {
                route_provider(name, built, &models, &[true], &defaults.circuit_breaker)
            })
            .collect();
        let weights = vec![1.0; route_providers.len()];
        let route = new_route(
            model,
            models,
            route_providers,
            weights,
            FailoverPolicy::Sequential,
            TargetOrder::ModelFirst,
            false,
            &defaults.retry,
            &defaults.timeouts,
            client.clone(),
            true,
            defaults.rate_limit.as_ref(),
            defaults.concurrency.as_ref(),
            defaults.load_shedding.as_ref(),
        );
        routes.insert(model.to_owned(), Arc::new(route));
    }
}

impl ModelSpec {
    /// Creates a model with full weight, no known window and every capability assumed.
    fn assumed(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            weight: 1.0,
            context_window: None,
            tools: true,
            json_mode: true,
            vision: true,
        }
    }
}

fn build_target(
    endpoint: &Arc<Endpoint>,
    model: &Arc<ModelSpec>,
    breaker: &CircuitBreakerConfig,
    limits: ProviderLimits,
) -> Option<Arc<Target>> {
    // The breaker settings were validated with the route; an invalid one was reported.
    let breaker = CircuitBreaker::new(breaker.clone()).ok()?;
    let id = match &endpoint.region {
        Some(region) => format!("{}@{region}/{}", endpoint.provider, model.name),
        None => format!("{}/{}", endpoint.provider, model.name),
    };
    Some(Arc::new(Target {
        id: Arc::from(id),
        endpoint: Arc::clone(endpoint),
        model: Arc::clone(model),
        breaker,
        latency: PeakEwma::new(LATENCY_DECAY),
        latencies: Latencies::new(HEDGE_WINDOW, adpa_resilience::clock::now()),
        limiter: limits.limiter,
        quota: limits.quota,
    }))
}

/// Builds a provider's endpoints: one per region, or one from `base_url` without
/// regions.
fn build_endpoints(
    name: &str,
    config: &ProviderConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<Arc<Endpoint>>, Vec<ConfigIssue>> {
    let path = format!("providers.{name}");
    let provider_name: Arc<str> = Arc::from(name);

    if config.regions.is_empty() {
        if config.region_strategy != RegionStrategy::Sequential {
            return Err(vec![ConfigIssue::new(
                format!("{path}.region_strategy"),
                "has no effect without [providers.NAME.regions]; remove it or add regions",
            )]);
        }
        let base_url = config
            .base_url
            .as_deref()
            .unwrap_or(config.kind.default_base_url());
        let endpoint = build_endpoint(
            &path,
            &provider_name,
            None,
            config,
            base_url,
            config.api_key.as_deref(),
            lookup,
        )
        .map_err(|issue| vec![issue])?;
        return Ok(vec![Arc::new(endpoint)]);
    }

    if config.base_url.is_some() {
        return Err(vec![ConfigIssue::new(
            format!("{path}.base_url"),
            "a provider with regions takes each region's base_url; move it into a region",
        )]);
    }
    let mut endpoints = Vec::new();
    let mut issues = Vec::new();
    for (region, region_config) in &config.regions {
        let region_path = format!("{path}.regions.{region}");
        let key = region_config
            .api_key
            .as_deref()
            .or(config.api_key.as_deref());
        match build_endpoint(
            &region_path,
            &provider_name,
            Some(region),
            config,
            &region_config.base_url,
            key,
            lookup,
        ) {
            Ok(endpoint) => endpoints.push(Arc::new(endpoint)),
            Err(issue) => issues.push(issue),
        }
    }
    if issues.is_empty() {
        Ok(endpoints)
    } else {
        Err(issues)
    }
}

fn build_endpoint(
    path: &str,
    provider: &Arc<str>,
    region: Option<&str>,
    config: &ProviderConfig,
    base_url: &str,
    api_key: Option<&str>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Endpoint, ConfigIssue> {
    let base_url = expand_env(base_url, lookup)
        .map_err(|message| ConfigIssue::new(format!("{path}.base_url"), message))?;
    let base_url = base_url.trim_end_matches('/').to_owned();
    let probe_url: http::Uri = format!("{base_url}/").parse().map_err(|err| {
        ConfigIssue::new(
            format!("{path}.base_url"),
            format!("invalid URL {base_url:?}: {err}"),
        )
    })?;
    if !matches!(probe_url.scheme_str(), Some("http" | "https")) || probe_url.host().is_none() {
        return Err(ConfigIssue::new(
            format!("{path}.base_url"),
            format!("invalid URL {base_url:?}: write it as http://host:port/v1 or https://host/v1"),
        ));
    }
    let fixed_url = match config.kind {
        ProviderKind::Openai => Some(format!("{base_url}/chat/completions")),
        ProviderKind::Anthropic => Some(format!("{base_url}/messages")),
        ProviderKind::Gemini => None,
    }
    .map(|url| url.parse::<http::Uri>())
    .transpose()
    .map_err(|err| ConfigIssue::new(format!("{path}.base_url"), format!("invalid URL: {err}")))?;

    let credential = match api_key {
        None => None,
        Some(key) => {
            let key = expand_env(key, lookup)
                .map_err(|message| ConfigIssue::new(format!("{path}.api_key"), message))?;
            let (name, text) = match config.kind {
                ProviderKind::Openai => (http::header::AUTHORIZATION, format!("Bearer {key}")),
                ProviderKind::Anthropic => (http::HeaderName::from_static("x-api-key"), key),
                ProviderKind::Gemini => (http::HeaderName::from_static("x-goog-api-key"), key),
            };
            let mut value = HeaderValue::try_from(text).map_err(|_| {
                ConfigIssue::new(
                    format!("{path}.api_key"),
                    "the key contains characters not allowed in an HTTP header",
                )
            })?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };

    Ok(Endpoint {
        provider: Arc::clone(provider),
        region: region.map(Arc::from),
        kind: config.kind,
        base_url,
        fixed_url,
        credential,
    })
}

fn check_rate_limit(path: &str, config: Option<&RateLimitConfig>, issues: &mut Vec<ConfigIssue>) {
    if let Some(Err(err)) = config.map(RateLimitConfig::validate) {
        issues.push(ConfigIssue::new(
            format!("{path}.rate_limit.{}", err.field),
            err.reason,
        ));
    }
}

fn check_load_shedding(
    path: &str,
    config: Option<&LoadShedConfig>,
    has_concurrency: bool,
    issues: &mut Vec<ConfigIssue>,
) {
    let Some(config) = config else {
        return;
    };
    if let Err(err) = config.validate() {
        issues.push(ConfigIssue::new(
            format!("{path}.load_shedding.{}", err.field),
            err.reason,
        ));
    }
    if !has_concurrency {
        issues.push(ConfigIssue::new(
            format!("{path}.load_shedding"),
            format!("load is measured by the concurrency limit; add [{path}.concurrency]"),
        ));
    }
}

fn check_concurrency(
    path: &str,
    config: Option<&ConcurrencyConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    if let Some(Err(err)) = config.map(ConcurrencyConfig::validate) {
        issues.push(ConfigIssue::new(
            format!("{path}.concurrency.{}", err.field),
            err.reason,
        ));
    }
}

/// Validates policy tables. A table equal to the `inherited` one was already checked
/// under `defaults`, so its problems are not reported a second time for the route.
fn check_policies(
    path: &str,
    retry: &RetryConfig,
    breaker: &CircuitBreakerConfig,
    timeouts: &TimeoutConfig,
    inherited: Option<&PolicyConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    let mut check = |table: &str, already_checked: bool, result: Result<(), ConfigError>| {
        if already_checked {
            return;
        }
        if let Err(err) = result {
            issues.push(ConfigIssue::new(
                format!("{path}.{table}.{}", err.field),
                err.reason,
            ));
        }
    };
    check(
        "retry",
        inherited.is_some_and(|d| d.retry == *retry),
        retry.validate(),
    );
    check(
        "circuit_breaker",
        inherited.is_some_and(|d| d.circuit_breaker == *breaker),
        breaker.validate(),
    );
    check(
        "timeouts",
        inherited.is_some_and(|d| d.timeouts == *timeouts),
        timeouts.validate(),
    );
}

fn unknown_provider(name: &str, config: &EngineConfig) -> String {
    let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
    if known.is_empty() {
        format!("unknown provider `{name}`: no [providers.*] table is defined")
    } else {
        format!(
            "unknown provider `{name}`; defined providers: {}",
            known.join(", ")
        )
    }
}
