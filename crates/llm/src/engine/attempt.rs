//! One attempt: a single call to a single target, bounded by the route's timeouts.

use std::collections::VecDeque;
use std::time::SystemTime;

use adpa_resilience::circuit_breaker::Outcome;
use adpa_resilience::Deadline;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::Full;
use tokio::time::Instant;

use super::body::{deadline_error, BodyReader};
use super::stream::ChatStream;
use super::{BreakerGuard, Route, Target};
use crate::config::ProviderKind;
use crate::error::{AttemptError, ErrorClass};
use crate::provider::{self, anthropic, gemini, openai, EventKind, StreamDecoder};
use crate::request::ChatRequest;
use crate::sse::EventSplitter;
use crate::usage::Usage;

/// Largest successful non-streaming body accepted from a target.
const MAX_COMPLETION_BODY: usize = 32 * 1024 * 1024;

/// Largest stream event accepted; an upstream that sends more without an event
/// boundary is not streaming events.
pub(crate) const MAX_EVENT: usize = 8 * 1024 * 1024;

pub(crate) fn oversized_event() -> AttemptError {
    AttemptError::new(
        ErrorClass::Server,
        format!("stream event larger than {MAX_EVENT} bytes"),
    )
}

/// Bytes of an error body read for classification; the rest is discarded.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The result of a successful attempt.
#[derive(Debug)]
pub(crate) enum AttemptSuccess {
    Complete { bytes: Bytes, usage: Option<Usage> },
    Stream(ChatStream),
}

/// A stream whose first content has arrived, with everything needed to go on reading.
pub(crate) struct StreamStart {
    pub(crate) reader: BodyReader,
    pub(crate) splitter: EventSplitter,
    pub(crate) decoder: Box<dyn StreamDecoder>,
    pub(crate) held: VecDeque<Bytes>,
    pub(crate) usage: Option<Usage>,
    pub(crate) kind: ProviderKind,
    /// The stream already ended with its end marker.
    pub(crate) finished: bool,
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
    match call(route, target, request, deadline).await {
        Ok(Called::Complete { bytes, usage }) => {
            guard.finish(Outcome::Success);
            Ok(AttemptSuccess::Complete { bytes, usage })
        }
        Ok(Called::Stream(start)) if start.finished => {
            guard.finish(Outcome::Success);
            Ok(AttemptSuccess::Stream(ChatStream::new(start, guard)))
        }
        Ok(Called::Stream(start)) => {
            guard.stream_started();
            Ok(AttemptSuccess::Stream(ChatStream::new(start, guard)))
        }
        Err(error) => {
            guard.fail(&error);
            Err(error)
        }
    }
}

enum Called {
    Complete { bytes: Bytes, usage: Option<Usage> },
    Stream(StreamStart),
}

async fn call(
    route: &Route,
    target: &Target,
    request: &ChatRequest,
    deadline: Deadline,
) -> Result<Called, AttemptError> {
    let upstream = build_request(target, request).map_err(AttemptError::never_sent)?;
    let sent_at = Instant::now();
    let first_byte_by = sent_at + deadline.cap(route.timeouts.first_byte_timeout, sent_at);

    let response = match tokio::time::timeout_at(first_byte_by, route.client.send(upstream)).await {
        Ok(result) => result?,
        Err(_) => return Err(first_byte_error(route, deadline)),
    };

    let status = response.status();
    target
        .quota
        .observe(response.headers(), adpa_resilience::clock::now());
    let retry_after = provider::retry_after(response.headers(), SystemTime::now());
    let mut reader = BodyReader::new(response.into_body(), route.timeouts.read_timeout, deadline);
    let kind = target.endpoint.kind;

    if !status.is_success() {
        let body = reader.read_prefix(MAX_ERROR_BODY).await;
        let error = match kind {
            ProviderKind::Openai => openai::classify_error(status.as_u16(), &body),
            ProviderKind::Anthropic => anthropic::classify_error(status.as_u16(), &body),
            ProviderKind::Gemini => gemini::classify_error(status.as_u16(), &body),
        };
        // A delay in the headers wins over one the body gave.
        let retry_after = retry_after.or(error.retry_after);
        return Err(error.with_retry_after(retry_after));
    }

    if !request.is_stream() {
        let bytes = reader.read_to_end(MAX_COMPLETION_BODY).await?;
        let model = &target.model.name;
        let (bytes, usage) = match kind {
            ProviderKind::Openai => {
                let usage = openai::inspect_completion(&bytes)?;
                (bytes, usage)
            }
            ProviderKind::Anthropic => anthropic::complete(&bytes, model)?,
            ProviderKind::Gemini => gemini::complete(&bytes, model)?,
        };
        return Ok(Called::Complete { bytes, usage });
    }

    let decoder = provider::stream_decoder(kind, request, &target.model.name);
    let reading = first_content(reader, decoder, kind);
    match tokio::time::timeout_at(first_byte_by, reading).await {
        Ok(result) => Ok(Called::Stream(result?)),
        Err(_) => Err(first_byte_error(route, deadline)),
    }
}

