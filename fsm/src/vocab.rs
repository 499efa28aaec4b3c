//! Parlo's vocabulary: names, call ids, codecs, dialects, the signalling message and the
//! audio frame. Defined once, here; `parlo-net` reads and writes them on the wire and the
//! daemons use them as they are.

use core::fmt;

use crate::conference::ConfId;

/// Audio sample rate, in samples per second (mono, 16-bit).
pub const SAMPLE_RATE: u32 = 8000;

/// Samples in one audio frame: 64 ms at [`SAMPLE_RATE`], the original's 512-sample chunk.
pub const FRAME_SAMPLES: usize = 512;

/// One audio frame: [`FRAME_SAMPLES`] signed 16-bit samples.
pub type Frame = [i16; FRAME_SAMPLES];

/// Duration of one frame, in milliseconds.
pub const FRAME_MS: u64 = FRAME_SAMPLES as u64 * 1000 / SAMPLE_RATE as u64;

/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 32;

/// The protocol version Parlo speaks, sent as `v=2` in `START`.
pub const VERSION: u8 = 2;

/// Why a text is not a valid [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong {
        /// Its length, in bytes.
        len: usize,
    },
    /// The name is not valid UTF-8.
    NotUtf8,
    /// The name contains whitespace (fields are separated by spaces).
    Whitespace {
        /// The whitespace character.
        ch: char,
    },
    /// The name contains a control character, or an invisible or formatting character
    /// that would let two different names look the same.
    Invisible {
        /// The offending character.
        ch: char,
    },
    /// The name contains `=`, which separates a field's key from its value.
    Equals,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong { len } => {
                write!(
                    f,
                    "name is {len} bytes long, at most {MAX_NAME_LEN} allowed"
                )
            }
            NameError::NotUtf8 => f.write_str("name is not valid UTF-8"),
            NameError::Whitespace { .. } => f.write_str("name contains whitespace"),
            NameError::Invisible { ch } => write!(
                f,
                "name contains a control or invisible character (U+{:04X})",
                u32::from(*ch)
            ),
            NameError::Equals => f.write_str("name contains '=', which separates fields"),
        }
    }
}

impl core::error::Error for NameError {}

/// A user's name, as registered in the directory, sent in `START` and typed in commands.
///
/// One rule serves the directory, the peer protocol and the phone's commands: 1 to
/// [`MAX_NAME_LEN`] bytes of UTF-8; no whitespace (the peer protocol separates fields with
/// spaces); no control character (C0, DEL, C1); none of the invisible formatting characters
/// that would let two different names look the same or reorder the text around them
/// (soft hyphen, Arabic letter mark, zero-width spaces and joiners, bidirectional marks,
/// embeddings, overrides and isolates, invisible operators, the byte-order mark,
/// interlinear annotation marks, tag characters); and no `=`, which separates a field's
/// key from its value in signalling and in the phone's events.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(heapless::String<MAX_NAME_LEN>);

