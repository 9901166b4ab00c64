//! Hedging: when an attempt has not responded within the route's hedge delay, one more
//! attempt starts on the next target, and the first response wins.
//!
//! The attempt that loses is dropped, which closes its upstream connection, so the
//! provider stops generating. A request hedges at most once, and the hedge is drawn from
//! the route's retry budget, so hedges cannot multiply upstream traffic.

use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::clock;
use tokio::time::Instant;

use super::attempt::{self, AttemptSuccess};
use super::charge::Charge;
use super::serving::Serving;
use super::{BreakerGuard, Target};
use crate::config::HedgeDelay;
use crate::error::AttemptError;

/// The outcome of an attempt on a target.
pub(crate) enum Ran {
    /// The attempt itself ended, after the duration; not recorded yet.
    Own(Result<AttemptSuccess, AttemptError>, Duration),
    /// A hedged attempt responded first. Nothing is recorded yet for the hedge. The first
    /// attempt is recorded if it failed before the hedge responded; otherwise it was
    /// cancelled after running for `first_cancelled`.
    Hedge {
        charge: Charge,
        success: AttemptSuccess,
        elapsed: Duration,
        first_cancelled: Option<Duration>,
    },
    /// Both attempts failed and are recorded; the error is the first attempt's.
    BothFailed(AttemptError),
}

impl Serving<'_> {
    /// Runs one attempt on `target`, hedged when the route hedges and this request has
    /// not yet.
    pub(crate) async fn attempt(&mut self, target: &Arc<Target>, guard: BreakerGuard) -> Ran {
        let (route, request, deadline) = (self.route, self.request, self.deadline);
        let started = Instant::now();
        let first = attempt::run(route, target, request, deadline, guard);
        let Some(hedge_at) = self.hedge_at(target, started) else {
            let result = first.await;
            return Ran::Own(result, started.elapsed());
        };

        tokio::pin!(first);
        tokio::select! {
            biased;
            result = &mut first => return Ran::Own(result, started.elapsed()),
            () = tokio::time::sleep_until(hedge_at) => {}
        }
        let Some((mut charge, hedge_guard)) = self.start_hedge(target, hedge_at - started) else {
            let result = first.await;
            return Ran::Own(result, started.elapsed());
        };

        charge.sent();
        let hedge_target = Arc::clone(charge.target());
        let hedge_started = Instant::now();
        let hedge = attempt::run(route, &hedge_target, request, deadline, hedge_guard);
        tokio::pin!(hedge);
        let mut first_error: Option<AttemptError> = None;
        let mut hedge_failed = false;
        loop {
            tokio::select! {
                result = &mut first, if first_error.is_none() => {
                    let elapsed = started.elapsed();
                    match result {
                        Ok(success) => {
                            if !hedge_failed {
                                self.record_cancelled(&hedge_target, hedge_started.elapsed(), true);
                            }
                            charge.ended();
                            return Ran::Own(Ok(success), elapsed);
                        }
                        Err(error) => {
                            // Recorded now, so that the records keep the order in which
                            // the attempts ended.
                            self.record_failure(target, &error, elapsed, false);
                            if hedge_failed {
                                return Ran::BothFailed(error);
                            }
                            first_error = Some(error);
                        }
                    }
                }
                result = &mut hedge, if !hedge_failed => {
                    let elapsed = hedge_started.elapsed();
                    match result {
                        Ok(success) => {
                            let first_cancelled = first_error.is_none().then(|| started.elapsed());
                            return Ran::Hedge { charge, success, elapsed, first_cancelled };
                        }
                        Err(error) => {
                            hedge_failed = true;
                            if error.not_sent {
                                charge.not_sent();
                            } else {
                                charge.ended();
                            }
                            self.record_failure(&hedge_target, &error, elapsed, true);
                            tracing::warn!(
                                request_id = %self.context.request_id,
                                target = %hedge_target.id,
                                class = %error.class,
                                status = error.status,
                                error = %error.message,
                                "hedged attempt failed"
                            );
                            if let Some(error) = first_error.take() {
                                return Ran::BothFailed(error);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Returns when an attempt on `target` started at `started` gets its hedge, or
    /// `None` when this request does not hedge (any more), or the hedge would start at or
    /// after the deadline.
    fn hedge_at(&self, target: &Target, started: Instant) -> Option<Instant> {
        if self.hedged {
            return None;
        }
        let delay = match self.route.hedge_delay? {
            HedgeDelay::Fixed(delay) => delay,
            HedgeDelay::Percentile(percent) => target
                .latencies
                .of(self.request.is_stream())
                .quantile(percent / 100.0, clock::now())?,
        };
        started
            .checked_add(delay)
            .filter(|at| !self.deadline.is_expired(*at))
            .filter(|_| self.has_candidate())
    }

    /// Takes the next target that admits an attempt, and a withdrawal from the retry
    /// budget for it. A request gets one try at this, whatever its result.
    fn start_hedge(&mut self, hedged: &Target, delay: Duration) -> Option<(Charge, BreakerGuard)> {
        self.hedged = true;
        // Checked again: a target may have been ruled out since the delay started.
        if !self.has_candidate() {
            return None;
        }

        // Targets passed over on the way are only skipped for the hedge: when no hedge
        // starts, failover still tries them later, when their limits may admit.
        let mark = self.plan_mark();
        let found = loop {
            let Some(charge) = self.next_target() else {
                break None;
            };
            let target = Arc::clone(charge.target());
            if let Some(guard) = self.breaker_guard(&target, true) {
                break Some((charge, guard));
            }
        };
        let Some((charge, guard)) = found else {
            self.rewind(mark);
            return None;
        };

        if !self.route.retry_budget.try_withdraw(clock::now()) {
            tracing::debug!(
                request_id = %self.context.request_id,
                target = %hedged.id,
                "no hedge: the retry budget of the route is used up"
            );
            // Dropping them hands the breaker permit and the charge back.
            drop(guard);
            drop(charge);
            self.rewind(mark);
            return None;
        }
        tracing::info!(
            request_id = %self.context.request_id,
            target = %hedged.id,
            hedge = %charge.target().id,
            delay_ms = delay.as_millis() as u64,
            "no answer within the hedge delay; starting a hedged attempt"
        );
        Some((charge, guard))
    }
}
