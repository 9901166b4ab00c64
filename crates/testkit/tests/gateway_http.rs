//! The gateway's HTTP surface: client errors, endpoints, headers, disconnects and
//! shutdown.

mod support;

use std::time::Duration;

use adpa_testkit::sim::{FaultScript, ResponseShape, SimHandle};
use adpa_testkit::start_gateway;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use support::*;

async fn healthy_gateway() -> (adpa_gateway::Gateway, SimHandle) {
    let upstream = sim("upstream", vec![]).await;
    let config = format!(
        "[server]\nmax_body_size = \"1KiB\"\n{}[routes.chat]\nprimary = \"local\"\n[routes.fast]\nprimary = \"local\"\n",
        provider("local", &upstream)
    );
    (start_gateway(&config).await.unwrap(), upstream)
}

#[tokio::test]
async fn malformed_json_gets_400_with_position() {
    let (gateway, upstream) = healthy_gateway().await;
    let reply = request(
        gateway.addr(),
        "POST",
        "/v1/chat/completions",
        "{\"model\": \"chat\",\n \"messages\": [}",
    )
    .await;
    assert_eq!(reply.status, 400);
    let body = reply.json();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_json");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 2 column 15"), "{message}");
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(upstream.stats().requests, 0);

    let missing = request(
        gateway.addr(),
        "POST",
        "/v1/chat/completions",
        r#"{"model":"chat"}"#,
    )
    .await;
    assert_eq!(missing.status, 400);
    assert!(missing.text().contains("missing required field `messages`"));

    // The server keeps serving after bad input.
    assert_eq!(chat(gateway.addr(), "chat").await.status, 200);
}

#[tokio::test]
async fn unknown_route_gets_404_naming_routes() {
    let (gateway, _upstream) = healthy_gateway().await;
    let reply = chat(gateway.addr(), "gpt-7").await;
    assert_eq!(reply.status, 404);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "model_not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`gpt-7`"), "{message}");
    assert!(message.contains("chat, fast, sim-model"), "{message}");
    assert_eq!(reply.header("x-adpa-attempts"), Some("0"));
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let (gateway, upstream) = healthy_gateway().await;
    let big = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "x".repeat(2_000)}],
    })
    .to_string();
    let reply = request(gateway.addr(), "POST", "/v1/chat/completions", big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "request_too_large");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024 bytes"));
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test]
async fn models_lists_routes() {
    let (gateway, _upstream) = healthy_gateway().await;
    let reply = request(gateway.addr(), "GET", "/v1/models", "").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "fast", "sim-model"]);
    assert_eq!(body["data"][0]["targets"][0], "local/sim-model");
}

#[tokio::test]
async fn health_and_readiness() {
    let (gateway, _upstream) = healthy_gateway().await;
    assert_eq!(
        request(gateway.addr(), "GET", "/healthz", "").await.status,
        200
    );
    assert_eq!(
        request(gateway.addr(), "GET", "/readyz", "").await.status,
        200
    );
    let unknown = request(gateway.addr(), "GET", "/v2/things", "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "unknown_url");
    assert!(unknown.header("x-request-id").is_some());

    let wrong_method = request(gateway.addr(), "GET", "/v1/chat/completions", "").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn response_headers_name_the_target() {
    let (gateway, _upstream) = healthy_gateway().await;
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.header("x-adpa-provider"), Some("local"));
    assert_eq!(reply.header("x-adpa-model"), Some("sim-model"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("1"));
    assert!(reply
        .header("x-request-id")
        .is_some_and(|id| id.starts_with("req_")));

    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/v1/chat/completions", gateway.addr()))
        .header("x-request-id", "client-chosen-42")
        .body(http_body_util::Full::new(bytes::Bytes::from(chat_body(
            "chat", false,
        ))))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
}

async fn slow_stream_upstream() -> SimHandle {
    let script = FaultScript {
        response: ResponseShape {
            chunks: 20,
            chunk_delay: Duration::from_millis(50),
            ..Default::default()
        },
        ..FaultScript::default()
    };
    SimHandle::start_local("slow", script).await.unwrap()
}

#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let upstream = slow_stream_upstream().await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"slow\"\n",
        provider("slow", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let response = send(
        gateway.addr(),
        "POST",
        "/v1/chat/completions",
        chat_body("chat", true),
    )
    .await;
    let mut frames = BodyStream::new(response.into_body());
    let first = frames.next().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: "));
    drop(frames);

    assert!(
        eventually(Duration::from_secs(2), || upstream.stats().disconnects == 1).await,
        "upstream saw no disconnect: {:?}",
        upstream.stats()
    );
    assert_eq!(upstream.stats().completed, 0);
}

#[tokio::test]
async fn shutdown_drains_in_flight_stream() {
    let upstream = slow_stream_upstream().await;
    let config = format!(
        "{}[routes.chat]\nprimary = \"slow\"\n",
        provider("slow", &upstream)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let addr = gateway.addr();

    let in_flight = tokio::spawn(async move { chat_stream(addr, "chat").await });
    assert!(eventually(Duration::from_secs(2), || upstream.stats().requests == 1).await);

    gateway.shutdown().await.unwrap();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        sse_data(&reply.text()).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(upstream.stats().completed, 1);

    // New connections are refused once the gateway has stopped.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
