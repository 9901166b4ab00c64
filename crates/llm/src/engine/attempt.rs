//! One attempt: a single call to a single target, bounded by the route's timeouts.

use std::collections::VecDeque;
use std::time::SystemTime;

use adpa_resilience::circuit_breaker::Outcome;
use adpa_resilience::Deadline;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method};
use http_body_util::Full;
use tokio::time::Instant;

use super::body::{deadline_error, BodyReader};
use super::stream::ChatStream;
use super::{BreakerGuard, Route, Target};
use crate::error::{AttemptError, ErrorClass};
use crate::provider::{self, openai};
use crate::request::ChatRequest;
use crate::sse::EventSplitter;
use crate::usage::Usage;

/// Largest successful non-streaming body accepted from a target.
const MAX_COMPLETION_BODY: usize = 32 * 1024 * 1024;

/// Bytes of an error body read for classification; the rest is discarded.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What a successful attempt produced.
#[derive(Debug)]
pub(crate) enum AttemptSuccess {
    Complete { bytes: Bytes, usage: Option<Usage> },
    Stream(ChatStream),
}

/// Runs one attempt and records its outcome in the target's breaker through `guard`.
///
/// A stream counts as successful here once its first content arrived; the stream records
/// its own final outcome when it ends.
pub(crate) async fn run(
    route: &Route,
    target: &Target,
    request: &ChatRequest,
    deadline: Deadline,
    mut guard: BreakerGuard,
) -> Result<AttemptSuccess, AttemptError> {
    let result = call(route, target, request, deadline).await;
    match result {
        Ok(Called::Complete { bytes, usage }) => {
            guard.finish(Outcome::Success);
            Ok(AttemptSuccess::Complete { bytes, usage })
        }
        Ok(Called::Stream {
            reader,
            splitter,
            held,
        }) => {
            guard.stream_started();
            Ok(AttemptSuccess::Stream(ChatStream::new(
                reader, splitter, held, guard,
            )))
        }
        Err(error) => {
            guard.fail(&error);
            Err(error)
        }
    }
}

enum Called {
    Complete {
        bytes: Bytes,
        usage: Option<Usage>,
    },
    Stream {
        reader: BodyReader,
        splitter: EventSplitter,
        held: VecDeque<Bytes>,
    },
}

async fn call(
    route: &Route,
    target: &Target,
    request: &ChatRequest,
    deadline: Deadline,
) -> Result<Called, AttemptError> {
    let upstream = build_request(target, request)?;
    let sent_at = Instant::now();
    let first_byte_by = sent_at + deadline.cap(route.timeouts.first_byte_timeout, sent_at);

    let response = match tokio::time::timeout_at(first_byte_by, route.client.send(upstream)).await {
        Ok(result) => result?,
        Err(_) => return Err(first_byte_error(route, deadline)),
    };

    let status = response.status();
    let retry_after = provider::retry_after(response.headers(), SystemTime::now());
    let mut reader = BodyReader::new(response.into_body(), route.timeouts.read_timeout, deadline);

    if !status.is_success() {
        let body = reader.read_prefix(MAX_ERROR_BODY).await;
        return Err(openai::classify_error(status.as_u16(), &body).with_retry_after(retry_after));
    }

    if !request.is_stream() {
        let bytes = reader.read_to_end(MAX_COMPLETION_BODY).await?;
        let usage = openai::inspect_completion(&bytes)?;
        return Ok(Called::Complete { bytes, usage });
    }

    let (splitter, held) =
        match tokio::time::timeout_at(first_byte_by, first_content(&mut reader)).await {
            Ok(result) => result?,
            Err(_) => return Err(first_byte_error(route, deadline)),
        };
    Ok(Called::Stream {
        reader,
        splitter,
        held,
    })
}

/// Reads a stream up to and including its first event with content. Events before it
/// (a role-only delta, comments) are held back with it, so that a target that fails
/// before producing content can still be failed over.
async fn first_content(
    reader: &mut BodyReader,
) -> Result<(EventSplitter, VecDeque<Bytes>), AttemptError> {
    let mut splitter = EventSplitter::new();
    let mut held = VecDeque::new();
    loop {
        let Some(chunk) = reader.next_chunk().await? else {
            return Err(AttemptError::new(
                ErrorClass::Server,
                "stream ended before any content",
            ));
        };
        splitter.push(&chunk);
        while let Some(event) = splitter.next_event() {
            match openai::inspect_stream_event(&event)? {
                openai::StreamEvent::Preamble | openai::StreamEvent::Usage(_) => {
                    held.push_back(event)
                }
                openai::StreamEvent::Content { .. } => {
                    held.push_back(event);
                    return Ok((splitter, held));
                }
                openai::StreamEvent::Done => {
                    return Err(AttemptError::new(
                        ErrorClass::Server,
                        "stream ended with [DONE] before any content",
                    ));
                }
            }
        }
    }
}

fn first_byte_error(route: &Route, deadline: Deadline) -> AttemptError {
    if deadline.is_expired(Instant::now()) {
        return deadline_error();
    }
    AttemptError::new(
        ErrorClass::Timeout,
        format!(
            "no response from the target within {:?} (first_byte_timeout)",
            route.timeouts.first_byte_timeout
        ),
    )
}

fn build_request(
    target: &Target,
    request: &ChatRequest,
) -> Result<http::Request<Full<Bytes>>, AttemptError> {
    let accept = if request.is_stream() {
        HeaderValue::from_static("text/event-stream")
    } else {
        HeaderValue::from_static("application/json")
    };
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(target.endpoint.chat_url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(ACCEPT, accept);
    if let Some(authorization) = &target.endpoint.authorization {
        builder = builder.header(AUTHORIZATION, authorization.clone());
    }
    builder
        .body(Full::new(request.body_for_model(&target.model.name)))
        .map_err(|err| {
            AttemptError::new(
                ErrorClass::State,
                format!("cannot build upstream request: {err}"),
            )
        })
}
