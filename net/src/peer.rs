//! Peer signalling: the one-line datagrams two phones exchange to set up and end a call.
//!
//! # Grammar
//!
//! A signalling datagram is one line of UTF-8: a keyword, then fields separated by single
//! spaces.
//!
//! ```text
//! START <caller> [call=<id>] [v=<n>] [codecs=<codec>,<codec>...] [conf=<conf-id>]
//! RINGING call=<id>
//! ACCEPT [call=<id>] [codec=<codec>]
//! REJECT [call=<id>]
//! BUSY [call=<id>]
//! CLOSE [call=<id>]
//! CLOSED call=<id>
//! ACK call=<id>
//! ```
//!
//! - `<caller>` is a [`Name`] (the one naming rule: 1 to [`MAX_NAME_LEN`] bytes of
//!   printable UTF-8, no whitespace, no control or invisible character, no `=`). It is
//!   positional: always the token after `START`.
//! - `<id>` is a [`CallId`]: a 32-bit number written as exactly 8 hexadecimal digits
//!   (emitted in lower case, parsed in either case).
//! - `v=<n>` is the protocol version, a decimal number from 2 to 255. Parlo sends `v=2`.
//!   The original project sends no version (there is no `v=1` on the wire).
//! - `<codec>` is `L16` or `PCMU` ([`Codec`]), matched without regard to case.
//! - `conf=<conf-id>` names the conference the call is a leg of ([`ConfId`]): exactly 16
//!   hexadecimal digits (emitted in lower case, parsed in either case). Parlo sends it only
//!   on the STARTs of conference legs, never to a phone of the original project; a
//!   START without it is an ordinary call.
//!
//! # Dialects
//!
//! A message without a call id is in the [`Dialect::Original`] dialect: it is what a phone
//! of the original project sends (`START alice`, `ACCEPT`, `REJECT`, `CLOSE`), and a phone
//! answering such a peer must use the original media format (raw PCM datagrams, see
//! [`crate::media`]). Every message with a call id is [`Dialect::Parlo`]. [`Wire::emit`] writes an original-dialect message byte for byte as
//! the original does, without a line terminator.
//!
//! # What the parser tolerates
//!
//! - At the end of the line, any run of spaces, `\r` and `\n` (the original's peers may
//!   send a newline, `\r\n` or a trailing space).
//! - Fields it does not know, written `key=value`: they are ignored, so that a later
//!   version can add fields that older phones skip. Codec names it does not know inside
//!   `codecs=` are skipped for the same reason.
//!
//! Everything else is an error naming what was wrong: an unknown keyword (keywords are
//! upper case), a leading space or two spaces in a row, a control character, invalid
//! UTF-8, a token without `=` where a field is expected, a known field given twice or with
//! an invalid value, a missing required field, a line longer than [`MAX_LINE_LEN`].
//!
//! Parsing and emitting never allocate and never panic, whatever the input.

use core::fmt;

pub use parlo_fsm::conference::ConfId;
use parlo_fsm::is_name_char;
pub use parlo_fsm::{
    CallId, Codec, CodecSet, Dialect, MAX_NAME_LEN, Message, Name, NameError, VERSION,
};

/// Longest signalling datagram [`Message::parse`] accepts, in bytes, terminator included.
///
/// Parlo's own messages are at most [`MAX_MESSAGE_LEN`] bytes; the rest leaves room for
/// fields of later versions. It is also well below the original's 1024-byte audio
/// datagrams, so a line can never be mistaken for one of those by its length.
pub const MAX_LINE_LEN: usize = 512;

/// Longest message [`Message::emit`] writes: a buffer of this size always suffices.
///
/// `START` + a 32-byte name + `call=` + `v=255` + `codecs=L16,PCMU` + `conf=` with
/// 16 digits, with separators.
pub const MAX_MESSAGE_LEN: usize = 96;

