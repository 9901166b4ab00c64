//! Failover between providers, circuit breaking and error classification, through a
//! real gateway in front of simulated providers.

mod support;

use std::time::Duration;

use adpa_testkit::sim::FaultKind;
use adpa_testkit::start_gateway;
use support::*;

fn two_provider_config(
    primary: &adpa_testkit::sim::SimHandle,
    secondary: &adpa_testkit::sim::SimHandle,
    extra: &str,
) -> String {
    format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n{extra}",
        provider("primary", primary),
        provider("secondary", secondary),
    )
}

#[tokio::test]
async fn breaker_opens_then_admits_one_probe() {
    let primary = sim("primary", vec![status_fault(503)]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = two_provider_config(
        &primary,
        &secondary,
        "[routes.chat.retry]\nmax_retries = 1\nbase_delay = \"10ms\"\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 5\nreset_timeout = \"1500ms\"\n",
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    let mut attempts = Vec::new();
    for _ in 0..20 {
        let reply = chat(addr, "chat").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-adpa-provider"), Some("secondary"));
        attempts.push(reply.header("x-adpa-attempts").unwrap().to_owned());
    }

    // Requests 1 and 2 try the primary twice, with one retry each. Request 3 makes the
    // fifth consecutive failure, which opens the breaker, so its retry is skipped.
    assert_eq!(attempts[..3], ["3", "3", "2"]);
    assert!(attempts[3..].iter().all(|a| a == "1"), "{attempts:?}");
    assert_eq!(primary.stats().requests, 5);
    assert_eq!(secondary.stats().requests, 20);

    // After reset_timeout, concurrent requests let exactly one probe through.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let replies = futures_util::future::join_all((0..10).map(|_| chat(addr, "chat"))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(primary.stats().requests, 6);
    let probes = replies
        .iter()
        .filter(|r| r.header("x-adpa-attempts") == Some("2"))
        .count();
    assert_eq!(probes, 1);

    // The failed probe reopened the breaker: the primary is skipped again.
    let reply = chat(addr, "chat").await;
    assert_eq!(reply.header("x-adpa-attempts"), Some("1"));
    assert_eq!(primary.stats().requests, 6);
}

#[tokio::test]
async fn probe_success_closes_breaker() {
    let primary = sim("primary", vec![status_fault(500)]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = two_provider_config(
        &primary,
        &secondary,
        "[routes.chat.retry]\nmax_retries = 0\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 2\nreset_timeout = \"300ms\"\n",
    );
    let gateway = start_gateway(&config).await.unwrap();

    for _ in 0..3 {
        chat(gateway.addr(), "chat").await;
    }
    assert_eq!(primary.stats().requests, 2);

    primary.set_script(script(vec![])).unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..3 {
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.header("x-adpa-provider"), Some("primary"));
        assert_eq!(reply.header("x-adpa-attempts"), Some("1"));
    }
}

#[tokio::test]
async fn bad_upstream_bodies_fail_over() {
    let faults = [
        FaultKind::Html502,
        FaultKind::TruncatedJson,
        FaultKind::Reset,
        FaultKind::Status {
            status: 401,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        },
        FaultKind::Status {
            status: 404,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        },
    ];
    let expected_class = ["server", "server", "network", "auth", "not_found"];

    for (kind, class) in faults.into_iter().zip(expected_class) {
        let label = kind.label();
        let primary = sim("primary", vec![fault(kind)]).await;
        let secondary = sim("secondary", vec![]).await;
        let config = two_provider_config(
            &primary,
            &secondary,
            "[routes.chat.retry]\nmax_retries = 0\n",
        );
        let gateway = start_gateway(&config).await.unwrap();

        for stream in [false, true] {
            let reply = if stream {
                chat_stream(gateway.addr(), "chat").await
            } else {
                chat(gateway.addr(), "chat").await
            };
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            assert_eq!(
                reply.header("x-adpa-provider"),
                Some("secondary"),
                "{label}"
            );
            assert_eq!(reply.header("x-adpa-attempts"), Some("2"), "{label}");
        }

        // The failed attempt is classified as expected: make the secondary fail too and
        // read the attempts from the error body.
        secondary
            .set_script(script(vec![status_fault(500)]))
            .unwrap();
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 502, "{label}");
        let body = reply.json();
        assert_eq!(
            body["error"]["attempts"][0]["class"], class,
            "{label}: {body}"
        );
        assert_eq!(body["error"]["attempts"][1]["class"], "server", "{label}");
    }
}

#[tokio::test]
async fn invalid_request_is_not_failed_over() {
    let primary = sim("primary", vec![status_fault(400)]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = two_provider_config(
        &primary,
        &secondary,
        "[routes.chat.circuit_breaker]\nfailure_threshold = 2\n",
    );
    let gateway = start_gateway(&config).await.unwrap();

    for _ in 0..5 {
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 400);
        let body = reply.json();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["attempts"].as_array().map(Vec::len), Some(1));
        assert!(body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
    }
    // Client errors neither fail over nor open the primary's breaker.
    assert_eq!(primary.stats().requests, 5);
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn all_targets_failing_returns_502_with_attempts() {
    let primary = sim("primary", vec![status_fault(500)]).await;
    let secondary = sim("secondary", vec![fault(FaultKind::Html502)]).await;
    let config = two_provider_config(
        &primary,
        &secondary,
        "[routes.chat.retry]\nmax_retries = 1\nbase_delay = \"5ms\"\n",
    );
    let gateway = start_gateway(&config).await.unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("x-adpa-attempts"), Some("4"));
    let body = reply.json();
    let attempts = body["error"]["attempts"].as_array().unwrap();
    let targets: Vec<_> = attempts
        .iter()
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "primary/sim-model",
            "primary/sim-model",
            "secondary/sim-model",
            "secondary/sim-model"
        ]
    );
    assert!(attempts
        .iter()
        .all(|a| a["status"].is_u64() && a["duration_ms"].is_u64()));
    assert_eq!(body["error"]["code"], "all_targets_failed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("all targets failed"));
}

