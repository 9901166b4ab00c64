//! Timeouts of one request: the settings, the deadline that covers every attempt, and a
//! stream adapter that catches an idle gap between items.

mod idle;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ConfigError;

pub use idle::{IdleTimeout, IdleTimeoutError};

/// Timeout settings of a route.
///
/// ```
/// use adpa_resilience::TimeoutConfig;
///
/// let config: TimeoutConfig = toml::from_str(r#"
///     connect_timeout = "5s"
///     read_timeout = "30s"
///     total_timeout = "300s"
/// "#).unwrap();
/// assert_eq!(config.write_timeout.as_secs(), 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time to open a connection to the target, TLS handshake included.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// Time a write of the request may stay blocked.
    #[serde(with = "crate::duration")]
    pub write_timeout: Duration,
    /// Time from the start of an attempt, connecting included, to the response head;
    /// for a stream, to the first event that carries content.
    #[serde(with = "crate::duration")]
    pub first_byte_timeout: Duration,
    /// Maximum idle gap between two reads of the response, so a stalled stream is caught.
    #[serde(with = "crate::duration")]
    pub read_timeout: Duration,
    /// One deadline for all attempts of a request, streaming included.
    #[serde(with = "crate::duration")]
    pub total_timeout: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(300),
        }
    }
}

impl TimeoutConfig {
    /// Checks that every timeout is longer than zero.
    ///
    /// # Errors
    ///
    /// Returns the first timeout that is zero, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("connect_timeout", self.connect_timeout),
            ("write_timeout", self.write_timeout),
            ("first_byte_timeout", self.first_byte_timeout),
            ("read_timeout", self.read_timeout),
            ("total_timeout", self.total_timeout),
        ];
        for (field, value) in fields {
            if value.is_zero() {
                return Err(ConfigError::new(field, "must be longer than zero"));
            }
        }
        Ok(())
    }
}

/// The point in time by which a whole request, every attempt included, must finish.
///
/// Built on `tokio::time::Instant`, so it follows tokio's paused clock in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// Creates a deadline `total` after `start`.
    pub fn after(start: Instant, total: Duration) -> Self {
        Self { at: start + total }
    }

    /// Returns the instant of the deadline.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Returns the time left at `now`, zero once the deadline has passed.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Reports whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// Returns the shorter of `limit` and the time left at `now`.
    pub fn cap(&self, limit: Duration, now: Instant) -> Duration {
        limit.min(self.remaining(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_remaining_saturates() {
        let start = Instant::now();
        let deadline = Deadline::after(start, Duration::from_secs(1));
        assert_eq!(deadline.remaining(start), Duration::from_secs(1));
        assert_eq!(
            deadline.remaining(start + Duration::from_secs(2)),
            Duration::ZERO
        );
        assert!(deadline.is_expired(start + Duration::from_secs(1)));
        assert_eq!(
            deadline.cap(Duration::from_secs(5), start + Duration::from_millis(400)),
            Duration::from_millis(600)
        );
    }

    #[test]
    fn zero_timeout_is_named() {
        let config = TimeoutConfig {
            read_timeout: Duration::ZERO,
            ..TimeoutConfig::default()
        };
        assert_eq!(config.validate().map_err(|e| e.field), Err("read_timeout"));
    }
}
