//! A retry budget: retries may not exceed a share of recent requests, so that an outage
//! does not multiply the traffic sent to a failing provider.
//!
//! Requests and retries are counted in time slots covering `window`. A retry is allowed
//! while `retries < requests × ratio + min_per_second × window` over the slots still in
//! the window. The floor lets a quiet route retry at all.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Slots the window is divided into; counts expire one slot at a time.
const SLOTS: usize = 10;

/// Counts of recent requests and retries for one route.
///
/// # Thread safety
///
/// Shared by reference; each call holds a lock for a few arithmetic steps.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    slot_length: Duration,
    state: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    /// Start of the newest slot.
    current_start: Instant,
    current: usize,
    requests: [u64; SLOTS],
    retries: [u64; SLOTS],
}

impl RetryBudget {
    /// Creates a budget that allows `ratio` retries per request over `window`, and at
    /// least `min_per_second` retries per second. `start` is the earliest instant later
    /// calls pass as `now`.
    pub fn new(ratio: f64, window: Duration, min_per_second: f64, start: Instant) -> Self {
        let window = window.max(Duration::from_millis(SLOTS as u64));
        Self {
            ratio: ratio.max(0.0),
            floor: min_per_second.max(0.0) * window.as_secs_f64(),
            slot_length: window / SLOTS as u32,
            state: Mutex::new(Slots {
                current_start: start,
                current: 0,
                requests: [0; SLOTS],
                retries: [0; SLOTS],
            }),
        }
    }

    /// Counts a request at `now`.
    pub fn deposit(&self, now: Instant) {
        let mut state = self.state.lock();
        self.advance(&mut state, now);
        let current = state.current;
        state.requests[current] += 1;
    }

    /// Takes one retry from the budget at `now`; returns `false` when it is used up.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        self.advance(&mut state, now);
        let requests: u64 = state.requests.iter().sum();
        let retries: u64 = state.retries.iter().sum();
        let allowed = requests as f64 * self.ratio + self.floor;
        if (retries as f64) < allowed {
            let current = state.current;
            state.retries[current] += 1;
            true
        } else {
            false
        }
    }

    /// Moves to the slot that contains `now`, clearing slots that left the window.
    fn advance(&self, state: &mut Slots, now: Instant) {
        let elapsed = now.saturating_duration_since(state.current_start);
        let steps = (elapsed.as_nanos() / self.slot_length.as_nanos().max(1)) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(SLOTS) {
            state.current = (state.current + 1) % SLOTS;
            let current = state.current;
            state.requests[current] = 0;
            state.retries[current] = 0;
        }
        state.current_start += self.slot_length * steps as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_limited_to_share_of_requests() {
        let start = Instant::now();
        let budget = RetryBudget::new(0.2, Duration::from_secs(10), 0.0, start);
        for _ in 0..100 {
            budget.deposit(start);
        }
        let allowed = (0..100).filter(|_| budget.try_withdraw(start)).count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn floor_allows_retries_without_traffic() {
        let start = Instant::now();
        let budget = RetryBudget::new(0.2, Duration::from_secs(10), 1.0, start);
        let allowed = (0..100).filter(|_| budget.try_withdraw(start)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn old_counts_expire() {
        let start = Instant::now();
        let budget = RetryBudget::new(1.0, Duration::from_secs(10), 0.0, start);
        for _ in 0..5 {
            budget.deposit(start);
        }
        assert!((0..5).all(|_| budget.try_withdraw(start)));
        assert!(!budget.try_withdraw(start));

        // After the window the old requests and retries are gone.
        let later = start + Duration::from_secs(11);
        assert!(!budget.try_withdraw(later));
        budget.deposit(later);
        assert!(budget.try_withdraw(later));
    }

    #[test]
    fn slots_expire_one_at_a_time() {
        let start = Instant::now();
        let budget = RetryBudget::new(1.0, Duration::from_secs(10), 0.0, start);
        budget.deposit(start);
        budget.deposit(start + Duration::from_secs(5));
        // At 10.5 s the first request left the window, the second has not.
        let now = start + Duration::from_millis(10_500);
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
    }
}
