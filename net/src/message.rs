//! Message sessions on the wire: the lines of [`parlo_fsm::messages`] and the line that
//! opens a session made only for messages.
//!
//! # Grammar
//!
//! Each line is one inner packet of a secure session ([`crate::secure`]), one line per
//! datagram, without a line terminator:
//!
//! ```text
//! HELLO <name>             the opener of a session made only for messages
//! MSG <id> <text>          a message
//! ACK <id>                 the message arrived
//! NAK <id> <reason>        the message was refused; reason: too-long | refused | rate-limited
//! ```
//!
//! - `<id>` is a [`MessageId`]: exactly 16 hexadecimal digits, read in either case,
//!   written in lower case.
//! - `<text>` is everything after the space that follows the id, to the end of the
//!   datagram: UTF-8, any character (newlines, trailing spaces and control characters
//!   included, since the datagram delimits it), at most [`MAX_TEXT`] bytes; it may be
//!   empty. A longer text is not an error: the line is read as [`Line::Oversize`], only
//!   its id kept (the text is not read, its UTF-8 not checked), so that the messenger
//!   answers `NAK too-long`. Invalid UTF-8 in a text that fits is an error.
//! - `<name>` follows the one naming rule ([`Name`]).
//! - `<reason>` is one of the three a receiver gives; the other [`Reason`]s are the
//!   sender's own and never travel.
//!
//! Keywords are upper case, fields separated by single spaces. Apart from a `MSG`'s text,
//! nothing is tolerated: no terminator, no trailing space, no unknown field. These lines
//! are Parlo's alone (no phone of the original project sends them), and a phone writes them
//! only as [`emit_line`] and [`emit_hello`] do.
//!
//! # Sessions made only for messages
//!
//! A phone with a message for a peer it has no call with opens a secure session whose
//! Init carries `HELLO <its own name>` where a call's carries `START`; the peer answers
//! with the Response, `HELLO <its own name>`. Then `MSG`, `ACK` and `NAK` go as transport,
//! as they do inside a call's session. Message lines travel only inside a secure session:
//! in the clear they are not read.
//!
//! # Sorting an inner packet
//!
//! An opened inner packet is RTP (first byte `0x80`–`0xBF`), a call signalling line
//! ([`crate::peer`]) or a line of this module. [`is_session_line`] sorts exactly: a packet
//! is a message-session line when its first word (up to the first space, or the whole
//! packet) is `MSG`, `NAK` or `HELLO`, or when it is `ACK` followed by a space and a word
//! without `=`. The call's `ACK call=0000002a` and the messenger's `ACK 0123456789abcdef`
//! share a keyword; every field of a signalling line is written `key=value`, so the first
//! word after `ACK` tells them apart, and a malformed messenger `ACK` (a short id, say)
//! still reaches [`parse`], whose error names what is wrong with it.
//!
//! Parsing and emitting never allocate and never panic, whatever the input.

use core::fmt;

use parlo_fsm::Name;
pub use parlo_fsm::NameError;
use parlo_fsm::messages::{Line, MAX_TEXT, MessageId, Reason, Text};

pub use crate::peer::Excerpt;

/// Longest line [`emit_line`] or [`emit_hello`] writes: a buffer of this size always
/// suffices. `MSG `, 16 digits, a space and [`MAX_TEXT`] bytes of text.
pub const MAX_LINE: usize = PREFIX_LEN + MAX_TEXT;

/// `MSG ` + 16 digits + a space: the bytes of a `MSG` line before its text.
const PREFIX_LEN: usize = 4 + ID_LEN + 1;

/// Digits of a written [`MessageId`].
const ID_LEN: usize = 16;

/// The reasons a `NAK` may give.
const WIRE_REASONS: [Reason; 3] = [Reason::TooLong, Reason::Refused, Reason::RateLimited];

/// A line of a message session.
// Fixed capacity, no allocation: a message's text lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionLine {
    /// `HELLO <name>`: opens (Init) or accepts (Response) a session made only for
    /// messages; the name is the sender's own.
    Hello(Name),
    /// `MSG`, `ACK` or `NAK`: a line for the messenger.
    Message(Line),
}

