//! A simulated LLM provider: a real HTTP/1.1 server on a loopback port that speaks the
//! OpenAI, Anthropic and Gemini wire formats and injects the faults of a
//! [`FaultScript`].
//!
//! It is written on raw TCP rather than on an HTTP framework because some faults live
//! below HTTP: a connection reset, a response that stops mid-body, a hang.
//!
//! It serves `POST …/chat/completions` (OpenAI), `POST …/messages` (Anthropic) and
//! `POST …/models/{model}:generateContent` or `:streamGenerateContent` (Gemini), each
//! in its own format, and `GET …/models`. Besides those it serves:
//! - `GET /_sim/stats`: the [`SimStats`] as JSON;
//! - `PUT /_sim/faults`: replaces the fault script (JSON body);
//! - `POST /_sim/reset`: zeroes the stats and the request counter.

mod connection;
pub mod openai;
mod script;
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use script::{AppliesTo, Fault, FaultKind, FaultScript, Latency, QuotaScript, ResponseShape};

/// Requests kept in [`SimStats::log`]; older entries are dropped.
const LOG_LIMIT: usize = 10_000;

/// Counters and a request log of a simulated provider, since it started or was reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Chat completion requests received.
    pub requests: u64,
    /// Responses written to the end.
    pub completed: u64,
    /// Requests whose client closed the connection before the response ended.
    pub disconnects: u64,
    /// The maximum number of requests in flight at once.
    pub peak_in_flight: u64,
    /// Requests per injected fault, by fault label.
    pub faults: BTreeMap<String, u64>,
    /// The most recent requests, oldest first.
    pub log: VecDeque<RequestRecord>,
}

/// One chat completion request as the provider saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request number, counting from 1.
    pub number: u64,
    /// Milliseconds since the provider started or was reset.
    pub at_ms: u64,
    /// The `model` of the request.
    pub model: String,
    /// Whether the request asked for a stream.
    pub stream: bool,
    /// The label of the injected fault, if any.
    pub fault: Option<String>,
    /// The bearer token of the `Authorization` header, so tests can check which key
    /// reached the provider. Simulated providers only ever see test keys.
    pub api_key: Option<String>,
}

/// A request in flight at a simulated provider, counted until dropped.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running simulated provider. Dropping the handle stops it.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    script: RwLock<FaultScript>,
    rng: Mutex<SmallRng>,
    counter: AtomicU64,
    stats: Mutex<SimStats>,
    started: Mutex<Instant>,
    /// Start of the current quota window and the requests counted in it.
    quota_window: Mutex<(Instant, u64)>,
    /// Chat completion requests between their arrival and the end of their response.
    in_flight: AtomicU64,
}

impl Shared {
    fn set_script(&self, script: FaultScript) {
        let rng = match script.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        *self.rng.lock() = rng;
        *self.script.write() = script;
    }

    /// Counts a request against the quota; returns the `x-ratelimit-*` headers to send
    /// and whether the request is over the quota.
    fn take_quota(&self, quota: &QuotaScript) -> (Vec<(String, String)>, bool) {
        let mut window = self.quota_window.lock();
        let now = Instant::now();
        if now.duration_since(window.0) >= quota.window {
            *window = (now, 0);
        }
        let over = window.1 >= quota.requests;
        if !over {
            window.1 += 1;
        }
        let reset = quota.window.saturating_sub(now.duration_since(window.0));
        let headers = vec![
            (
                "x-ratelimit-limit-requests".to_owned(),
                quota.requests.to_string(),
            ),
            (
                "x-ratelimit-remaining-requests".to_owned(),
                quota.requests.saturating_sub(window.1).to_string(),
            ),
            (
                "x-ratelimit-reset-requests".to_owned(),
                format!("{}ms", reset.as_millis()),
            ),
        ];
        (headers, over)
    }

    fn reset(&self) {
        self.counter.store(0, Ordering::SeqCst);
        *self.quota_window.lock() = (Instant::now(), 0);
        *self.stats.lock() = SimStats::default();
        *self.started.lock() = Instant::now();
    }

    fn record(&self, update: impl FnOnce(&mut SimStats)) {
        update(&mut self.stats.lock());
    }

    /// Counts a request in flight until the returned guard drops; returns the guard and
    /// the number of other requests in flight.
    fn enter(&self) -> (InFlight<'_>, u64) {
        let others = self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.record(|stats| stats.peak_in_flight = stats.peak_in_flight.max(others + 1));
        (InFlight(self), others)
    }

    fn log_request(&self, mut record: RequestRecord) {
        record.at_ms = self.started.lock().elapsed().as_millis() as u64;
        let mut stats = self.stats.lock();
        stats.requests += 1;
        if let Some(fault) = &record.fault {
            *stats.faults.entry(fault.clone()).or_default() += 1;
        }
        if stats.log.len() >= LOG_LIMIT {
            stats.log.pop_front();
        }
        stats.log.push_back(record);
    }
}

impl SimHandle {
    /// Starts a provider named `name` on `listen` (use port 0 for a free port).
    ///
    /// # Errors
    ///
    /// Fails when the script is invalid or the address cannot be bound.
    pub async fn start(name: &str, script: FaultScript, listen: SocketAddr) -> io::Result<Self> {
        script
            .validate()
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;

        let shared = Arc::new(Shared {
            name: name.to_owned(),
            script: RwLock::new(FaultScript::default()),
            rng: Mutex::new(SmallRng::seed_from_u64(0)),
            counter: AtomicU64::new(0),
            stats: Mutex::new(SimStats::default()),
            started: Mutex::new(Instant::now()),
            quota_window: Mutex::new((Instant::now(), 0)),
            in_flight: AtomicU64::new(0),
        });
        shared.set_script(script);

        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// Starts a provider on a free loopback port.
    ///
    /// # Errors
    ///
    /// Fails when the script is invalid or no port can be bound.
    pub async fn start_local(name: &str, script: FaultScript) -> io::Result<Self> {
        Self::start(name, script, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Returns the address the provider listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the API root to configure as a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Returns a copy of the stats.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.lock().clone()
    }

    /// Replaces the fault script; requests already in progress keep the old one.
    ///
    /// # Errors
    ///
    /// Returns the validation message of an invalid script.
    pub fn set_script(&self, script: FaultScript) -> Result<(), String> {
        script.validate()?;
        self.shared.set_script(script);
        Ok(())
    }

    /// Zeroes the stats and the request counter.
    pub fn reset_stats(&self) {
        self.shared.reset();
    }

    /// Stops the provider and closes its open connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in the set so that stopping the provider closes them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection::serve(stream, Arc::clone(&shared)));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "simulated provider failed to accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
