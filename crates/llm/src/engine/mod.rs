//! The routing engine: expands a route into targets, runs attempts through each
//! target's circuit breaker and timeouts, classifies failures, and retries or fails
//! over until a target responds or the request deadline passes.

mod attempt;
mod body;
mod build;
mod outcome;
mod strategy;
mod stream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::circuit_breaker::{Outcome, Transition};
use adpa_resilience::{CircuitBreaker, Deadline, RetryConfig, RetryDecision, TimeoutConfig};
use http::HeaderValue;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::config::{FailoverPolicy, ProviderKind};
use crate::error::AttemptError;
use crate::http::HttpClient;
use crate::request::ChatRequest;

use attempt::AttemptSuccess;
pub use outcome::{AttemptRecord, EngineError, EngineResponse, ResponseBody};
pub use strategy::{recovery_for, Recovery};
pub use stream::ChatStream;

/// Per-request values the caller supplies.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The id that logs and error bodies carry.
    pub request_id: Arc<str>,
}

/// The engine built from a config: routes, their targets and the upstream clients.
///
/// # Thread safety
///
/// Shared between tasks behind an `Arc`; `execute` takes `&self`.
#[derive(Debug)]
pub struct Engine {
    routes: indexmap::IndexMap<String, Arc<Route>>,
}

/// A route with its targets in configured order.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) targets: Vec<Arc<Target>>,
    pub(crate) failover_policy: FailoverPolicy,
    pub(crate) retry: RetryConfig,
    pub(crate) timeouts: TimeoutConfig,
    pub(crate) client: HttpClient,
    /// Created for a model a provider lists, not written as a route.
    pub(crate) implicit: bool,
    next_start: AtomicUsize,
}

/// One provider × model, with its own circuit breaker.
#[derive(Debug)]
pub(crate) struct Target {
    /// `provider/model`, as logs and error bodies name it.
    pub(crate) id: Arc<str>,
    pub(crate) provider: Arc<Provider>,
    pub(crate) model: Arc<str>,
    pub(crate) breaker: CircuitBreaker,
}

/// A provider's endpoint and credentials.
pub(crate) struct Provider {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ProviderKind,
    pub(crate) chat_url: http::Uri,
    /// `Bearer <key>`, marked sensitive so hyper never logs it.
    pub(crate) authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("chat_url", &self.chat_url)
            .finish_non_exhaustive()
    }
}

/// A route as the models endpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The name clients send as `model`.
    pub name: String,
    /// Targets as `provider/model`, in configured order.
    pub targets: Vec<String>,
    /// Created for a model a provider lists rather than written as a route.
    pub implicit: bool,
}

impl Engine {
    /// Returns every route, written ones first, in config order.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.routes
            .values()
            .map(|route| RouteInfo {
                name: route.name.to_string(),
                targets: route.targets.iter().map(|t| t.id.to_string()).collect(),
                implicit: route.implicit,
            })
            .collect()
    }

    /// Serves one chat completion request: routing, attempts, retries and failover.
    ///
    /// # Errors
    ///
    /// Returns [`EngineError`] when the route is unknown, a target rejected the request
    /// as invalid, every target failed, or the deadline passed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the upstream request in flight and frees any
    /// half-open probe slot it held.
    pub async fn execute(
        &self,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Result<EngineResponse, EngineError> {
        let Some(route) = self.routes.get(request.model()) else {
            return Err(EngineError::UnknownRoute {
                requested: request.model().to_owned(),
                available: self.routes.keys().cloned().collect(),
            });
        };
        route.execute(request, context).await
    }
}