/// What went wrong while reading or writing a message-session line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The packet is empty.
    Empty,
    /// The first word is not `MSG`, `ACK`, `NAK` or `HELLO`.
    UnknownKeyword(Excerpt),
    /// `MSG`, `ACK` or `NAK` without an id.
    MissingId {
        /// The line's keyword.
        keyword: &'static str,
    },
    /// The id is not exactly 16 hexadecimal digits.
    InvalidId {
        /// The line's keyword.
        keyword: &'static str,
        /// The word where the id was expected.
        found: Excerpt,
    },
    /// `MSG <id>` without the space that starts the text.
    MissingText {
        /// The message's id.
        id: MessageId,
    },
    /// The text of a `MSG` is not valid UTF-8.
    NotUtf8 {
        /// Offset in the packet of the first invalid byte.
        offset: usize,
    },
    /// `NAK <id>` without a reason.
    MissingReason {
        /// The message's id.
        id: MessageId,
    },
    /// The reason of a `NAK` is not `too-long`, `refused` or `rate-limited`.
    UnknownReason(Excerpt),
    /// `HELLO` without a name.
    MissingName,
    /// The name of a `HELLO` breaks the naming rule.
    Name(NameError),
    /// More bytes after a complete `ACK`, `NAK` or `HELLO` line.
    Trailing {
        /// The line's keyword.
        keyword: &'static str,
        /// Offset in the packet of the space before the extra bytes.
        offset: usize,
        /// The extra bytes, after the space at `offset`.
        found: Excerpt,
    },
    /// [`emit_line`] was given a [`Line::Oversize`]: only its id is known, not its text.
    Oversize {
        /// The message's id.
        id: MessageId,
    },
    /// [`emit_line`] was given a `NAK` whose reason is the sender's own
    /// (`unknown-user`, `unreachable`, `queue-full`), which never travels.
    LocalReason(Reason),
    /// The output buffer is too small for the line.
    BufferTooSmall {
        /// Bytes the line needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => write!(
                f,
                "empty message-session packet: expected a line starting with MSG, ACK, NAK or HELLO"
            ),
            Error::UnknownKeyword(word) => write!(
                f,
                "unknown message-session keyword \"{word}\": expected MSG, ACK, NAK or HELLO"
            ),
            Error::MissingId { keyword } => write!(
                f,
                "{keyword} without a message id: expected \"{keyword} <16 hexadecimal digits>\""
            ),
            Error::InvalidId { keyword, found } => write!(
                f,
                "invalid message id \"{found}\" in {keyword}: expected exactly 16 hexadecimal digits"
            ),
            Error::MissingText { id } => write!(
                f,
                "MSG {id} ends after its id: expected a space and the text (\"MSG <id> <text>\")"
            ),
            Error::NotUtf8 { offset } => write!(
                f,
                "message text is not valid UTF-8 (at byte {offset} of the line)"
            ),
            Error::MissingReason { id } => write!(
                f,
                "NAK {id} without a reason: expected too-long, refused or rate-limited"
            ),
            Error::UnknownReason(word) => write!(
                f,
                "unknown NAK reason \"{word}\": expected too-long, refused or rate-limited"
            ),
            Error::MissingName => write!(f, "HELLO without a name: expected \"HELLO <name>\""),
            Error::Name(error) => write!(f, "invalid name in HELLO: {error}"),
            Error::Trailing {
                keyword,
                offset,
                found,
            } => write!(
                f,
                "{keyword} line goes on at byte {offset} with \" {found}\": expected the end of the line"
            ),
            Error::Oversize { id } => write!(
                f,
                "message {id} is longer than {MAX_TEXT} bytes and its text was not kept: it cannot be sent"
            ),
            Error::LocalReason(reason) => write!(
                f,
                "NAK reason {} never goes on the wire: expected too-long, refused or rate-limited",
                reason.name()
            ),
            Error::BufferTooSmall { needed, available } => write!(
                f,
                "message-session line needs {needed} bytes but the buffer holds {available}"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// Whether the inner packet `inner` of a secure session is a message-session line (to be
/// read with [`parse`]) rather than a call signalling line or RTP: its first word is
/// `MSG`, `NAK` or `HELLO`, or it is `ACK` followed by a space and a word without `=`
/// (see the module docs). It says no to every valid call signalling line, yes to every
/// line [`emit_line`] and [`emit_hello`] write, and looks at no more than the first two
/// words.
pub fn is_session_line(inner: &[u8]) -> bool {
    let (keyword, rest) = split_word(inner);
    match keyword {
        b"MSG" | b"NAK" | b"HELLO" => true,
        b"ACK" => rest.is_some_and(|rest| {
            let (word, _) = split_word(rest);
            !word.is_empty() && !word.contains(&b'=')
        }),
        _ => false,
    }
}

/// Reads one message-session line from an inner packet.
///
/// A `MSG` whose text is longer than [`MAX_TEXT`] is [`Line::Oversize`], not an error.
pub fn parse(inner: &[u8]) -> Result<SessionLine, Error> {
    if inner.is_empty() {
        return Err(Error::Empty);
    }
    let (keyword, rest) = split_word(inner);
    // Offset of `rest` in the packet: past the keyword and its space.
    let at = keyword.len() + 1;
    let line = match keyword {
        b"MSG" => {
            let (id, text) = id_then("MSG", rest)?;
            let Some(text) = text else {
                return Err(Error::MissingText { id });
            };
            if text.len() > MAX_TEXT {
                Line::Oversize { id }
            } else {
                let text = core::str::from_utf8(text).map_err(|error| Error::NotUtf8 {
                    offset: PREFIX_LEN + error.valid_up_to(),
                })?;
                match Text::new(text) {
                    Ok(text) => Line::Msg { id, text },
                    // Cannot happen (the length is checked above); read as the over-long
                    // text it would be.
                    Err(_) => Line::Oversize { id },
                }
            }
        }
        b"ACK" => {
            let (id, after) = id_then("ACK", rest)?;
            end("ACK", at + ID_LEN, after)?;
            Line::Ack { id }
        }
        b"NAK" => {
            let (id, after) = id_then("NAK", rest)?;
            let Some(after) = after else {
                return Err(Error::MissingReason { id });
            };
            let (word, after) = split_word(after);
            if word.is_empty() {
                return Err(Error::MissingReason { id });
            }
            let reason = WIRE_REASONS
                .into_iter()
                .find(|reason| reason.name().as_bytes() == word)
                .ok_or_else(|| Error::UnknownReason(excerpt(word)))?;
            end("NAK", at + ID_LEN + 1 + word.len(), after)?;
            Line::Nak { id, reason }
        }
        b"HELLO" => {
            let Some(rest) = rest else {
                return Err(Error::MissingName);
            };
            let (word, after) = split_word(rest);
            if word.is_empty() {
                return Err(Error::MissingName);
            }
            let name = Name::from_bytes(word).map_err(Error::Name)?;
            end("HELLO", at + word.len(), after)?;
            return Ok(SessionLine::Hello(name));
        }
        other => return Err(Error::UnknownKeyword(excerpt(other))),
    };
    Ok(SessionLine::Message(line))
}

/// Writes `line` into `out`, without a line terminator, and returns its length.
///
/// A buffer of [`MAX_LINE`] bytes always suffices. A [`Line::Oversize`] cannot be written
/// (its text was not kept), nor a `NAK` with a reason that never travels.
pub fn emit_line(line: &Line, out: &mut [u8]) -> Result<usize, Error> {
    let mut writer = Writer::new(out);
    match line {
        Line::Msg { id, text } => {
            writer.need(PREFIX_LEN + text.as_str().len())?;
            writer.put(b"MSG ");
            writer.put_id(*id);
            writer.put(b" ");
            writer.put(text.as_str().as_bytes());
        }
        Line::Oversize { id } => return Err(Error::Oversize { id: *id }),
        Line::Ack { id } => {
            writer.need(4 + ID_LEN)?;
            writer.put(b"ACK ");
            writer.put_id(*id);
        }
        Line::Nak { id, reason } => {
            if !WIRE_REASONS.contains(reason) {
                return Err(Error::LocalReason(*reason));
            }
            let reason = reason.name().as_bytes();
            writer.need(4 + ID_LEN + 1 + reason.len())?;
            writer.put(b"NAK ");
            writer.put_id(*id);
            writer.put(b" ");
            writer.put(reason);
        }
    }
    Ok(writer.len)
}

/// Writes `HELLO <name>` into `out`, without a line terminator, and returns its length.
///
/// A buffer of [`MAX_LINE`] bytes always suffices (the line is at most 38 bytes).
pub fn emit_hello(name: &Name, out: &mut [u8]) -> Result<usize, Error> {
    let name = name.as_str().as_bytes();
    let mut writer = Writer::new(out);
    writer.need(6 + name.len())?;
    writer.put(b"HELLO ");
    writer.put(name);
    Ok(writer.len)
}

/// Splits off the first word: the bytes before the first space, and those after it
/// (`None` when there is no space).
fn split_word(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&byte| byte == b' ') {
        Some(space) => (&bytes[..space], bytes.get(space + 1..)),
        None => (bytes, None),
    }
}

