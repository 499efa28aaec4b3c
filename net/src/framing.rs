//! Cutting a TCP byte stream into directory requests.
//!
//! Directory clients send JSON objects over TCP in every shape the stream allows: the
//! original client sends one bare `json.dumps(...)` object per `send` with no separator,
//! newer clients end each object with `\n`, and TCP may deliver several objects in one read
//! or one object split across reads. [`FrameBuffer`] is the per-connection receive buffer
//! that turns those bytes back into one [`Frame`] per object.
//!
//! Contract, for the shell that owns a connection:
//! 1. read from the socket into [`FrameBuffer::spare`], then report the count with
//!    [`FrameBuffer::filled`];
//! 2. call [`FrameBuffer::next_frame`] until it returns `None`, handling each frame;
//! 3. repeat. After `next_frame` returns `None`, `spare` is never empty.
//!
//! The splitter only finds object boundaries: it tracks braces, brackets and strings (with
//! their escapes) and leaves the JSON itself to [`crate::directory::Request::parse`].
//! Bad input costs nothing but an [`Frame::Invalid`] per bad run of bytes:
//! - bytes outside an object are skipped up to the next `{` ([`RequestError::NotAnObject`]);
//! - an object longer than [`MAX_REQUEST`] bytes is reported once
//!   ([`RequestError::TooLong`]) and the rest of it is skipped up to its closing brace, or up
//!   to a raw newline (where a newline-separated client's next request starts);
//! - a raw newline inside a string ends the frame ([`RequestError::UnterminatedString`]):
//!   JSON strings cannot hold one, so a newline-separated client lost a quote.
//!
//! No input panics, allocates, or makes the buffer hold more than [`MAX_REQUEST`] bytes.

use crate::directory::RequestError;

/// The longest request accepted, in bytes (the original server's `recv(1024)`).
pub const MAX_REQUEST: usize = 1024;

/// What [`FrameBuffer::next_frame`] found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One complete JSON object, from its `{` to the matching `}`.
    Object(&'a [u8]),
    /// Bytes that cannot be a request; they have been discarded.
    Invalid(RequestError),
}

/// Scanner state inside a JSON object. `depth` counts open `{` and `[`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scan {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

/// What one byte did to the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    /// The byte closed the outermost object.
    Closed,
    /// A raw newline inside a string.
    NewlineInString,
}

impl Scan {
    /// Starts inside an object whose `{` has just been read.
    fn opened() -> Self {
        Scan {
            depth: 1,
            in_string: false,
            escaped: false,
        }
    }

    fn step(&mut self, byte: u8) -> Step {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            } else if byte == b'\n' {
                return Step::NewlineInString;
            }
            return Step::Continue;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    return Step::Closed;
                }
            }
            _ => {}
        }
        Step::Continue
    }
}

/// Where the splitter stands between two bytes of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between requests: whitespace is skipped, `{` opens a request.
    Between,
    /// Inside a request that starts at `FrameBuffer::start`.
    Object(Scan),
    /// Inside an over-long request being thrown away.
    Skipping(Scan),
}

/// A connection's receive buffer and request splitter (see the module docs for the contract).
#[derive(Clone)]
pub struct FrameBuffer {
    buf: [u8; MAX_REQUEST],
    /// First byte not yet handed out or discarded.
    start: usize,
    /// One past the last byte received.
    end: usize,
    /// Next byte to scan, `start <= pos <= end`; bytes in `start..pos` belong to the
    /// request being scanned.
    pos: usize,
    mode: Mode,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FrameBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameBuffer")
            .field("buffered", &self.buffered())
            .field("mode", &self.mode)
            .finish()
    }
}

