//! Building OpenAI chat completion chunks and completions from translated parts.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::usage::Usage;

/// Writes OpenAI `chat.completion.chunk` events for one translated stream.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
}

impl ChunkWriter {
    /// Creates a writer for a stream of `model`. With `include_usage` the stream ends
    /// with a usage chunk, as OpenAI sends it when `stream_options.include_usage` is set.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{:024x}", rand::random::<u128>() >> 32),
            model: model.to_owned(),
            created: unix_time(),
            include_usage,
        }
    }

    /// Sets the id the chunks carry, from the provider's message id.
    pub fn set_id(&mut self, id: &str) {
        self.id = format!("chatcmpl-{id}");
    }

    /// Builds an event with one choice delta and an optional finish reason.
    pub fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.event(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        }))
    }

    /// Builds the role-only first chunk.
    pub fn role(&self) -> Bytes {
        self.delta(json!({"role": "assistant", "content": ""}), None)
    }

    /// Builds a text content chunk.
    pub fn text(&self, text: &str) -> Bytes {
        self.delta(json!({"content": text}), None)
    }

    /// Builds the end of the stream: the usage chunk when requested, then
    /// `data: [DONE]`.
    pub fn end(&self, usage: Option<Usage>) -> Vec<Bytes> {
        let mut frames = Vec::with_capacity(2);
        if self.include_usage {
            frames.push(self.event(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage.unwrap_or_default(),
            })));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        frames
    }

    fn event(&self, body: Value) -> Bytes {
        Bytes::from(format!("data: {body}\n\n"))
    }
}

/// Builds a whole OpenAI chat completion.
pub(crate) fn completion(
    id: &str,
    model: &str,
    content: Option<String>,
    tool_calls: Vec<Value>,
    finish_reason: &str,
    usage: Option<Usage>,
) -> Bytes {
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let body = json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": unix_time(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage.unwrap_or_default(),
    });
    Bytes::from(body.to_string())
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