impl Name {
    /// Checks `name` against the rule.
    pub fn new(name: &str) -> Result<Name, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        for ch in name.chars() {
            if ch.is_whitespace() {
                return Err(NameError::Whitespace { ch });
            }
            if ch.is_control() || is_invisible(ch) {
                return Err(NameError::Invisible { ch });
            }
            if ch == '=' {
                return Err(NameError::Equals);
            }
        }
        let mut text = heapless::String::new();
        text.push_str(name)
            .map_err(|_| NameError::TooLong { len: name.len() })?;
        Ok(Name(text))
    }

    /// Checks a name received as bytes.
    pub fn from_bytes(name: &[u8]) -> Result<Name, NameError> {
        // Length first, so that a long name is reported as too long even when it is also
        // cut in the middle of a character.
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        let text = core::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
        Name::new(text)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Whether `ch` may appear in a name (and, so, in text shown as is).
pub fn is_name_char(ch: char) -> bool {
    !ch.is_whitespace() && !ch.is_control() && !is_invisible(ch) && ch != '='
}

/// Characters that print as nothing or reorder the text around them.
fn is_invisible(ch: char) -> bool {
    matches!(
        ch,
        '\u{00AD}'                    // soft hyphen
            | '\u{061C}'              // Arabic letter mark
            | '\u{180E}'              // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space, joiners, direction marks
            | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, isolates
            | '\u{FEFF}'              // byte-order mark
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
            | '\u{E0000}'..='\u{E007F}' // tag characters
    )
}

/// Whether `ch` is written escaped in text that leaves a program (see [`Escaped`]): a
/// control character (C0, DEL, C1: ESC, BEL, CSI U+009B...), a line or paragraph
/// separator, or a character that prints as nothing or reorders the text around it.
pub fn is_escaped(ch: char) -> bool {
    ch.is_control() || is_invisible(ch) || matches!(ch, '\u{2028}' | '\u{2029}')
}

/// Text as it may leave a program (a terminal, a log, a control socket, JSON), whatever it
/// holds: each character for which [`is_escaped`] holds is written visibly instead of
/// raw, so that text from the network or a user can neither drive the terminal that shows
/// it (escape sequences, a bell, a cleared screen), break a line in two, nor hide or
/// reorder what is around it. Everything else, spaces and letters of any script
/// included, is written as it is. A `Display` wrapper of any `Display`: it writes through
/// without allocating.
///
/// Two notations:
/// - [`Escaped::text`], for lines of text: `\u{1b}`, as Rust writes it. A backslash is left
///   as it is: text that spells an escape is shown as what it spells, harmlessly.
/// - [`Escaped::json`], for the inside of a JSON string: `"` and `\` too, `\n` `\r` `\t`,
///   and every other one as `\u001b` (a UTF-16 pair beyond U+FFFF), C1, DEL and the
///   invisible characters included, which JSON would allow raw.
///
/// ```
/// use parlo_fsm::Escaped;
/// let reason = "\u{1b}[2J\u{7}café \u{202e}olleh";
/// assert_eq!(Escaped::text(reason).to_string(), "\\u{1b}[2J\\u{7}café \\u{202e}olleh");
/// assert_eq!(Escaped::json("\"a\"\n\u{9b}").to_string(), "\\\"a\\\"\\n\\u009b");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped<T> {
    text: T,
    json: bool,
}

impl<T: fmt::Display> Escaped<T> {
    /// `text` for a line of text.
    pub const fn text(text: T) -> Escaped<T> {
        Escaped { text, json: false }
    }

    /// `text` for the inside of a JSON string (the quotes are the caller's).
    pub const fn json(text: T) -> Escaped<T> {
        Escaped { text, json: true }
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        write!(
            EscapingWriter {
                out: f,
                json: self.json
            },
            "{}",
            self.text
        )
    }
}

/// Writes what it is given to `out`, escaped (see [`Escaped`]).
struct EscapingWriter<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    json: bool,
}

