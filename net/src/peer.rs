//! Peer signalling: the one-line datagrams two phones exchange to set up and end a call.
//!
//! # Grammar
//!
//! A signalling datagram is one line of UTF-8: a keyword, then fields separated by single
//! spaces.
//!
//! ```text
//! START <caller> [call=<id>] [v=<n>] [codecs=<codec>,<codec>...]
//! RINGING call=<id>
//! ACCEPT [call=<id>] [codec=<codec>]
//! REJECT [call=<id>]
//! BUSY [call=<id>]
//! CLOSE [call=<id>]
//! CLOSED call=<id>
//! ACK call=<id>
//! ```
//!
//! - `<caller>` is a [`Name`]: 1 to [`MAX_NAME_LEN`] bytes of printable UTF-8 without
//!   whitespace. It is positional (always the token after `START`), so a name may contain
//!   `=`.
//! - `<id>` is a [`CallId`]: a 32-bit number written as exactly 8 hexadecimal digits
//!   (emitted in lower case, parsed in either case).
//! - `v=<n>` is the protocol version, a decimal number from 2 to 255. Parlo sends `v=2`.
//!   The original project sends no version (there is no `v=1` on the wire).
//! - `<codec>` is `L16` or `PCMU` ([`Codec`]), matched without regard to case.
//!
//! # Dialects
//!
//! A message that carries neither a call id nor a version is in the
//! [`Dialect::Original`] dialect: it is what a phone of the original project sends (`START
//! alice`, `ACCEPT`, `REJECT`, `CLOSE`), and a phone answering such a peer must use the
//! original media format (raw PCM datagrams, see [`crate::media`]). Every other message is
//! [`Dialect::Parlo`]. [`Message::emit`] writes an original-dialect message byte for byte as
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

/// Longest name, in bytes (UTF-8), the directory and the peer protocol accept.
pub const MAX_NAME_LEN: usize = 32;

/// Longest signalling datagram [`Message::parse`] accepts, in bytes, terminator included.
///
/// Parlo's own messages are at most [`MAX_MESSAGE_LEN`] bytes; the rest leaves room for
/// fields of later versions. It is also well below the original's 1024-byte audio
/// datagrams, so a line can never be mistaken for one of those by its length.
pub const MAX_LINE_LEN: usize = 512;

/// Longest message [`Message::emit`] writes: a buffer of this size always suffices.
///
/// `START` + a 32-byte name + `call=` + `v=255` + `codecs=L16,PCMU`, with separators.
pub const MAX_MESSAGE_LEN: usize = 74;

/// The protocol version Parlo speaks, sent as `v=2` in `START`.
pub const VERSION: u8 = 2;

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
    /// A name is empty.
    NameEmpty,
    /// A name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// Length of the name, in bytes.
        len: usize,
    },
    /// A name is not valid UTF-8.
    NameNotUtf8,
    /// A name contains whitespace, a control character or an invisible formatting
    /// character.
    NameInvalidChar {
        /// The offending character.
        ch: char,
    },
    /// The output buffer is too small for the message.
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

const NAME_RULE: &str = "a name is 1 to 32 bytes of printable UTF-8 without whitespace";

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
            Error::NameEmpty => write!(f, "the name is empty: {NAME_RULE}"),
            Error::NameTooLong { len } => {
                write!(f, "the name is {len} bytes long: {NAME_RULE}")
            }
            Error::NameNotUtf8 => write!(f, "the name is not valid UTF-8: {NAME_RULE}"),
            Error::NameInvalidChar { ch } => write!(
                f,
                "the name contains {ch:?} (U+{:04X}), which is not allowed: {NAME_RULE}",
                u32::from(*ch)
            ),
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
/// boundary and shown with a trailing `...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    text: heapless::String<24>,
    truncated: bool,
}

impl Excerpt {
    const MAX_CHARS: usize = 20;

