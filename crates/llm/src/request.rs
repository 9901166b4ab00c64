//! A client's chat completion request, parsed only as deep as routing needs.
//!
//! The top-level keys are read; their values stay raw JSON text, so rewriting the
//! request for a target (a different `model`) copies bytes instead of re-encoding the
//! messages.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The reason a client's request body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is not valid JSON; the message carries the line and column.
    #[error("invalid JSON in request body: {0}")]
    Json(String),
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's name.
        field: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
}

/// A parsed chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    model: String,
    stream: bool,
    needs: Needs,
    /// Every top-level member but `model`, in the client's order.
    members: Vec<(String, Box<RawValue>)>,
}

/// The capabilities a request needs from a model, read from its members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// It has `tools` or `functions`.
    pub tools: bool,
    /// Its `response_format` requests JSON.
    pub json_mode: bool,
    /// A message carries an image.
    pub vision: bool,
    /// Estimated tokens of prompt and completion: the bytes of `messages` and `tools`
    /// divided by four, plus `max_tokens` (or `max_completion_tokens`) when set. Four
    /// bytes per token is a common rule of thumb for English text, not a tokenizer.
    pub estimated_tokens: u64,
}

impl ChatRequest {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// Returns [`RequestError`] for malformed JSON (with its position), a body that is
    /// not an object, a missing or non-string `model`, a missing or non-array `messages`,
    /// or a non-boolean `stream`.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let members = deserializer
            .deserialize_any(MembersVisitor)
            .map_err(|err| RequestError::Json(err.to_string()))?
            .ok_or(RequestError::NotAnObject)?;
        deserializer
            .end()
            .map_err(|err| RequestError::Json(err.to_string()))?;

        Self::from_members(members)
    }

    fn from_members(mut members: Vec<(String, Box<RawValue>)>) -> Result<Self, RequestError> {
        let model_index = members
            .iter()
            .position(|(key, _)| key == "model")
            .ok_or(RequestError::Missing("model"))?;
        let (_, raw_model) = members.remove(model_index);
        let model: String =
            serde_json::from_str(raw_model.get()).map_err(|_| RequestError::WrongType {
                field: "model",
                expected: "a string",
            })?;

        let messages = members
            .iter()
            .find(|(key, _)| key == "messages")
            .ok_or(RequestError::Missing("messages"))?;
        if !messages.1.get().starts_with('[') {
            return Err(RequestError::WrongType {
                field: "messages",
                expected: "an array",
            });
        }

        let stream = match members.iter().find(|(key, _)| key == "stream") {
            None => false,
            Some((_, raw)) => match raw.get() {
                "true" => true,
                "false" | "null" => false,
                _ => {
                    return Err(RequestError::WrongType {
                        field: "stream",
                        expected: "a boolean",
                    })
                }
            },
        };

        let needs = Needs::of(&members);
        Ok(Self {
            model,
            stream,
            needs,
            members,
        })
    }

    /// Returns the model (or route) name the client asked for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Returns whether the client asked for a streamed response.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Returns whether a stream should end with a usage chunk
    /// (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        self.member("stream_options")
            .and_then(|raw| serde_json::from_str::<StreamOptions>(raw.get()).ok())
            .is_some_and(|options| options.include_usage)
    }

    /// Parses a top-level member into a value, for translation to another format.
    pub fn member_value(&self, key: &str) -> Option<serde_json::Value> {
        self.member(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .filter(|value: &serde_json::Value| !value.is_null())
    }

    /// Returns what the request needs from a model.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// Returns the raw JSON of a top-level member other than `model`.
    pub fn member(&self, key: &str) -> Option<&RawValue> {
        self.members
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, raw)| raw.as_ref())
    }

    /// Encodes the request for a target that calls the model `model`: `model` first,
    /// then every other member as the client sent it.
    pub fn body_for_model(&self, model: &str) -> Bytes {
        let size: usize = self
            .members
            .iter()
            .map(|(key, raw)| key.len() + raw.get().len() + 4)
            .sum();
        let mut out = BytesMut::with_capacity(size + model.len() + 16).writer();

        // Writing JSON strings into a BytesMut cannot fail.
        out.get_mut().put_slice(b"{\"model\":");
        let _ = serde_json::to_writer(&mut out, model);
        for (key, raw) in &self.members {
            out.get_mut().put_u8(b',');
            let _ = serde_json::to_writer(&mut out, key);
            out.get_mut().put_u8(b':');
            out.get_mut().put_slice(raw.get().as_bytes());
        }
        out.get_mut().put_u8(b'}');
        out.into_inner().freeze()
    }
}

