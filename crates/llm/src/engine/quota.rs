//! Provider-reported quota: the requests and tokens a provider announces it has left in
//! its response headers, counted down locally between responses, so a target is skipped
//! before the provider starts returning 429.

use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use parking_lot::Mutex;

/// The remaining requests and tokens of one target, as last reported and since counted
/// down.
#[derive(Debug, Default)]
pub(crate) struct QuotaTracker {
    state: Mutex<Quotas>,
}

#[derive(Debug, Default)]
struct Quotas {
    requests: Option<Quota>,
    tokens: Option<Quota>,
}

/// The quotas [`QuotaTracker::try_take`] counted down for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QuotaTaken {
    request: bool,
    tokens: bool,
}

/// Reports whose resets lie this close together describe the same window: a report
/// that left the provider earlier can arrive later and compute a slightly later reset.
const SAME_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Quota {
    remaining: u64,
    resets_at: Instant,
}

impl Quota {
    /// Returns the quota if it still applies at `now`.
    fn current(slot: &mut Option<Quota>, now: Instant) -> Option<&mut Quota> {
        if slot.is_some_and(|quota| now >= quota.resets_at) {
            *slot = None;
        }
        slot.as_mut()
    }

    /// Keeps the lower count while the window is the same: requests sent after a
    /// response left may already have used some of what it reported.
    fn merge(slot: &mut Option<Quota>, reported: Quota) {
        let remaining = match *slot {
            Some(previous) if reported.resets_at <= previous.resets_at + SAME_WINDOW => {
                previous.remaining.min(reported.remaining)
            }
            _ => reported.remaining,
        };
        *slot = Some(Quota {
            remaining,
            resets_at: reported.resets_at,
        });
    }
}

impl QuotaTracker {
    /// Takes one request of `tokens` estimated tokens from the reported quota, and
    /// returns what it counted down. Returns `None` when the provider reported no
    /// request, or fewer tokens than that, left until its reset. An unknown or expired
    /// quota admits without counting.
    pub(crate) fn try_take(&self, now: Instant, tokens: u64) -> Option<QuotaTaken> {
        let mut state = self.state.lock();
        let Quotas {
            requests,
            tokens: token_quota,
        } = &mut *state;
        let requests = Quota::current(requests, now);
        let token_quota = Quota::current(token_quota, now);
        if requests.as_ref().is_some_and(|quota| quota.remaining == 0)
            || token_quota
                .as_ref()
                .is_some_and(|quota| quota.remaining < tokens)
        {
            return None;
        }
        let taken = QuotaTaken {
            request: requests.is_some(),
            tokens: token_quota.is_some(),
        };
        if let Some(quota) = requests {
            quota.remaining -= 1;
        }
        if let Some(quota) = token_quota {
            quota.remaining -= tokens;
        }
        Some(taken)
    }

    /// Gives back what [`QuotaTracker::try_take`] counted down (`taken`, for a request
    /// of `tokens` tokens) for a request that was never sent after all.
    pub(crate) fn give_back(&self, taken: QuotaTaken, tokens: u64, now: Instant) {
        let mut state = self.state.lock();
        if let Some(quota) = Quota::current(&mut state.requests, now).filter(|_| taken.request) {
            quota.remaining = quota.remaining.saturating_add(1);
        }
        if let Some(quota) = Quota::current(&mut state.tokens, now).filter(|_| taken.tokens) {
            quota.remaining = quota.remaining.saturating_add(tokens);
        }
    }

    /// Returns when the quota that stops a request of `tokens` tokens resets, if the
    /// target is out of it at `now`.
    pub(crate) fn exhausted_until(&self, now: Instant, tokens: u64) -> Option<Instant> {
        let state = self.state.lock();
        let requests = state
            .requests
            .filter(|quota| quota.remaining == 0 && now < quota.resets_at);
        let token_quota = state
            .tokens
            .filter(|quota| quota.remaining < tokens && now < quota.resets_at);
        match (requests, token_quota) {
            (Some(a), Some(b)) => Some(a.resets_at.max(b.resets_at)),
            (a, b) => a.or(b).map(|quota| quota.resets_at),
        }
    }