    fn of(token: &str) -> Excerpt {
        let mut text = heapless::String::new();
        let mut truncated = false;
        for (count, ch) in token.chars().enumerate() {
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

/// Identifies one call between two phones, so that a message about another call (late,
/// duplicated or forged) is recognised and ignored.
///
/// A 32-bit number chosen at random by the caller, written on the wire as exactly 8
/// hexadecimal digits (`call=0badcafe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u32);

impl CallId {
    /// Wraps a number.
    pub const fn new(id: u32) -> CallId {
        CallId(id)
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Parses exactly 8 hexadecimal digits, in either case.
    pub fn parse(text: &str) -> Result<CallId, Error> {
        let invalid = || Error::InvalidCallId(Excerpt::of(text));
        if text.len() != 8 {
            return Err(invalid());
        }
        let mut id = 0u32;
        for byte in text.bytes() {
            let digit = char::from(byte).to_digit(16).ok_or_else(invalid)?;
            id = (id << 4) | digit;
        }
        Ok(CallId(id))
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A user's name, as registered in the directory and sent in `START`.
///
/// 1 to [`MAX_NAME_LEN`] bytes of UTF-8, every character printable: no whitespace (the peer
/// protocol separates fields with spaces), no control character, and none of the invisible
/// formatting characters that would let two different names look the same (zero-width
/// spaces and joiners, bidirectional overrides, soft hyphen, byte-order mark). Other
/// characters, `=` included, are allowed. The directory server and the phone share this
/// rule through [`Name::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(heapless::String<MAX_NAME_LEN>);

impl Name {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Name, Error> {
        if name.is_empty() {
            return Err(Error::NameEmpty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { len: name.len() });
        }
        if let Some(ch) = name.chars().find(|&ch| !is_name_char(ch)) {
            return Err(Error::NameInvalidChar { ch });
        }
        let mut text = heapless::String::new();
        text.push_str(name)
            .map_err(|_| Error::NameTooLong { len: name.len() })?;
        Ok(Name(text))
    }

    /// Validates a name received as bytes.
    pub fn from_bytes(name: &[u8]) -> Result<Name, Error> {
        // Length first, so that a long name is reported as too long even when it is also
        // cut in the middle of a character.
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { len: name.len() });
        }
        let text = core::str::from_utf8(name).map_err(|_| Error::NameNotUtf8)?;
        Name::new(text)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_name_char(ch: char) -> bool {
    !ch.is_whitespace()
        && !ch.is_control()
        && !matches!(
            ch,
            '\u{00AD}'                  // soft hyphen
                | '\u{180E}'            // Mongolian vowel separator
                | '\u{200B}'..='\u{200F}' // zero-width space, joiners, direction marks
                | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
                | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, isolates
                | '\u{FEFF}'            // byte-order mark
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
        )
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = Error;

    fn try_from(name: &str) -> Result<Name, Error> {
        Name::new(name)
    }
}

impl core::str::FromStr for Name {
    type Err = Error;

    fn from_str(name: &str) -> Result<Name, Error> {
        Name::new(name)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An audio codec a call can use. Both carry 8 kHz mono audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Linear 16-bit PCM, network byte order (RFC 3551 L16).
    L16,
    /// G.711 µ-law, 8 bits per sample (RFC 3551 PCMU).
    Pcmu,
}

impl Codec {
    /// Every codec, in the order [`CodecSet`] lists them.
    pub const ALL: [Codec; 2] = [Codec::L16, Codec::Pcmu];

    /// The codec's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::L16 => "L16",
            Codec::Pcmu => "PCMU",
        }
    }

    /// The codec of that name, matched without regard to case.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.name().eq_ignore_ascii_case(name))
    }

    const fn bit(self) -> u8 {
        match self {
            Codec::L16 => 1,
            Codec::Pcmu => 2,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The codecs a caller offers in `codecs=`.
///
/// A set: the order on the wire carries no preference (the callee picks, by its own
/// preference, among those offered) and is always written L16 first. A set parsed from an
/// offer that names no codec Parlo knows (`codecs=OPUS`) is empty, and written back as
/// `codecs=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CodecSet(u8);

impl CodecSet {
    /// No codec.
    pub const EMPTY: CodecSet = CodecSet(0);
    /// Every codec Parlo knows.
    pub const ALL: CodecSet = CodecSet(Codec::L16.bit() | Codec::Pcmu.bit());

    /// The set holding only `codec`.
    pub const fn only(codec: Codec) -> CodecSet {
        CodecSet(codec.bit())
    }

    /// This set with `codec` added.
    #[must_use]
    pub const fn with(self, codec: Codec) -> CodecSet {
        CodecSet(self.0 | codec.bit())
    }

    /// Adds `codec`.
    pub fn insert(&mut self, codec: Codec) {
        self.0 |= codec.bit();
    }

    /// Whether the set holds `codec`.
    pub const fn contains(self, codec: Codec) -> bool {
        self.0 & codec.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The codecs in the set, L16 first.
    pub fn iter(self) -> impl Iterator<Item = Codec> {
        Codec::ALL
            .into_iter()
            .filter(move |codec| self.contains(*codec))
    }
}

impl FromIterator<Codec> for CodecSet {
    fn from_iter<I: IntoIterator<Item = Codec>>(iter: I) -> CodecSet {
        iter.into_iter().fold(CodecSet::EMPTY, CodecSet::with)
    }
}

impl fmt::Display for CodecSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, codec) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(codec.name())?;
        }
        Ok(())
    }
}

/// Which protocol a peer speaks, as told by a message it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The original project's: no call ids, no acknowledgements, raw PCM media.
    Original,
    /// Parlo's: call ids, acknowledgements, RTP media.
    Parlo,
}

/// One signalling message (see the [module documentation](self) for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A call request.
    Start {
        /// Who is calling, as the caller registered in the directory.
        caller: Name,
        /// The new call's id; `None` from an original peer.
        call: Option<CallId>,
        /// The caller's protocol version ([`VERSION`] for Parlo); `None` from an original
        /// peer.
        version: Option<u8>,
        /// The codecs the caller offers; `None` when it does not say.
        codecs: Option<CodecSet>,
    },
    /// The callee is alerting its user; the caller stops retransmitting `START`.
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The callee answers.
    Accept {
        /// The call; `None` from an original peer.
        call: Option<CallId>,
        /// The codec the callee chose among those offered; `None` when it does not say.
        codec: Option<Codec>,
    },
    /// The callee declines.
    Reject {
        /// The call; `None` from (or to) an original peer.
        call: Option<CallId>,
    },
    /// The callee is already in a call.
    Busy {
        /// The call; `None` when answering an original peer's `START`.
        call: Option<CallId>,
    },
    /// Hang up, or cancel a call not yet answered.
    Close {
        /// The call; `None` from (or to) an original peer.
        call: Option<CallId>,
    },
    /// Acknowledges `CLOSE`.
    Closed {
        /// The call.
        call: CallId,
    },
    /// Acknowledges `ACCEPT`.
    Ack {
        /// The call.
        call: CallId,
    },
}

/// Keys of the fields the parser knows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Call,
    Version,
    Codecs,
    Codec,
}

impl Key {
    fn as_str(self) -> &'static str {
        match self {
            Key::Call => "call",
            Key::Version => "v",
            Key::Codecs => "codecs",
            Key::Codec => "codec",
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
                Key::Call => fields.call.replace(CallId::parse(value)?).is_some(),
                Key::Version => fields.version.replace(parse_version(value)?).is_some(),
                Key::Codecs => fields.codecs.replace(parse_codecs(value)?).is_some(),
                Key::Codec => {
                    let codec = Codec::from_name(value)
                        .ok_or_else(|| Error::UnknownCodec(Excerpt::of(value)))?;
                    fields.codec.replace(codec).is_some()
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

impl Message {
    /// Parses one signalling datagram.
    pub fn parse(datagram: &[u8]) -> Result<Message, Error> {
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
                let caller = Name::new(caller)?;
                let fields = Fields::parse(tokens, &[Key::Call, Key::Version, Key::Codecs])?;
                Message::Start {
                    caller,
                    call: fields.call,
                    version: fields.version,
                    codecs: fields.codecs,
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

    /// Writes the message into `buf`, without a line terminator, and returns its length.
    ///
    /// A buffer of [`MAX_MESSAGE_LEN`] bytes always suffices.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let available = buf.len();
        let mut writer = SliceWriter { buf, len: 0 };
        match fmt::write(&mut writer, format_args!("{self}")) {
            Ok(()) => Ok(writer.len),
            Err(fmt::Error) => Err(Error::BufferTooSmall {
                needed: self.buffer_len(),
                available,
            }),
        }
    }

    /// The number of bytes [`Message::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut counter = LenCounter(0);
        // Counting cannot fail: LenCounter::write_str always returns Ok.
        let _ = fmt::write(&mut counter, format_args!("{self}"));
        counter.0
    }

    /// The message's keyword.
    pub const fn keyword(&self) -> &'static str {
        match self {
            Message::Start { .. } => "START",
            Message::Ringing { .. } => "RINGING",
            Message::Accept { .. } => "ACCEPT",
            Message::Reject { .. } => "REJECT",
            Message::Busy { .. } => "BUSY",
            Message::Close { .. } => "CLOSE",
            Message::Closed { .. } => "CLOSED",
            Message::Ack { .. } => "ACK",
        }
    }

    /// The call the message is about, when it says.
    pub const fn call_id(&self) -> Option<CallId> {
        match self {
            Message::Start { call, .. }
            | Message::Accept { call, .. }
            | Message::Reject { call }
            | Message::Busy { call }
            | Message::Close { call } => *call,
            Message::Ringing { call } | Message::Closed { call } | Message::Ack { call } => {
                Some(*call)
            }
        }
    }

    /// The dialect of the message: [`Dialect::Original`] when it carries neither a call id
    /// nor a version.
    pub const fn dialect(&self) -> Dialect {
        let version = match self {
            Message::Start { version, .. } => *version,
            _ => None,
        };
        if self.call_id().is_none() && version.is_none() {
            Dialect::Original
        } else {
            Dialect::Parlo
        }
    }

    /// Whether the message is in the original project's dialect.
    pub const fn is_original(&self) -> bool {
        matches!(self.dialect(), Dialect::Original)
    }
}

impl fmt::Display for Message {
    /// Writes the message as it goes on the wire, without a line terminator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())?;
        if let Message::Start { caller, .. } = self {
            write!(f, " {caller}")?;
        }
        if let Some(call) = self.call_id() {
            write!(f, " call={call}")?;
        }
        match self {
            Message::Start {
                version, codecs, ..
            } => {
                if let Some(version) = version {
                    write!(f, " v={version}")?;
                }
                if let Some(codecs) = codecs {
                    write!(f, " codecs={codecs}")?;
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
