//! The config `adpa serve` uses without `--config`.
//!
//! With provider API keys in the environment it routes `chat` over those providers in
//! sequence. Without any, it starts two simulated providers on loopback ports, the
//! first failing the first request and half of the later ones with a 503, so the first
//! `curl` already shows a failover.

use std::time::Duration;

use adpa_gateway::GatewayConfig;
use adpa_testkit::sim::{Fault, FaultKind, FaultScript, SimHandle};
use anyhow::{Context, Result};

/// Providers used when their key variable is set: name, key variable, base URL, model.
const KNOWN_PROVIDERS: [(&str, &str, &str, &str); 2] = [
    (
        "openai",
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        "gpt-4o-mini",
    ),
    (
        "groq",
        "GROQ_API_KEY",
        "https://api.groq.com/openai/v1",
        "llama-3.1-8b-instant",
    ),
];

/// Builds the default config, starting simulated providers when no key is set. The
/// returned handles keep them running.
pub async fn build() -> Result<(GatewayConfig, Vec<SimHandle>)> {
    let with_keys: Vec<_> = KNOWN_PROVIDERS
        .iter()
        .filter(|(_, variable, _, _)| std::env::var(variable).is_ok_and(|v| !v.is_empty()))
        .collect();

    if !with_keys.is_empty() {
        let mut text = String::new();
        for (name, variable, base_url, model) in &with_keys {
            text.push_str(&format!(
                "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key = \"${{{variable}}}\"\nmodels = [\"{model}\"]\n\n"
            ));
        }
        text.push_str(&route(
            "chat",
            &with_keys.iter().map(|p| p.0).collect::<Vec<_>>(),
        ));
        tracing::info!(
            providers = with_keys.len(),
            "no --config: using providers whose API key is set"
        );
        return Ok((GatewayConfig::from_toml(&text)?, Vec::new()));
    }

    let flaky = FaultScript {
        latency: adpa_testkit::sim::Latency {
            fixed: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            ..adpa_testkit::sim::Latency::default()
        },
        faults: vec![fault_503(1.0, None, Some(1)), fault_503(0.5, Some(2), None)],
        ..FaultScript::default()
    };
    let healthy = FaultScript {
        latency: adpa_testkit::sim::Latency {
            fixed: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            ..adpa_testkit::sim::Latency::default()
        },
        ..FaultScript::default()
    };
    let first = SimHandle::start_local("sim-flaky", flaky)
        .await
        .context("cannot start a simulated provider")?;
    let second = SimHandle::start_local("sim-healthy", healthy)
        .await
        .context("cannot start a simulated provider")?;

    let text = format!(
        "[providers.sim-flaky]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\n\
         [providers.sim-healthy]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\n{}\
         [routes.chat.retry]\nmax_retries = 0\n",
        first.base_url(),
        second.base_url(),
        route("chat", &["sim-flaky", "sim-healthy"]),
    );
    tracing::info!(
        flaky = %first.base_url(),
        healthy = %second.base_url(),
        "no --config and no provider API key: serving two simulated providers"
    );
    Ok((GatewayConfig::from_toml(&text)?, vec![first, second]))
}

fn route(name: &str, providers: &[&str]) -> String {
    let secondaries: Vec<String> = providers[1..].iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[routes.{name}]\nprimary = \"{}\"\nsecondaries = [{}]\n",
        providers[0],
        secondaries.join(", ")
    )
}

fn fault_503(rate: f64, from_request: Option<u64>, until_request: Option<u64>) -> Fault {
    Fault {
        rate,
        from_request,
        until_request,
        ..Fault::always(FaultKind::Status {
            status: 503,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        })
    }
}
