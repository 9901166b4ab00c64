use super::*;
use crate::error::ErrorClass;

fn class(status: u16, kind: &str, message: &str) -> ErrorClass {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    classify_error(status, body.to_string().as_bytes()).class
}

#[test]
fn classifies_real_error_bodies() {
    let cases = [
        (400, "invalid_request_error", "messages: roles must alternate between \"user\" and \"assistant\"", ErrorClass::InvalidRequest),
        (400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum", ErrorClass::ContextLength),
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.", ErrorClass::QuotaExhausted),
        (401, "authentication_error", "invalid x-api-key", ErrorClass::Auth),
        (403, "permission_error", "Your API key does not have permission to use the specified resource.", ErrorClass::Auth),
        (404, "not_found_error", "model: claude-9", ErrorClass::NotFound),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", ErrorClass::InvalidRequest),
        (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", ErrorClass::RateLimited),
        (500, "api_error", "Internal server error", ErrorClass::Server),
        (529, "overloaded_error", "Overloaded", ErrorClass::Overloaded),
        (504, "timeout_error", "Request timed out", ErrorClass::Timeout),
        (400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000", ErrorClass::ContextLength),
        (402, "billing_error", "Your account has an outstanding balance.", ErrorClass::QuotaExhausted),
    ];
    for (status, kind, message, expected) in cases {
        assert_eq!(
            class(status, kind, message),
            expected,
            "{status} {kind}: {message}"
        );
    }
}

#[test]
fn non_json_bodies_use_status() {
    assert_eq!(classify_error(529, b"").class, ErrorClass::Overloaded);
    assert_eq!(
        classify_error(502, b"<html>bad gateway</html>").class,
        ErrorClass::Server
    );
    let error = classify_error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(error.message, "Overloaded");
    assert_eq!(error.status, Some(529));
}

fn request(body: Value) -> ChatRequest {
    ChatRequest::parse(body.to_string().as_bytes()).unwrap()
}

#[test]
fn translates_request() {
    let request = request(json!({
        "model": "chat",
        "stream": true,
        "temperature": 1.5,
        "stop": "END",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    }));
    let body: Value =
        serde_json::from_slice(&request_body(&request, "claude-3-5-sonnet").unwrap()).unwrap();

    assert_eq!(body["model"], "claude-3-5-sonnet");
    assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["stream"], true);
    // Anthropic's range ends at 1.
    assert_eq!(body["temperature"], 1.0);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));

    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<_> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // The tool result and the next user message merge, so roles alternate.
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        messages[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["input"], json!({"x": 1}));
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][1]["text"], "Thanks");
}

#[test]
fn max_tokens_passes_through() {
    let request = request(
        json!({"model": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let body: Value = serde_json::from_slice(&request_body(&request, "m").unwrap()).unwrap();
    assert_eq!(body["max_tokens"], 50);
    assert!(body.get("stream").is_none());
}

#[test]
fn translates_response() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet",
        "content": [{"type": "text", "text": "Hello"}, {"type": "tool_use", "id": "tu_1", "name": "look", "input": {"x": 1}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    });
    let (bytes, usage) = complete(body.to_string().as_bytes(), "claude-3-5-sonnet").unwrap();
    let completion: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "Hello");
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"x\":1}"
    );
    assert_eq!(completion["usage"]["total_tokens"], 15);
    assert_eq!(usage.map(|u| u.prompt_tokens), Some(10));

    assert_eq!(
        complete(b"{\"id\":", "m").unwrap_err().class,
        ErrorClass::Server
    );
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

#[test]
fn translates_stream() {
    let mut decoder = Decoder::new(ChunkWriter::new("claude", true));
    let start = decoder
        .decode(event("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 12, "output_tokens": 1}}})))
        .unwrap();
    assert_eq!(start.kind(), super::super::EventKind::Preamble);
    assert_eq!(start.frames.len(), 1);

    let ping = decoder
        .decode(event("ping", json!({"type": "ping"})))
        .unwrap();
    assert!(ping.frames.is_empty());
    let block = decoder
        .decode(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
        .unwrap();
    assert_eq!(block.kind(), super::super::EventKind::Preamble);

    let text = decoder
        .decode(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})))
        .unwrap();
    assert_eq!(text.kind(), super::super::EventKind::Content);
    let chunk: Value = serde_json::from_slice(&text.frames[0][6..]).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(chunk["id"], "chatcmpl-msg_1");

    let finish = decoder
        .decode(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}})))
        .unwrap();
    let chunk: Value = serde_json::from_slice(&finish.frames[0][6..]).unwrap();
    assert_eq!(chunk["choices"][0]["finish_reason"], "length");

    let stop = decoder
        .decode(event("message_stop", json!({"type": "message_stop"})))
        .unwrap();
    assert_eq!(stop.kind(), super::super::EventKind::Done);
    assert_eq!(stop.frames.len(), 2, "usage chunk and [DONE]");
    let usage: Value = serde_json::from_slice(&stop.frames[0][6..]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 19);
    assert_eq!(&stop.frames[1][..], b"data: [DONE]\n\n");
}

#[test]
fn stream_error_event_is_classified() {
    let mut decoder = Decoder::new(ChunkWriter::new("claude", false));
    let error = decoder
        .decode(event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})))
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Overloaded);
    assert_eq!(error.message, "Overloaded");
}

#[test]
fn stream_tool_calls() {
    let mut decoder = Decoder::new(ChunkWriter::new("claude", false));
    let start = decoder
        .decode(event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu_1", "name": "look", "input": {}}})))
        .unwrap();
    let chunk: Value = serde_json::from_slice(&start.frames[0][6..]).unwrap();
    assert_eq!(
        chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "look"
    );
    let args = decoder
        .decode(event("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}})))
        .unwrap();
    let chunk: Value = serde_json::from_slice(&args.frames[0][6..]).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    assert_eq!(
        chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"x\""
    );
}

#[test]
fn legacy_functions_are_rejected() {
    let legacy = request(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Weather?"}],
        "functions": [{"name": "weather", "parameters": {"type": "object"}}],
        "function_call": "auto",
    }));
    let error = request_body(&legacy, "m").unwrap_err();
    assert_eq!(error.class, ErrorClass::InvalidRequest);
    assert_eq!(
        error.status, None,
        "a rejection without a status fails over"
    );
    assert!(error.message.contains("send `tools`"), "{}", error.message);
}
