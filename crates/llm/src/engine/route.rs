//! Serving one request on a route: admission, then attempts in plan order with retries,
//! failover and at most one hedged attempt.

use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::clock::{self, Ticks};
use adpa_resilience::concurrency::ConcurrencyPermit;
use adpa_resilience::{Deadline, RetryDecision};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::attempt::{self, AttemptSuccess};
use super::limits::{LimitState, TokenReservation};
use super::plan::{ineligible, SkipReason, Skipped};
use super::{
    log_failover, log_transition, recovery_for, AttemptRecord, BreakerGuard, EngineError,
    EngineResponse, Recovery, RequestContext, ResponseBody, Route, Target,
};
use crate::config::HedgeDelay;
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

impl Route {
    pub(crate) async fn execute(
        &self,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Result<EngineResponse, EngineError> {
        let deadline = Deadline::after(Instant::now(), self.timeouts.total_timeout);
        let needs = request.needs();

        // Rate limits first: a rejection there costs no queue place.
        let mut reservation = self.check_rate_limits(&needs, context)?;

        let mut rng = SmallRng::from_rng(&mut rand::rng());
        if let (Some(shedder), Some(limiter)) = (&self.shedder, &self.concurrency) {
            let load = limiter.load();
            if shedder.should_shed(load, context.priority.rank(), &mut rng) {
                tracing::info!(
                    request_id = %context.request_id,
                    route = %self.name,
                    load,
                    priority = ?context.priority,
                    "request shed"
                );
                reservation.undo();
                return Err(EngineError::Shed { load });
            }
        }

        let slot = match self.acquire_slot(context, deadline).await {
            Ok(slot) => slot,
            Err(error) => {
                reservation.undo();
                return Err(error);
            }
        };

        // Limits, budgets and breakers read the time-stamp counter clock; deadlines and
        // sleeps are on tokio's.
        let now = clock::now();
        self.retry_budget.deposit(now);
        let plan = self.plan(now, &mut rng);
        let serving = Serving {
            route: self,
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
        };
        serving.run().await
    }

    /// Checks the caller's limits and the route's own, and returns the tokens they
    /// reserved. A rejection gives back what earlier scopes took.
    fn check_rate_limits(
        &self,
        needs: &Needs,
        context: &RequestContext,
    ) -> Result<TokenReservation, EngineError> {
        let now = Ticks::now();
        let mut reservation = TokenReservation::new(needs.estimated_tokens);
        let route_scope = self.limiter.iter().map(|limiter| ("route", limiter));
        let scopes = context
            .limiters
            .iter()
            .map(|(scope, limiter)| (scope.as_str(), limiter))
            .chain(route_scope);
        for (scope, limiter) in scopes {
            if let Err(rejection) = limiter.check(needs.estimated_tokens, now) {
                let state = LimitState::of(scope, limiter, rejection, now.instant());
                tracing::info!(
                    request_id = %context.request_id,
                    route = %self.name,
                    scope = %scope,
                    retry_after_ms = state.retry_after.as_millis() as u64,
                    "rate limit reached"
                );
                reservation.undo();
                return Err(EngineError::RateLimited { state });
            }
            reservation.add(Arc::clone(limiter));
        }
        Ok(reservation)
    }

    /// Waits for a place under the route's concurrency limit, if it has one. The place is
    /// held until the response ends; a stream takes it along. The wait counts towards
    /// the request deadline.
    async fn acquire_slot(
        &self,
        context: &RequestContext,
        deadline: Deadline,
    ) -> Result<Option<ConcurrencyPermit>, EngineError> {
        let Some(limiter) = &self.concurrency else {
            return Ok(None);
        };
        let remaining = deadline.remaining(Instant::now());
        let waited = tokio::time::timeout(remaining, limiter.acquire(context.priority.rank()));
        match waited.await {
            Ok(Ok(slot)) => Ok(Some(slot)),
            Ok(Err(reason)) => {
                tracing::info!(
                    request_id = %context.request_id,
                    route = %self.name,
                    reason = ?reason,
                    "request rejected by the route's concurrency limit"
                );
                Err(EngineError::Overloaded { reason })
            }
            Err(_) => Err(EngineError::DeadlineExceeded {
                last: None,
                attempts: Vec::new(),
            }),
        }
    }

    /// Returns the recovery for an error on this route.
    fn recovery(&self, error: &AttemptError) -> Recovery {
        match error.class {
            ErrorClass::ContentFilter if self.failover_on_content_filter => Recovery::Failover,
            // Without a status the target never saw the request: the gateway could not
            // express it in this target's format, and another target may take it.
            ErrorClass::InvalidRequest if error.status.is_none() => Recovery::Failover,
            _ => recovery_for(error.class),
        }
    }
}

/// One admitted request on its way through the route's targets.
struct Serving<'a> {
    route: &'a Route,
    request: &'a ChatRequest,
    context: &'a RequestContext,
    deadline: Deadline,
    needs: Needs,
    /// Targets in the order this request tries them; `next` is the first not yet taken.
    plan: Vec<Arc<Target>>,
    next: usize,
    /// Whether this request already had its one hedge, or gave it up.
    hedged: bool,
    rng: SmallRng,
    /// Tokens reserved at admission, reconciled with the usage of the response.
    reservation: TokenReservation,
    /// The route's concurrency place, released with the response.
    slot: Option<ConcurrencyPermit>,
    attempts: Vec<AttemptRecord>,
    skipped: Vec<Skipped>,
    last: Option<AttemptError>,
    /// The earliest time a skipped target takes requests again.
    first_reopen: Option<Duration>,
    too_long: Option<TooLong>,
}

