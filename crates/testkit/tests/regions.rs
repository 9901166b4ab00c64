//! Region failover: sequential, round robin and latency-based ordering.

mod support;

use std::time::{Duration, Instant};

use adpa_testkit::sim::{FaultScript, Latency, SimHandle};
use adpa_testkit::start_gateway;
use support::*;

async fn sim_with_latency(name: &str, millis: u64) -> SimHandle {
    let script = FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(millis),
            jitter: Duration::ZERO,
            ..Latency::default()
        },
        ..FaultScript::default()
    };
    SimHandle::start_local(name, script).await.unwrap()
}

fn regional_config(us: &SimHandle, eu: &SimHandle, strategy: &str, extra: &str) -> String {
    format!(
        "[providers.gem]\nkind = \"openai\"\nmodels = [\"sim-model\"]\nregion_strategy = \"{strategy}\"\n{extra}\
         [providers.gem.regions]\nus-east = {{ base_url = \"{}\" }}\neu-west = {{ base_url = \"{}\" }}\n\
         [routes.chat]\nprimary = \"gem\"\n[routes.chat.retry]\nmax_retries = 0\n",
        us.base_url(),
        eu.base_url()
    )
}

async fn region_of(addr: std::net::SocketAddr) -> (String, String) {
    let reply = chat(addr, "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    (
        reply.header("x-adpa-region").unwrap().to_owned(),
        reply.header("x-adpa-attempts").unwrap().to_owned(),
    )
}

#[tokio::test]
async fn latency_based_prefers_fast_region_and_recovers() {
    let us = sim_with_latency("us", 300).await;
    let eu = sim_with_latency("eu", 50).await;
    let exploration = Duration::from_secs(2);
    let config = regional_config(&us, &eu, "latency_based", "region_exploration = \"2s\"\n");
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    for _ in 0..4 {
        region_of(addr).await;
    }
    let mut to_eu = 0;
    for _ in 0..30 {
        if region_of(addr).await.0 == "eu-west" {
            to_eu += 1;
        }
    }
    assert!(
        to_eu >= 27,
        "only {to_eu} of 30 requests went to the faster region"
    );

    // eu-west starts failing: the request that meets it fails over, and the next ones
    // go to us-east first.
    eu.set_script(script(vec![status_fault(500)])).unwrap();
    assert_eq!(
        region_of(addr).await,
        ("us-east".to_owned(), "2".to_owned())
    );
    for _ in 0..3 {
        assert_eq!(
            region_of(addr).await,
            ("us-east".to_owned(), "1".to_owned())
        );
    }

    // eu-west recovers: within the exploration period one request tries it again, and
    // traffic returns.
    eu.set_script(FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(50),
            jitter: Duration::ZERO,
            ..Latency::default()
        },
        ..FaultScript::default()
    })
    .unwrap();
    let recovered_at = Instant::now();
    let mut back_after = None;
    while recovered_at.elapsed() < exploration + Duration::from_secs(2) {
        if region_of(addr).await.0 == "eu-west" {
            back_after = Some(recovered_at.elapsed());
            break;
        }
    }
    let back_after = back_after.expect("traffic never returned to eu-west");
    assert!(
        back_after <= exploration + Duration::from_millis(700),
        "{back_after:?}"
    );
    for _ in 0..5 {
        assert_eq!(region_of(addr).await.0, "eu-west");
    }
}

#[tokio::test]
async fn round_robin_rotates_regions() {
    let us = sim("us", vec![]).await;
    let eu = sim("eu", vec![]).await;
    let gateway = start_gateway(&regional_config(&us, &eu, "round_robin", ""))
        .await
        .unwrap();

    let mut regions = Vec::new();
    for _ in 0..4 {
        regions.push(region_of(gateway.addr()).await.0);
    }
    assert_eq!(regions, ["us-east", "eu-west", "us-east", "eu-west"]);
}

#[tokio::test]
async fn sequential_fails_over_to_next_region() {
    let us = sim("us", vec![status_fault(503)]).await;
    let eu = sim("eu", vec![]).await;
    let gateway = start_gateway(&regional_config(&us, &eu, "sequential", ""))
        .await
        .unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-region"), Some("eu-west"));
    assert_eq!(reply.header("x-adpa-provider"), Some("gem"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
    let body = gateway.engine().routes();
    assert_eq!(
        body[0].targets,
        ["gem@us-east/sim-model", "gem@eu-west/sim-model"]
    );
}

#[tokio::test]
async fn region_keys_override_provider_key() {
    let us = sim("us", vec![]).await;
    let eu = sim("eu", vec![]).await;
    std::env::set_var("ADPA_TEST_REGION_KEY", "sk-region-eu");
    let config = format!(
        "[providers.gem]\nkind = \"openai\"\nmodels = [\"m\"]\napi_key = \"sk-provider\"\nregion_strategy = \"round_robin\"\n\
         [providers.gem.regions]\nus-east = {{ base_url = \"{}\" }}\n\
         eu-west = {{ base_url = \"{}\", api_key = \"${{ADPA_TEST_REGION_KEY}}\" }}\n",
        us.base_url(),
        eu.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();
    chat(gateway.addr(), "m").await;
    chat(gateway.addr(), "m").await;
    assert_eq!(us.stats().log[0].api_key.as_deref(), Some("sk-provider"));
    assert_eq!(eu.stats().log[0].api_key.as_deref(), Some("sk-region-eu"));
}

#[tokio::test]
async fn error_headers_name_region() {
    let us = sim("us", vec![status_fault(500)]).await;
    let eu = sim("eu", vec![status_fault(500)]).await;
    let gateway = start_gateway(&regional_config(&us, &eu, "sequential", ""))
        .await
        .unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("x-adpa-provider"), Some("gem"));
    assert_eq!(reply.header("x-adpa-region"), Some("eu-west"));
    assert_eq!(reply.header("x-adpa-model"), Some("sim-model"));
    let attempts = reply.json()["error"]["attempts"].clone();
    assert_eq!(attempts[0]["target"], "gem@us-east/sim-model");
    assert_eq!(attempts[1]["target"], "gem@eu-west/sim-model");
}
