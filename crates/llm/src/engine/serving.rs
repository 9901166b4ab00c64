//! One admitted request on its way through a route's targets: attempts in plan order,
//! retries on a target, failover to the next, and the attempt records for the client.

use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::clock::{self, Ticks};
use adpa_resilience::concurrency::ConcurrencyPermit;
use adpa_resilience::{Deadline, RetryDecision};
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::attempt::AttemptSuccess;
use super::charge::Charge;
use super::hedge::Ran;
use super::limits::TokenReservation;
use super::plan::{ineligible, SkipReason, Skipped};
use super::quota::QuotaTaken;
use super::{
    log_failover, log_transition, AttemptRecord, BreakerGuard, EngineError, EngineResponse,
    Recovery, RequestContext, ResponseBody, Route, Target,
};
use crate::error::{AttemptError, ErrorClass};
use crate::request::{ChatRequest, Needs};

/// The model and window of a target that rejected the prompt as too long; later targets
/// are only tried with a larger window.
struct TooLong {
    model: Arc<str>,
    window: Option<u64>,
}

impl TooLong {
    fn excludes(&self, target: &Target) -> bool {
        if target.model.name == self.model {
            return true;
        }
        match (self.window, target.model.context_window) {
            (Some(failed), Some(window)) => window <= failed,
            _ => false,
        }
    }
}

/// How far a request has gone through its plan, to go back to.
pub(crate) struct PlanMark {
    next: usize,
    skipped: usize,
    first_reopen: Option<Duration>,
}

/// One admitted request on its way through the route's targets.
pub(crate) struct Serving<'a> {
    pub(crate) route: &'a Route,
    pub(crate) request: &'a ChatRequest,
    pub(crate) context: &'a RequestContext,
    pub(crate) deadline: Deadline,
    needs: Needs,
    /// Targets in the order this request tries them; `next` is the first not yet taken.
    plan: Vec<Arc<Target>>,
    next: usize,
    /// Whether this request already had its one hedge, or gave it up.
    pub(crate) hedged: bool,
    rng: SmallRng,
    /// Tokens reserved at admission, reconciled with the usage of the response.
    reservation: TokenReservation,
    /// The route's concurrency place, released with the response.
    slot: Option<ConcurrencyPermit>,
    attempts: Vec<AttemptRecord>,
    skipped: Vec<Skipped>,
    pub(crate) last: Option<AttemptError>,
    /// The earliest time a skipped target takes requests again.
    first_reopen: Option<Duration>,
    too_long: Option<TooLong>,
}

