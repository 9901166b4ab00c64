//! The OpenAI chat completions wire format, spoken by OpenAI, Groq, vLLM, llama.cpp,
//! Ollama and other compatible servers.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use bytes::Bytes;

use super::{Decoded, StreamDecoder};
use crate::error::{AttemptError, ErrorClass};
use crate::sse;
use crate::usage::Usage;

/// The decoder of an OpenAI-compatible stream: events pass through byte for byte.
#[derive(Debug)]
pub struct PassThrough;

impl StreamDecoder for PassThrough {
    fn decode(&mut self, event: Bytes) -> Result<Decoded, AttemptError> {
        Ok(match inspect_stream_event(&event)? {
            StreamEvent::Preamble => Decoded::preamble(vec![event]),
            StreamEvent::Usage(usage) => Decoded::preamble(vec![event]).with_usage(Some(usage)),
            StreamEvent::Content { usage } => Decoded::content(vec![event]).with_usage(usage),
            StreamEvent::Done => Decoded::done(vec![event]),
        })
    }
}

/// The parts of a completion body the gateway reads; everything else passes through.
#[derive(Debug, Deserialize)]
struct CompletionProbe {
    #[serde(default)]
    choices: Option<IgnoredAny>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// Checks that a successful non-streaming body is a complete chat completion and reads
/// its `usage`.
///
/// # Errors
///
/// A body that is not a JSON object with `choices` (truncated JSON, an HTML page sent
/// with status 200) is a [`ErrorClass::Server`] failure of the target.
pub fn inspect_completion(body: &[u8]) -> Result<Option<Usage>, AttemptError> {
    match serde_json::from_slice::<CompletionProbe>(body) {
        Ok(CompletionProbe {
            choices: Some(_),
            usage,
        }) => Ok(usage),
        Ok(CompletionProbe { choices: None, .. }) => Err(AttemptError::new(
            ErrorClass::Server,
            "response body has no `choices`",
        )),
        Err(err) if err.is_eof() => Err(AttemptError::new(
            ErrorClass::Server,
            format!("truncated JSON response body: {err}"),
        )),
        Err(err) if body.first().is_some_and(|b| *b == b'{') => Err(AttemptError::new(
            ErrorClass::Server,
            format!("malformed JSON response body: {err}"),
        )),
        Err(_) => Err(AttemptError::new(
            ErrorClass::Server,
            describe_unexpected_body(body),
        )),
    }
}

/// The meaning of one streamed event for the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// An event without content (a role-only delta, a comment): held back before the
    /// first content so that the target can still be failed over.
    Preamble,
    /// An event that carries content, a tool call or a finish reason.
    Content {
        /// Usage, when this chunk reports it.
        usage: Option<Usage>,
    },
    /// Usage without content: the final chunk of a stream with `include_usage`.
    Usage(Usage),
    /// `data: [DONE]`, the end marker.
    Done,
}

#[derive(Debug, Deserialize)]
struct ChunkProbe<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceProbe<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Debug, Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaProbe<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct DeltaProbe<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
    #[serde(default, borrow)]
    refusal: Option<&'a RawValue>,
}

/// Reads one whole SSE event of an OpenAI chat completion stream.
///
/// # Errors
///
/// A chunk that is not valid JSON, or an `error` object in the stream, is a
/// [`ErrorClass::Server`] failure.
pub fn inspect_stream_event(event: &[u8]) -> Result<StreamEvent, AttemptError> {
    let Some(data) = sse::event_data(event) else {
        return Ok(StreamEvent::Preamble);
    };
    if data.trim_ascii() == b"[DONE]" {
        return Ok(StreamEvent::Done);
    }

    let chunk: ChunkProbe<'_> = serde_json::from_slice(&data).map_err(|err| {
        AttemptError::new(ErrorClass::Server, format!("malformed stream chunk: {err}"))
    })?;
    if let Some(error) = chunk.error {
        let message = error
            .message
            .unwrap_or_else(|| "error event in stream".to_owned());
        return Err(AttemptError::new(ErrorClass::Server, message));
    }

    let has_content = chunk.choices.iter().any(|choice| {
        let finished = choice.finish_reason.is_some_and(|raw| raw.get() != "null");
        let produced = choice.delta.as_ref().is_some_and(|delta| {
            let text =
                |raw: Option<&RawValue>| raw.is_some_and(|r| !matches!(r.get(), "null" | "\"\""));
            text(delta.content)
                || text(delta.refusal)
                || delta.tool_calls.is_some()
                || delta.function_call.is_some()
        });
        finished || produced
    });

    Ok(match (has_content, chunk.usage) {
        (true, usage) => StreamEvent::Content { usage },
        (false, Some(usage)) => StreamEvent::Usage(usage),
        (false, None) => StreamEvent::Preamble,
    })
}

