//! Parsing of the delays servers ask for before a retry.

use std::time::{Duration, SystemTime};

/// The maximum delay read from a server. Longer values are cut to it, because a day is
/// beyond any request deadline and a value of 1e20 seconds would not fit in an `Instant`.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Converts seconds a server sent into a delay: `None` unless finite and not negative,
/// at most [`MAX_SERVER_DELAY`].
fn delay_of(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_SERVER_DELAY.as_secs_f64())))
}

/// Parses a `Retry-After` header value: delay seconds (`"2"`, also `"1.5"` as some
/// providers send) or an HTTP date, measured from `now`.
///
/// Returns `None` for a value that is neither. A date in the past gives a zero delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return delay_of(seconds);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_SERVER_DELAY),
    )
}

/// Parses a `retry-after-ms` header value (milliseconds, as OpenAI sends it).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let millis = value.trim().parse::<f64>().ok()?;
    delay_of(millis / 1000.0)
}

/// Parses an `x-ratelimit-reset-requests` or `x-ratelimit-reset-tokens` value as OpenAI
/// and Groq send it: a Go-style duration such as `"1s"`, `"6m0s"`, `"20ms"` or `"2.5s"`.
pub fn parse_reset_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];

        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    delay_of(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn huge_delays_are_capped() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("1e20", now), Some(MAX_SERVER_DELAY));
        assert_eq!(parse_retry_after_ms("1e30"), Some(MAX_SERVER_DELAY));
        assert_eq!(
            parse_reset_duration("99999999999999999999s"),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_SERVER_DELAY)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let later = "Wed, 21 Oct 2015 07:28:30 GMT";
        assert_eq!(parse_retry_after(later, now), Some(Duration::from_secs(30)));
        let earlier = "Wed, 21 Oct 2015 07:27:00 GMT";
        assert_eq!(parse_retry_after(earlier, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ms() {
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after_ms("x"), None);
    }

    #[test]
    fn reset_durations() {
        assert_eq!(parse_reset_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_reset_duration("20ms"),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            parse_reset_duration("2.5s"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            parse_reset_duration("1h2m3s"),
            Some(Duration::from_secs(3723))
        );
        assert_eq!(parse_reset_duration(""), None);
        assert_eq!(parse_reset_duration("5 parsecs"), None);
    }
}
