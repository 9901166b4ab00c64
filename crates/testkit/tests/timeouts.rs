//! Timeouts: a stalled stream, a target that never responds, the request deadline.

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

#[tokio::test]
async fn blocked_write_times_out() {
    // An upstream that accepts connections but never reads: a large request body fills
    // the socket buffers and the write blocks.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });

    let config = format!(
        "[server]\nmax_body_size = \"64MiB\"\n\
         [providers.deaf]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"m\"]\n\
         [routes.chat]\nprimary = \"deaf\"\n[routes.chat.retry]\nmax_retries = 0\n\
         [routes.chat.timeouts]\nwrite_timeout = \"300ms\"\n"
    );
    let gateway = start_gateway(&config).await.unwrap();
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "x".repeat(40 * 1024 * 1024)}],
    })
    .to_string();

    let started = Instant::now();
    let reply = request(gateway.addr(), "POST", "/v1/chat/completions", body).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["attempts"][0]["class"], "timeout", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("write timed out"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[tokio::test]
async fn connect_times_out_on_full_backlog() {
    // A listener that never accepts, with its accept queue already full: the kernel drops
    // further SYNs, so a new connection neither opens nor fails.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let filler = tokio::net::TcpSocket::new_v4().unwrap();
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), filler.connect(addr)).await
        {
            fillers.push(stream);
        }
    }

    let config = format!(
        "[providers.full]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"m\"]\n\
         [routes.chat]\nprimary = \"full\"\n[routes.chat.retry]\nmax_retries = 0\n\
         [routes.chat.timeouts]\nconnect_timeout = \"300ms\"\n"
    );
    let gateway = start_gateway(&config).await.unwrap();

    let started = Instant::now();
    let reply = chat(gateway.addr(), "chat").await;
    let elapsed = started.elapsed();
    let error = &reply.json()["error"];
    assert_eq!(error["attempts"][0]["class"], "timeout", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("connect timed out"),
        "{error}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}
