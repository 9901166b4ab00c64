//! The engine's configuration: providers, routes and their policies, as read from the
//! gateway's TOML file.
//!
//! Route policy tables inherit from `[defaults]` key by key: [`apply_defaults`] copies
//! every key a route does not set from the matching `[defaults]` table before the
//! document is deserialized, and keys set nowhere take their built-in defaults.

use std::fmt;

use adpa_resilience::{CircuitBreakerConfig, RetryConfig, TimeoutConfig};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Policy tables a route has and `[defaults]` provides.
pub const POLICY_TABLES: [&str; 3] = ["retry", "circuit_breaker", "timeouts"];

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
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is never printed, even when it was written into the file in clear.
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("models", &self.models)
            .finish()
    }
}

/// A provider's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI chat completions, also spoken by Groq, vLLM, llama.cpp and Ollama.
    Openai,
}

impl ProviderKind {
    /// Returns the official API root of this kind.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => "https://api.openai.com/v1",
        }
    }
}

/// How a route orders its providers for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPolicy {
    /// `primary` first, then `secondaries` in order.
    #[default]
    Sequential,
    /// Each request starts at the next provider in turn and wraps around.
    RoundRobin,
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
    /// How providers are ordered for each request.
    #[serde(default)]
    pub failover_policy: FailoverPolicy,
    /// Retries on one target.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The breaker each target of the route gets.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Timeouts of each request.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
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
    /// What is wrong and how to fix it.
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
