//! The gateway's config file: `[server]` plus the engine's providers, routes and
//! `[defaults]`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use adpa_llm::config::{apply_defaults, PolicyConfig, ProviderConfig, RouteConfig};
use adpa_llm::EngineConfig;
use adpa_resilience::rate_limit::RateLimitConfig;

use crate::keys::KeyConfig;
use indexmap::IndexMap;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Providers by name, in file order.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
    /// Routes by the name clients send as `model`, in file order.
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    /// Policies routes inherit.
    #[serde(default)]
    pub defaults: PolicyConfig,
    /// Client keys; without any the gateway is open to every client that reaches it.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, such as `"4MiB"`; larger bodies get a 413.
    #[serde(
        deserialize_with = "deserialize_size",
        serialize_with = "serialize_size"
    )]
    pub max_body_size: u64,
    /// Time in-flight requests get to finish after a shutdown signal.
    #[serde(with = "adpa_resilience::duration")]
    pub shutdown_timeout: Duration,
    /// A limit on all requests and tokens the gateway admits.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_size: 4 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            rate_limit: None,
        }
    }
}

impl GatewayConfig {
    /// Returns the engine part of the config.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            providers: self.providers.clone(),
            routes: self.routes.clone(),
            defaults: self.defaults.clone(),
        }
    }

    /// Parses a config from TOML text.
    ///
    /// # Errors
    ///
    /// Returns [`LoadError`] naming the line of a syntax error, or the key path of an
    /// unknown key or a bad value.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        let mut document: toml::Table = text
            .parse()
            .map_err(|err: toml::de::Error| LoadError::Syntax(err.to_string()))?;

        // Check `[defaults]` on its own first: once its keys are copied into the routes,
        // a mistake in it would be reported under the first route's path.
        if let Some(defaults) = document.get("defaults") {
            serde_path_to_error::deserialize::<_, PolicyConfig>(defaults.clone()).map_err(
                |err| {
                    let inner = err.path().to_string();
                    let path = if inner == "." {
                        "defaults".to_owned()
                    } else {
                        format!("defaults.{inner}")
                    };
                    LoadError::Invalid {
                        path,
                        message: err.into_inner().message().to_owned(),
                    }
                },
            )?;
        }
        apply_defaults(&mut document);
        serde_path_to_error::deserialize(toml::Value::Table(document)).map_err(|err| {
            let path = err.path().to_string();
            LoadError::Invalid {
                path,
                message: err.into_inner().message().to_owned(),
            }
        })
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    ///
    /// Returns [`LoadError::Read`] when the file cannot be read, else as [`Self::from_toml`].
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|err| LoadError::Read {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
        Self::from_toml(&text)
    }
}

/// A config file that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file's path.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The text is not valid TOML.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A key is unknown or a value has the wrong type or form.
    #[error("invalid config: {path}: {message}")]
    Invalid {
        /// Dotted key path of the problem.
        path: String,
        /// Description of the problem, with the accepted keys or values where known.
        message: String,
    },
}

/// Parses a size such as `4MiB`, `512KiB`, `1MB` or `1048576` into bytes.
///
/// # Errors
///
/// Returns a message with the accepted forms.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("invalid size {text:?}; write it like \"4MiB\", \"512KiB\" or \"1048576\"")
    })?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}; use B, KB, KiB, MB, MiB, GB or GiB"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn deserialize_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct SizeVisitor;

    impl de::Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as \"4MiB\" or a number of bytes")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
            parse_size(value).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom("a size cannot be negative"))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }
    }

    deserializer.deserialize_any(SizeVisitor)
}

fn serialize_size<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(*value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn full_example_parses() {
        let config = GatewayConfig::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            max_body_size = "1MiB"

            [providers.openai]
            kind = "openai"
            api_key = "${OPENAI_API_KEY}"
            models = ["gpt-4"]

            [routes.chat]
            primary = "openai"
            failover_policy = "round_robin"

            [routes.chat.retry]
            max_retries = 2

            [defaults.timeouts]
            read_timeout = "5s"
            "#,
        )
        .unwrap();
        assert_eq!(config.server.max_body_size, 1 << 20);
        assert_eq!(config.routes["chat"].retry.max_retries, 2);
        assert_eq!(
            config.routes["chat"].timeouts.read_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn unknown_key_names_its_path() {
        let err = GatewayConfig::from_toml(
            "[providers.a]\nkind = \"openai\"\n[routes.chat]\nprimary = \"a\"\n[routes.chat.retry]\nmax_retry = 3\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("routes.chat.retry"), "{message}");
        assert!(message.contains("unknown field `max_retry`"), "{message}");
        assert!(message.contains("max_retries"), "{message}");
    }

    #[test]
    fn bad_value_names_its_path() {
        let err = GatewayConfig::from_toml("[defaults.retry]\nbase_delay = 500\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("defaults.retry.base_delay"), "{message}");
        assert!(message.contains("\"500s\""), "{message}");

        let err = GatewayConfig::from_toml("[server]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");

        let err = GatewayConfig::from_toml(
            "[providers.a]\nkind = \"openai\"\n[routes.chat]\nprimary = \"a\"\nfailover_policy = \"random\"\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("routes.chat.failover_policy"), "{message}");
        assert!(message.contains("round_robin"), "{message}");
        assert!(message.contains("weighted"), "{message}");
    }

    #[test]
    fn defaults_error_names_defaults() {
        let err = GatewayConfig::from_toml(
            "[routes.chat]\nprimary = \"a\"\n[defaults.retry]\nmax_retriess = 3\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("invalid config: defaults.retry"),
            "{message}"
        );
        assert!(!message.contains("routes.chat"), "{message}");
    }

    #[test]
    fn syntax_error_names_line() {
        let err = GatewayConfig::from_toml("[server\nlisten = 1").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