impl FrameBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        FrameBuffer {
            buf: [0; MAX_REQUEST],
            start: 0,
            end: 0,
            pos: 0,
            mode: Mode::Between,
        }
    }

    /// The free space to read into; pass the count read to [`FrameBuffer::filled`].
    ///
    /// Moves the unconsumed bytes to the front first, so the space is as large as it can be.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.pos -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written at the start of the last [`FrameBuffer::spare`].
    /// A count larger than that space is clamped to it.
    pub fn filled(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(MAX_REQUEST);
    }

    /// Bytes received and not yet handed out or discarded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a request has begun and not ended yet (the client owes us bytes).
    pub fn is_mid_request(&self) -> bool {
        !matches!(self.mode, Mode::Between)
    }

    /// The next request in the stream, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            match self.mode {
                Mode::Skipping(mut scan) => {
                    while self.pos < self.end {
                        let byte = self.buf[self.pos];
                        self.pos += 1;
                        if byte == b'\n' || scan.step(byte) == Step::Closed {
                            self.mode = Mode::Between;
                            break;
                        }
                    }
                    // Everything scanned so far belongs to the discarded request.
                    self.start = self.pos;
                    if let Mode::Skipping(_) = self.mode {
                        self.mode = Mode::Skipping(scan);
                        self.reset_if_empty();
                        return None;
                    }
                }
                Mode::Between => {
                    while self.start < self.end && is_json_whitespace(self.buf[self.start]) {
                        self.start += 1;
                    }
                    self.pos = self.start;
                    if self.start == self.end {
                        self.reset_if_empty();
                        return None;
                    }
                    if self.buf[self.start] != b'{' {
                        let rest = &self.buf[self.start..self.end];
                        let garbage = rest.iter().position(|&b| b == b'{').unwrap_or(rest.len());
                        self.start += garbage;
                        self.pos = self.start;
                        return Some(Frame::Invalid(RequestError::NotAnObject));
                    }
                    self.pos = self.start + 1;
                    self.mode = Mode::Object(Scan::opened());
                }
                Mode::Object(mut scan) => {
                    while self.pos < self.end {
                        let byte = self.buf[self.pos];
                        self.pos += 1;
                        match scan.step(byte) {
                            Step::Continue => {}
                            Step::Closed => {
                                let object = self.start..self.pos;
                                self.start = self.pos;
                                self.mode = Mode::Between;
                                return Some(Frame::Object(&self.buf[object]));
                            }
                            Step::NewlineInString => {
                                self.start = self.pos;
                                self.mode = Mode::Between;
                                return Some(Frame::Invalid(RequestError::UnterminatedString));
                            }
                        }
                    }
                    if self.end - self.start >= MAX_REQUEST {
                        // Full and still open: throw it away and skip the rest of it.
                        self.start = self.end;
                        self.pos = self.end;
                        self.mode = Mode::Skipping(scan);
                        self.reset_if_empty();
                        return Some(Frame::Invalid(RequestError::TooLong));
                    }
                    self.mode = Mode::Object(scan);
                    return None;
                }
            }
        }
    }

    /// Rewinds to the front of the buffer when nothing is left in it (saves a copy later).
    fn reset_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.pos = 0;
        }
    }
}

