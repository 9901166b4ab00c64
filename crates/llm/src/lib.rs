//! LLM wire formats, provider clients and the failover engine of ADPA Resilience.
//!
//! [`Engine`] is built from an [`EngineConfig`] (the providers, routes and policies of
//! the shared TOML file) and serves chat completion requests: it orders a route's
//! targets, skips those whose circuit breaker is open, bounds every attempt with the
//! route's timeouts, classifies failures into [`ErrorClass`]es, and retries or fails
//! over. It knows nothing about the HTTP server in front of it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use adpa_llm::{ChatRequest, Engine, EngineConfig, RequestContext};
//!
//! let config: EngineConfig = toml::from_str(r#"
//!     [providers.local]
//!     kind = "openai"
//!     base_url = "http://127.0.0.1:8000/v1"
//!     models = ["llama3"]
//! "#)?;
//! let engine = Engine::new(&config)?;
//! let request = ChatRequest::parse(br#"{"model":"llama3","messages":[]}"#)?;
//! let context = RequestContext::new("req-1");
//! let response = engine.execute(&request, &context).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod provider;
pub mod request;
pub mod sse;
pub mod usage;

pub use config::{ConfigErrors, ConfigIssue, EngineConfig};
pub use engine::{
    AttemptRecord, ChatStream, Engine, EngineError, EngineResponse, Priority, RequestContext,
    ResponseBody, RouteInfo,
};
pub use error::{AttemptError, ErrorClass, Transience};
pub use request::{ChatRequest, RequestError};
pub use usage::Usage;
