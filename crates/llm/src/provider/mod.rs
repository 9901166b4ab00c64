//! Provider wire formats: how a request is sent to a provider and how its responses and
//! errors are read.
//!
//! Every format is translated to and from OpenAI's chat completions, the format clients
//! speak. OpenAI-compatible providers pass through unchanged; Anthropic and Gemini are
//! translated both ways, streams included.

pub mod anthropic;
mod chunks;
pub mod gemini;
pub mod openai;
mod translate;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;

use crate::error::AttemptError;
use crate::request::ChatRequest;
use crate::usage::Usage;

pub use chunks::ChunkWriter;

/// Reads the delay a provider asked for from its response headers: `retry-after-ms`
/// first (more precise), then `Retry-After` (seconds or HTTP date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());

    if let Some(delay) =
        text("retry-after-ms").and_then(adpa_resilience::retry::parse_retry_after_ms)
    {
        return Some(delay);
    }
    text("retry-after").and_then(|value| adpa_resilience::retry::parse_retry_after(value, now))
}

/// The meaning of one upstream stream event, after translation to OpenAI's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// No content yet (a role-only delta, a ping, a block start): held back before the
    /// first content so the target can still be failed over.
    Preamble,
    /// Content, a tool call or a finish reason.
    Content,
    /// The end of the stream.
    Done,
}

/// One upstream event translated to OpenAI server-sent event frames.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Whole SSE events for the client, in order; may be empty.
    pub frames: Vec<Bytes>,
    /// The meaning of the event.
    pub kind: Option<EventKind>,
    /// Usage the event reported.
    pub usage: Option<Usage>,
}

impl Decoded {
    pub(crate) fn preamble(frames: Vec<Bytes>) -> Self {
        Self {
            frames,
            kind: Some(EventKind::Preamble),
            usage: None,
        }
    }

    pub(crate) fn content(frames: Vec<Bytes>) -> Self {
        Self {
            frames,
            kind: Some(EventKind::Content),
            usage: None,
        }
    }

    pub(crate) fn done(frames: Vec<Bytes>) -> Self {
        Self {
            frames,
            kind: Some(EventKind::Done),
            usage: None,
        }
    }

    pub(crate) fn with_usage(mut self, usage: Option<Usage>) -> Self {
        self.usage = usage.or(self.usage);
        self
    }

    /// Returns what the event means; an event without a kind is a preamble.
    pub fn kind(&self) -> EventKind {
        self.kind.unwrap_or(EventKind::Preamble)
    }
}

/// Translates one provider's stream, event by event, into OpenAI chunks.
pub trait StreamDecoder: Send {
    /// Translates one whole SSE event.
    ///
    /// # Errors
    ///
    /// A malformed event or an error event is a classified failure of the target.
    fn decode(&mut self, event: Bytes) -> Result<Decoded, AttemptError>;
}

/// Creates the stream decoder for a provider kind.
pub fn stream_decoder(
    kind: crate::config::ProviderKind,
    request: &ChatRequest,
    model: &str,
) -> Box<dyn StreamDecoder> {
    let writer = ChunkWriter::new(model, request.include_usage());
    match kind {
        crate::config::ProviderKind::Openai => Box::new(openai::PassThrough),
        crate::config::ProviderKind::Anthropic => Box::new(anthropic::Decoder::new(writer)),
        crate::config::ProviderKind::Gemini => Box::new(gemini::Decoder::new(writer)),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(2))
        );
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_millis(1500))
        );
    }
}
