//! Anthropic and Gemini upstreams, spoken in their own wire formats, seen by clients in
//! OpenAI's.

mod support;

use adpa_testkit::sim::{Fault, FaultKind, SimHandle};
use adpa_testkit::start_gateway;
use serde_json::{json, Value};
use support::*;

fn native(name: &str, kind: &str, sim: &SimHandle, model: &str) -> String {
    let root = if kind == "gemini" { "v1beta" } else { "v1" };
    format!(
        "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"http://{}/{root}\"\napi_key = \"key-{name}\"\nmodels = [\"{model}\"]\n\n",
        sim.addr()
    )
}

async fn send_json(addr: std::net::SocketAddr, body: Value) -> Reply {
    request(addr, "POST", "/v1/chat/completions", body.to_string()).await
}

fn chunks(reply: &Reply) -> Vec<Value> {
    sse_data(&reply.text())
        .iter()
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn native_providers_read_as_openai() {
    for (kind, model) in [
        ("anthropic", "claude-3-5-sonnet"),
        ("gemini", "gemini-1.5-pro"),
    ] {
        let upstream = sim(kind, vec![]).await;
        let config = format!(
            "{}[routes.chat]\nprimary = \"native\"\n",
            native("native", kind, &upstream, model)
        );
        let gateway = start_gateway(&config).await.unwrap();
        let expected = format!("Hello from {kind}. This reply comes from a simulated provider.");

        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["object"], "chat.completion", "{kind}");
        assert_eq!(body["model"], model, "{kind}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            expected.as_str(),
            "{kind}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{kind}");
        assert_eq!(body["usage"]["completion_tokens"], 10, "{kind}");
        assert!(
            body["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{kind}"
        );

        let stream = send_json(
            gateway.addr(),
            json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
        assert_eq!(stream.status, 200, "{kind}");
        assert_eq!(
            sse_data(&stream.text()).last().map(String::as_str),
            Some("[DONE]"),
            "{kind}"
        );
        let chunks = chunks(&stream);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, expected, "{kind}");
        let finish: Vec<_> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["stop"], "{kind}");
        assert_eq!(
            chunks.last().unwrap()["usage"]["completion_tokens"],
            10,
            "{kind}"
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"),
            "{kind}"
        );

        // The key reached the provider in the header its API expects.
        assert_eq!(
            upstream.stats().log[0].api_key.as_deref(),
            Some("key-native"),
            "{kind}"
        );
        let models: Vec<_> = upstream
            .stats()
            .log
            .iter()
            .map(|r| r.model.clone())
            .collect();
        assert_eq!(models, [model, model], "{kind}");
    }
}

#[tokio::test]
async fn anthropic_overloaded_fails_over() {
    let anthropic = sim("anthropic", vec![status_fault(529)]).await;
    let backup = sim("backup", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"claude\"\nsecondaries = [\"backup\"]\n[routes.chat.retry]\nmax_retries = 0\n",
        native("claude", "anthropic", &anthropic, "claude-3-5-sonnet"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));
    assert_eq!(reply.header("x-adpa-attempts"), Some("2"));

    backup.set_script(script(vec![status_fault(500)])).unwrap();
    let failed = chat(gateway.addr(), "chat").await;
    let attempts = failed.json()["error"]["attempts"].clone();
    assert_eq!(attempts[0]["class"], "overloaded");
    assert_eq!(attempts[0]["status"], 529);
}

#[tokio::test]
async fn anthropic_error_mid_stream_ends_client_stream() {
    let anthropic = sim(
        "anthropic",
        vec![fault(FaultKind::StreamError { after_chunks: 2 })],
    )
    .await;
    let backup = sim("backup", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"claude\"\nsecondaries = [\"backup\"]\n",
        native("claude", "anthropic", &anthropic, "claude-3-5-sonnet"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let reply = chat_stream(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    let events = sse_data(&reply.text());
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(
        events.iter().any(|e| e.contains("Hello from anthropic")),
        "{events:?}"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "overloaded");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));
    // Content had reached the client, so there was no failover.
    assert_eq!(backup.stats().requests, 0);
}

#[tokio::test]
async fn native_stream_without_end_marker_fails() {
    for (kind, marker) in [("anthropic", "message_stop"), ("gemini", "finishReason")] {
        let upstream = sim(kind, vec![fault(FaultKind::NoDone)]).await;
        let config = format!(
            "{}[routes.chat]\nprimary = \"native\"\n",
            native("native", kind, &upstream, "m")
        );
        let gateway = start_gateway(&config).await.unwrap();

        let reply = chat_stream(gateway.addr(), "chat").await;
        let events = sse_data(&reply.text());
        assert!(!events.iter().any(|e| e == "[DONE]"), "{kind}: {events:?}");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "server", "{kind}");
        assert!(
            last["error"]["message"].as_str().unwrap().contains(marker),
            "{kind}: {last}"
        );
    }
}

#[tokio::test]
async fn native_errors_are_classified() {
    let cases = [
        ("gemini", 429, "rate_limited", 429),
        ("gemini", 503, "overloaded", 502),
        ("gemini", 400, "invalid_request", 400),
        ("anthropic", 429, "rate_limited", 429),
        ("anthropic", 401, "auth", 502),
        ("anthropic", 400, "invalid_request", 400),
    ];
    for (kind, status, class, client_status) in cases {
        let upstream = sim(kind, vec![status_fault(status)]).await;
        let config = format!(
            "{}[routes.chat]\nprimary = \"native\"\n[routes.chat.retry]\nmax_retries = 0\n",
            native("native", kind, &upstream, "m")
        );
        let gateway = start_gateway(&config).await.unwrap();
        let reply = chat(gateway.addr(), "chat").await;
        assert_eq!(
            reply.status,
            client_status,
            "{kind} {status}: {}",
            reply.text()
        );
        assert_eq!(
            reply.json()["error"]["attempts"][0]["class"],
            class,
            "{kind} {status}"
        );
    }
}

