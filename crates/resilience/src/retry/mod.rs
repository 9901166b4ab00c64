//! Retries on one target: exponential backoff with jitter, server-given delays and the
//! request deadline.
//!
//! The delay before retry `n` (counting from 0) is
//! `base_delay × backoff_factor^n`, capped at `max_delay`, then spread uniformly by
//! `±jitter` of itself and capped again. A delay the server requests (`Retry-After`,
//! `retry-after-ms`) replaces the computed one. [`RetryConfig::decide`] never returns a
//! delay that ends past the deadline: it gives up instead, so the caller can fail over
//! or fail at once.

mod budget;
mod retry_after;

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

pub use budget::RetryBudget;
pub use retry_after::{
    parse_reset_duration, parse_retry_after, parse_retry_after_ms, MAX_SERVER_DELAY,
};

/// Retry settings of a route.
///
/// ```
/// use adpa_resilience::RetryConfig;
///
/// let config: RetryConfig = toml::from_str(r#"
///     max_retries = 3
///     base_delay = "500ms"
///     backoff_factor = 2.0
///     max_delay = "20s"
///     jitter = 0.1
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries on the same target after the first attempt; moving to another target is
    /// failover and does not count.
    pub max_retries: u32,
    /// Delay before the first retry.
    #[serde(with = "crate::duration")]
    pub base_delay: Duration,
    /// Multiplier applied to the delay for each further retry.
    pub backoff_factor: f64,
    /// Upper bound of a computed delay. A server that requests a longer delay makes the
    /// request give up on this target instead of sleeping.
    #[serde(with = "crate::duration")]
    pub max_delay: Duration,
    /// Fraction in `0.0..=1.0` by which each delay is spread: `0.1` gives ±10%.
    pub jitter: f64,
    /// Retries allowed per request over `budget_window`, across all targets of a route.
    pub budget_ratio: f64,
    /// Time over which requests and retries are counted for the budget.
    #[serde(with = "crate::duration")]
    pub budget_window: Duration,
    /// Retries per second allowed even without traffic to earn them.
    pub budget_min_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            backoff_factor: 2.0,
            max_delay: Duration::from_secs(20),
            jitter: 0.1,
            budget_ratio: 0.2,
            budget_window: Duration::from_secs(10),
            budget_min_per_second: 1.0,
        }
    }
}

/// The decision after an attempt failed with an error worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sleep this long, then try the same target again.
    RetryAfter(Duration),
    /// `max_retries` retries were already made on this target.
    Exhausted,
    /// The server asked for a delay longer than `max_delay`.
    ServerDelayTooLong(Duration),
    /// The delay would end at or after the request deadline.
    DeadlineTooClose(Duration),
}

