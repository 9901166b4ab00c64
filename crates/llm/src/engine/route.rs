//! Admission of one request on a route: rate limits, load shedding and the
//! concurrency limit, before [`Serving`] takes it through the targets.

use std::sync::Arc;

use adpa_resilience::clock::{self, Ticks};
use adpa_resilience::concurrency::ConcurrencyPermit;
use adpa_resilience::Deadline;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::limits::{LimitState, TokenReservation};
use super::serving::Serving;
use super::{recovery_for, EngineError, EngineResponse, Recovery, RequestContext, Route};
use crate::error::{AttemptError, ErrorClass};
use crate::request::{ChatRequest, Needs};

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
                return Err(EngineError::Shed { load });
            }
        }

        // Until it is committed, the reservation gives its requests and tokens back when
        // dropped: on a rejection here, or when a client leaves while queued.
        let slot = self.acquire_slot(context, deadline).await?;
        reservation.commit();

        // Limits, budgets and breakers read the time-stamp counter clock; deadlines and
        // sleeps are on tokio's.
        let now = clock::now();
        self.retry_budget.deposit(now);
        let plan = self.plan(now, &mut rng);
        Serving::new(
            self,
            request,
            context,
            deadline,
            needs,
            plan,
            rng,
            reservation,
            slot,
        )
        .run()
        .await
    }

    /// Checks the caller's limits and the route's own, and returns the tokens they
    /// reserved. On a rejection the uncommitted reservation is dropped, which gives back
    /// what earlier scopes took.
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
    pub(crate) fn recovery(&self, error: &AttemptError) -> Recovery {
        match error.class {
            ErrorClass::ContentFilter if self.failover_on_content_filter => Recovery::Failover,
            // Without a status the target never saw the request: the gateway could not
            // express it in this target's format, and another target may take it.
            ErrorClass::InvalidRequest if error.status.is_none() => Recovery::Failover,
            _ => recovery_for(error.class),
        }
    }
}