#[tokio::test]
async fn every_breaker_open_returns_503_with_retry_after() {
    let primary = sim("primary", vec![status_fault(500)]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"primary\"\n[routes.chat.retry]\nmax_retries = 0\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 1\nreset_timeout = \"30s\"\n",
        provider("primary", &primary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    assert_eq!(chat(gateway.addr(), "chat").await.status, 502);
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-adpa-attempts"), Some("0"));
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(reply.json()["error"]["code"], "circuit_open");
    assert_eq!(primary.stats().requests, 1);
}

#[tokio::test]
async fn round_robin_alternates_providers() {
    let first = sim("first", vec![]).await;
    let second = sim("second", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"first\"\nsecondaries = [\"second\"]\nfailover_policy = \"round_robin\"\n",
        provider("first", &first),
        provider("second", &second)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let mut providers = Vec::new();
    for _ in 0..6 {
        let reply = chat(gateway.addr(), "chat").await;
        providers.push(reply.header("x-adpa-provider").unwrap().to_owned());
    }
    assert_eq!(
        providers,
        ["first", "second", "first", "second", "first", "second"]
    );
}

#[tokio::test]
async fn implicit_route_serves_listed_model() {
    let upstream = sim("upstream", vec![]).await;
    let gateway = start_gateway(&provider("local", &upstream)).await.unwrap();

    let reply = chat(gateway.addr(), "sim-model").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-provider"), Some("local"));
    assert_eq!(reply.json()["model"], "sim-model");
}

#[tokio::test]
async fn long_streamed_probe_closes_breaker() {
    let mut failing = status_fault(500);
    failing.until_request = Some(2);
    // Each stream lasts about 500 ms, longer than half_open_timeout.
    let script = adpa_testkit::sim::FaultScript {
        faults: vec![failing],
        response: adpa_testkit::sim::ResponseShape {
            chunks: 10,
            chunk_delay: Duration::from_millis(50),
            ..Default::default()
        },
        ..adpa_testkit::sim::FaultScript::default()
    };
    let primary = adpa_testkit::sim::SimHandle::start_local("primary", script)
        .await
        .unwrap();
    let secondary = sim("secondary", vec![]).await;
    let config = two_provider_config(
        &primary,
        &secondary,
        "[routes.chat.retry]\nmax_retries = 0\n\
         [routes.chat.circuit_breaker]\nfailure_threshold = 2\nreset_timeout = \"200ms\"\nhalf_open_timeout = \"200ms\"\n",
    );
    let gateway = start_gateway(&config).await.unwrap();

    chat(gateway.addr(), "chat").await;
    chat(gateway.addr(), "chat").await;
    assert_eq!(
        chat(gateway.addr(), "chat").await.header("x-adpa-attempts"),
        Some("1")
    );
    assert_eq!(primary.stats().requests, 2);

    tokio::time::sleep(Duration::from_millis(250)).await;
    let probe = chat_stream(gateway.addr(), "chat").await;
    assert_eq!(probe.header("x-adpa-provider"), Some("primary"));
    assert_eq!(
        sse_data(&probe.text()).last().map(String::as_str),
        Some("[DONE]")
    );

    // The probe's content arrived in time, so the breaker closed.
    let after = chat(gateway.addr(), "chat").await;
    assert_eq!(after.header("x-adpa-provider"), Some("primary"));
    assert_eq!(after.header("x-adpa-attempts"), Some("1"));
}

#[tokio::test]
async fn weighted_policy_splits_traffic() {
    let heavy = sim("heavy", vec![]).await;
    let light = sim("light", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"heavy\"\nsecondaries = [\"light\"]\n\
         failover_policy = \"weighted\"\nweights = {{ heavy = 3.0, light = 1.0 }}\n",
        provider("heavy", &heavy),
        provider("light", &light)
    );
    let gateway = start_gateway(&config).await.unwrap();

    for _ in 0..400 {
        assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
    }
    // Expected 300 and 100; the bounds are about five standard deviations wide.
    let heavy_share = heavy.stats().requests;
    assert!(
        (255..=345).contains(&heavy_share),
        "heavy served {heavy_share} of 400"
    );
    assert_eq!(heavy_share + light.stats().requests, 400);
}

#[tokio::test]
async fn weights_are_validated() {
    let upstream = sim("a", vec![]).await;
    let base = provider("a", &upstream);
    let cases = [
        (
            "weights = { a = 2.0 }\n",
            "routes.chat.weights",
            "only apply with failover_policy",
        ),
        (
            "failover_policy = \"weighted\"\nweights = { b = 2.0 }\n",
            "routes.chat.weights.b",
            "not in this route",
        ),
        (
            "failover_policy = \"weighted\"\nweights = { a = 0.0 }\n",
            "routes.chat.weights.a",
            "above 0",
        ),
    ];
    for (route_extra, path, message) in cases {
        let config = format!("{base}[routes.chat]\nprimary = \"a\"\n{route_extra}");
        let err = start_gateway(&config).await.map(|_| ()).unwrap_err();
        assert!(
            err.contains(path) && err.contains(message),
            "{route_extra}: {err}"
        );
    }
}
