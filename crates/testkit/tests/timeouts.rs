//! Timeouts: a stalled stream, a target that never answers, the request deadline.

mod support;

use std::time::{Duration, Instant};

use adpa_testkit::sim::FaultKind;
use adpa_testkit::start_gateway;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use support::*;

#[tokio::test]
async fn stall_after_first_chunk_ends_stream_with_error() {
    let upstream = sim("only", vec![fault(FaultKind::Stall { after_chunks: 1 })]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n[routes.chat.timeouts]\nread_timeout = \"500ms\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let response = send(
        gateway.addr(),
        "POST",
        "/v1/chat/completions",
        chat_body("chat", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut frames = BodyStream::new(response.into_body());

    let mut received = String::new();
    let mut first_content_at = None;
    while let Some(frame) = frames.next().await {
        let data = frame.unwrap().into_data().unwrap();
        received.push_str(&String::from_utf8_lossy(&data));
        if first_content_at.is_none() && received.contains("Hello from") {
            first_content_at = Some(Instant::now());
        }
    }
    let ended_after = first_content_at
        .expect("content before the stall")
        .elapsed();

    assert!(
        ended_after < Duration::from_secs(1),
        "stream ended {ended_after:?} after the stall"
    );
    let events = sse_data(&received);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{received}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{last}");
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["request_id"].is_string());

    // The gateway closed the stalled upstream connection.
    assert!(eventually(Duration::from_secs(2), || upstream.stats().disconnects == 1).await);
}

#[tokio::test]
async fn hang_before_first_byte_fails_over() {
    let primary = sim("primary", vec![fault(FaultKind::Hang)]).await;
    let secondary = sim("secondary", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n\
         [routes.chat.retry]\nmax_retries = 0\n[routes.chat.timeouts]\nfirst_byte_timeout = \"300ms\"\n",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    for stream in [false, true] {
        let started = Instant::now();
        let reply = if stream {
            chat_stream(gateway.addr(), "chat").await
        } else {
            chat(gateway.addr(), "chat").await
        };
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-adpa-provider"), Some("secondary"));
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(800),
            "{elapsed:?}"
        );
        if stream {
            assert_eq!(
                sse_data(&reply.text()).last().map(String::as_str),
                Some("[DONE]")
            );
        }
    }
    assert!(eventually(Duration::from_secs(2), || primary.stats().disconnects == 2).await);
}

#[tokio::test]
async fn stream_without_done_ends_with_error() {
    let upstream = sim("only", vec![fault(FaultKind::NoDone)]).await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"only\"\n",
        provider("only", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let reply = chat_stream(gateway.addr(), "chat").await;
    let events = sse_data(&reply.text());
    assert!(events.iter().any(|e| e.contains("Hello from")));
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "server");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("[DONE]"));
}

#[tokio::test]
async fn total_timeout_bounds_all_attempts() {
    let primary = sim("primary", vec![fault(FaultKind::Hang)]).await;
    let secondary = sim("secondary", vec![fault(FaultKind::Hang)]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"primary\"\nsecondaries = [\"secondary\"]\n\
         [routes.chat.retry]\nmax_retries = 5\nbase_delay = \"10ms\"\n\
         [routes.chat.timeouts]\nfirst_byte_timeout = \"400ms\"\ntotal_timeout = \"1s\"\n",
        provider("primary", &primary),
        provider("secondary", &secondary)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let started = Instant::now();
    let reply = chat(gateway.addr(), "chat").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1300),
        "{elapsed:?}"
    );
    assert_eq!(reply.json()["error"]["code"], "deadline_exceeded");
}
