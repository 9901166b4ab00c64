//! The cost of taking a target for a request: one request and the token estimate, from
//! the target's rate limit and from the quota its provider reported.

use std::sync::Arc;

use adpa_resilience::clock;

use super::limits::TokenReservation;
use super::quota::QuotaTaken;
use super::Target;

/// A target's limits, charged for one request when the request took the target.
///
/// Dropping it settles the charge by how far the request got there:
///
/// - never sent: the request and its tokens go back to the limiter and the quota;
/// - sent and failed, or cancelled because another attempt succeeded first: the
///   token estimate goes back to the limiter, since the provider produced nothing;
/// - sent and still running (the client went away): everything stays charged, which
///   errs towards the provider's limits.
///
/// A target that responds keeps its charge with the response, to be reconciled with
/// the usage the provider reports.
#[derive(Debug)]
pub(crate) struct Charge {
    target: Arc<Target>,
    tokens: u64,
    /// The parts of the reported quota counted down for this request.
    quota: QuotaTaken,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Taken,
    Sent,
    Ended,
    Kept,
}

impl Charge {
    /// Records a charge already taken from `target` for `tokens` estimated tokens, with
    /// what its reported quota counted down.
    pub(crate) fn taken(target: Arc<Target>, tokens: u64, quota: QuotaTaken) -> Self {
        Self {
            target,
            tokens,
            quota,
            state: State::Taken,
        }
    }

    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// Marks the request as sent to the target.
    pub(crate) fn sent(&mut self) {
        self.state = State::Sent;
    }

    /// Marks the request as not sent after all: the target could not express it.
    pub(crate) fn not_sent(&mut self) {
        if self.state == State::Sent {
            self.state = State::Taken;
        }
    }

    /// Marks the attempts on the target as finished without a response.
    pub(crate) fn ended(&mut self) {
        if self.state == State::Sent {
            self.state = State::Ended;
        }
    }

    /// Keeps the charge with the response: the target's limiter joins `reservation`.
    pub(crate) fn keep(mut self, reservation: &mut TokenReservation) {
        if let Some(limiter) = &self.target.limiter {
            reservation.add(Arc::clone(limiter));
        }
        self.state = State::Kept;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        match self.state {
            State::Taken => {
                if let Some(limiter) = &self.target.limiter {
                    limiter.undo(self.tokens);
                }
                self.target
                    .quota
                    .give_back(self.quota, self.tokens, clock::now());
            }
            State::Ended => {
                if let Some(limiter) = &self.target.limiter {
                    TokenReservation::release(limiter, self.tokens, clock::now());
                }
            }
            State::Sent | State::Kept => {}
        }
    }
}
