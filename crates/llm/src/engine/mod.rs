//! The routing engine: expands a route into targets, runs attempts through each
//! target's circuit breaker and timeouts, classifies failures, and retries or fails
//! over until a target responds or the request deadline passes.

mod attempt;
mod body;
mod build;
mod charge;
mod explain;
mod hedge;
mod limits;
mod outcome;
mod plan;
mod quota;
mod route;
mod serving;
mod strategy;
mod stream;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use adpa_resilience::circuit_breaker::{Outcome, Transition};
use adpa_resilience::concurrency::ConcurrencyLimiter;
use adpa_resilience::latency::{LatencyHistogram, PeakEwma};
use adpa_resilience::load_shed::LoadShedder;
use adpa_resilience::rate_limit::RateLimiter;
use adpa_resilience::retry::RetryBudget;
use adpa_resilience::{CircuitBreaker, RetryConfig, TimeoutConfig};
use http::HeaderValue;

use crate::config::{FailoverPolicy, HedgeDelay, ProviderKind, RegionStrategy, TargetOrder};
use crate::error::AttemptError;
use crate::http::HttpClient;
use crate::request::ChatRequest;

pub use limits::LimitState;
pub use outcome::{AttemptRecord, EngineError, EngineResponse, ResponseBody};
pub use plan::{SkipReason, Skipped};
pub use strategy::{recovery_for, Recovery};
pub use stream::ChatStream;

/// Per-request values the caller supplies.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The id that logs and error bodies carry.
    pub request_id: Arc<str>,
    /// The lowest model weight the client accepts (`x-adpa-min-quality`).
    pub min_quality: Option<f64>,
    /// Priority in the concurrency queue: higher is served first.
    pub priority: Priority,
    /// Limits the caller applies besides the route's own, by scope name (`global`,
    /// `key NAME`): checked before routing, and reconciled with token usage like the
    /// route's.
    pub limiters: Vec<(String, Arc<RateLimiter>)>,
}

/// A request's priority class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Served after every other class.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Served first.
    High,
}

impl Priority {
    /// Parses `low`, `normal` or `high`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    pub(crate) fn rank(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::High => 2,
        }
    }
}

impl RequestContext {
    /// Creates a context with an id and no other constraints.
    pub fn new(request_id: impl Into<Arc<str>>) -> Self {
        Self {
            request_id: request_id.into(),
            min_quality: None,
            priority: Priority::Normal,
            limiters: Vec::new(),
        }
    }
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

/// A route: its models and providers, from which each request's targets are planned.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// Models by descending weight.
    pub(crate) models: Vec<Arc<ModelSpec>>,
    /// Providers in route order: primary, then secondaries.
    pub(crate) providers: Vec<RouteProvider>,
    /// Weight of each provider, by index, for `failover_policy = "weighted"`.
    pub(crate) provider_weights: Vec<f64>,
    pub(crate) failover_policy: FailoverPolicy,
    pub(crate) order: TargetOrder,
    pub(crate) failover_on_content_filter: bool,
    pub(crate) retry: RetryConfig,
    pub(crate) timeouts: TimeoutConfig,
    pub(crate) client: HttpClient,
    /// Created for a model a provider lists, not written as a route.
    pub(crate) implicit: bool,
    pub(crate) target_count: usize,
    /// The route's own rate limit, checked before routing.
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Caps retries across all targets to a share of recent requests.
    pub(crate) retry_budget: RetryBudget,
    /// Caps the requests in flight, with a priority queue.
    pub(crate) concurrency: Option<Arc<ConcurrencyLimiter>>,
    /// Sheds requests when the concurrency limiter reports load above a threshold.
    pub(crate) shedder: Option<LoadShedder>,
    /// When to start a hedged attempt; `None` turns hedging off.
    pub(crate) hedge_delay: Option<HedgeDelay>,
    next_start: AtomicUsize,
}

/// One provider of a route, with its targets by model and region.
#[derive(Debug)]
pub(crate) struct RouteProvider {
    pub(crate) name: Arc<str>,
    /// `targets[model]` contains one target per region for the route's model at that
    /// index, or none when the provider does not serve that model.
    pub(crate) targets: Vec<Vec<Arc<Target>>>,
    pub(crate) region_strategy: RegionStrategy,
    pub(crate) region_exploration: Duration,
    next_region: AtomicUsize,
}

/// A model as a route uses it: the name sent upstream, its weight and capabilities.
#[derive(Debug)]
pub(crate) struct ModelSpec {
    pub(crate) name: Arc<str>,
    pub(crate) weight: f64,
    pub(crate) context_window: Option<u64>,
    pub(crate) tools: bool,
    pub(crate) json_mode: bool,
    pub(crate) vision: bool,
}

/// One provider × region × model, with its own circuit breaker and latency average.
#[derive(Debug)]
pub(crate) struct Target {
    /// `provider/model`, or `provider@region/model` for a provider with regions, as
    /// logs and error bodies name it.
    pub(crate) id: Arc<str>,
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) model: Arc<ModelSpec>,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) latency: PeakEwma,
    /// Recent latency percentiles, for a hedge delay given as a percentile.
    pub(crate) latencies: Latencies,
    /// The provider's rate limit for this endpoint and model, shared with every route
    /// that reaches them.
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// The requests and tokens the provider last reported left for this endpoint and
    /// model, shared like `limiter`.
    pub(crate) quota: Arc<quota::QuotaTracker>,
}

/// Recent latency percentiles of a target, kept apart for streams (measured to the
/// first content) and plain responses (measured to the whole body), which differ too
/// much to share one percentile.
#[derive(Debug)]
pub(crate) struct Latencies {
    plain: LatencyHistogram,
    stream: LatencyHistogram,
}

impl Latencies {
    pub(crate) fn new(window: Duration, start: std::time::Instant) -> Self {
        Self {
            plain: LatencyHistogram::new(window, start),
            stream: LatencyHistogram::new(window, start),
        }
    }

    /// Returns the percentiles of streamed or of plain responses.
    pub(crate) fn of(&self, stream: bool) -> &LatencyHistogram {
        if stream {
            &self.stream
        } else {
            &self.plain
        }
    }
}

/// One endpoint of a provider: a region, or the provider itself without regions.
pub(crate) struct Endpoint {
    pub(crate) provider: Arc<str>,
    pub(crate) region: Option<Arc<str>>,
    pub(crate) kind: ProviderKind,
    /// API root without a trailing slash.
    pub(crate) base_url: String,
    /// The URL of every request, for kinds whose URL does not name the model.
    pub(crate) fixed_url: Option<http::Uri>,
    /// The header that carries the key, in the form the kind expects, with its value
    /// marked sensitive so hyper never logs it.
    pub(crate) credential: Option<(http::HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("region", &self.region)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
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
                targets: route
                    .configured_order()
                    .iter()
                    .map(|target| target.id.to_string())
                    .collect(),
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
    /// The attempt is a hedge.
    hedge: bool,
}

impl BreakerGuard {
    fn new(
        target: Arc<Target>,
        permit: adpa_resilience::circuit_breaker::Permit,
        request_id: Arc<str>,
        hedge: bool,
    ) -> Self {
        Self {
            target,
            permit: Some(permit),
            request_id,
            hedge,
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
            let now = adpa_resilience::clock::now();
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
        let outcome = if error.blames_target(self.hedge) {
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