/// What went wrong while parsing or emitting a signalling message, or validating a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The datagram is empty, or holds only spaces and line terminators.
    Empty,
    /// The datagram is longer than [`MAX_LINE_LEN`].
    TooLong {
        /// Length of the datagram, in bytes.
        len: usize,
    },
    /// The datagram is not valid UTF-8.
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The line contains a control character (tab, NUL, a newline before the end, ...).
    ControlCharacter {
        /// Offset of the control character.
        offset: usize,
    },
    /// The line starts with a space or has two spaces in a row.
    EmptyField {
        /// Offset of the extra space.
        offset: usize,
    },
    /// The first word is not one of the protocol's keywords.
    UnknownKeyword(Excerpt),
    /// `START` without the caller's name.
    MissingCaller,
    /// A token where a `key=value` field was expected.
    NotAField(Excerpt),
    /// A required field is absent.
    MissingField {
        /// The message's keyword.
        keyword: &'static str,
        /// The missing field's key.
        field: &'static str,
    },
    /// A field appears twice.
    DuplicateField {
        /// The repeated field's key.
        field: &'static str,
    },
    /// `call=` does not hold exactly 8 hexadecimal digits.
    InvalidCallId(Excerpt),
    /// `v=` does not hold a version from 2 to 255.
    InvalidVersion(Excerpt),
    /// `codec=` names a codec Parlo does not know.
    UnknownCodec(Excerpt),
    /// `codecs=` has an empty item (`L16,,PCMU`, a trailing comma).
    InvalidCodecList(Excerpt),
    /// `conf=` does not hold exactly 16 hexadecimal digits.
    InvalidConfId(Excerpt),
    /// The caller's name in `START` breaks the naming rule.
    Name(NameError),
    /// The output buffer is too small for the message.
    BufferTooSmall {
        /// Bytes the message needs.
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
                "empty signalling message: expected a keyword such as START or CLOSE"
            ),
            Error::TooLong { len } => write!(
                f,
                "signalling message of {len} bytes is longer than the {MAX_LINE_LEN}-byte limit"
            ),
            Error::NotUtf8 { offset } => {
                write!(
                    f,
                    "signalling message is not valid UTF-8 (at byte {offset})"
                )
            }
            Error::ControlCharacter { offset } => write!(
                f,
                "signalling message contains a control character at byte {offset}: only a line terminator at the end is allowed"
            ),
            Error::EmptyField { offset } => write!(
                f,
                "signalling message has an extra space at byte {offset}: fields are separated by single spaces"
            ),
            Error::UnknownKeyword(word) => write!(
                f,
                "unknown signalling keyword \"{word}\": expected START, RINGING, ACCEPT, REJECT, BUSY, CLOSE, CLOSED or ACK"
            ),
            Error::MissingCaller => write!(
                f,
                "START without the caller's name: expected \"START <name>\""
            ),
            Error::NotAField(token) => write!(
                f,
                "unexpected \"{token}\" in signalling message: expected a field written key=value"
            ),
            Error::MissingField { keyword, field } => {
                write!(f, "{keyword} without its {field}= field")
            }
            Error::DuplicateField { field } => {
                write!(f, "field {field}= appears twice in signalling message")
            }
            Error::InvalidCallId(value) => write!(
                f,
                "invalid call id \"{value}\": expected exactly 8 hexadecimal digits"
            ),
            Error::InvalidVersion(value) => write!(
                f,
                "invalid protocol version \"{value}\": expected a number from 2 to 255"
            ),
            Error::UnknownCodec(value) => {
                write!(f, "unknown codec \"{value}\": expected L16 or PCMU")
            }
            Error::InvalidCodecList(value) => write!(
                f,
                "invalid codec list \"{value}\": expected codec names separated by single commas"
            ),
            Error::InvalidConfId(value) => write!(
                f,
                "invalid conference id \"{value}\": expected exactly 16 hexadecimal digits"
            ),
            Error::Name(error) => write!(f, "invalid caller name in START: {error}"),
            Error::BufferTooSmall { needed, available } => write!(
                f,
                "signalling message needs {needed} bytes but the buffer holds {available}"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// The first characters of an offending token, kept in an error without allocating.
///
/// Holds at most 20 characters of the token; a longer token is cut at a character
/// boundary and shown with a trailing `...`. Characters a [`Name`] may not hold (control,
/// invisible and formatting characters) are replaced by `?`, so that an excerpt is safe to
/// print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    text: heapless::String<24>,
    truncated: bool,
}

impl Excerpt {
    const MAX_CHARS: usize = 20;

    pub(crate) fn of(token: &str) -> Excerpt {
        let mut text = heapless::String::new();
        let mut truncated = false;
        for (count, ch) in token.chars().enumerate() {
            // Errors end up in logs and on the user's terminal: invisible and formatting
            // characters (bidirectional overrides, C1 controls) are not copied there.
            let ch = if ch == '=' || is_name_char(ch) {
                ch
            } else {
                '?'
            };
            // 20 chars of up to 4 bytes would not fit in 24 bytes: stop on either bound.
            if count == Self::MAX_CHARS || text.push(ch).is_err() {
                truncated = true;
                break;
            }
        }
        Excerpt { text, truncated }
    }

    /// The kept characters, without the `...` of a truncated token.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the token was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Keys of the fields the parser knows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Call,
    Version,
    Codecs,
    Codec,
    Conf,
}

impl Key {
    fn as_str(self) -> &'static str {
        match self {
            Key::Call => "call",
            Key::Version => "v",
            Key::Codecs => "codecs",
            Key::Codec => "codec",
            Key::Conf => "conf",
        }
    }
}

/// The fields of one line, as far as the message's keyword knows them.
#[derive(Default)]
struct Fields {
    call: Option<CallId>,
    version: Option<u8>,
    codecs: Option<CodecSet>,
    codec: Option<Codec>,
    conf: Option<ConfId>,
}

