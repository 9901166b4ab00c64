//! Bodies in OpenAI's chat completion wire format.

use serde_json::{json, Value};

/// Splits the reply text of a simulated provider named `name` into `chunks` parts.
pub fn reply_parts(name: &str, chunks: u32) -> Vec<String> {
    let text = format!("Hello from {name}. This reply comes from a simulated provider.");
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let chunks = chunks.max(1) as usize;
    let per_chunk = words.len().div_ceil(chunks);
    let mut parts: Vec<String> = words.chunks(per_chunk.max(1)).map(|w| w.concat()).collect();
    parts.resize(chunks, String::new());
    parts
}

/// Estimates prompt tokens as a quarter of the request's bytes, as a rough rule.
pub fn prompt_tokens(request_body: &[u8]) -> u64 {
    (request_body.len() as u64).div_ceil(4)
}

/// Builds a complete chat completion.
pub fn completion(id: &str, model: &str, content: &str, prompt_tokens: u64) -> Value {
    let completion_tokens = content.split_whitespace().count() as u64;
    json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

/// Builds one chunk of a streamed completion with the given delta and finish reason.
pub fn chunk(id: &str, model: &str, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
    })
}

/// Builds the final usage chunk, sent when the request set
/// `stream_options.include_usage`.
pub fn usage_chunk(id: &str, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

/// OpenAI's error body for a status, with the type and code OpenAI sends for it.
pub fn error_body(status: u16) -> Value {
    let (message, kind, code) = match status {
        400 => ("Invalid request.", "invalid_request_error", Value::Null),
        401 => (
            "Incorrect API key provided.",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to use this model.",
            "invalid_request_error",
            Value::Null,
        ),
        404 => (
            "The model does not exist.",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        429 => (
            "Rate limit reached for requests per min (RPM).",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request.",
            "server_error",
            Value::Null,
        ),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            Value::Null,
        ),
        _ => ("Simulated error.", "server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A proxy's HTML error page.
pub const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_join_to_reply() {
        for chunks in [1, 3, 4, 50] {
            let parts = reply_parts("sim", chunks);
            assert_eq!(parts.len(), chunks as usize);
            assert_eq!(parts.concat(), reply_parts("sim", 1)[0]);
        }
    }
}
