//! Server-sent events, read in linear time and bounded memory.
//!
//! The WHATWG HTML standard's "interpreting an event stream" algorithm
//! (section 9.2.6): lines end in CR LF, LF or CR; a line starting with `:`
//! is a comment; `field: value` lines fill the `data` (joined with LF),
//! `event` and `id` buffers; a blank line dispatches the event, unless its
//! data buffer is empty. Invalid UTF-8 becomes U+FFFD. `retry` is read and
//! ignored (we never reconnect).
//!
//! Why our own: `eventsource-stream`, the crate we used, rescans its whole
//! buffer for a line end on every chunk (an 8 MiB line without a newline
//! took 22 s of CPU) and buffers without bound; the linear parsers
//! published since (`sse-parse`, `sse-core`) are single releases without a
//! maintenance record, and the one with a size bound fails the whole
//! stream for any oversized event. The algorithm is this page: each byte
//! is looked at once (the search for a line end resumes where it
//! stopped), and an event (its line plus the data gathered for it) over
//! `max_event` bytes is an error.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Event {
    /// The `event:` field; empty when none was given (a `message`).
    pub event: String,
    /// The `data:` lines, joined with LF.
    pub data: String,
}

/// An event grew past the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    /// The bound, in bytes.
    pub max_event: usize,
}

/// A sans-IO parser: feed it bytes, drain events.
#[derive(Debug)]
pub(crate) struct Parser {
    /// Bytes not yet consumed as whole lines.
    buf: Vec<u8>,
    /// Where the search for the next line end resumes, in `buf`.
    scan: usize,
    /// The last byte fed was a CR ending a line: an LF first in the next
    /// chunk belongs to it.
    after_cr: bool,
    /// Whether the stream's first bytes were looked at for a BOM.
    started: bool,
    data: String,
    event: String,
    /// Whether a `data:` line was seen since the last dispatch.
    has_data: bool,
    max_event: usize,
    ready: std::collections::VecDeque<Event>,
    failed: bool,
}

impl Parser {
    /// A parser that refuses events over `max_event` bytes.
    pub(crate) fn new(max_event: usize) -> Parser {
        Parser {
            buf: Vec::new(),
            scan: 0,
            after_cr: false,
            started: false,
            data: String::new(),
            event: String::new(),
            has_data: false,
            max_event,
            ready: std::collections::VecDeque::new(),
            failed: false,
        }
    }

    /// Takes more of the stream.
    ///
    /// # Errors
    /// [`TooLarge`] when the event being read passes `max_event` bytes;
    /// the parser then stays failed.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        if self.failed {
            return Err(TooLarge {
                max_event: self.max_event,
            });
        }
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        self.buf.extend_from_slice(bytes);
        if !self.started {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return Ok(());
            }
            self.started = true;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
        }
        let mut start = 0;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scan..]) {
            let end = self.scan + at;
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.buf);
            self.line(&line[start..end]);
            self.buf = line;
            start = next;
            self.scan = next;
            if self.data.len() + self.event.len() > self.max_event {
                return self.fail();
            }
        }
        self.buf.drain(..start);
        self.scan = self.buf.len();
        if self.buf.len() + self.data.len() + self.event.len() > self.max_event {
            return self.fail();
        }
        Ok(())
    }

    fn fail(&mut self) -> Result<(), TooLarge> {
        self.failed = true;
        self.buf = Vec::new();
        self.data = String::new();
        Err(TooLarge {
            max_event: self.max_event,
        })
    }

    /// The next event dispatched, if any.
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // `id` and `retry` matter to reconnecting clients; we never
            // reconnect. Other fields are ignored, as the standard says.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if !self.has_data {
            self.event.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = std::mem::take(&mut self.event);
        self.ready.push_back(Event { event, data });
    }
}

/// What ends reading a stream early.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// An event over the bound.
    TooLarge(TooLarge),
    /// The connection broke.
    Transport(reqwest::Error),
}

/// Events read from a response body as its chunks arrive.
pub(crate) struct Reader {
    response: reqwest::Response,
    parser: Parser,
    ended: bool,
}

impl Reader {
    /// Reads `response`'s body as an event stream, events at most
    /// `max_event` bytes.
    pub(crate) fn new(response: reqwest::Response, max_event: usize) -> Reader {
        Reader {
            response,
            parser: Parser::new(max_event),
            ended: false,
        }
    }

    /// The next event; `None` once the body has ended (an event left
    /// without its blank line is dropped, as the standard says).
    pub(crate) async fn next(&mut self) -> Option<Result<Event, ReadError>> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => {
                    if let Err(e) = self.parser.feed(&bytes) {
                        self.ended = true;
                        return Some(Err(ReadError::TooLarge(e)));
                    }
                }
                Ok(None) => self.ended = true,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(ReadError::Transport(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c).unwrap();
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn ev(event: &str, data: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn follows_the_standard() {
        let stream = b"\xEF\xBB\xBFdata: a\ndata:b\r\n\r\n: comment\nevent: ping\ndata\n\nid: 7\nretry: 10\nevent: x\n\ndata:  two spaces\rdata: \r\r";
        let want = [ev("", "a\nb"), ev("ping", ""), ev("", " two spaces\n")];
        assert_eq!(parse_chunks(&[stream]), want);
        // Byte by byte (CR LF split, BOM split): the same events.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), want);
        // An event with no data line is not dispatched; a trailing event
        // without its blank line is never dispatched.
        assert_eq!(parse_chunks(&[b"event: x\n\n", b"data: cut"]), []);
        // Invalid UTF-8 is replaced.
        assert_eq!(parse_chunks(&[b"data: \xFF\n\n"]), [ev("", "\u{FFFD}")]);
    }

    #[test]
    fn events_over_the_bound_are_errors() {
        let mut p = Parser::new(16);
        assert!(p.feed(b"data: 0123456789\n").is_ok());
        assert_eq!(
            p.feed(b"data: 0123456789\n"),
            Err(TooLarge { max_event: 16 })
        );
        assert!(p.feed(b"\n").is_err(), "stays failed");
        // A line without end is bounded too.
        let mut p = Parser::new(16);
        assert!(p.feed(&[b'x'; 17]).is_err());
        // Many events of bounded size are fine.
        let mut p = Parser::new(16);
        for _ in 0..1000 {
            p.feed(b"data: 0123456789\n\n").unwrap();
            assert_eq!(p.next_event().unwrap().data, "0123456789");
        }
    }

    #[test]
    fn a_long_line_fed_in_small_chunks_is_scanned_once() {
        // 8 MiB with no line end, 64 bytes at a time: linear, so this
        // takes milliseconds (the old parser took 22 s of CPU).
        let mut p = Parser::new(16 << 20);
        let chunk = [b'x'; 64];
        for _ in 0..(8 << 20) / 64 {
            p.feed(&chunk).unwrap();
        }
        assert_eq!(p.scan, 8 << 20);
        p.feed(b"\n\n").unwrap();
        assert!(p.next_event().is_none(), "a field named xxx... is ignored");
    }
}
