//! Request handlers.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use adpa_llm::{ChatRequest, Priority, RequestContext, ResponseBody};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::error::ApiError;
use crate::headers;
use crate::keys::ClientKey;
use crate::server::{AppState, RequestId};

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    request_headers: HeaderMap,
    body: Body,
) -> Response {
    // The key is checked first, so that a client without one learns nothing else.
    let key = match authenticate(&state, &request_headers) {
        Ok(key) => key,
        Err(Unauthorized) => return ApiError::unauthorized().into_response_with_id(&request_id),
    };
    let bytes = match read_body(&request_headers, body, state.max_body_size).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response_with_id(&request_id),
    };
    let request = match ChatRequest::parse(&bytes) {
        Ok(request) => request,
        Err(error) => return ApiError::invalid_request(&error).into_response_with_id(&request_id),
    };
    tracing::trace!(request_id = %request_id, model = request.model(), stream = request.is_stream(), "chat completion request");

    let min_quality = match min_quality(&request_headers) {
        Ok(value) => value,
        Err(message) => {
            return ApiError::invalid_header(message).into_response_with_id(&request_id)
        }
    };
    // Without keys anyone may choose a priority; with keys, only keys allowed to.
    let header_allowed = key.as_ref().is_none_or(|key| key.allow_priority_header);
    let default_priority = key.as_ref().map_or(Priority::Normal, |key| key.priority);
    let priority = match request_headers.get(&headers::PRIORITY) {
        Some(value) if header_allowed => match value.to_str().ok().and_then(Priority::parse) {
            Some(priority) => priority,
            None => {
                let message = "x-adpa-priority must be low, normal or high";
                return ApiError::invalid_header(message).into_response_with_id(&request_id);
            }
        },
        _ => default_priority,
    };

    let mut limiters = Vec::new();
    if let Some(limiter) = &state.global_limiter {
        limiters.push(("gateway".to_owned(), Arc::clone(limiter)));
    }
    if let Some((key, limiter)) = key
        .as_ref()
        .and_then(|key| key.limiter.as_ref().map(|l| (key, l)))
    {
        limiters.push((format!("key {}", key.name), Arc::clone(limiter)));
    }
    let context = RequestContext {
        request_id: Arc::clone(&request_id),
        min_quality,
        priority,
        limiters,
    };
    let response = match state.engine.execute(&request, &context).await {
        Ok(response) => response,
        Err(error) => return ApiError::from_engine(error).into_response_with_id(&request_id),
    };

    let (content_type, body) = match response.body {
        ResponseBody::Complete { bytes, .. } => ("application/json", Body::from(bytes)),
        ResponseBody::Stream(stream) => (
            "text/event-stream",
            Body::from_stream(stream.map(Ok::<_, Infallible>)),
        ),
    };
    let mut reply = (StatusCode::OK, body).into_response();
    let reply_headers = reply.headers_mut();
    reply_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        reply_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    reply_headers.insert(
        headers::ATTEMPTS,
        HeaderValue::from(response.attempts.len()),
    );
    headers::set_target(reply_headers, &response.provider, &response.model);
    let region = response.region.as_deref().map(HeaderValue::from_str);
    if let Some(Ok(region)) = region {
        reply_headers.insert(headers::REGION, region);
    }
    reply
}

/// Finds the client key of a request: `None` when no keys are configured.
///
/// # Errors
///
/// Returns [`Unauthorized`] when keys are configured and the request carries none of
/// them.
fn authenticate(
    state: &AppState,
    request_headers: &HeaderMap,
) -> Result<Option<Arc<ClientKey>>, Unauthorized> {
    if state.keys.is_empty() {
        return Ok(None);
    }
    match bearer(request_headers).and_then(|secret| state.keys.find(secret)) {
        Some(key) => Ok(Some(Arc::clone(key))),
        None => Err(Unauthorized),
    }
}

/// A request without a configured client key, which gets a 401.
struct Unauthorized;

/// Returns the token of an `Authorization: Bearer …` header.
fn bearer(request_headers: &HeaderMap) -> Option<&str> {
    let value = request_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    // The scheme name is case-insensitive (RFC 9110, section 11.1).
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Reads `x-adpa-min-quality`: the lowest model weight, in `0.0..=1.0`, the client
/// accepts.
fn min_quality(request_headers: &HeaderMap) -> Result<Option<f64>, &'static str> {
    let Some(value) = request_headers.get(&headers::MIN_QUALITY) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|quality| (0.0..=1.0).contains(quality));
    match parsed {
        Some(quality) => Ok(Some(quality)),
        None => Err("x-adpa-min-quality must be a number in 0.0..=1.0, such as 0.8"),
    }
}

/// Reads the request body, rejecting one over `limit` bytes with a 413 before reading it
/// when `Content-Length` already announces the size.
async fn read_body(request_headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let declared = request_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::body_too_large(limit));
    }

    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(ApiError::body_too_large(limit)),
        Err(err) => Err(ApiError::body_unreadable(format!(
            "cannot read request body: {err}"
        ))),
    }
}

/// `GET /v1/models`: the routes, in OpenAI's model list shape.
pub(crate) async fn models(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    request_headers: HeaderMap,
) -> Response {
    if let Err(Unauthorized) = authenticate(&state, &request_headers) {
        return ApiError::unauthorized().into_response_with_id(&request_id);
    }
    let data: Vec<_> = state
        .engine
        .routes()
        .into_iter()
        .map(|route| {
            json!({
                "id": route.name,
                "object": "model",
                "created": 0,
                "owned_by": "adpa",
                "targets": route.targets,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the gateway accepts new requests; 503 while it drains for shutdown.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    Json(json!({"status": "ready"})).into_response()
}

/// Any other path: an OpenAI-shaped 404.
pub(crate) async fn not_found(
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: axum::http::Uri,
) -> Response {
    let body = json!({
        "error": {
            "message": format!("no endpoint at {}; the gateway serves POST /v1/chat/completions and GET /v1/models", uri.path()),
            "type": "invalid_request_error",
            "param": null,
            "code": "unknown_url",
            "request_id": &*request_id,
            "attempts": [],
        }
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A known path with another method: an OpenAI-shaped 405.
pub(crate) async fn method_not_allowed(
    Extension(RequestId(request_id)): Extension<RequestId>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let body = json!({
        "error": {
            "message": format!("{method} is not allowed on {}", uri.path()),
            "type": "invalid_request_error",
            "param": null,
            "code": "method_not_allowed",
            "request_id": &*request_id,
            "attempts": [],
        }
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
