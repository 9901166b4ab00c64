//! Shared helpers of the integration tests: a plain HTTP client for the gateway and
//! shortcuts for simulated providers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use adpa_testkit::sim::{Fault, FaultKind, FaultScript, SimHandle};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    client().request(request).await.unwrap()
}

/// Sends a chat completion request with extra headers and reads the reply.
pub async fn chat_with_headers(
    addr: SocketAddr,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    let response_headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers: response_headers,
        body,
    }
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, body: impl Into<Bytes>) -> Reply {
    let response = send(addr, method, path, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
    .to_string()
}

pub async fn chat(addr: SocketAddr, model: &str) -> Reply {
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        chat_body(model, false),
    )
    .await
}

pub async fn chat_stream(addr: SocketAddr, model: &str) -> Reply {
    request(addr, "POST", "/v1/chat/completions", chat_body(model, true)).await
}

/// Returns the `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

pub fn status_fault(status: u16) -> Fault {
    fault(FaultKind::Status {
        status,
        retry_after: None,
        retry_after_ms: None,
        body: None,
    })
}

pub fn fault(kind: FaultKind) -> Fault {
    Fault::always(kind)
}

pub fn script(faults: Vec<Fault>) -> FaultScript {
    FaultScript {
        faults,
        ..FaultScript::default()
    }
}

pub async fn sim(name: &str, faults: Vec<Fault>) -> SimHandle {
    SimHandle::start_local(name, script(faults)).await.unwrap()
}

/// Returns a provider table for a simulated provider.
pub fn provider(name: &str, sim: &SimHandle) -> String {
    format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-model\"]\n\n",
        sim.base_url()
    )
}

/// Waits until `check` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
