//! Retries that honour the delay a provider requests, within the request deadline.

mod support;

use std::time::{Duration, Instant};

use adpa_testkit::sim::FaultKind;
use adpa_testkit::start_gateway;
use support::*;

fn rate_limited_once(retry_after: &str) -> adpa_testkit::sim::Fault {
    let mut fault = fault(FaultKind::Status {
        status: 429,
        retry_after: Some(retry_after.to_owned()),
        retry_after_ms: None,
        body: None,
    });
    fault.until_request = Some(1);
    fault
}

fn single_target(upstream: &adpa_testkit::sim::SimHandle, extra: &str) -> String {
    format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.retry]\nmax_retries = 3\nbase_delay = \"10ms\"\nmax_delay = \"20s\"\n{extra}",
        provider("only", upstream)
    )
}

#[tokio::test]
async fn retry_waits_for_retry_after() {
    let upstream = sim("only", vec![rate_limited_once("2")]).await;
    let gateway = start_gateway(&single_target(&upstream, "")).await.unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));

    let log = upstream.stats().log;
    assert_eq!(log.len(), 2);
    let gap = log[1].at_ms - log[0].at_ms;
    assert!(gap >= 2_000, "retried after {gap} ms, before Retry-After");
    assert!(
        gap < 2_500,
        "retried after {gap} ms, long after Retry-After"
    );
}

#[tokio::test]
async fn retry_after_ms_is_preferred() {
    let mut fault = fault(FaultKind::Status {
        status: 429,
        retry_after: Some("10".to_owned()),
        retry_after_ms: Some(300),
        body: None,
    });
    fault.until_request = Some(1);
    let upstream = sim("only", vec![fault]).await;
    let gateway = start_gateway(&single_target(&upstream, "")).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    let log = upstream.stats().log;
    let gap = log[1].at_ms - log[0].at_ms;
    assert!((300..1_000).contains(&gap), "retried after {gap} ms");
}

#[tokio::test]
async fn retry_after_past_deadline_fails_fast() {
    let upstream = sim("only", vec![rate_limited_once("2")]).await;
    let config = single_target(
        &upstream,
        "[routes.chat.timeouts]\ntotal_timeout = \"1s\"\n",
    );
    let gateway = start_gateway(&config).await.unwrap();

    let started = Instant::now();
    let reply = chat(gateway.addr(), "chat").await;
    let elapsed = started.elapsed();

    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    assert_eq!(reply.header("retry-after"), Some("2"));
    let body = reply.json();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["attempts"][0]["class"], "rate_limited");
    assert_eq!(upstream.stats().requests, 1);
}

#[tokio::test]
async fn long_retry_after_fails_over() {
    let mut fault = fault(FaultKind::Status {
        status: 429,
        retry_after: Some("60".to_owned()),
        retry_after_ms: None,
        body: None,
    });
    fault.rate = 1.0;
    let primary = sim("primary", vec![fault]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n[routes.chat.retry]\nmax_delay = \"5s\"\n",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let started = Instant::now();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-provider"), Some("secondary"));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(primary.stats().requests, 1);
}

#[tokio::test]
async fn backoff_spaces_retries() {
    let mut fault = status_fault(503);
    fault.until_request = Some(2);
    let upstream = sim("only", vec![fault]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.retry]\nmax_retries = 3\nbase_delay = \"200ms\"\nbackoff_factor = 2.0\njitter = 0.0\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    let log = upstream.stats().log;
    assert_eq!(log.len(), 3);
    let first_gap = log[1].at_ms - log[0].at_ms;
    let second_gap = log[2].at_ms - log[1].at_ms;
    assert!(
        (200..400).contains(&first_gap),
        "first retry after {first_gap} ms"
    );
    assert!(
        (400..600).contains(&second_gap),
        "second retry after {second_gap} ms"
    );
}