impl EscapingWriter<'_, '_> {
    /// Writes `ch`, which needs escaping, in the writer's notation.
    fn escape(&mut self, ch: char) -> fmt::Result {
        if !self.json {
            return write!(self.out, "\\u{{{:x}}}", u32::from(ch));
        }
        match ch {
            '"' => self.out.write_str("\\\""),
            '\\' => self.out.write_str("\\\\"),
            '\n' => self.out.write_str("\\n"),
            '\r' => self.out.write_str("\\r"),
            '\t' => self.out.write_str("\\t"),
            _ => {
                for unit in ch.encode_utf16(&mut [0; 2]) {
                    write!(self.out, "\\u{unit:04x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Log lines and events are mostly printable ASCII: runs of it are skipped in one
        // pass, a comparison or two a byte, and go out whole. Only the other bytes are
        // looked at: ASCII to escape, or the start of a character to decode and look up.
        let json = self.json;
        let printable =
            |byte: u8| (0x20..0x7f).contains(&byte) && !(json && matches!(byte, b'"' | b'\\'));
        let bytes = s.as_bytes();
        let (mut plain, mut at) = (0, 0);
        while let Some(skip) = bytes[at..].iter().position(|&byte| !printable(byte)) {
            at += skip;
            // `at` is at a character boundary: it moves by whole characters.
            let Some(ch) = s[at..].chars().next() else {
                break;
            };
            if ch.is_ascii() || is_escaped(ch) {
                self.out.write_str(&s[plain..at])?;
                self.escape(ch)?;
                plain = at + ch.len_utf8();
            }
            at += ch.len_utf8();
        }
        self.out.write_str(&s[plain..])
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;

    fn try_from(name: &str) -> Result<Name, NameError> {
        Name::new(name)
    }
}

impl core::str::FromStr for Name {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Name, NameError> {
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

/// Identifies one call between two phones, so that a message about another call (late,
/// duplicated or forged) is recognised and ignored.
///
/// A 32-bit number chosen at random by the caller, written on the wire as exactly 8
/// hexadecimal digits (`call=0badcafe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u32);

impl CallId {
    /// Wraps a number.
    pub const fn new(id: u32) -> CallId {
        CallId(id)
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Reads exactly 8 hexadecimal digits, in either case.
    pub fn parse(text: &str) -> Option<CallId> {
        if text.len() != 8 {
            return None;
        }
        let mut id = 0u32;
        for byte in text.bytes() {
            id = (id << 4) | char::from(byte).to_digit(16)?;
        }
        Some(CallId(id))
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Which protocol the peer of a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Parlo: call ids, RINGING, acknowledgements, RTP media.
    Parlo,
    /// The original project: bare `START <name>`, `ACCEPT`, `REJECT`, `CLOSE`, and raw
    /// PCM media. It knows nothing of RINGING, BUSY, CLOSED or ACK.
    Original,
}

impl Dialect {
    /// The dialect's name in events and `status`.
    pub const fn name(self) -> &'static str {
        match self {
            Dialect::Parlo => "parlo",
            Dialect::Original => "original",
        }
    }
}

/// An audio codec a call can use; both carry 8 kHz mono audio in 512-sample frames.
///
/// L16 is the baseline every phone speaks (the original's raw PCM is L16 too): a START
/// that offers nothing, or an ACCEPT that names nothing, means L16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// Linear 16-bit PCM (RFC 3551 L16, network byte order; raw PCM with an original
    /// peer).
    L16,
    /// G.711 µ-law, 8 bits per sample (RFC 3551 PCMU, payload type 0).
    Pcmu,
}

impl Codec {
    /// Every codec, in the order a [`CodecSet`] lists them.
    pub const ALL: [Codec; 2] = [Codec::L16, Codec::Pcmu];

    /// The codec's name on the wire, in specs and in events.
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

/// A set of codecs: what a caller offers in `codecs=`.
///
/// Unordered: the callee picks, by its own preference, among those offered; it is always
/// written L16 first. An offer that names no codec Parlo knows (`codecs=OPUS`) is the
/// empty set, written back as `codecs=`.
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
        Codec::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Codec> for CodecSet {
    fn from_iter<I: IntoIterator<Item = Codec>>(iter: I) -> CodecSet {
        iter.into_iter().fold(CodecSet::EMPTY, CodecSet::with)
    }
}

/// Writes codecs as a comma-separated list.
fn write_list(f: &mut fmt::Formatter<'_>, codecs: impl Iterator<Item = Codec>) -> fmt::Result {
    for (i, codec) in codecs.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        f.write_str(codec.name())?;
    }
    Ok(())
}

impl fmt::Display for CodecSet {
    /// `L16,PCMU` (empty for the empty set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, self.iter())
    }
}

/// The codecs a phone accepts, most preferred first: never empty, no repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Preference(heapless::Vec<Codec, { Codec::ALL.len() }>);

impl Preference {
    /// `codecs` in that order, or `None` if the list is empty or names a codec twice.
    pub fn new(codecs: &[Codec]) -> Option<Preference> {
        let mut list = heapless::Vec::new();
        for &codec in codecs {
            if list.contains(&codec) {
                return None;
            }
            list.push(codec).ok()?;
        }
        (!list.is_empty()).then_some(Preference(list))
    }

    /// The codecs, most preferred first.
    pub fn iter(&self) -> impl Iterator<Item = Codec> + '_ {
        self.0.iter().copied()
    }

    /// The codecs as a set (what a caller offers).
    pub fn set(&self) -> CodecSet {
        self.iter().collect()
    }

    /// The callee's choice for `offer` (`None`: the caller said nothing, i.e. L16): the
    /// first codec of this preference that the offer holds, or L16 — the baseline every
    /// phone receives — when they share none.
    pub fn choose(&self, offer: Option<CodecSet>) -> Codec {
        let offer = offer.unwrap_or(CodecSet::only(Codec::L16));
        self.iter()
            .find(|c| offer.contains(*c))
            .unwrap_or(Codec::L16)
    }
}

impl Default for Preference {
    /// `L16,PCMU`: lossless first (the bandwidth of one call, 128 kbit/s, is nothing on
    /// a LAN), µ-law when the caller asks for it alone.
    fn default() -> Preference {
        Preference(heapless::Vec::from_iter(Codec::ALL))
    }
}

impl fmt::Display for Preference {
    /// `L16,PCMU`, in preference order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, self.iter())
    }
}

/// A static X25519 public key: who a phone (or the directory server) is. Its text form is
/// standard base64 with padding (44 characters), as WireGuard writes keys; people compare
/// the shorter fingerprint `parlo-net` derives from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; PublicKey::LEN]);

/// Why a text is not a [`PublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not 44 characters.
    Length(usize),
    /// A character outside base64, or padding out of place.
    NotBase64,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "a key is 44 characters of base64, not {n} (e.g. as `parlo-client id` prints it)"
            ),
            KeyError::NotBase64 => f.write_str(
                "a key is 44 characters of base64 (A-Z a-z 0-9 + /, ending in =), \
                 as `parlo-client id` prints it",
            ),
        }
    }
}

