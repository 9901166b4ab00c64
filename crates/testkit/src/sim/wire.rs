//! The wire formats a simulated provider speaks: OpenAI chat completions, Anthropic
//! messages and Gemini `generateContent`, each with its own bodies, streams and errors.

use serde_json::{json, Value};

use super::openai;

/// The API a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `POST …/chat/completions`.
    OpenAi,
    /// `POST …/messages`.
    Anthropic,
    /// `POST …/models/{model}:generateContent` or `:streamGenerateContent`.
    Gemini,
}

impl Format {
    /// Recognises the API by the request path.
    pub fn of_path(path: &str) -> Option<Self> {
        if path.ends_with("/chat/completions") {
            Some(Self::OpenAi)
        } else if path.ends_with("/messages") {
            Some(Self::Anthropic)
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            Some(Self::Gemini)
        } else {
            None
        }
    }
}

/// The events of a streamed reply, in three parts so that faults can cut it: events
/// before any content, content events, and the events that end the stream.
#[derive(Debug, Default)]
pub struct StreamPlan {
    /// Events without content.
    pub head: Vec<String>,
    /// One event per content chunk.
    pub content: Vec<String>,
    /// Finish, usage and end-marker events.
    pub tail: Vec<String>,
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn named(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

/// Builds a whole reply body in `format`.
pub fn complete(format: Format, id: &str, model: &str, text: &str, prompt_tokens: u64) -> Value {
    let completion_tokens = text.split_whitespace().count() as u64;
    match format {
        Format::OpenAi => openai::completion(id, model, text, prompt_tokens),
        Format::Anthropic => json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }),
        Format::Gemini => json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": completion_tokens,
                "totalTokenCount": prompt_tokens + completion_tokens,
            },
            "modelVersion": model,
            "responseId": id,
        }),
    }
}

/// Builds the events of a streamed reply in `format`.
pub fn stream(
    format: Format,
    id: &str,
    model: &str,
    parts: &[String],
    include_usage: bool,
    prompt_tokens: u64,
) -> StreamPlan {
    let completion_tokens = parts.concat().split_whitespace().count() as u64;
    match format {
        Format::OpenAi => {
            let mut tail = vec![data(&openai::chunk(id, model, json!({}), Some("stop")))];
            if include_usage {
                tail.push(data(&openai::usage_chunk(id, model, prompt_tokens, completion_tokens)));
            }
            tail.push("data: [DONE]\n\n".to_owned());
            StreamPlan {
                head: vec![data(&openai::chunk(id, model, json!({"role": "assistant", "content": ""}), None))],
                content: parts
                    .iter()
                    .map(|part| data(&openai::chunk(id, model, json!({"content": part}), None)))
                    .collect(),
                tail,
            }
        }
        Format::Anthropic => StreamPlan {
            head: vec![
                named("message_start", &json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
                }})),
                named("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
                named("ping", &json!({"type": "ping"})),
            ],
            content: parts
                .iter()
                .map(|part| {
                    named("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}}))
                })
                .collect(),
            tail: vec![
                named("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
                named("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": completion_tokens}})),
                named("message_stop", &json!({"type": "message_stop"})),
            ],
        },
        Format::Gemini => {
            let chunk = |text: &str| json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}], "modelVersion": model, "responseId": id});
            let last = json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": completion_tokens,
                    "totalTokenCount": prompt_tokens + completion_tokens,
                },
                "modelVersion": model,
                "responseId": id,
            });
            StreamPlan {
                head: Vec::new(),
                content: parts.iter().map(|part| data(&chunk(part))).collect(),
                tail: vec![data(&last)],
            }
        }
    }
}

/// Builds an error event inside a stream, as each provider sends it.
pub fn stream_error(format: Format) -> String {
    match format {
        Format::OpenAi => data(
            &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}),
        ),
        Format::Anthropic => named(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        Format::Gemini => data(
            &json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}),
        ),
    }
}

/// Builds the error body each provider sends with `status`.
pub fn error_body(format: Format, status: u16) -> Value {
    match format {
        Format::OpenAi => openai::error_body(status),
        Format::Anthropic => {
            let (kind, message) = match status {
                400 => ("invalid_request_error", "Invalid request."),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                404 => ("not_found_error", "Not found."),
                413 => (
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                ),
                429 => (
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit.",
                ),
                529 => ("overloaded_error", "Overloaded"),
                _ => ("api_error", "Internal server error"),
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Format::Gemini => {
            let (code, message) = match status {
                400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
                401 => (
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                ),
                403 => ("PERMISSION_DENIED", "The caller does not have permission"),
                404 => ("NOT_FOUND", "Requested entity was not found."),
                429 => (
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota).",
                ),
                503 => (
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                ),
                504 => (
                    "DEADLINE_EXCEEDED",
                    "Deadline expired before operation could complete.",
                ),
                _ => ("INTERNAL", "An internal error has occurred."),
            };
            json!({"error": {"code": status, "message": message, "status": code}})
        }
    }
}
