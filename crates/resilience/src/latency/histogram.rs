//! Recent latency percentiles of one endpoint, from a histogram over a sliding window.
//!
//! Samples fall into buckets whose bounds grow by a factor of 2^(1/4) (about 19 %) from
//! one millisecond, so a percentile is known to within one bucket at any scale, and a
//! sample costs one array increment. The window slides in two halves: samples go into
//! the current half, a percentile reads both, and a half older than two half-windows is
//! cleared before reuse. A percentile therefore covers between one and two half-windows
//! of samples.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Buckets per doubling of latency.
const STEPS_PER_DOUBLING: f64 = 4.0;

/// Bucket count: 2^(96/4) ms is more than four hours, beyond any request deadline.
const BUCKETS: usize = 96;

/// Samples needed before a percentile is reported, because fewer tell little about a
/// tail.
pub const MIN_SAMPLES: u32 = 20;

/// A sliding-window latency histogram.
///
/// # Thread safety
///
/// Shared by reference; every method takes `&self` and holds a lock for one bucket
/// update or one pass over the buckets.
#[derive(Debug)]
pub struct LatencyHistogram {
    half_window: Duration,
    start: Instant,
    halves: Mutex<[Half; 2]>,
}

#[derive(Debug, Clone)]
struct Half {
    /// The half-window number whose samples this half holds.
    epoch: u64,
    total: u32,
    counts: [u32; BUCKETS],
}

impl Half {
    fn empty(epoch: u64) -> Self {
        Self {
            epoch,
            total: 0,
            counts: [0; BUCKETS],
        }
    }
}

impl LatencyHistogram {
    /// Creates an empty histogram whose percentiles cover the last `window` (at least,
    /// and at most twice that). A zero window is raised to two milliseconds.
    pub fn new(window: Duration, start: Instant) -> Self {
        let half_window = (window / 2).max(Duration::from_millis(1));
        Self {
            half_window,
            start,
            halves: Mutex::new([Half::empty(0), Half::empty(u64::MAX)]),
        }
    }

    /// Records one latency sample taken at `now`.
    pub fn record(&self, latency: Duration, now: Instant) {
        let epoch = self.epoch(now);
        let bucket = bucket_of(latency);
        let mut halves = self.halves.lock();
        let half = &mut halves[(epoch % 2) as usize];
        if half.epoch != epoch {
            *half = Half::empty(epoch);
        }
        half.counts[bucket] = half.counts[bucket].saturating_add(1);
        half.total = half.total.saturating_add(1);
    }

    /// Returns the latency below which a share `quantile` (in 0..=1) of the window's
    /// samples fall, rounded up to its bucket's upper bound; `None` with fewer than
    /// [`MIN_SAMPLES`] samples in the window.
    pub fn quantile(&self, quantile: f64, now: Instant) -> Option<Duration> {
        let epoch = self.epoch(now);
        let halves = self.halves.lock();
        let live = |half: &&Half| half.epoch == epoch || half.epoch.wrapping_add(1) == epoch;
        let total: u32 = halves.iter().filter(live).map(|half| half.total).sum();
        if total < MIN_SAMPLES {
            return None;
        }

        // The rank of the sample that marks the quantile, counted from 1.
        let rank = ((quantile.clamp(0.0, 1.0) * f64::from(total)).ceil() as u32).max(1);
        let mut seen = 0;
        for bucket in 0..BUCKETS {
            seen += halves
                .iter()
                .filter(live)
                .map(|half| half.counts[bucket])
                .sum::<u32>();
            if seen >= rank {
                return Some(upper_bound(bucket));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        (elapsed.as_nanos() / self.half_window.as_nanos()) as u64
    }
}

/// Returns the bucket of a latency. Bucket 0 contains everything up to one millisecond,
/// and bucket `i` latencies up to 2^(i/4) ms.
fn bucket_of(latency: Duration) -> usize {
    let millis = latency.as_secs_f64() * 1000.0;
    if millis <= 1.0 {
        return 0;
    }
    let index = (millis.log2() * STEPS_PER_DOUBLING).ceil();
    (index as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> Duration {
    Duration::from_secs_f64((bucket as f64 / STEPS_PER_DOUBLING).exp2() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn reports_nothing_below_min_samples() {
        let start = Instant::now();
        let histogram = LatencyHistogram::new(Duration::from_secs(10), start);
        for _ in 0..MIN_SAMPLES - 1 {
            histogram.record(ms(100), start);
        }
        assert_eq!(histogram.quantile(0.5, start), None);
        histogram.record(ms(100), start);
        assert!(histogram.quantile(0.5, start).is_some());
    }

    #[test]
    fn quantile_within_one_bucket() {
        let start = Instant::now();
        let histogram = LatencyHistogram::new(Duration::from_secs(10), start);
        // 1..=100 ms: the median is 50 ms, the 95th percentile 95 ms.
        for value in 1..=100 {
            histogram.record(ms(value), start);
        }
        for (quantile, exact) in [(0.5, 50.0), (0.95, 95.0), (1.0, 100.0)] {
            let got = histogram.quantile(quantile, start).unwrap().as_secs_f64() * 1000.0;
            assert!(got >= exact, "p{quantile}: {got} < {exact}");
            assert!(
                got <= exact * 1.19,
                "p{quantile}: {got} too far above {exact}"
            );
        }
    }

    #[test]
    fn old_samples_leave_the_window() {
        let start = Instant::now();
        let histogram = LatencyHistogram::new(Duration::from_secs(10), start);
        for _ in 0..50 {
            histogram.record(ms(2000), start);
        }

        // Within one window the old samples still count.
        let later = start + Duration::from_secs(9);
        for _ in 0..50 {
            histogram.record(ms(10), later);
        }
        assert!(histogram.quantile(0.9, later).unwrap() > ms(1500));

        // Two half-windows on, only the recent samples remain.
        let after = start + Duration::from_secs(11);
        let p90 = histogram.quantile(0.9, after).unwrap();
        assert!(p90 < ms(12), "{p90:?}");

        // And a half reused for a new period starts empty.
        let much_later = start + Duration::from_secs(30);
        assert_eq!(histogram.quantile(0.9, much_later), None);
    }

    #[test]
    fn extreme_samples_stay_in_range() {
        let start = Instant::now();
        let histogram = LatencyHistogram::new(Duration::from_secs(10), start);
        for _ in 0..10 {
            histogram.record(Duration::ZERO, start);
            histogram.record(Duration::from_secs(100_000), start);
        }
        assert_eq!(histogram.quantile(0.0, start), Some(ms(1)));
        assert_eq!(
            histogram.quantile(1.0, start),
            Some(upper_bound(BUCKETS - 1))
        );
    }
}
