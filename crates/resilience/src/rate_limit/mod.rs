//! A rate limiter using the generic cell rate algorithm (GCRA).
//!
//! The limiter keeps one number, the theoretical arrival time (TAT) of the next request,
//! in an atomic. Each admitted cost of `n` moves it `n × T` later, where `T` is the
//! emission interval (`1 / rate`). A request is admitted while the TAT is at most
//! `τ = T × (burst − 1)` ahead of now, so `burst` requests pass at once and then one per
//! `T`. A rejection carries the instant at which the same request would pass.
//!
//! The check is a load and a compare-and-swap, with no lock, so it costs tens of
//! nanoseconds. `governor` implements the same algorithm. This one adds costs above one,
//! refunds and charges, because token limits reconcile an estimate with the usage a
//! provider reports.
//!
//! Every method takes the current time as an `Instant` or, cheaper to read, as
//! [`Ticks`] of the time-stamp counter clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::Ticks;
use crate::ConfigError;

/// Rate limit settings.
///
/// ```
/// use adpa_resilience::rate_limit::RateLimitConfig;
///
/// let config: RateLimitConfig = toml::from_str(r#"
///     requests_per_second = 10
///     burst_size = 20
///     tokens_per_minute = 90000
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained request rate.
    pub requests_per_second: f64,
    /// Requests admitted at once after a quiet period; at least 1.
    #[serde(default = "default_burst")]
    pub burst_size: u32,
    /// Tokens (prompt and completion) per minute, when limited. The burst is one
    /// minute's worth.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

fn default_burst() -> u32 {
    1
}

impl RateLimitConfig {
    /// Checks every setting against its valid range.
    ///
    /// # Errors
    ///
    /// Returns the first setting that is out of range, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(ConfigError::new(
                "requests_per_second",
                format!("must be a number above 0, got {}", self.requests_per_second),
            ));
        }
        if self.burst_size == 0 {
            return Err(ConfigError::new("burst_size", "must be at least 1"));
        }
        if self.tokens_per_minute == Some(0) {
            return Err(ConfigError::new("tokens_per_minute", "must be at least 1"));
        }
        Ok(())
    }
}

/// A request the limiter rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil {
    /// The earliest instant at which the same cost would be admitted.
    pub at: Instant,
}

impl NotUntil {
    /// Returns the wait from `now` until [`NotUntil::at`].
    pub fn wait_from(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }
}

/// A GCRA limiter over any cost unit: requests, or tokens.
///
/// # Thread safety
///
/// Shared by reference between threads; every method takes `&self` and is lock-free.
#[derive(Debug)]
pub struct Gcra {
    /// Instant that TAT values count from.
    base: Ticks,
    /// Nanoseconds per unit of cost.
    interval: u64,
    /// Nanoseconds the TAT may run ahead of now: `interval × (burst − 1)`.
    tolerance: u64,
    burst: u64,
    /// Theoretical arrival time, in nanoseconds since `base`.
    tat: AtomicU64,
}

impl Gcra {
    /// Creates a limiter of `rate` units per `per`, admitting `burst` units at once.
    /// `base` is the earliest instant any later call passes as `now`.
    ///
    /// A zero `burst` is treated as 1, and the interval is at least one nanosecond.
    pub fn new(rate: f64, per: Duration, burst: u64, base: Instant) -> Self {
        let burst = burst.max(1);
        let interval = (per.as_nanos() as f64 / rate).round().max(1.0) as u64;
        Self {
            base: Ticks::from(base),
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            burst,
            tat: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Ticks) -> u64 {
        now.nanos_since(self.base)
    }

    /// Admits `cost` units at `now`, or returns when they would be admitted.
    ///
    /// # Errors
    ///
    /// Returns [`NotUntil`] when admitting the cost would exceed the burst. A cost above
    /// the burst is never admitted; its `NotUntil` is the time the bucket is full again.
    pub fn check(&self, cost: u64, now: impl Into<Ticks>) -> Result<(), NotUntil> {
        let now = now.into();
        let now_nanos = self.nanos(now);
        let increment = self.interval.saturating_mul(cost);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now_nanos);
            let next = start.saturating_add(increment);
            // Admit while the new TAT stays within tolerance + one interval of now.
            let allowed_until = now_nanos
                .saturating_add(self.tolerance)
                .saturating_add(self.interval);
            if next > allowed_until {
                let wait = next - allowed_until;
                return Err(NotUntil {
                    at: now.add_nanos(wait).instant(),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back `units` admitted earlier, such as tokens estimated above what a
    /// provider reported.
    pub fn refund(&self, units: u64) {
        let decrement = self.interval.saturating_mul(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(decrement))
            });
    }

    /// Charges `units` beyond what was admitted, such as tokens a provider reported
    /// above the estimate. The charge may push the limiter past its burst, so that
    /// later checks wait until it has drained.
    pub fn charge(&self, units: u64, now: impl Into<Ticks>) {
        let now_nanos = self.nanos(now.into());
        let increment = self.interval.saturating_mul(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now_nanos).saturating_add(increment))
            });
    }

    /// Returns the units that would be admitted at `now`.
    pub fn remaining(&self, now: impl Into<Ticks>) -> u64 {
        let now_nanos = self.nanos(now.into());
        let tat = self.tat.load(Ordering::Acquire).max(now_nanos);
        let used = tat - now_nanos;
        let capacity = self.tolerance + self.interval;
        (capacity.saturating_sub(used) / self.interval).min(self.burst)
    }

    /// Returns the time from `now` until the limiter is full again.
    pub fn reset_after(&self, now: impl Into<Ticks>) -> Duration {
        let now_nanos = self.nanos(now.into());
        let tat = self.tat.load(Ordering::Acquire);
        Duration::from_nanos(tat.saturating_sub(now_nanos))
    }

    /// Returns the burst: the units admitted at once when full.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// The request and token limiters of one scope.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    requests: Gcra,
    tokens: Option<Gcra>,
}

