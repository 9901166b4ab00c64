//! One HTTP/1.1 connection of the simulated provider.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::script::{FaultKind, FaultScript};
use super::wire::{self, Format};
use super::{openai, RequestRecord, Shared};

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How long a stalled or hung response waits for the client to give up. Long enough
/// for any test, short enough that a forgotten connection does not live forever.
const MAX_STALL: Duration = Duration::from_secs(300);

struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    api_key: Option<String>,
    body: Bytes,
}

/// The connection's next step after a response.
enum Next {
    KeepAlive,
    Close,
    Reset,
}

pub(super) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = BytesMut::with_capacity(8 * 1024);

    loop {
        let request = match read_request(&mut reader, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(message) => {
                let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
                let _ = write_full(
                    &mut writer,
                    400,
                    "application/json",
                    &[],
                    body.to_string().as_bytes(),
                    false,
                )
                .await;
                return;
            }
        };

        let keep_alive = request.keep_alive;
        let next = handle(&shared, request, &mut reader, &mut writer, &mut buffer).await;
        match next {
            Next::KeepAlive if keep_alive => continue,
            Next::KeepAlive | Next::Close => return,
            Next::Reset => {
                if let Ok(stream) = reader.reunite(writer) {
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                return;
            }
        }
    }
}

/// Reads one request, or `None` when the client closed the connection between requests.
async fn read_request(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
) -> Result<Option<Request>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or_default().to_owned();
                let path = parsed.path.unwrap_or_default().to_owned();
                let mut content_length = 0usize;
                let mut keep_alive = parsed.version == Some(1);
                let mut api_key = None;
                for header in parsed.headers.iter() {
                    let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
                    if header.name.eq_ignore_ascii_case("content-length") {
                        content_length = value
                            .parse()
                            .map_err(|_| "invalid Content-Length".to_owned())?;
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(
                            "chunked request bodies are not supported; send Content-Length"
                                .to_owned(),
                        );
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !value.eq_ignore_ascii_case("close");
                    } else if header.name.eq_ignore_ascii_case("authorization") {
                        api_key = value.strip_prefix("Bearer ").map(str::to_owned);
                    } else if header.name.eq_ignore_ascii_case("x-api-key")
                        || header.name.eq_ignore_ascii_case("x-goog-api-key")
                    {
                        api_key = Some(value.to_owned());
                    }
                }
                if content_length > MAX_BODY {
                    return Err(format!("request body over {MAX_BODY} bytes"));
                }

                while buffer.len() < head_len + content_length {
                    if reader.read_buf(buffer).await.map_err(|e| e.to_string())? == 0 {
                        return Err("connection closed inside the request body".to_owned());
                    }
                }
                let mut message = buffer.split_to(head_len + content_length);
                let body = message.split_off(head_len).freeze();
                return Ok(Some(Request {
                    method,
                    path,
                    keep_alive,
                    api_key,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) => {
                if buffer.len() > MAX_HEAD {
                    return Err(format!("request head over {MAX_HEAD} bytes"));
                }
                match reader.read_buf(buffer).await {
                    Ok(0) if buffer.is_empty() => return Ok(None),
                    Ok(0) => return Err("connection closed inside the request head".to_owned()),
                    Ok(_) => {}
                    Err(_) => return Ok(None),
                }
            }
            Err(err) => return Err(format!("malformed request: {err}")),
        }
    }
}

async fn handle(
    shared: &Shared,
    request: Request,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    buffer: &mut BytesMut,
) -> Next {
    let path = request.path.split('?').next().unwrap_or_default();
    let written = match (request.method.as_str(), path) {
        ("POST", path) if Format::of_path(path).is_some() => {
            let format = Format::of_path(path).unwrap_or(Format::OpenAi);
            return chat(shared, format, &request, reader, writer, buffer).await;
        }
        ("GET", path) if path.ends_with("/models") => {
            let body = json!({"object": "list", "data": [{"id": "sim-model", "object": "model", "owned_by": shared.name}]});
            write_json(writer, 200, &body).await
        }
        ("GET", "/_sim/stats") => {
            let stats = shared.stats.lock().clone();
            write_json(
                writer,
                200,
                &serde_json::to_value(stats).unwrap_or_default(),
            )
            .await
        }
        ("PUT", "/_sim/faults") => match serde_json::from_slice::<FaultScript>(&request.body)
            .map_err(|err| err.to_string())
            .and_then(|script| script.validate().map(|()| script))
        {
            Ok(script) => {
                shared.set_script(script);
                write_full(writer, 204, "text/plain", &[], b"", true).await
            }
            Err(message) => write_json(writer, 400, &json!({"error": {"message": message}})).await,
        },
        ("POST", "/_sim/reset") => {
            shared.reset();
            write_full(writer, 204, "text/plain", &[], b"", true).await
        }
        _ => {
            let message = format!("no route for {} {}", request.method, request.path);
            write_json(
                writer,
                404,
                &json!({"error": {"message": message, "type": "invalid_request_error"}}),
            )
            .await
        }
    };
    keep_if(written)
}

