//! What the gateway logs: transitions and failovers with their ids, never a secret.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use adpa_testkit::start_gateway;
use support::*;

/// A log sink that tests can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime keeps every task of the gateway on this thread, where the
// capturing subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn logs_failover_without_secrets() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let primary = sim("primary", vec![status_fault(500)]).await;
    let secondary = sim("secondary", vec![]).await;
    std::env::set_var("ADPA_TEST_LOGGING_KEY", "sk-test-do-not-log-4242");
    let config = format!(
        "[providers.primary]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"${{ADPA_TEST_LOGGING_KEY}}\"\nmodels = [\"sim-model\"]\n\
         {}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n\
         [routes.chat.retry]\nmax_retries = 0\n[routes.chat.circuit_breaker]\nfailure_threshold = 1\n",
        primary.base_url(),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let secret_prompt = "my secret prompt 7733";
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": secret_prompt}],
    })
    .to_string();
    let reply = request(gateway.addr(), "POST", "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 200);
    let request_id = reply.header("x-request-id").unwrap().to_owned();

    // The key reached the provider.
    assert_eq!(
        primary.stats().log[0].api_key.as_deref(),
        Some("sk-test-do-not-log-4242")
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failover = logs
        .lines()
        .find(|line| line.contains("failing over"))
        .unwrap_or_else(|| panic!("no failover line in:\n{logs}"));
    assert!(failover.contains(&request_id), "{failover}");
    assert!(failover.contains("target=primary/sim-model"), "{failover}");
    assert!(failover.contains("class=server"), "{failover}");

    let opened = logs
        .lines()
        .find(|line| line.contains("circuit breaker opened"))
        .unwrap();
    assert!(opened.contains("target=primary/sim-model"), "{opened}");
    assert!(opened.contains(&request_id), "{opened}");

    assert!(
        !logs.contains("sk-test-do-not-log-4242"),
        "the API key was logged"
    );
    assert!(
        !logs.contains("Bearer"),
        "an Authorization header was logged"
    );
    assert!(!logs.contains(secret_prompt), "the prompt was logged");
}
