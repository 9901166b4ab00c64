//! Splitting a server-sent events byte stream into whole events without copying them
//! out of order or re-encoding them.

use bytes::{Buf, Bytes, BytesMut};

/// Splits bytes that arrive in arbitrary chunks into whole SSE events.
///
/// Each event is returned with its terminating blank line, exactly as received, so the
/// events can be forwarded byte for byte.
#[derive(Debug, Default)]
pub struct EventSplitter {
    buffer: BytesMut,
    /// Bytes at the start of `buffer` already searched for a terminator.
    scanned: usize,
}

impl EventSplitter {
    /// Creates an empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Returns whether the bytes after the last whole event exceed `limit`, which means
    /// the stream is not sending events.
    pub fn overflows(&self, limit: usize) -> bool {
        self.buffer.len() > limit
    }

    /// Returns the next whole event, or `None` until more bytes arrive.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let end = self.find_event_end()?;
        self.scanned = 0;
        Some(self.buffer.split_to(end).freeze())
    }

    /// Returns the bytes received after the last whole event.
    pub fn remainder(&self) -> &[u8] {
        &self.buffer
    }

    /// Finds the end of the first event: a line feed followed by an empty line
    /// (`\n\n` or `\n\r\n`).
    fn find_event_end(&mut self) -> Option<usize> {
        let bytes = self.buffer.chunk();
        // Resume one byte early: the previous search may have stopped on a `\n` whose
        // blank line had not arrived yet.
        let start = self.scanned.saturating_sub(2);
        let mut index = start;
        while let Some(offset) = bytes[index..].iter().position(|&b| b == b'\n') {
            let at = index + offset;
            match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(b'\n'), _) => return Some(at + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(at + 3),
                _ => index = at + 1,
            }
        }
        self.scanned = bytes.len();
        None
    }
}

/// Returns the `data` of one event: its `data:` lines joined with `\n`, or `None` for an event
/// without data (a comment such as `: ping`, or only an `event:` line).
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(joined) => {
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

/// Returns the value of the event's `event:` field, if it has one.
pub fn event_name(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value = line.strip_prefix(b"event:")?;
        Some(value.strip_prefix(b" ").unwrap_or(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut splitter = EventSplitter::new();
        let mut events = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(event) = splitter.next_event() {
                events.push(event.to_vec());
            }
        }
        (events, splitter.remainder().to_vec())
    }

    #[test]
    fn splits_whole_events() {
        let (events, rest) = split_all(&[b"data: a\n\ndata: b\n\n"]);
        assert_eq!(
            events,
            vec![b"data: a\n\n".to_vec(), b"data: b\n\n".to_vec()]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn joins_events_split_across_chunks() {
        let (events, rest) = split_all(&[b"data: a", b"bc\n", b"\ndata: d\n", b"\r\n", b"data: e"]);
        assert_eq!(
            events,
            vec![b"data: abc\n\n".to_vec(), b"data: d\n\r\n".to_vec()]
        );
        assert_eq!(rest, b"data: e");
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let input = b"event: x\r\ndata: 1\r\n\r\n: ping\n\ndata: [DONE]\n\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (by_byte, _) = split_all(&chunks);
        let (whole, _) = split_all(&[input]);
        assert_eq!(by_byte, whole);
        assert_eq!(whole.len(), 3);
    }

    #[test]
    fn reads_data_and_name() {
        assert_eq!(
            event_data(b"data: {\"a\":1}\n\n"),
            Some(b"{\"a\":1}".to_vec())
        );
        assert_eq!(event_data(b"data:x\ndata: y\n\n"), Some(b"x\ny".to_vec()));
        assert_eq!(event_data(b": ping\n\n"), None);
        assert_eq!(
            event_name(b"event: message_stop\r\ndata: {}\r\n\r\n"),
            Some(&b"message_stop"[..])
        );
    }
}