impl Route {
    /// Returns the targets in the order this request tries them.
    fn ordered_targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        let start = match self.failover_policy {
            FailoverPolicy::Sequential => 0,
            FailoverPolicy::RoundRobin => {
                self.next_start.fetch_add(1, Ordering::Relaxed) % self.targets.len().max(1)
            }
        };
        self.targets[start..].iter().chain(&self.targets[..start])
    }

    async fn execute(
        &self,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Result<EngineResponse, EngineError> {
        let deadline = Deadline::after(Instant::now(), self.timeouts.total_timeout);
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut attempts = Vec::new();
        let mut skipped = Vec::new();
        let mut last: Option<AttemptError> = None;
        let mut first_reopen: Option<Duration> = None;

        for target in self.ordered_targets() {
            let mut retries_done = 0;
            loop {
                let now = Instant::now();
                if deadline.is_expired(now) {
                    return Err(EngineError::DeadlineExceeded { last, attempts });
                }

                let permit = match target.breaker.try_acquire(now.into_std()) {
                    Ok(permit) => permit,
                    Err(rejected) => {
                        log_transition(target, rejected.transition, &context.request_id);
                        let wait = rejected.retry_at.saturating_duration_since(now.into_std());
                        first_reopen = Some(first_reopen.map_or(wait, |w| w.min(wait)));
                        tracing::debug!(
                            request_id = %context.request_id,
                            target = %target.id,
                            "skipping target: circuit breaker open"
                        );
                        skipped.push(Arc::clone(&target.id));
                        break;
                    }
                };
                log_transition(target, permit.transition(), &context.request_id);
                let guard =
                    BreakerGuard::new(Arc::clone(target), permit, Arc::clone(&context.request_id));

                let started = Instant::now();
                let result = attempt::run(self, target, request, deadline, guard).await;
                let duration_ms = started.elapsed().as_millis() as u64;

                let error = match result {
                    Ok(success) => {
                        attempts.push(AttemptRecord {
                            target: Arc::clone(&target.id),
                            class: None,
                            status: Some(200),
                            duration_ms,
                        });
                        return Ok(self.respond(target, attempts, success));
                    }
                    Err(error) => error,
                };

                attempts.push(AttemptRecord {
                    target: Arc::clone(&target.id),
                    class: Some(error.class),
                    status: error.status,
                    duration_ms,
                });

                match recovery_for(error.class) {
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
                        log_failover(
                            context,
                            target,
                            &error,
                            "error is not retryable on this target",
                        );
                        last = Some(error);
                        break;
                    }
                    Recovery::Retry => {}
                }

                let remaining = deadline.remaining(Instant::now());
                match self
                    .retry
                    .decide(retries_done, error.retry_after, Some(remaining), &mut rng)
                {
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
                    }
                    RetryDecision::Exhausted => {
                        log_failover(context, target, &error, "retries exhausted");
                        last = Some(error);
                        break;
                    }
                    RetryDecision::ServerDelayTooLong(_) => {
                        log_failover(
                            context,
                            target,
                            &error,
                            "server asked for a delay over max_delay",
                        );
                        last = Some(error);
                        break;
                    }
                    RetryDecision::DeadlineTooClose(_) => {
                        log_failover(
                            context,
                            target,
                            &error,
                            "retry delay would pass the deadline",
                        );
                        last = Some(error);
                        break;
                    }
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

    fn respond(
        &self,
        target: &Target,
        attempts: Vec<AttemptRecord>,
        success: AttemptSuccess,
    ) -> EngineResponse {
        let body = match success {
            AttemptSuccess::Complete { bytes, usage } => ResponseBody::Complete { bytes, usage },
            AttemptSuccess::Stream(stream) => ResponseBody::Stream(stream),
        };
        EngineResponse {
            route: Arc::clone(&self.name),
            provider: Arc::clone(&target.provider.name),
            model: Arc::clone(&target.model),
            attempts,
            body,
        }
    }
}

fn log_failover(context: &RequestContext, target: &Target, error: &AttemptError, reason: &str) {
    tracing::warn!(
        request_id = %context.request_id,
        target = %target.id,
        class = %error.class,
        status = error.status,
        error = %error.message,
        reason,
        "attempt failed; failing over"
    );
}

pub(crate) fn log_transition(target: &Target, transition: Option<Transition>, request_id: &str) {
    let Some(transition) = transition else {
        return;
    };
    let cause = format!("{:?}", transition.cause);
    match transition.to {
        adpa_resilience::circuit_breaker::State::Open => tracing::warn!(
            request_id,
            target = %target.id,
            from = %transition.from,
            to = %transition.to,
            cause,
            "circuit breaker opened"
        ),
        _ => tracing::info!(
            request_id,
            target = %target.id,
            from = %transition.from,
            to = %transition.to,
            cause,
            "circuit breaker state changed"
        ),
    }
}

/// Holds a target's breaker permit for one attempt and hands it back exactly once: with
/// the outcome when the attempt ends, or as cancelled when it is dropped first.
#[derive(Debug)]
pub(crate) struct BreakerGuard {
    target: Arc<Target>,
    permit: Option<adpa_resilience::circuit_breaker::Permit>,
    request_id: Arc<str>,
}

impl BreakerGuard {
    fn new(
        target: Arc<Target>,
        permit: adpa_resilience::circuit_breaker::Permit,
        request_id: Arc<str>,
    ) -> Self {
        Self {
            target,
            permit: Some(permit),
            request_id,
        }
    }

    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    pub(crate) fn request_id(&self) -> &Arc<str> {
        &self.request_id
    }

    /// Records the attempt's outcome.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            let now = Instant::now().into_std();
            let transition = self.target.breaker.record(permit, outcome, now);
            log_transition(&self.target, transition, &self.request_id);
        }
    }

    /// Records the success of a half-open probe once its stream delivered content, so
    /// that a long stream does not overrun `half_open_timeout`. A later failure of that
    /// stream is then not counted. Other permits stay until the stream ends.
    pub(crate) fn stream_started(&mut self) {
        if self.permit.as_ref().is_some_and(|permit| permit.is_probe()) {
            self.finish(Outcome::Success);
        }
    }

    /// Records a failure by its class.
    pub(crate) fn fail(&mut self, error: &AttemptError) {
        let outcome = if error.class.counts_against_target() {
            Outcome::Failure
        } else {
            Outcome::Ignored
        };
        self.finish(outcome);
    }
}

impl Drop for BreakerGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.target.breaker.release(permit);
        }
    }
}
