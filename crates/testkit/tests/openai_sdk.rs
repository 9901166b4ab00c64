//! The gateway driven by the official OpenAI Python SDK.
//!
//! These tests need a Python with the `openai` package, named by `ADPA_TEST_PYTHON`;
//! `scripts/test-all.sh` creates one and runs them. A plain `cargo test` lists them as
//! ignored, with the reason.

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use adpa_testkit::sim::FaultKind;
use adpa_testkit::start_gateway;
use serde_json::Value;
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_client.py");

/// Returns the Python interpreter named by `ADPA_TEST_PYTHON`.
fn python() -> PathBuf {
    match std::env::var_os("ADPA_TEST_PYTHON") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "ADPA_TEST_PYTHON is not set: run scripts/test-all.sh, which creates a venv \
             with the OpenAI SDK and sets it"
        ),
    }
}

async fn run_sdk(python: &PathBuf, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("cannot run the Python interpreter named by ADPA_TEST_PYTHON");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed ({}):\n{stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("SDK script printed no JSON ({err}):\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenAI Python SDK; scripts/test-all.sh runs it"]
async fn sdk_keeps_working_while_primary_fails() {
    let python = python();
    let primary = sim("primary", vec![status_fault(503)]).await;
    let secondary = sim("secondary", vec![]).await;
    let reset_seconds = 8;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n\
         [routes.chat.retry]\nmax_retries = 1\nbase_delay = \"10ms\"\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 5\nreset_timeout = \"{reset_seconds}s\"\n",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let base_url = format!("http://{}/v1", gateway.addr());

    let result = run_sdk(
        &python,
        &[&base_url, "failover", "200", &reset_seconds.to_string()],
    )
    .await;

    let first = result["first"].as_array().unwrap();
    let first_seconds = result["first_seconds"].as_f64().unwrap();
    assert!(
        first_seconds < f64::from(reset_seconds),
        "the first 200 requests took {first_seconds:.1} s, longer than reset_timeout"
    );
    assert_eq!(first.len(), 200);
    for (index, reply) in first.iter().enumerate() {
        assert_eq!(reply["status"], 200, "request {index}");
        assert_eq!(reply["provider"], "secondary", "request {index}");
        assert_eq!(reply["finish_reason"], "stop", "request {index}");
        assert_eq!(
            reply["text"], "Hello from secondary. This reply comes from a simulated provider.",
            "request {index}"
        );
    }
    let streamed = first.iter().filter(|r| r["stream"] == true).count();
    assert_eq!(streamed, 100);

    // Five consecutive failures open the breaker (two attempts each for the first two
    // requests, one for the third); from then on the primary is skipped.
    let attempts: Vec<u64> = first
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts[..3], [3, 3, 2]);
    assert!(attempts[3..].iter().all(|a| *a == 1), "{attempts:?}");

    // After reset_timeout exactly one of ten concurrent requests probes the primary.
    let probes = result["probes"].as_array().unwrap();
    assert!(probes
        .iter()
        .all(|r| r["status"] == 200 && r["provider"] == "secondary"));
    let probing = probes.iter().filter(|r| r["attempts"] == 2).count();
    assert_eq!(probing, 1, "{probes:?}");
    assert_eq!(primary.stats().requests, 6);
    assert_eq!(secondary.stats().requests, 210);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenAI Python SDK; scripts/test-all.sh runs it"]
async fn sdk_reads_gateway_errors() {
    let python = python();
    let limited = sim(
        "limited",
        vec![fault(FaultKind::Status {
            status: 429,
            retry_after: Some("7".to_owned()),
            retry_after_ms: None,
            body: None,
        })],
    )
    .await;
    let config = format!(
        "{}[routes.limited]\nprimary = \"limited\"\n[routes.limited.retry]\nmax_retries = 0\n",
        provider("limited", &limited)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let base_url = format!("http://{}/v1", gateway.addr());

    let result = run_sdk(&python, &[&base_url, "errors"]).await;

    let unknown = &result["unknown_route"];
    assert_eq!(unknown["exception"], "NotFoundError");
    assert_eq!(unknown["code"], "model_not_found");
    assert!(unknown["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_")));

    let limited = &result["rate_limited"];
    assert_eq!(limited["exception"], "RateLimitError");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["retry_after"], "7");
    assert_eq!(limited["attempts"][0]["class"], "rate_limited");
    assert_eq!(limited["attempts"][0]["target"], "limited/sim-model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the OpenAI Python SDK; scripts/test-all.sh runs it"]
async fn sdk_reads_anthropic_and_gemini() {
    let python = python();
    let anthropic = sim("anthropic", vec![]).await;
    let gemini = sim("gemini", vec![]).await;
    let config = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"http://{}/v1\"\nmodels = [\"claude-3-5-sonnet\"]\n\
         [providers.gem]\nkind = \"gemini\"\nbase_url = \"http://{}/v1beta\"\nmodels = [\"gemini-1.5-pro\"]\n",
        anthropic.addr(),
        gemini.addr()
    );
    let gateway = start_gateway(&config).await.unwrap();
    let base_url = format!("http://{}/v1", gateway.addr());

    let result = run_sdk(
        &python,
        &[&base_url, "read", "claude-3-5-sonnet", "gemini-1.5-pro"],
    )
    .await;

    for (route, name) in [
        ("claude-3-5-sonnet", "anthropic"),
        ("gemini-1.5-pro", "gemini"),
    ] {
        let expected = format!("Hello from {name}. This reply comes from a simulated provider.");
        for mode in ["complete", "stream"] {
            let seen = &result[route][mode];
            assert_eq!(seen["content"], expected.as_str(), "{route} {mode}: {seen}");
            assert_eq!(seen["finish_reason"], "stop", "{route} {mode}");
            assert_eq!(seen["usage"]["completion_tokens"], 10, "{route} {mode}");
            let prompt = seen["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
            assert!(prompt > 0, "{route} {mode}: {seen}");
            assert_eq!(seen["usage"]["total_tokens"], prompt + 10, "{route} {mode}");
        }
        assert_eq!(result[route]["complete"]["object"], "chat.completion");
    }
    assert_eq!(anthropic.stats().requests, 2);
    assert_eq!(gemini.stats().requests, 2);
}