#[tokio::test]
async fn gemini_truncated_body_fails_over() {
    let gemini = sim("gemini", vec![fault(FaultKind::TruncatedJson)]).await;
    let backup = sim("backup", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"gem\"\nsecondaries = [\"backup\"]\n[routes.chat.retry]\nmax_retries = 0\n",
        native("gem", "gemini", &gemini, "gemini-1.5-pro"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));
}

#[tokio::test]
async fn native_models_fall_back_across_providers() {
    let mut overloaded = Fault::always(FaultKind::Status {
        status: 503,
        retry_after: None,
        retry_after_ms: None,
        body: None,
    });
    overloaded.model = Some("gemini-1.5-pro".to_owned());
    let gemini = sim("gemini", vec![overloaded]).await;
    let anthropic = sim("anthropic", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"gem\"\nsecondaries = [\"claude\"]\n\
         models = [[\"gemini-1.5-pro\", 1.0], [\"claude-3-5-sonnet\", 0.9]]\n[routes.chat.retry]\nmax_retries = 0\n",
        native("gem", "gemini", &gemini, "gemini-1.5-pro"),
        native("claude", "anthropic", &anthropic, "claude-3-5-sonnet")
    );
    let gateway = start_gateway(&config).await.unwrap();
    let reply = chat_stream(gateway.addr(), "chat").await;
    assert_eq!(reply.header("x-adpa-provider"), Some("claude"));
    assert_eq!(reply.header("x-adpa-model"), Some("claude-3-5-sonnet"));
    assert!(reply.text().contains("Hello from anthropic"));
}

#[tokio::test]
async fn untranslatable_request_fails_over() {
    let anthropic = sim("anthropic", vec![]).await;
    let backup = sim("backup", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"claude\"\nsecondaries = [\"backup\"]\n",
        native("claude", "anthropic", &anthropic, "claude-3-5-sonnet"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();

    // Anthropic has no audio input; an OpenAI-compatible target can take it.
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]}]});
    let reply = send_json(gateway.addr(), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));
    assert_eq!(anthropic.stats().requests, 0);
}

#[tokio::test]
async fn unsent_request_keeps_no_charge() {
    let anthropic = sim("anthropic", vec![]).await;
    let backup = sim("backup", vec![]).await;
    // Claude admits one request: one it could not express must not use it.
    let config = format!(
        "{}[providers.claude.rate_limit]\nrequests_per_second = 0.1\nburst_size = 1\n\
         {}[routes.chat]\nprimary = \"claude\"\nsecondaries = [\"backup\"]\n",
        native("claude", "anthropic", &anthropic, "claude-3-5-sonnet"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();

    let audio = json!({"model": "chat", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]}]});
    let reply = send_json(gateway.addr(), audio).await;
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));

    let reply = chat(gateway.addr(), "chat").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("claude"));
    assert_eq!(anthropic.stats().requests, 1);
}

#[tokio::test]
async fn legacy_functions_reach_only_openai_targets() {
    let gemini = sim("gemini", vec![]).await;
    let backup = sim("backup", vec![]).await;
    let config = format!(
        "{}{}[routes.chat]\nprimary = \"gem\"\nsecondaries = [\"backup\"]\n\
         [routes.native]\nprimary = \"gem\"\n",
        native("gem", "gemini", &gemini, "gemini-1.5-pro"),
        provider("backup", &backup)
    );
    let gateway = start_gateway(&config).await.unwrap();
    let legacy = |route: &str| {
        json!({
            "model": route,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "functions": [{"name": "weather", "parameters": {"type": "object"}}],
        })
    };

    let reply = send_json(gateway.addr(), legacy("chat")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-adpa-provider"), Some("backup"));

    // Without an OpenAI-compatible target the client learns what to send instead.
    let reply = send_json(gateway.addr(), legacy("native")).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("send `tools`"), "{message}");
    assert_eq!(gemini.stats().requests, 0);
}

#[tokio::test]
async fn stream_in_one_chunk_reaches_its_end() {
    use adpa_testkit::sim::{FaultScript, ResponseShape};

    for kind in ["openai", "anthropic", "gemini"] {
        // The whole stream arrives at once, so the events after the first content are
        // already buffered when the body ends.
        let script = FaultScript {
            response: ResponseShape {
                one_chunk: true,
                ..ResponseShape::default()
            },
            ..FaultScript::default()
        };
        let upstream = SimHandle::start_local(kind, script).await.unwrap();
        let config = if kind == "openai" {
            format!(
                "{}[routes.chat]\nprimary = \"native\"\n",
                provider("native", &upstream)
            )
        } else {
            format!(
                "{}[routes.chat]\nprimary = \"native\"\n",
                native("native", kind, &upstream, "m")
            )
        };
        let gateway = start_gateway(&config).await.unwrap();

        let reply = chat_stream(gateway.addr(), "chat").await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text());
        let events = sse_data(&reply.text());
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{kind}: {}",
            reply.text()
        );
        assert!(
            !reply.text().contains("\"error\""),
            "{kind}: {}",
            reply.text()
        );
    }
}
