//! The HTTP server: routes, request ids, graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adpa_llm::config::{ConfigErrors, ConfigIssue};
use adpa_llm::Engine;
use adpa_resilience::rate_limit::RateLimiter;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{GatewayConfig, ServerConfig};
use crate::handlers;
use crate::headers::REQUEST_ID;
use crate::keys::KeyRing;

/// State shared by the handlers.
#[derive(Debug)]
pub struct AppState {
    pub(crate) engine: Engine,
    pub(crate) max_body_size: u64,
    pub(crate) draining: AtomicBool,
    pub(crate) keys: KeyRing,
    pub(crate) global_limiter: Option<Arc<RateLimiter>>,
}

/// The id of one request, set by the request id middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A gateway that failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The engine config is invalid.
    #[error(transparent)]
    Config(#[from] adpa_llm::ConfigErrors),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `server.listen`.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
    shutdown_timeout: Duration,
}

impl Gateway {
    /// Builds the engine from `config` and starts serving on `server.listen`.
    ///
    /// # Errors
    ///
    /// Returns [`StartError`] for an invalid config or an address that cannot be bound.
    pub async fn start(config: &GatewayConfig) -> Result<Self, StartError> {
        let engine = Engine::new(&config.engine())?;
        let keys = KeyRing::new(&config.keys)
            .map_err(|(path, message)| ConfigErrors(vec![ConfigIssue::new(path, message)]))?;
        Self::start_with(engine, keys, &config.server).await
    }

    /// Starts serving an engine built elsewhere.
    ///
    /// # Errors
    ///
    /// Returns [`StartError::Bind`] when the address cannot be bound.
    pub async fn start_with_engine(
        engine: Engine,
        server: &ServerConfig,
    ) -> Result<Self, StartError> {
        Self::start_with(engine, KeyRing::default(), server).await
    }

    async fn start_with(
        engine: Engine,
        keys: KeyRing,
        server: &ServerConfig,
    ) -> Result<Self, StartError> {
        let base = adpa_resilience::clock::now();
        let global_limiter = match &server.rate_limit {
            Some(config) => Some(Arc::new(RateLimiter::new(config.clone(), base).map_err(
                |err| {
                    ConfigErrors(vec![ConfigIssue::new(
                        format!("server.rate_limit.{}", err.field),
                        err.reason,
                    )])
                },
            )?)),
            None => None,
        };
        let listener =
            TcpListener::bind(server.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: server.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: server.listen,
            source,
        })?;

        if keys.is_empty() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "no [[keys]] configured and listening beyond loopback: any client that reaches this address can use the gateway"
            );
        }
        let state = Arc::new(AppState {
            engine,
            max_body_size: server.max_body_size,
            draining: AtomicBool::new(false),
            keys,
            global_limiter,
        });
        let app = router(Arc::clone(&state));

        let (shutdown, mut signal) = watch::channel(false);
        // Without TCP_NODELAY, small responses on kept-alive connections wait for the
        // client's delayed ACK (about 40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        });
        let task = tokio::spawn(async move { serving.await });

        Ok(Self {
            addr,
            state,
            shutdown,
            task,
            shutdown_timeout: server.shutdown_timeout,
        })
    }

    /// Returns the address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the engine.
    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// Stops accepting connections and waits up to `server.shutdown_timeout` for
    /// in-flight requests, streams included, to finish.
    ///
    /// # Errors
    ///
    /// Returns the server's I/O error, if it failed.
    pub async fn shutdown(self) -> io::Result<()> {
        self.state.draining.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        tracing::info!(timeout = ?self.shutdown_timeout, "draining in-flight requests");

        let mut task = self.task;
        match tokio::time::timeout(self.shutdown_timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io::Error::other(join)),
            Err(_) => {
                tracing::warn!("shutdown timeout passed; closing remaining connections");
                task.abort();
                Ok(())
            }
        }
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// Returns the server's I/O error, if it failed.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/models", get(handlers::models))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id: the client's `x-request-id` when it is short printable
/// ASCII, else a new one. The id is echoed in the response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id: Arc<str> = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(Arc::from)
        .unwrap_or_else(new_request_id);
    request.extensions_mut().insert(RequestId(Arc::clone(&id)));

    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn new_request_id() -> Arc<str> {
    let bits: u128 = rand::random();
    Arc::from(format!("req_{:024x}", bits >> 32))
}
