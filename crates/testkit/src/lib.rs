//! Testing tools for ADPA Resilience: simulated LLM providers with scripted faults, and
//! helpers that start a gateway in-process in front of them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod sim;

use std::net::SocketAddr;

use adpa_gateway::{Gateway, GatewayConfig, StartError};

/// Starts a gateway in-process from TOML text, listening on a free loopback port
/// whatever `server.listen` is set to.
///
/// # Errors
///
/// Returns the parse or start-up error as text.
pub async fn start_gateway(toml_text: &str) -> Result<Gateway, String> {
    let mut config = GatewayConfig::from_toml(toml_text).map_err(|err| err.to_string())?;
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(&config)
        .await
        .map_err(|err: StartError| err.to_string())
}
