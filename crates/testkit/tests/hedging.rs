//! Hedged attempts: a second attempt on the next target when the first is slow.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use adpa_gateway::Gateway;
use adpa_testkit::sim::{FaultScript, Latency, SimHandle};
use adpa_testkit::start_gateway;
use support::*;

fn with_latency(millis: u64) -> FaultScript {
    FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(millis),
            jitter: Duration::ZERO,
            ..Latency::default()
        },
        ..FaultScript::default()
    }
}

async fn sim_with_latency(name: &str, millis: u64) -> SimHandle {
    SimHandle::start_local(name, with_latency(millis))
        .await
        .unwrap()
}

/// Writes a route over `slow` then `fast` that hedges after `delay`, with `retry` as
/// the retry settings.
fn config(slow: &SimHandle, fast: &SimHandle, delay: &str, retry: &str) -> String {
    format!(
        "{}{}[routes.chat]\nprimary = \"slow\"\nsecondaries = [\"fast\"]\nhedge_delay = \"{delay}\"\n\
         [routes.chat.retry]\nmax_retries = 0\n{retry}",
        provider("slow", slow),
        provider("fast", fast),
    )
}

/// Starts a gateway over `slow` then `fast` that hedges after `delay`, with a retry
/// budget that allows a hedge for every request.
async fn hedged_gateway(slow: &SimHandle, fast: &SimHandle, delay: &str) -> Gateway {
    start_gateway(&config(slow, fast, delay, "budget_ratio = 1.0\n"))
        .await
        .unwrap()
}

/// Sends `count` requests at once and returns each reply with its latency.
async fn concurrent(addr: SocketAddr, count: usize, stream: bool) -> Vec<(Reply, Duration)> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = if stream {
                    chat_stream(addr, "chat").await
                } else {
                    chat(addr, "chat").await
                };
                (reply, started.elapsed())
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

fn median(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[latencies.len() / 2]
}

#[tokio::test]
async fn hedge_answers_and_cancels_slow_primary() {
    let slow = sim_with_latency("slow", 2000).await;
    let fast = sim_with_latency("fast", 50).await;
    let gateway = hedged_gateway(&slow, &fast, "200ms").await;
    let addr = gateway.addr();

    let replies = concurrent(addr, 20, false).await;
    for (reply, _) in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-adpa-provider"), Some("fast"));
        assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
    }

    // 200 ms of hedge delay plus the secondary's 50 ms, with room for scheduling; far
    // below the primary's 2 s.
    let p50 = median(replies.iter().map(|(_, latency)| *latency).collect());
    eprintln!("hedged p50 latency: {p50:?}");
    assert!(p50 >= Duration::from_millis(250), "p50 {p50:?}");
    assert!(p50 < Duration::from_millis(400), "p50 {p50:?}");

    // Every primary attempt was cancelled: the provider saw each connection close
    // before it responded.
    assert!(
        eventually(Duration::from_secs(2), || slow.stats().disconnects == 20).await,
        "{:?}",
        slow.stats()
    );
    assert_eq!(slow.stats().completed, 0);
    assert_eq!(fast.stats().requests, 20);
}

#[tokio::test]
async fn streamed_hedge_wins_with_whole_stream() {
    let slow = sim_with_latency("slow", 2000).await;
    let fast = sim_with_latency("fast", 50).await;
    let gateway = hedged_gateway(&slow, &fast, "200ms").await;
    let addr = gateway.addr();

    let replies = concurrent(addr, 5, true).await;
    for (reply, latency) in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-adpa-provider"), Some("fast"));
        let events = sse_data(&reply.text());
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(*latency < Duration::from_secs(1), "{latency:?}");
    }
    assert!(eventually(Duration::from_secs(2), || slow.stats().disconnects == 5).await);
}

