//! Error classes: what kind of failure an attempt met, and whether retrying can help.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The category of a failed attempt.
///
/// The classifier assigns one per failure; the recovery strategy, the circuit breaker
/// and the status code sent to the client are all decided from it. The set is closed on
/// purpose, so that callers can map every class with an exhaustive `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The connection could not be opened, or broke.
    Network,
    /// A connect, write, first-byte, read or provider-side timeout.
    Timeout,
    /// The provider's rate limit for the caller was hit (HTTP 429).
    RateLimited,
    /// The caller's quota or credit at the provider is used up.
    QuotaExhausted,
    /// The provider failed with a 5xx status or sent a body that is not what its API
    /// promises (an HTML error page, truncated JSON, a stream without its end marker).
    Server,
    /// The provider reports that it is overloaded (HTTP 503, Anthropic's 529).
    Overloaded,
    /// The provider rejected the credentials (HTTP 401 or 403).
    Auth,
    /// The provider rejected the request itself (HTTP 400, 413, 422).
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The provider refused the content.
    ContentFilter,
    /// The model or endpoint does not exist at the provider (HTTP 404).
    NotFound,
    /// Gateway state was inconsistent or could not be read.
    State,
    /// A local resource (memory, a pool, a permit) ran out.
    Resource,
}

/// Whether an error can go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transience {
    /// A later attempt may succeed.
    Transient,
    /// The same request will fail the same way.
    Permanent,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 13] = [
        Self::Network,
        Self::Timeout,
        Self::RateLimited,
        Self::QuotaExhausted,
        Self::Server,
        Self::Overloaded,
        Self::Auth,
        Self::InvalidRequest,
        Self::ContextLength,
        Self::ContentFilter,
        Self::NotFound,
        Self::State,
        Self::Resource,
    ];

    /// Returns the snake_case label used in config, logs, metrics and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Server => "server",
            Self::Overloaded => "overloaded",
            Self::Auth => "auth",
            Self::InvalidRequest => "invalid_request",
            Self::ContextLength => "context_length",
            Self::ContentFilter => "content_filter",
            Self::NotFound => "not_found",
            Self::State => "state",
            Self::Resource => "resource",
        }
    }

    /// Returns whether the error can go away by itself.
    pub fn transience(self) -> Transience {
        match self {
            Self::Network
            | Self::Timeout
            | Self::RateLimited
            | Self::Server
            | Self::Overloaded
            | Self::Resource => Transience::Transient,
            Self::QuotaExhausted
            | Self::Auth
            | Self::InvalidRequest
            | Self::ContextLength
            | Self::ContentFilter
            | Self::NotFound
            | Self::State => Transience::Permanent,
        }
    }

    /// Returns whether the error means the target is unhealthy, so the circuit breaker
    /// counts it. A client's bad request or a missing model shows nothing about health.
    pub fn counts_against_target(self) -> bool {
        match self {
            Self::Network | Self::Timeout | Self::RateLimited | Self::Server | Self::Overloaded => {
                true
            }
            Self::QuotaExhausted
            | Self::Auth
            | Self::InvalidRequest
            | Self::ContextLength
            | Self::ContentFilter
            | Self::NotFound
            | Self::State
            | Self::Resource => false,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptError {
    /// The error class.
    pub class: ErrorClass,
    /// The HTTP status the target returned, if it responded.
    pub status: Option<u16>,
    /// Description of the failure, safe to show to the client because it is built from
    /// status lines and provider error messages, never from the key or the prompt.
    pub message: String,
    /// The delay the target asked for before a retry.
    pub retry_after: Option<Duration>,
    /// The request's own deadline ended the attempt, not a fault of the target.
    pub cut_by_deadline: bool,
    /// The request never left the gateway: it cannot be expressed in the target's format.
    pub not_sent: bool,
}

impl AttemptError {
    /// Creates an error without a status, for failures below HTTP.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            status: None,
            message: message.into(),
            retry_after: None,
            cut_by_deadline: false,
            not_sent: false,
        }
    }

    /// Marks the request as never sent to the target.
    pub fn never_sent(mut self) -> Self {
        self.not_sent = true;
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the delay the target asked for.
    pub fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }

    /// Returns whether the failure tells something about the target's health: its class
    /// counts against targets, unless the request's deadline cut a hedged attempt short.
    /// A hedge starts late, so the deadline may leave it less time than the target
    /// needs; a first attempt that runs into the deadline still counts, or a target that
    /// hangs past a short `total_timeout` would never open its breaker.
    pub(crate) fn blames_target(&self, hedge: bool) -> bool {
        self.class.counts_against_target() && !(hedge && self.cut_by_deadline)
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (HTTP {status}): {}", self.class, self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

impl std::error::Error for AttemptError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case() {
        let mut labels: Vec<_> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        for label in &labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ErrorClass::ALL.len());
    }

    #[test]
    fn serde_label_matches_as_str() {
        for class in ErrorClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }

    #[test]
    fn client_errors_do_not_count_against_target() {
        assert!(!ErrorClass::InvalidRequest.counts_against_target());
        assert!(ErrorClass::Server.counts_against_target());
        assert!(ErrorClass::RateLimited.counts_against_target());
        assert_eq!(ErrorClass::Timeout.transience(), Transience::Transient);
        assert_eq!(ErrorClass::Auth.transience(), Transience::Permanent);
    }
}