    /// Reads the quota headers of a response received at `now`.
    pub(crate) fn observe(&self, headers: &HeaderMap, now: Instant) {
        let requests = read_quota(headers, now, &REQUEST_HEADERS);
        let tokens = read_quota(headers, now, &TOKEN_HEADERS);
        if requests.is_none() && tokens.is_none() {
            return;
        }
        let mut state = self.state.lock();
        if let Some(reported) = requests {
            Quota::merge(&mut state.requests, reported);
        }
        if let Some(reported) = tokens {
            Quota::merge(&mut state.tokens, reported);
        }
    }
}

/// The header names of one quota in a provider family: the remaining count, and the
/// reset with its format.
struct QuotaHeaders {
    remaining: &'static str,
    reset: &'static str,
    reset_format: ResetFormat,
}

enum ResetFormat {
    /// A duration such as `"6m0s"` or `"850ms"` (OpenAI, Groq).
    Duration,
    /// An RFC 3339 time such as `2024-05-01T12:00:30Z` (Anthropic).
    Rfc3339,
}

const REQUEST_HEADERS: [QuotaHeaders; 2] = [
    QuotaHeaders {
        remaining: "x-ratelimit-remaining-requests",
        reset: "x-ratelimit-reset-requests",
        reset_format: ResetFormat::Duration,
    },
    QuotaHeaders {
        remaining: "anthropic-ratelimit-requests-remaining",
        reset: "anthropic-ratelimit-requests-reset",
        reset_format: ResetFormat::Rfc3339,
    },
];

/// Anthropic sends a combined count (its most restrictive token limit) besides input and
/// output counts. The combined one is read first, and the input one when it is missing.
const TOKEN_HEADERS: [QuotaHeaders; 3] = [
    QuotaHeaders {
        remaining: "x-ratelimit-remaining-tokens",
        reset: "x-ratelimit-reset-tokens",
        reset_format: ResetFormat::Duration,
    },
    QuotaHeaders {
        remaining: "anthropic-ratelimit-tokens-remaining",
        reset: "anthropic-ratelimit-tokens-reset",
        reset_format: ResetFormat::Rfc3339,
    },
    QuotaHeaders {
        remaining: "anthropic-ratelimit-input-tokens-remaining",
        reset: "anthropic-ratelimit-input-tokens-reset",
        reset_format: ResetFormat::Rfc3339,
    },
];