#[tokio::test]
async fn failed_hedge_leaves_first_attempt_running() {
    let slow = sim_with_latency("slow", 400).await;
    let fast = sim("fast", vec![status_fault(500)]).await;
    let gateway = hedged_gateway(&slow, &fast, "100ms").await;

    let started = Instant::now();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("slow"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
    let latency = started.elapsed();
    assert!(latency >= Duration::from_millis(400), "{latency:?}");
    assert!(latency < Duration::from_millis(700), "{latency:?}");
    assert_eq!(fast.stats().requests, 1);
    assert_eq!(slow.stats().disconnects, 0);
}

#[tokio::test]
async fn first_answer_cancels_running_hedge() {
    let slow = sim_with_latency("slow", 400).await;
    let slower = sim_with_latency("slower", 2000).await;
    let gateway = hedged_gateway(&slow, &slower, "100ms").await;

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("slow"));
    assert!(eventually(Duration::from_secs(1), || slower.stats().disconnects == 1).await);
}

#[tokio::test]
async fn hedges_draw_on_the_retry_budget() {
    let slow = sim_with_latency("slow", 600).await;
    let fast = sim_with_latency("fast", 20).await;
    // No share of requests, and a floor of 0.3 per second over 10 s: three hedges.
    let retry = "budget_ratio = 0.0\nbudget_min_per_second = 0.3\nbudget_window = \"10s\"\n";
    let gateway = start_gateway(&config(&slow, &fast, "100ms", retry))
        .await
        .unwrap();

    let replies = concurrent(gateway.addr(), 10, false).await;
    let by_fast = replies
        .iter()
        .filter(|(reply, _)| reply.header("x-adpa-provider") == Some("fast"))
        .count();
    assert!(replies.iter().all(|(reply, _)| reply.status == 200));
    assert_eq!(by_fast, 3);
    assert_eq!(fast.stats().requests, 3);
    assert_eq!(slow.stats().completed, 7);
}

#[tokio::test]
async fn percentile_delay_follows_recent_latency() {
    let slow = sim_with_latency("slow", 100).await;
    let fast = sim_with_latency("fast", 30).await;
    let gateway = hedged_gateway(&slow, &fast, "p50").await;
    let addr = gateway.addr();

    // Without samples the percentile is unknown and nothing is hedged.
    slow.set_script(with_latency(600)).unwrap();
    let reply = chat(addr, "chat").await;
    assert_eq!(reply.header("x-adpa-provider"), Some("slow"));
    assert_eq!(fast.stats().requests, 0);

    // Twenty responses in about 100 ms set the median near 100 ms.
    slow.set_script(with_latency(100)).unwrap();
    for (reply, _) in concurrent(addr, 20, false).await {
        assert_eq!(reply.header("x-adpa-provider"), Some("slow"));
    }
    assert_eq!(fast.stats().requests, 0);

    // Now the primary slows down and the hedge starts after about the median.
    slow.set_script(with_latency(2000)).unwrap();
    let started = Instant::now();
    let reply = chat(addr, "chat").await;
    let latency = started.elapsed();
    assert_eq!(reply.header("x-adpa-provider"), Some("fast"));
    assert!(latency < Duration::from_millis(450), "{latency:?}");
    assert_eq!(fast.stats().requests, 1);
}

#[tokio::test]
async fn both_failing_moves_on_with_charge_back() {
    let mut failing_slowly = with_latency(300);
    failing_slowly.faults = vec![status_fault(503)];
    let slow = SimHandle::start_local("slow", failing_slowly)
        .await
        .unwrap();
    let broken = sim("broken", vec![status_fault(500)]).await;
    let healthy = sim("healthy", vec![]).await;
    // The hedged target's token limit fits two requests' estimates: a charge that was
    // not handed back after a failed hedge would rule it out from the third request on.
    let config = format!(
        "{}{}[providers.broken.rate_limit]\nrequests_per_second = 100\nburst_size = 100\ntokens_per_minute = 20\n\
         {}[routes.chat]\nprimary = \"slow\"\nsecondaries = [\"broken\", \"healthy\"]\nhedge_delay = \"100ms\"\n\
         [routes.chat.retry]\nbudget_ratio = 1.0\nbase_delay = \"10ms\"\n",
        provider("slow", &slow),
        provider("broken", &broken),
        provider("healthy", &healthy),
    );
    let gateway = start_gateway(&config).await.unwrap();

    for _ in 0..4 {
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-adpa-provider"), Some("healthy"));
        assert_eq!(reply.header("x-adpa-attempts"), Some("3"));
    }
    // The first target responds with 503, which is retryable, but with its hedge failed too
    // the request moved on at once instead of retrying it.
    assert_eq!(slow.stats().requests, 4);
    assert_eq!(broken.stats().requests, 4);
    assert_eq!(healthy.stats().requests, 4);
}

