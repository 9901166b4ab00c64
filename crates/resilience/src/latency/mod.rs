//! A peak-sensitive moving average of attempt latency, for choosing the fastest of
//! several endpoints.
//!
//! A sample above the average replaces it at once, so one slow outlier moves an
//! endpoint back at once. A sample below it is blended in with a weight that grows with
//! the time since the last sample: `w = exp(-elapsed / decay)`, `average = average × w +
//! sample × (1 − w)`. Recovery therefore takes about `decay` of fresh samples.

pub mod histogram;

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use histogram::LatencyHistogram;

/// Latency estimate and health of one endpoint.
///
/// # Thread safety
///
/// Shared by reference; every method takes `&self` and holds a lock only for a few
/// arithmetic steps.
#[derive(Debug)]
pub struct PeakEwma {
    decay: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    average: Option<f64>,
    updated: Option<Instant>,
    failing: bool,
    last_attempt: Option<Instant>,
}

impl PeakEwma {
    /// Creates an estimate with no samples. `decay` must be longer than zero; a zero
    /// value is raised to one millisecond.
    pub fn new(decay: Duration) -> Self {
        Self {
            decay: decay.max(Duration::from_millis(1)),
            state: Mutex::new(State::default()),
        }
    }

    /// Records a successful attempt that took `latency`, ending at `now`.
    pub fn observe(&self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64();
        let mut state = self.state.lock();
        let average = match (state.average, state.updated) {
            (Some(average), Some(updated)) if sample < average => {
                let elapsed = now.saturating_duration_since(updated).as_secs_f64();
                let weight = (-elapsed / self.decay.as_secs_f64()).exp();
                average * weight + sample * (1.0 - weight)
            }
            _ => sample,
        };
        state.average = Some(average);
        state.updated = Some(now);
        state.failing = false;
        state.last_attempt = Some(now);
    }

    /// Records a failed attempt at `now`. The endpoint counts as failing until its next
    /// success.
    pub fn observe_failure(&self, now: Instant) {
        let mut state = self.state.lock();
        state.failing = true;
        state.last_attempt = Some(now);
    }

    /// Returns the current average, or `None` before the first success.
    pub fn average(&self) -> Option<Duration> {
        self.state.lock().average.map(Duration::from_secs_f64)
    }

    /// Returns whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.state.lock().failing
    }

    /// Returns whether no attempt was made within `interval` before `now`.
    pub fn exploration_due(&self, interval: Duration, now: Instant) -> bool {
        self.state
            .lock()
            .last_attempt
            .is_none_or(|last| now.saturating_duration_since(last) >= interval)
    }

    /// Claims an exploration attempt: returns `true`, and counts an attempt at `now`,
    /// when no attempt was made within `interval`. Concurrent callers get one `true`
    /// per interval between them.
    pub fn claim_exploration(&self, interval: Duration, now: Instant) -> bool {
        let mut state = self.state.lock();
        let due = state
            .last_attempt
            .is_none_or(|last| now.saturating_duration_since(last) >= interval);
        if due {
            state.last_attempt = Some(now);
        }
        due
    }

    /// Returns the sort key of the endpoint: healthy before failing, then lower average
    /// first, with an endpoint that has no samples yet first of all.
    pub fn rank(&self) -> (bool, Duration) {
        let state = self.state.lock();
        let average = state
            .average
            .map_or(Duration::ZERO, Duration::from_secs_f64);
        (state.failing, average)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn first_sample_sets_average() {
        let ewma = PeakEwma::new(Duration::from_secs(10));
        assert_eq!(ewma.average(), None);
        ewma.observe(ms(120), Instant::now());
        assert_eq!(ewma.average(), Some(ms(120)));
    }

    #[test]
    fn peak_replaces_average_at_once() {
        let ewma = PeakEwma::new(Duration::from_secs(10));
        let start = Instant::now();
        ewma.observe(ms(50), start);
        ewma.observe(ms(400), start + ms(1));
        assert_eq!(ewma.average(), Some(ms(400)));
    }

    #[test]
    fn lower_samples_decay_with_time() {
        let ewma = PeakEwma::new(Duration::from_secs(10));
        let start = Instant::now();
        ewma.observe(ms(400), start);

        // After one decay period the old value keeps a weight of 1/e.
        ewma.observe(ms(50), start + Duration::from_secs(10));
        let expected = 0.400 * (-1.0f64).exp() + 0.050 * (1.0 - (-1.0f64).exp());
        let average = ewma.average().unwrap().as_secs_f64();
        assert!((average - expected).abs() < 1e-9, "{average} vs {expected}");

        // Samples close together barely move it.
        ewma.observe(ms(50), start + Duration::from_secs(10) + ms(1));
        let moved = average - ewma.average().unwrap().as_secs_f64();
        assert!(moved > 0.0, "{moved}");
        assert!(moved < 0.001, "{moved}");
    }

    #[test]
    fn failure_marks_failing_until_success() {
        let ewma = PeakEwma::new(Duration::from_secs(10));
        let now = Instant::now();
        ewma.observe(ms(50), now);
        ewma.observe_failure(now);
        assert!(ewma.is_failing());
        assert_eq!(ewma.rank(), (true, ms(50)));
        ewma.observe(ms(60), now + ms(5));
        assert!(!ewma.is_failing());
    }

    #[test]
    fn exploration_claimed_once_per_interval() {
        let ewma = PeakEwma::new(Duration::from_secs(10));
        let start = Instant::now();
        let interval = Duration::from_secs(5);
        assert!(ewma.claim_exploration(interval, start));
        assert!(!ewma.claim_exploration(interval, start + ms(10)));
        assert!(!ewma.claim_exploration(interval, start + Duration::from_secs(4)));
        assert!(ewma.claim_exploration(interval, start + Duration::from_secs(5)));

        ewma.observe(ms(10), start + Duration::from_secs(7));
        assert!(!ewma.claim_exploration(interval, start + Duration::from_secs(11)));
    }
}