impl<'a> Serving<'a> {
    /// Starts serving a request admitted with `reservation` and `slot`, over `plan`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        route: &'a Route,
        request: &'a ChatRequest,
        context: &'a RequestContext,
        deadline: Deadline,
        needs: Needs,
        plan: Vec<Arc<Target>>,
        rng: SmallRng,
        reservation: TokenReservation,
        slot: Option<ConcurrencyPermit>,
    ) -> Self {
        Self {
            route,
            request,
            context,
            deadline,
            needs,
            plan,
            next: 0,
            hedged: false,
            rng,
            reservation,
            slot,
            attempts: Vec::new(),
            skipped: Vec::new(),
            last: None,
            first_reopen: None,
            too_long: None,
        }
    }

    pub(crate) async fn run(mut self) -> Result<EngineResponse, EngineError> {
        while let Some(charge) = self.next_target() {
            if let Some(result) = self.try_target(charge).await {
                return result;
            }
        }

        let retry_after = match &self.last {
            Some(error) => error.retry_after,
            None => self.first_reopen,
        };
        tracing::warn!(
            request_id = %self.context.request_id,
            route = %self.route.name,
            attempts = self.attempts.len(),
            skipped = self.skipped.len(),
            class = self.last.as_ref().map(|e| e.class.as_str()),
            "all targets failed"
        );
        Err(EngineError::Exhausted {
            last: self.last,
            attempts: self.attempts,
            skipped: self.skipped,
            retry_after,
        })
    }

    /// Takes the next target of the plan that can serve this request and charges its
    /// limits; targets passed over are recorded as skipped.
    pub(crate) fn next_target(&mut self) -> Option<Charge> {
        while self.next < self.plan.len() {
            let target = Arc::clone(&self.plan[self.next]);
            self.next += 1;
            match self.admit(&target) {
                Ok(quota) => {
                    return Some(Charge::taken(target, self.needs.estimated_tokens, quota));
                }
                Err(reason) => self.skip(&target, reason),
            }
        }
        None
    }

    /// Returns how far the request has gone through its plan.
    pub(crate) fn plan_mark(&self) -> PlanMark {
        PlanMark {
            next: self.next,
            skipped: self.skipped.len(),
            first_reopen: self.first_reopen,
        }
    }

    /// Goes back to `mark`, so that the targets taken or skipped since are considered
    /// again. Charges taken since must have been handed back.
    pub(crate) fn rewind(&mut self, mark: PlanMark) {
        self.next = mark.next;
        self.skipped.truncate(mark.skipped);
        self.first_reopen = mark.first_reopen;
    }

    /// Returns whether a target not yet taken could serve this request, judging by its
    /// model alone: limits and breakers are only asked when it is taken.
    pub(crate) fn has_candidate(&self) -> bool {
        self.plan[self.next..]
            .iter()
            .any(|target| self.suits(target).is_ok())
    }

    fn suits(&self, target: &Target) -> Result<(), SkipReason> {
        if let Some(reason) = ineligible(target, &self.needs, self.context.min_quality) {
            return Err(reason);
        }
        if self
            .too_long
            .as_ref()
            .is_some_and(|failed| failed.excludes(target))
        {
            return Err(SkipReason::ContextLengthExceeded);
        }
        Ok(())
    }

    /// Charges the target's limits for this request and returns what its reported
    /// quota counted down, or the reason it cannot take the request.
    fn admit(&mut self, target: &Target) -> Result<QuotaTaken, SkipReason> {
        self.suits(target)?;
        let tokens = self.needs.estimated_tokens;
        if let Some(limiter) = &target.limiter {
            let now = Ticks::now();
            if let Err(rejection) = limiter.check(tokens, now) {
                self.reopens_after(rejection.not_until.wait_from(now.instant()));
                return Err(SkipReason::RateLimited);
            }
        }
        let now = clock::now();
        let Some(taken) = target.quota.try_take(now, tokens) else {
            if let Some(resets_at) = target.quota.exhausted_until(now, tokens) {
                self.reopens_after(resets_at.saturating_duration_since(now));
            }
            if let Some(limiter) = &target.limiter {
                limiter.undo(tokens);
            }
            return Err(SkipReason::ProviderQuota);
        };
        Ok(taken)
    }

    fn skip(&mut self, target: &Target, reason: SkipReason) {
        tracing::debug!(
            request_id = %self.context.request_id,
            target = %target.id,
            reason = reason.as_str(),
            "skipping target"
        );
        self.skipped.push(Skipped {
            target: Arc::clone(&target.id),
            reason,
        });
    }

    fn reopens_after(&mut self, wait: Duration) {
        self.first_reopen = Some(self.first_reopen.map_or(wait, |w| w.min(wait)));
    }

    /// Asks the target's breaker for an attempt; an open breaker skips the target.
    pub(crate) fn breaker_guard(
        &mut self,
        target: &Arc<Target>,
        hedge: bool,
    ) -> Option<BreakerGuard> {
        let now = clock::now();
        match target.breaker.try_acquire(now) {
            Ok(permit) => {
                log_transition(target, permit.transition(), &self.context.request_id);
                let request_id = Arc::clone(&self.context.request_id);
                Some(BreakerGuard::new(
                    Arc::clone(target),
                    permit,
                    request_id,
                    hedge,
                ))
            }
            Err(rejected) => {
                log_transition(target, rejected.transition, &self.context.request_id);
                self.reopens_after(rejected.retry_at.saturating_duration_since(now));
                self.skip(target, SkipReason::CircuitOpen);
                None
            }
        }
    }

    /// Runs attempts on one target, with retries, until it responds, fails over or
    /// fails the request. Returns `None` to go on with the next target.
    async fn try_target(
        &mut self,
        mut charge: Charge,
    ) -> Option<Result<EngineResponse, EngineError>> {
        let target = Arc::clone(charge.target());
        let mut retries_done = 0;
        let ended = loop {
            if self.deadline.is_expired(Instant::now()) {
                break Some(Err(EngineError::DeadlineExceeded {
                    last: self.last.take(),
                    attempts: std::mem::take(&mut self.attempts),
                }));
            }
            let Some(guard) = self.breaker_guard(&target, false) else {
                break None;
            };

            charge.sent();
            let (error, may_retry) = match self.attempt(&target, guard).await {
                Ran::Own(Ok(success), elapsed) => {
                    self.record_success(&target, elapsed, false);
                    return Some(Ok(self.respond(charge, success)));
                }
                Ran::Hedge {
                    charge: winner,
                    success,
                    elapsed,
                    first_cancelled,
                } => {
                    if let Some(spent) = first_cancelled {
                        self.record_cancelled(&target, spent, false);
                    }
                    charge.ended();
                    self.record_success(winner.target(), elapsed, true);
                    return Some(Ok(self.respond(winner, success)));
                }
                Ran::Own(Err(error), elapsed) => {
                    self.record_failure(&target, &error, elapsed, false);
                    (error, true)
                }
                // Both attempts are recorded already, and two targets have failed this
                // request: the next target gets it at once.
                Ran::BothFailed(error) => (error, false),
            };
            if error.not_sent {
                charge.not_sent();
            }

            let failover = match self.route.recovery(&error) {
                Recovery::Fail => {
                    tracing::info!(
                        request_id = %self.context.request_id,
                        target = %target.id,
                        class = %error.class,
                        status = error.status,
                        "target rejected the request; not failing over"
                    );
                    break Some(Err(EngineError::Rejected {
                        error,
                        attempts: std::mem::take(&mut self.attempts),
                    }));
                }
                Recovery::Failover => Some("error is not retryable on this target"),
                Recovery::Retry if !may_retry => Some("the hedged attempt failed too"),
                Recovery::Retry => None,
            };
            if let Some(reason) = failover {
                log_failover(self.context, &target, &error, reason);
                self.last = Some(error);
                break None;
            }

            let remaining = self.deadline.remaining(Instant::now());
            let decision = self.route.retry.decide(
                retries_done,
                error.retry_after,
                Some(remaining),
                &mut self.rng,
            );
            let reason = match decision {
                RetryDecision::RetryAfter(_)
                    if !self.route.retry_budget.try_withdraw(clock::now()) =>
                {
                    "retry budget of the route used up"
                }
                RetryDecision::RetryAfter(delay) => {
                    tracing::info!(
                        request_id = %self.context.request_id,
                        target = %target.id,
                        class = %error.class,
                        status = error.status,
                        retry = retries_done + 1,
                        delay_ms = delay.as_millis() as u64,
                        "retrying target after backoff"
                    );
                    self.last = Some(error);
                    retries_done += 1;
                    // A client that leaves during the backoff drops this future with the
                    // charge marked as ended, so the estimate goes back.
                    charge.ended();
                    tokio::time::sleep(delay).await;
                    continue;
                }
                RetryDecision::Exhausted if self.route.retry.max_retries == 0 => {
                    "no retries configured (max_retries = 0)"
                }
                RetryDecision::Exhausted => "retries exhausted",
                RetryDecision::ServerDelayTooLong(_) => "server requested a delay over max_delay",
                RetryDecision::DeadlineTooClose(_) => "retry delay would pass the deadline",
            };
            log_failover(self.context, &target, &error, reason);
            self.last = Some(error);
            break None;
        };
        charge.ended();
        ended
    }

    pub(crate) fn record_success(&mut self, target: &Target, elapsed: Duration, hedge: bool) {
        let now = clock::now();
        target.latency.observe(elapsed, now);
        target
            .latencies
            .of(self.request.is_stream())
            .record(elapsed, now);
        if let Some(limiter) = &self.route.concurrency {
            if let Some(limit) = limiter.record_latency(elapsed, now) {
                self.log_limit(limit, "latency");
            }
        }
        self.attempts.push(AttemptRecord {
            target: Arc::clone(&target.id),
            class: None,
            status: Some(200),
            duration_ms: elapsed.as_millis() as u64,
            hedge,
            cancelled: false,
        });
    }

    pub(crate) fn record_failure(
        &mut self,
        target: &Target,
        error: &AttemptError,
        elapsed: Duration,
        hedge: bool,
    ) {
        if error.blames_target(hedge) {
            target.latency.observe_failure(clock::now());
        }
        let overload = matches!(
            error.class,
            ErrorClass::RateLimited | ErrorClass::Overloaded | ErrorClass::Timeout
        ) && !error.cut_by_deadline;
        if let Some(limiter) = self.route.concurrency.as_ref().filter(|_| overload) {
            if let Some(limit) = limiter.record_overload(clock::now()) {
                self.log_limit(limit, "overload error");
            }
        }
        if error.class == ErrorClass::ContextLength {
            // With a hedge, two models may fail this way; the larger window rules out more.
            let known = self.too_long.as_ref().and_then(|failed| failed.window);
            self.too_long = Some(TooLong {
                model: Arc::clone(&target.model.name),
                window: known.max(target.model.context_window),
            });
        }
        self.attempts.push(AttemptRecord {
            target: Arc::clone(&target.id),
            class: Some(error.class),
            status: error.status,
            duration_ms: elapsed.as_millis() as u64,
            hedge,
            cancelled: false,
        });
    }

    fn log_limit(&self, limit: u32, cause: &str) {
        tracing::debug!(
            route = %self.route.name,
            limit,
            cause,
            "adaptive concurrency limit moved"
        );
    }

    /// Records an attempt dropped because the other one responded first. A first attempt
    /// counts towards its target's percentiles with the time it ran, a lower bound:
    /// leaving slow attempts out would make the target look faster than it is. A hedge
    /// does not, because it was only cut short by a response elsewhere.
    pub(crate) fn record_cancelled(&mut self, target: &Target, elapsed: Duration, hedge: bool) {
        if !hedge {
            target
                .latencies
                .of(self.request.is_stream())
                .record(elapsed, clock::now());
        }
        self.attempts.push(AttemptRecord {
            target: Arc::clone(&target.id),
            class: None,
            status: None,
            duration_ms: elapsed.as_millis() as u64,
            hedge,
            cancelled: true,
        });
    }

    fn respond(&mut self, charge: Charge, success: AttemptSuccess) -> EngineResponse {
        let target = Arc::clone(charge.target());
        charge.keep(&mut self.reservation);
        let mut reservation = std::mem::take(&mut self.reservation);
        let body = match success {
            AttemptSuccess::Complete { bytes, usage } => {
                let actual = usage.map(|usage| usage.total_tokens);
                reservation.settle(actual, clock::now());
                ResponseBody::Complete { bytes, usage }
            }
            AttemptSuccess::Stream(mut stream) => {
                stream.settle_tokens_at_end(reservation);
                stream.hold_until_end(self.slot.take());
                ResponseBody::Stream(stream)
            }
        };
        EngineResponse {
            route: Arc::clone(&self.route.name),
            provider: Arc::clone(&target.endpoint.provider),
            region: target.endpoint.region.clone(),
            model: Arc::clone(&target.model.name),
            attempts: std::mem::take(&mut self.attempts),
            body,
        }
    }
}