/// JSON's four whitespace bytes (RFC 8259 §2).
fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one read at a time and collects every frame, as owned bytes or errors.
    fn split(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, RequestError>> {
        let mut buffer = FrameBuffer::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            let mut chunk: &[u8] = chunk;
            while !chunk.is_empty() {
                let spare = buffer.spare();
                assert!(
                    !spare.is_empty(),
                    "spare must never be empty after next_frame"
                );
                let n = spare.len().min(chunk.len());
                spare[..n].copy_from_slice(&chunk[..n]);
                buffer.filled(n);
                chunk = &chunk[n..];
                while let Some(frame) = buffer.next_frame() {
                    frames.push(match frame {
                        Frame::Object(bytes) => Ok(bytes.to_vec()),
                        Frame::Invalid(error) => Err(error),
                    });
                }
            }
        }
        frames
    }

    fn ok(s: &str) -> Result<Vec<u8>, RequestError> {
        Ok(s.as_bytes().to_vec())
    }

    const ORIGINAL_REG: &str = r#"{"command": "REG", "name": "alice"}"#;
    const ORIGINAL_GET: &str = r#"{"command": "GET", "name": "bob"}"#;

    #[test]
    fn one_bare_object_per_read() {
        let frames = split(&[ORIGINAL_REG.as_bytes(), ORIGINAL_GET.as_bytes()]);
        assert_eq!(frames, [ok(ORIGINAL_REG), ok(ORIGINAL_GET)]);
    }

    #[test]
    fn bare_objects_back_to_back_in_one_read() {
        let both = format!("{ORIGINAL_REG}{ORIGINAL_GET}");
        assert_eq!(
            split(&[both.as_bytes()]),
            [ok(ORIGINAL_REG), ok(ORIGINAL_GET)]
        );
    }

    #[test]
    fn newline_separated_objects_with_crlf_and_blank_lines() {
        let frames = split(&[b"{\"command\":\"PING\"}\r\n\n  {\"command\":\"LIST\"}\n"]);
        assert_eq!(
            frames,
            [ok(r#"{"command":"PING"}"#), ok(r#"{"command":"LIST"}"#)]
        );
    }

    #[test]
    fn object_split_across_reads_at_every_byte() {
        let stream = format!("{ORIGINAL_REG}\n{ORIGINAL_GET}");
        let bytes = stream.as_bytes();
        for cut in 0..=bytes.len() {
            let frames = split(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(frames, [ok(ORIGINAL_REG), ok(ORIGINAL_GET)], "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_per_read() {
        let stream = format!("{ORIGINAL_REG}{ORIGINAL_GET}");
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(split(&chunks), [ok(ORIGINAL_REG), ok(ORIGINAL_GET)]);
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_count() {
        let tricky = r#"{"command":"REG","name":"a}\"{[b"}"#;
        let frames = split(&[tricky.as_bytes(), b"{\"command\":\"PING\"}"]);
        assert_eq!(frames, [ok(tricky), ok(r#"{"command":"PING"}"#)]);
    }

    #[test]
    fn escaped_backslash_before_closing_quote() {
        let object = r#"{"name":"a\\"}"#;
        assert_eq!(split(&[object.as_bytes()]), [ok(object)]);
    }

    #[test]
    fn nested_objects_and_arrays_end_at_the_matching_brace() {
        let object = r#"{"a":{"b":[1,{"c":[]}]},"command":"PING"}"#;
        assert_eq!(split(&[object.as_bytes(), b"{}"]), [ok(object), ok("{}")]);
    }

    #[test]
    fn garbage_before_an_object_is_one_error_then_the_object() {
        let frames = split(&[b"hello\nworld {\"command\":\"PING\"}"]);
        assert_eq!(
            frames,
            [Err(RequestError::NotAnObject), ok(r#"{"command":"PING"}"#)]
        );
    }

    #[test]
    fn binary_garbage_without_braces_is_one_error_per_read() {
        let frames = split(&[&[0x00, 0xff, 0x80, 0x17], &[0xc3, 0x28]]);
        assert_eq!(
            frames,
            [
                Err(RequestError::NotAnObject),
                Err(RequestError::NotAnObject)
            ]
        );
    }

    #[test]
    fn a_bare_array_or_string_is_not_an_object() {
        let frames = split(&[b"[1,2]\n\"x\"\n{}"]);
        assert_eq!(frames, [Err(RequestError::NotAnObject), ok("{}")]);
    }

    #[test]
    fn raw_newline_in_a_string_ends_the_frame() {
        let frames = split(&[b"{\"command\":\"GET\",\"name\":\"bob}\n{\"command\":\"PING\"}\n"]);
        assert_eq!(
            frames,
            [
                Err(RequestError::UnterminatedString),
                ok(r#"{"command":"PING"}"#)
            ]
        );
    }

    #[test]
    fn exactly_max_request_bytes_is_accepted() {
        let mut object = String::from(r#"{"command":"PING","pad":""#);
        while object.len() < MAX_REQUEST - 2 {
            object.push('x');
        }
        object.push_str("\"}");
        assert_eq!(object.len(), MAX_REQUEST);
        assert_eq!(split(&[object.as_bytes(), b"{}"]), [ok(&object), ok("{}")]);
    }

    #[test]
    fn one_byte_over_is_too_long_and_the_rest_is_skipped() {
        let mut object = String::from(r#"{"command":"PING","pad":""#);
        while object.len() < MAX_REQUEST - 1 {
            object.push('x');
        }
        object.push_str("\"}");
        assert_eq!(object.len(), MAX_REQUEST + 1);
        let frames = split(&[object.as_bytes(), b"{\"command\":\"PING\"}"]);
        assert_eq!(
            frames,
            [Err(RequestError::TooLong), ok(r#"{"command":"PING"}"#)]
        );
    }

    #[test]
    fn huge_request_is_one_error_and_skipping_survives_many_reads() {
        let mut stream = String::from(r#"{"command":"REG","name":""#);
        stream.push_str(&"y".repeat(10_000));
        stream.push_str("\"}{\"command\":\"PING\"}");
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(700).collect();
        assert_eq!(
            split(&chunks),
            [Err(RequestError::TooLong), ok(r#"{"command":"PING"}"#)]
        );
    }

    #[test]
    fn skipping_stops_at_a_raw_newline() {
        // An unbalanced over-long line: the next line must still be served.
        let mut stream = "{{{{".repeat(300);
        stream.push('\n');
        stream.push_str("{\"command\":\"PING\"}\n");
        assert_eq!(
            split(&[stream.as_bytes()]),
            [Err(RequestError::TooLong), ok(r#"{"command":"PING"}"#)]
        );
    }

    #[test]
    fn mid_request_is_reported_until_the_object_closes() {
        let mut buffer = FrameBuffer::new();
        assert!(!buffer.is_mid_request());
        let part = b"  {\"command\":";
        buffer.spare()[..part.len()].copy_from_slice(part);
        buffer.filled(part.len());
        assert_eq!(buffer.next_frame(), None);
        assert!(buffer.is_mid_request());
        let rest = b"\"PING\"}";
        buffer.spare()[..rest.len()].copy_from_slice(rest);
        buffer.filled(rest.len());
        assert_eq!(
            buffer.next_frame(),
            Some(Frame::Object(br#"{"command":"PING"}"#))
        );
        assert!(!buffer.is_mid_request());
        assert_eq!(buffer.next_frame(), None);
        assert_eq!(buffer.buffered(), 0);
    }

    #[test]
    fn whitespace_only_is_consumed() {
        let mut buffer = FrameBuffer::new();
        buffer.spare()[..3].copy_from_slice(b" \n\t");
        buffer.filled(3);
        assert_eq!(buffer.next_frame(), None);
        assert_eq!(buffer.buffered(), 0);
        assert_eq!(buffer.spare().len(), MAX_REQUEST);
    }

    #[test]
    fn filled_beyond_the_spare_space_is_clamped() {
        let mut buffer = FrameBuffer::new();
        buffer.filled(MAX_REQUEST * 3);
        assert_eq!(buffer.buffered(), MAX_REQUEST);
        // Zero bytes are not an object: one error, and the space comes back.
        assert_eq!(
            buffer.next_frame(),
            Some(Frame::Invalid(RequestError::NotAnObject))
        );
        assert_eq!(buffer.next_frame(), None);
        assert_eq!(buffer.spare().len(), MAX_REQUEST);
    }
}