impl core::error::Error for KeyError {}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_value(byte: u8) -> Option<u32> {
    let value = match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

impl PublicKey {
    /// Bytes in a key.
    pub const LEN: usize = 32;
    /// Characters in its text form.
    pub const TEXT_LEN: usize = 44;

    /// Reads the text form: 44 characters of standard base64, the last one `=`, and the
    /// bits the padding leaves over zero (so that each key has exactly one text form).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = text.as_bytes();
        if bytes.len() != Self::TEXT_LEN {
            return Err(KeyError::Length(text.chars().count()));
        }
        if bytes[43] != b'=' {
            return Err(KeyError::NotBase64);
        }
        let mut key = [0u8; Self::LEN];
        // 10 groups of 4 characters make 30 bytes; the last 3 characters make 2 bytes
        // (16 bits of their 18; the 2 left over must be zero).
        for (group, out) in bytes[..40].chunks_exact(4).zip(key.chunks_exact_mut(3)) {
            let mut bits = 0u32;
            for &byte in group {
                bits = bits << 6 | base64_value(byte).ok_or(KeyError::NotBase64)?;
            }
            out.copy_from_slice(&bits.to_be_bytes()[1..]);
        }
        let mut bits = 0u32;
        for &byte in &bytes[40..43] {
            bits = bits << 6 | base64_value(byte).ok_or(KeyError::NotBase64)?;
        }
        if bits & 0b11 != 0 {
            return Err(KeyError::NotBase64);
        }
        key[30] = (bits >> 10) as u8;
        key[31] = (bits >> 2) as u8;
        Ok(PublicKey(key))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; Self::TEXT_LEN];
        let chars = |bits: u32, n: usize, out: &mut [u8]| {
            for (i, slot) in out.iter_mut().take(n).enumerate() {
                *slot = BASE64[(bits >> (18 - 6 * i) & 0x3f) as usize];
            }
        };
        for (bytes, out) in self.0.chunks(3).zip(text.chunks_exact_mut(4)) {
            let bits = bytes
                .iter()
                .enumerate()
                .fold(0u32, |bits, (i, &b)| bits | u32::from(b) << (16 - 8 * i));
            chars(bits, bytes.len() + 1, out);
        }
        text[43] = b'=';
        // Every byte written is ASCII from the alphabet above, or '='.
        f.write_str(core::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl core::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PublicKey::parse(text)
    }
}

