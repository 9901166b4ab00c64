//! The Gemini API (`{base_url}/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streams), translated to and from OpenAI chat
//! completions.

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

/// Returns the path after the API root for `model`: streaming or not.
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/models/{model}:generateContent")
    }
}

/// Translates an OpenAI chat request into a `generateContent` body.
///
/// # Errors
///
/// Returns an [`ErrorClass::InvalidRequest`] error for messages that cannot be
/// expressed, such as a message without a role.
pub fn request_body(request: &ChatRequest) -> Result<Bytes, AttemptError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini names a function response by the function's name, OpenAI by the call id.
    let mut call_names: HashMap<String, String> = HashMap::new();

    for message in messages(request)? {
        match role_of(&message)? {
            "system" | "developer" => system.push(json!({"text": text_of(&message["content"])})),
            "user" => push_merged(
                &mut contents,
                "user",
                "parts",
                user_parts(&message["content"])?,
            ),
            "assistant" => {
                let mut parts = Vec::new();
                let text = text_of(&message["content"]);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    let id = call["id"].as_str().unwrap_or_default();
                    call_names.insert(id.to_owned(), name.to_owned());
                    let mut part =
                        json!({"functionCall": {"name": name, "args": arguments_of(call)}});
                    if let Some(signature) = signature_of(id) {
                        part["thoughtSignature"] = json!(signature);
                    }
                    parts.push(part);
                }
                push_merged(&mut contents, "model", "parts", parts);
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let name = call_names.get(id).cloned().unwrap_or_else(|| id.to_owned());
                let text = text_of(&message["content"]);
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    _ => json!({"content": text}),
                };
                let part = json!({"functionResponse": {"name": name, "response": response}});
                push_merged(&mut contents, "user", "parts", vec![part]);
            }
            other => return Err(invalid(format!("unsupported message role `{other}`"))),
        }
    }

    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }

    let mut generation = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
    ] {
        if let Some(value) = request.member_value(from) {
            generation.insert(to.into(), value);
        }
    }
    if let Some(max) = max_tokens(request) {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(stops) = stop_sequences(request) {
        generation.insert("stopSequences".into(), stops);
    }
    if request.needs().json_mode {
        generation.insert("responseMimeType".into(), json!("application/json"));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }

    // `parametersJsonSchema` takes the JSON Schema of an OpenAI tool as it is. Under
    // `parameters`, Gemini takes only its OpenAPI subset and has rejected keys such as
    // `additionalProperties`, `$schema` and `const` with a 400.
    let declarations: Vec<Value> = functions(request)?
        .into_iter()
        .map(|(name, description, parameters)| {
            json!({"name": name, "description": description, "parametersJsonSchema": parameters})
        })
        .collect();
    if !declarations.is_empty() {
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(config) = request
        .member_value("tool_choice")
        .and_then(|c| tool_config(&c))
    {
        body.insert("toolConfig".into(), config);
    }
    Ok(Bytes::from(Value::Object(body).to_string()))
}

fn user_parts(content: &Value) -> Result<Vec<Value>, AttemptError> {
    let Value::Array(items) = content else {
        return Ok(vec![json!({"text": text_of(content)})]);
    };
    let mut parts = Vec::new();
    for item in items {
        match item["type"].as_str() {
            Some("text") => parts.push(json!({"text": item["text"]})),
            Some("image_url") => parts.push(match image_of(item)? {
                Image::Inline { media_type, data } => {
                    json!({"inlineData": {"mimeType": media_type, "data": data}})
                }
                Image::Url(url) => {
                    json!({"fileData": {"mimeType": image_type(url), "fileUri": url}})
                }
            }),
            other => {
                return Err(invalid(format!(
                    "content part type {} is not supported for Gemini",
                    other.unwrap_or("(missing)")
                )))
            }
        }
    }
    Ok(parts)
}

/// Guesses an image's media type from its URL, since Gemini needs one for a file.
fn image_type(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn tool_config(choice: &Value) -> Option<Value> {
    let (mode, names) = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => ("AUTO", None),
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            _ => return None,
        },
        Value::Object(_) => ("ANY", Some(json!([choice["function"]["name"]]))),
        _ => return None,
    };
    let mut config = json!({"mode": mode});
    if let Some(names) = names {
        config["allowedFunctionNames"] = names;
    }
    Some(json!({"functionCallingConfig": config}))
}

/// Marks a tool call id that carries Gemini's thought signature, which Gemini requires
/// back on the `functionCall` part when the conversation continues.
const SIGNATURE_MARK: &str = ".sig.";

