//! Client keys: who may call the gateway, at which priority and within which limits.
//!
//! The config stores only the SHA-256 hash of each secret. Secrets are 32 random bytes,
//! so a fast hash is enough: there is no short password to guess.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use adpa_llm::Priority;
use adpa_resilience::rate_limit::{RateLimitConfig, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of the secrets `adpa key new` makes, so they are recognisable in a leak scan.
pub const SECRET_PREFIX: &str = "sk-adpa-";

/// One `[[keys]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for logs and metrics; never the secret.
    pub name: String,
    /// `sha256:` and the hex SHA-256 of the secret, as `adpa key new` prints it.
    pub hash: String,
    /// Priority class of the key's requests: `low`, `normal` or `high`.
    #[serde(default = "normal")]
    pub priority: String,
    /// Whether requests may choose their priority with `x-adpa-priority`.
    #[serde(default)]
    pub allow_priority_header: bool,
    /// A limit on this key's requests and tokens.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

fn normal() -> String {
    "normal".to_owned()
}

/// A key after validation.
#[derive(Debug)]
pub struct ClientKey {
    /// The key's name.
    pub name: Arc<str>,
    /// Its priority class.
    pub priority: Priority,
    /// Whether its requests may set `x-adpa-priority`.
    pub allow_priority_header: bool,
    /// Its own rate limit.
    pub limiter: Option<Arc<RateLimiter>>,
}

/// The configured keys, by the hash of their secret.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<[u8; 32], Arc<ClientKey>>,
}

impl KeyRing {
    /// Builds the ring.
    ///
    /// # Errors
    ///
    /// Returns `(path, message)` for the first invalid entry.
    pub fn new(keys: &[KeyConfig]) -> Result<Self, (String, String)> {
        let mut by_hash = HashMap::new();
        let base = adpa_resilience::clock::now();
        for (index, key) in keys.iter().enumerate() {
            let path = format!("keys[{index}]");
            let hash = parse_hash(&key.hash).ok_or_else(|| {
                (
                    format!("{path}.hash"),
                    "must be \"sha256:\" and 64 hex digits, as `adpa key new` prints it".to_owned(),
                )
            })?;
            let priority = Priority::parse(&key.priority).ok_or_else(|| {
                (
                    format!("{path}.priority"),
                    "must be low, normal or high".to_owned(),
                )
            })?;
            let limiter = match &key.rate_limit {
                Some(config) => Some(Arc::new(
                    RateLimiter::new(config.clone(), base)
                        .map_err(|err| (format!("{path}.rate_limit.{}", err.field), err.reason))?,
                )),
                None => None,
            };
            let entry = Arc::new(ClientKey {
                name: Arc::from(key.name.as_str()),
                priority,
                allow_priority_header: key.allow_priority_header,
                limiter,
            });
            if by_hash.insert(hash, entry).is_some() {
                return Err((
                    format!("{path}.hash"),
                    "the same secret is configured twice".to_owned(),
                ));
            }
        }
        Ok(Self { by_hash })
    }

    /// Returns whether any key is configured; without keys the gateway is open.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Finds the key whose secret is `secret`.
    pub fn find(&self, secret: &str) -> Option<&Arc<ClientKey>> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.by_hash.get(&digest)
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Makes a new secret and its config hash.
pub fn new_secret() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let mut secret = String::from(SECRET_PREFIX);
    for byte in bytes {
        let _ = write!(secret, "{byte:02x}");
    }
    (secret.clone(), hash_of(&secret))
}

/// Returns the config hash of a secret.
pub fn hash_of(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hash = String::from("sha256:");
    for byte in digest {
        let _ = write!(hash, "{byte:02x}");
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, hash: String) -> KeyConfig {
        KeyConfig {
            name: name.to_owned(),
            hash,
            priority: "high".to_owned(),
            allow_priority_header: false,
            rate_limit: None,
        }
    }

    #[test]
    fn finds_key_by_secret() {
        let (secret, hash) = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 64);
        let ring = KeyRing::new(&[key("team", hash)]).unwrap();
        let found = ring.find(&secret).unwrap();
        assert_eq!(&*found.name, "team");
        assert_eq!(found.priority, Priority::High);
        assert!(ring.find("sk-adpa-wrong").is_none());
    }

    #[test]
    fn hash_matches_sha256() {
        // SHA-256 of "abc", from FIPS 180-2.
        assert_eq!(
            hash_of("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let short = KeyRing::new(&[key("a", "sha256:abcd".to_owned())]).unwrap_err();
        assert_eq!(short.0, "keys[0].hash");
        let (_, hash) = new_secret();
        let twice = KeyRing::new(&[key("a", hash.clone()), key("b", hash)]).unwrap_err();
        assert_eq!(twice.0, "keys[1].hash");
        let mut bad_priority = key("a", new_secret().1);
        bad_priority.priority = "urgent".to_owned();
        assert_eq!(
            KeyRing::new(&[bad_priority]).unwrap_err().0,
            "keys[0].priority"
        );
    }
}