#[derive(Deserialize)]
struct ChatProbe {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Reads model and stream mode: from the body for OpenAI and Anthropic, from the path
/// (`/models/{model}:streamGenerateContent`) for Gemini.
fn read_chat(format: Format, path: &str, body: &[u8]) -> Result<(String, bool, bool), String> {
    let probe: ChatProbe =
        serde_json::from_slice(body).map_err(|err| format!("invalid JSON body: {err}"))?;
    if format != Format::Gemini {
        let include_usage = probe.stream_options.is_some_and(|o| o.include_usage);
        return Ok((
            probe.model.unwrap_or_default(),
            probe.stream.unwrap_or(false),
            include_usage,
        ));
    }
    let model = path
        .rsplit_once("/models/")
        .and_then(|(_, rest)| rest.split(':').next())
        .unwrap_or_default()
        .to_owned();
    Ok((model, path.contains(":streamGenerateContent"), false))
}

async fn chat(
    shared: &Shared,
    format: Format,
    request: &Request,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    buffer: &mut BytesMut,
) -> Next {
    let (model, stream, include_usage) = match read_chat(format, &request.path, &request.body) {
        Ok(read) => read,
        Err(message) => {
            let mut body = wire::error_body(format, 400);
            body["error"]["message"] = json!(message);
            return keep_if(write_json(writer, 400, &body).await);
        }
    };

    let number = shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let (_in_flight, others) = shared.enter();
    let (fault, latency, shape, quota) = {
        let script = shared.script.read();
        let mut rng = shared.rng.lock();
        let fault = script.pick(number, &model, stream, &mut *rng).cloned();
        let beyond = (others + 1).saturating_sub(u64::from(script.latency.capacity.max(1)));
        let queued = script.latency.per_in_flight * u32::try_from(beyond).unwrap_or(u32::MAX);
        (
            fault,
            script.latency(&mut *rng) + queued,
            script.response.clone(),
            script.quota.clone(),
        )
    };
    let (quota_headers, over_quota) = match &quota {
        Some(quota) => shared.take_quota(quota),
        None => (Vec::new(), false),
    };
    let fault = if over_quota {
        Some(FaultKind::Status {
            status: 429,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        })
    } else {
        fault
    };
    shared.log_request(RequestRecord {
        number,
        at_ms: 0,
        model: model.clone(),
        stream,
        fault: fault.as_ref().map(FaultKind::label),
        api_key: request.api_key.clone(),
    });

    if !latency.is_zero()
        && until_disconnect(reader, buffer, tokio::time::sleep(latency))
            .await
            .is_none()
    {
        shared.record(|stats| stats.disconnects += 1);
        return Next::Close;
    }

    let id = format!("sim-{number}");
    let parts = openai::reply_parts(&shared.name, shape.chunks);
    let prompt_tokens = openai::prompt_tokens(&request.body);
    let whole = || wire::complete(format, &id, &model, &parts.concat(), prompt_tokens).to_string();
    let plan = || wire::stream(format, &id, &model, &parts, include_usage, prompt_tokens);
    let delay = shape.chunk_delay;

    let outcome = match fault {
        None if stream => {
            let plan = plan();
            let mut events: Vec<String> = plan
                .head
                .into_iter()
                .chain(plan.content)
                .chain(plan.tail)
                .collect();
            if shape.one_chunk {
                events = vec![events.concat()];
            }
            write_stream_with(
                writer,
                reader,
                buffer,
                &events,
                delay,
                StreamEnd::Clean,
                &quota_headers,
            )
            .await
        }
        None => {
            let headers: Vec<(&str, &str)> = quota_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            Outcome::from_written(
                write_full(
                    writer,
                    200,
                    "application/json",
                    &headers,
                    whole().as_bytes(),
                    true,
                )
                .await,
            )
        }
        Some(FaultKind::Status {
            status,
            retry_after,
            retry_after_ms,
            body,
        }) => {
            let body = body.unwrap_or_else(|| wire::error_body(format, status).to_string());
            let mut headers = quota_headers.clone();
            if let Some(value) = retry_after {
                headers.push(("retry-after".to_owned(), value));
            }
            if let Some(value) = retry_after_ms {
                headers.push(("retry-after-ms".to_owned(), value.to_string()));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            Outcome::from_written(
                write_full(
                    writer,
                    status,
                    "application/json",
                    &headers,
                    body.as_bytes(),
                    true,
                )
                .await,
            )
        }
        Some(FaultKind::Reset) => return Next::Reset,
        Some(FaultKind::Hang) => {
            let _ = until_disconnect(reader, buffer, tokio::time::sleep(MAX_STALL)).await;
            Outcome::Disconnected
        }
        Some(FaultKind::Html502) => Outcome::from_written(
            write_full(
                writer,
                502,
                "text/html",
                &[],
                openai::HTML_502.as_bytes(),
                true,
            )
            .await,
        ),
        Some(FaultKind::TruncatedJson) => {
            let body = whole();
            let cut = &body.as_bytes()[..body.len() / 2];
            Outcome::from_written(write_full(writer, 200, "application/json", &[], cut, true).await)
        }
        Some(FaultKind::Stall { after_chunks }) if stream => {
            let plan = plan();
            let events: Vec<String> = plan
                .head
                .into_iter()
                .chain(plan.content.into_iter().take(after_chunks as usize))
                .collect();
            write_stream(writer, reader, buffer, &events, delay, StreamEnd::Stall).await
        }
        Some(FaultKind::Stall { .. }) => {
            let body = whole();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let half = &body.as_bytes()[..body.len() / 2];
            if writer.write_all(head.as_bytes()).await.is_ok()
                && writer.write_all(half).await.is_ok()
            {
                let _ = until_disconnect(reader, buffer, tokio::time::sleep(MAX_STALL)).await;
            }
            Outcome::Disconnected
        }
        Some(FaultKind::NoDone) => {
            // The stream ends cleanly, one event short of its end marker.
            let plan = plan();
            let mut events: Vec<String> = plan
                .head
                .into_iter()
                .chain(plan.content)
                .chain(plan.tail)
                .collect();
            events.pop();
            write_stream(writer, reader, buffer, &events, delay, StreamEnd::Clean).await
        }
        Some(FaultKind::StreamError { after_chunks }) => {
            let plan = plan();
            let mut events: Vec<String> = plan
                .head
                .into_iter()
                .chain(plan.content.into_iter().take(after_chunks as usize))
                .collect();
            events.push(wire::stream_error(format));
            write_stream(writer, reader, buffer, &events, delay, StreamEnd::Clean).await
        }
    };

    match outcome {
        Outcome::Completed => {
            shared.record(|stats| stats.completed += 1);
            Next::KeepAlive
        }
        Outcome::Disconnected => {
            shared.record(|stats| stats.disconnects += 1);
            Next::Close
        }
    }
}

fn keep_if(written: bool) -> Next {
    if written {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

enum Outcome {
    Completed,
    Disconnected,
}

impl Outcome {
    fn from_written(written: bool) -> Self {
        if written {
            Self::Completed
        } else {
            Self::Disconnected
        }
    }
}

/// The end of a stream after its events.
#[derive(PartialEq)]
enum StreamEnd {
    /// The end of the body.
    Clean,
    /// No end: the connection stays open until the client closes it.
    Stall,
}

async fn write_stream(
    writer: &mut OwnedWriteHalf,
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    events: &[String],
    delay: Duration,
    end: StreamEnd,
) -> Outcome {
    write_stream_with(writer, reader, buffer, events, delay, end, &[]).await
}

async fn write_stream_with(
    writer: &mut OwnedWriteHalf,
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    events: &[String],
    delay: Duration,
    end: StreamEnd,
    headers: &[(String, String)],
) -> Outcome {
    let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if writer.write_all(head.as_bytes()).await.is_err() {
        return Outcome::Disconnected;
    }

    for (index, event) in events.iter().enumerate() {
        if index > 0
            && !delay.is_zero()
            && until_disconnect(reader, buffer, tokio::time::sleep(delay))
                .await
                .is_none()
        {
            return Outcome::Disconnected;
        }
        if write_chunk(writer, event.as_bytes()).await.is_err() {
            return Outcome::Disconnected;
        }
    }

    match end {
        StreamEnd::Clean => {
            if writer.write_all(b"0\r\n\r\n").await.is_err() {
                return Outcome::Disconnected;
            }
            Outcome::Completed
        }
        StreamEnd::Stall => {
            let _ = until_disconnect(reader, buffer, tokio::time::sleep(MAX_STALL)).await;
            Outcome::Disconnected
        }
    }
}

async fn write_chunk(writer: &mut OwnedWriteHalf, data: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(data.len() + 16);
    framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    writer.write_all(&framed).await
}

async fn write_json(writer: &mut OwnedWriteHalf, status: u16, body: &Value) -> bool {
    write_full(
        writer,
        status,
        "application/json",
        &[],
        body.to_string().as_bytes(),
        true,
    )
    .await
}

/// Writes a whole response; returns whether the client received it.
async fn write_full(
    writer: &mut OwnedWriteHalf,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> bool {
    let reason = http_reason(status);
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");

    let mut message = Vec::with_capacity(head.len() + body.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(body);
    writer.write_all(&message).await.is_ok()
}

fn http_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

/// Runs `work` while watching the connection; returns `None` as soon as the client
/// closes it. Bytes the client sends meanwhile stay in `buffer` for the next request.
async fn until_disconnect<F: Future>(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            read = reader.read_buf(buffer) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}