#[tokio::test]
async fn no_hedge_without_a_target_that_suits() {
    let slow = sim_with_latency("slow", 400).await;
    let fast = sim_with_latency("fast", 20).await;
    // One hedge in the budget's window: spending it on a request that cannot hedge
    // would leave none for the next one.
    let config = format!(
        "[providers.slow]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n\
         [providers.fast]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n\
         [routes.chat]\nprimary = \"slow\"\nsecondaries = [\"fast\"]\nhedge_delay = \"100ms\"\n\
         models = [{{ name = \"slow/m\", weight = 1.0 }}, {{ name = \"fast/m\", weight = 0.9, tools = false }}]\n\
         [routes.chat.retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0.1\nbudget_window = \"10s\"\n",
        slow.base_url(),
        fast.base_url()
    );
    let gateway = start_gateway(&config).await.unwrap();

    let with_tools = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "What is the weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    });
    let reply = chat_with_headers(gateway.addr(), with_tools.to_string(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("slow"));
    assert_eq!(fast.stats().requests, 0);

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.header("x-adpa-provider"), Some("fast"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
}

#[tokio::test]
async fn check_warns_about_hedges_that_cannot_start() {
    let one = sim("one", vec![]).await;
    let two = sim("two", vec![]).await;
    let config = format!(
        "{}{}[routes.alone]\nprimary = \"one\"\nhedge_delay = \"200ms\"\n\
         [routes.late]\nprimary = \"one\"\nsecondaries = [\"two\"]\nhedge_delay = \"10m\"\n\
         [routes.fine]\nprimary = \"one\"\nsecondaries = [\"two\"]\nhedge_delay = \"p95\"\n",
        provider("one", &one),
        provider("two", &two),
    );
    let gateway = start_gateway(&config).await.unwrap();
    let warnings: Vec<String> = gateway
        .engine()
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();

    let about = |route: &str| {
        warnings
            .iter()
            .filter(|w| w.starts_with(&format!("routes.{route}.hedge_delay")))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(about("alone")[0].contains("one target"), "{warnings:?}");
    assert!(about("late")[0].contains("total_timeout"), "{warnings:?}");
    assert!(about("fine").is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn hedge_refused_by_budget_leaves_target_for_failover() {
    let mut failing_slowly = with_latency(300);
    failing_slowly.faults = vec![status_fault(503)];
    let slow = SimHandle::start_local("slow", failing_slowly)
        .await
        .unwrap();
    let backup = sim("backup", vec![]).await;
    // The backup admits one request: the hedge that the empty budget refused must not
    // have used it up.
    let config = format!(
        "{}{}[providers.backup.rate_limit]\nrequests_per_second = 0.1\nburst_size = 1\n\
         [routes.chat]\nprimary = \"slow\"\nsecondaries = [\"backup\"]\nhedge_delay = \"100ms\"\n\
         [routes.chat.retry]\nbudget_ratio = 0.0\nbudget_min_per_second = 0.0\n",
        provider("slow", &slow),
        provider("backup", &backup),
    );
    let gateway = start_gateway(&config).await.unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));
    assert_eq!(backup.stats().requests, 1);
}
