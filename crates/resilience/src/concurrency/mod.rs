//! A concurrency limit with a bounded priority queue.
//!
//! At most `max_concurrent` permits are out at once. The next `queue_size` callers wait
//! in priority order, first come first served within a priority, for at most
//! `queue_timeout`. Past that the call is rejected at once. A released permit goes
//! straight to the first waiter, so a waiter is never overtaken by a newcomer.
//!
//! Every future and permit is cancellation-safe: a caller that gives up while queued
//! leaves the queue at once, and a permit handed to a caller that has just given up is
//! passed on to the next waiter.
//!
//! With `adaptive = true` the limit moves between `min_concurrent` and
//! `max_concurrent` with the latency and overload errors the caller reports; the
//! [`adaptive`] module describes how.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::ConfigError;

pub mod adaptive;

use adaptive::Gradient;

/// Concurrency settings of a route.
///
/// ```
/// use adpa_resilience::concurrency::ConcurrencyConfig;
///
/// let config: ConcurrencyConfig = toml::from_str(r#"
///     max_concurrent = 100
///     queue_size = 50
///     queue_timeout = "2s"
///     adaptive = true
///     min_concurrent = 4
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Requests in flight at once; with `adaptive`, the ceiling and starting point of
    /// the limit.
    pub max_concurrent: u32,
    /// Requests that may wait for a slot; more are rejected at once.
    #[serde(default)]
    pub queue_size: u32,
    /// Maximum wait in the queue.
    #[serde(default = "default_queue_timeout", with = "crate::duration")]
    pub queue_timeout: Duration,
    /// Moves the limit with observed latency and overload errors.
    #[serde(default)]
    pub adaptive: bool,
    /// The floor of an adaptive limit; 1 when not set. Only valid with `adaptive`.
    #[serde(default)]
    pub min_concurrent: Option<u32>,
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ConcurrencyConfig {
    /// Checks every setting against its valid range.
    ///
    /// # Errors
    ///
    /// Returns the first setting that is out of range, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::new("max_concurrent", "must be at least 1"));
        }
        match self.min_concurrent {
            Some(_) if !self.adaptive => {
                return Err(ConfigError::new(
                    "min_concurrent",
                    "only applies to an adaptive limit; set adaptive = true or remove it",
                ));
            }
            Some(min) if min == 0 || min > self.max_concurrent => {
                return Err(ConfigError::new(
                    "min_concurrent",
                    format!(
                        "must be between 1 and max_concurrent ({}), got {min}",
                        self.max_concurrent
                    ),
                ));
            }
            _ => {}
        }
        if self.queue_timeout.is_zero() && self.queue_size > 0 {
            return Err(ConfigError::new(
                "queue_timeout",
                "must be longer than zero when queue_size is above 0",
            ));
        }
        Ok(())
    }
}

/// The reason a caller got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Every slot is taken and the queue is full.
    QueueFull,
    /// The caller waited `queue_timeout` without getting a slot.
    QueueTimeout,
}

/// A concurrency limit shared by the requests of one scope.
///
/// # Thread safety
///
/// Shared behind an `Arc`; the lock is held only to count and to queue, never across
/// an await.
#[derive(Debug)]
pub struct ConcurrencyLimiter {
    config: ConcurrencyConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    in_flight: u32,
    /// The current limit: `max_concurrent`, or the adaptive limit's current value.
    limit: u32,
    adaptive: Option<Gradient>,
    /// Waiters by (inverted priority, arrival), so the first entry is served next.
    queue: BTreeMap<(u8, u64), oneshot::Sender<()>>,
    next_arrival: u64,
}

impl ConcurrencyLimiter {
    /// Creates a limiter.
    ///
    /// # Errors
    ///
    /// Returns the setting that is out of range.
    pub fn new(config: ConcurrencyConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let adaptive = config
            .adaptive
            .then(|| Gradient::new(config.min_concurrent.unwrap_or(1), config.max_concurrent));
        let state = State {
            in_flight: 0,
            limit: config.max_concurrent,
            adaptive,
            queue: BTreeMap::new(),
            next_arrival: 0,
        };
        Ok(Arc::new(Self {
            config,
            state: Mutex::new(state),
        }))
    }

    /// Returns the settings.
    pub fn config(&self) -> &ConcurrencyConfig {
        &self.config
    }

    /// Returns the requests in flight and the requests queued.
    pub fn usage(&self) -> (u32, u32) {
        let state = self.state.lock();
        (state.in_flight, state.queue.len() as u32)
    }

    /// Returns the current limit: `max_concurrent`, or the adaptive limit's current value.
    pub fn limit(&self) -> u32 {
        self.state.lock().limit
    }

