//! The engine's configuration: providers, routes and their policies, as read from the
//! gateway's TOML file.
//!
//! Route policy tables inherit from `[defaults]` key by key: [`apply_defaults`] copies
//! every key a route does not set from the matching `[defaults]` table before the
//! document is deserialized, and keys set nowhere take their built-in defaults.

use std::fmt;
use std::time::Duration;

use adpa_resilience::concurrency::ConcurrencyConfig;
use adpa_resilience::load_shed::LoadShedConfig;
use adpa_resilience::rate_limit::RateLimitConfig;
use adpa_resilience::{CircuitBreakerConfig, RetryConfig, TimeoutConfig};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Policy tables a route has and `[defaults]` provides.
pub const POLICY_TABLES: [&str; 6] = [
    "retry",
    "circuit_breaker",
    "timeouts",
    "rate_limit",
    "concurrency",
    "load_shedding",
];

/// The engine part of the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Providers by name, in file order.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
    /// Routes by the name clients send as `model`, in file order.
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    /// Policies that routes inherit, and that implicit routes use as they are.
    #[serde(default)]
    pub defaults: PolicyConfig,
}

/// One provider.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire format the provider speaks.
    pub kind: ProviderKind,
    /// API root including its version, such as `https://api.openai.com/v1`; the client
    /// appends `/chat/completions`. Defaults to the official endpoint of `kind`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key, usually `"${OPENAI_API_KEY}"` so it is read from the environment at
    /// start-up. Optional for local servers that need none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Models this provider serves, in order of preference.
    #[serde(default)]
    pub models: Vec<String>,
    /// Regions by name, each an endpoint with its own base URL. Without regions the
    /// provider has one endpoint, `base_url`.
    #[serde(default)]
    pub regions: IndexMap<String, RegionConfig>,
    /// Order of the regions for each request.
    #[serde(default)]
    pub region_strategy: RegionStrategy,
    /// With `latency_based`, a region not tried for this long is tried first once, so a
    /// region that was slow or failing gets a chance to show it recovered.
    #[serde(
        default = "default_region_exploration",
        with = "adpa_resilience::duration"
    )]
    pub region_exploration: Duration,
    /// A limit each target of this provider (region × model) gets, to stay under the
    /// provider's own limits: a target at its limit is skipped and the request fails
    /// over.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

fn default_region_exploration() -> Duration {
    Duration::from_secs(10)
}

/// One region of a provider.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// API root of this region, including the version.
    pub base_url: String,
    /// A key for this region only; the provider's `api_key` otherwise.
    #[serde(default)]
    pub api_key: Option<String>,
}

impl fmt::Debug for RegionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Order of a provider's regions for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionStrategy {
    /// In the order written.
    #[default]
    Sequential,
    /// Lowest peak-sensitive moving average of attempt latency first.
    LatencyBased,
    /// Each request starts at the next region in turn.
    RoundRobin,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is never printed, even when it was written into the file in clear.
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("models", &self.models)
            .field("regions", &self.regions)
            .field("region_strategy", &self.region_strategy)
            .finish()
    }
}

/// A provider's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI chat completions, also spoken by Groq, vLLM, llama.cpp and Ollama.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`).
    Gemini,
}

impl ProviderKind {
    /// Returns the official API root of this kind.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com/v1",
            Self::Gemini => "https://generativelanguage.googleapis.com/v1beta",
        }
    }

    /// Returns the event that ends a complete stream of this kind, for error messages.
    pub fn end_marker(self) -> &'static str {
        match self {
            Self::Openai => "data: [DONE]",
            Self::Anthropic => "message_stop",
            Self::Gemini => "a finishReason",
        }
    }
}

/// Order of a route's providers for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPolicy {
    /// `primary` first, then `secondaries` in order.
    #[default]
    Sequential,
    /// Each request starts at the next provider in turn and wraps around.
    RoundRobin,
    /// Each request orders the providers by a weighted random draw, so the primary share
    /// of traffic goes to each provider in proportion to its `weights` entry.
    Weighted,
}