impl RetryConfig {
    /// Checks every setting against its valid range.
    ///
    /// # Errors
    ///
    /// Returns the first setting that is out of range, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            return Err(ConfigError::new(
                "backoff_factor",
                format!("must be a number >= 1.0, got {}", self.backoff_factor),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "jitter",
                format!("must be a fraction in 0.0..=1.0, got {}", self.jitter),
            ));
        }
        if !(self.budget_ratio.is_finite() && self.budget_ratio >= 0.0) {
            return Err(ConfigError::new(
                "budget_ratio",
                format!("must be a number >= 0.0, got {}", self.budget_ratio),
            ));
        }
        if !(self.budget_min_per_second.is_finite() && self.budget_min_per_second >= 0.0) {
            return Err(ConfigError::new(
                "budget_min_per_second",
                format!(
                    "must be a number >= 0.0, got {}",
                    self.budget_min_per_second
                ),
            ));
        }
        if self.budget_window < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "budget_window",
                format!("must be at least 1s, got {:?}", self.budget_window),
            ));
        }
        if self.max_delay < self.base_delay {
            return Err(ConfigError::new(
                "max_delay",
                format!(
                    "must be at least base_delay ({:?}), got {:?}",
                    self.base_delay, self.max_delay
                ),
            ));
        }
        Ok(())
    }

    /// Computes the delay before retry `retry` (0 for the first retry), jitter included.
    pub fn backoff<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        // powi saturates to infinity for large exponents, and min() then caps it.
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let base = self.base_delay.as_secs_f64() * self.backoff_factor.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());

        let spread = if self.jitter > 0.0 {
            rng.random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        let jittered = (capped * (1.0 + spread)).clamp(0.0, self.max_delay.as_secs_f64());
        Duration::from_secs_f64(jittered)
    }

    /// Decides whether retry `retries_done + 1` on the same target may happen, and after
    /// what delay.
    ///
    /// `server_delay` is the delay the server asked for, if any; it replaces the backoff.
    /// `remaining` is the time left until the request deadline, `None` without one.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        retries_done: u32,
        server_delay: Option<Duration>,
        remaining: Option<Duration>,
        rng: &mut R,
    ) -> RetryDecision {
        if retries_done >= self.max_retries {
            return RetryDecision::Exhausted;
        }

        let delay = match server_delay {
            Some(asked) if asked > self.max_delay => {
                return RetryDecision::ServerDelayTooLong(asked);
            }
            Some(asked) => asked,
            None => self.backoff(retries_done, rng),
        };

        match remaining {
            Some(left) if delay >= left => RetryDecision::DeadlineTooClose(delay),
            _ => RetryDecision::RetryAfter(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn config(jitter: f64) -> RetryConfig {
        RetryConfig {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            backoff_factor: 2.0,
            max_delay: Duration::from_secs(1),
            jitter,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_grows_then_caps() {
        let mut rng = SmallRng::seed_from_u64(1);
        let config = config(0.0);
        let delays: Vec<_> = (0..6).map(|n| config.backoff(n, &mut rng)).collect();
        let millis: Vec<_> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_huge_retry_count_stays_capped() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            config(0.0).backoff(u32::MAX, &mut rng),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn jitter_stays_within_fraction() {
        let mut rng = SmallRng::seed_from_u64(7);
        let config = config(0.1);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2_000 {
            let delay = config.backoff(1, &mut rng).as_secs_f64();
            assert!(
                (0.18..=0.22).contains(&delay),
                "delay {delay} outside ±10% of 200ms"
            );
            seen_low |= delay < 0.195;
            seen_high |= delay > 0.205;
        }
        assert!(seen_low, "jitter never lowers the delay");
        assert!(seen_high, "jitter never raises the delay");
    }

    #[test]
    fn jitter_never_exceeds_max_delay() {
        let mut rng = SmallRng::seed_from_u64(3);
        let config = config(1.0);
        for n in 0..50 {
            assert!(config.backoff(n, &mut rng) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn decide_stops_after_max_retries() {
        let mut rng = SmallRng::seed_from_u64(1);
        let config = config(0.0);
        assert_eq!(
            config.decide(4, None, None, &mut rng),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            config.decide(5, None, None, &mut rng),
            RetryDecision::Exhausted
        );
    }

    #[test]
    fn decide_uses_server_delay() {
        let mut rng = SmallRng::seed_from_u64(1);
        let decision = config(0.0).decide(0, Some(Duration::from_millis(700)), None, &mut rng);
        assert_eq!(
            decision,
            RetryDecision::RetryAfter(Duration::from_millis(700))
        );
    }

    #[test]
    fn decide_rejects_server_delay_over_max() {
        let mut rng = SmallRng::seed_from_u64(1);
        let decision = config(0.0).decide(0, Some(Duration::from_secs(2)), None, &mut rng);
        assert_eq!(
            decision,
            RetryDecision::ServerDelayTooLong(Duration::from_secs(2))
        );
    }

    #[test]
    fn decide_never_sleeps_past_deadline() {
        let mut rng = SmallRng::seed_from_u64(1);
        let config = RetryConfig {
            max_delay: Duration::from_secs(20),
            ..config(0.0)
        };
        let decision = config.decide(
            0,
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(1)),
            &mut rng,
        );
        assert_eq!(
            decision,
            RetryDecision::DeadlineTooClose(Duration::from_secs(2))
        );

        let decision = config.decide(
            0,
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(3)),
            &mut rng,
        );
        assert_eq!(decision, RetryDecision::RetryAfter(Duration::from_secs(2)));
    }

    #[test]
    fn validate_names_bad_field() {
        let bad = [
            (
                RetryConfig {
                    backoff_factor: 0.5,
                    ..RetryConfig::default()
                },
                "backoff_factor",
            ),
            (
                RetryConfig {
                    backoff_factor: f64::NAN,
                    ..RetryConfig::default()
                },
                "backoff_factor",
            ),
            (
                RetryConfig {
                    jitter: 1.5,
                    ..RetryConfig::default()
                },
                "jitter",
            ),
            (
                RetryConfig {
                    jitter: -0.1,
                    ..RetryConfig::default()
                },
                "jitter",
            ),
            (
                RetryConfig {
                    max_delay: Duration::from_millis(1),
                    ..RetryConfig::default()
                },
                "max_delay",
            ),
        ];
        for (config, field) in bad {
            assert_eq!(config.validate().map_err(|e| e.field), Err(field));
        }
        assert_eq!(RetryConfig::default().validate(), Ok(()));
    }

    #[test]
    fn unknown_setting_is_rejected() {
        let err = toml::from_str::<RetryConfig>("max_retry = 3")
            .err()
            .map(|e| e.to_string());
        assert!(err
            .unwrap_or_default()
            .contains("unknown field `max_retry`"));
    }
}
