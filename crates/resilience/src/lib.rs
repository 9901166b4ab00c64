//! Resilience policy primitives for traffic to large language model providers.
//!
//! The primitives know nothing about HTTP or LLM wire formats. They take the current
//! time as an argument (`now: Instant`) or run on `tokio::time`, so tests drive them
//! exactly, on an injected clock or on tokio's paused time.
//!
//! - [`retry`]: exponential backoff with jitter, `Retry-After` parsing and the decision
//!   whether a retry still fits the request's deadline.
//! - [`circuit_breaker`]: a per-target breaker (closed, open, half-open) with a
//!   lock-free closed path.
//! - [`concurrency`]: a concurrency limit with a bounded priority queue.
//! - [`load_shed`]: rejecting requests by priority above a load threshold.
//! - [`rate_limit`]: a lock-free GCRA rate limiter for requests and tokens.
//! - [`latency`]: a peak-sensitive moving average of latency per endpoint.
//! - [`clock`]: a monotonic clock that reads the CPU's time-stamp counter, cheaper
//!   than `Instant::now()`.
//! - [`timeout`]: the timeout settings of one request, its deadline, and a stream
//!   adapter that catches an idle gap between items.
//!
//! Every settings type deserializes from the TOML names the gateway documents, and
//! `validate` names the field that is out of range.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod circuit_breaker;
pub mod clock;
pub mod concurrency;
pub mod duration;
pub mod latency;
pub mod load_shed;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

mod config_error;

pub use circuit_breaker::{CircuitBreaker, CircuitBreakerConfig};
pub use config_error::ConfigError;
pub use retry::{RetryConfig, RetryDecision};
pub use timeout::{Deadline, TimeoutConfig};
