//! Provider-reported quota: the remaining requests a provider announces in its response
//! headers, counted down locally between responses, so a target is skipped before the
//! provider starts returning 429.

use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use parking_lot::Mutex;

/// The remaining requests of one target, as last reported and since counted down.
#[derive(Debug, Default)]
pub(crate) struct QuotaTracker {
    state: Mutex<Option<Quota>>,
}

#[derive(Debug, Clone, Copy)]
struct Quota {
    remaining: u64,
    resets_at: Instant,
}

impl QuotaTracker {
    /// Takes one request from the reported quota. Returns `false` when the provider
    /// reported none left until its reset. An unknown or expired quota admits.
    pub(crate) fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        match state.as_mut() {
            Some(quota) if now < quota.resets_at => {
                if quota.remaining == 0 {
                    return false;
                }
                quota.remaining -= 1;
                true
            }
            _ => {
                *state = None;
                true
            }
        }
    }

    /// Returns when the quota resets, if the target is out of it at `now`.
    pub(crate) fn exhausted_until(&self, now: Instant) -> Option<Instant> {
        let state = self.state.lock();
        state
            .as_ref()
            .filter(|quota| quota.remaining == 0 && now < quota.resets_at)
            .map(|quota| quota.resets_at)
    }

    /// Reads the quota headers of a response received at `now`.
    pub(crate) fn observe(&self, headers: &HeaderMap, now: Instant) {
        if let Some(quota) = read_quota(headers, now) {
            let mut state = self.state.lock();
            // Requests sent after this response left may already have used some of the
            // reported count, so the lower of the two is kept while the window is the same.
            let remaining = match *state {
                Some(previous) if previous.resets_at >= quota.resets_at => {
                    previous.remaining.min(quota.remaining)
                }
                _ => quota.remaining,
            };
            *state = Some(Quota {
                remaining,
                resets_at: quota.resets_at,
            });
        }
    }
}

/// Reads `x-ratelimit-remaining-requests` with `x-ratelimit-reset-requests` (OpenAI,
/// Groq: a duration such as `"6m0s"`), or `anthropic-ratelimit-requests-remaining` with
/// `anthropic-ratelimit-requests-reset` (an RFC 3339 time).
fn read_quota(headers: &HeaderMap, now: Instant) -> Option<Quota> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());

    if let Some(remaining) =
        text("x-ratelimit-remaining-requests").and_then(|v| v.trim().parse().ok())
    {
        let reset = text("x-ratelimit-reset-requests")
            .and_then(adpa_resilience::retry::parse_reset_duration)
            .unwrap_or(Duration::from_secs(1));
        return Some(Quota {
            remaining,
            resets_at: now + reset,
        });
    }
    if let Some(remaining) =
        text("anthropic-ratelimit-requests-remaining").and_then(|v| v.trim().parse().ok())
    {
        let reset = text("anthropic-ratelimit-requests-reset")
            .and_then(rfc3339_from_now)
            .unwrap_or(Duration::from_secs(1));
        return Some(Quota {
            remaining,
            resets_at: now + reset,
        });
    }
    None
}

/// Returns the time from now until an RFC 3339 UTC time such as
/// `2024-05-01T12:00:30Z`, or `None` when it does not parse.
fn rfc3339_from_now(value: &str) -> Option<Duration> {
    let value = value.trim().strip_suffix('Z')?;
    let (date, time) = value.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let time = time.split('.').next()?;
    let mut time_parts = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );

    // Days since 1970-01-01 by the civil-from-days inverse (proleptic Gregorian).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;

    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?);
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn counts_down_reported_quota() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        assert!(tracker.try_take(now), "unknown quota admits");
        tracker.observe(
            &headers(&[
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-reset-requests", "10s"),
            ]),
            now,
        );
        assert!(tracker.try_take(now));
        assert!(tracker.try_take(now));
        assert!(!tracker.try_take(now));
        assert_eq!(
            tracker.exhausted_until(now),
            Some(now + Duration::from_secs(10))
        );
        assert!(
            tracker.try_take(now + Duration::from_secs(10)),
            "quota resets"
        );
    }

    #[test]
    fn stale_report_does_not_raise_count() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        let report = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "10s"),
        ]);
        tracker.observe(&report, now);
        assert!(tracker.try_take(now));
        assert!(tracker.try_take(now));
        // A response that left before those two requests still reports 5.
        tracker.observe(&report, now);
        let admitted = (0..10).filter(|_| tracker.try_take(now)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn reads_anthropic_headers() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        tracker.observe(
            &headers(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2999-01-01T00:00:00Z"),
            ]),
            now,
        );
        assert!(!tracker.try_take(now));
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            rfc3339_from_now("1970-01-01T00:00:00Z"),
            Some(Duration::ZERO)
        );
        assert!(
            rfc3339_from_now("2999-01-01T00:00:00Z").is_some_and(|d| d > Duration::from_secs(1))
        );
        assert_eq!(rfc3339_from_now("yesterday"), None);
    }
}