/// One route: what clients ask for by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The provider tried first.
    pub primary: String,
    /// Providers tried after the primary, in order.
    #[serde(default)]
    pub secondaries: Vec<String>,
    /// Order of the providers for each request.
    #[serde(default)]
    pub failover_policy: FailoverPolicy,
    /// Relative share of each provider with `failover_policy = "weighted"`; a provider
    /// left out has weight 1.
    #[serde(default)]
    pub weights: IndexMap<String, f64>,
    /// Models in order of preference, each with a quality weight. Empty means each
    /// provider's first listed model.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Whether targets are ordered by model first (the default) or by provider first.
    #[serde(default)]
    pub order: TargetOrder,
    /// Fail over when a provider refuses content, instead of returning the refusal.
    #[serde(default)]
    pub failover_on_content_filter: bool,
    /// Retries on one target.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The breaker each target of the route gets.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Timeouts of each request.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// A limit on the requests and tokens of this route, checked before routing.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// A limit on the requests of this route in flight at once, with a priority queue.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyConfig>,
    /// Shedding of requests above a load threshold; needs `concurrency` to measure load.
    #[serde(default)]
    pub load_shedding: Option<LoadShedConfig>,
    /// When to send one hedged attempt to the next target while the first has not
    /// responded: a duration such as `"200ms"`, or a percentile of the target's recent
    /// latency such as `"p95"`. Not set: no hedging.
    #[serde(default)]
    pub hedge_delay: Option<HedgeDelay>,
}

/// The time an attempt runs without a response before a hedged attempt starts.
///
/// ```
/// use std::time::Duration;
/// use adpa_llm::config::HedgeDelay;
///
/// assert_eq!(HedgeDelay::parse("200ms"), Ok(HedgeDelay::Fixed(Duration::from_millis(200))));
/// assert_eq!(HedgeDelay::parse("p99.9"), Ok(HedgeDelay::Percentile(99.9)));
/// assert!(HedgeDelay::parse("p100").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// A fixed time.
    Fixed(Duration),
    /// A percentile, above 0 and below 100, of the latency of the target's recent
    /// attempts (the last 10 to 20 seconds): successful ones, and first attempts dropped
    /// for their hedge, with the time they ran. Streamed and plain requests are counted
    /// apart. Until the target has 20 samples of the kind, no hedge is sent.
    Percentile(f64),
}

impl HedgeDelay {
    /// Parses `"p95"`-style percentiles and `"200ms"`-style durations.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(number) = text.strip_prefix('p') {
            return match number.parse::<f64>() {
                Ok(value) if value > 0.0 && value < 100.0 => Ok(Self::Percentile(value)),
                _ => Err(format!(
                    "percentile {text:?} must be p followed by a number above 0 and below 100, such as \"p95\""
                )),
            };
        }
        match adpa_resilience::duration::parse(text) {
            Ok(delay) if delay.is_zero() => Err(
                "must be longer than zero; leave hedge_delay out to turn hedging off".to_owned(),
            ),
            Ok(delay) => Ok(Self::Fixed(delay)),
            Err(err) => Err(format!("{err}, or a percentile such as \"p95\"")),
        }
    }
}

impl Serialize for HedgeDelay {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(delay) => adpa_resilience::duration::serialize(delay, serializer),
            Self::Percentile(value) => serializer.serialize_str(&format!("p{value}")),
        }
    }
}

impl<'de> Deserialize<'de> for HedgeDelay {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DelayVisitor;

        impl serde::de::Visitor<'_> for DelayVisitor {
            type Value = HedgeDelay;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"200ms\" or a percentile such as \"p95\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HedgeDelay, E> {
                HedgeDelay::parse(text).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<HedgeDelay, E> {
                Err(E::custom(format!(
                    "a number has no unit: write a duration such as \"{value}ms\", or a percentile such as \"p95\""
                )))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<HedgeDelay, E> {
                self.visit_i64(value as i64)
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<HedgeDelay, E> {
                Err(E::custom(format!(
                    "a number has no unit: write a duration such as \"{value}s\", or a percentile such as \"p95\""
                )))
            }
        }

        deserializer.deserialize_any(DelayVisitor)
    }
}

/// The key that orders a route's targets first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetOrder {
    /// Every provider's best model before any provider's next model.
    #[default]
    ModelFirst,
    /// Every model of the first provider before the next provider.
    ProviderFirst,
}

/// One model of a route: `["gpt-4", 1.0]`, or a table with capabilities.
///
/// ```
/// use adpa_llm::config::ModelEntry;
///
/// #[derive(serde::Deserialize)]
/// struct Route { models: Vec<ModelEntry> }
///
/// let route: Route = toml::from_str(r#"
///     models = [
///         ["gpt-4", 1.0],
///         { name = "gemini/gemini-1.5-pro", weight = 0.9, context_window = 1000000, tools = true },
///     ]
/// "#).unwrap();
/// assert_eq!(route.models[1].provider(), Some("gemini"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    /// The model name, or `provider/model` to use it at that provider only.
    pub name: String,
    /// Relative quality in `0.0..=1.0`; higher is tried first.
    pub weight: f64,
    /// Tokens the model accepts, prompt and completion together, if known.
    pub context_window: Option<u64>,
    /// Whether the model accepts `tools`; assumed when not set.
    pub tools: Option<bool>,
    /// Whether the model accepts a JSON `response_format`; assumed when not set.
    pub json_mode: Option<bool>,
    /// Whether the model accepts images; assumed when not set.
    pub vision: Option<bool>,
}