/// Builds a tool call id, unique across turns, that carries `signature` when given.
fn tool_call_id(signature: Option<&str>) -> String {
    let id = format!("call_{:016x}", rand::random::<u64>());
    match signature {
        Some(signature) => format!("{id}{SIGNATURE_MARK}{signature}"),
        None => id,
    }
}

/// Returns the thought signature a tool call id carries, if any.
fn signature_of(id: &str) -> Option<&str> {
    id.split_once(SIGNATURE_MARK)
        .map(|(_, signature)| signature)
}

/// Classifies a Gemini error by its `error.status`, or by HTTP status when the body is
/// not Gemini's error shape, and reads the delay a `RetryInfo` detail requests.
pub fn classify_error(status: u16, body: &[u8]) -> AttemptError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|body| &body["error"]);
    let code = error.and_then(|e| e["status"].as_str()).unwrap_or_default();
    let message = error
        .and_then(|e| e["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| describe_unexpected_body(body));
    let details = error.and_then(|e| e["details"].as_array());
    let class = class_of(
        status,
        code,
        &message,
        details.map_or(&[][..], Vec::as_slice),
    );
    let retry_delay = details
        .into_iter()
        .flatten()
        .filter(|detail| {
            detail["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .find_map(|detail| detail["retryDelay"].as_str())
        .and_then(adpa_resilience::retry::parse_reset_duration);
    AttemptError::new(class, message)
        .with_status(status)
        .with_retry_after(retry_delay)
}

/// Returns whether a `QuotaFailure` detail names a daily quota, which waiting minutes
/// will not restore.
fn daily_quota(details: &[Value]) -> bool {
    details
        .iter()
        .flat_map(|detail| detail["violations"].as_array().into_iter().flatten())
        .filter_map(|violation| violation["quotaId"].as_str())
        .any(|quota| quota.contains("PerDay"))
}

fn class_of(status: u16, code: &str, message: &str, details: &[Value]) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    match code {
        "INVALID_ARGUMENT" if lower.contains("api key not valid") => ErrorClass::Auth,
        "INVALID_ARGUMENT" if lower.contains("token count") && lower.contains("exceeds") => {
            ErrorClass::ContextLength
        }
        "INVALID_ARGUMENT" | "OUT_OF_RANGE" => ErrorClass::InvalidRequest,
        // Gemini returns FAILED_PRECONDITION when the free tier is not offered in the
        // caller's region: the key cannot be used there.
        "FAILED_PRECONDITION" | "UNAUTHENTICATED" | "PERMISSION_DENIED" => ErrorClass::Auth,
        "NOT_FOUND" => ErrorClass::NotFound,
        // Gemini sends the same message for per-minute and per-day quotas, so only the
        // QuotaFailure detail distinguishes them.
        "RESOURCE_EXHAUSTED" if daily_quota(details) => ErrorClass::QuotaExhausted,
        "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
        "UNAVAILABLE" => ErrorClass::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorClass::Timeout,
        "INTERNAL" | "UNKNOWN" | "ABORTED" | "DATA_LOSS" => ErrorClass::Server,
        "CANCELLED" => ErrorClass::Network,
        _ => match status {
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            408 | 504 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimited,
            503 => ErrorClass::Overloaded,
            500..=599 => ErrorClass::Server,
            400..=499 => ErrorClass::InvalidRequest,
            _ => ErrorClass::Server,
        },
    }
}

fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        _ if has_tool_calls => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ => "stop",
    }
}

fn usage_of(response: &Value) -> Option<Usage> {
    let metadata = response.get("usageMetadata")?;
    let prompt = metadata["promptTokenCount"].as_u64().unwrap_or(0);
    // Thinking tokens are billed as output, so they count as completion tokens.
    let completion = metadata["candidatesTokenCount"].as_u64().unwrap_or(0)
        + metadata["thoughtsTokenCount"].as_u64().unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: metadata["totalTokenCount"]
            .as_u64()
            .unwrap_or(prompt + completion),
    })
}

/// A prompt Gemini blocked outright: it returns no candidate, only a block reason.
fn blocked_prompt(response: &Value) -> Option<AttemptError> {
    let no_candidates = response["candidates"].as_array().is_none_or(Vec::is_empty);
    let reason = response["promptFeedback"]["blockReason"].as_str()?;
    no_candidates.then(|| {
        AttemptError::new(
            ErrorClass::ContentFilter,
            format!("Gemini blocked the prompt ({reason})"),
        )
    })
}

