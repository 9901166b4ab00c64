//! The adaptive concurrency limit: a latency gradient, with a multiplicative decrease on
//! overload errors.
//!
//! The baseline is a long moving average of request latency, over about the last
//! thousand samples. Samples are also gathered in windows of about one recent latency
//! (and at least five samples), and the limit moves once per window by the gradient, the
//! ratio of the baseline to the window's average latency:
//!
//! ```text
//! gradient = clamp(TOLERANCE × baseline / window average, 0.5, 1.0)
//! limit    = limit + GROWTH × √limit   when gradient = 1
//!            limit × gradient          otherwise
//! ```
//!
//! While latency stays within `TOLERANCE` of the baseline the limit grows, probing for
//! capacity. When the upstream queues requests its latency rises above the baseline and
//! the limit shrinks in proportion, at most by half per window. A provider's latency
//! grows with the requests queued at it, so the limit settles around the point where
//! latency is `TOLERANCE` times the baseline. Moving once per window, rather than per
//! sample, lets the requests admitted under the last limit report before the next move.
//! The limit only grows while at least half of it was in use during the window, so an
//! idle route does not drift to its ceiling and then flood the provider when traffic
//! comes back.
//!
//! The baseline follows slowly, so that a provider's queueing does not become its new
//! normal. When latency stays high even at `min_concurrent`, the gateway cannot reduce
//! the load any further, so the measured latency is the provider's latency at that load:
//! a lasting change such as a slower model version. There the baseline closes a quarter of
//! the gap per window, and the limit grows again after a few windows instead of after
//! hundreds of samples.
//!
//! A gradient suits LLM traffic better than AIMD on a latency threshold: latency differs
//! by model and prompt size, so a fixed threshold would be wrong for most routes, while
//! a ratio to the route's own baseline needs no setting. Providers also signal overload
//! with errors (429, 529, 503, timeouts) rather than latency. Such an error cuts the
//! limit by `DECREASE`, at most once per window, as TCP does once per round trip.

use std::time::{Duration, Instant};

/// Latency may grow this much over the baseline before the limit shrinks.
const TOLERANCE: f64 = 1.5;

/// Weight of a new sample in the baseline (about the last thousand samples).
const BASELINE_WEIGHT: f64 = 0.001;

/// Samples averaged plainly into the baseline before it becomes a moving average; the
/// limit stays put until then.
const WARMUP: u64 = 10;

/// Share of √limit added per window while latency is within the tolerance.
const GROWTH: f64 = 0.5;

/// Factor applied to the limit on an overload error.
const DECREASE: f64 = 0.9;

/// Minimum samples that close a window.
const WINDOW_SAMPLES: u32 = 5;

/// Shortest window, so that very fast upstreams do not move the limit per request.
const MIN_WINDOW: Duration = Duration::from_millis(50);

/// A baseline this many times the recent latency has outlived a past slow period and
/// decays faster.
const STALE_BASELINE: f64 = 2.0;

/// Share of the gap to the window's latency the baseline closes per window while the
/// limit sits at its floor.
const FLOOR_CATCH_UP: f64 = 0.25;

/// The state of one adaptive limit.
#[derive(Debug, Clone)]
pub(crate) struct Gradient {
    min: f64,
    max: f64,
    limit: f64,
    baseline: f64,
    /// Average latency of the last closed window, in seconds.
    recent: f64,
    samples: u64,
    window: Window,
    last_decrease: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct Window {
    started: Option<Instant>,
    sum: f64,
    count: u32,
    peak_in_flight: u32,
}

impl Gradient {
    /// Creates a limit that starts at the ceiling `max`, the configured limit, until
    /// latency or errors lower it.
    pub(crate) fn new(min: u32, max: u32) -> Self {
        Self {
            min: f64::from(min),
            max: f64::from(max),
            limit: f64::from(max),
            baseline: 0.0,
            recent: 0.0,
            samples: 0,
            window: Window::default(),
            last_decrease: None,
        }
    }

    /// Returns the limit in whole requests.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.floor() as u32
    }

    /// Takes the latency of one request that ended at `now`, with `in_flight` requests
    /// out at the time.
    pub(crate) fn on_sample(&mut self, latency: Duration, in_flight: u32, now: Instant) {
        let sample = latency.as_secs_f64().max(1e-6);
        self.samples += 1;
        if self.samples <= WARMUP {
            self.baseline += (sample - self.baseline) / self.samples as f64;
            self.recent = self.baseline;
            return;
        }
        self.baseline += (sample - self.baseline) * BASELINE_WEIGHT;

        let window = &mut self.window;
        let started = *window.started.get_or_insert(now);
        window.sum += sample;
        window.count += 1;
        window.peak_in_flight = window.peak_in_flight.max(in_flight);
        let length = Duration::from_secs_f64(self.recent).max(MIN_WINDOW);
        if window.count < WINDOW_SAMPLES || now.saturating_duration_since(started) < length {
            return;
        }

        let window = std::mem::take(&mut self.window);
        self.recent = window.sum / f64::from(window.count);
        if self.baseline > self.recent * STALE_BASELINE {
            self.baseline *= 0.95;
        }
        if self.limit <= self.min && self.recent > self.baseline {
            self.baseline += (self.recent - self.baseline) * FLOOR_CATCH_UP;
        }
        let gradient = (TOLERANCE * self.baseline / self.recent).clamp(0.5, 1.0);
        let limit = if gradient < 1.0 {
            self.limit * gradient
        } else if f64::from(window.peak_in_flight) >= self.limit / 2.0 {
            self.limit + GROWTH * self.limit.sqrt()
        } else {
            self.limit
        };
        self.limit = limit.clamp(self.min, self.max);
    }

