//! A client's chat completion request, parsed only as deep as routing needs.
//!
//! The top-level keys are read; their values stay raw JSON text, so rewriting the
//! request for a target (a different `model`) copies bytes instead of re-encoding the
//! messages.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a client's request body was rejected.
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
    /// Every top-level member but `model`, in the client's order.
    members: Vec<(String, Box<RawValue>)>,
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

        Ok(Self {
            model,
            stream,
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
    fn duplicate_member_is_rejected() {
        let err = ChatRequest::parse(br#"{"model":"a","model":"b","messages":[]}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `model`"), "{err}");
    }
}