/// The limit that rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `requests_per_second`.
    Requests,
    /// `tokens_per_minute`.
    Tokens,
}

/// A rejection by a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The limit that rejected the request.
    pub limit: Limit,
    /// When the request would be admitted.
    pub not_until: NotUntil,
}

impl RateLimiter {
    /// Creates a limiter; `base` is the earliest instant later calls pass as `now`.
    ///
    /// # Errors
    ///
    /// Returns the setting that is out of range.
    pub fn new(config: RateLimitConfig, base: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let requests = Gcra::new(
            config.requests_per_second,
            Duration::from_secs(1),
            u64::from(config.burst_size),
            base,
        );
        let tokens = config
            .tokens_per_minute
            .map(|tpm| Gcra::new(tpm as f64, Duration::from_secs(60), tpm, base));
        Ok(Self {
            config,
            requests,
            tokens,
        })
    }

    /// Returns the settings.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Admits one request estimated at `tokens` tokens, or rejects it. A request
    /// rejected by the token limit gets its request back, so it costs nothing.
    ///
    /// # Errors
    ///
    /// Returns [`Rejection`] naming the limit and when the request would pass.
    pub fn check(&self, tokens: u64, now: impl Into<Ticks>) -> Result<(), Rejection> {
        let now = now.into();
        self.requests.check(1, now).map_err(|not_until| Rejection {
            limit: Limit::Requests,
            not_until,
        })?;
        if let Some(limiter) = &self.tokens {
            // A request larger than a minute of tokens could never pass. It counts as a
            // whole minute, so it waits for a full bucket instead of failing forever.
            let cost = tokens.min(limiter.burst());
            if let Err(not_until) = limiter.check(cost, now) {
                self.requests.refund(1);
                return Err(Rejection {
                    limit: Limit::Tokens,
                    not_until,
                });
            }
        }
        Ok(())
    }

    /// Reconciles the `estimated` tokens admitted for a request with the `actual` tokens
    /// the provider reported: refunds an over-estimate, charges an under-estimate.
    pub fn reconcile(&self, estimated: u64, actual: u64, now: impl Into<Ticks>) {
        let Some(limiter) = &self.tokens else {
            return;
        };
        let estimated = estimated.min(limiter.burst());
        match actual.cmp(&estimated) {
            std::cmp::Ordering::Less => limiter.refund(estimated - actual),
            std::cmp::Ordering::Greater => limiter.charge(actual - estimated, now),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// Gives back a request admitted with `tokens` estimated tokens that was not sent
    /// after all, such as one a later limit rejected.
    pub fn undo(&self, tokens: u64) {
        self.requests.refund(1);
        if let Some(limiter) = &self.tokens {
            limiter.refund(tokens.min(limiter.burst()));
        }
    }

    /// Returns the requests that would be admitted at `now`.
    pub fn remaining_requests(&self, now: impl Into<Ticks>) -> u64 {
        self.requests.remaining(now)
    }

    /// Returns the tokens that would be admitted at `now`, when tokens are limited.
    pub fn remaining_tokens(&self, now: impl Into<Ticks>) -> Option<u64> {
        let now = now.into();
        self.tokens.as_ref().map(|limiter| limiter.remaining(now))
    }

    /// Returns the time from `now` until the request limit is full again.
    pub fn requests_reset_after(&self, now: impl Into<Ticks>) -> Duration {
        self.requests.reset_after(now)
    }
}

#[cfg(test)]
mod tests;