/// Reads the id that follows `keyword` and returns it with what follows the id's space
/// (`None` when the line ends after the id).
fn id_then<'a>(
    keyword: &'static str,
    rest: Option<&'a [u8]>,
) -> Result<(MessageId, Option<&'a [u8]>), Error> {
    let (word, after) = split_word(rest.ok_or(Error::MissingId { keyword })?);
    if word.is_empty() {
        return Err(Error::MissingId { keyword });
    }
    let id = parse_id(word).ok_or_else(|| Error::InvalidId {
        keyword,
        found: excerpt(word),
    })?;
    Ok((id, after))
}

/// Exactly 16 hexadecimal digits, in either case.
fn parse_id(word: &[u8]) -> Option<MessageId> {
    if word.len() != ID_LEN {
        return None;
    }
    word.iter()
        .try_fold(0u64, |id, &byte| {
            let digit = char::from(byte).to_digit(16)?;
            Some((id << 4) | u64::from(digit))
        })
        .map(MessageId)
}

/// Checks that nothing follows the last word of a line: `after` is what follows its
/// space, which sits at `offset`.
fn end(keyword: &'static str, offset: usize, after: Option<&[u8]>) -> Result<(), Error> {
    match after {
        None => Ok(()),
        Some(after) => Err(Error::Trailing {
            keyword,
            offset,
            found: excerpt(after),
        }),
    }
}