    /// Reports the latency of a request served under a permit that ended at `now`, for
    /// the adaptive limit; without `adaptive` it does nothing. Returns the new limit
    /// when it moved.
    pub fn record_latency(&self, latency: Duration, now: std::time::Instant) -> Option<u32> {
        let mut state = self.state.lock();
        let in_flight = state.in_flight;
        let gradient = state.adaptive.as_mut()?;
        gradient.on_sample(latency, in_flight, now);
        let limit = gradient.limit();
        Self::set_limit(&mut state, limit)
    }

    /// Reports an overload error from upstream (a 429, a 529, a timeout) at `now`, for
    /// the adaptive limit; without `adaptive` it does nothing. Returns the new limit
    /// when it moved.
    pub fn record_overload(&self, now: std::time::Instant) -> Option<u32> {
        let mut state = self.state.lock();
        let gradient = state.adaptive.as_mut()?;
        gradient.on_overload(now);
        let limit = gradient.limit();
        Self::set_limit(&mut state, limit)
    }

    /// Moves the limit and returns it when it changed. A higher limit lets waiters in at
    /// once, a lower one takes effect as permits come back.
    fn set_limit(state: &mut State, limit: u32) -> Option<u32> {
        if state.limit == limit {
            return None;
        }
        state.limit = limit;
        while state.in_flight < state.limit {
            let Some((_, sender)) = state.queue.pop_first() else {
                break;
            };
            if sender.send(()).is_ok() {
                state.in_flight += 1;
            }
        }
        Some(limit)
    }

    /// Returns the load in `0.0..=1.0`: the larger of the share of slots in use and the
    /// share of queue places in use, the latter standing for queueing delay.
    pub fn load(&self) -> f64 {
        let (in_flight, queued, limit) = {
            let state = self.state.lock();
            (state.in_flight, state.queue.len() as u32, state.limit)
        };
        let slots = f64::from(in_flight) / f64::from(limit.max(1));
        let queue = match self.config.queue_size {
            0 => 0.0,
            size => f64::from(queued) / f64::from(size),
        };
        slots.max(queue).min(1.0)
    }

    /// Takes a permit, waiting in the queue at `priority` (higher is served first) when
    /// every slot is taken.
    ///
    /// # Errors
    ///
    /// Returns [`Rejected`] when the queue is full or the wait timed out.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the queue, or passes on a slot it was just given.
    pub async fn acquire(self: &Arc<Self>, priority: u8) -> Result<ConcurrencyPermit, Rejected> {
        let (key, receiver) = {
            let mut state = self.state.lock();
            if state.in_flight < state.limit {
                state.in_flight += 1;
                return Ok(ConcurrencyPermit {
                    limiter: Arc::clone(self),
                });
            }
            if state.queue.len() >= self.config.queue_size as usize {
                return Err(Rejected::QueueFull);
            }
            let arrival = state.next_arrival;
            state.next_arrival += 1;
            let key = (u8::MAX - priority, arrival);
            let (sender, receiver) = oneshot::channel();
            state.queue.insert(key, sender);
            (key, receiver)
        };

        let mut waiter = Waiter {
            limiter: Arc::clone(self),
            key,
            receiver: Some(receiver),
        };
        let receiver = waiter.receiver.as_mut().map(|r| &mut *r);
        let granted = match receiver {
            Some(receiver) => tokio::time::timeout(self.config.queue_timeout, receiver).await,
            None => return Err(Rejected::QueueTimeout),
        };
        match granted {
            Ok(Ok(())) => {
                waiter.receiver = None;
                Ok(ConcurrencyPermit {
                    limiter: Arc::clone(self),
                })
            }
            // The sender is only dropped without a send when the limiter is dropped.
            Ok(Err(_)) | Err(_) => Err(Rejected::QueueTimeout),
        }
    }

    /// Releases one slot: hands it to the first waiter still waiting, or frees it. Above
    /// a lowered limit it is freed, so the requests in flight come down to the limit.
    fn release(&self) {
        let mut state = self.state.lock();
        if state.in_flight <= state.limit {
            while let Some((_, sender)) = state.queue.pop_first() {
                if sender.send(()).is_ok() {
                    return;
                }
            }
        }
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

/// A queued caller; on drop it leaves the queue or passes on a slot it was given.
struct Waiter {
    limiter: Arc<ConcurrencyLimiter>,
    key: (u8, u64),
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let still_queued = self.limiter.state.lock().queue.remove(&self.key).is_some();
        if !still_queued && receiver.try_recv().is_ok() {
            // A slot was handed over after the wait ended; pass it on.
            self.limiter.release();
        }
    }
}

/// A slot of a [`ConcurrencyLimiter`], released on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    limiter: Arc<ConcurrencyLimiter>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests;
