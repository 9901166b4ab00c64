//! The route concurrency limit: slots, a bounded priority queue, and cancellation.

mod support;

use std::time::{Duration, Instant};

use adpa_testkit::sim::{FaultScript, Latency, ResponseShape, SimHandle};
use adpa_testkit::start_gateway;
use support::*;

async fn slow_upstream(millis: u64) -> SimHandle {
    let script = FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(millis),
            jitter: Duration::ZERO,
            ..Latency::default()
        },
        ..FaultScript::default()
    };
    SimHandle::start_local("slow", script).await.unwrap()
}

fn config(upstream: &SimHandle, max: u32, queue: u32) -> String {
    format!(
        "{}[routes.chat]\nprimary = \"slow\"\n[routes.chat.concurrency]\nmax_concurrent = {max}\nqueue_size = {queue}\nqueue_timeout = \"5s\"\n",
        provider("slow", upstream)
    )
}

async fn chat_with_priority(addr: std::net::SocketAddr, priority: &str) -> (u16, Instant) {
    let reply = chat_with_headers(
        addr,
        chat_body("chat", false),
        &[("x-adpa-priority", priority)],
    )
    .await;
    (reply.status, Instant::now())
}

#[tokio::test]
async fn full_queue_rejects_at_once() {
    let upstream = slow_upstream(300).await;
    let gateway = start_gateway(&config(&upstream, 2, 1)).await.unwrap();
    let addr = gateway.addr();

    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(tokio::spawn(async move { chat(addr, "chat").await.status }));
    }
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 2).await);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let started = Instant::now();
    let rejected = chat(addr, "chat").await;
    assert_eq!(rejected.status, 503, "{}", rejected.text());
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rejected.header("retry-after"), Some("1"));
    assert_eq!(rejected.json()["error"]["code"], "overloaded");

    for request in running {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(upstream.stats().requests, 3);
}

#[tokio::test]
async fn high_priority_overtakes_queue() {
    let upstream = slow_upstream(200).await;
    let gateway = start_gateway(&config(&upstream, 1, 10)).await.unwrap();
    let addr = gateway.addr();

    let holder = tokio::spawn(chat_with_priority(addr, "normal"));
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);
    let low = tokio::spawn(chat_with_priority(addr, "low"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let high = tokio::spawn(chat_with_priority(addr, "high"));

    let (held_status, _) = holder.await.unwrap();
    let (low_status, low_done) = low.await.unwrap();
    let (high_status, high_done) = high.await.unwrap();
    assert_eq!((held_status, low_status, high_status), (200, 200, 200));
    assert!(
        high_done < low_done,
        "the high-priority request finished after the low one"
    );
}

/// Sends one request that takes the only slot, then one that queues behind it and
/// disconnects; returns the first, still running.
async fn leave_queue(
    addr: std::net::SocketAddr,
    upstream: &SimHandle,
) -> tokio::task::JoinHandle<u16> {
    let holder = tokio::spawn(async move { chat(addr, "chat").await.status });
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);
    let quitter = tokio::spawn(async move { chat(addr, "chat").await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    quitter.abort();
    let _ = quitter.await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    holder
}

#[tokio::test]
async fn disconnect_while_queued_frees_place() {
    let upstream = slow_upstream(400).await;
    let gateway = start_gateway(&config(&upstream, 1, 1)).await.unwrap();
    let addr = gateway.addr();

    // A queued client gives up: its connection closes while it waits.
    let holder = leave_queue(addr, &upstream).await;

    // Its queue place is free again: the next request waits instead of being rejected.
    let next = chat(addr, "chat").await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(holder.await.unwrap(), 200);
    assert_eq!(upstream.stats().requests, 2);
}

#[tokio::test]
async fn stream_holds_slot_until_it_ends() {
    let script = FaultScript {
        response: ResponseShape {
            chunks: 6,
            chunk_delay: Duration::from_millis(60),
            ..Default::default()
        },
        ..FaultScript::default()
    };
    let upstream = SimHandle::start_local("slow", script).await.unwrap();
    let gateway = start_gateway(&config(&upstream, 1, 0)).await.unwrap();
    let addr = gateway.addr();

    let streaming = tokio::spawn(async move { chat_stream(addr, "chat").await });
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(chat(addr, "chat").await.status, 503);

    let stream = streaming.await.unwrap();
    assert_eq!(
        sse_data(&stream.text()).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(chat(addr, "chat").await.status, 200);
}

#[tokio::test]
async fn invalid_priority_is_rejected() {
    let upstream = slow_upstream(0).await;
    let gateway = start_gateway(&config(&upstream, 1, 0)).await.unwrap();
    let (status, _) = chat_with_priority(gateway.addr(), "urgent").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn load_shedding_drops_low_priority_first() {
    let upstream = slow_upstream(300).await;
    let config = format!(
        "{}[routes.chat.load_shedding]\nmax_load = 0.5\nshed_strategy = \"priority\"\n",
        config(&upstream, 2, 2)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    // One request in flight: load 0.5, nothing is shed.
    let first = tokio::spawn(chat_with_priority(addr, "low"));
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);
    // Two in flight: load 1.0.
    let second = tokio::spawn(chat_with_priority(addr, "normal"));
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 2).await);

    let started = Instant::now();
    let (low, _) = chat_with_priority(addr, "low").await;
    let (normal, _) = chat_with_priority(addr, "normal").await;
    assert_eq!((low, normal), (503, 503));
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );

    // High priority queues and is served.
    let (high, _) = chat_with_priority(addr, "high").await;
    assert_eq!(high, 200);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    assert_eq!(upstream.stats().requests, 3);

    let shed = chat_with_priority(addr, "low").await;
    assert_eq!(shed.0, 200, "load is back to 0 once the requests ended");
}

#[tokio::test]
async fn load_shedding_needs_concurrency() {
    let upstream = slow_upstream(0).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"slow\"\n[routes.chat.load_shedding]\nmax_load = 0.8\n",
        provider("slow", &upstream)
    );
    let err = start_gateway(&config).await.map(|_| ()).unwrap_err();
    assert!(
        err.contains("routes.chat.load_shedding") && err.contains("concurrency"),
        "{err}"
    );
}