impl Fields {
    /// Reads `key=value` tokens; `known` lists the keys this message uses, the others are
    /// skipped.
    fn parse<'a>(tokens: impl Iterator<Item = &'a str>, known: &[Key]) -> Result<Fields, Error> {
        let mut fields = Fields::default();
        for token in tokens {
            let Some((key, value)) = token.split_once('=') else {
                return Err(Error::NotAField(Excerpt::of(token)));
            };
            if key.is_empty() {
                return Err(Error::NotAField(Excerpt::of(token)));
            }
            let Some(&key) = known.iter().find(|known| known.as_str() == key) else {
                continue;
            };
            let duplicate = match key {
                Key::Call => {
                    let call = CallId::parse(value)
                        .ok_or_else(|| Error::InvalidCallId(Excerpt::of(value)))?;
                    fields.call.replace(call).is_some()
                }
                Key::Version => fields.version.replace(parse_version(value)?).is_some(),
                Key::Codecs => fields.codecs.replace(parse_codecs(value)?).is_some(),
                Key::Codec => {
                    let codec = Codec::from_name(value)
                        .ok_or_else(|| Error::UnknownCodec(Excerpt::of(value)))?;
                    fields.codec.replace(codec).is_some()
                }
                Key::Conf => {
                    let conf = ConfId::parse(value)
                        .ok_or_else(|| Error::InvalidConfId(Excerpt::of(value)))?;
                    fields.conf.replace(conf).is_some()
                }
            };
            if duplicate {
                return Err(Error::DuplicateField {
                    field: key.as_str(),
                });
            }
        }
        Ok(fields)
    }

    fn required_call(&self, keyword: &'static str) -> Result<CallId, Error> {
        self.call.ok_or(Error::MissingField {
            keyword,
            field: "call",
        })
    }
}

fn parse_version(value: &str) -> Result<u8, Error> {
    let invalid = || Error::InvalidVersion(Excerpt::of(value));
    if value.is_empty() || value.len() > 3 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let version = value
        .bytes()
        .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0'));
    match u8::try_from(version) {
        Ok(version) if version >= 2 => Ok(version),
        _ => Err(invalid()),
    }
}

fn parse_codecs(value: &str) -> Result<CodecSet, Error> {
    let mut set = CodecSet::EMPTY;
    if value.is_empty() {
        return Ok(set);
    }
    for item in value.split(',') {
        if item.is_empty() {
            return Err(Error::InvalidCodecList(Excerpt::of(value)));
        }
        // A codec this version does not know is skipped: a later phone may offer more.
        if let Some(codec) = Codec::from_name(item) {
            set.insert(codec);
        }
    }
    Ok(set)
}

/// Removes the line terminator the original's peers may add: any run of spaces, `\r` and
/// `\n` at the end.
fn trim_line_end(datagram: &[u8]) -> &[u8] {
    let end = datagram
        .iter()
        .rposition(|byte| !matches!(byte, b' ' | b'\r' | b'\n'))
        .map_or(0, |last| last + 1);
    &datagram[..end]
}

/// A [`Message`] on the wire: read from a datagram, written into a buffer.
///
/// `use parlo_net::peer::Wire` brings `Message::parse`, `message.emit(..)` and
/// `message.wire()` (the line as text) into scope.
pub trait Wire: Sized {
    /// Parses one signalling datagram.
    fn parse(datagram: &[u8]) -> Result<Self, Error>;

    /// Writes the message into `buf`, without a line terminator, and returns its length.
    ///
    /// A buffer of [`MAX_MESSAGE_LEN`] bytes always suffices.
    fn emit(&self, buf: &mut [u8]) -> Result<usize, Error>;

    /// The number of bytes [`Wire::emit`] writes.
    fn buffer_len(&self) -> usize;

    /// The message as it goes on the wire, for logs and specs.
    fn wire(&self) -> Line<'_>;
}

impl Wire for Message {
    fn parse(datagram: &[u8]) -> Result<Message, Error> {
        if datagram.len() > MAX_LINE_LEN {
            return Err(Error::TooLong {
                len: datagram.len(),
            });
        }
        let line = trim_line_end(datagram);
        if line.is_empty() {
            return Err(Error::Empty);
        }
        let line = core::str::from_utf8(line).map_err(|error| Error::NotUtf8 {
            offset: error.valid_up_to(),
        })?;
        if let Some(offset) = line.bytes().position(|byte| byte.is_ascii_control()) {
            return Err(Error::ControlCharacter { offset });
        }
        if let Some(offset) = line.find("  ") {
            return Err(Error::EmptyField { offset: offset + 1 });
        }
        if line.starts_with(' ') {
            return Err(Error::EmptyField { offset: 0 });
        }

        let mut tokens = line.split(' ');
        let keyword = tokens.next().unwrap_or_default();
        let message = match keyword {
            "START" => {
                let caller = tokens.next().ok_or(Error::MissingCaller)?;
                let caller = Name::new(caller).map_err(Error::Name)?;
                let fields =
                    Fields::parse(tokens, &[Key::Call, Key::Version, Key::Codecs, Key::Conf])?;
                Message::Start {
                    caller,
                    call: fields.call,
                    version: fields.version,
                    codecs: fields.codecs,
                    conf: fields.conf,
                }
            }
            "RINGING" => Message::Ringing {
                call: Fields::parse(tokens, &[Key::Call])?.required_call("RINGING")?,
            },
            "ACCEPT" => {
                let fields = Fields::parse(tokens, &[Key::Call, Key::Codec])?;
                Message::Accept {
                    call: fields.call,
                    codec: fields.codec,
                }
            }
            "REJECT" => Message::Reject {
                call: Fields::parse(tokens, &[Key::Call])?.call,
            },
            "BUSY" => Message::Busy {
                call: Fields::parse(tokens, &[Key::Call])?.call,
            },
            "CLOSE" => Message::Close {
                call: Fields::parse(tokens, &[Key::Call])?.call,
            },
            "CLOSED" => Message::Closed {
                call: Fields::parse(tokens, &[Key::Call])?.required_call("CLOSED")?,
            },
            "ACK" => Message::Ack {
                call: Fields::parse(tokens, &[Key::Call])?.required_call("ACK")?,
            },
            other => return Err(Error::UnknownKeyword(Excerpt::of(other))),
        };
        Ok(message)
    }

    fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let available = buf.len();
        let mut writer = SliceWriter { buf, len: 0 };
        match fmt::write(&mut writer, format_args!("{}", self.wire())) {
            Ok(()) => Ok(writer.len),
            Err(fmt::Error) => Err(Error::BufferTooSmall {
                needed: self.buffer_len(),
                available,
            }),
        }
    }

    fn buffer_len(&self) -> usize {
        let mut counter = LenCounter(0);
        // Counting cannot fail: LenCounter::write_str always returns Ok.
        let _ = fmt::write(&mut counter, format_args!("{}", self.wire()));
        counter.0
    }

    fn wire(&self) -> Line<'_> {
        Line(self)
    }
}

/// A message as it goes on the wire, without a line terminator (see [`Wire::wire`]).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a>(&'a Message);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.0;
        f.write_str(message.keyword())?;
        if let Message::Start { caller, .. } = message {
            write!(f, " {caller}")?;
        }
        if let Some(call) = message.call_id() {
            write!(f, " call={call}")?;
        }
        match message {
            Message::Start {
                version,
                codecs,
                conf,
                ..
            } => {
                if let Some(version) = version {
                    write!(f, " v={version}")?;
                }
                if let Some(codecs) = codecs {
                    write!(f, " codecs={codecs}")?;
                }
                if let Some(conf) = conf {
                    write!(f, " conf={conf}")?;
                }
            }
            Message::Accept {
                codec: Some(codec), ..
            } => write!(f, " codec={codec}")?,
            _ => {}
        }
        Ok(())
    }
}

/// Writes into a borrowed buffer; fails instead of growing when it is full.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let target = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        target.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Counts the bytes written through it.
struct LenCounter(usize);