/// The text and function calls (name, arguments, tool call id) of the first candidate.
fn parts_of(response: &Value) -> (String, Vec<(String, Value, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = response["candidates"][0]["content"]["parts"].as_array();
    for part in parts.into_iter().flatten() {
        // Parts marked `thought` carry reasoning, which OpenAI's format does not show.
        if part["thought"] == true {
            continue;
        }
        if let Some(piece) = part["text"].as_str() {
            text.push_str(piece);
        }
        if let Some(call) = part.get("functionCall") {
            let name = call["name"].as_str().unwrap_or_default().to_owned();
            let id = tool_call_id(part["thoughtSignature"].as_str());
            calls.push((name, call["args"].clone(), id));
        }
    }
    (text, calls)
}

/// Translates a whole `generateContent` response into an OpenAI chat completion.
///
/// # Errors
///
/// A blocked prompt is an [`ErrorClass::ContentFilter`] error; a body that is not a
/// response (truncated JSON, an HTML page) is a [`ErrorClass::Server`] failure.
pub fn complete(body: &[u8], model: &str) -> Result<(Bytes, Option<Usage>), AttemptError> {
    let response: Value = serde_json::from_slice(body).map_err(|err| {
        AttemptError::new(
            ErrorClass::Server,
            format!("invalid Gemini response: {err}"),
        )
    })?;
    if let Some(blocked) = blocked_prompt(&response) {
        return Err(blocked);
    }
    if response["candidates"].as_array().is_none_or(Vec::is_empty) {
        return Err(AttemptError::new(
            ErrorClass::Server,
            "Gemini response has no candidates",
        ));
    }

    let (text, calls) = parts_of(&response);
    let tool_calls: Vec<Value> = calls
        .into_iter()
        .map(|(name, args, id)| {
            json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": args.to_string()},
            })
        })
        .collect();
    let reason = response["candidates"][0]["finishReason"]
        .as_str()
        .unwrap_or("STOP");
    let finish = finish_reason(reason, !tool_calls.is_empty());
    let usage = usage_of(&response);
    let id = response["responseId"].as_str().unwrap_or("gemini");
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    Ok((
        completion(id, model, content, tool_calls, finish, usage),
        usage,
    ))
}

/// Translates a `streamGenerateContent?alt=sse` stream into OpenAI chunks. Gemini sends
/// no end marker: the stream ends with the chunk that carries a `finishReason`.
#[derive(Debug)]
pub struct Decoder {
    writer: ChunkWriter,
    started: bool,
    tool_calls: usize,
    usage: Option<Usage>,
}

impl Decoder {
    /// Creates a decoder that writes chunks with `writer`.
    pub fn new(writer: ChunkWriter) -> Self {
        Self {
            writer,
            started: false,
            tool_calls: 0,
            usage: None,
        }
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: Bytes) -> Result<Decoded, AttemptError> {
        let Some(data) = sse::event_data(&event) else {
            return Ok(Decoded::preamble(Vec::new()));
        };
        let response: Value = serde_json::from_slice(&data).map_err(|err| {
            AttemptError::new(ErrorClass::Server, format!("malformed stream chunk: {err}"))
        })?;
        if let Some(error) = response.get("error") {
            let status = error["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let code = error["status"].as_str().unwrap_or_default();
            let message = error["message"].as_str().unwrap_or("error in stream");
            let details = error["details"].as_array().map_or(&[][..], Vec::as_slice);
            return Err(AttemptError::new(
                class_of(status, code, message, details),
                message,
            ));
        }
        if let Some(blocked) = blocked_prompt(&response) {
            return Err(blocked);
        }

        let mut frames = Vec::new();
        if !self.started {
            self.started = true;
            if let Some(id) = response["responseId"].as_str() {
                self.writer.set_id(id);
            }
            frames.push(self.writer.role());
        }
        let mut has_content = false;
        let (text, calls) = parts_of(&response);
        if !text.is_empty() {
            frames.push(self.writer.text(&text));
            has_content = true;
        }
        for (name, args, id) in calls {
            let call = json!({"tool_calls": [{
                "index": self.tool_calls,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": args.to_string()},
            }]});
            self.tool_calls += 1;
            frames.push(self.writer.delta(call, None));
            has_content = true;
        }
        self.usage = usage_of(&response).or(self.usage);

        let Some(reason) = response["candidates"][0]["finishReason"].as_str() else {
            let decoded = if has_content {
                Decoded::content(frames)
            } else {
                Decoded::preamble(frames)
            };
            return Ok(decoded.with_usage(self.usage));
        };
        let finish = finish_reason(reason, self.tool_calls > 0);
        frames.push(self.writer.delta(json!({}), Some(finish)));
        frames.extend(self.writer.end(self.usage));
        Ok(Decoded::done(frames).with_usage(self.usage))
    }
}

#[cfg(test)]
mod tests;
