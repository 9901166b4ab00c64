//! A cheap monotonic clock for the checks made on every request.
//!
//! `Instant::now()` reads the kernel's clock, which costs about 25 ns on a virtual
//! machine, more than the rate limiter's own check. [`Ticks::now`] reads the CPU's
//! time-stamp counter through `quanta`, calibrated against the monotonic clock, as a
//! count of nanoseconds from an anchor taken when the clock is first read. Where the
//! counter is not reliable, `quanta` falls back to the monotonic clock itself.
//!
//! Ticks convert to and from `std::time::Instant` exactly, so code that takes an
//! `Instant` (tests with a fixed clock, above all) mixes with code that reads ticks. The
//! two clocks drift apart slowly: the counter's rate is calibrated once, and NTP slews
//! the monotonic clock but not the counter. A limiter that reads one of the two clocks
//! for all its calls is not affected by that drift.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An instant as nanoseconds from the clock's anchor; negative before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticks(i64);

struct Source {
    clock: quanta::Clock,
    /// The counter and the monotonic clock, read together.
    counter_anchor: u64,
    anchor: Instant,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

fn source() -> &'static Source {
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let counter_anchor = clock.raw();
        Source {
            clock,
            counter_anchor,
            anchor: Instant::now(),
        }
    })
}

impl Ticks {
    /// Reads the time-stamp counter.
    pub fn now() -> Self {
        let source = source();
        let nanos = source
            .clock
            .delta_as_nanos(source.counter_anchor, source.clock.raw());
        Self(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// Returns the same instant as an `Instant`.
    pub fn instant(self) -> Instant {
        let anchor = source().anchor;
        let offset = Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 {
            anchor + offset
        } else {
            anchor - offset
        }
    }

    /// Returns the nanoseconds from `earlier` to `self`, or 0 when `earlier` is later.
    pub fn nanos_since(self, earlier: Ticks) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// Returns the instant `nanos` nanoseconds later.
    pub fn add_nanos(self, nanos: u64) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(nanos).unwrap_or(i64::MAX)),
        )
    }
}

impl From<Instant> for Ticks {
    fn from(instant: Instant) -> Self {
        let anchor = source().anchor;
        let nanos = |duration: Duration| i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        if instant >= anchor {
            Self(nanos(instant - anchor))
        } else {
            Self(-nanos(anchor - instant))
        }
    }
}

/// Returns the current instant from the time-stamp counter.
pub fn now() -> Instant {
    Ticks::now().instant()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_monotonic_clock() {
        let first = now();
        let std_first = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let elapsed = now().duration_since(first);
        let std_elapsed = std_first.elapsed();
        let gap = elapsed.abs_diff(std_elapsed);
        assert!(
            gap < Duration::from_millis(2),
            "{elapsed:?} vs {std_elapsed:?}"
        );
    }

    #[test]
    fn never_goes_back_on_one_thread() {
        let mut last = Ticks::now();
        for _ in 0..10_000 {
            let next = Ticks::now();
            assert!(next >= last);
            last = next;
        }
    }

    #[test]
    fn converts_instants_exactly() {
        let before = Instant::now();
        let anchor = source().anchor;
        for instant in [before, anchor, anchor + Duration::from_nanos(1_234_567_891)] {
            assert_eq!(Ticks::from(instant).instant(), instant);
        }
        let later = before + Duration::from_millis(1500);
        assert_eq!(
            Ticks::from(later).nanos_since(Ticks::from(before)),
            1_500_000_000
        );
        assert_eq!(Ticks::from(before).nanos_since(Ticks::from(later)), 0);
    }
}
