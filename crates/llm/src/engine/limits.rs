//! Rate limits of routes and targets: admission, and reconciling token estimates with
//! the usage providers report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adpa_resilience::rate_limit::{Limit, RateLimiter, Rejection};

/// The state of a limiter, for `x-ratelimit-*` response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    /// The scope of the limiter: `route`, `key NAME`, `global`.
    pub scope: String,
    /// The limit that rejected the request.
    pub limit: Limit,
    /// Time until the rejected request would pass.
    pub retry_after: Duration,
    /// Burst of the request limit.
    pub requests_limit: u64,
    /// Requests that would pass now.
    pub requests_remaining: u64,
    /// Time until the request limit is full again.
    pub requests_reset: Duration,
    /// Burst of the token limit and tokens that would pass now, when tokens are limited.
    pub tokens: Option<(u64, u64)>,
}

impl LimitState {
    pub(crate) fn of(
        scope: &str,
        limiter: &RateLimiter,
        rejection: Rejection,
        now: Instant,
    ) -> Self {
        let config = limiter.config();
        Self {
            scope: scope.to_owned(),
            limit: rejection.limit,
            retry_after: rejection.not_until.wait_from(now),
            requests_limit: u64::from(config.burst_size),
            requests_remaining: limiter.remaining_requests(now),
            requests_reset: limiter.requests_reset_after(now),
            tokens: config.tokens_per_minute.zip(limiter.remaining_tokens(now)),
        }
    }
}

/// Tokens admitted on an estimate, to be reconciled once the provider reports usage.
///
/// Until [`TokenReservation::commit`], dropping it gives everything back: the request
/// left before it was routed, for instance while it waited in a queue. After that,
/// dropping it without [`TokenReservation::settle`] keeps the estimate charged, which
/// errs towards the provider's limits.
#[derive(Debug, Default)]
pub(crate) struct TokenReservation {
    limiters: Vec<Arc<RateLimiter>>,
    estimated: u64,
    committed: bool,
}

impl TokenReservation {
    pub(crate) fn new(estimated: u64) -> Self {
        Self {
            limiters: Vec::new(),
            estimated,
            committed: false,
        }
    }

    /// Marks the request as routed: from now on it may reach a provider.
    pub(crate) fn commit(&mut self) {
        self.committed = true;
    }

    pub(crate) fn add(&mut self, limiter: Arc<RateLimiter>) {
        self.limiters.push(limiter);
    }

    /// Reconciles every limiter with the `actual` tokens, when known.
    pub(crate) fn settle(&mut self, actual: Option<u64>, now: Instant) {
        let limiters = std::mem::take(&mut self.limiters);
        if let Some(actual) = actual {
            for limiter in limiters {
                limiter.reconcile(self.estimated, actual, now);
            }
        }
    }

    /// Gives the request and its estimate back to every limiter: the request was
    /// rejected before it was sent.
    fn undo(&mut self) {
        for limiter in std::mem::take(&mut self.limiters) {
            limiter.undo(self.estimated);
        }
    }

    /// Gives the estimate back to one limiter: the attempt it was reserved for failed
    /// before the provider used any tokens.
    pub(crate) fn release(limiter: &RateLimiter, estimated: u64, now: Instant) {
        limiter.reconcile(estimated, 0, now);
    }
}

impl Drop for TokenReservation {
    fn drop(&mut self) {
        if !self.committed {
            self.undo();
        }
    }
}