/// An [`Excerpt`] of bytes that may not be UTF-8: invalid sequences show as U+FFFD.
fn excerpt(bytes: &[u8]) -> Excerpt {
    // 24 characters of up to 4 bytes: more than an excerpt keeps, so that a longer word
    // is still marked as cut.
    let mut text = heapless::String::<96>::new();
    'chunks: for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if text.push(ch).is_err() {
                break 'chunks;
            }
        }
        if !chunk.invalid().is_empty() && text.push(char::REPLACEMENT_CHARACTER).is_err() {
            break;
        }
    }
    Excerpt::of(&text)
}

/// Writes into a borrowed buffer whose room was checked first.
struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Writer<'a> {
        Writer { out, len: 0 }
    }

    fn need(&self, needed: usize) -> Result<(), Error> {
        if needed > self.out.len() {
            return Err(Error::BufferTooSmall {
                needed,
                available: self.out.len(),
            });
        }
        Ok(())
    }

    /// Appends `bytes`; the room was checked by [`Writer::need`] (and, were it not, the
    /// line would be cut short rather than overrun).
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len()).min(self.out.len());
        let room = end - self.len;
        self.out[self.len..end].copy_from_slice(&bytes[..room]);
        self.len = end;
    }

    fn put_id(&mut self, id: MessageId) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; ID_LEN];
        for (i, digit) in digits.iter_mut().enumerate() {
            let nibble = (id.0 >> (4 * (ID_LEN - 1 - i))) & 0xf;
            // Truncation intended: a nibble is below 16.
            *digit = DIGITS[nibble as usize];
        }
        self.put(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    use crate::peer::{Message, Wire};

    const ID: MessageId = MessageId(0x0123_4567_89ab_cdef);

    fn name(text: &str) -> Name {
        Name::new(text).expect("test names are valid")
    }

    fn text(text: &str) -> Text {
        Text::new(text).expect("test texts fit")
    }

    fn emitted(line: &Line) -> Vec<u8> {
        let mut buf = [0u8; MAX_LINE];
        let len = emit_line(line, &mut buf).expect("MAX_LINE suffices");
        buf[..len].to_vec()
    }

    fn message(line: &[u8]) -> Result<Line, Error> {
        match parse(line)? {
            SessionLine::Message(line) => Ok(line),
            SessionLine::Hello(name) => panic!("expected a message line, got HELLO {name}"),
        }
    }

    /// The error `parse` gives for `line`, and its message.
    fn refused(line: &[u8]) -> (Error, std::string::String) {
        let error = parse(line).expect_err("the line is malformed");
        let shown = error.to_string();
        (error, shown)
    }

    // --- fixed bytes, both ways ----------------------------------------------------------

    #[test]
    fn lines_have_fixed_bytes() {
        let cases: [(&[u8], Line); 5] = [
            (
                b"MSG 0123456789abcdef hello there",
                Line::Msg {
                    id: ID,
                    text: text("hello there"),
                },
            ),
            (b"ACK 0123456789abcdef", Line::Ack { id: ID }),
            (
                b"NAK 0123456789abcdef too-long",
                Line::Nak {
                    id: ID,
                    reason: Reason::TooLong,
                },
            ),
            (
                b"NAK 0000000000000000 refused",
                Line::Nak {
                    id: MessageId(0),
                    reason: Reason::Refused,
                },
            ),
            (
                b"NAK ffffffffffffffff rate-limited",
                Line::Nak {
                    id: MessageId(u64::MAX),
                    reason: Reason::RateLimited,
                },
            ),
        ];
        for (bytes, line) in cases {
            assert_eq!(message(bytes), Ok(line.clone()), "{line}");
            assert_eq!(emitted(&line), bytes, "{line}");
            assert!(is_session_line(bytes), "{line}");
        }
    }

    #[test]
    fn hello_has_fixed_bytes() {
        let mut buf = [0u8; MAX_LINE];
        let len = emit_hello(&name("alice"), &mut buf).expect("fits");
        assert_eq!(&buf[..len], b"HELLO alice");
        assert_eq!(parse(b"HELLO alice"), Ok(SessionLine::Hello(name("alice"))));
        assert_eq!(
            parse("HELLO zoë".as_bytes()),
            Ok(SessionLine::Hello(name("zoë")))
        );
        assert!(is_session_line(b"HELLO alice"));
    }

    #[test]
    fn ids_are_read_in_either_case_and_written_in_lower_case() {
        let line = message(b"ACK 0123456789ABCDEF").expect("valid");
        assert_eq!(line, Line::Ack { id: ID });
        assert_eq!(emitted(&line), b"ACK 0123456789abcdef");
        assert_eq!(
            emitted(&Line::Ack {
                id: MessageId::new(1, 2)
            }),
            b"ACK 0000000100000002"
        );
    }

    #[test]
    fn the_text_is_the_rest_of_the_datagram_whatever_it_holds() {
        for raw in [
            "",
            " ",
            "two  spaces and a trailing one ",
            "line one\nline two\r\n",
            "tab\there, NUL \0, ESC \u{1b}[2J",
            "MSG 0123456789abcdef nested",
            "zoë says \u{202e}olleh 😀",
        ] {
            let mut bytes = b"MSG 0123456789abcdef ".to_vec();
            bytes.extend_from_slice(raw.as_bytes());
            assert_eq!(
                message(&bytes),
                Ok(Line::Msg {
                    id: ID,
                    text: text(raw)
                }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_text_of_max_text_bytes_is_a_message_and_one_more_is_oversize() {
        let mut bytes = b"MSG 0123456789abcdef ".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', MAX_TEXT));
        assert_eq!(bytes.len(), MAX_LINE);
        let line = message(&bytes).expect("valid");
        assert!(matches!(&line, Line::Msg { text, .. } if text.as_str().len() == MAX_TEXT));
        assert_eq!(emitted(&line), bytes, "the longest line fits MAX_LINE");

        bytes.push(b'x');
        assert_eq!(message(&bytes), Ok(Line::Oversize { id: ID }));
        // The text of an over-long message is not read: invalid UTF-8 there is no error.
        let mut bad = b"MSG 0123456789abcdef ".to_vec();
        bad.extend(std::iter::repeat_n(0xff, MAX_TEXT + 1));
        assert_eq!(message(&bad), Ok(Line::Oversize { id: ID }));
    }

    // --- every error, with its message ---------------------------------------------------

    #[test]
    fn an_empty_packet_is_refused() {
        let (error, shown) = refused(b"");
        assert_eq!(error, Error::Empty);
        assert!(shown.contains("expected a line starting with MSG, ACK, NAK or HELLO"));
    }

    #[test]
    fn unknown_keywords_are_named() {
        let (error, shown) = refused(b"msg 0123456789abcdef hi");
        assert!(matches!(&error, Error::UnknownKeyword(word) if word.as_str() == "msg"));
        assert_eq!(
            shown,
            "unknown message-session keyword \"msg\": expected MSG, ACK, NAK or HELLO"
        );
        let (_, shown) = refused(b"\xffHELLO");
        assert!(shown.contains("\"\u{FFFD}HELLO\""), "{shown}");
    }

    #[test]
    fn a_missing_id_is_named_with_its_keyword() {
        for (line, keyword) in [
            (&b"MSG"[..], "MSG"),
            (b"ACK ", "ACK"),
            (b"NAK  refused", "NAK"),
        ] {
            let (error, shown) = refused(line);
            assert_eq!(error, Error::MissingId { keyword }, "{line:?}");
            assert_eq!(
                shown,
                format!(
                    "{keyword} without a message id: expected \"{keyword} <16 hexadecimal digits>\""
                )
            );
        }
    }

    #[test]
    fn ids_must_be_exactly_16_hexadecimal_digits() {
        for (line, found) in [
            (&b"ACK 0123456789abcde"[..], "0123456789abcde"),
            (b"ACK 0123456789abcdef0", "0123456789abcdef0"),
            (b"MSG 0123456789abcdeg hi", "0123456789abcdeg"),
            (b"NAK +123456789abcdef refused", "+123456789abcdef"),
            (b"MSG 0123456789abcde\xc3\xa9 hi", "0123456789abcdeé"),
        ] {
            let (error, shown) = refused(line);
            let Error::InvalidId { found: got, .. } = &error else {
                panic!("{line:?}: expected InvalidId, got {error:?}");
            };
            assert_eq!(got.as_str(), found, "{line:?}");
            assert!(
                shown.ends_with("expected exactly 16 hexadecimal digits"),
                "{shown}"
            );
        }
        let (_, shown) = refused(b"ACK 0123");
        assert_eq!(
            shown,
            "invalid message id \"0123\" in ACK: expected exactly 16 hexadecimal digits"
        );
        // The call's ACK form is not a message id.
        let (error, _) = refused(b"ACK call0000002a");
        assert!(matches!(error, Error::InvalidId { keyword: "ACK", .. }));
    }

    #[test]
    fn a_msg_needs_the_space_before_its_text() {
        let (error, shown) = refused(b"MSG 0123456789abcdef");
        assert_eq!(error, Error::MissingText { id: ID });
        assert_eq!(
            shown,
            "MSG 0123456789abcdef ends after its id: expected a space and the text (\"MSG <id> <text>\")"
        );
    }

    #[test]
    fn an_invalid_utf8_text_is_refused_with_its_offset() {
        let (error, shown) = refused(b"MSG 0123456789abcdef caf\xc3");
        assert_eq!(error, Error::NotUtf8 { offset: 24 });
        assert_eq!(
            shown,
            "message text is not valid UTF-8 (at byte 24 of the line)"
        );
    }

    #[test]
    fn a_nak_needs_a_reason_that_travels() {
        for line in [&b"NAK 0123456789abcdef"[..], b"NAK 0123456789abcdef "] {
            let (error, shown) = refused(line);
            assert_eq!(error, Error::MissingReason { id: ID });
            assert_eq!(
                shown,
                "NAK 0123456789abcdef without a reason: expected too-long, refused or rate-limited"
            );
        }
        for reason in [
            "unreachable",
            "unknown-user",
            "queue-full",
            "TOO-LONG",
            "nope",
        ] {
            let line = format!("NAK 0123456789abcdef {reason}");
            let (error, shown) = refused(line.as_bytes());
            assert!(
                matches!(&error, Error::UnknownReason(word) if word.as_str() == reason),
                "{error:?}"
            );
            assert_eq!(
                shown,
                format!(
                    "unknown NAK reason \"{reason}\": expected too-long, refused or rate-limited"
                )
            );
        }
    }

    #[test]
    fn a_hello_needs_a_valid_name() {
        for line in [&b"HELLO"[..], b"HELLO ", b"HELLO  alice"] {
            let (error, shown) = refused(line);
            assert_eq!(error, Error::MissingName, "{line:?}");
            assert_eq!(shown, "HELLO without a name: expected \"HELLO <name>\"");
        }
        let (error, shown) = refused(b"HELLO a=b");
        assert_eq!(error, Error::Name(NameError::Equals));
        assert!(shown.starts_with("invalid name in HELLO: "), "{shown}");
        let (error, _) = refused(b"HELLO \xff");
        assert_eq!(error, Error::Name(NameError::NotUtf8));
        let (error, _) = refused(b"HELLO al\nice");
        assert!(matches!(error, Error::Name(NameError::Whitespace { .. })));
        let long = [b'a'; 33];
        let mut line = b"HELLO ".to_vec();
        line.extend_from_slice(&long);
        let (error, _) = refused(&line);
        assert_eq!(error, Error::Name(NameError::TooLong { len: 33 }));
    }

    #[test]
    fn nothing_may_follow_a_complete_line() {
        for (line, keyword, offset, found) in [
            (&b"ACK 0123456789abcdef "[..], "ACK", 20, ""),
            (b"ACK 0123456789abcdef x=1", "ACK", 20, "x=1"),
            (b"NAK 0123456789abcdef refused \r\n", "NAK", 28, "??"),
            (b"HELLO alice bob", "HELLO", 11, "bob"),
        ] {
            let (error, _) = refused(line);
            let Error::Trailing {
                keyword: k,
                offset: o,
                found: f,
            } = &error
            else {
                panic!("{line:?}: expected Trailing, got {error:?}");
            };
            assert_eq!((*k, *o, f.as_str()), (keyword, offset, found), "{line:?}");
        }
        let (_, shown) = refused(b"ACK 0123456789abcdef again");
        assert_eq!(
            shown,
            "ACK line goes on at byte 20 with \" again\": expected the end of the line"
        );
        // A CR or LF is no terminator here: the lines are Parlo's and carry none.
        assert!(parse(b"ACK 0123456789abcdef\n").is_err());
    }

    #[test]
    fn long_offending_words_are_cut_in_errors() {
        let mut line = b"ACK ".to_vec();
        line.extend(std::iter::repeat_n(b'9', 200));
        let (error, shown) = refused(&line);
        let Error::InvalidId { found, .. } = &error else {
            panic!("expected InvalidId, got {error:?}");
        };
        assert!(found.is_truncated());
        assert_eq!(found.as_str().len(), 20);
        assert!(shown.contains("99999999999999999999...\""), "{shown}");
        // Characters a name may not hold do not reach the message raw.
        let (_, shown) = refused(b"\x1b[2J 0123456789abcdef");
        assert!(!shown.contains('\u{1b}'), "{shown}");
    }

    #[test]
    fn emit_refuses_what_cannot_travel() {
        let mut buf = [0u8; MAX_LINE];
        assert_eq!(
            emit_line(&Line::Oversize { id: ID }, &mut buf),
            Err(Error::Oversize { id: ID })
        );
        assert_eq!(
            Error::Oversize { id: ID }.to_string(),
            "message 0123456789abcdef is longer than 1000 bytes and its text was not kept: it cannot be sent"
        );
        for reason in [Reason::Unreachable, Reason::UnknownUser, Reason::QueueFull] {
            let nak = Line::Nak { id: ID, reason };
            assert_eq!(emit_line(&nak, &mut buf), Err(Error::LocalReason(reason)));
            assert_eq!(
                Error::LocalReason(reason).to_string(),
                format!(
                    "NAK reason {} never goes on the wire: expected too-long, refused or rate-limited",
                    reason.name()
                )
            );
        }
    }

    #[test]
    fn emit_reports_a_short_buffer_and_writes_nothing() {
        let line = Line::Msg {
            id: ID,
            text: text("hi"),
        };
        let mut buf = [0u8; 22];
        assert_eq!(
            emit_line(&line, &mut buf),
            Err(Error::BufferTooSmall {
                needed: 23,
                available: 22
            })
        );
        assert_eq!(buf, [0u8; 22]);
        assert_eq!(
            Error::BufferTooSmall {
                needed: 23,
                available: 22
            }
            .to_string(),
            "message-session line needs 23 bytes but the buffer holds 22"
        );
        assert_eq!(
            emit_line(&Line::Ack { id: ID }, &mut buf[..19]),
            Err(Error::BufferTooSmall {
                needed: 20,
                available: 19
            })
        );
        assert_eq!(
            emit_hello(&name("alice"), &mut buf[..10]),
            Err(Error::BufferTooSmall {
                needed: 11,
                available: 10
            })
        );
        let mut exact = [0u8; 23];
        assert_eq!(emit_line(&line, &mut exact), Ok(23));
    }

    // --- sorting ------------------------------------------------------------------------

    #[test]
    fn sorting_tells_the_two_acks_apart() {
        assert!(is_session_line(b"ACK 0123456789abcdef"));
        assert!(!is_session_line(b"ACK call=0000002a"));
        assert!(Message::parse(b"ACK call=0000002a").is_ok());
        // A malformed messenger ACK still goes to this codec, which says what is wrong.
        assert!(is_session_line(b"ACK 0123"));
        // Signalling lines, and lines of neither kind, are not session lines.
        for line in [
            &b""[..],
            b"ACK",
            b"ACK ",
            b"ACK  0123456789abcdef",
            b"ACK x=1 call=0000002a",
            b"START alice call=0000002a v=2",
            b"CLOSE",
            b"MSGS 0123456789abcdef",
            b"HELLOS alice",
            b"\x80\x60\x00\x01",
        ] {
            assert!(!is_session_line(line), "{line:?}");
        }
        for line in [&b"MSG"[..], b"NAK", b"HELLO", b"MSG x", b"HELLO alice"] {
            assert!(is_session_line(line), "{line:?}");
        }
    }

    #[test]
    fn lines_of_a_session_are_not_signalling_lines() {
        // What this codec writes is refused by the call's parser, so neither reads the
        // other's lines.
        for line in [
            &b"MSG 0123456789abcdef hi"[..],
            b"ACK 0123456789abcdef",
            b"NAK 0123456789abcdef refused",
            b"HELLO alice",
        ] {
            assert!(Message::parse(line).is_err(), "{line:?}");
        }
    }

    // --- properties ---------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn ids() -> impl Strategy<Value = MessageId> {
            any::<u64>().prop_map(MessageId)
        }

        /// Any text up to MAX_TEXT bytes: any characters, newlines and controls included.
        fn texts() -> impl Strategy<Value = Text> {
            prop_oneof![
                ".{0,80}",
                "[\\s\\S]{0,400}",
                proptest::collection::vec(any::<char>(), 0..1000)
                    .prop_map(|chars| chars.into_iter().collect::<std::string::String>()),
            ]
            .prop_map(|mut text| {
                while text.len() > MAX_TEXT {
                    text.pop();
                }
                Text::new(&text).expect("cut to MAX_TEXT")
            })
        }

        fn wire_reasons() -> impl Strategy<Value = Reason> {
            proptest::sample::select(WIRE_REASONS.to_vec())
        }

        fn lines() -> impl Strategy<Value = Line> {
            prop_oneof![
                (ids(), texts()).prop_map(|(id, text)| Line::Msg { id, text }),
                ids().prop_map(|id| Line::Ack { id }),
                (ids(), wire_reasons()).prop_map(|(id, reason)| Line::Nak { id, reason }),
            ]
        }

        use crate::peer::strategies::messages;

        fn names() -> impl Strategy<Value = Name> {
            "\\PC{1,32}".prop_filter_map("not a name", |text| Name::new(&text).ok())
        }

        proptest! {
            #[test]
            fn emit_then_parse_gives_the_line_back(line in lines()) {
                let mut buf = [0u8; MAX_LINE];
                let len = emit_line(&line, &mut buf).expect("MAX_LINE suffices");
                prop_assert!(is_session_line(&buf[..len]));
                prop_assert_eq!(parse(&buf[..len]), Ok(SessionLine::Message(line)));
            }

            #[test]
            fn emit_then_parse_gives_the_hello_back(name in names()) {
                let mut buf = [0u8; MAX_LINE];
                let len = emit_hello(&name, &mut buf).expect("MAX_LINE suffices");
                prop_assert!(is_session_line(&buf[..len]));
                prop_assert_eq!(parse(&buf[..len]), Ok(SessionLine::Hello(name)));
            }

            #[test]
            fn ids_in_upper_case_parse_to_the_same_id(id in ids()) {
                let upper = format!("ACK {:016X}", id.0);
                prop_assert_eq!(parse(upper.as_bytes()), Ok(SessionLine::Message(Line::Ack { id })));
            }

            #[test]
            fn any_longer_text_is_oversize(id in ids(), extra in 1usize..2000, byte in any::<u8>()) {
                let mut bytes = format!("MSG {id} ").into_bytes();
                bytes.extend(std::iter::repeat_n(byte, MAX_TEXT + extra));
                prop_assert_eq!(parse(&bytes), Ok(SessionLine::Message(Line::Oversize { id })));
            }

            #[test]
            fn parse_never_panics_and_what_it_accepts_round_trips(
                bytes in prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64),
                    (
                        proptest::sample::select(vec!["MSG ", "ACK ", "NAK ", "HELLO ", "MSG 0123456789abcdef ", "NAK 0123456789abcdef "]),
                        proptest::collection::vec(any::<u8>(), 0..64),
                    )
                        .prop_map(|(head, tail)| {
                            let mut bytes = head.as_bytes().to_vec();
                            bytes.extend(tail);
                            bytes
                        }),
                ]
            ) {
                let parsed = parse(&bytes);
                if let Err(error) = &parsed {
                    let _ = error.to_string();
                }
                if parsed.is_ok() {
                    prop_assert!(is_session_line(&bytes));
                }
                let mut buf = [0u8; MAX_LINE];
                match parsed {
                    Ok(SessionLine::Message(Line::Oversize { .. })) | Err(_) => {}
                    Ok(SessionLine::Message(line)) => {
                        let len = emit_line(&line, &mut buf).expect("MAX_LINE suffices");
                        prop_assert_eq!(parse(&buf[..len]), Ok(SessionLine::Message(line)));
                    }
                    Ok(SessionLine::Hello(name)) => {
                        let len = emit_hello(&name, &mut buf).expect("MAX_LINE suffices");
                        prop_assert_eq!(&buf[..len], &bytes[..]);
                    }
                }
            }

            #[test]
            fn a_call_signalling_line_is_never_a_session_line(
                message in messages(),
                unknown in proptest::option::of("[a-z]{1,6}=[a-z0-9]{0,6}"),
                end in proptest::sample::select(vec!["", " ", "\n", "\r\n", " \r\n"]),
            ) {
                let mut buf = [0u8; crate::peer::MAX_MESSAGE_LEN];
                let len = message.emit(&mut buf).expect("MAX_MESSAGE_LEN suffices");
                let mut line = buf[..len].to_vec();
                // Later versions may add fields: a valid line may carry ones this one skips.
                if let Some(field) = unknown {
                    line.push(b' ');
                    line.extend_from_slice(field.as_bytes());
                }
                line.extend_from_slice(end.as_bytes());
                // Only valid signalling lines are the subject.
                prop_assume!(Message::parse(&line).is_ok());
                prop_assert!(!is_session_line(&line), "{:?}", std::string::String::from_utf8_lossy(&line));
            }

            #[test]
            fn no_bytes_are_both(bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                ("ACK [ -~]{0,30}").prop_map(std::string::String::into_bytes),
            ]) {
                if Message::parse(&bytes).is_ok() {
                    prop_assert!(!is_session_line(&bytes));
                }
            }
        }
    }
}
