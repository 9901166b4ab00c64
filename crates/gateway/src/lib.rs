//! The OpenAI-compatible HTTP gateway of ADPA Resilience.
//!
//! [`Gateway`] serves an [`adpa_llm::Engine`] built from a [`GatewayConfig`]:
//! `POST /v1/chat/completions` (streamed and not), `GET /v1/models`, `GET /healthz` and
//! `GET /readyz`. Every error body is OpenAI-shaped and carries the request id and the
//! attempts made. The headers `x-request-id`, `x-adpa-provider`, `x-adpa-region`,
//! `x-adpa-model` and `x-adpa-attempts` name the target that served the request.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod config;
pub mod error;
mod handlers;
pub mod headers;
pub mod keys;
mod server;

pub use config::{GatewayConfig, LoadError, ServerConfig};
pub use server::{Gateway, RequestId, StartError};
