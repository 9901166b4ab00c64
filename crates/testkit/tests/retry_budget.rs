//! The retry budget keeps a full outage from multiplying upstream traffic.

mod support;

use std::time::Duration;

use adpa_testkit::start_gateway;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_stays_within_retry_budget() {
    let upstream = sim("only", vec![status_fault(503)]).await;
    // The breaker would stop the traffic on its own; keep it closed to see the budget.
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n\
         [routes.chat.retry]\nmax_retries = 3\nbase_delay = \"1ms\"\nmax_delay = \"5ms\"\n\
         budget_ratio = 0.2\nbudget_window = \"10s\"\nbudget_min_per_second = 1.0\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 100000\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    // 100 requests per second for 3 seconds.
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut requests = Vec::new();
    for _ in 0..300 {
        ticker.tick().await;
        requests.push(tokio::spawn(async move { chat(addr, "chat").await.status }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 502);
    }

    // Without a budget: 300 × (1 + 3 retries) = 1,200 attempts. With it: the 300 first
    // attempts plus 20% of 300 plus the floor of 1 per second over the 10 s window.
    let attempts = upstream.stats().requests;
    assert!(attempts >= 300, "{attempts}");
    assert!(attempts <= 300 + 60 + 10, "{attempts} upstream attempts");
}
