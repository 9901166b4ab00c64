//! Engine results: a response with the attempts behind it, or an error that lists
//! them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::limits::LimitState;
use super::plan::{SkipReason, Skipped};
use super::stream::ChatStream;
use crate::error::{AttemptError, ErrorClass};
use crate::usage::Usage;

/// One call to one target, as reported to the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// The target, as `provider/model`.
    pub target: Arc<str>,
    /// The error class, or `None` for the attempt that succeeded.
    pub class: Option<ErrorClass>,
    /// The HTTP status the target returned, if it responded.
    pub status: Option<u16>,
    /// Time from the start of the attempt to its outcome, in milliseconds.
    pub duration_ms: u64,
    /// The attempt was a hedge, started while an earlier attempt had not responded.
    #[serde(skip_serializing_if = "is_false")]
    pub hedge: bool,
    /// The attempt was dropped because another one responded first.
    #[serde(skip_serializing_if = "is_false")]
    pub cancelled: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A successful response.
#[derive(Debug)]
pub struct EngineResponse {
    /// The route that served the request.
    pub route: Arc<str>,
    /// The provider that served the request.
    pub provider: Arc<str>,
    /// The provider's region, when it has regions.
    pub region: Option<Arc<str>>,
    /// The model name sent to that provider.
    pub model: Arc<str>,
    /// Every attempt made, the successful one last.
    pub attempts: Vec<AttemptRecord>,
    /// The body.
    pub body: ResponseBody,
}

/// The body of a successful response.
#[derive(Debug)]
pub enum ResponseBody {
    /// A whole JSON body, as the provider sent it.
    Complete {
        /// The bytes of the body.
        bytes: Bytes,
        /// Token usage the body reported.
        usage: Option<Usage>,
    },
    /// A server-sent events stream whose first content is already received.
    Stream(ChatStream),
}

/// A failure to serve a request.
#[derive(Debug)]
pub enum EngineError {
    /// The requested model names no route and no provider lists it.
    UnknownRoute {
        /// The name the client sent.
        requested: String,
        /// Names that would have been served.
        available: Vec<String>,
    },
    /// A target rejected the request in a way another target would repeat (an invalid
    /// request, a content filter refusal), so it was not failed over.
    Rejected {
        /// The target's error.
        error: AttemptError,
        /// Every attempt made.
        attempts: Vec<AttemptRecord>,
    },
    /// Every target failed or was skipped because its circuit breaker is open.
    Exhausted {
        /// The error of the last attempt, or `None` when every target was skipped.
        last: Option<AttemptError>,
        /// Every attempt made.
        attempts: Vec<AttemptRecord>,
        /// Targets not tried, with the reason.
        skipped: Vec<Skipped>,
        /// When the client may try again: the delay the last target asked for, or the
        /// time until the first breaker admits probes.
        retry_after: Option<Duration>,
    },
    /// A rate limit (global, of the client key, or of the route) rejected the request
    /// before any target was tried.
    RateLimited {
        /// The limiter's state, for `Retry-After` and `x-ratelimit-*` headers.
        state: LimitState,
    },
    /// The route's concurrency limit had no slot and its queue was full, or the wait in
    /// the queue timed out.
    Overloaded {
        /// The reason no slot was given.
        reason: adpa_resilience::concurrency::Rejected,
    },
    /// The route's load was above `max_load` and its shedding strategy chose this
    /// request.
    Shed {
        /// The load when the request arrived, in `0.0..=1.0`.
        load: f64,
    },
    /// The request deadline (`total_timeout`) passed before a target responded.
    DeadlineExceeded {
        /// The error of the last attempt, if one was made.
        last: Option<AttemptError>,
        /// Every attempt made.
        attempts: Vec<AttemptRecord>,
    },
}

impl EngineError {
    /// Returns the attempts made before the request failed.
    pub fn attempts(&self) -> &[AttemptRecord] {
        match self {
            Self::UnknownRoute { .. }
            | Self::RateLimited { .. }
            | Self::Overloaded { .. }
            | Self::Shed { .. } => &[],
            Self::Rejected { attempts, .. }
            | Self::Exhausted { attempts, .. }
            | Self::DeadlineExceeded { attempts, .. } => attempts,
        }
    }

    /// Returns the targets that were not tried, with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        match self {
            Self::Exhausted { skipped, .. } => skipped,
            Self::UnknownRoute { .. }
            | Self::Rejected { .. }
            | Self::RateLimited { .. }
            | Self::Overloaded { .. }
            | Self::Shed { .. }
            | Self::DeadlineExceeded { .. } => &[],
        }
    }

    /// Returns whether every skipped target was skipped only because its breaker is
    /// open, so that trying again later may succeed.
    pub fn only_circuits_open(&self) -> bool {
        self.skipped()
            .iter()
            .all(|s| s.reason == SkipReason::CircuitOpen)
    }

    /// Returns the message shown to the client.
    pub fn message(&self) -> String {
        match self {
            Self::Shed { load } => format!(
                "route is overloaded (load {:.0}%) and shed this request; retry later",
                load * 100.0
            ),
            Self::Overloaded { reason } => match reason {
                adpa_resilience::concurrency::Rejected::QueueFull => {
                    "route is at its concurrency limit and its queue is full".to_owned()
                }
                adpa_resilience::concurrency::Rejected::QueueTimeout => {
                    "request waited queue_timeout for a slot of the route".to_owned()
                }
            },
            Self::RateLimited { state } => {
                let limit = match state.limit {
                    adpa_resilience::rate_limit::Limit::Requests => "requests_per_second",
                    adpa_resilience::rate_limit::Limit::Tokens => "tokens_per_minute",
                };
                format!(
                    "rate limit of the {} reached ({limit}); retry in {} ms",
                    state.scope,
                    state.retry_after.as_millis().max(1)
                )
            }
            Self::UnknownRoute {
                requested,
                available,
            } => format!(
                "no route or model named `{requested}`; available: {}",
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            ),
            Self::Rejected { error, attempts } => {
                // With a hedge, the rejecting attempt need not be the last to end.
                let target = attempts
                    .iter()
                    .rev()
                    .find(|a| a.class == Some(error.class) && a.status == error.status)
                    .or(attempts.last())
                    .map(|a| a.target.as_ref())
                    .unwrap_or("target");
                format!("{target} rejected the request: {}", error.message)
            }
            Self::Exhausted {
                last: Some(last),
                attempts,
                ..
            } => format!(
                "all targets failed after {} attempts; last error: {last}",
                attempts.len()
            ),
            Self::Exhausted {
                last: None,
                skipped,
                ..
            } => format!(
                "no target can serve this request: {}",
                skipped
                    .iter()
                    .map(|s| format!("{} ({})", s.target, s.reason.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::DeadlineExceeded {
                last: Some(last), ..
            } => {
                format!("request deadline exceeded; last error: {last}")
            }
            Self::DeadlineExceeded { last: None, .. } => "request deadline exceeded".to_owned(),
        }
    }
}
