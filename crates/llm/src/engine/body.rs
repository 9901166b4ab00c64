//! Reading an upstream response body under the idle-read timeout and the deadline.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use adpa_resilience::Deadline;

use crate::error::{AttemptError, ErrorClass};
use crate::http::classify_body_error;

/// A response body read one chunk at a time.
#[derive(Debug)]
pub(crate) struct BodyReader {
    body: Incoming,
    read_timeout: std::time::Duration,
    deadline: Deadline,
}

impl BodyReader {
    pub(crate) fn new(
        body: Incoming,
        read_timeout: std::time::Duration,
        deadline: Deadline,
    ) -> Self {
        Self {
            body,
            read_timeout,
            deadline,
        }
    }

    /// Returns the next chunk of data, or `None` at the end of the body.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a chunk is only taken from the body when it is returned.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        loop {
            let now = Instant::now();
            let limit = self.deadline.cap(self.read_timeout, now);
            let frame = match tokio::time::timeout(limit, self.body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(err))) => return Err(classify_body_error(&err)),
                Ok(None) => return Ok(None),
                Err(_) if self.deadline.is_expired(Instant::now()) => {
                    return Err(deadline_error());
                }
                Err(_) => {
                    return Err(AttemptError::new(
                        ErrorClass::Timeout,
                        format!(
                            "no data from the target for {:?} (read_timeout)",
                            self.read_timeout
                        ),
                    ));
                }
            };
            // Trailers carry nothing the gateway uses; skip to the next data frame.
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
    }

    /// Reads the rest of the body, failing once it grows past `limit` bytes.
    pub(crate) async fn read_to_end(&mut self, limit: usize) -> Result<Bytes, AttemptError> {
        let first = match self.next_chunk().await? {
            Some(chunk) => chunk,
            None => return Ok(Bytes::new()),
        };
        let Some(second) = self.next_chunk().await? else {
            // Most bodies arrive in one chunk; return it without copying.
            return Ok(first);
        };

        let too_large = || {
            AttemptError::new(
                ErrorClass::Server,
                format!("response body larger than {limit} bytes"),
            )
        };
        let mut collected = BytesMut::with_capacity(first.len() + second.len());
        let mut next = Some(second);
        collected.extend_from_slice(&first);
        while let Some(chunk) = next {
            if collected.len() + chunk.len() > limit {
                return Err(too_large());
            }
            collected.extend_from_slice(&chunk);
            next = self.next_chunk().await?;
        }
        Ok(collected.freeze())
    }

    /// Reads at most `limit` bytes of the body for an error message, tolerating a body
    /// that breaks off.
    pub(crate) async fn read_prefix(&mut self, limit: usize) -> Bytes {
        let mut collected = BytesMut::new();
        while collected.len() < limit {
            match self.next_chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(limit - collected.len());
                    collected.extend_from_slice(&chunk[..take]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        collected.freeze()
    }
}

pub(crate) fn deadline_error() -> AttemptError {
    let mut error = AttemptError::new(
        ErrorClass::Timeout,
        "request deadline (total_timeout) exceeded",
    );
    error.cut_by_deadline = true;
    error
}
