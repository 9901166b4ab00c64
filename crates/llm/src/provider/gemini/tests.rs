use super::*;
use crate::error::ErrorClass;

fn class(status: u16, code: &str, message: &str) -> ErrorClass {
    let body = json!({"error": {"code": status, "message": message, "status": code}});
    classify_error(status, body.to_string().as_bytes()).class
}

#[test]
fn classifies_real_error_bodies() {
    let cases = [
        (400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.", ErrorClass::InvalidRequest),
        (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", ErrorClass::Auth),
        (400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", ErrorClass::ContextLength),
        (400, "FAILED_PRECONDITION", "User location is not supported for the API use.", ErrorClass::Auth),
        (401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ErrorClass::Auth),
        (403, "PERMISSION_DENIED", "The caller does not have permission", ErrorClass::Auth),
        (404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta", ErrorClass::NotFound),
        (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", ErrorClass::RateLimited),
        (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details.", ErrorClass::RateLimited),
        (500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", ErrorClass::Server),
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", ErrorClass::Overloaded),
        (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", ErrorClass::Timeout),
    ];
    for (status, code, message, expected) in cases {
        assert_eq!(
            class(status, code, message),
            expected,
            "{status} {code}: {message}"
        );
    }
}

#[test]
fn quota_details_tell_daily_from_minute_limits() {
    let body = |quota: &str| {
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": quota}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
            ]}})
        .to_string()
    };
    let per_minute = classify_error(
        429,
        body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier").as_bytes(),
    );
    assert_eq!(per_minute.class, ErrorClass::RateLimited);
    assert_eq!(
        per_minute.retry_after,
        Some(std::time::Duration::from_secs(37))
    );
    let per_day = classify_error(
        429,
        body("GenerateRequestsPerDayPerProjectPerModel-FreeTier").as_bytes(),
    );
    assert_eq!(per_day.class, ErrorClass::QuotaExhausted);
}

#[test]
fn thought_signature_survives_round_trip() {
    let response = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "lookup", "args": {"q": "x"}}, "thoughtSignature": "c2lnbmF0dXJl"},
    ]}, "finishReason": "STOP"}]});
    let (bytes, _) = complete(response.to_string().as_bytes(), "gemini-3-pro").unwrap();
    let completion: Value = serde_json::from_slice(&bytes).unwrap();
    let call = completion["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");

    let next = request(json!({"model": "chat", "messages": [
        {"role": "user", "content": "Find x"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call["id"], "content": "found"},
    ]}));
    let body: Value = serde_json::from_slice(&request_body(&next).unwrap()).unwrap();
    let part = &body["contents"][1]["parts"][0];
    assert_eq!(part["thoughtSignature"], "c2lnbmF0dXJl");
    assert_eq!(part["functionCall"]["name"], "lookup");
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "lookup"
    );
}

#[test]
fn non_json_bodies_use_status() {
    assert_eq!(classify_error(503, b"").class, ErrorClass::Overloaded);
    assert_eq!(
        classify_error(502, b"<html>502</html>").class,
        ErrorClass::Server
    );
    assert_eq!(
        classify_error(429, b"slow down").class,
        ErrorClass::RateLimited
    );
}

fn request(body: Value) -> ChatRequest {
    ChatRequest::parse(body.to_string().as_bytes()).unwrap()
}

#[test]
fn translates_request() {
    let request = request(json!({
        "model": "chat",
        "max_tokens": 64,
        "top_p": 0.9,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_9", "content": "{\"answer\": 42}"},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    }));
    let body: Value = serde_json::from_slice(&request_body(&request).unwrap()).unwrap();

    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Answer in JSON."}]})
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(body["generationConfig"]["topP"], 0.9);
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "lookup"
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
        json!({"type": "object"})
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
        json!(["lookup"])
    );

    let contents = body["contents"].as_array().unwrap();
    let roles: Vec<_> = contents
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user"]);
    assert_eq!(
        contents[0]["parts"][1]["inlineData"],
        json!({"mimeType": "image/jpeg", "data": "BBBB"})
    );
    assert_eq!(
        contents[1]["parts"][0]["functionCall"],
        json!({"name": "lookup", "args": {"q": "x"}})
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "lookup", "response": {"answer": 42}})
    );
}

#[test]
fn paths_name_model_and_mode() {
    assert_eq!(
        path("gemini-1.5-pro", false),
        "/models/gemini-1.5-pro:generateContent"
    );
    assert_eq!(
        path("gemini-1.5-pro", true),
        "/models/gemini-1.5-pro:streamGenerateContent?alt=sse"
    );
}

#[test]
fn translates_response() {
    let body = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello "}, {"text": "there"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
        "modelVersion": "gemini-1.5-pro",
    });
    let (bytes, usage) = complete(body.to_string().as_bytes(), "gemini-1.5-pro").unwrap();
    let completion: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "Hello there"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["total_tokens"], 6);
    assert_eq!(usage.map(|u| u.completion_tokens), Some(2));
}

#[test]
fn safety_blocks_are_content_filter() {
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}});
    let error = complete(blocked.to_string().as_bytes(), "m").unwrap_err();
    assert_eq!(error.class, ErrorClass::ContentFilter);

    let stopped = json!({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]});
    let (bytes, _) = complete(stopped.to_string().as_bytes(), "m").unwrap();
    let completion: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(completion["choices"][0]["finish_reason"], "content_filter");
}

fn chunk(data: Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

#[test]
fn translates_stream() {
    let mut decoder = Decoder::new(ChunkWriter::new("gemini-1.5-pro", true));
    let first = decoder
        .decode(chunk(
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}),
        ))
        .unwrap();
    assert_eq!(first.kind(), super::super::EventKind::Content);
    assert_eq!(first.frames.len(), 2, "role chunk and content");

    let last = decoder
        .decode(chunk(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        })))
        .unwrap();
    assert_eq!(last.kind(), super::super::EventKind::Done);
    assert_eq!(last.usage.map(|u| u.total_tokens), Some(5));
    let finish: Value = serde_json::from_slice(&last.frames[1][6..]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(&last.frames.last().unwrap()[..], b"data: [DONE]\n\n");
}

#[test]
fn stream_error_chunk_is_classified() {
    let mut decoder = Decoder::new(ChunkWriter::new("m", false));
    let error = decoder
        .decode(chunk(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})))
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Overloaded);
}

#[test]
fn legacy_functions_are_rejected() {
    let legacy = request(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Weather?"}],
        "functions": [{"name": "weather", "parameters": {"type": "object"}}],
    }));
    let error = request_body(&legacy).unwrap_err();
    assert_eq!(error.class, ErrorClass::InvalidRequest);
    assert_eq!(
        error.status, None,
        "a rejection without a status fails over"
    );
}
