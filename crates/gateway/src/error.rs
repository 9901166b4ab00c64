//! Errors sent to clients, in OpenAI's error shape with the request id and the attempts.

use std::time::Duration;

use adpa_llm::engine::{LimitState, SkipReason, Skipped};
use adpa_llm::{AttemptRecord, EngineError, ErrorClass, RequestError};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::headers;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: &'static str,
    /// Description of the failure, for people.
    pub message: String,
    /// Value of `Retry-After`, in whole seconds rounded up.
    pub retry_after: Option<Duration>,
    /// Attempts made before the failure.
    pub attempts: Vec<AttemptRecord>,
    /// Targets not tried, with the reason.
    pub skipped: Vec<Skipped>,
    /// The route limiter's state, for `x-ratelimit-*` headers.
    pub limit_state: Option<LimitState>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: &'a str,
    request_id: &'a str,
    attempts: &'a [AttemptRecord],
    #[serde(skip_serializing_if = "<[Skipped]>::is_empty")]
    skipped: &'a [Skipped],
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
            attempts: Vec::new(),
            skipped: Vec::new(),
            limit_state: None,
        }
    }

    /// Creates the error for a request body over `max_body_size`.
    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "request body is larger than the limit of {limit} bytes (server.max_body_size)"
            ),
        )
    }

    /// Creates the error for a request body that could not be read.
    pub fn body_unreadable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            message,
        )
    }

    /// Creates the error for a missing or unknown client key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or unknown API key: send Authorization: Bearer <key> with a key from the gateway's [[keys]]",
        )
    }

    /// Creates the error for a request header with an invalid value.
    pub fn invalid_header(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_header",
            message,
        )
    }

    /// Creates the error for a body that is not a valid chat completion request.
    pub fn invalid_request(error: &RequestError) -> Self {
        let code = match error {
            RequestError::Json(_) => "invalid_json",
            _ => "invalid_request",
        };
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            error.to_string(),
        )
    }

    /// Maps an engine failure to its status, type and code.
    pub fn from_engine(error: EngineError) -> Self {
        let message = error.message();
        match error {
            EngineError::Shed { .. } => Self {
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "shed",
                    message,
                )
            },
            EngineError::Overloaded { .. } => Self {
                // A slot frees when a request in flight ends; one second is a short wait
                // that still spreads the retries of many rejected clients.
                retry_after: Some(Duration::from_secs(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "overloaded",
                    message,
                )
            },
            EngineError::RateLimited { state } => Self {
                retry_after: Some(state.retry_after),
                limit_state: Some(state),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    message,
                )
            },
            EngineError::UnknownRoute { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                message,
            ),
            EngineError::Rejected { error, attempts } => {
                let (status, kind, code) = class_response(error.class);
                Self {
                    attempts,
                    ..Self::new(status, kind, code, message)
                }
            }
            EngineError::Exhausted {
                last: Some(last),
                attempts,
                retry_after,
                skipped,
            } => {
                // Every target that was tried could not express the request in its
                // format: the request needs changing, not the providers.
                let untranslatable = attempts
                    .iter()
                    .all(|a| a.class == Some(ErrorClass::InvalidRequest) && a.status.is_none());
                let (status, kind, code) = match last.class {
                    ErrorClass::RateLimited
                    | ErrorClass::QuotaExhausted
                    | ErrorClass::ContextLength
                    | ErrorClass::ContentFilter => class_response(last.class),
                    ErrorClass::InvalidRequest if untranslatable => {
                        class_response(ErrorClass::InvalidRequest)
                    }
                    _ => (
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        "all_targets_failed",
                    ),
                };
                Self {
                    attempts,
                    skipped,
                    retry_after,
                    ..Self::new(status, kind, code, message)
                }
            }
            EngineError::Exhausted {
                last: None,
                attempts,
                retry_after,
                skipped,
            } => {
                // Open breakers close again and limits refill, so the client may retry;
                // a model that lacks what the request needs will not change.
                let limited_only = skipped.iter().all(|s| {
                    matches!(
                        s.reason,
                        SkipReason::RateLimited | SkipReason::ProviderQuota
                    )
                });
                let circuits_only = skipped.iter().all(|s| {
                    matches!(
                        s.reason,
                        SkipReason::CircuitOpen
                            | SkipReason::RateLimited
                            | SkipReason::ProviderQuota
                    )
                });
                let (status, kind, code) = if limited_only {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        "rate_limit_exceeded",
                    )
                } else if circuits_only {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "circuit_open",
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "no_eligible_target",
                    )
                };
                Self {
                    attempts,
                    skipped,
                    retry_after: retry_after.filter(|_| circuits_only),
                    ..Self::new(status, kind, code, message)
                }
            }
            EngineError::DeadlineExceeded { attempts, .. } => Self {
                attempts,
                ..Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "server_error",
                    "deadline_exceeded",
                    message,
                )
            },
        }
    }

    /// Builds the response, with the request id in the body and in `x-request-id`.
    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let body = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: None,
                code: self.code,
                request_id,
                attempts: &self.attempts,
                skipped: &self.skipped,
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response();

        let response_headers = response.headers_mut();
        headers::set_attempts(response_headers, &self.attempts);
        if let Some(state) = &self.limit_state {
            set_limit_headers(response_headers, state);
        }
        if let Some(delay) = self.retry_after {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response_headers.insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(seconds.max(1)),
            );
        }
        response
    }
}

/// Sets `x-ratelimit-*` headers in the form OpenAI uses: limit, remaining, and the
/// time until the limit is full again (`250ms`, `2s`).
fn set_limit_headers(headers: &mut axum::http::HeaderMap, state: &LimitState) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(
        "x-ratelimit-limit-requests",
        state.requests_limit.to_string(),
    );
    set(
        "x-ratelimit-remaining-requests",
        state.requests_remaining.to_string(),
    );
    set(
        "x-ratelimit-reset-requests",
        format!("{}ms", state.requests_reset.as_millis()),
    );
    if let Some((limit, remaining)) = state.tokens {
        set("x-ratelimit-limit-tokens", limit.to_string());
        set("x-ratelimit-remaining-tokens", remaining.to_string());
    }
}

/// Status, OpenAI `type` and `code` for an upstream failure the client sees directly.
///
/// The match has no catch-all arm, so a new error class must be mapped here.
fn class_response(class: ErrorClass) -> (StatusCode, &'static str, &'static str) {
    match class {
        ErrorClass::InvalidRequest => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
        ),
        ErrorClass::ContextLength => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        ErrorClass::ContentFilter => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "content_filter",
        ),
        ErrorClass::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        ErrorClass::QuotaExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
        ),
        ErrorClass::Auth => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_auth_failed",
        ),
        ErrorClass::NotFound => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_model_not_found",
        ),
        ErrorClass::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "upstream_timeout",
        ),
        ErrorClass::Network => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_unreachable",
        ),
        ErrorClass::Server => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
        ErrorClass::Overloaded => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_overloaded",
        ),
        ErrorClass::State => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "state_error",
        ),
        ErrorClass::Resource => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "resource_exhausted",
        ),
    }
}
