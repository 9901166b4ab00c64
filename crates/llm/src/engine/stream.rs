//! The part of a streamed response after its first content reached the client.
//!
//! Events pass through byte for byte. Each is read only to check that it is well formed
//! and to pick up `usage`. A failure after this point cannot be failed over, so it ends
//! the stream with an OpenAI-style error event and without `data: [DONE]`, never with a
//! silent truncation.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use adpa_resilience::circuit_breaker::Outcome;
use bytes::Bytes;
use futures_util::Stream;
use parking_lot::Mutex;
use serde_json::json;

use super::attempt::StreamStart;
use adpa_resilience::concurrency::ConcurrencyPermit;

use super::body::BodyReader;
use super::limits::TokenReservation;
use super::BreakerGuard;
use crate::config::ProviderKind;
use crate::error::{AttemptError, ErrorClass};
use crate::provider::{EventKind, StreamDecoder};
use crate::sse::EventSplitter;
use crate::usage::Usage;

/// A streamed chat completion, as server-sent event bytes.
///
/// The stream never fails: an upstream failure becomes its last item, an error event.
///
/// # Cancel safety
///
/// Dropping it closes the upstream connection, so the provider stops generating, and
/// frees the target's half-open probe slot if it held one.
pub struct ChatStream {
    inner: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    /// Tokens to reconcile with the usage the stream reports when it completes.
    reservation: Arc<Mutex<TokenReservation>>,
    /// The route's concurrency slot, released when the stream is dropped.
    permit: Option<ConcurrencyPermit>,
    /// The reported tokens of a stream whose end had already arrived with its first
    /// content, so the reservation is settled when handed over.
    ended_with: Option<Option<u64>>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream").finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct State {
    reader: BodyReader,
    splitter: EventSplitter,
    decoder: Box<dyn StreamDecoder>,
    kind: ProviderKind,
    pending: VecDeque<Bytes>,
    guard: BreakerGuard,
    usage: Option<Usage>,
    finished: bool,
    reservation: Arc<Mutex<TokenReservation>>,
}

impl ChatStream {
    pub(crate) fn new(start: StreamStart, guard: BreakerGuard) -> Self {
        let reservation = Arc::new(Mutex::new(TokenReservation::default()));
        let ended_with = start
            .finished
            .then(|| start.usage.map(|usage| usage.total_tokens));
        let state = State {
            reservation: Arc::clone(&reservation),
            reader: start.reader,
            splitter: start.splitter,
            decoder: start.decoder,
            kind: start.kind,
            pending: start.held,
            guard,
            usage: start.usage,
            finished: start.finished,
        };
        let inner = futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        });
        Self {
            inner: Box::pin(inner),
            reservation,
            permit: None,
            ended_with,
        }
    }

    /// Keeps the route's concurrency slot until the stream is dropped.
    pub(crate) fn hold_until_end(&mut self, permit: Option<ConcurrencyPermit>) {
        self.permit = permit;
    }

    /// Hands over the tokens reserved for this request, to be reconciled with the usage
    /// the stream reports when it completes. A stream that fails or is dropped keeps
    /// the estimate charged.
    pub(crate) fn settle_tokens_at_end(&mut self, mut reservation: TokenReservation) {
        match self.ended_with {
            Some(actual) => reservation.settle(actual, adpa_resilience::clock::now()),
            None => *self.reservation.lock() = reservation,
        }
    }
}

impl State {
    /// Returns the next bytes for the client, reading upstream when nothing is pending.
    async fn next_item(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            self.read_more().await;
        }
    }

    /// Queues the events already buffered or, when none is, reads one upstream chunk
    /// and queues the whole events it completes. A chunk often carries several events,
    /// so some may wait in the buffer after the first content was handed over.
    async fn read_more(&mut self) {
        if self.decode_buffered() {
            return;
        }
        let chunk = match self.reader.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                let message = if self.splitter.remainder().is_empty() {
                    format!("stream ended without {}", self.kind.end_marker())
                } else {
                    "stream ended in the middle of an event".to_owned()
                };
                return self.fail(AttemptError::new(ErrorClass::Server, message));
            }
            Err(error) => return self.fail(error),
        };

        self.splitter.push(&chunk);
        if self.splitter.overflows(super::attempt::MAX_EVENT) {
            return self.fail(super::attempt::oversized_event());
        }
        self.decode_buffered();
    }

    /// Decodes the whole events in the buffer into pending frames, up to the end of the
    /// stream or a malformed event. Returns whether it decoded any event.
    fn decode_buffered(&mut self) -> bool {
        let mut decoded_any = false;
        while let Some(event) = self.splitter.next_event() {
            decoded_any = true;
            match self.decoder.decode(event) {
                Ok(decoded) => {
                    self.usage = decoded.usage.or(self.usage);
                    let done = decoded.kind() == EventKind::Done;
                    self.pending.extend(decoded.frames);
                    if done {
                        self.succeed();
                        return true;
                    }
                }
                Err(error) => {
                    self.fail(error);
                    return true;
                }
            }
        }
        decoded_any
    }

    fn succeed(&mut self) {
        self.finished = true;
        self.guard.finish(Outcome::Success);
        let actual = self.usage.map(|usage| usage.total_tokens);
        self.reservation
            .lock()
            .settle(actual, adpa_resilience::clock::now());
        tracing::trace!(
            request_id = %self.guard.request_id(),
            target = %self.guard.target().id,
            usage = ?self.usage,
            "stream completed"
        );
    }

    fn fail(&mut self, error: AttemptError) {
        self.finished = true;
        self.guard.fail(&error);
        let target = &self.guard.target().id;
        tracing::warn!(
            request_id = %self.guard.request_id(),
            target = %target,
            class = %error.class,
            error = %error.message,
            "stream failed after content was sent; ending it with an error event"
        );
        self.pending
            .push_back(error_event(&error, target, self.guard.request_id()));
    }
}

/// Encodes a failure as an SSE event in OpenAI's error shape.
pub fn error_event(error: &AttemptError, target: &str, request_id: &str) -> Bytes {
    let body = json!({
        "error": {
            "message": format!("{target} failed mid-stream: {}", error.message),
            "type": "server_error",
            "code": error.class.as_str(),
            "request_id": request_id,
            "attempts": [{
                "target": target,
                "class": error.class.as_str(),
                "status": error.status,
            }],
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}
