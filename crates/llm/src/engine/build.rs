//! Building an engine from its config, with every problem reported by key path.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use adpa_resilience::{
    CircuitBreaker, CircuitBreakerConfig, ConfigError, RetryConfig, TimeoutConfig,
};
use http::HeaderValue;
use indexmap::IndexMap;

use super::{Engine, Provider, Route, Target};
use crate::config::{
    expand_env, ConfigErrors, ConfigIssue, EngineConfig, FailoverPolicy, PolicyConfig,
    ProviderConfig,
};
use crate::http::HttpClient;

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

        let providers: IndexMap<&str, Arc<Provider>> = config
            .providers
            .iter()
            .filter_map(
                |(name, provider)| match build_provider(name, provider, &lookup) {
                    Ok(built) => Some((name.as_str(), Arc::new(built))),
                    Err(issue) => {
                        issues.push(issue);
                        None
                    }
                },
            )
            .collect();

        check_policies(
            "defaults",
            &config.defaults.retry,
            &config.defaults.circuit_breaker,
            &config.defaults.timeouts,
            None,
            &mut issues,
        );

        let mut routes = IndexMap::new();
        for (name, route) in &config.routes {
            let path = format!("routes.{name}");
            check_policies(
                &path,
                &route.retry,
                &route.circuit_breaker,
                &route.timeouts,
                Some(&config.defaults),
                &mut issues,
            );

            let mut members = vec![(format!("{path}.primary"), &route.primary)];
            members.extend(
                route
                    .secondaries
                    .iter()
                    .enumerate()
                    .map(|(index, provider)| (format!("{path}.secondaries[{index}]"), provider)),
            );

            let mut targets = Vec::new();
            let mut seen: Vec<&str> = Vec::new();
            for (member_path, provider_name) in members {
                if seen.contains(&provider_name.as_str()) {
                    issues.push(ConfigIssue::new(
                        member_path,
                        format!("provider `{provider_name}` is listed twice in this route"),
                    ));
                    continue;
                }
                seen.push(provider_name);
                let Some(provider) = providers.get(provider_name.as_str()) else {
                    if !config.providers.contains_key(provider_name) {
                        issues.push(ConfigIssue::new(
                            member_path,
                            unknown_provider(provider_name, config),
                        ));
                    }
                    continue;
                };
                let model = config.providers[provider_name.as_str()]
                    .models
                    .first()
                    .map_or(name.as_str(), String::as_str);
                if let Some(target) = build_target(provider, model, &route.circuit_breaker) {
                    targets.push(target);
                }
            }

            let client =
                match HttpClient::new(route.timeouts.connect_timeout, route.timeouts.write_timeout)
                {
                    Ok(client) => client,
                    Err(err) => {
                        issues.push(ConfigIssue::new(path, err.to_string()));
                        continue;
                    }
                };
            routes.insert(
                name.clone(),
                Arc::new(Route {
                    name: Arc::from(name.as_str()),
                    targets,
                    failover_policy: route.failover_policy,
                    retry: route.retry.clone(),
                    timeouts: route.timeouts.clone(),
                    client,
                    implicit: false,
                    next_start: AtomicUsize::new(0),
                }),
            );
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

/// Serves each model a provider lists, under the model's own name, through the providers
/// that list it, with the policies of `[defaults]`. A written route of the same name wins.
fn add_implicit_routes(
    config: &EngineConfig,
    providers: &IndexMap<&str, Arc<Provider>>,
    routes: &mut IndexMap<String, Arc<Route>>,
    issues: &mut Vec<ConfigIssue>,
) {
    let defaults = &config.defaults;
    let mut models: IndexMap<&str, Vec<Arc<Target>>> = IndexMap::new();
    for (name, provider) in providers {
        for model in &config.providers[*name].models {
            if routes.contains_key(model) {
                continue;
            }
            if let Some(target) = build_target(provider, model, &defaults.circuit_breaker) {
                models.entry(model.as_str()).or_default().push(target);
            }
        }
    }
    if models.is_empty() {
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
    for (model, targets) in models {
        routes.insert(
            model.to_owned(),
            Arc::new(Route {
                name: Arc::from(model),
                targets,
                failover_policy: FailoverPolicy::Sequential,
                retry: defaults.retry.clone(),
                timeouts: defaults.timeouts.clone(),
                client: client.clone(),
                implicit: true,
                next_start: AtomicUsize::new(0),
            }),
        );
    }
}

fn build_target(
    provider: &Arc<Provider>,
    model: &str,
    breaker: &CircuitBreakerConfig,
) -> Option<Arc<Target>> {
    // The breaker settings were validated with the route; an invalid one was reported.
    let breaker = CircuitBreaker::new(breaker.clone()).ok()?;
    Some(Arc::new(Target {
        id: Arc::from(format!("{}/{model}", provider.name)),
        provider: Arc::clone(provider),
        model: Arc::from(model),
        breaker,
    }))
}

fn build_provider(
    name: &str,
    config: &ProviderConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigIssue> {
    let path = format!("providers.{name}");

    let base_url = config
        .base_url
        .as_deref()
        .unwrap_or(config.kind.default_base_url());
    let base_url = expand_env(base_url, lookup)
        .map_err(|message| ConfigIssue::new(format!("{path}.base_url"), message))?;
    let chat_url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let chat_url: http::Uri = chat_url.parse().map_err(|err| {
        ConfigIssue::new(
            format!("{path}.base_url"),
            format!("invalid URL {base_url:?}: {err}"),
        )
    })?;
    if !matches!(chat_url.scheme_str(), Some("http" | "https")) || chat_url.host().is_none() {
        return Err(ConfigIssue::new(
            format!("{path}.base_url"),
            format!("invalid URL {base_url:?}: write it as http://host:port/v1 or https://host/v1"),
        ));
    }

    let authorization = match &config.api_key {
        None => None,
        Some(key) => {
            let key = expand_env(key, lookup)
                .map_err(|message| ConfigIssue::new(format!("{path}.api_key"), message))?;
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                ConfigIssue::new(
                    format!("{path}.api_key"),
                    "the key contains characters not allowed in an HTTP header",
                )
            })?;
            value.set_sensitive(true);
            Some(value)
        }
    };

    Ok(Provider {
        name: Arc::from(name),
        kind: config.kind,
        chat_url,
        authorization,
    })
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