/// Reads the first quota of `family` the headers carry. A missing or unreadable reset
/// is taken as one second, so a count is never trusted for long without a fresh report.
fn read_quota(headers: &HeaderMap, now: Instant, family: &[QuotaHeaders]) -> Option<Quota> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    family.iter().find_map(|names| {
        let remaining = text(names.remaining)?.trim().parse().ok()?;
        let reset = text(names.reset).and_then(|value| match names.reset_format {
            ResetFormat::Duration => adpa_resilience::retry::parse_reset_duration(value),
            ResetFormat::Rfc3339 => rfc3339_from_now(value),
        });
        Some(Quota {
            remaining,
            resets_at: now + reset.unwrap_or(Duration::from_secs(1)),
        })
    })
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
    // Out-of-range fields would make the arithmetic below overflow.
    let in_range = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..=23).contains(&hour)
        && (0..=59).contains(&minute)
        && (0..=60).contains(&second);
    if !in_range {
        return None;
    }

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
            .unwrap_or(Duration::ZERO)
            .min(adpa_resilience::retry::MAX_SERVER_DELAY),
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
        assert!(tracker.try_take(now, 10).is_some(), "unknown quota admits");
        tracker.observe(
            &headers(&[
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-reset-requests", "10s"),
            ]),
            now,
        );
        assert!(tracker.try_take(now, 10).is_some());
        assert!(tracker.try_take(now, 10).is_some());
        assert!(tracker.try_take(now, 10).is_none());
        assert_eq!(
            tracker.exhausted_until(now, 10),
            Some(now + Duration::from_secs(10))
        );
        assert!(
            tracker
                .try_take(now + Duration::from_secs(10), 10)
                .is_some(),
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
        assert!(tracker.try_take(now, 10).is_some());
        assert!(tracker.try_take(now, 10).is_some());
        // A response that left before those two requests still reports 5.
        tracker.observe(&report, now);
        let admitted = (0..10)
            .filter(|_| tracker.try_take(now, 10).is_some())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn unsent_request_gives_quota_back() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        tracker.observe(
            &headers(&[
                ("x-ratelimit-remaining-requests", "1"),
                ("x-ratelimit-reset-requests", "10s"),
                ("x-ratelimit-remaining-tokens", "100"),
                ("x-ratelimit-reset-tokens", "10s"),
            ]),
            now,
        );
        let taken = tracker.try_take(now, 100).unwrap();
        assert!(tracker.try_take(now, 1).is_none());
        tracker.give_back(taken, 100, now);
        assert!(tracker.try_take(now, 100).is_some());
    }

    #[test]
    fn give_back_only_returns_what_was_taken() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        // Admitted while no quota was known, so nothing was counted down.
        let taken = tracker.try_take(now, 10).unwrap();
        tracker.observe(
            &headers(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "10s"),
            ]),
            now,
        );
        tracker.give_back(taken, 10, now);
        assert!(tracker.try_take(now, 10).is_none());
    }

    #[test]
    fn late_report_keeps_lower_count() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        let report = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "10s"),
        ]);
        tracker.observe(&report, now);
        assert!(tracker.try_take(now, 1).is_some());
        assert!(tracker.try_take(now, 1).is_some());
        // The same report, sent before those two requests, arrives 50 ms later.
        tracker.observe(&report, now + Duration::from_millis(50));
        let admitted = (0..10)
            .filter(|_| tracker.try_take(now, 1).is_some())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn tokens_left_below_estimate_skip() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        tracker.observe(
            &headers(&[
                ("x-ratelimit-remaining-tokens", "1000"),
                ("x-ratelimit-reset-tokens", "2s"),
            ]),
            now,
        );
        assert!(tracker.try_take(now, 600).is_some());
        assert!(tracker.try_take(now, 600).is_none(), "only 400 tokens left");
        assert_eq!(
            tracker.exhausted_until(now, 600),
            Some(now + Duration::from_secs(2))
        );
        assert_eq!(tracker.exhausted_until(now, 300), None);
        assert!(tracker.try_take(now, 300).is_some());
        assert!(
            tracker
                .try_take(now + Duration::from_secs(2), 600)
                .is_some(),
            "quota resets"
        );
    }

    #[test]
    fn reads_anthropic_token_headers() {
        let tracker = QuotaTracker::default();
        let now = Instant::now();
        tracker.observe(
            &headers(&[
                ("anthropic-ratelimit-input-tokens-remaining", "50"),
                (
                    "anthropic-ratelimit-input-tokens-reset",
                    "2999-01-01T00:00:00Z",
                ),
            ]),
            now,
        );
        assert!(tracker.try_take(now, 51).is_none());
        assert!(tracker.try_take(now, 50).is_some());
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
        assert!(tracker.try_take(now, 10).is_none());
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
        assert_eq!(
            rfc3339_from_now("9999-12-31T23:59:59Z"),
            Some(adpa_resilience::retry::MAX_SERVER_DELAY)
        );
        for absurd in [
            "9223372036854775807-01-01T00:00:00Z",
            "2024-9223372036854775807-01T00:00:00Z",
            "2024-01-01T99999999999:00:00Z",
        ] {
            assert_eq!(rfc3339_from_now(absurd), None, "{absurd}");
        }
    }
}
