//! The response headers that name the target that served a request.

use adpa_llm::AttemptRecord;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The request id, taken from the client's header when it sent a usable one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The provider that served the request.
pub const PROVIDER: HeaderName = HeaderName::from_static("x-adpa-provider");
/// The model name sent to that provider.
pub const MODEL: HeaderName = HeaderName::from_static("x-adpa-model");
/// The region of the provider that served the request, when it has regions.
pub const REGION: HeaderName = HeaderName::from_static("x-adpa-region");
/// The lowest model weight a client accepts, sent by the client.
pub const MIN_QUALITY: HeaderName = HeaderName::from_static("x-adpa-min-quality");
/// The priority class of a request (`low`, `normal`, `high`), sent by the client.
pub const PRIORITY: HeaderName = HeaderName::from_static("x-adpa-priority");
/// The number of attempts the request took.
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-adpa-attempts");

/// Sets `x-adpa-attempts`, and `x-adpa-provider`, `x-adpa-region` and `x-adpa-model`
/// from the last attempt's target (`provider/model` or `provider@region/model`) when
/// there was one.
pub fn set_attempts(headers: &mut HeaderMap, attempts: &[AttemptRecord]) {
    headers.insert(ATTEMPTS, HeaderValue::from(attempts.len()));
    let Some((endpoint, model)) = attempts.last().and_then(|a| a.target.split_once('/')) else {
        return;
    };
    let (provider, region) = match endpoint.split_once('@') {
        Some((provider, region)) => (provider, Some(region)),
        None => (endpoint, None),
    };
    set_target(headers, provider, model);
    if let Some(Ok(region)) = region.map(HeaderValue::from_str) {
        headers.insert(REGION, region);
    }
}

/// Sets `x-adpa-provider` and `x-adpa-model`.
pub fn set_target(headers: &mut HeaderMap, provider: &str, model: &str) {
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert(PROVIDER, value);
    }
    if let Ok(value) = HeaderValue::from_str(model) {
        headers.insert(MODEL, value);
    }
}