impl ModelEntry {
    /// Returns the provider a `provider/model` name is bound to.
    pub fn provider(&self) -> Option<&str> {
        self.name.split_once('/').map(|(provider, _)| provider)
    }

    /// Returns the model name without a provider prefix.
    pub fn model(&self) -> &str {
        self.name
            .split_once('/')
            .map_or(self.name.as_str(), |(_, model)| model)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    name: String,
    #[serde(default = "full_weight")]
    weight: f64,
    #[serde(default)]
    context_window: Option<u64>,
    #[serde(default)]
    tools: Option<bool>,
    #[serde(default)]
    json_mode: Option<bool>,
    #[serde(default)]
    vision: Option<bool>,
}

fn full_weight() -> f64 {
    1.0
}

impl<'de> Deserialize<'de> for ModelEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = ModelEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model as [\"name\", weight] or { name = \"…\", weight = … }")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<ModelEntry, E> {
                Err(E::custom(format!(
                    "a model needs a weight: write [\"{name}\", 1.0] instead of \"{name}\""
                )))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ModelEntry, A::Error> {
                let fix = "write a model as [\"name\", weight]";
                let name: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom(fix))?;
                let weight: f64 = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::custom(fix))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "{fix}; use a table for context_window and capabilities"
                    )));
                }
                Ok(ModelEntry {
                    name,
                    weight,
                    context_window: None,
                    tools: None,
                    json_mode: None,
                    vision: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelEntry, A::Error> {
                let table =
                    ModelTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelEntry {
                    name: table.name,
                    weight: table.weight,
                    context_window: table.context_window,
                    tools: table.tools,
                    json_mode: table.json_mode,
                    vision: table.vision,
                })
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

/// The policy tables of `[defaults]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Retries on one target.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The breaker each target gets.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Timeouts of each request.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// A limit each route gets for its own requests and tokens.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// A concurrency limit each route gets for its own requests.
    #[serde(default)]
    pub concurrency: Option<ConcurrencyConfig>,
    /// Load shedding each route applies to its own requests.
    #[serde(default)]
    pub load_shedding: Option<LoadShedConfig>,
}

/// Copies every key of the `[defaults]` policy tables into each route that does not set
/// it, so routes inherit defaults key by key.
///
/// Call it on the parsed document before deserializing it. Values of the wrong shape are
/// left alone for deserialization to report.
pub fn apply_defaults(document: &mut toml::Table) {
    let Some(toml::Value::Table(defaults)) = document.get("defaults").cloned() else {
        return;
    };
    let Some(toml::Value::Table(routes)) = document.get_mut("routes") else {
        return;
    };

    for (_, route) in routes.iter_mut() {
        let toml::Value::Table(route) = route else {
            continue;
        };
        for name in POLICY_TABLES {
            let Some(toml::Value::Table(default_table)) = defaults.get(name) else {
                continue;
            };
            let entry = route
                .entry(name.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(route_table) = entry else {
                continue;
            };
            for (key, value) in default_table {
                route_table
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
    }
}

/// A problem in the config, with the path of the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, such as `routes.chat.retry.jitter`.
    pub path: String,
    /// Description of the problem and its fix.
    pub message: String,
}

impl ConfigIssue {
    /// Creates an issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid config: {one}"),
            many => {
                write!(f, "invalid config ({} problems):", many.len())?;
                for issue in many {
                    write!(f, "\n  {issue}")?;
                }
                Ok(())
            }
        }
    }
}

/// Replaces every `${NAME}` in `text` with the environment variable `NAME`, read through
/// `lookup`.
///
/// # Errors
///
/// Returns a message naming the first variable that is unset or empty, or an unclosed
/// `${`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        let name = &after[..end];
        match lookup(name) {
            Some(value) if !value.is_empty() => out.push_str(&value),
            _ => {
                return Err(format!(
                    "environment variable {name} is not set; export it or remove this setting"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> EngineConfig {
        let mut document: toml::Table = text.parse().unwrap();
        apply_defaults(&mut document);
        toml::Value::Table(document).try_into().unwrap()
    }

    #[test]
    fn routes_inherit_defaults_key_by_key() {
        let config = parse(
            r#"
            [providers.a]
            kind = "openai"

            [routes.chat]
            primary = "a"
            [routes.chat.retry]
            max_retries = 1

            [routes.other]
            primary = "a"

            [defaults.retry]
            max_retries = 7
            base_delay = "10ms"
            [defaults.timeouts]
            read_timeout = "2s"
            "#,
        );
        let chat = &config.routes["chat"];
        assert_eq!(chat.retry.max_retries, 1);
        assert_eq!(chat.retry.base_delay, Duration::from_millis(10));
        assert_eq!(chat.timeouts.read_timeout, Duration::from_secs(2));
        assert_eq!(chat.retry.backoff_factor, 2.0);
        assert_eq!(config.routes["other"].retry.max_retries, 7);
    }

    #[test]
    fn reads_hedge_delay() {
        let route = |value: &str| {
            let text = format!(
                "[providers.a]\nkind = \"openai\"\n[routes.chat]\nprimary = \"a\"\nhedge_delay = {value}\n"
            );
            let mut document: toml::Table = text.parse().unwrap();
            apply_defaults(&mut document);
            toml::Value::Table(document)
                .try_into::<EngineConfig>()
                .map(|config| config.routes["chat"].hedge_delay)
                .map_err(|err| err.to_string())
        };
        assert_eq!(
            route("\"250ms\""),
            Ok(Some(HedgeDelay::Fixed(Duration::from_millis(250))))
        );
        assert_eq!(route("\"p95\""), Ok(Some(HedgeDelay::Percentile(95.0))));
        assert_eq!(route("\" p99.5 \""), Ok(Some(HedgeDelay::Percentile(99.5))));

        for (value, message) in [
            ("\"p100\"", "above 0 and below 100"),
            ("\"p0\"", "above 0 and below 100"),
            ("\"pfast\"", "above 0 and below 100"),
            ("\"0s\"", "leave hedge_delay out"),
            ("\"soon\"", "a percentile such as"),
            ("200", "a duration such as \"200ms\""),
            ("true", "a duration such as"),
        ] {
            let error = route(value).unwrap_err();
            assert!(error.contains(message), "{value}: {error}");
        }
    }

    #[test]
    fn routes_keep_file_order() {
        let config = parse(
            r#"
            [providers.zeta]
            kind = "openai"
            [providers.alpha]
            kind = "openai"
            "#,
        );
        let names: Vec<_> = config.providers.keys().collect();
        assert_eq!(names, ["zeta", "alpha"]);
    }

    #[test]
    fn expands_environment_variables() {
        let lookup = |name: &str| (name == "KEY").then(|| "sk-1".to_owned());
        assert_eq!(expand_env("${KEY}", lookup), Ok("sk-1".to_owned()));
        assert_eq!(
            expand_env("Bearer ${KEY}!", lookup),
            Ok("Bearer sk-1!".to_owned())
        );
        assert_eq!(expand_env("plain", lookup), Ok("plain".to_owned()));
        let missing = expand_env("${NOPE}", lookup).unwrap_err();
        assert!(missing.contains("NOPE is not set"), "{missing}");
        assert!(expand_env("${KEY", lookup).is_err());
    }

    #[test]
    fn reads_model_entries() {
        let config = parse(
            r#"
            [providers.a]
            kind = "openai"
            [routes.chat]
            primary = "a"
            models = [
                ["gpt-4", 1.0],
                { name = "a/small", weight = 0.5, context_window = 8192, tools = false },
            ]
            "#,
        );
        let models = &config.routes["chat"].models;
        assert_eq!(models[0].name, "gpt-4");
        assert_eq!(models[0].weight, 1.0);
        assert_eq!(models[1].provider(), Some("a"));
        assert_eq!(models[1].model(), "small");
        assert_eq!(models[1].context_window, Some(8192));
        assert_eq!(models[1].tools, Some(false));
    }

    #[test]
    fn bad_model_entries_name_the_fix() {
        for (entry, expected) in [
            ("\"gpt-4\"", "needs a weight"),
            ("[\"gpt-4\"]", "[\"name\", weight]"),
            ("{ name = \"x\", wieght = 1.0 }", "unknown field `wieght`"),
        ] {
            let text = format!("[providers.a]\nkind = \"openai\"\n[routes.chat]\nprimary = \"a\"\nmodels = [{entry}]\n");
            let mut document: toml::Table = text.parse().unwrap();
            apply_defaults(&mut document);
            let err = toml::Value::Table(document)
                .try_into::<EngineConfig>()
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn debug_redacts_api_key() {
        let config = parse(
            r#"
            [providers.a]
            kind = "openai"
            api_key = "sk-secret"
            "#,
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret"), "{printed}");
    }
}
