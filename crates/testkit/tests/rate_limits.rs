//! Rate limits of routes and of provider targets.

mod support;

use adpa_testkit::start_gateway;
use serde_json::json;
use support::*;

#[tokio::test]
async fn route_limit_rejects_with_retry_after() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.rate_limit]\nrequests_per_second = 1\nburst_size = 2\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    let limited = chat(gateway.addr(), "chat").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(limited
        .header("x-ratelimit-reset-requests")
        .is_some_and(|v| v.ends_with("ms")));
    let error = &limited.json()["error"];
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("requests_per_second"));
    // The rejected request never reached the provider.
    assert_eq!(upstream.stats().requests, 2);
}

#[tokio::test]
async fn provider_limit_fails_over_before_provider_429s() {
    let primary = sim("primary", vec![]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = format!(
        "[providers.primary]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\
         [providers.primary.rate_limit]\nrequests_per_second = 0.1\nburst_size = 3\n\
         {}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n",
        primary.base_url(),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let mut providers = Vec::new();
    for _ in 0..6 {
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 200);
        providers.push(reply.header("x-adpa-provider").unwrap().to_owned());
    }
    assert_eq!(
        providers,
        [
            "primary",
            "primary",
            "primary",
            "secondary",
            "secondary",
            "secondary"
        ]
    );
    assert_eq!(primary.stats().requests, 3);
}

#[tokio::test]
async fn only_target_limited_returns_429() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "[providers.only]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\
         [providers.only.rate_limit]\nrequests_per_second = 0.5\nburst_size = 1\n\
         [routes.chat]\nprimary = \"only\"\n",
        upstream.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    let limited = chat(gateway.addr(), "chat").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("retry-after"), Some("2"));
    assert_eq!(
        limited.json()["error"]["skipped"][0]["reason"],
        "rate_limited"
    );
}

#[tokio::test]
async fn provider_limit_is_shared_by_routes() {
    let upstream = sim("only", vec![]).await;
    // Two written routes and the implicit one for `sim-model` all reach the same
    // provider model, whose limit admits two requests at once.
    let config = format!(
        "[providers.only]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\
         [providers.only.rate_limit]\nrequests_per_second = 0.1\nburst_size = 2\n\
         [routes.chat]\nprimary = \"only\"\n[routes.other]\nprimary = \"only\"\n",
        upstream.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    assert_eq!(chat(gateway.addr(), "other").await.status, 200);
    assert_eq!(chat(gateway.addr(), "other").await.status, 429);
    assert_eq!(chat(gateway.addr(), "sim-model").await.status, 429);
    assert_eq!(upstream.stats().requests, 2);
}

#[tokio::test]
async fn tokens_are_reconciled_with_stream_usage() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.rate_limit]\nrequests_per_second = 100\nburst_size = 100\ntokens_per_minute = 10000\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let engine_route_remaining = |gateway: &adpa_gateway::Gateway| {
        gateway
            .engine()
            .route_limits("chat")
            .and_then(|limits| limits.1)
    };
    assert_eq!(engine_route_remaining(&gateway), Some(10_000));

    // The estimate counts max_tokens: 4,000 plus the prompt's bytes / 4.
    let body = json!({
        "model": "chat",
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 4000,
        "messages": [{"role": "user", "content": "Hello"}],
    });
    let reply = request(
        gateway.addr(),
        "POST",
        "/v1/chat/completions",
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let usage_chunk: serde_json::Value = sse_data(&reply.text())
        .iter()
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .find(|chunk: &serde_json::Value| chunk["usage"].is_object())
        .unwrap();
    let actual = usage_chunk["usage"]["total_tokens"].as_u64().unwrap();
    assert!(actual < 100, "{actual}");

    // After the stream, only the reported usage is charged, not the 4,000+ estimate.
    let remaining = engine_route_remaining(&gateway).unwrap();
    assert!(
        (10_000 - actual - 2..=10_000 - actual).contains(&remaining),
        "remaining {remaining}, usage {actual}"
    );
}

#[tokio::test]
async fn invalid_rate_limit_is_named() {
    let upstream = sim("only", vec![]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.rate_limit]\nrequests_per_second = 0\n",
        provider("only", &upstream)
    );
    let err = start_gateway(&config).await.map(|_| ()).unwrap_err();
    assert!(
        err.contains("routes.chat.rate_limit.requests_per_second"),
        "{err}"
    );
}

#[tokio::test]
async fn provider_quota_headers_steer_before_429() {
    let script = adpa_testkit::sim::FaultScript {
        quota: Some(adpa_testkit::sim::QuotaScript {
            requests: 10,
            window: std::time::Duration::from_secs(30),
        }),
        ..adpa_testkit::sim::FaultScript::default()
    };
    let primary = adpa_testkit::sim::SimHandle::start_local("primary", script)
        .await
        .unwrap();
    let secondary = sim("secondary", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let mut providers = Vec::new();
    for _ in 0..15 {
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 200);
        providers.push(reply.header("x-adpa-provider").unwrap().to_owned());
    }
    assert_eq!(
        providers.iter().filter(|p| *p == "primary").count(),
        10,
        "{providers:?}"
    );
    assert!(
        providers[10..].iter().all(|p| p == "secondary"),
        "{providers:?}"
    );

    // The primary never had to return 429, because the gateway moved the overflow first.
    let stats = primary.stats();
    assert_eq!(stats.requests, 10);
    assert_eq!(stats.faults.get("status_429"), None, "{stats:?}");
}