    /// Takes an overload error at `now`.
    pub(crate) fn on_overload(&mut self, now: Instant) {
        let spacing = Duration::from_secs_f64(self.recent).max(MIN_WINDOW);
        if self
            .last_decrease
            .is_some_and(|last| now.saturating_duration_since(last) < spacing)
        {
            return;
        }
        self.last_decrease = Some(now);
        self.limit = (self.limit * DECREASE).clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Feeds `windows` windows of ten samples of `latency`, spread over one latency
    /// each, with `in_flight` requests out (`None`: the limit fully used).
    fn feed(
        gradient: &mut Gradient,
        clock: &mut Instant,
        latency: Duration,
        windows: usize,
        in_flight: Option<u32>,
    ) {
        for _ in 0..windows * 10 {
            *clock += latency / 10;
            let in_flight = in_flight.unwrap_or(gradient.limit());
            gradient.on_sample(latency, in_flight, *clock);
        }
    }

    #[test]
    fn steady_latency_keeps_ceiling() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 50, None);
        assert_eq!(gradient.limit(), 100);
    }

    #[test]
    fn rising_latency_shrinks_limit_and_recovery_grows_it() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 5, None);

        // Latency triples: the provider is queueing. Each window about halves the
        // limit; the first also contains a few samples from before.
        feed(&mut gradient, &mut clock, ms(300), 1, None);
        let once = gradient.limit();
        assert!((50..=60).contains(&once), "{once}");
        feed(&mut gradient, &mut clock, ms(300), 1, None);
        let twice = gradient.limit();
        assert!(
            (once / 2..=once / 2 + 1).contains(&twice),
            "{once} then {twice}"
        );

        // Back to the baseline: the limit climbs back to the ceiling.
        feed(&mut gradient, &mut clock, ms(100), 30, None);
        assert_eq!(gradient.limit(), 100);
    }

    #[test]
    fn lasting_slowdown_becomes_the_baseline() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 5, None);

        // Latency triples for good, whatever the load: the limit falls to the floor,
        // then the baseline catches up and the limit grows back.
        feed(&mut gradient, &mut clock, ms(300), 10, None);
        assert_eq!(gradient.limit(), 1);
        feed(&mut gradient, &mut clock, ms(300), 40, None);
        assert!(gradient.limit() >= 20, "{}", gradient.limit());
    }

    #[test]
    fn moderate_rise_within_tolerance_is_accepted() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 5, None);
        feed(&mut gradient, &mut clock, ms(140), 20, None);
        assert_eq!(gradient.limit(), 100);
    }

    #[test]
    fn limit_moves_once_per_window() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 5, None);

        // Many slow samples within one recent latency move the limit at most once, by
        // at most half.
        for _ in 0..50 {
            clock += ms(1);
            gradient.on_sample(ms(1000), 100, clock);
        }
        let moved = gradient.limit();
        assert!(moved >= 50, "{moved}");
        for _ in 0..10 {
            clock += ms(100);
            gradient.on_sample(ms(1000), 100, clock);
        }
        let halved = gradient.limit();
        assert!(
            (moved / 2..=moved / 2 + 1).contains(&halved),
            "{moved} then {halved}"
        );
    }

    #[test]
    fn stays_between_min_and_max() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(5, 20);
        feed(&mut gradient, &mut clock, ms(10), 5, None);
        feed(&mut gradient, &mut clock, ms(10_000), 3, None);
        assert_eq!(gradient.limit(), 5);
        for step in 0..100 {
            gradient.on_overload(clock + Duration::from_secs(step * 20));
        }
        assert_eq!(gradient.limit(), 5);
    }

    #[test]
    fn idle_route_does_not_grow() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(100), 2, Some(3));
        gradient.on_overload(clock);
        let lowered = gradient.limit();
        assert_eq!(lowered, 90);

        feed(&mut gradient, &mut clock, ms(100), 20, Some(3));
        assert_eq!(gradient.limit(), lowered);
        feed(&mut gradient, &mut clock, ms(100), 20, None);
        assert_eq!(gradient.limit(), 100);
    }

    #[test]
    fn overload_cuts_once_per_window() {
        let mut clock = Instant::now();
        let mut gradient = Gradient::new(1, 100);
        feed(&mut gradient, &mut clock, ms(200), 2, None);
        // A burst of errors within one latency counts once.
        for _ in 0..10 {
            gradient.on_overload(clock);
        }
        assert_eq!(gradient.limit(), 90);
        gradient.on_overload(clock + ms(250));
        assert_eq!(gradient.limit(), 81);
    }
}
