//! Helpers shared by the translations of OpenAI requests into other formats.

use serde_json::Value;

use crate::error::{AttemptError, ErrorClass};
use crate::request::ChatRequest;

/// Creates the error for a request that cannot be expressed in the target's format.
pub(crate) fn invalid(message: impl Into<String>) -> AttemptError {
    AttemptError::new(ErrorClass::InvalidRequest, message)
}

/// Returns the request's `messages` as values.
pub(crate) fn messages(request: &ChatRequest) -> Result<Vec<Value>, AttemptError> {
    match request.member_value("messages") {
        Some(Value::Array(messages)) => Ok(messages),
        _ => Err(invalid("`messages` must be an array of message objects")),
    }
}

/// Returns the text of a message's `content`: a string, or the text parts of an array
/// joined together. Other parts are left out.
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part["type"] == "text")
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Returns the role of a message.
pub(crate) fn role_of(message: &Value) -> Result<&str, AttemptError> {
    message["role"]
        .as_str()
        .ok_or_else(|| invalid("every message needs a string `role`"))
}

/// An image given as a data URL (`data:image/png;base64,…`) or a plain URL.
pub(crate) enum Image<'a> {
    Inline { media_type: &'a str, data: &'a str },
    Url(&'a str),
}

/// Reads the image of an `image_url` content part.
pub(crate) fn image_of(part: &Value) -> Result<Image<'_>, AttemptError> {
    let url = part["image_url"]["url"]
        .as_str()
        .or_else(|| part["image_url"].as_str())
        .ok_or_else(|| invalid("an image_url part needs `image_url.url`"))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("an image data URL needs a comma before its data"))?;
        let media_type = header
            .strip_suffix(";base64")
            .ok_or_else(|| invalid("an image data URL must be base64 encoded"))?;
        return Ok(Image::Inline { media_type, data });
    }
    Ok(Image::Url(url))
}

/// Returns `stop` as a list of sequences.
pub(crate) fn stop_sequences(request: &ChatRequest) -> Option<Value> {
    match request.member_value("stop")? {
        Value::String(stop) => Some(Value::Array(vec![Value::String(stop)])),
        Value::Array(stops) => Some(Value::Array(stops)),
        _ => None,
    }
}

/// Returns `max_completion_tokens`, or `max_tokens`, when set.
pub(crate) fn max_tokens(request: &ChatRequest) -> Option<u64> {
    request
        .member_value("max_completion_tokens")
        .or_else(|| request.member_value("max_tokens"))
        .and_then(|value| value.as_u64())
}

/// Returns the function definitions of `tools`: name, description and parameters.
///
/// Rejects the legacy `functions` and `function_call` fields rather than dropping them:
/// a client that sends them expects a `function_call` in the reply, which these
/// formats cannot give, and a request without its functions would succeed wrongly.
/// The error lets the request fail over to an OpenAI-compatible target.
pub(crate) fn functions(
    request: &ChatRequest,
) -> Result<Vec<(String, Option<String>, Value)>, AttemptError> {
    if request.member_value("functions").is_some()
        || request.member_value("function_call").is_some()
    {
        return Err(invalid(
            "the legacy `functions` and `function_call` fields only reach OpenAI-compatible \
             providers; send `tools` and `tool_choice` instead",
        ));
    }
    let Some(Value::Array(tools)) = request.member_value("tools") else {
        return Ok(Vec::new());
    };
    let declared = tools
        .iter()
        .filter_map(|tool| {
            let function = &tool["function"];
            let name = function["name"].as_str()?.to_owned();
            let description = function["description"].as_str().map(str::to_owned);
            let parameters = match &function["parameters"] {
                Value::Null => serde_json::json!({"type": "object", "properties": {}}),
                parameters => parameters.clone(),
            };
            Some((name, description, parameters))
        })
        .collect();
    Ok(declared)
}

/// Parses the JSON `arguments` string of a tool call, keeping text that is not JSON as
/// a string.
pub(crate) fn arguments_of(call: &Value) -> Value {
    let raw = call["function"]["arguments"].as_str().unwrap_or("{}");
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Appends `parts` as a message of `role`, merged into the previous message when it has
/// the same role, because the target formats expect roles to alternate.
pub(crate) fn push_merged(out: &mut Vec<Value>, role: &str, key: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last["role"] == role {
            if let Some(existing) = last[key].as_array_mut() {
                existing.extend(parts);
                return;
            }
        }
    }
    out.push(serde_json::json!({"role": role, key: parts}));
}