/// One signalling message between phones. `parlo-net` reads and writes it on the wire;
/// the call machine takes it in and asks for it to be sent.
///
/// A message without a call id is in the [`Dialect::Original`] dialect: what a phone of
/// the original project sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
        /// The codecs the caller offers; `None` when it does not say (L16).
        codecs: Option<CodecSet>,
        /// The conference this call is a leg of (`conf=`); `None` for an ordinary call.
        /// Only Parlo STARTs carry it: a phone of the original project cannot be in a
        /// conference.
        conf: Option<ConfId>,
    },
    /// The callee is alerting its user; the caller stops retransmitting `START`.
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The callee answers.
    Accept {
        /// The call; `None` from (or to) an original peer.
        call: Option<CallId>,
        /// The codec the callee chose; `None` when it does not say (L16).
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

impl Message {
    /// A Parlo call request: `START <caller> call=<id> v=2 codecs=<offer>`, for an
    /// ordinary call (no conference).
    pub fn start(caller: Name, call: CallId, offer: CodecSet) -> Message {
        Message::Start {
            caller,
            call: Some(call),
            version: Some(VERSION),
            codecs: Some(offer),
            conf: None,
        }
    }

    /// A call request as the original sends it: `START <caller>`.
    pub fn start_original(caller: Name) -> Message {
        Message::Start {
            caller,
            call: None,
            version: None,
            codecs: None,
            conf: None,
        }
    }

    /// The message's keyword on the wire.
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

    /// The dialect of the message: [`Dialect::Parlo`] when it carries a call id,
    /// [`Dialect::Original`] when it does not (a version alone does not make a Parlo call:
    /// without an id, nothing can be matched to it).
    pub const fn dialect(&self) -> Dialect {
        match self.call_id() {
            Some(_) => Dialect::Parlo,
            None => Dialect::Original,
        }
    }

    /// Whether the message is in the original project's dialect.
    pub const fn is_original(&self) -> bool {
        matches!(self.dialect(), Dialect::Original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod keys {
        use super::*;
        use std::string::ToString;

        #[test]
        fn text_form_is_standard_base64_with_padding() {
            // 32 zero bytes, and 0..32, as `base64` (coreutils) writes them.
            let zero = PublicKey([0; 32]);
            assert_eq!(
                zero.to_string(),
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            );
            let mut bytes = [0u8; 32];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = i as u8;
            }
            let counting = PublicKey(bytes);
            assert_eq!(
                counting.to_string(),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            );
            assert_eq!(PublicKey::parse(&counting.to_string()), Ok(counting));
            assert_eq!(PublicKey::parse(&zero.to_string()), Ok(zero));
            let all = PublicKey([0xff; 32]);
            assert_eq!(PublicKey::parse(&all.to_string()), Ok(all));
        }

        #[test]
        fn anything_else_is_refused() {
            let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
            assert_eq!(PublicKey::parse(""), Err(KeyError::Length(0)));
            assert_eq!(PublicKey::parse(&good[..43]), Err(KeyError::Length(43)));
            // Padding missing or misplaced, a character outside the alphabet, URL-safe
            // base64, and leftover bits set (a second spelling of the same key).
            for bad in [
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH=8=",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*=",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd_h8=",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",
            ] {
                assert_eq!(PublicKey::parse(bad), Err(KeyError::NotBase64), "{bad}");
            }
        }
    }

    mod escaping {
        use super::*;
        use std::string::{String, ToString};

        fn text(s: &str) -> String {
            Escaped::text(s).to_string()
        }

        fn json(s: &str) -> String {
            Escaped::json(s).to_string()
        }

        #[test]
        fn ordinary_text_is_left_alone() {
            for plain in [
                "",
                "connection refused; retrying in 1 s",
                "name \"bob\" = taken, 100% (a\\b)",
                "café Zürich ŁÓDŹ Ελλάδα 東京 مرحبا 😀",
            ] {
                assert_eq!(text(plain), plain);
            }
            assert_eq!(json("café 東京 😀 a=b"), "café 東京 😀 a=b");
        }

        #[test]
        fn controls_and_invisible_characters_are_written_visibly() {
            let cases = [
                ("\u{1b}[2J", "\\u{1b}[2J", "\\u001b[2J"),
                ("bell\u{7}", "bell\\u{7}", "bell\\u0007"),
                ("\u{0}", "\\u{0}", "\\u0000"),
                ("del\u{7f}", "del\\u{7f}", "del\\u007f"),
                ("csi\u{9b}31m", "csi\\u{9b}31m", "csi\\u009b31m"),
                ("nel\u{85}", "nel\\u{85}", "nel\\u0085"),
                ("rlo\u{202e}txt", "rlo\\u{202e}txt", "rlo\\u202etxt"),
                ("zw\u{200b}sp", "zw\\u{200b}sp", "zw\\u200bsp"),
                ("\u{feff}bom", "\\u{feff}bom", "\\ufeffbom"),
                (
                    "ls\u{2028}ps\u{2029}",
                    "ls\\u{2028}ps\\u{2029}",
                    "ls\\u2028ps\\u2029",
                ),
                ("tag\u{e0041}", "tag\\u{e0041}", "tag\\udb40\\udc41"),
                ("a\nb\rc\td", "a\\u{a}b\\u{d}c\\u{9}d", "a\\nb\\rc\\td"),
            ];
            for (raw, as_text, as_json) in cases {
                assert_eq!(text(raw), as_text, "{raw:?}");
                assert_eq!(json(raw), as_json, "{raw:?}");
                for escaped in [text(raw), json(raw)] {
                    assert!(!escaped.chars().any(is_escaped), "{escaped:?}");
                }
            }
        }

        #[test]
        fn json_quotes_and_backslashes_are_escaped_in_json_only() {
            assert_eq!(json(r#"say "hi" \ bye"#), r#"say \"hi\" \\ bye"#);
            assert_eq!(text(r#"say "hi" \ bye"#), r#"say "hi" \ bye"#);
        }

        #[test]
        fn any_display_is_escaped_across_its_pieces() {
            let name = "bo\u{1b}b";
            let formatted = Escaped::text(format_args!("{name}: {}\u{7}", 42)).to_string();
            assert_eq!(formatted, "bo\\u{1b}b: 42\\u{7}");
            // The wrapped value's own formatting is kept.
            assert_eq!(Escaped::text(format_args!("{:>4}", 7)).to_string(), "   7");
        }

        #[test]
        fn every_character_is_plain_or_escaped_in_both_notations() {
            // Over the whole of Unicode: nothing that `is_escaped` marks comes out raw,
            // and everything else comes out as it went in.
            let mut buf = [0u8; 4];
            for ch in (0..=0x10_ffff).filter_map(char::from_u32) {
                let s: &str = ch.encode_utf8(&mut buf);
                let (t, j) = (text(s), json(s));
                if is_escaped(ch) {
                    assert!(t.starts_with("\\u{") && t.is_ascii(), "{ch:?} -> {t}");
                    assert!(j.starts_with('\\') && j.is_ascii(), "{ch:?} -> {j}");
                } else {
                    assert_eq!(t, s);
                    if ch != '"' && ch != '\\' {
                        assert_eq!(j, s);
                    }
                }
            }
        }
    }

    #[test]
    fn names_follow_the_rule() {
        for valid in [
            "door",
            "K",
            "Küche",
            "门铃",
            "d'Arc",
            "a.b_c-1",
            "\u{1F6AA}",
            "n".repeat(32).as_str(),
            "é".repeat(16).as_str(),
        ] {
            let checked = Name::new(valid).expect(valid);
            assert_eq!(checked.as_str(), valid);
            assert_eq!(Name::from_bytes(valid.as_bytes()), Ok(checked.clone()));
            assert_eq!(valid.parse::<Name>(), Ok(checked));
        }
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(
            Name::new(&"n".repeat(33)),
            Err(NameError::TooLong { len: 33 })
        );
        // 17 two-byte characters: 34 bytes.
        assert_eq!(
            Name::new(&"é".repeat(17)),
            Err(NameError::TooLong { len: 34 })
        );
        assert_eq!(Name::new("a=b"), Err(NameError::Equals));
        assert_eq!(Name::new("al ice"), Err(NameError::Whitespace { ch: ' ' }));
        for ch in [
            '\0',
            '\u{7f}',
            '\u{9b}',
            '\u{1b}',
            '\u{7}',
            '\u{ad}',
            '\u{61c}',
            '\u{200b}',
            '\u{202e}',
            '\u{2066}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            let text: std::string::String = ['a', ch, 'b'].into_iter().collect();
            assert_eq!(
                Name::new(&text),
                Err(NameError::Invisible { ch }),
                "{text:?}"
            );
            assert!(!is_name_char(ch));
        }
        // NEL (U+0085) is both a C1 control and whitespace.
        assert_eq!(
            Name::new("a\u{85}b"),
            Err(NameError::Whitespace { ch: '\u{85}' })
        );
        assert_eq!(Name::from_bytes(b"al\xffce"), Err(NameError::NotUtf8));
        assert_eq!(
            Name::from_bytes(&[b'n'; 40]),
            Err(NameError::TooLong { len: 40 })
        );
    }

    #[test]
    fn name_errors_say_what_is_wrong() {
        use std::string::ToString;
        assert_eq!(NameError::Empty.to_string(), "name is empty");
        assert_eq!(
            NameError::Whitespace { ch: ' ' }.to_string(),
            "name contains whitespace"
        );
        assert_eq!(
            NameError::Invisible { ch: '\u{61c}' }.to_string(),
            "name contains a control or invisible character (U+061C)"
        );
    }

    #[test]
    fn call_ids_read_eight_hex_digits_in_either_case() {
        use std::string::ToString;
        assert_eq!(CallId::parse("0BaDcAfE"), Some(CallId(0x0bad_cafe)));
        assert_eq!(CallId::parse("0badcaf"), None);
        assert_eq!(CallId::parse("0badcafe0"), None);
        assert_eq!(CallId::parse("+badcafe"), None);
        assert_eq!(CallId(1).to_string(), "00000001");
    }

    #[test]
    fn dialect_follows_call_id_and_version() {
        let bob = Name::new("bob").expect("valid");
        assert_eq!(
            Message::start_original(bob.clone()).dialect(),
            Dialect::Original
        );
        assert_eq!(
            Message::start(bob, CallId(1), CodecSet::ALL).dialect(),
            Dialect::Parlo
        );
        assert_eq!(Message::Close { call: None }.dialect(), Dialect::Original);
        assert_eq!(Message::Ack { call: CallId(2) }.dialect(), Dialect::Parlo);
    }

    #[test]
    fn frame_is_64_ms() {
        assert_eq!(FRAME_MS, 64);
    }
}
