//! A circuit breaker for one target.
//!
//! - **Closed**: every call is admitted. `failure_threshold` consecutive failures open
//!   the breaker; a success resets the count.
//! - **Open**: every call is rejected until `reset_timeout` has passed since it opened,
//!   then the breaker turns half-open.
//! - **Half-open**: at most `half_open_max_probes` calls are admitted as probes. A probe
//!   that succeeds closes the breaker; one that fails, or that has not finished
//!   `half_open_timeout` after it started, opens it again.
//!
//! The closed path is two atomic operations, so the breaker can sit on every request.
//! Other states take a short lock that is never held across an await.
//!
//! Only failures that show the target is unhealthy should be recorded as failures, so
//! the caller classifies outcomes before it reports them.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Circuit breaker settings.
///
/// ```
/// use adpa_resilience::CircuitBreakerConfig;
///
/// let config: CircuitBreakerConfig = toml::from_str(r#"
///     failure_threshold = 5
///     reset_timeout = "30s"
///     half_open_timeout = "5s"
///     half_open_max_probes = 1
/// "#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Time the breaker stays open before it admits probes.
    #[serde(with = "crate::duration")]
    pub reset_timeout: Duration,
    /// Time a probe may take before it counts as failed.
    #[serde(with = "crate::duration")]
    pub half_open_timeout: Duration,
    /// Probes admitted at once while half-open.
    pub half_open_max_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            half_open_timeout: Duration::from_secs(5),
            half_open_max_probes: 1,
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks every setting against its valid range.
    ///
    /// # Errors
    ///
    /// Returns the first setting that is out of range, by its config name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be at least 1"));
        }
        if self.half_open_max_probes == 0 {
            return Err(ConfigError::new(
                "half_open_max_probes",
                "must be at least 1",
            ));
        }
        if self.half_open_timeout.is_zero() {
            return Err(ConfigError::new(
                "half_open_timeout",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls are admitted.
    Closed,
    /// Calls are rejected.
    Open,
    /// A bounded number of probes is admitted.
    HalfOpen,
}

impl State {
    fn from_u8(value: u8) -> Self {
        match value {
            CLOSED => Self::Closed,
            OPEN => Self::Open,
            _ => Self::HalfOpen,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Closed => CLOSED,
            Self::Open => OPEN,
            Self::HalfOpen => HALF_OPEN,
        }
    }

    /// Returns the lowercase name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A change of state, returned to the caller so it can log it with its own context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before the change.
    pub from: State,
    /// State after the change.
    pub to: State,
    /// The reason the state changed.
    pub cause: TransitionCause,
}

/// The event that changed a breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionCause {
    /// `failure_threshold` consecutive failures while closed.
    FailureThreshold,
    /// `reset_timeout` passed while open.
    ResetTimeout,
    /// A probe succeeded.
    ProbeSucceeded,
    /// A probe failed.
    ProbeFailed,
    /// A probe did not finish within `half_open_timeout`.
    ProbeTimedOut,
}

/// The outcome of an admitted call, as the caller classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target served the call.
    Success,
    /// The call failed in a way that shows the target is unhealthy.
    Failure,
    /// The call ended in a way that shows nothing about the target's health, such as a
    /// client's invalid request or a cancelled call.
    Ignored,
}

/// A call the breaker rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The earliest time at which the breaker may admit a call again.
    pub retry_at: Instant,
    /// The state change that this admission check caused, if any.
    pub transition: Option<Transition>,
}

/// A circuit breaker for one target.
///
/// # Thread safety
///
/// Shared by reference between tasks; all methods take `&self`.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    /// Mirror of `inner.state`, read without the lock on the closed path.
    state: AtomicU8,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    opened_at: Option<Instant>,
    /// Probes in flight while half-open: id and start time.
    probes: Vec<(u64, Instant)>,
    next_probe_id: u64,
}