/// Returns the script of a provider that serves ten requests at full speed and slows
/// down by 50 ms for each request in flight beyond them.
fn queueing_provider() -> FaultScript {
    FaultScript {
        latency: Latency {
            fixed: Duration::from_millis(100),
            per_in_flight: Duration::from_millis(50),
            capacity: 10,
            ..Latency::default()
        },
        ..FaultScript::default()
    }
}

#[tokio::test]
async fn adaptive_limit_backs_off_from_queueing_provider() {
    let upstream = SimHandle::start_local("queueing", queueing_provider())
        .await
        .unwrap();
    let config = format!(
        "{}[routes.chat]\nprimary = \"queueing\"\n[routes.chat.concurrency]\nmax_concurrent = 40\n\
         queue_size = 100\nqueue_timeout = \"20s\"\nadaptive = true\n",
        provider("queueing", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    // Light traffic first sets the latency baseline at about 100 ms.
    for _ in 0..12 {
        assert_eq!(chat(addr, "chat").await.status, 200);
    }

    // Then 40 clients at once: at 40 in flight the provider would take 1.6 s.
    let stop = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < stop {
                    let started = Instant::now();
                    let reply = chat(addr, "chat").await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();

    // Once the limit has settled, the provider has far fewer than 40 in flight at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    upstream.reset_stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = upstream.stats();

    let mut served = 0;
    for client in clients {
        served += client.await.unwrap().len();
    }
    eprintln!(
        "adaptive: peak in flight {} after settling, {} requests in 2 s, {served} in all",
        settled.peak_in_flight, settled.completed
    );
    assert!(settled.peak_in_flight <= 25, "{settled:?}");
    // At 40 in flight the provider would complete 25 requests per second.
    assert!(settled.completed > 2 * 25, "{}", settled.completed);
}

#[tokio::test]
async fn leaving_queue_returns_rate_limit() {
    let upstream = slow_upstream(400).await;
    // Two requests pass the route's rate limit; the queued one that leaves must give
    // its place back.
    let config = format!(
        "{}[routes.chat]\nprimary = \"slow\"\n[routes.chat.concurrency]\nmax_concurrent = 1\n\
         queue_size = 5\n[routes.chat.rate_limit]\nrequests_per_second = 0.1\nburst_size = 2\n",
        provider("slow", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    let holder = leave_queue(addr, &upstream).await;

    let next = chat(addr, "chat").await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(holder.await.unwrap(), 200);
}