/// Reads a stream up to and including its first event with content. Frames before it
/// (a role-only delta, pings) are held back with it, so that a target that fails before
/// producing content can still be failed over.
async fn first_content(
    mut reader: BodyReader,
    mut decoder: Box<dyn StreamDecoder>,
    kind: ProviderKind,
) -> Result<StreamStart, AttemptError> {
    let mut splitter = EventSplitter::new();
    let mut held = VecDeque::new();
    let mut usage = None;
    loop {
        let Some(chunk) = reader.next_chunk().await? else {
            return Err(AttemptError::new(
                ErrorClass::Server,
                "stream ended before any content",
            ));
        };
        splitter.push(&chunk);
        if splitter.overflows(MAX_EVENT) {
            return Err(oversized_event());
        }
        while let Some(event) = splitter.next_event() {
            let decoded = decoder.decode(event)?;
            usage = decoded.usage.or(usage);
            let event_kind = decoded.kind();
            // An end event that brings frames besides the end marker carries a finish
            // reason: an empty reply (a safety stop, no tokens left) is still a reply.
            let finish_only = decoded.frames.len() > 1;
            held.extend(decoded.frames);
            let finished = match event_kind {
                EventKind::Preamble => continue,
                EventKind::Content => false,
                EventKind::Done if finish_only => true,
                EventKind::Done => {
                    return Err(AttemptError::new(
                        ErrorClass::Server,
                        "stream ended before any content",
                    ));
                }
            };
            return Ok(StreamStart {
                reader,
                splitter,
                decoder,
                held,
                usage,
                kind,
                finished,
            });
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
    let endpoint = &target.endpoint;
    let model = &target.model.name;

    let (uri, body) = match endpoint.kind {
        ProviderKind::Openai => (endpoint.fixed_url.clone(), request.body_for_model(model)),
        ProviderKind::Anthropic => (
            endpoint.fixed_url.clone(),
            anthropic::request_body(request, model)?,
        ),
        ProviderKind::Gemini => {
            let url = format!(
                "{}{}",
                endpoint.base_url,
                gemini::path(model, request.is_stream())
            );
            let uri = url.parse::<http::Uri>().map_err(|err| {
                AttemptError::new(
                    ErrorClass::InvalidRequest,
                    format!("model name {model:?} does not fit in a URL: {err}"),
                )
            })?;
            (Some(uri), gemini::request_body(request)?)
        }
    };
    let uri = uri.ok_or_else(|| AttemptError::new(ErrorClass::State, "endpoint has no URL"))?;

    let accept = if request.is_stream() {
        HeaderValue::from_static("text/event-stream")
    } else {
        HeaderValue::from_static("application/json")
    };
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(ACCEPT, accept);
    if endpoint.kind == ProviderKind::Anthropic {
        builder = builder.header(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(anthropic::API_VERSION),
        );
    }
    if let Some((name, value)) = &endpoint.credential {
        builder = builder.header(name, value.clone());
    }
    builder.body(Full::new(body)).map_err(|err| {
        AttemptError::new(
            ErrorClass::State,
            format!("cannot build upstream request: {err}"),
        )
    })
}