impl CircuitBreaker {
    /// Creates a closed breaker.
    ///
    /// # Errors
    ///
    /// Returns the setting that is out of range.
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: None,
                probes: Vec::new(),
                next_probe_id: 0,
            }),
        })
    }

    /// Returns the breaker's settings.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Returns the current state, without applying timeouts that have passed.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Reports whether a call at `now` would be admitted, without admitting it.
    pub fn would_admit(&self, now: Instant) -> bool {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return true;
        }
        let inner = self.inner.lock();
        match inner.state {
            State::Closed => true,
            State::Open => inner
                .opened_at
                .is_none_or(|at| now >= at + self.config.reset_timeout),
            State::HalfOpen => {
                inner.probes.len() < self.config.half_open_max_probes as usize
                    || inner
                        .probes
                        .iter()
                        .any(|(_, started)| self.probe_expired(*started, now))
            }
        }
    }

    /// Admits a call at `now`, or rejects it with the time the breaker may admit again.
    ///
    /// # Errors
    ///
    /// Returns [`Rejected`] while open, or while half-open with every probe slot taken.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Rejected> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(Permit::new(PermitKind::Closed, None));
        }

        let mut inner = self.inner.lock();
        match inner.state {
            State::Closed => Ok(Permit::new(PermitKind::Closed, None)),
            State::Open => self.acquire_open(&mut inner, now),
            State::HalfOpen => self.acquire_half_open(&mut inner, now, None),
        }
    }

    /// Open state: reject until `reset_timeout` has passed, then turn half-open and
    /// admit the first probe.
    fn acquire_open(&self, inner: &mut Inner, now: Instant) -> Result<Permit, Rejected> {
        let opened_at = inner.opened_at.unwrap_or(now);
        let reopens_at = opened_at + self.config.reset_timeout;
        if now < reopens_at {
            return Err(Rejected {
                retry_at: reopens_at,
                transition: None,
            });
        }

        let transition = self.set_state(inner, State::HalfOpen, TransitionCause::ResetTimeout);
        inner.probes.clear();
        self.acquire_half_open(inner, now, Some(transition))
    }

    /// Half-open state: a probe that overran `half_open_timeout` reopens the breaker;
    /// otherwise admit a probe while a slot is free.
    fn acquire_half_open(
        &self,
        inner: &mut Inner,
        now: Instant,
        earlier: Option<Transition>,
    ) -> Result<Permit, Rejected> {
        let overran = inner
            .probes
            .iter()
            .any(|(_, started)| self.probe_expired(*started, now));
        if overran {
            let transition = self.open(inner, now, TransitionCause::ProbeTimedOut);
            return Err(Rejected {
                retry_at: now + self.config.reset_timeout,
                transition: Some(transition),
            });
        }

        if inner.probes.len() >= self.config.half_open_max_probes as usize {
            let first_deadline = inner
                .probes
                .iter()
                .map(|(_, started)| *started + self.config.half_open_timeout)
                .min()
                .unwrap_or(now);
            return Err(Rejected {
                retry_at: first_deadline,
                transition: earlier,
            });
        }

        let id = inner.next_probe_id;
        inner.next_probe_id += 1;
        inner.probes.push((id, now));
        Ok(Permit::new(PermitKind::Probe { id, started: now }, earlier))
    }

    /// Records the outcome of an admitted call at `now` and returns the state change it
    /// caused.
    pub fn record(&self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        match permit.kind {
            PermitKind::Closed => self.record_closed(outcome, now),
            PermitKind::Probe { id, started } => self.record_probe(id, started, outcome, now),
        }
    }

    /// Hands back the permit of a call that was cancelled, which says nothing about the
    /// target's health. A probe's slot is freed for the next call.
    pub fn release(&self, permit: Permit) {
        if let PermitKind::Probe { id, .. } = permit.kind {
            let mut inner = self.inner.lock();
            inner.probes.retain(|(probe, _)| *probe != id);
        }
    }

    fn probe_expired(&self, started: Instant, now: Instant) -> bool {
        now.saturating_duration_since(started) > self.config.half_open_timeout
    }

    fn record_closed(&self, outcome: Outcome, now: Instant) -> Option<Transition> {
        match outcome {
            Outcome::Ignored => None,
            Outcome::Success => {
                // Skip the store when already zero so successes do not bounce the cache
                // line between cores.
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::Failure => {
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures < self.config.failure_threshold {
                    return None;
                }
                let mut inner = self.inner.lock();
                // Another task may have opened the breaker between the count and the lock.
                (inner.state == State::Closed)
                    .then(|| self.open(&mut inner, now, TransitionCause::FailureThreshold))
            }
        }
    }

    fn record_probe(
        &self,
        id: u64,
        started: Instant,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        let mut inner = self.inner.lock();
        let position = inner.probes.iter().position(|(probe, _)| *probe == id)?;
        inner.probes.swap_remove(position);
        if inner.state != State::HalfOpen {
            return None;
        }

        match outcome {
            Outcome::Ignored => None,
            Outcome::Success if !self.probe_expired(started, now) => {
                self.failures.store(0, Ordering::Relaxed);
                inner.probes.clear();
                Some(self.set_state(&mut inner, State::Closed, TransitionCause::ProbeSucceeded))
            }
            Outcome::Success => Some(self.open(&mut inner, now, TransitionCause::ProbeTimedOut)),
            Outcome::Failure => Some(self.open(&mut inner, now, TransitionCause::ProbeFailed)),
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, cause: TransitionCause) -> Transition {
        inner.opened_at = Some(now);
        inner.probes.clear();
        self.set_state(inner, State::Open, cause)
    }

    fn set_state(&self, inner: &mut Inner, to: State, cause: TransitionCause) -> Transition {
        let from = inner.state;
        inner.state = to;
        self.state.store(to.as_u8(), Ordering::Release);
        Transition { from, to, cause }
    }
}

/// Admission of one call. Hand it back with [`CircuitBreaker::record`] when the call
/// ends, or with [`CircuitBreaker::release`] when it was cancelled. A probe permit that
/// is never handed back counts as failed once `half_open_timeout` has passed.
#[derive(Debug)]
#[must_use = "hand the permit back with record or release"]
pub struct Permit {
    kind: PermitKind,
    transition: Option<Transition>,
}

#[derive(Debug, Clone, Copy)]
enum PermitKind {
    Closed,
    Probe { id: u64, started: Instant },
}

impl Permit {
    fn new(kind: PermitKind, transition: Option<Transition>) -> Self {
        Self { kind, transition }
    }

    /// Reports whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe { .. })
    }

    /// Returns the state change that admitting this call caused, if any.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }
}

#[cfg(test)]
mod tests;
