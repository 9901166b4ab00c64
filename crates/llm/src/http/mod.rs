//! The upstream HTTP client: pooled HTTP/1.1 connections over TCP or TLS, with
//! `TCP_NODELAY`, a connect timeout and a write timeout.
//!
//! hyper-util's client is used rather than reqwest because reqwest has no write
//! timeout. First-byte and idle-read timeouts are applied by the engine, per request.

mod connect_timeout;
mod write_timeout;

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{AttemptError, ErrorClass};

pub use connect_timeout::ConnectTimeout;
pub use write_timeout::WriteTimeoutConnector;

/// Idle pooled connections kept per upstream host.
const MAX_IDLE_PER_HOST: usize = 256;

/// How long an unused pooled connection is kept. Providers close idle connections after
/// about a minute; closing them earlier avoids sending on a socket the peer just closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// A pooled upstream client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<ConnectTimeout<HttpsConnector<WriteTimeoutConnector>>, Full<Bytes>>,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for upstream connections: {0}")]
pub struct ClientBuildError(#[from] rustls::Error);

impl HttpClient {
    /// Creates a client whose connections open within `connect_timeout` (TLS handshake
    /// included) and whose writes may block for at most `write_timeout`.
    ///
    /// # Errors
    ///
    /// Fails only when the TLS configuration cannot be built.
    pub fn new(
        connect_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Self, ClientBuildError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);

        // ring builds with a C compiler alone, where aws-lc-rs needs more of a toolchain.
        // TODO: move to a provider with post-quantum key exchange once the build allows.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(WriteTimeoutConnector::new(tcp, write_timeout));

        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(ConnectTimeout::new(https, connect_timeout));
        Ok(Self { inner })
    }

    /// Sends a request and returns once the response head has arrived.
    ///
    /// # Errors
    ///
    /// Returns a classified [`AttemptError`]: [`ErrorClass::Timeout`] for a connect or
    /// write timeout, [`ErrorClass::Network`] for any other failure to exchange bytes.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, AttemptError> {
        self.inner
            .request(request)
            .await
            .map_err(|err| classify_send_error(&err))
    }
}

/// Labels a failure of the client to send a request or to read the response head.
fn classify_send_error(err: &hyper_util::client::legacy::Error) -> AttemptError {
    let timed_out = error_chain(err).any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
    });
    let root = error_chain(err)
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();

    if timed_out {
        let stage = if err.is_connect() { "connect" } else { "write" };
        return AttemptError::new(ErrorClass::Timeout, format!("{stage} timed out"));
    }
    if err.is_connect() {
        return AttemptError::new(ErrorClass::Network, format!("connection failed: {root}"));
    }
    AttemptError::new(ErrorClass::Network, format!("request failed: {root}"))
}

/// Labels a failure while reading a response body.
pub fn classify_body_error(err: &hyper::Error) -> AttemptError {
    let root = error_chain(err)
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    AttemptError::new(
        ErrorClass::Network,
        format!("response body broke off: {root}"),
    )
}

fn error_chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |cause: &&'a (dyn StdError + 'static)| {
        (*cause).source()
    })
}
