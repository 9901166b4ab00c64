//! The Anthropic Messages API (`POST {base_url}/messages`), translated to and from
//! OpenAI chat completions.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::chunks::{completion, ChunkWriter};
use super::openai::describe_unexpected_body;
use super::translate::{
    arguments_of, functions, image_of, invalid, max_tokens, messages, push_merged, role_of,
    stop_sequences, text_of, Image,
};
use super::{Decoded, StreamDecoder};
use crate::error::{AttemptError, ErrorClass};
use crate::request::ChatRequest;
use crate::sse;
use crate::usage::Usage;

/// The API version sent as `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` sent when the client set none, because Anthropic requires it.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Translates an OpenAI chat request into a Messages API body for `model`.
///
/// # Errors
///
/// Returns an [`ErrorClass::InvalidRequest`] error for messages that cannot be
/// expressed, such as a message without a role.
pub fn request_body(request: &ChatRequest, model: &str) -> Result<Bytes, AttemptError> {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();

    for message in messages(request)? {
        match role_of(&message)? {
            "system" | "developer" => system.push(text_of(&message["content"])),
            "user" => push_merged(
                &mut out,
                "user",
                "content",
                user_blocks(&message["content"])?,
            ),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(&message["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": arguments_of(call),
                    }));
                }
                push_merged(&mut out, "assistant", "content", blocks);
            }
            "tool" => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": message["tool_call_id"],
                    "content": text_of(&message["content"]),
                });
                push_merged(&mut out, "user", "content", vec![result]);
            }
            other => return Err(invalid(format!("unsupported message role `{other}`"))),
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(max_tokens(request).unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    body.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    // OpenAI accepts a temperature up to 2, Anthropic up to 1.
    if let Some(temperature) = request.member_value("temperature").and_then(|t| t.as_f64()) {
        body.insert("temperature".into(), json!(temperature.min(1.0)));
    }
    if let Some(top_p) = request.member_value("top_p") {
        body.insert("top_p".into(), top_p);
    }
    if let Some(stops) = stop_sequences(request) {
        body.insert("stop_sequences".into(), stops);
    }
    if request.is_stream() {
        body.insert("stream".into(), json!(true));
    }
    let tools: Vec<Value> = functions(request)?
        .into_iter()
        .map(|(name, description, parameters)| {
            json!({"name": name, "description": description, "input_schema": parameters})
        })
        .collect();
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = request
        .member_value("tool_choice")
        .and_then(|c| tool_choice(&c))
    {
        body.insert("tool_choice".into(), choice);
    }
    Ok(Bytes::from(Value::Object(body).to_string()))
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, AttemptError> {
    let Value::Array(parts) = content else {
        return Ok(vec![json!({"type": "text", "text": text_of(content)})]);
    };
    let mut blocks = Vec::new();
    for part in parts {
        match part["type"].as_str() {
            Some("text") => blocks.push(json!({"type": "text", "text": part["text"]})),
            Some("image_url") => {
                let source = match image_of(part)? {
                    Image::Inline { media_type, data } => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    Image::Url(url) => json!({"type": "url", "url": url}),
                };
                blocks.push(json!({"type": "image", "source": source}));
            }
            other => {
                return Err(invalid(format!(
                    "content part type {} is not supported for Anthropic",
                    other.unwrap_or("(missing)")
                )))
            }
        }
    }
    Ok(blocks)
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => None,
        },
        Value::Object(_) => choice["function"]["name"]
            .as_str()
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    }
}

/// Returns the error class of an Anthropic `error.type`, if it names one.
fn class_of_type(kind: &str, message: &str) -> Option<ErrorClass> {
    let message = message.to_ascii_lowercase();
    Some(match kind {
        "invalid_request_error"
            if message.contains("prompt is too long")
                || message.contains("exceed context limit") =>
        {
            ErrorClass::ContextLength
        }
        "invalid_request_error" if message.contains("credit balance") => ErrorClass::QuotaExhausted,
        "invalid_request_error" => ErrorClass::InvalidRequest,
        "billing_error" => ErrorClass::QuotaExhausted,
        "authentication_error" | "permission_error" => ErrorClass::Auth,
        "not_found_error" => ErrorClass::NotFound,
        "request_too_large" => ErrorClass::InvalidRequest,
        "rate_limit_error" => ErrorClass::RateLimited,
        "api_error" => ErrorClass::Server,
        "overloaded_error" => ErrorClass::Overloaded,
        "timeout_error" => ErrorClass::Timeout,
        _ => return None,
    })
}

/// Classifies a non-2xx Anthropic response by `error.type`, or by status when the body
/// is not Anthropic's error shape.
pub fn classify_error(status: u16, body: &[u8]) -> AttemptError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|body| &body["error"]);
    let kind = error.and_then(|e| e["type"].as_str()).unwrap_or_default();
    let message = error
        .and_then(|e| e["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| describe_unexpected_body(body));

    let class = class_of_type(kind, &message).unwrap_or(match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        408 | 504 => ErrorClass::Timeout,
        429 => ErrorClass::RateLimited,
        503 | 529 => ErrorClass::Overloaded,
        500..=599 => ErrorClass::Server,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Server,
    });
    AttemptError::new(class, message).with_status(status)
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_of(input: u64, output: u64) -> Usage {
    Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
    }
}