impl Needs {
    fn of(members: &[(String, Box<RawValue>)]) -> Self {
        let raw = |key: &str| {
            members
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.get())
        };
        let present = |key: &str| raw(key).is_some_and(|value| !matches!(value, "null" | "[]"));

        let messages = raw("messages").unwrap_or_default();
        let tools = raw("tools").unwrap_or_default();
        let max_tokens = raw("max_completion_tokens")
            .or_else(|| raw("max_tokens"))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0);

        Self {
            tools: present("tools") || present("functions"),
            json_mode: raw("response_format").is_some_and(|value| {
                value.contains("json_object") || value.contains("json_schema")
            }),
            vision: messages.contains("\"image_url\""),
            estimated_tokens: (messages.len() + tools.len()).div_ceil(4) as u64 + max_tokens,
        }
    }
}

/// Collects the members of a top-level object, or `None` when the value is no object.
struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Option<Vec<(String, Box<RawValue>)>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            if members.iter().any(|(seen, _): &(String, _)| *seen == key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            members.push((key, value));
        }
        Ok(Some(members))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_and_stream() {
        let request = ChatRequest::parse(
            br#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        assert_eq!(request.model(), "chat");
        assert!(request.is_stream());
        assert!(request.member("messages").is_some());
    }

    #[test]
    fn rewrites_model_and_keeps_members_verbatim() {
        let body = br#"{"messages":[{"role":"user","content":"h\u00e9 \"x\""}],"model":"chat","temperature":0.50}"#;
        let request = ChatRequest::parse(body).unwrap();
        let rewritten = request.body_for_model("gpt-4");
        assert_eq!(
            std::str::from_utf8(&rewritten).unwrap(),
            r#"{"model":"gpt-4","messages":[{"role":"user","content":"h\u00e9 \"x\""}],"temperature":0.50}"#
        );
    }

    #[test]
    fn malformed_json_reports_position() {
        let err = ChatRequest::parse(b"{\"model\": \"chat\",\n \"messages\": [}").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("line 2 column"), "{message}");
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let err = ChatRequest::parse(br#"{"model":"a","messages":[]} x"#).unwrap_err();
        assert!(matches!(err, RequestError::Json(_)), "{err}");
    }

    #[test]
    fn rejects_bad_shapes() {
        let cases: [(&[u8], RequestError); 6] = [
            (b"[1,2]", RequestError::NotAnObject),
            (b"\"text\"", RequestError::NotAnObject),
            (br#"{"messages":[]}"#, RequestError::Missing("model")),
            (br#"{"model":"a"}"#, RequestError::Missing("messages")),
            (
                br#"{"model":7,"messages":[]}"#,
                RequestError::WrongType {
                    field: "model",
                    expected: "a string",
                },
            ),
            (
                br#"{"model":"a","messages":[],"stream":"yes"}"#,
                RequestError::WrongType {
                    field: "stream",
                    expected: "a boolean",
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(ChatRequest::parse(body).unwrap_err(), expected);
        }
    }

    #[test]
    fn reads_needs() {
        let plain = ChatRequest::parse(
            br#"{"model":"a","messages":[{"role":"user","content":"hello there"}]}"#,
        )
        .unwrap();
        assert_eq!(
            plain.needs(),
            Needs {
                tools: false,
                json_mode: false,
                vision: false,
                estimated_tokens: 11
            }
        );

        let demanding = ChatRequest::parse(
            br#"{"model":"a","max_tokens":100,"tools":[{"type":"function"}],
                "response_format":{"type":"json_object"},
                "messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .unwrap();
        let needs = demanding.needs();
        assert!(needs.tools);
        assert!(needs.json_mode);
        assert!(needs.vision);
        assert!(needs.estimated_tokens > 100);

        let empty_tools = ChatRequest::parse(br#"{"model":"a","tools":[],"messages":[]}"#).unwrap();
        assert!(!empty_tools.needs().tools);
    }

    #[test]
    fn duplicate_member_is_rejected() {
        let err = ChatRequest::parse(br#"{"model":"a","model":"b","messages":[]}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `model`"), "{err}");
    }
}