impl fmt::Write for LenCounter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Strategies for property tests of the signalling messages, shared with the codecs
/// that must tell their lines apart from these.
#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn names() -> impl Strategy<Value = Name> {
        "[a-zA-Z0-9._'éß中\u{1F600}-]{1,32}"
            .prop_filter_map("too long", |text| Name::new(&text).ok())
    }

    pub(crate) fn call_ids() -> impl Strategy<Value = CallId> {
        any::<u32>().prop_map(CallId::new)
    }

    pub(crate) fn codec_sets() -> impl Strategy<Value = CodecSet> {
        (any::<bool>(), any::<bool>()).prop_map(|(l16, pcmu)| {
            let mut set = CodecSet::EMPTY;
            if l16 {
                set.insert(Codec::L16);
            }
            if pcmu {
                set.insert(Codec::Pcmu);
            }
            set
        })
    }

    pub(crate) fn conf_ids() -> impl Strategy<Value = ConfId> {
        any::<u64>().prop_map(ConfId)
    }

    pub(crate) fn codecs() -> impl Strategy<Value = Codec> {
        prop_oneof![Just(Codec::L16), Just(Codec::Pcmu)]
    }

    pub(crate) fn messages() -> impl Strategy<Value = Message> {
        let call = || proptest::option::of(call_ids());
        prop_oneof![
            (
                names(),
                call(),
                proptest::option::of(2u8..),
                proptest::option::of(codec_sets()),
                proptest::option::of(conf_ids()),
            )
                .prop_map(|(caller, call, version, codecs, conf)| Message::Start {
                    caller,
                    call,
                    version,
                    codecs,
                    // Only Parlo STARTs carry it.
                    conf: conf.filter(|_| call.is_some()),
                }),
            call_ids().prop_map(|call| Message::Ringing { call }),
            (call(), proptest::option::of(codecs()))
                .prop_map(|(call, codec)| Message::Accept { call, codec }),
            call().prop_map(|call| Message::Reject { call }),
            call().prop_map(|call| Message::Busy { call }),
            call().prop_map(|call| Message::Close { call }),
            call_ids().prop_map(|call| Message::Closed { call }),
            call_ids().prop_map(|call| Message::Ack { call }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn name(text: &str) -> Name {
        Name::new(text).expect("test names are valid")
    }

    fn emitted(message: &Message) -> std::vec::Vec<u8> {
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        let len = message.emit(&mut buf).expect("MAX_MESSAGE_LEN suffices");
        buf[..len].to_vec()
    }

    fn parse(line: &str) -> Result<Message, Error> {
        Message::parse(line.as_bytes())
    }

    const CALL: CallId = CallId::new(0x0bad_cafe);

    const CONF: ConfId = ConfId(0x0123_4567_89ab_cdef);

    // --- the original dialect: exact bytes both ways -------------------------------------

    #[test]
    fn original_messages_parse_and_emit_the_originals_bytes() {
        let cases = [
            (
                "START alice",
                Message::Start {
                    caller: name("alice"),
                    call: None,
                    version: None,
                    codecs: None,
                    conf: None,
                },
            ),
            (
                "ACCEPT",
                Message::Accept {
                    call: None,
                    codec: None,
                },
            ),
            ("REJECT", Message::Reject { call: None }),
            ("CLOSE", Message::Close { call: None }),
            ("BUSY", Message::Busy { call: None }),
        ];
        for (line, message) in cases {
            assert_eq!(parse(line), Ok(message.clone()), "{line}");
            assert_eq!(emitted(&message), line.as_bytes(), "{line}");
            assert_eq!(message.dialect(), Dialect::Original, "{line}");
            assert!(message.is_original(), "{line}");
            assert_eq!(message.call_id(), None, "{line}");
        }
    }

    #[test]
    fn line_terminators_and_trailing_spaces_are_tolerated() {
        let expected = Ok(Message::Start {
            caller: name("alice"),
            call: None,
            version: None,
            codecs: None,
            conf: None,
        });
        for line in [
            "START alice\n",
            "START alice\r\n",
            "START alice ",
            "START alice  \r\n",
        ] {
            assert_eq!(parse(line), expected, "{line:?}");
        }
        assert_eq!(
            parse("ACCEPT\r\n"),
            Ok(Message::Accept {
                call: None,
                codec: None
            })
        );
        assert_eq!(parse("CLOSE\n"), Ok(Message::Close { call: None }));
    }

    // --- the Parlo dialect --------------------------------------------------------------

    #[test]
    fn parlo_messages_have_fixed_bytes() {
        let cases = [
            (
                "START alice call=0badcafe v=2 codecs=L16,PCMU",
                Message::Start {
                    caller: name("alice"),
                    call: Some(CALL),
                    version: Some(VERSION),
                    codecs: Some(CodecSet::ALL),
                    conf: None,
                },
            ),
            (
                "START alice call=0badcafe v=2 codecs=L16,PCMU conf=0123456789abcdef",
                Message::Start {
                    caller: name("alice"),
                    call: Some(CALL),
                    version: Some(VERSION),
                    codecs: Some(CodecSet::ALL),
                    conf: Some(CONF),
                },
            ),
            ("RINGING call=0badcafe", Message::Ringing { call: CALL }),
            (
                "ACCEPT call=0badcafe codec=PCMU",
                Message::Accept {
                    call: Some(CALL),
                    codec: Some(Codec::Pcmu),
                },
            ),
            (
                "ACCEPT call=0badcafe",
                Message::Accept {
                    call: Some(CALL),
                    codec: None,
                },
            ),
            ("REJECT call=0badcafe", Message::Reject { call: Some(CALL) }),
            ("BUSY call=0badcafe", Message::Busy { call: Some(CALL) }),
            ("CLOSE call=0badcafe", Message::Close { call: Some(CALL) }),
            ("CLOSED call=0badcafe", Message::Closed { call: CALL }),
            (
                "ACK call=00000000",
                Message::Ack {
                    call: CallId::new(0),
                },
            ),
            (
                "ACK call=ffffffff",
                Message::Ack {
                    call: CallId::new(u32::MAX),
                },
            ),
        ];
        for (line, message) in cases {
            assert_eq!(parse(line), Ok(message.clone()), "{line}");
            assert_eq!(emitted(&message), line.as_bytes(), "{line}");
            assert_eq!(message.wire().to_string(), line);
            assert_eq!(message.buffer_len(), line.len(), "{line}");
            assert_eq!(message.dialect(), Dialect::Parlo, "{line}");
            assert_eq!(
                message.keyword(),
                line.split(' ').next().unwrap_or_default()
            );
        }
    }

    #[test]
    fn start_constructors_build_both_dialects() {
        let parlo = Message::start(name("bob"), CALL, CodecSet::ALL);
        assert_eq!(
            parlo.wire().to_string(),
            "START bob call=0badcafe v=2 codecs=L16,PCMU"
        );
        assert_eq!(parlo.dialect(), Dialect::Parlo);
        let original = Message::start_original(name("bob"));
        assert_eq!(emitted(&original), b"START bob");
        assert!(original.is_original());
    }

    #[test]
    fn a_conference_leg_says_its_conference_in_start() {
        let message = parse("START bob call=0badcafe v=2 conf=0123456789ABCDEF").expect("valid");
        assert!(matches!(
            message,
            Message::Start {
                conf: Some(CONF),
                ..
            }
        ));
        assert_eq!(
            emitted(&message),
            b"START bob call=0badcafe v=2 conf=0123456789abcdef"
        );
        // The fields come in any order.
        assert_eq!(
            parse("START bob conf=0123456789abcdef v=2 call=0badcafe"),
            Ok(message)
        );
        // A START without it is an ordinary call, its bytes as they always were.
        let ordinary = Message::start(name("bob"), CALL, CodecSet::ALL);
        assert_eq!(
            emitted(&ordinary),
            b"START bob call=0badcafe v=2 codecs=L16,PCMU"
        );
        // Other messages do not know the field: skipped, whatever its value.
        assert_eq!(
            parse("CLOSE call=0badcafe conf=nonsense"),
            Ok(Message::Close { call: Some(CALL) })
        );
        let error = parse("START bob call=0badcafe conf=12").expect_err("a short id");
        assert_eq!(
            error.to_string(),
            "invalid conference id \"12\": expected exactly 16 hexadecimal digits"
        );
    }

    #[test]
    fn the_call_id_makes_a_parlo_message_a_version_alone_does_not() {
        let version_only = parse("START bob v=2").expect("valid");
        assert_eq!(version_only.dialect(), Dialect::Original);
        assert_eq!(version_only.call_id(), None);
        let call_only = parse("START bob call=00000001").expect("valid");
        assert_eq!(call_only.dialect(), Dialect::Parlo);
        assert_eq!(call_only.call_id(), Some(CallId::new(1)));
        // A later version is still a Parlo peer.
        let later = parse("START bob v=3").expect("valid");
        assert!(matches!(
            later,
            Message::Start {
                version: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn call_ids_parse_in_either_case_and_emit_in_lower_case() {
        let message = parse("CLOSE call=0BADCAFE").expect("valid");
        assert_eq!(message, Message::Close { call: Some(CALL) });
        assert_eq!(emitted(&message), b"CLOSE call=0badcafe");
        assert_eq!(CallId::parse("0BaDcAfE"), Some(CALL));
        assert_eq!(CALL.to_string(), "0badcafe");
        assert_eq!(CallId::new(1).to_string(), "00000001");
    }

    #[test]
    fn codec_names_match_without_case_and_emit_canonically() {
        let message = parse("START bob codecs=pcmu,l16").expect("valid");
        assert!(matches!(
            message,
            Message::Start {
                codecs: Some(CodecSet::ALL),
                ..
            }
        ));
        assert_eq!(emitted(&message), b"START bob codecs=L16,PCMU");
        assert_eq!(
            parse("ACCEPT call=00000001 codec=l16"),
            Ok(Message::Accept {
                call: Some(CallId::new(1)),
                codec: Some(Codec::L16)
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse("CLOSE call=00000001 reason=hangup"),
            Ok(Message::Close {
                call: Some(CallId::new(1))
            })
        );
        assert_eq!(
            parse("START bob x=1 v=2 y="),
            Ok(Message::Start {
                caller: name("bob"),
                call: None,
                version: Some(2),
                codecs: None,
                conf: None,
            })
        );
        // A field known to another message is unknown to this one.
        assert_eq!(
            parse("REJECT codec=OPUS v=9"),
            Ok(Message::Reject { call: None })
        );
        // Unknown fields do not change the dialect.
        assert!(parse("ACCEPT future=1").expect("valid").is_original());
    }

    #[test]
    fn unknown_codecs_in_an_offer_are_skipped() {
        let message = parse("START bob codecs=OPUS,L16,G722").expect("valid");
        assert!(
            matches!(message, Message::Start { codecs: Some(set), .. } if set == CodecSet::only(Codec::L16))
        );
        let nothing_known = parse("START bob codecs=OPUS").expect("valid");
        assert!(matches!(
            nothing_known,
            Message::Start {
                codecs: Some(CodecSet::EMPTY),
                ..
            }
        ));
        // An empty offer is written back as an empty list, which parses to the same.
        assert_eq!(emitted(&nothing_known), b"START bob codecs=");
        assert_eq!(parse("START bob codecs="), Ok(nothing_known));
        // Duplicates collapse.
        let twice = parse("START bob codecs=L16,L16").expect("valid");
        assert!(
            matches!(twice, Message::Start { codecs: Some(set), .. } if set == CodecSet::only(Codec::L16))
        );
    }

    #[test]
    fn the_longest_message_fits_max_message_len() {
        let longest = Message::Start {
            caller: name(&"x".repeat(MAX_NAME_LEN)),
            call: Some(CallId::new(u32::MAX)),
            version: Some(u8::MAX),
            codecs: Some(CodecSet::ALL),
            conf: Some(ConfId(u64::MAX)),
        };
        assert_eq!(longest.buffer_len(), MAX_MESSAGE_LEN);
        assert_eq!(parse(&longest.wire().to_string()), Ok(longest));
    }

    #[test]
    fn a_line_of_max_line_len_is_accepted_and_one_more_byte_is_not() {
        let mut line = std::string::String::from("CLOSE pad=");
        line.push_str(&"p".repeat(MAX_LINE_LEN - line.len()));
        assert_eq!(line.len(), MAX_LINE_LEN);
        assert_eq!(parse(&line), Ok(Message::Close { call: None }));
        line.push('p');
        assert_eq!(
            parse(&line),
            Err(Error::TooLong {
                len: MAX_LINE_LEN + 1
            })
        );
    }

    // --- errors ------------------------------------------------------------------------

    #[test]
    fn empty_lines_are_refused() {
        assert_eq!(parse(""), Err(Error::Empty));
        assert_eq!(parse(" \r\n"), Err(Error::Empty));
    }

    #[test]
    fn unknown_keywords_are_named_in_the_error() {
        let error = parse("HELLO world").expect_err("unknown keyword");
        assert_eq!(error, Error::UnknownKeyword(Excerpt::of("HELLO")));
        assert!(error.to_string().contains("\"HELLO\""), "{error}");
        // Keywords are upper case, as the original sends them.
        assert!(
            matches!(parse("start alice"), Err(Error::UnknownKeyword(word)) if word.as_str() == "start")
        );
        assert!(matches!(parse("CLOSEX"), Err(Error::UnknownKeyword(_))));
    }

    #[test]
    fn long_tokens_are_cut_in_errors() {
        let error = parse(&"Z".repeat(40)).expect_err("unknown keyword");
        let Error::UnknownKeyword(word) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(word.as_str(), "Z".repeat(20));
        assert!(word.is_truncated());
        assert!(
            error
                .to_string()
                .contains(&format!("\"{}...\"", "Z".repeat(20))),
            "{error}"
        );
        // Multi-byte characters are cut at a character boundary, within 24 bytes.
        let wide = Excerpt::of(&"€".repeat(30));
        assert_eq!(wide.as_str(), "€".repeat(8));
        assert!(wide.is_truncated());
        // Invisible characters are not copied into errors.
        let error = parse("HI\u{202e}\u{85}").expect_err("unknown keyword");
        let Error::UnknownKeyword(word) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(word.as_str(), "HI??");
    }

    #[test]
    fn malformed_lines_are_refused_with_the_reason() {
        let cases: &[(&[u8], Error)] = &[
            (b"START", Error::MissingCaller),
            (b"START ", Error::MissingCaller),
            (b"START  alice", Error::EmptyField { offset: 6 }),
            (b" START alice", Error::EmptyField { offset: 0 }),
            (b"START alice\tv=2", Error::ControlCharacter { offset: 11 }),
            (b"CLOSE\nCLOSE", Error::ControlCharacter { offset: 5 }),
            (b"CLOSE\0", Error::ControlCharacter { offset: 5 }),
            (b"START \xffbob", Error::NotUtf8 { offset: 6 }),
            (
                b"RINGING",
                Error::MissingField {
                    keyword: "RINGING",
                    field: "call",
                },
            ),
            (
                b"CLOSED x=1",
                Error::MissingField {
                    keyword: "CLOSED",
                    field: "call",
                },
            ),
            (
                b"ACK",
                Error::MissingField {
                    keyword: "ACK",
                    field: "call",
                },
            ),
            (b"ACK call=123", Error::InvalidCallId(Excerpt::of("123"))),
            (
                b"ACK call=0000000g",
                Error::InvalidCallId(Excerpt::of("0000000g")),
            ),
            (
                b"ACK call=000000001",
                Error::InvalidCallId(Excerpt::of("000000001")),
            ),
            (
                b"ACK call=+0000001",
                Error::InvalidCallId(Excerpt::of("+0000001")),
            ),
            (b"ACK call=", Error::InvalidCallId(Excerpt::of(""))),
            (
                b"CLOSE call=00000001 call=00000002",
                Error::DuplicateField { field: "call" },
            ),
            (b"START a v=2 v=2", Error::DuplicateField { field: "v" }),
            (b"CLOSE now", Error::NotAField(Excerpt::of("now"))),
            (b"CLOSE =x", Error::NotAField(Excerpt::of("=x"))),
            (b"START alice bob", Error::NotAField(Excerpt::of("bob"))),
            (b"START alice v=1", Error::InvalidVersion(Excerpt::of("1"))),
            (
                b"START alice v=256",
                Error::InvalidVersion(Excerpt::of("256")),
            ),
            (b"START alice v=", Error::InvalidVersion(Excerpt::of(""))),
            (
                b"START alice v=2.0",
                Error::InvalidVersion(Excerpt::of("2.0")),
            ),
            (
                b"START alice v=0002",
                Error::InvalidVersion(Excerpt::of("0002")),
            ),
            (
                b"ACCEPT codec=OPUS",
                Error::UnknownCodec(Excerpt::of("OPUS")),
            ),
            (b"ACCEPT codec=", Error::UnknownCodec(Excerpt::of(""))),
            (
                b"ACCEPT codec=L16,PCMU",
                Error::UnknownCodec(Excerpt::of("L16,PCMU")),
            ),
            (
                b"START a codecs=L16,,PCMU",
                Error::InvalidCodecList(Excerpt::of("L16,,PCMU")),
            ),
            (
                b"START a codecs=L16,",
                Error::InvalidCodecList(Excerpt::of("L16,")),
            ),
            (
                b"START a call=00000001 conf=0123456789abcde",
                Error::InvalidConfId(Excerpt::of("0123456789abcde")),
            ),
            (
                b"START a call=00000001 conf=0123456789abcdef0",
                Error::InvalidConfId(Excerpt::of("0123456789abcdef0")),
            ),
            (
                b"START a call=00000001 conf=+123456789abcdef",
                Error::InvalidConfId(Excerpt::of("+123456789abcdef")),
            ),
            (
                b"START a call=00000001 conf=0123456789abcdeg",
                Error::InvalidConfId(Excerpt::of("0123456789abcdeg")),
            ),
            (
                b"START a call=00000001 conf=",
                Error::InvalidConfId(Excerpt::of("")),
            ),
            (
                b"START a conf=0123456789abcdef conf=0123456789abcdef",
                Error::DuplicateField { field: "conf" },
            ),
        ];
        for (line, error) in cases {
            assert_eq!(
                Message::parse(line).as_ref(),
                Err(error),
                "{}",
                std::string::String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn emit_reports_a_short_buffer() {
        let message = Message::Start {
            caller: name("alice"),
            call: None,
            version: None,
            codecs: None,
            conf: None,
        };
        let mut buf = [0u8; 5];
        assert_eq!(
            message.emit(&mut buf),
            Err(Error::BufferTooSmall {
                needed: 11,
                available: 5
            })
        );
        let mut exact = [0u8; 11];
        assert_eq!(message.emit(&mut exact), Ok(11));
        assert_eq!(&exact, b"START alice");
        assert_eq!(
            Message::Close { call: None }.emit(&mut []),
            Err(Error::BufferTooSmall {
                needed: 5,
                available: 0
            })
        );
    }

    // --- names -------------------------------------------------------------------------

    #[test]
    fn start_applies_the_name_rule() {
        let long = format!("START {}", "n".repeat(33));
        assert_eq!(
            parse(&long),
            Err(Error::Name(NameError::TooLong { len: 33 }))
        );
        assert_eq!(
            parse("START al\u{200b}ice"),
            Err(Error::Name(NameError::Invisible { ch: '\u{200b}' }))
        );
        // The caller is positional: a name that looks like a field is refused as a name.
        assert_eq!(
            parse("START call=00000001"),
            Err(Error::Name(NameError::Equals))
        );
        assert!(
            Error::Name(NameError::Equals)
                .to_string()
                .contains("invalid caller name")
        );
    }

    #[test]
    fn codec_sets_list_codecs_in_canonical_order() {
        assert_eq!(CodecSet::ALL.to_string(), "L16,PCMU");
        assert_eq!(CodecSet::only(Codec::Pcmu).to_string(), "PCMU");
        assert_eq!(CodecSet::EMPTY.to_string(), "");
        let set: CodecSet = [Codec::Pcmu, Codec::L16].into_iter().collect();
        assert_eq!(set, CodecSet::ALL);
        assert_eq!(
            set.iter().collect::<std::vec::Vec<_>>(),
            [Codec::L16, Codec::Pcmu]
        );
        assert!(CodecSet::EMPTY.is_empty());
        assert!(!CodecSet::only(Codec::L16).contains(Codec::Pcmu));
    }

    // --- properties --------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        use crate::peer::strategies::messages;

        proptest! {
            #[test]
            fn emit_then_parse_gives_the_message_back(message in messages()) {
                let mut buf = [0u8; MAX_MESSAGE_LEN];
                let len = message.emit(&mut buf).expect("MAX_MESSAGE_LEN suffices");
                prop_assert_eq!(len, message.buffer_len());
                prop_assert_eq!(Message::parse(&buf[..len]), Ok(message.clone()));
                // With the original's line terminator too.
                let mut line = buf[..len].to_vec();
                line.extend_from_slice(b"\r\n");
                prop_assert_eq!(Message::parse(&line), Ok(message));
            }

            #[test]
            fn parse_never_panics_and_what_it_accepts_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Ok(message) = Message::parse(&bytes) {
                    let mut buf = [0u8; MAX_MESSAGE_LEN];
                    let len = message.emit(&mut buf).expect("MAX_MESSAGE_LEN suffices");
                    prop_assert_eq!(Message::parse(&buf[..len]), Ok(message));
                }
            }
        }
    }
}
