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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::ConfigError;

/// Concurrency settings of a route.
///
/// ```
/// use adpa_resilience::concurrency::ConcurrencyConfig;
///
/// let config: ConcurrencyConfig = toml::from_str(r#"
///     max_concurrent = 100
///     queue_size = 50
///     queue_timeout = "2s"
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Requests in flight at once.
    pub max_concurrent: u32,
    /// Requests that may wait for a slot; more are rejected at once.
    #[serde(default)]
    pub queue_size: u32,
    /// Maximum wait in the queue.
    #[serde(default = "default_queue_timeout", with = "crate::duration")]
    pub queue_timeout: Duration,
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

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
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
        Ok(Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
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

    /// Returns the load in `0.0..=1.0`: the larger of the share of slots in use and the
    /// share of queue places in use, the latter standing for queueing delay.
    pub fn load(&self) -> f64 {
        let (in_flight, queued) = self.usage();
        let slots = f64::from(in_flight) / f64::from(self.config.max_concurrent);
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
            if state.in_flight < self.config.max_concurrent {
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

    /// Releases one slot: hands it to the first waiter still waiting, or frees it.
    fn release(&self) {
        let mut state = self.state.lock();
        while let Some((_, sender)) = state.queue.pop_first() {
            if sender.send(()).is_ok() {
                return;
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
