//! Provider wire formats: how a request is sent to a provider and how its responses and
//! errors are read.

pub mod openai;

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Reads the delay a provider asked for from its response headers: `retry-after-ms`
/// first (more precise), then `Retry-After` (seconds or HTTP date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());

    if let Some(delay) =
        text("retry-after-ms").and_then(adpa_resilience::retry::parse_retry_after_ms)
    {
        return Some(delay);
    }
    text("retry-after").and_then(|value| adpa_resilience::retry::parse_retry_after(value, now))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(2))
        );
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_millis(1500))
        );
    }
}