/// Translates a whole Messages API response into an OpenAI chat completion.
///
/// # Errors
///
/// A body that is not a message (truncated JSON, an HTML page) is a
/// [`ErrorClass::Server`] failure.
pub fn complete(body: &[u8], model: &str) -> Result<(Bytes, Option<Usage>), AttemptError> {
    let message: Value = serde_json::from_slice(body).map_err(|err| {
        AttemptError::new(
            ErrorClass::Server,
            format!("invalid Anthropic response: {err}"),
        )
    })?;
    let Some(blocks) = message["content"].as_array() else {
        return Err(AttemptError::new(
            ErrorClass::Server,
            "Anthropic response has no `content`",
        ));
    };

    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            _ => {}
        }
    }
    let usage = usage_of(
        message["usage"]["input_tokens"].as_u64().unwrap_or(0),
        message["usage"]["output_tokens"].as_u64().unwrap_or(0),
    );
    let id = message["id"].as_str().unwrap_or("anthropic");
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    let finish = finish_reason(message["stop_reason"].as_str());
    let bytes = completion(id, model, content, tool_calls, finish, Some(usage));
    Ok((bytes, Some(usage)))
}

/// Translates a Messages API event stream into OpenAI chunks. The stream ends at
/// `message_stop`.
#[derive(Debug)]
pub struct Decoder {
    writer: ChunkWriter,
    input_tokens: u64,
    output_tokens: u64,
    /// OpenAI tool call index by Anthropic content block index.
    tool_calls: HashMap<u64, usize>,
}

impl Decoder {
    /// Creates a decoder that writes chunks with `writer`.
    pub fn new(writer: ChunkWriter) -> Self {
        Self {
            writer,
            input_tokens: 0,
            output_tokens: 0,
            tool_calls: HashMap::new(),
        }
    }

    fn usage(&self) -> Usage {
        usage_of(self.input_tokens, self.output_tokens)
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: Bytes) -> Result<Decoded, AttemptError> {
        let Some(data) = sse::event_data(&event) else {
            return Ok(Decoded::preamble(Vec::new()));
        };
        let value: Value = serde_json::from_slice(&data).map_err(|err| {
            AttemptError::new(ErrorClass::Server, format!("malformed stream event: {err}"))
        })?;

        Ok(match value["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let message = &value["message"];
                if let Some(id) = message["id"].as_str() {
                    self.writer.set_id(id);
                }
                self.input_tokens = message["usage"]["input_tokens"].as_u64().unwrap_or(0);
                self.output_tokens = message["usage"]["output_tokens"].as_u64().unwrap_or(0);
                Decoded::preamble(vec![self.writer.role()])
            }
            "content_block_start" => {
                let block = &value["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tool_calls.len();
                        self.tool_calls
                            .insert(value["index"].as_u64().unwrap_or(0), index);
                        let call = json!({"tool_calls": [{
                            "index": index,
                            "id": block["id"],
                            "type": "function",
                            "function": {"name": block["name"], "arguments": ""},
                        }]});
                        Decoded::content(vec![self.writer.delta(call, None)])
                    }
                    Some("text") if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        Decoded::content(vec![self
                            .writer
                            .text(block["text"].as_str().unwrap_or_default())])
                    }
                    _ => Decoded::preamble(Vec::new()),
                }
            }
            "content_block_delta" => {
                let delta = &value["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => match delta["text"].as_str() {
                        Some(text) if !text.is_empty() => {
                            Decoded::content(vec![self.writer.text(text)])
                        }
                        _ => Decoded::preamble(Vec::new()),
                    },
                    Some("input_json_delta") => {
                        let block = value["index"].as_u64().unwrap_or(0);
                        let index = self.tool_calls.get(&block).copied().unwrap_or(0);
                        let call = json!({"tool_calls": [{
                            "index": index,
                            "function": {"arguments": delta["partial_json"]},
                        }]});
                        Decoded::content(vec![self.writer.delta(call, None)])
                    }
                    // Thinking and citation deltas have no OpenAI equivalent.
                    _ => Decoded::preamble(Vec::new()),
                }
            }
            "message_delta" => {
                if let Some(output) = value["usage"]["output_tokens"].as_u64() {
                    self.output_tokens = output;
                }
                let finish = finish_reason(value["delta"]["stop_reason"].as_str());
                Decoded::content(vec![self.writer.delta(json!({}), Some(finish))])
                    .with_usage(Some(self.usage()))
            }
            "message_stop" => {
                Decoded::done(self.writer.end(Some(self.usage()))).with_usage(Some(self.usage()))
            }
            "error" => {
                let kind = value["error"]["type"].as_str().unwrap_or_default();
                let message = value["error"]["message"]
                    .as_str()
                    .unwrap_or("error event in stream");
                let class = class_of_type(kind, message).unwrap_or(ErrorClass::Server);
                return Err(AttemptError::new(class, message));
            }
            // `ping`, `content_block_stop` and event types added later carry nothing to
            // forward.
            _ => Decoded::preamble(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests;