/// The `error` object of an OpenAI error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// Classifies a non-2xx response from an OpenAI-compatible server by its status and, where
/// the status alone is ambiguous, by `error.type` and `error.code` of the body.
///
/// A body that is not OpenAI's JSON error shape (an HTML page from a proxy, say) is
/// classified by status alone, and its message names the content it had.
pub fn classify_error(status: u16, body: &[u8]) -> AttemptError {
    let parsed = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.as_ref())
        .and_then(|code| code.as_str().map(str::to_owned));
    let kind = parsed.as_ref().and_then(|e| e.kind.clone());
    let said = |needle: &str| code.as_deref() == Some(needle) || kind.as_deref() == Some(needle);

    let class = match status {
        400 if said("context_length_exceeded") => ErrorClass::ContextLength,
        400 if said("content_filter") || said("content_policy_violation") => {
            ErrorClass::ContentFilter
        }
        400 | 413 | 422 => ErrorClass::InvalidRequest,
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        408 => ErrorClass::Timeout,
        429 if said("insufficient_quota") => ErrorClass::QuotaExhausted,
        429 => ErrorClass::RateLimited,
        503 | 529 => ErrorClass::Overloaded,
        504 => ErrorClass::Timeout,
        500..=599 => ErrorClass::Server,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Server,
    };

    let message = match parsed.and_then(|e| e.message) {
        Some(message) => message,
        None => describe_unexpected_body(body),
    };
    AttemptError::new(class, message).with_status(status)
}

/// Describes a body that is not the JSON the API promises, for error messages: the kind
/// of content and its first bytes, so an HTML page from a proxy is recognisable.
pub fn describe_unexpected_body(body: &[u8]) -> String {
    const SHOWN: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let looks_like_html = text.trim_start().starts_with('<');
    let kind = if body.is_empty() {
        return "empty response body".to_owned();
    } else if looks_like_html {
        "HTML page"
    } else {
        "non-JSON body"
    };
    let ellipsis = if body.len() > SHOWN { "…" } else { "" };
    format!("{kind} instead of a JSON response: {text}{ellipsis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(status: u16, body: &str) -> ErrorClass {
        classify_error(status, body.as_bytes()).class
    }

    #[test]
    fn classifies_real_error_bodies() {
        let cases = [
            (
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                ErrorClass::ContextLength,
            ),
            (
                400,
                r#"{"error":{"message":"'messages' is a required property","type":"invalid_request_error","param":null,"code":null}}"#,
                ErrorClass::InvalidRequest,
            ),
            (
                400,
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
                ErrorClass::ContentFilter,
            ),
            (
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-abc***.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                ErrorClass::Auth,
            ),
            (
                403,
                r#"{"error":{"message":"Project does not have access to model gpt-4","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                ErrorClass::Auth,
            ),
            (
                404,
                r#"{"error":{"message":"The model `gpt-5` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                ErrorClass::NotFound,
            ),
            (
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-4 on requests per min (RPM): Limit 500.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                ErrorClass::RateLimited,
            ),
            (
                429,
                r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                ErrorClass::QuotaExhausted,
            ),
            (
                500,
                r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
                ErrorClass::Server,
            ),
            (
                503,
                r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#,
                ErrorClass::Overloaded,
            ),
            (
                502,
                "<html><head><title>502 Bad Gateway</title></head></html>",
                ErrorClass::Server,
            ),
            (504, "upstream request timeout", ErrorClass::Timeout),
            (418, "", ErrorClass::InvalidRequest),
        ];
        for (status, body, expected) in cases {
            assert_eq!(class_of(status, body), expected, "HTTP {status}: {body}");
        }
    }

    #[test]
    fn keeps_provider_message() {
        let error = classify_error(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(error.message, "Rate limit reached");
        assert_eq!(error.status, Some(429));
    }

    #[test]
    fn completion_body_is_checked() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let usage = inspect_completion(body).unwrap().unwrap();
        assert_eq!(usage.total_tokens, 4);

        let truncated = &body[..body.len() / 2];
        let error = inspect_completion(truncated).unwrap_err();
        assert_eq!(error.class, ErrorClass::Server);
        assert!(
            error.message.starts_with("truncated JSON"),
            "{}",
            error.message
        );

        let html = inspect_completion(b"<html>oops</html>").unwrap_err();
        assert!(html.message.starts_with("HTML page"), "{}", html.message);
        assert!(inspect_completion(br#"{"object":"list"}"#).is_err());
    }

    #[test]
    fn stream_events_are_told_apart() {
        let role = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(inspect_stream_event(role), Ok(StreamEvent::Preamble));

        let content = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(
            inspect_stream_event(content),
            Ok(StreamEvent::Content { usage: None })
        );

        let finish =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(
            inspect_stream_event(finish),
            Ok(StreamEvent::Content { usage: None })
        );

        let tool = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n";
        assert_eq!(
            inspect_stream_event(tool),
            Ok(StreamEvent::Content { usage: None })
        );

        let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n";
        let expected = Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            total_tokens: 7,
        };
        assert_eq!(
            inspect_stream_event(usage),
            Ok(StreamEvent::Usage(expected))
        );

        assert_eq!(
            inspect_stream_event(b": keep-alive\n\n"),
            Ok(StreamEvent::Preamble)
        );
        assert_eq!(
            inspect_stream_event(b"data: [DONE]\n\n"),
            Ok(StreamEvent::Done)
        );
    }

    #[test]
    fn bad_stream_events_fail() {
        let malformed = inspect_stream_event(b"data: {\"choices\":[{\"delta\n\n").unwrap_err();
        assert_eq!(malformed.class, ErrorClass::Server);
        let error =
            inspect_stream_event(b"data: {\"error\":{\"message\":\"boom\"}}\n\n").unwrap_err();
        assert_eq!(error.message, "boom");
    }

    #[test]
    fn html_page_is_described() {
        let error = classify_error(502, b"<html>\n<body>502 Bad Gateway</body>\n</html>");
        assert_eq!(error.class, ErrorClass::Server);
        assert!(
            error
                .message
                .starts_with("HTML page instead of a JSON response"),
            "{}",
            error.message
        );
        assert_eq!(classify_error(500, b"").message, "empty response body");
    }
}
