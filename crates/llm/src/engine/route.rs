//! Serving one request on a route: attempts in plan order, retries, failover.

use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::concurrency::ConcurrencyPermit;
use adpa_resilience::rate_limit::RateLimiter;
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
use crate::error::{AttemptError, ErrorClass};
use crate::request::ChatRequest;

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
        let started = Instant::now();
        let deadline = Deadline::after(started, self.timeouts.total_timeout);
        let needs = request.needs();

        // Rate limits first: a rejection there costs no queue place.
        let mut reservation = TokenReservation::new(needs.estimated_tokens);
        let route_scope = self
            .limiter
            .iter()
            .map(|limiter| ("route".to_owned(), Arc::clone(limiter)));
        let scopes: Vec<(String, Arc<RateLimiter>)> = context
            .limiters
            .iter()
            .cloned()
            .chain(route_scope)
            .collect();
        for (scope, limiter) in scopes {
            let now = started.into_std();
            if let Err(rejection) = limiter.check(needs.estimated_tokens, now) {
                let state = LimitState::of(&scope, &limiter, rejection, now);
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
            reservation.add(limiter);
        }

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

        // Held until the response ends; a stream takes it along.
        let slot = match &self.concurrency {
            Some(limiter) => {
                // The wait in the queue counts towards the request deadline.
                let remaining = deadline.remaining(Instant::now());
                let waited =
                    tokio::time::timeout(remaining, limiter.acquire(context.priority.rank()));
                match waited.await {
                    Ok(Ok(slot)) => Some(slot),
                    Ok(Err(reason)) => {
                        tracing::info!(
                            request_id = %context.request_id,
                            route = %self.name,
                            reason = ?reason,
                            "request rejected by the route's concurrency limit"
                        );
                        reservation.undo();
                        return Err(EngineError::Overloaded { reason });
                    }
                    Err(_) => {
                        reservation.undo();
                        return Err(EngineError::DeadlineExceeded {
                            last: None,
                            attempts: Vec::new(),
                        });
                    }
                }
            }
            None => None,
        };

        self.retry_budget.deposit(started.into_std());
        let mut attempts = Vec::new();
        let mut skipped = Vec::new();
        let mut last: Option<AttemptError> = None;
        let mut first_reopen: Option<Duration> = None;
        let mut too_long: Option<TooLong> = None;

        for target in self.plan(started.into_std(), &mut rng) {
            let skip = |reason: SkipReason, skipped: &mut Vec<Skipped>| {
                tracing::debug!(
                    request_id = %context.request_id,
                    target = %target.id,
                    reason = reason.as_str(),
                    "skipping target"
                );
                skipped.push(Skipped {
                    target: Arc::clone(&target.id),
                    reason,
                });
            };
            if let Some(reason) = ineligible(&target, &needs, context.min_quality) {
                skip(reason, &mut skipped);
                continue;
            }
            if too_long
                .as_ref()
                .is_some_and(|failed| failed.excludes(&target))
            {
                skip(SkipReason::ContextLengthExceeded, &mut skipped);
                continue;
            }
            if let Some(limiter) = &target.limiter {
                let now = Instant::now().into_std();
                if let Err(rejection) = limiter.check(needs.estimated_tokens, now) {
                    let wait = rejection.not_until.wait_from(now);
                    first_reopen = Some(first_reopen.map_or(wait, |w| w.min(wait)));
                    skip(SkipReason::RateLimited, &mut skipped);
                    continue;
                }
            }
            let now = Instant::now().into_std();
            if !target.quota.try_take(now) {
                if let Some(resets_at) = target.quota.exhausted_until(now) {
                    let wait = resets_at.saturating_duration_since(now);
                    first_reopen = Some(first_reopen.map_or(wait, |w| w.min(wait)));
                }
                if let Some(limiter) = &target.limiter {
                    limiter.undo(needs.estimated_tokens);
                }
                skip(SkipReason::ProviderQuota, &mut skipped);
                continue;
            }

            // The target's limit was charged once for this request: a request never sent
            // gives everything back, one that was sent gives back its token estimate.
            let mut attempted_here = false;
            let mut retries_done = 0;
            loop {
                let now = Instant::now();
                if deadline.is_expired(now) {
                    return Err(EngineError::DeadlineExceeded { last, attempts });
                }

                let permit = match target.breaker.try_acquire(now.into_std()) {
                    Ok(permit) => permit,
                    Err(rejected) => {
                        log_transition(&target, rejected.transition, &context.request_id);
                        let wait = rejected.retry_at.saturating_duration_since(now.into_std());
                        first_reopen = Some(first_reopen.map_or(wait, |w| w.min(wait)));
                        skip(SkipReason::CircuitOpen, &mut skipped);
                        break;
                    }
                };
                log_transition(&target, permit.transition(), &context.request_id);
                let guard =
                    BreakerGuard::new(Arc::clone(&target), permit, Arc::clone(&context.request_id));

                let attempt_started = Instant::now();
                let result = attempt::run(self, &target, request, deadline, guard).await;
                let elapsed = attempt_started.elapsed();
                let duration_ms = elapsed.as_millis() as u64;

                let error = match result {
                    Ok(success) => {
                        target.latency.observe(elapsed, Instant::now().into_std());
                        if let Some(limiter) = &target.limiter {
                            reservation.add(Arc::clone(limiter));
                        }
                        attempts.push(AttemptRecord {
                            target: Arc::clone(&target.id),
                            class: None,
                            status: Some(200),
                            duration_ms,
                        });
                        return Ok(self.respond(&target, attempts, success, reservation, slot));
                    }
                    Err(error) => error,
                };

                if error.class.counts_against_target() {
                    target.latency.observe_failure(Instant::now().into_std());
                }
                attempted_here = true;
                attempts.push(AttemptRecord {
                    target: Arc::clone(&target.id),
                    class: Some(error.class),
                    status: error.status,
                    duration_ms,
                });

                match self.recovery(&error) {
                    Recovery::Fail => {
                        tracing::info!(
                            request_id = %context.request_id,
                            target = %target.id,
                            class = %error.class,
                            status = error.status,
                            "target rejected the request; not failing over"
                        );
                        return Err(EngineError::Rejected { error, attempts });
                    }
                    Recovery::Failover => {
                        if error.class == ErrorClass::ContextLength {
                            too_long = Some(TooLong {
                                model: Arc::clone(&target.model.name),
                                window: target.model.context_window,
                            });
                        }
                        log_failover(
                            context,
                            &target,
                            &error,
                            "error is not retryable on this target",
                        );
                        last = Some(error);
                        break;
                    }
                    Recovery::Retry => {}
                }

                let remaining = deadline.remaining(Instant::now());
                let decision =
                    self.retry
                        .decide(retries_done, error.retry_after, Some(remaining), &mut rng);
                let reason = match decision {
                    RetryDecision::RetryAfter(_)
                        if !self.retry_budget.try_withdraw(Instant::now().into_std()) =>
                    {
                        "retry budget of the route used up"
                    }
                    RetryDecision::RetryAfter(delay) => {
                        tracing::info!(
                            request_id = %context.request_id,
                            target = %target.id,
                            class = %error.class,
                            status = error.status,
                            retry = retries_done + 1,
                            delay_ms = delay.as_millis() as u64,
                            "retrying target after backoff"
                        );
                        last = Some(error);
                        retries_done += 1;
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    RetryDecision::Exhausted if self.retry.max_retries == 0 => {
                        "no retries configured (max_retries = 0)"
                    }
                    RetryDecision::Exhausted => "retries exhausted",
                    RetryDecision::ServerDelayTooLong(_) => {
                        "server requested a delay over max_delay"
                    }
                    RetryDecision::DeadlineTooClose(_) => "retry delay would pass the deadline",
                };
                log_failover(context, &target, &error, reason);
                last = Some(error);
                break;
            }

            if let Some(limiter) = &target.limiter {
                if attempted_here {
                    TokenReservation::release(
                        limiter,
                        needs.estimated_tokens,
                        Instant::now().into_std(),
                    );
                } else {
                    limiter.undo(needs.estimated_tokens);
                }
            }
        }

        let retry_after = match &last {
            Some(error) => error.retry_after,
            None => first_reopen,
        };
        tracing::warn!(
            request_id = %context.request_id,
            route = %self.name,
            attempts = attempts.len(),
            skipped = skipped.len(),
            class = last.as_ref().map(|e| e.class.as_str()),
            "all targets failed"
        );
        Err(EngineError::Exhausted {
            last,
            attempts,
            skipped,
            retry_after,
        })
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

    fn respond(
        &self,
        target: &Target,
        attempts: Vec<AttemptRecord>,
        success: AttemptSuccess,
        mut reservation: TokenReservation,
        slot: Option<ConcurrencyPermit>,
    ) -> EngineResponse {
        let body = match success {
            AttemptSuccess::Complete { bytes, usage } => {
                let actual = usage.map(|usage| usage.total_tokens);
                reservation.settle(actual, Instant::now().into_std());
                ResponseBody::Complete { bytes, usage }
            }
            AttemptSuccess::Stream(mut stream) => {
                stream.settle_tokens_at_end(reservation);
                stream.hold_until_end(slot);
                ResponseBody::Stream(stream)
            }
        };
        EngineResponse {
            route: Arc::clone(&self.name),
            provider: Arc::clone(&target.endpoint.provider),
            region: target.endpoint.region.clone(),
            model: Arc::clone(&target.model.name),
            attempts,
            body,
        }
    }
}