/// How an attempt on a target ended.
enum Ran {
    /// The attempt itself ended, after `Duration`.
    Own(Result<AttemptSuccess, AttemptError>, Duration),
    /// A hedged attempt on another target answered first.
    Hedge {
        target: Arc<Target>,
        success: AttemptSuccess,
        elapsed: Duration,
        /// The first attempt: cancelled, or failed before the hedge answered.
        first: FirstAttempt,
    },
}

/// The fate of the first attempt when its hedge won.
enum FirstAttempt {
    Cancelled(Duration),
    Failed(AttemptError, Duration),
}

impl Serving<'_> {
    async fn run(mut self) -> Result<EngineResponse, EngineError> {
        while let Some(target) = self.next_target() {
            if let Some(result) = self.try_target(&target).await {
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
    /// provider limits; targets passed over are recorded as skipped. The caller hands
    /// the charge back with [`Serving::release`] or keeps it with the response.
    fn next_target(&mut self) -> Option<Arc<Target>> {
        while self.next < self.plan.len() {
            let target = Arc::clone(&self.plan[self.next]);
            self.next += 1;
            match self.admit(&target) {
                Ok(()) => return Some(target),
                Err(reason) => self.skip(&target, reason),
            }
        }
        None
    }

    fn admit(&mut self, target: &Target) -> Result<(), SkipReason> {
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
        let tokens = self.needs.estimated_tokens;
        if let Some(limiter) = &target.limiter {
            let now = Ticks::now();
            if let Err(rejection) = limiter.check(tokens, now) {
                self.reopens_after(rejection.not_until.wait_from(now.instant()));
                return Err(SkipReason::RateLimited);
            }
        }
        let now = clock::now();
        if !target.quota.try_take(now, tokens) {
            if let Some(resets_at) = target.quota.exhausted_until(now, tokens) {
                self.reopens_after(resets_at.saturating_duration_since(now));
            }
            if let Some(limiter) = &target.limiter {
                limiter.undo(tokens);
            }
            return Err(SkipReason::ProviderQuota);
        }
        Ok(())
    }

    /// Hands back the provider limit a target was charged for this request: all of it
    /// when the request was never sent, the token estimate when it was.
    fn release(&self, target: &Target, attempted: bool) {
        let Some(limiter) = &target.limiter else {
            return;
        };
        let tokens = self.needs.estimated_tokens;
        if attempted {
            TokenReservation::release(limiter, tokens, clock::now());
        } else {
            limiter.undo(tokens);
        }
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
    fn breaker_guard(&mut self, target: &Arc<Target>) -> Option<BreakerGuard> {
        let now = clock::now();
        match target.breaker.try_acquire(now) {
            Ok(permit) => {
                log_transition(target, permit.transition(), &self.context.request_id);
                let request_id = Arc::clone(&self.context.request_id);
                Some(BreakerGuard::new(Arc::clone(target), permit, request_id))
            }
            Err(rejected) => {
                log_transition(target, rejected.transition, &self.context.request_id);
                self.reopens_after(rejected.retry_at.saturating_duration_since(now));
                self.skip(target, SkipReason::CircuitOpen);
                None
            }
        }
    }

    /// Runs attempts on one target, with retries, until it answers, fails over or
    /// fails the request. Returns `None` to go on with the next target.
    async fn try_target(
        &mut self,
        target: &Arc<Target>,
    ) -> Option<Result<EngineResponse, EngineError>> {
        let mut attempted = false;
        let mut retries_done = 0;
        let ended = loop {
            if self.deadline.is_expired(Instant::now()) {
                break Some(Err(EngineError::DeadlineExceeded {
                    last: self.last.take(),
                    attempts: std::mem::take(&mut self.attempts),
                }));
            }
            let Some(guard) = self.breaker_guard(target) else {
                break None;
            };

            attempted = true;
            let error = match self.attempt(target, guard).await {
                Ran::Own(Ok(success), elapsed) => {
                    self.record_success(target, elapsed, false);
                    return Some(Ok(self.respond(target, success)));
                }
                Ran::Hedge {
                    target: winner,
                    success,
                    elapsed,
                    first,
                } => {
                    match first {
                        FirstAttempt::Cancelled(spent) => {
                            self.record_cancelled(target, spent, false)
                        }
                        FirstAttempt::Failed(error, spent) => {
                            self.record_failure(target, &error, spent, false);
                        }
                    }
                    self.release(target, true);
                    self.record_success(&winner, elapsed, true);
                    return Some(Ok(self.respond(&winner, success)));
                }
                Ran::Own(Err(error), elapsed) => {
                    self.record_failure(target, &error, elapsed, false);
                    error
                }
            };

            match self.route.recovery(&error) {
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
                Recovery::Failover => {
                    log_failover(
                        self.context,
                        target,
                        &error,
                        "error is not retryable on this target",
                    );
                    self.last = Some(error);
                    break None;
                }
                Recovery::Retry => {}
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
            log_failover(self.context, target, &error, reason);
            self.last = Some(error);
            break None;
        };
        self.release(target, attempted);
        ended
    }

    /// Runs one attempt on `target`. When the route hedges and the attempt has not
    /// answered within the hedge delay, starts one attempt on the next target and
    /// returns whichever answers first; the other is dropped, which closes its upstream
    /// connection.
    async fn attempt(&mut self, target: &Arc<Target>, guard: BreakerGuard) -> Ran {
        let (route, request, deadline) = (self.route, self.request, self.deadline);
        let started = Instant::now();
        let first = attempt::run(route, target, request, deadline, guard);
        let Some(delay) = self.hedge_delay(target) else {
            let result = first.await;
            return Ran::Own(result, started.elapsed());
        };

        tokio::pin!(first);
        tokio::select! {
            biased;
            result = &mut first => return Ran::Own(result, started.elapsed()),
            () = tokio::time::sleep_until(started + delay) => {}
        }
        let Some((hedge_target, hedge_guard)) = self.start_hedge(target, delay) else {
            let result = first.await;
            return Ran::Own(result, started.elapsed());
        };

        let hedge_started = Instant::now();
        let hedge = attempt::run(route, &hedge_target, request, deadline, hedge_guard);
        tokio::pin!(hedge);
        let mut first_failed: Option<(AttemptError, Duration)> = None;
        let mut hedge_running = true;
        loop {
            tokio::select! {
                result = &mut first, if first_failed.is_none() => {
                    let elapsed = started.elapsed();
                    match result {
                        Ok(success) => {
                            if hedge_running {
                                self.record_cancelled(&hedge_target, hedge_started.elapsed(), true);
                            }
                            self.release(&hedge_target, true);
                            return Ran::Own(Ok(success), elapsed);
                        }
                        Err(error) if !hedge_running => return Ran::Own(Err(error), elapsed),
                        Err(error) => first_failed = Some((error, elapsed)),
                    }
                }
                result = &mut hedge, if hedge_running => {
                    hedge_running = false;
                    let elapsed = hedge_started.elapsed();
                    match result {
                        Ok(success) => {
                            let first = match first_failed {
                                Some((error, spent)) => FirstAttempt::Failed(error, spent),
                                None => FirstAttempt::Cancelled(started.elapsed()),
                            };
                            return Ran::Hedge {
                                target: Arc::clone(&hedge_target),
                                success,
                                elapsed,
                                first,
                            };
                        }
                        Err(error) => {
                            self.record_failure(&hedge_target, &error, elapsed, true);
                            log_failover(
                                self.context,
                                &hedge_target,
                                &error,
                                "hedged attempt failed; waiting for the first attempt",
                            );
                            self.last = Some(error);
                            if let Some((error, spent)) = first_failed.take() {
                                return Ran::Own(Err(error), spent);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Returns how long an attempt on `target` may run before a hedge starts, or `None`
    /// when this request does not hedge (any more).
    fn hedge_delay(&self, target: &Target) -> Option<Duration> {
        if self.hedged || self.next >= self.plan.len() {
            return None;
        }
        match self.route.hedge_delay? {
            HedgeDelay::Fixed(delay) => Some(delay),
            HedgeDelay::Percentile(percent) => {
                target.latencies.quantile(percent / 100.0, clock::now())
            }
        }
    }

    /// Takes the next target that admits an attempt, and a withdrawal from the retry
    /// budget for it. A request gets one try at this, whatever its result.
    fn start_hedge(
        &mut self,
        hedged: &Target,
        delay: Duration,
    ) -> Option<(Arc<Target>, BreakerGuard)> {
        self.hedged = true;
        if !self.route.retry_budget.try_withdraw(clock::now()) {
            tracing::debug!(
                request_id = %self.context.request_id,
                target = %hedged.id,
                "no hedge: the retry budget of the route is used up"
            );
            return None;
        }
        while let Some(target) = self.next_target() {
            if let Some(guard) = self.breaker_guard(&target) {
                tracing::info!(
                    request_id = %self.context.request_id,
                    target = %hedged.id,
                    hedge = %target.id,
                    delay_ms = delay.as_millis() as u64,
                    "no answer within the hedge delay; starting a hedged attempt"
                );
                return Some((target, guard));
            }
            self.release(&target, false);
        }
        None
    }

    fn record_success(&mut self, target: &Target, elapsed: Duration, hedge: bool) {
        let now = clock::now();
        target.latency.observe(elapsed, now);
        target.latencies.record(elapsed, now);
        if let Some(limiter) = &self.route.concurrency {
            limiter.record_latency(elapsed, now);
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

    fn record_failure(
        &mut self,
        target: &Target,
        error: &AttemptError,
        elapsed: Duration,
        hedge: bool,
    ) {
        if error.class.counts_against_target() {
            target.latency.observe_failure(clock::now());
        }
        let overload = matches!(
            error.class,
            ErrorClass::RateLimited | ErrorClass::Overloaded | ErrorClass::Timeout
        );
        if let Some(limiter) = self.route.concurrency.as_ref().filter(|_| overload) {
            limiter.record_overload(clock::now());
        }
        if error.class == ErrorClass::ContextLength {
            self.too_long = Some(TooLong {
                model: Arc::clone(&target.model.name),
                window: target.model.context_window,
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

    /// Records an attempt dropped because the other one answered first. Its latency
    /// counts towards the target's percentiles as a lower bound: leaving slow attempts
    /// out would make the target look faster than it is.
    fn record_cancelled(&mut self, target: &Target, elapsed: Duration, hedge: bool) {
        target.latencies.record(elapsed, clock::now());
        self.attempts.push(AttemptRecord {
            target: Arc::clone(&target.id),
            class: None,
            status: None,
            duration_ms: elapsed.as_millis() as u64,
            hedge,
            cancelled: true,
        });
    }

    fn respond(&mut self, target: &Target, success: AttemptSuccess) -> EngineResponse {
        if let Some(limiter) = &target.limiter {
            self.reservation.add(Arc::clone(limiter));
        }
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
