//! The directory protocol: requests, responses, and the rules that decide between them.
//!
//! A phone keeps one TCP connection to the directory server, registers its name on it, and
//! looks other names up (docs/protocol.md, section 2). The wire format is the original
//! project's: one JSON object per request, one JSON object per response.
//!
//! | request | responses |
//! | --- | --- |
//! | `{"command":"REG","name":N}` (+ `"port":P`, default 5001) | `{"ack":"Registered successfully","server":"parlo"}` · `{"ack":"Error Registering","reason":..}` · `{"ack":"Error","reason":..}` |
//! | `{"command":"GET","name":N}` | `{"ip":"A.B.C.D","port":P,"dialect":D}` (+ `"key":K`) · `{"ip":"None"}` |
//! | `{"command":"DISCONNECT","name":N}` | `{"ack":"Disconnected"}` · `{"ack":"Error","reason":..}` |
//! | `{"command":"LIST"}` (+ `"after":N`, or `"offset":K`) | `{"users":[N,..],"more":bool}` |
//! | `{"command":"PING"}` | `{"ack":"PONG"}` |
//!
//! Parlo's additions to the original's answers are fields its `json.loads` ignores:
//! `"server":"parlo"` says the server is Parlo's (so a phone may send it `PING` and `LIST`,
//! which the original server does not survive), and a GET answer's `"dialect"` says which
//! peer protocol the name's phone speaks: `"parlo"` when its REG carried a `"port"` (Parlo
//! phones always send one), `"original"` when it had none (a phone of the original
//! project); its `"key"` gives the public key the name's phone proved, when it registered
//! over an encrypted connection.
//!
//! Who calls what, in order, for each connection (the server is the shell around this):
//! 1. [`crate::framing::FrameBuffer`] cuts the stream into frames;
//! 2. [`Request::parse`] turns a frame into a [`Request`] or a [`RequestError`];
//! 3. [`Session::handle_request`] applies the request to the [`Registry`] (the server's
//!    store) and returns the [`Response`]; errors become [`Response::Error`];
//! 4. [`Response::encode`] writes the response bytes, at most [`MAX_RESPONSE`];
//! 5. when the connection ends for any reason, [`Session::handle_close`] removes its name.
//!
//! The phone's side is [`client::Client`], the sans-IO directory client: it encodes
//! [`Request`]s, parses each response into a [`Reply`] and keeps the connection's rules.
//!
//! The rules live here and nowhere else: one registration per connection; a name belongs
//! to the connection that registered it until that connection says DISCONNECT or ends,
//! and to the first key that registered it for good (its REG rules are
//! [`Session::handle_request`]'s); a
//! name follows Parlo's one naming rule ([`Name`]: 1–32 bytes of printable UTF-8, no
//! whitespace, control or invisible formatting character, no `=`); LIST answers in
//! pages that fit one response. Nothing here reads a clock or a socket, the codecs and the
//! server's rules do not allocate, and no input can make any of it panic (the request
//! parser has a fuzz target, the reply parser property tests).

use core::fmt;
use core::net::IpAddr;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

use crate::framing::MAX_REQUEST;

pub mod client;

pub use parlo_fsm::{Dialect, Escaped, MAX_NAME_LEN, Name, NameError, PublicKey};

/// The UDP port a phone listens on when its REG does not say (the original's fixed port).
pub const DEFAULT_PEER_PORT: u16 = 5001;

/// The most names one LIST response carries (fewer when long names fill the response).
pub const LIST_PAGE: usize = 32;

/// The furthest a LIST by `"offset"` may start: the most names a phone of Parlo's first
/// version gathers ([`client::LIST_MAX_NAMES`]), so the furthest it ever asks for. Paging
/// by offset walks past the names it skips; paging by `"after"` does not, and has no such
/// limit.
pub const LIST_MAX_OFFSET: u32 = 1_000;

/// The longest encoded response, `\n` included: fits the original client's `recv(1024)`.
pub const MAX_RESPONSE: usize = 1024;

/// How many bytes of an unknown command are echoed back in the error.
const COMMAND_ECHO: usize = 16;

/// Everything that can be wrong with a request, from the bytes up to its fields.
///
/// `Display` gives the text sent back as the response's `"reason"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Bytes outside a JSON object: a request starts with `{`.
    NotAnObject,
    /// The request is longer than [`MAX_REQUEST`] bytes.
    TooLong,
    /// A raw newline inside a string: the client's line ended before the string did.
    UnterminatedString,
    /// The object is not valid JSON, or a field has the wrong type; says what was found.
    Malformed(&'static str),
    /// The object has no `"command"` field.
    MissingCommand,
    /// `"command"` is none of REG, GET, DISCONNECT, LIST, PING (echoes the first bytes).
    UnknownCommand(heapless::String<COMMAND_ECHO>),
    /// REG, GET or DISCONNECT without a `"name"` field.
    MissingName,
    /// The name breaks the naming rule (see [`Name`]).
    BadName(NameError),
    /// `"port"` is not between 1 and 65535 (the value sent).
    BadPort(i64),
    /// `"offset"` is negative or beyond 2^32 (the value sent).
    BadOffset(i64),
    /// `"after"` breaks the naming rule: it is the last name of a LIST page.
    BadCursor(NameError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotAnObject => {
                f.write_str("not a JSON object (a request starts with '{')")
            }
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::UnterminatedString => f.write_str("line ended inside a string"),
            RequestError::Malformed(what) => write!(f, "malformed JSON: {what}"),
            RequestError::MissingCommand => f.write_str("missing \"command\""),
            // The echo is the client's text: escaped wherever the reason goes (the
            // answer, a log).
            RequestError::UnknownCommand(command) => write!(
                f,
                "unknown command \"{}\" (expected REG, GET, DISCONNECT, LIST or PING)",
                Escaped::text(command)
            ),
            RequestError::MissingName => f.write_str("missing \"name\""),
            RequestError::BadName(error) => write!(f, "{error}"),
            RequestError::BadPort(port) => write!(f, "port {port} is not between 1 and 65535"),
            RequestError::BadOffset(offset) => {
                write!(f, "offset {offset} is not between 0 and 4294967295")
            }
            RequestError::BadCursor(error) => write!(f, "\"after\" is not a name: {error}"),
        }
    }
}

impl core::error::Error for RequestError {}

/// Where a registered phone can be reached: the address its TCP connection comes from and
/// the UDP port it announced, and which peer protocol it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The connection's peer address as the server sees it.
    pub ip: IpAddr,
    /// The phone's UDP port for calls.
    pub port: u16,
    /// The phone's dialect: [`Dialect::Parlo`] when its REG carried a `"port"`,
    /// [`Dialect::Original`] when it had none. `None` when the server did not say (an
    /// original server's GET answer); a Parlo server always knows.
    pub dialect: Option<Dialect>,
    /// The key the phone proved it holds when it registered (over an encrypted
    /// connection); `None` for a plain registration, or from a server that does not say.
    pub key: Option<PublicKey>,
}

impl Contact {
    /// What a REG says about its phone: a REG with a `"port"` comes from a Parlo phone
    /// (they always send one), a REG without from a phone of the original project, which
    /// listens on [`DEFAULT_PEER_PORT`].
    pub fn registered(ip: IpAddr, port: Option<u16>) -> Contact {
        Contact {
            ip,
            port: port.unwrap_or(DEFAULT_PEER_PORT),
            dialect: Some(match port {
                Some(_) => Dialect::Parlo,
                None => Dialect::Original,
            }),
            key: None,
        }
    }

    /// This contact, proved to hold `key` (or not, with `None`).
    pub fn with_key(self, key: Option<PublicKey>) -> Contact {
        Contact { key, ..self }
    }
}

/// One request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Register `name` for this connection, reachable on UDP `port`; `None` when the REG
    /// has no `"port"` (an original phone, on [`DEFAULT_PEER_PORT`]).
    Reg { name: Name, port: Option<u16> },
    /// Where is `name`?
    Get { name: Name },
    /// Remove this connection's registration of `name`.
    Disconnect { name: Name },
    /// The registered names in name order: those after `after` when it is given (the
    /// cursor: the last name of the previous page), else from the `offset`-th on (how
    /// phones of Parlo's first version page; `offset` is ignored when `after` is given).
    List { after: Option<Name>, offset: u32 },
    /// Are you there?
    Ping,
    /// What is the server's public key? Asked in plain JSON by a phone that knows no key
    /// for this server yet, to pin the key and then connect through Noise.
    Key,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Reg { name, port } => {
                write!(f, "REG {name:?} port {}", port.unwrap_or(DEFAULT_PEER_PORT))
            }
            Request::Get { name } => write!(f, "GET {name:?}"),
            Request::Disconnect { name } => write!(f, "DISCONNECT {name:?}"),
            Request::List {
                after: Some(after), ..
            } => write!(f, "LIST after {after:?}"),
            Request::List {
                after: None,
                offset,
            } => write!(f, "LIST from {offset}"),
            Request::Ping => f.write_str("PING"),
            Request::Key => f.write_str("KEY"),
        }
    }
}

/// A string field copied out of the JSON, unescaped, keeping at most `N` bytes but
/// remembering how long it really was.
#[derive(Debug, Default)]
struct Text<const N: usize> {
    kept: heapless::String<N>,
    len: usize,
}

impl<const N: usize> Text<N> {
    /// The whole string, or its length when it did not fit.
    fn whole(&self) -> Result<&str, usize> {
        if self.len == self.kept.len() {
            Ok(self.kept.as_str())
        } else {
            Err(self.len)
        }
    }
}

impl<'de, const N: usize> Deserialize<'de> for Text<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for TextVisitor<N> {
            type Value = Text<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<N>, E> {
                let mut kept = heapless::String::new();
                for c in s.chars() {
                    if kept.push(c).is_err() {
                        break;
                    }
                }
                Ok(Text { kept, len: s.len() })
            }
        }
        deserializer.deserialize_str(TextVisitor::<N>)
    }
}

/// The fields of a request object as they arrive; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Wire {
    command: Option<Text<COMMAND_ECHO>>,
    name: Option<Text<MAX_NAME_LEN>>,
    port: Option<i64>,
    offset: Option<i64>,
    after: Option<Text<MAX_NAME_LEN>>,
}

impl Request {
    /// How much of the server's time answering this takes, in units of one ordinary
    /// request (a server shares its time out in these units, [`Session`] being the rule
    /// that makes them true): a LIST by offset walks past the names it skips, and every
    /// [`LIST_PAGE`] names walked count as one more request, so a client paging by offset
    /// gets no more of the server's time than one paging by cursor.
    pub fn work(&self) -> u32 {
        match self {
            Request::List {
                after: None,
                offset,
            } => 1 + (*offset).min(LIST_MAX_OFFSET) / LIST_PAGE as u32,
            _ => 1,
        }
    }

    /// Parses one JSON object (a [`crate::framing::Frame::Object`]).
    ///
    /// Strings are unescaped (`"\u00e9"` is `é`); fields other than `command`, `name`,
    /// `port`, `offset` and `after` are ignored, so clients may add their own.
    pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
        // The JSON parser refuses escaped surrogate pairs: join them and try again. Only
        // then, so that the common request pays nothing for it.
        match Request::parse_joined(bytes) {
            Err(RequestError::Malformed(_)) if has_surrogate_escape(bytes) => {
                let mut joined = [0u8; MAX_REQUEST];
                match join_surrogate_pairs(bytes, &mut joined) {
                    Some(len) => Request::parse_joined(&joined[..len]),
                    None => Request::parse_joined(bytes),
                }
            }
            parsed => parsed,
        }
    }

    /// [`Request::parse`], once surrogate pairs are joined.
    fn parse_joined(bytes: &[u8]) -> Result<Request, RequestError> {
        let mut unescaped = [0u8; MAX_REQUEST];
        let (wire, _) = serde_json_core::from_slice_escaped::<Wire>(bytes, &mut unescaped)
            .map_err(|e| RequestError::Malformed(describe(&e)))?;
        let command = wire.command.ok_or(RequestError::MissingCommand)?;
        let name = || -> Result<Name, RequestError> {
            let text = wire.name.as_ref().ok_or(RequestError::MissingName)?;
            let text = text
                .whole()
                .map_err(|len| RequestError::BadName(NameError::TooLong { len }))?;
            Name::new(text).map_err(RequestError::BadName)
        };
        match command.whole() {
            Ok("REG") => {
                let port = match wire.port {
                    None => None,
                    Some(port) => match u16::try_from(port) {
                        Ok(port) if port != 0 => Some(port),
                        _ => return Err(RequestError::BadPort(port)),
                    },
                };
                Ok(Request::Reg {
                    name: name()?,
                    port,
                })
            }
            Ok("GET") => Ok(Request::Get { name: name()? }),
            Ok("KEY") => Ok(Request::Key),
            Ok("DISCONNECT") => Ok(Request::Disconnect { name: name()? }),
            Ok("LIST") => {
                let offset = match wire.offset {
                    None => 0,
                    Some(offset) => {
                        u32::try_from(offset).map_err(|_| RequestError::BadOffset(offset))?
                    }
                };
                let after = match &wire.after {
                    None => None,
                    Some(text) => {
                        let text = text
                            .whole()
                            .map_err(|len| RequestError::BadCursor(NameError::TooLong { len }))?;
                        Some(Name::new(text).map_err(RequestError::BadCursor)?)
                    }
                };
                Ok(Request::List { after, offset })
            }
            Ok("PING") => Ok(Request::Ping),
            _ => Err(RequestError::UnknownCommand(command.kept)),
        }
    }
}

/// Rewrites each escaped UTF-16 surrogate pair (`\ud83d\ude00`) in the strings of `input`
/// as the raw UTF-8 of its character, into `out`; returns the length written, or `None`
/// when `input` holds no such pair (or does not fit `out`) and is to be parsed as it is.
///
/// JSON writes characters beyond the Basic Multilingual Plane as such pairs, and so does
/// the original client (Python's `json.dumps` escapes every non-ASCII character), but the
/// JSON parser decodes one `\uXXXX` at a time and refuses a lone surrogate. A lone or
/// reversed surrogate is left as it is, and refused by the parser.
fn join_surrogate_pairs(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if !has_surrogate_escape(input) || input.len() > out.len() {
        return None;
    }
    let (mut read, mut written, mut in_string) = (0, 0, false);
    while let Some(&byte) = input.get(read) {
        if in_string && byte == b'\\' {
            if let Some(ch) = surrogate_pair(&input[read..]) {
                // 12 bytes in, at most 4 out: `written` never overtakes `read`.
                written += ch.encode_utf8(&mut out[written..]).len();
                read += 12;
                continue;
            }
            // Any other escape is copied whole, so that `\"` does not end the string.
            let end = (read + 2).min(input.len());
            out[written..written + end - read].copy_from_slice(&input[read..end]);
            written += end - read;
            read = end;
            continue;
        }
        if byte == b'"' {
            in_string = !in_string;
        }
        out[written] = byte;
        written += 1;
        read += 1;
    }
    Some(written)
}

/// Whether `input` may hold an escaped surrogate (`\uD…`).
fn has_surrogate_escape(input: &[u8]) -> bool {
    input
        .windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'))
}

/// The character of a high and a low surrogate written `\uD8xx\uDCxx` at the start of
/// `text`.
fn surrogate_pair(text: &[u8]) -> Option<char> {
    let unit = |escape: &[u8]| -> Option<u32> {
        let digits = escape.strip_prefix(b"\\u")?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(core::str::from_utf8(digits).ok()?, 16).ok()
    };
    let high = unit(text.get(..6)?)?;
    let low = unit(text.get(6..12)?)?;
    if !(0xD800..0xDC00).contains(&high) || !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
}

/// A short, user-facing description of a JSON error.
fn describe(error: &serde_json_core::de::Error) -> &'static str {
    use serde_json_core::de::Error as E;
    match error {
        E::EofWhileParsingList
        | E::EofWhileParsingObject
        | E::EofWhileParsingString
        | E::EofWhileParsingNumber
        | E::EofWhileParsingValue => "unexpected end of the object",
        E::ExpectedColon => "expected ':' after a key",
        E::ExpectedListCommaOrEnd => "expected ',' or ']'",
        E::ExpectedObjectCommaOrEnd => "expected ',' or '}'",
        E::ExpectedSomeIdent => "expected true, false or null",
        E::ExpectedSomeValue => "expected a value",
        E::InvalidNumber => "invalid number (port and offset are whole numbers)",
        E::InvalidType => {
            "wrong type (command, name and after are strings, port and offset numbers)"
        }
        E::InvalidUnicodeCodePoint => "invalid UTF-8 or unicode escape",
        E::InvalidEscapeSequence => "invalid escape sequence",
        E::EscapedStringIsTooLong => "string too long",
        E::KeyMustBeAString => "object key is not a string",
        E::TrailingCharacters => "trailing characters after the object",
        E::TrailingComma => "trailing comma",
        E::CustomError => "duplicate or unexpected field",
        _ => "invalid JSON",
    }
}

/// Why a request was refused: the `"reason"` of an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The request itself is wrong.
    Request(RequestError),
    /// REG of another name on a connection that already holds this one.
    AlreadyRegistered(Name),
    /// DISCONNECT of a name another connection registered.
    NotOwner(Name),
    /// DISCONNECT of a name nobody registered.
    NotRegistered(Name),
    /// The server holds as many connections as it may; this one is closed.
    ServerFull,
    /// The server holds as many connections from this one's source address as it takes
    /// from one address (that many); this one is closed.
    TooManyFromAddress(u32),
    /// A request began and did not end within this many seconds; the connection is closed.
    RequestTimeout(u32),
    /// Nothing arrived for this many seconds; the connection is closed.
    IdleTimeout(u32),
    /// The connection held no registration for this many seconds; it is closed.
    UnregisteredTimeout(u32),
    /// LIST by an offset beyond [`LIST_MAX_OFFSET`] (the offset sent).
    OffsetTooFar(u32),
    /// A REG on a plain connection, where the server registers only phones that prove a
    /// key (`--require-keys`).
    KeyRequired,
    /// A REG of a name the server cannot tell is free: its bindings of names to keys are
    /// not read yet (the database is unreadable), and the name may belong to a key.
    BindingsUnknown(Name),
    /// The connection's registration was taken over by the name's own key from another
    /// connection (the phone came back before this connection was found dead); it is
    /// closed.
    Displaced(Name),
    /// KEY asked of a server that has no key.
    NoKey,
    /// A Noise handshake that does not verify with this server's key.
    NotOurKey,
}

impl From<RequestError> for Reason {
    fn from(error: RequestError) -> Self {
        Reason::Request(error)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Request(error) => error.fmt(f),
            Reason::AlreadyRegistered(name) => write!(
                f,
                "this connection is already registered as \"{name}\" (DISCONNECT it first)"
            ),
            Reason::NotOwner(name) => {
                write!(f, "\"{name}\" was registered by another connection")
            }
            Reason::NotRegistered(name) => write!(f, "\"{name}\" is not registered"),
            Reason::ServerFull => f.write_str("server full, try again later"),
            Reason::TooManyFromAddress(most) => write!(
                f,
                "too many connections from your address (at most {most}), try again later"
            ),
            Reason::RequestTimeout(secs) => {
                write!(f, "request incomplete after {secs} s, closing")
            }
            Reason::IdleTimeout(secs) => write!(f, "nothing received for {secs} s, closing"),
            Reason::UnregisteredTimeout(secs) => {
                write!(f, "no registration for {secs} s, closing")
            }
            Reason::OffsetTooFar(offset) => write!(
                f,
                "offset {offset} is beyond {LIST_MAX_OFFSET}: page on with \"after\" and the \
                 last name of the previous page"
            ),
            Reason::KeyRequired => f.write_str(
                "this server registers only phones that prove a key (an encrypted \
                 connection); plain registrations are refused",
            ),
            Reason::BindingsUnknown(name) => write!(
                f,
                "the server cannot read its bindings of names to keys yet (database \
                 unreadable), so it cannot tell whether \"{name}\" belongs to a key; try \
                 again later"
            ),
            Reason::Displaced(name) => write!(
                f,
                "\"{name}\" was registered again by its key on another connection, closing"
            ),
            Reason::NoKey => f.write_str("this server has no key"),
            Reason::NotOurKey => f.write_str(
                "the Noise handshake is not for this server's key (see `parlo-server id`)",
            ),
        }
    }
}

/// One response. `'p` is the LIST page it may borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'p> {
    /// `{"ack":"Registered successfully","server":"parlo"}`
    Registered,
    /// `{"ack":"Error Registering","reason":..}`: another connection holds the name.
    NameTaken(Name),
    /// `{"ack":"Error Registering","reason":..}`: the name belongs to a key, and the REG
    /// came with another key or none.
    OwnedByAnotherKey(Name),
    /// `{"ip":"A.B.C.D","port":P,"dialect":D}` (no `"dialect"` when the contact has none)
    Found(Contact),
    /// `{"ip":"None"}`
    NotFound,
    /// `{"ack":"Disconnected"}`
    Disconnected,
    /// `{"users":[..],"more":bool}`
    Users { names: &'p [Name], more: bool },
    /// `{"ack":"PONG"}`
    Pong,
    /// `{"ack":"Error","reason":..}`
    Error(Reason),
    /// `{"server_key":K}`: the server's public key, the answer to KEY.
    Key(PublicKey),
}

impl fmt::Display for Response<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Registered => f.write_str("registered"),
            Response::NameTaken(name) => write!(f, "refused: {name:?} is taken"),
            Response::OwnedByAnotherKey(name) => {
                write!(f, "refused: {name:?} belongs to another key")
            }
            Response::Found(contact) => {
                write!(f, "found at {}:{}", contact.ip, contact.port)?;
                match contact.dialect {
                    Some(dialect) => write!(f, " ({})", dialect.name()),
                    None => Ok(()),
                }
            }
            Response::NotFound => f.write_str("not found"),
            Response::Disconnected => f.write_str("disconnected"),
            Response::Users { names, more } => {
                write!(
                    f,
                    "{} names{}",
                    names.len(),
                    if *more { ", more" } else { "" }
                )
            }
            Response::Pong => f.write_str("pong"),
            Response::Error(reason) => write!(f, "error: {reason}"),
            Response::Key(key) => write!(f, "key {key}"),
        }
    }
}

/// The output buffer was too small for the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response buffer smaller than {MAX_RESPONSE} bytes")
    }
}

impl Response<'_> {
    /// Writes the response as one JSON object and a `\n` into `out`; returns the length.
    ///
    /// Never longer than [`MAX_RESPONSE`]: an `out` of that size always suffices.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Out { buf: out, len: 0 };
        self.write(&mut w).map_err(|_| BufferTooSmall)?;
        w.raw("\n")?;
        Ok(w.len)
    }

    fn write(&self, w: &mut Out<'_>) -> Result<(), BufferTooSmall> {
        match self {
            // The original's answer, and the field that says this server is Parlo's.
            Response::Registered => w.raw(r#"{"ack":"Registered successfully","server":"parlo"}"#),
            Response::NameTaken(name) => {
                w.raw(r#"{"ack":"Error Registering","reason":""#)?;
                w.escaped(format_args!("\"{name}\" is already registered"))?;
                w.raw(r#""}"#)
            }
            Response::OwnedByAnotherKey(name) => {
                w.raw(r#"{"ack":"Error Registering","reason":""#)?;
                w.escaped(format_args!("\"{name}\" belongs to another key"))?;
                w.raw(r#""}"#)
            }
            Response::Found(contact) => {
                // A v4 peer seen through a dual-stack socket is reported as plain v4.
                let ip = match contact.ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(contact.ip, IpAddr::V4),
                    v4 => v4,
                };
                w.fmt(format_args!(r#"{{"ip":"{ip}","port":{}"#, contact.port))?;
                if let Some(dialect) = contact.dialect {
                    w.fmt(format_args!(r#","dialect":"{}""#, dialect.name()))?;
                }
                if let Some(key) = contact.key {
                    w.fmt(format_args!(r#","key":"{key}""#))?;
                }
                w.raw("}")
            }
            Response::NotFound => w.raw(r#"{"ip":"None"}"#),
            Response::Disconnected => w.raw(r#"{"ack":"Disconnected"}"#),
            Response::Users { names, more } => {
                w.raw(r#"{"users":["#)?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        w.raw(",")?;
                    }
                    w.raw("\"")?;
                    w.escaped(format_args!("{name}"))?;
                    w.raw("\"")?;
                }
                w.raw(if *more {
                    r#"],"more":true}"#
                } else {
                    r#"],"more":false}"#
                })
            }
            Response::Pong => w.raw(r#"{"ack":"PONG"}"#),
            Response::Error(reason) => {
                w.raw(r#"{"ack":"Error","reason":""#)?;
                w.escaped(format_args!("{reason}"))?;
                w.raw(r#""}"#)
            }
            Response::Key(key) => w.fmt(format_args!(r#"{{"server_key":"{key}"}}"#)),
        }
    }
}

/// Bytes of `{"users":[],"more":false}\n`: a LIST response without names.
const USERS_OVERHEAD: usize = 26;

/// Encoded length of `name` in a JSON list: its quotes and escapes (not the comma).
fn listed_len(name: &Name) -> usize {
    /// Counts what is written through it.
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(2);
    // Counting cannot fail: Count::write_str always returns Ok.
    let _ = fmt::write(&mut count, format_args!("{}", Escaped::json(name)));
    count.0
}

/// A cursor over the caller's output slice.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn raw(&mut self, s: &str) -> Result<(), BufferTooSmall> {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }

    fn fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), BufferTooSmall> {
        fmt::write(&mut Plain(self), args).map_err(|_| BufferTooSmall)
    }

    /// Writes `args` as the inside of a JSON string ([`Escaped::json`]: quotes,
    /// backslashes, control and invisible characters escaped).
    fn escaped(&mut self, args: fmt::Arguments<'_>) -> Result<(), BufferTooSmall> {
        self.fmt(format_args!("{}", Escaped::json(args)))
    }
}

struct Plain<'o, 'a>(&'o mut Out<'a>);

impl fmt::Write for Plain<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.raw(s).map_err(|_| fmt::Error)
    }
}

/// Who owns a name, as far as the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// No key: the name goes to whoever registers it first while nobody holds it, and to
    /// a key for good if that REG came with one.
    Free,
    /// The name is bound to this key: only a REG proving it gets the name.
    Key(PublicKey),
    /// The server cannot tell: its bindings are not read yet (the database is unreadable)
    /// and none binds this name in memory. Nobody gets the name meanwhile, so that a name
    /// is never handed to another key because its binding could not be read.
    Unknown,
}

/// The server's store of live registrations and of the names bound to keys, as the
/// protocol rules see it.
///
/// The rules in [`Session`] guarantee that `insert` is only called for a name that is free
/// or already this connection's, or by the name's own key (which takes it over from
/// another connection), `remove` only by the name's holder, and `bind` only for a name
/// whose owner is [`Owner::Free`].
pub trait Registry {
    /// Where `name` can be reached, if it is registered.
    fn find(&self, name: &Name) -> Option<Contact>;
    /// Registers `name` at `contact`, replacing the contact it had, if any.
    fn insert(&mut self, name: &Name, contact: Contact);
    /// Removes `name`.
    fn remove(&mut self, name: &Name);
    /// Fills `page` with registered names in name order: those after `after` (from the
    /// first when `None`), skipping the first `skip` of them; returns whether more names
    /// follow the page. [`Session`] asks for a `skip` above 0 only without `after`, and
    /// never above [`LIST_MAX_OFFSET`]: finding `after` is expected to cost what a lookup
    /// costs, whatever the number of names.
    fn page(&self, after: Option<&Name>, skip: u32, page: &mut Page) -> bool;
    /// Who owns `name` (see [`Owner`]).
    fn owner(&self, name: &Name) -> Owner;
    /// Binds `name` to `key` for good: from now on only `key` registers it (until an
    /// administrator releases it). Expected to survive a restart of the server.
    fn bind(&mut self, name: &Name, key: &PublicKey);
    /// Whether a REG must come with a key (on an encrypted connection): plain ones are
    /// refused.
    fn keys_required(&self) -> bool;
    /// The server's own public key, the answer to KEY; `None` for a server without one.
    fn server_key(&self) -> Option<PublicKey> {
        None
    }
}

/// A LIST page, borrowed by [`Response::Users`].
pub type Page = heapless::Vec<Name, LIST_PAGE>;

/// The protocol state of one connection: who is at the other end, if the connection
/// proved it (a key), and which name it registered, if any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Session {
    registered: Option<Name>,
    key: Option<PublicKey>,
    /// A name this session's REG took over from another connection, until polled.
    displaced: Option<Name>,
}

impl Session {
    /// A new plain connection's state (the original JSON protocol): no key, nothing
    /// registered.
    pub fn new() -> Self {
        Session::default()
    }

    /// A new encrypted connection's state, its peer having proved it holds `key`'s private
    /// half in the handshake: nothing registered yet.
    pub fn with_key(key: PublicKey) -> Self {
        Session {
            registered: None,
            key: Some(key),
            displaced: None,
        }
    }

    /// The key the peer proved it holds; `None` on a plain connection.
    pub fn key(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }

    /// The name this connection registered, if any.
    pub fn registered(&self) -> Option<&Name> {
        self.registered.as_ref()
    }

    /// Applies one request from this connection, whose peer address is `peer`.
    ///
    /// `page` is scratch space for a LIST answer, which borrows it.
    ///
    /// A REG follows these rules, in order (a *plain* connection proved no key):
    /// 1. this connection's own name again: its contact is updated; another name: refused
    ///    (one registration per connection);
    /// 2. plain, and the registry requires keys: refused ([`Reason::KeyRequired`]);
    /// 3. the name's owner is [`Owner::Unknown`]: refused ([`Reason::BindingsUnknown`]);
    /// 4. the name is bound to a key other than this connection's (or it is plain):
    ///    refused ([`Response::OwnedByAnotherKey`]);
    /// 5. the name is bound to this connection's key: registered, even when another
    ///    connection holds it (a phone back from a reboot before its old connection was
    ///    found dead): that one's registration is *displaced* ([`Session::poll_displaced`]);
    /// 6. the name is free and another connection holds it: refused
    ///    ([`Response::NameTaken`]);
    /// 7. otherwise registered, and bound to this connection's key if it has one.
    #[must_use]
    pub fn handle_request<'p, R: Registry>(
        &mut self,
        request: Request,
        peer: IpAddr,
        registry: &mut R,
        page: &'p mut Page,
    ) -> Response<'p> {
        match request {
            Request::Reg { name, port } => self.handle_reg(name, port, peer, registry),
            Request::Get { name } => match registry.find(&name) {
                Some(contact) => Response::Found(contact),
                None => Response::NotFound,
            },
            Request::Disconnect { name } => {
                if self.registered.as_ref() == Some(&name) {
                    registry.remove(&name);
                    self.registered = None;
                    Response::Disconnected
                } else if registry.find(&name).is_some() {
                    Response::Error(Reason::NotOwner(name))
                } else {
                    Response::Error(Reason::NotRegistered(name))
                }
            }
            Request::List { after, offset } => {
                page.clear();
                let skip = match after {
                    Some(_) => 0,
                    None if offset > LIST_MAX_OFFSET => {
                        return Response::Error(Reason::OffsetTooFar(offset));
                    }
                    None => offset,
                };
                let mut more = registry.page(after.as_ref(), skip, page);
                let mut room = MAX_RESPONSE - USERS_OVERHEAD;
                let mut fits = 0;
                for name in page.iter() {
                    let len = listed_len(name) + usize::from(fits > 0);
                    if len > room {
                        break;
                    }
                    room -= len;
                    fits += 1;
                }
                if fits < page.len() {
                    page.truncate(fits);
                    more = true;
                }
                Response::Users { names: page, more }
            }
            Request::Ping => Response::Pong,
            Request::Key => match registry.server_key() {
                Some(key) => Response::Key(key),
                None => Response::Error(Reason::NoKey),
            },
        }
    }

    /// A REG, by the rules of [`Session::handle_request`].
    fn handle_reg<R: Registry>(
        &mut self,
        name: Name,
        port: Option<u16>,
        peer: IpAddr,
        registry: &mut R,
    ) -> Response<'static> {
        let contact = Contact::registered(peer, port).with_key(self.key);
        match &self.registered {
            Some(mine) if *mine == name => {
                registry.insert(&name, contact);
                return Response::Registered;
            }
            Some(mine) => return Response::Error(Reason::AlreadyRegistered(mine.clone())),
            None => {}
        }
        if self.key.is_none() && registry.keys_required() {
            return Response::Error(Reason::KeyRequired);
        }
        let held = registry.find(&name).is_some();
        match (registry.owner(&name), self.key) {
            (Owner::Unknown, _) => return Response::Error(Reason::BindingsUnknown(name)),
            (Owner::Key(owner), Some(key)) if owner == key => {
                if held {
                    self.displaced = Some(name.clone());
                }
            }
            (Owner::Key(_), _) => return Response::OwnedByAnotherKey(name),
            (Owner::Free, _) if held => return Response::NameTaken(name),
            (Owner::Free, Some(key)) => registry.bind(&name, &key),
            (Owner::Free, None) => {}
        }
        registry.insert(&name, contact);
        self.registered = Some(name);
        Response::Registered
    }

    /// The name whose registration by another connection this session's last REG took
    /// over (rule 5 of [`Session::handle_request`]), once. The shell then finds the other
    /// connection holding that name, calls [`Session::handle_displaced`] on its session
    /// and closes it ([`Reason::Displaced`]).
    pub fn poll_displaced(&mut self) -> Option<Name> {
        self.displaced.take()
    }

    /// This connection's registration was taken over by its name's key on another
    /// connection: forgets it without touching the registry, which holds the new one.
    /// Returns the name it held.
    pub fn handle_displaced(&mut self) -> Option<Name> {
        self.registered.take()
    }

    /// The connection ended (closed, reset, timed out): frees its name, if it had one.
    pub fn handle_close<R: Registry>(&mut self, registry: &mut R) -> Option<Name> {
        let name = self.registered.take()?;
        registry.remove(&name);
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    /// A registry in maps: the simplest store that obeys the trait.
    #[derive(Default)]
    struct MapRegistry(BTreeMap<Name, Contact>, Bindings);

    /// The names bound to keys, whether the rest are known to be free, and the policy.
    #[derive(Default)]
    struct Bindings {
        keys: BTreeMap<Name, PublicKey>,
        /// The bindings could not be read: names not in `keys` are unknown.
        unread: bool,
        keys_required: bool,
    }

    impl Registry for MapRegistry {
        fn find(&self, name: &Name) -> Option<Contact> {
            self.0.get(name).copied()
        }
        fn insert(&mut self, name: &Name, contact: Contact) {
            self.0.insert(name.clone(), contact);
        }
        fn remove(&mut self, name: &Name) {
            self.0.remove(name);
        }
        fn page(&self, after: Option<&Name>, skip: u32, page: &mut Page) -> bool {
            use core::ops::Bound::{Excluded, Unbounded};
            let from = after.map_or(Unbounded, Excluded);
            let mut names = self
                .0
                .range::<Name, _>((from, Unbounded))
                .map(|(name, _)| name)
                .skip(skip as usize);
            for name in names.by_ref() {
                if page.push(name.clone()).is_err() {
                    return true;
                }
            }
            false
        }
        fn owner(&self, name: &Name) -> Owner {
            match self.1.keys.get(name) {
                Some(key) => Owner::Key(*key),
                None if self.1.unread => Owner::Unknown,
                None => Owner::Free,
            }
        }
        fn bind(&mut self, name: &Name, key: &PublicKey) {
            self.1.keys.insert(name.clone(), *key);
        }
        fn keys_required(&self) -> bool {
            self.1.keys_required
        }
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("test names are valid")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn encoded(response: &Response<'_>) -> String {
        let mut buf = [0u8; MAX_RESPONSE];
        let len = response
            .encode(&mut buf)
            .expect("MAX_RESPONSE always suffices");
        String::from_utf8(buf[..len].to_vec()).expect("responses are UTF-8")
    }

    fn parse(s: &str) -> Result<Request, RequestError> {
        Request::parse(s.as_bytes())
    }

    /// Applies a request given as JSON and returns the encoded response.
    fn exchange(session: &mut Session, registry: &mut MapRegistry, peer: u8, json: &str) -> String {
        let mut page = Page::new();
        let response = match parse(json) {
            Ok(request) => session.handle_request(request, ip(peer), registry, &mut page),
            Err(error) => Response::Error(error.into()),
        };
        encoded(&response)
    }

    mod parsing {
        use super::*;

        #[test]
        fn original_client_requests_with_python_spacing() {
            assert_eq!(
                parse(r#"{"command": "REG", "name": "alice"}"#),
                Ok(Request::Reg {
                    name: name("alice"),
                    port: None
                })
            );
            assert_eq!(
                parse(r#"{"command": "GET", "name": "bob"}"#),
                Ok(Request::Get { name: name("bob") })
            );
            assert_eq!(
                parse(r#"{"command": "DISCONNECT", "name": "alice"}"#),
                Ok(Request::Disconnect {
                    name: name("alice")
                })
            );
        }

        #[test]
        fn compact_requests_and_extensions() {
            assert_eq!(
                parse(r#"{"command":"REG","name":"door","port":6000}"#),
                Ok(Request::Reg {
                    name: name("door"),
                    port: Some(6000)
                })
            );
            assert_eq!(
                parse(r#"{"command":"LIST"}"#),
                Ok(Request::List {
                    after: None,
                    offset: 0
                })
            );
            assert_eq!(
                parse(r#"{"offset":40,"command":"LIST"}"#),
                Ok(Request::List {
                    after: None,
                    offset: 40
                })
            );
            assert_eq!(
                parse(r#"{"command":"LIST","after":"bob","offset":40}"#),
                Ok(Request::List {
                    after: Some(name("bob")),
                    offset: 40
                })
            );
            assert_eq!(parse(r#"{"command":"PING"}"#), Ok(Request::Ping));
        }

        #[test]
        fn unknown_fields_and_null_options_are_ignored() {
            assert_eq!(
                parse(
                    r#"{"v":2,"extra":{"a":[1,"}",null]},"command":"GET","name":"bob","port":null}"#
                ),
                Ok(Request::Get { name: name("bob") })
            );
        }

        #[test]
        fn escapes_are_unescaped() {
            assert_eq!(
                parse(r#"{"command":"GET","name":"caf\u00e9"}"#),
                Ok(Request::Get {
                    name: name("café")
                })
            );
            assert_eq!(
                parse(r#"{"command":"GET","name":"a\"b\\c\/d"}"#),
                Ok(Request::Get {
                    name: name(r#"a"b\c/d"#)
                })
            );
            assert_eq!(parse(r#"{"command":"P\u0049NG"}"#), Ok(Request::Ping));
        }

        #[test]
        fn escaped_name_length_is_counted_after_unescaping() {
            // 32 escaped characters: 192 bytes on the wire, 32 bytes of name.
            let json = format!(r#"{{"command":"GET","name":"{}"}}"#, r"\u0061".repeat(32));
            assert_eq!(
                parse(&json),
                Ok(Request::Get {
                    name: name(&"a".repeat(32))
                })
            );
        }

        #[test]
        fn characters_beyond_the_basic_plane_may_come_as_surrogate_pairs() {
            // What Python's json.dumps writes for "😀x" (the original client's encoder).
            let reg = |escaped: &str| parse(&format!(r#"{{"command":"REG","name":"{escaped}"}}"#));
            let want = Ok(Request::Reg {
                name: name("\u{1F600}x"),
                port: None,
            });
            assert_eq!(reg(r"\ud83d\ude00x"), want);
            assert_eq!(reg(r"\uD83D\uDE00x"), want);
            assert_eq!(reg("\u{1F600}x"), want);
            // An escaped backslash before `ud83d` is text, not an escape.
            assert!(matches!(
                reg(r"a\\ud83d\ude00"),
                Err(RequestError::Malformed(_))
            ));
            // Lone or reversed surrogates are not characters.
            for bad in [r"\ud83dx", r"\ude00\ud83d", r"x\ude00"] {
                assert!(matches!(reg(bad), Err(RequestError::Malformed(_))), "{bad}");
            }
            // A surrogate pair outside a string is left for the parser to refuse.
            assert!(parse(r#"{"command":"PING"}\ud83d\ude00"#).is_err());
        }

        #[test]
        fn sql_looking_name_is_just_a_name() {
            assert_eq!(
                parse(r#"{"command":"REG","name":"x\"OR\"1\"<>\"1"}"#),
                Ok(Request::Reg {
                    name: name(r#"x"OR"1"<>"1"#),
                    port: None
                })
            );
        }

        #[test]
        fn missing_and_unknown_commands() {
            assert_eq!(
                parse(r#"{"name":"bob"}"#),
                Err(RequestError::MissingCommand)
            );
            assert_eq!(
                parse(r#"{"command":"reg","name":"bob"}"#),
                Err(RequestError::UnknownCommand(
                    "reg".try_into().expect("fits")
                ))
            );
            let Err(RequestError::UnknownCommand(echo)) =
                parse(r#"{"command":"AVERYVERYLONGCOMMANDNAME"}"#)
            else {
                panic!("expected an unknown command");
            };
            assert_eq!(echo.as_str(), "AVERYVERYLONGCOM");
        }

        #[test]
        fn name_rules() {
            let get = |n: &str| parse(&format!(r#"{{"command":"GET","name":"{n}"}}"#));
            assert_eq!(
                parse(r#"{"command":"GET"}"#),
                Err(RequestError::MissingName)
            );
            assert_eq!(get(""), Err(RequestError::BadName(NameError::Empty)));
            assert_eq!(
                get(&"n".repeat(33)),
                Err(RequestError::BadName(NameError::TooLong { len: 33 }))
            );
            assert_eq!(
                get(&"é".repeat(17)),
                Err(RequestError::BadName(NameError::TooLong { len: 34 }))
            );
            assert_eq!(
                get(&"n".repeat(900)),
                Err(RequestError::BadName(NameError::TooLong { len: 900 }))
            );
            let white = |ch| Err(RequestError::BadName(NameError::Whitespace { ch }));
            let invisible = |ch| Err(RequestError::BadName(NameError::Invisible { ch }));
            assert_eq!(get("bob smith"), white(' '));
            assert_eq!(get(r"bob\tsmith"), white('\t'));
            assert_eq!(get("bob\u{a0}"), white('\u{a0}'));
            assert_eq!(get(r"bob\u0007"), invisible('\u{7}'));
            assert_eq!(get("ali\u{200b}ce"), invisible('\u{200b}'));
            assert_eq!(get(r"\u202eecila"), invisible('\u{202e}'));
            assert_eq!(get(r"\ufeffalice"), invisible('\u{feff}'));
            assert_eq!(
                get("café-ß-Ω-☎"),
                Ok(Request::Get {
                    name: name("café-ß-Ω-☎")
                })
            );
            assert_eq!(
                get(&"n".repeat(32)),
                Ok(Request::Get {
                    name: name(&"n".repeat(32))
                })
            );
            assert_eq!(
                get("日本"),
                Ok(Request::Get {
                    name: name("日本")
                })
            );
        }

        #[test]
        fn port_and_offset_ranges() {
            let reg = |p: &str| parse(&format!(r#"{{"command":"REG","name":"a","port":{p}}}"#));
            assert_eq!(reg("0"), Err(RequestError::BadPort(0)));
            assert_eq!(reg("65536"), Err(RequestError::BadPort(65536)));
            assert_eq!(reg("-5"), Err(RequestError::BadPort(-5)));
            assert_eq!(
                reg("65535"),
                Ok(Request::Reg {
                    name: name("a"),
                    port: Some(65535)
                })
            );
            assert!(matches!(reg("50.5"), Err(RequestError::Malformed(_))));
            assert!(matches!(reg("\"5001\""), Err(RequestError::Malformed(_))));
            assert_eq!(
                parse(r#"{"command":"LIST","offset":-1}"#),
                Err(RequestError::BadOffset(-1))
            );
        }

        #[test]
        fn a_list_cursor_follows_the_naming_rule() {
            let list = |after: &str| parse(&format!(r#"{{"command":"LIST","after":"{after}"}}"#));
            assert_eq!(list(""), Err(RequestError::BadCursor(NameError::Empty)));
            assert_eq!(
                list(&"n".repeat(300)),
                Err(RequestError::BadCursor(NameError::TooLong { len: 300 }))
            );
            assert_eq!(
                list("a b"),
                Err(RequestError::BadCursor(NameError::Whitespace { ch: ' ' }))
            );
            assert!(matches!(
                parse(r#"{"command":"LIST","after":7}"#),
                Err(RequestError::Malformed(_))
            ));
            assert!(
                RequestError::BadCursor(NameError::Empty)
                    .to_string()
                    .starts_with("\"after\" is not a name")
            );
        }

        #[test]
        fn malformed_json() {
            for bad in [
                "{",
                "{}}",
                r#"{"command" "PING"}"#,
                r#"{"command":"PING",}"#,
                r#"{"command":PING}"#,
                r#"{command:"PING"}"#,
                r#"{"command":"PI\qNG"}"#,
                r#"{"command":5}"#,
                r#"{"command":"GET","name":["bob"]}"#,
                r#"{"command":"PING","command":"PING"}"#,
            ] {
                assert!(
                    matches!(parse(bad), Err(RequestError::Malformed(_))),
                    "{bad} gave {:?}",
                    parse(bad)
                );
            }
        }

        #[test]
        fn invalid_utf8_is_malformed() {
            let mut bytes = br#"{"command":"GET","name":"bo"#.to_vec();
            bytes.extend_from_slice(&[0xff, 0xfe]);
            bytes.extend_from_slice(br#""}"#);
            assert!(matches!(
                Request::parse(&bytes),
                Err(RequestError::Malformed(_))
            ));
        }

        #[test]
        fn deeply_nested_unknown_field_does_not_overflow() {
            let depth = MAX_REQUEST / 2 - 10;
            let json = format!(r#"{{"x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            assert!(json.len() <= MAX_REQUEST);
            let _ = parse(&json);
        }
    }

    mod encoding {
        use super::*;

        #[test]
        fn the_original_acks_exactly() {
            // The original's ack, with the field that says the server is Parlo's (the
            // original client's json.loads ignores it).
            assert_eq!(
                encoded(&Response::Registered),
                "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n"
            );
            assert_eq!(
                encoded(&Response::Disconnected),
                "{\"ack\":\"Disconnected\"}\n"
            );
            assert_eq!(encoded(&Response::NotFound), "{\"ip\":\"None\"}\n");
            assert_eq!(encoded(&Response::Pong), "{\"ack\":\"PONG\"}\n");
            assert_eq!(
                encoded(&Response::NameTaken(name("bob"))),
                "{\"ack\":\"Error Registering\",\"reason\":\"\\\"bob\\\" is already registered\"}\n"
            );
        }

        #[test]
        fn found_gives_ip_port_and_dialect() {
            let parlo = Contact::registered(ip(7), Some(6000));
            assert_eq!(
                encoded(&Response::Found(parlo)),
                "{\"ip\":\"127.0.0.7\",\"port\":6000,\"dialect\":\"parlo\"}\n"
            );
            let original = Contact::registered(ip(8), None);
            assert_eq!(
                encoded(&Response::Found(original)),
                "{\"ip\":\"127.0.0.8\",\"port\":5001,\"dialect\":\"original\"}\n"
            );
            let unknown = Contact {
                dialect: None,
                ..parlo
            };
            assert_eq!(
                encoded(&Response::Found(unknown)),
                "{\"ip\":\"127.0.0.7\",\"port\":6000}\n"
            );
        }

        #[test]
        fn a_reg_with_a_port_is_a_parlo_phone_without_one_an_original() {
            assert_eq!(
                Contact::registered(ip(1), Some(5001)),
                Contact {
                    ip: ip(1),
                    port: 5001,
                    dialect: Some(Dialect::Parlo),
                    key: None
                }
            );
            assert_eq!(
                Contact::registered(ip(1), None),
                Contact {
                    ip: ip(1),
                    port: DEFAULT_PEER_PORT,
                    dialect: Some(Dialect::Original),
                    key: None
                }
            );
        }

        #[test]
        fn v4_mapped_v6_peer_is_reported_as_v4() {
            let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("valid literal");
            let native: IpAddr = "2001:db8::1".parse().expect("valid literal");
            assert_eq!(
                encoded(&Response::Found(Contact::registered(mapped, Some(1)))),
                "{\"ip\":\"10.1.2.3\",\"port\":1,\"dialect\":\"parlo\"}\n"
            );
            assert_eq!(
                encoded(&Response::Found(Contact::registered(native, Some(1)))),
                "{\"ip\":\"2001:db8::1\",\"port\":1,\"dialect\":\"parlo\"}\n"
            );
        }

        #[test]
        fn error_reasons_are_escaped_json() {
            let unknown = Response::Error(
                RequestError::UnknownCommand("a\"\\\u{1}".try_into().expect("fits")).into(),
            );
            // The control character is escaped in the reason itself (`\u{1}`), which the
            // JSON then carries like any text.
            assert_eq!(
                encoded(&unknown),
                "{\"ack\":\"Error\",\"reason\":\"unknown command \\\"a\\\"\\\\\\\\u{1}\\\" \
                 (expected REG, GET, DISCONNECT, LIST or PING)\"}\n"
            );
            assert_eq!(
                RequestError::UnknownCommand("\u{1b}[2J\u{7}\u{9b}".try_into().expect("fits"))
                    .to_string(),
                "unknown command \"\\u{1b}[2J\\u{7}\\u{9b}\" (expected REG, GET, DISCONNECT, \
                 LIST or PING)"
            );
        }

        #[test]
        fn users_list() {
            let names = [name("a\"b"), name("bob")];
            assert_eq!(
                encoded(&Response::Users {
                    names: &names,
                    more: true
                }),
                "{\"users\":[\"a\\\"b\",\"bob\"],\"more\":true}\n"
            );
            assert_eq!(
                encoded(&Response::Users {
                    names: &[],
                    more: false
                })
                .len(),
                USERS_OVERHEAD
            );
        }

        #[test]
        fn buffer_too_small_is_an_error_not_a_panic() {
            let mut small = [0u8; 10];
            assert_eq!(Response::Registered.encode(&mut small), Err(BufferTooSmall));
        }

        #[test]
        fn every_reason_fits_with_the_longest_names() {
            let worst = name(&"\"".repeat(32));
            let reasons = [
                Reason::AlreadyRegistered(worst.clone()),
                Reason::NotOwner(worst.clone()),
                Reason::NotRegistered(worst.clone()),
                Reason::ServerFull,
                Reason::TooManyFromAddress(u32::MAX),
                Reason::RequestTimeout(u32::MAX),
                Reason::IdleTimeout(u32::MAX),
                Reason::UnregisteredTimeout(u32::MAX),
                Reason::OffsetTooFar(u32::MAX),
                RequestError::UnknownCommand("\u{1}".repeat(16).as_str().try_into().expect("fits"))
                    .into(),
                RequestError::BadPort(i64::MIN).into(),
                RequestError::BadName(NameError::TooLong { len: usize::MAX }).into(),
                RequestError::BadCursor(NameError::TooLong { len: usize::MAX }).into(),
            ];
            for reason in reasons {
                let mut buf = [0u8; MAX_RESPONSE];
                assert!(Response::Error(reason).encode(&mut buf).is_ok());
            }
            let mut buf = [0u8; MAX_RESPONSE];
            assert!(Response::NameTaken(worst).encode(&mut buf).is_ok());
        }
    }

    mod owned_names {
        use super::*;

        const OK: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n";
        const REG_ALICE: &str = r#"{"command":"REG","name":"alice","port":5001}"#;
        const GET_ALICE: &str = r#"{"command":"GET","name":"alice"}"#;

        fn key(byte: u8) -> PublicKey {
            PublicKey([byte; PublicKey::LEN])
        }

        /// `key`'s phone registered "alice" from 127.0.0.`peer`.
        fn alice_with(key_byte: u8, peer: u8, registry: &mut MapRegistry) -> Session {
            let mut session = Session::with_key(key(key_byte));
            assert_eq!(exchange(&mut session, registry, peer, REG_ALICE), OK);
            session
        }

        fn refused_as_another_keys(reply: &str) {
            assert_eq!(
                reply,
                "{\"ack\":\"Error Registering\",\"reason\":\"\\\"alice\\\" belongs to another \
                 key\"}\n"
            );
        }

        #[test]
        fn the_first_key_to_register_a_name_binds_it() {
            let mut registry = MapRegistry::default();
            let session = alice_with(1, 1, &mut registry);
            assert_eq!(session.registered(), Some(&name("alice")));
            assert_eq!(registry.owner(&name("alice")), Owner::Key(key(1)));
            assert_eq!(registry.owner(&name("bob")), Owner::Free);
        }

        #[test]
        fn the_same_key_registers_again_on_a_new_connection() {
            let mut registry = MapRegistry::default();
            let mut first = alice_with(1, 1, &mut registry);
            assert_eq!(first.handle_close(&mut registry), Some(name("alice")));
            assert_eq!(registry.find(&name("alice")), None);
            let again = alice_with(1, 2, &mut registry);
            assert_eq!(again.registered(), Some(&name("alice")));
            assert_eq!(registry.owner(&name("alice")), Owner::Key(key(1)));
        }

        #[test]
        fn another_key_is_refused_whether_the_owner_is_online_or_not() {
            let mut registry = MapRegistry::default();
            let mut owner = alice_with(1, 1, &mut registry);
            let mut mallory = Session::with_key(key(2));
            refused_as_another_keys(&exchange(&mut mallory, &mut registry, 9, REG_ALICE));
            let _ = owner.handle_close(&mut registry);
            refused_as_another_keys(&exchange(&mut mallory, &mut registry, 9, REG_ALICE));
            assert_eq!(mallory.registered(), None);
            assert_eq!(mallory.poll_displaced(), None);
            assert_eq!(registry.find(&name("alice")), None);
            assert_eq!(registry.owner(&name("alice")), Owner::Key(key(1)));
        }

        #[test]
        fn a_plain_reg_of_a_bound_name_is_refused() {
            let mut registry = MapRegistry::default();
            let mut owner = alice_with(1, 1, &mut registry);
            let _ = owner.handle_close(&mut registry);
            let mut plain = Session::new();
            refused_as_another_keys(&exchange(
                &mut plain,
                &mut registry,
                9,
                r#"{"command":"REG","name":"alice"}"#,
            ));
            assert_eq!(plain.registered(), None);
        }

        #[test]
        fn a_plain_reg_binds_nothing_and_a_key_waits_for_the_name_to_be_free() {
            let mut registry = MapRegistry::default();
            let mut plain = Session::new();
            assert_eq!(exchange(&mut plain, &mut registry, 1, REG_ALICE), OK);
            assert_eq!(registry.owner(&name("alice")), Owner::Free);
            let mut keyed = Session::with_key(key(1));
            assert!(
                exchange(&mut keyed, &mut registry, 2, REG_ALICE).contains("is already registered")
            );
            let _ = plain.handle_close(&mut registry);
            assert_eq!(exchange(&mut keyed, &mut registry, 2, REG_ALICE), OK);
            assert_eq!(registry.owner(&name("alice")), Owner::Key(key(1)));
        }

        #[test]
        fn the_owner_back_from_a_reboot_displaces_its_stale_registration() {
            let mut registry = MapRegistry::default();
            let mut stale = alice_with(1, 1, &mut registry);
            // The phone rebooted: a new connection from a new address, the old one not
            // found dead yet.
            let mut back = alice_with(1, 2, &mut registry);
            assert_eq!(back.registered(), Some(&name("alice")));
            assert_eq!(registry.find(&name("alice")).map(|c| c.ip), Some(ip(2)));
            assert_eq!(back.poll_displaced(), Some(name("alice")));
            assert_eq!(back.poll_displaced(), None, "once");
            // The shell detaches the old connection's session, then closes it: the new
            // registration stays.
            assert_eq!(stale.handle_displaced(), Some(name("alice")));
            assert_eq!(stale.handle_close(&mut registry), None);
            assert_eq!(registry.find(&name("alice")).map(|c| c.ip), Some(ip(2)));
            let mut mallory = Session::new();
            assert!(
                exchange(
                    &mut mallory,
                    &mut registry,
                    9,
                    r#"{"command":"DISCONNECT","name":"alice"}"#
                )
                .contains("another connection")
            );
        }

        #[test]
        fn the_owner_takes_its_name_from_a_plain_holder_too() {
            let mut registry = MapRegistry::default();
            let mut plain = Session::new();
            assert_eq!(exchange(&mut plain, &mut registry, 1, REG_ALICE), OK);
            // Bound meanwhile (an administrator's --names file, read again).
            registry.bind(&name("alice"), &key(1));
            let mut owner = alice_with(1, 2, &mut registry);
            assert_eq!(owner.poll_displaced(), Some(name("alice")));
        }

        #[test]
        fn required_keys_refuse_plain_registrations_but_not_lookups() {
            let mut registry = MapRegistry::default();
            registry.1.keys_required = true;
            let mut plain = Session::new();
            let reply = exchange(&mut plain, &mut registry, 1, REG_ALICE);
            assert!(
                reply.starts_with("{\"ack\":\"Error\",\"reason\":"),
                "{reply}"
            );
            assert!(reply.contains("only phones that prove a key"), "{reply}");
            assert_eq!(registry.find(&name("alice")), None);
            let _owner = alice_with(1, 2, &mut registry);
            assert!(exchange(&mut plain, &mut registry, 1, GET_ALICE).contains("127.0.0.2"));
        }

        #[test]
        fn unread_bindings_refuse_every_name_not_known_to_be_free() {
            let mut registry = MapRegistry::default();
            registry.1.unread = true;
            // Known in memory (an administrator's --names file): its key registers it.
            registry.bind(&name("alice"), &key(1));
            let _owner = alice_with(1, 1, &mut registry);
            let reg_bob = r#"{"command":"REG","name":"bob","port":5001}"#;
            for mut session in [Session::new(), Session::with_key(key(2))] {
                let reply = exchange(&mut session, &mut registry, 2, reg_bob);
                assert!(
                    reply.starts_with("{\"ack\":\"Error\",\"reason\":"),
                    "{reply}"
                );
                assert!(reply.contains("cannot read its bindings"), "{reply}");
                assert_eq!(session.registered(), None);
            }
            assert_eq!(registry.owner(&name("bob")), Owner::Unknown);
            assert_eq!(registry.find(&name("bob")), None);
        }

        #[test]
        fn a_lookup_gives_the_key_the_callee_proved() {
            let mut registry = MapRegistry::default();
            let _owner = alice_with(7, 3, &mut registry);
            let mut asker = Session::new();
            assert_eq!(
                exchange(&mut asker, &mut registry, 4, GET_ALICE),
                format!(
                    "{{\"ip\":\"127.0.0.3\",\"port\":5001,\"dialect\":\"parlo\",\"key\":\"{}\"}}\n",
                    key(7)
                )
            );
        }

        #[test]
        fn the_longest_answers_with_a_key_fit() {
            let contact = Contact::registered(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
                    .parse()
                    .expect("v6"),
                Some(65535),
            )
            .with_key(Some(key(0xff)));
            let mut buf = [0u8; MAX_RESPONSE];
            assert!(Response::Found(contact).encode(&mut buf).is_ok());
            let worst = name(&"\"".repeat(32));
            for response in [
                Response::OwnedByAnotherKey(worst.clone()),
                Response::Error(Reason::BindingsUnknown(worst.clone())),
                Response::Error(Reason::Displaced(worst)),
                Response::Error(Reason::KeyRequired),
            ] {
                assert!(response.encode(&mut buf).is_ok());
            }
        }
    }

    mod rules {
        use super::*;

        const REG_ALICE: &str = r#"{"command": "REG", "name": "alice"}"#;
        const OK: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n";

        fn registered_alice() -> (Session, MapRegistry) {
            let mut session = Session::new();
            let mut registry = MapRegistry::default();
            assert_eq!(exchange(&mut session, &mut registry, 1, REG_ALICE), OK);
            (session, registry)
        }

        #[test]
        fn register_then_others_find_you_at_your_peer_address() {
            let (session, mut registry) = registered_alice();
            assert_eq!(session.registered(), Some(&name("alice")));
            let mut other = Session::new();
            assert_eq!(
                exchange(
                    &mut other,
                    &mut registry,
                    2,
                    r#"{"command":"GET","name":"alice"}"#
                ),
                "{\"ip\":\"127.0.0.1\",\"port\":5001,\"dialect\":\"original\"}\n"
            );
            assert_eq!(
                exchange(
                    &mut other,
                    &mut registry,
                    2,
                    r#"{"command":"GET","name":"nobody"}"#
                ),
                "{\"ip\":\"None\"}\n"
            );
        }

        #[test]
        fn name_taken_by_another_connection() {
            let (_, mut registry) = registered_alice();
            let mut other = Session::new();
            assert!(
                exchange(&mut other, &mut registry, 2, REG_ALICE)
                    .starts_with("{\"ack\":\"Error Registering\",\"reason\":")
            );
            assert_eq!(other.registered(), None);
            assert_eq!(registry.find(&name("alice")).map(|c| c.ip), Some(ip(1)));
        }

        #[test]
        fn register_again_same_name_updates_the_port() {
            let (mut session, mut registry) = registered_alice();
            let again = r#"{"command":"REG","name":"alice","port":7000}"#;
            assert_eq!(exchange(&mut session, &mut registry, 1, again), OK);
            assert_eq!(registry.find(&name("alice")).map(|c| c.port), Some(7000));
            assert_eq!(
                registry.find(&name("alice")).and_then(|c| c.dialect),
                Some(Dialect::Parlo)
            );
        }

        #[test]
        fn get_says_whether_the_reg_carried_a_port() {
            let mut registry = MapRegistry::default();
            let (mut parlo, mut original, mut asker) =
                (Session::new(), Session::new(), Session::new());
            let reg_door = r#"{"command":"REG","name":"door","port":5001}"#;
            assert_eq!(exchange(&mut parlo, &mut registry, 3, reg_door), OK);
            assert_eq!(exchange(&mut original, &mut registry, 4, REG_ALICE), OK);
            let get = |who: &str| format!(r#"{{"command":"GET","name":"{who}"}}"#);
            assert_eq!(
                exchange(&mut asker, &mut registry, 5, &get("door")),
                "{\"ip\":\"127.0.0.3\",\"port\":5001,\"dialect\":\"parlo\"}\n"
            );
            assert_eq!(
                exchange(&mut asker, &mut registry, 5, &get("alice")),
                "{\"ip\":\"127.0.0.4\",\"port\":5001,\"dialect\":\"original\"}\n"
            );
        }

        #[test]
        fn one_registration_per_connection() {
            let (mut session, mut registry) = registered_alice();
            let reply = exchange(
                &mut session,
                &mut registry,
                1,
                r#"{"command":"REG","name":"bob"}"#,
            );
            assert!(
                reply.contains("already registered as \\\"alice\\\""),
                "{reply}"
            );
            assert_eq!(registry.find(&name("bob")), None);
        }

        #[test]
        fn disconnect_own_name_frees_it_for_others() {
            let (mut session, mut registry) = registered_alice();
            let bye = r#"{"command": "DISCONNECT", "name": "alice"}"#;
            assert_eq!(
                exchange(&mut session, &mut registry, 1, bye),
                "{\"ack\":\"Disconnected\"}\n"
            );
            assert_eq!(session.registered(), None);
            let mut other = Session::new();
            assert_eq!(exchange(&mut other, &mut registry, 2, REG_ALICE), OK);
        }

        #[test]
        fn disconnect_of_someone_elses_name_is_refused() {
            let (_, mut registry) = registered_alice();
            let mut mallory = Session::new();
            let bye = r#"{"command":"DISCONNECT","name":"alice"}"#;
            let reply = exchange(&mut mallory, &mut registry, 9, bye);
            assert!(
                reply.starts_with("{\"ack\":\"Error\",\"reason\":"),
                "{reply}"
            );
            assert!(reply.contains("another connection"), "{reply}");
            assert!(registry.find(&name("alice")).is_some());
        }

        #[test]
        fn disconnect_of_an_unknown_name_is_an_error() {
            let mut session = Session::new();
            let mut registry = MapRegistry::default();
            let reply = exchange(
                &mut session,
                &mut registry,
                1,
                r#"{"command":"DISCONNECT","name":"ghost"}"#,
            );
            assert!(reply.contains("is not registered"), "{reply}");
        }

        #[test]
        fn close_frees_the_name_once() {
            let (mut session, mut registry) = registered_alice();
            assert_eq!(session.handle_close(&mut registry), Some(name("alice")));
            assert_eq!(registry.find(&name("alice")), None);
            assert_eq!(session.handle_close(&mut registry), None);
        }

        #[test]
        fn close_of_a_refused_connection_leaves_the_owner_alone() {
            let (_, mut registry) = registered_alice();
            let mut other = Session::new();
            let _ = exchange(&mut other, &mut registry, 2, REG_ALICE);
            assert_eq!(other.handle_close(&mut registry), None);
            assert!(registry.find(&name("alice")).is_some());
        }

        #[test]
        fn errors_change_nothing() {
            let (mut session, mut registry) = registered_alice();
            for bad in [
                r#"{"command":"NOPE"}"#,
                r#"{"command":"REG","name":""}"#,
                "{]",
            ] {
                let reply = exchange(&mut session, &mut registry, 1, bad);
                assert!(
                    reply.starts_with("{\"ack\":\"Error\",\"reason\":"),
                    "{reply}"
                );
            }
            assert_eq!(session.registered(), Some(&name("alice")));
            assert_eq!(registry.0.len(), 1);
        }

        #[test]
        fn ping() {
            let mut session = Session::new();
            let mut registry = MapRegistry::default();
            assert_eq!(
                exchange(&mut session, &mut registry, 1, r#"{"command":"PING"}"#),
                "{\"ack\":\"PONG\"}\n"
            );
        }

        #[test]
        fn list_pages_through_everyone() {
            let mut registry = MapRegistry::default();
            for i in 0..70 {
                registry.insert(
                    &name(&format!("user{i:03}")),
                    Contact::registered(ip(1), Some(1)),
                );
            }
            let all: Vec<Name> = registry.0.keys().cloned().collect();
            let mut session = Session::new();
            let mut page = Page::new();
            // By offset, as phones of Parlo's first version page, and by cursor.
            for by_cursor in [false, true] {
                let mut seen: Vec<Name> = Vec::new();
                loop {
                    let request = Request::List {
                        after: seen.last().cloned().filter(|_| by_cursor),
                        offset: if by_cursor { 0 } else { seen.len() as u32 },
                    };
                    let response = session.handle_request(request, ip(1), &mut registry, &mut page);
                    let Response::Users { names, more } = response else {
                        panic!("LIST answers with users");
                    };
                    seen.extend(names.iter().cloned());
                    if !more {
                        break;
                    }
                }
                assert_eq!(seen, all, "by cursor: {by_cursor}");
            }
        }

        /// A LIST from `after` (or `offset`) of `registry`: the names and `more`.
        fn list(
            registry: &mut MapRegistry,
            after: Option<&str>,
            offset: u32,
        ) -> Result<(Vec<Name>, bool), Reason> {
            let mut page = Page::new();
            let request = Request::List {
                after: after.map(name),
                offset,
            };
            match Session::new().handle_request(request, ip(1), registry, &mut page) {
                Response::Users { names, more } => Ok((names.to_vec(), more)),
                Response::Error(reason) => Err(reason),
                other => panic!("LIST answers with users or an error: {other:?}"),
            }
        }

        fn registry_of(names: &[&str]) -> MapRegistry {
            let mut registry = MapRegistry::default();
            for n in names {
                registry.insert(&name(n), Contact::registered(ip(1), Some(1)));
            }
            registry
        }

        #[test]
        fn a_cursor_need_not_be_registered_and_changes_do_not_shift_the_pages() {
            let mut registry = registry_of(&["ann", "bob", "cid", "dee"]);
            assert_eq!(
                list(&mut registry, Some("bz"), 0),
                Ok((vec![name("cid"), name("dee")], false))
            );
            // A name removed before the cursor shifts an offset, not a cursor.
            registry.remove(&name("ann"));
            assert_eq!(
                list(&mut registry, Some("bob"), 0),
                Ok((vec![name("cid"), name("dee")], false))
            );
            assert_eq!(list(&mut registry, None, 2), Ok((vec![name("dee")], false)));
            // The offset is ignored when a cursor is given, whatever it is.
            assert_eq!(
                list(&mut registry, Some("dee"), u32::MAX),
                Ok((vec![], false))
            );
        }

        #[test]
        fn an_offset_walks_at_most_as_far_as_a_first_version_phone_asks() {
            let names: Vec<String> = (0..LIST_MAX_OFFSET + 40)
                .map(|i| format!("u{i:05}"))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut registry = registry_of(&refs);
            let (page, more) = list(&mut registry, None, LIST_MAX_OFFSET).expect("a page");
            assert_eq!(page.first().map(Name::as_str), Some("u01000"));
            assert!(more);
            assert_eq!(
                list(&mut registry, None, LIST_MAX_OFFSET + 1),
                Err(Reason::OffsetTooFar(LIST_MAX_OFFSET + 1))
            );
            let reason = Reason::OffsetTooFar(5000).to_string();
            assert!(reason.contains("\"after\""), "{reason}");
            // The cursor goes on from there.
            let (page, _) = list(&mut registry, Some("u01000"), 0).expect("a page");
            assert_eq!(page.first().map(Name::as_str), Some("u01001"));
        }

        #[test]
        fn the_work_of_a_request_counts_the_names_an_offset_walks_past() {
            let list = |after: Option<&str>, offset| Request::List {
                after: after.map(name),
                offset,
            };
            assert_eq!(Request::Ping.work(), 1);
            assert_eq!(list(None, 0).work(), 1);
            assert_eq!(list(None, 31).work(), 1);
            assert_eq!(list(None, 32).work(), 2);
            assert_eq!(list(None, LIST_MAX_OFFSET).work(), 32);
            assert_eq!(list(None, u32::MAX).work(), 32, "refused at once anyway");
            assert_eq!(list(Some("bob"), 960).work(), 1, "a cursor walks nothing");
        }

        #[test]
        fn list_page_of_longest_escaped_names_fits_one_response() {
            let mut registry = MapRegistry::default();
            for i in 0..40u8 {
                let mut n = "\\".repeat(30);
                n.push_str(&format!("{i:02}"));
                registry.insert(&name(&n), Contact::registered(ip(1), Some(1)));
            }
            let mut page = Page::new();
            let response = Session::new().handle_request(
                Request::List {
                    after: None,
                    offset: 0,
                },
                ip(1),
                &mut registry,
                &mut page,
            );
            let Response::Users { names, more } = &response else {
                panic!("LIST answers with users");
            };
            assert!(*more);
            assert!(!names.is_empty() && names.len() < LIST_PAGE);
            let text = encoded(&response);
            assert!(text.len() <= MAX_RESPONSE);
            // One more name would not have fitted.
            assert!(text.len() + 1 + listed_len(&names[0]) > MAX_RESPONSE);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The phone's side of the protocol: encoding requests, parsing responses.
// ---------------------------------------------------------------------------------------

/// A buffer size that always holds what [`Request::encode`] writes, `\n` included (a REG
/// of a 32-byte name made of escaped quotes and the largest port takes 106 bytes, a LIST
/// after such a name with the largest offset 114).
pub const MAX_ENCODED_REQUEST: usize = 128;

impl Request {
    /// Writes the request as a phone sends it: one compact JSON object and a `\n`.
    /// Returns the length; a buffer of [`MAX_ENCODED_REQUEST`] bytes always suffices.
    ///
    /// `{"command":"REG","name":N,"port":P}` (without `"port"` when it is `None`, as the
    /// original client writes it), `{"command":"GET","name":N}`,
    /// `{"command":"DISCONNECT","name":N}`, `{"command":"LIST"}` (with `"offset":K` when
    /// K is not 0), `{"command":"PING"}`.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Out { buf: out, len: 0 };
        let (command, name) = match self {
            Request::Reg { name, .. } => ("REG", Some(name)),
            Request::Get { name } => ("GET", Some(name)),
            Request::Disconnect { name } => ("DISCONNECT", Some(name)),
            Request::List { .. } => ("LIST", None),
            Request::Ping => ("PING", None),
            Request::Key => ("KEY", None),
        };
        w.raw(r#"{"command":""#)?;
        w.raw(command)?;
        w.raw("\"")?;
        if let Some(name) = name {
            w.raw(r#","name":""#)?;
            w.escaped(format_args!("{name}"))?;
            w.raw("\"")?;
        }
        match self {
            Request::Reg {
                port: Some(port), ..
            } => w.fmt(format_args!(r#","port":{port}"#))?,
            Request::List { after, offset } => {
                if let Some(after) = after {
                    w.raw(r#","after":""#)?;
                    w.escaped(format_args!("{after}"))?;
                    w.raw("\"")?;
                }
                if *offset > 0 {
                    w.fmt(format_args!(r#","offset":{offset}"#))?;
                }
            }
            // An original server reads "name" before the command and fails without it: a
            // name that no phone can hold (names have no space) keeps it answering.
            Request::Key => w.raw(r#","name":"server key""#)?,
            _ => {}
        }
        w.raw("}\n")?;
        Ok(w.len)
    }
}

/// Longest `"reason"` text a [`Reply`] keeps, in bytes once escaped; a longer one is cut.
pub const MAX_REASON_LEN: usize = 256;

/// Text a server wrote (a `"reason"`), made safe to print as soon as it is read: escaped as
/// [`Escaped`] escapes all text that leaves Parlo (control characters, line breaks,
/// invisible and formatting characters written `\u{1b}`), so that nothing the server says
/// can move a terminal's cursor, change its colours, end a printed line or hide part of
/// the text.
///
/// At most [`MAX_REASON_LEN`] bytes are kept, cut between two characters (or escapes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerText(heapless::String<MAX_REASON_LEN>);

impl ServerText {
    /// `text`, escaped (see the type's docs) and cut to fit.
    pub fn new(text: &str) -> ServerText {
        ServerText(escape_for_print(text))
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the server said nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ServerText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` escaped for printing ([`Escaped`]), cut to `N` bytes between two characters or
/// escapes (see [`ServerText`]).
fn escape_for_print<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::<N>::new();
    for c in text.chars() {
        // An escape (`\u{10ffff}`, 10 bytes) always fits the 12.
        let mut one = heapless::String::<12>::new();
        let _ = fmt::write(&mut one, format_args!("{}", Escaped::text(c)));
        if out.push_str(&one).is_err() {
            break;
        }
    }
    out
}

/// What kind of server answered a REG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// It said `"server":"parlo"`: it takes `PING` and `LIST`, and requests sent back to
    /// back.
    Parlo,
    /// It did not say it is Parlo's: taken for the original project's server, which fails
    /// on a request without `"name"` (`PING`, `LIST`) and on two requests in one read.
    Original,
}

/// A response as the phone reads it: what the server said to one request.
///
/// Responses carry no request id: a client matches them to its requests in order, one
/// response per request.
// A LIST page makes `Users` about 1 KB; a reply lives on the stack for one response and is
// never stored, and boxing it would allocate per response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `{"ack":"Registered successfully"}`, with `"server":"parlo"` from a Parlo server.
    Registered {
        /// Which kind of server said it.
        server: ServerKind,
    },
    /// `{"ack":"Error Registering"}`: the name is held by another live registration.
    NameTaken {
        /// The server's explanation, if it gave one.
        reason: ServerText,
    },
    /// `{"ip":"A.B.C.D","port":P,"dialect":D,"key":K}`; an original server sends neither
    /// port (which means [`DEFAULT_PEER_PORT`]) nor dialect (unknown: `None`), and no
    /// server sends a key for a plain registration.
    Found(Contact),
    /// `{"ip":"None"}`
    NotFound,
    /// `{"ack":"Disconnected"}`
    Disconnected,
    /// `{"users":[..],"more":bool}`: one page of the registered names.
    Users {
        /// The names of this page.
        names: Page,
        /// Whether more names follow (ask again after the page's last name).
        more: bool,
    },
    /// `{"ack":"PONG"}`
    Pong,
    /// `{"ack":"Error","reason":..}`: the request was refused.
    Error {
        /// The server's explanation (empty when it gave none).
        reason: ServerText,
    },
    /// `{"server_key":K}`: the server's public key.
    Key(PublicKey),
}

impl Reply {
    /// What kind of answer this is, in a few words (to say what came instead of what was
    /// expected).
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Registered { .. } => "registered",
            Reply::NameTaken { .. } => "name taken",
            Reply::Found(_) => "an address",
            Reply::NotFound => "not found",
            Reply::Disconnected => "disconnected",
            Reply::Users { .. } => "a list of names",
            Reply::Pong => "PONG",
            Reply::Error { .. } => "an error",
            Reply::Key(_) => "a key",
        }
    }
}

/// Why a response could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The bytes are not a JSON object of the expected shape; says what was found.
    Malformed(&'static str),
    /// The object has none of `"ack"`, `"ip"`, `"users"`.
    NotAResponse,
    /// `"ack"` holds a value this phone does not know (its first bytes).
    UnknownAck(heapless::String<COMMAND_ECHO>),
    /// `"ip"` is neither an IP address nor `"None"` (its first bytes).
    BadIp(heapless::String<COMMAND_ECHO>),
    /// `"port"` is not between 1 and 65535 (the value sent).
    BadPort(i64),
    /// A name in `"users"` breaks the naming rule.
    BadName(NameError),
    /// `"users"` lists more than [`LIST_PAGE`] names.
    TooManyNames,
    /// `"key"` is not a key (what is wrong with it).
    BadKey(parlo_fsm::KeyError),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed(what) => write!(f, "malformed response: {what}"),
            ReplyError::NotAResponse => {
                f.write_str("response has none of \"ack\", \"ip\" or \"users\"")
            }
            ReplyError::UnknownAck(ack) => write!(f, "unknown \"ack\" value \"{ack}\""),
            ReplyError::BadIp(ip) => {
                write!(f, "\"ip\" is \"{ip}\": expected an IP address or \"None\"")
            }
            ReplyError::BadPort(port) => write!(f, "port {port} is not between 1 and 65535"),
            ReplyError::BadName(error) => write!(f, "listed name refused: {error}"),
            ReplyError::TooManyNames => write!(f, "more than {LIST_PAGE} names in one page"),
            ReplyError::BadKey(error) => write!(f, "\"key\" refused: {error}"),
        }
    }
}

impl core::error::Error for ReplyError {}

/// The `"users"` array, read name by name into a fixed page (names kept whole or
/// reported too long).
#[derive(Debug, Default)]
struct WireUsers {
    names: heapless::Vec<Text<MAX_NAME_LEN>, LIST_PAGE>,
    overflow: bool,
}

impl<'de> Deserialize<'de> for WireUsers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsersVisitor;
        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = WireUsers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<WireUsers, A::Error> {
                let mut users = WireUsers::default();
                while let Some(name) = seq.next_element::<Text<MAX_NAME_LEN>>()? {
                    if users.names.push(name).is_err() {
                        users.overflow = true;
                    }
                }
                Ok(users)
            }
        }
        deserializer.deserialize_seq(UsersVisitor)
    }
}

/// The fields of a response object as they arrive; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct WireReply {
    ack: Option<Text<32>>,
    reason: Option<Text<MAX_REASON_LEN>>,
    ip: Option<Text<48>>,
    port: Option<i64>,
    users: Option<WireUsers>,
    more: Option<bool>,
    server: Option<Text<16>>,
    dialect: Option<Text<16>>,
    key: Option<Text<{ PublicKey::TEXT_LEN }>>,
    server_key: Option<Text<48>>,
}

/// The first bytes of `text` a server sent, escaped to be printed (see [`ServerText`]).
fn echo(text: &str) -> heapless::String<COMMAND_ECHO> {
    escape_for_print(text)
}

impl Reply {
    /// Parses one response object (a [`crate::framing::Frame::Object`] cut from the
    /// server's stream). Strings are unescaped; unknown fields are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Reply, ReplyError> {
        let mut unescaped = [0u8; MAX_RESPONSE];
        let (wire, _) = serde_json_core::from_slice_escaped::<WireReply>(bytes, &mut unescaped)
            .map_err(|e| ReplyError::Malformed(describe(&e)))?;
        let reason = || -> ServerText {
            wire.reason
                .as_ref()
                .map(|r| ServerText::new(&r.kept))
                .unwrap_or_default()
        };
        if let Some(ack) = &wire.ack {
            return match ack.kept.as_str() {
                "Registered successfully" => Ok(Reply::Registered {
                    server: match wire.server.as_ref().map(Text::whole) {
                        Some(Ok("parlo")) => ServerKind::Parlo,
                        _ => ServerKind::Original,
                    },
                }),
                "Error Registering" => Ok(Reply::NameTaken { reason: reason() }),
                "Disconnected" => Ok(Reply::Disconnected),
                "PONG" => Ok(Reply::Pong),
                "Error" => Ok(Reply::Error { reason: reason() }),
                other => Err(ReplyError::UnknownAck(echo(other))),
            };
        }
        if let Some(ip) = &wire.ip {
            let text = ip.kept.as_str();
            if text == "None" {
                return Ok(Reply::NotFound);
            }
            let ip: IpAddr = match ip.whole().map(str::parse) {
                Ok(Ok(ip)) => ip,
                _ => return Err(ReplyError::BadIp(echo(text))),
            };
            let port = match wire.port {
                None => DEFAULT_PEER_PORT,
                Some(port) => match u16::try_from(port) {
                    Ok(port) if port != 0 => port,
                    _ => return Err(ReplyError::BadPort(port)),
                },
            };
            // A dialect this phone does not know is as good as none.
            let dialect = match wire.dialect.as_ref().map(Text::whole) {
                Some(Ok("parlo")) => Some(Dialect::Parlo),
                Some(Ok("original")) => Some(Dialect::Original),
                _ => None,
            };
            // A key that is not one is an error, not a missing key: the phone trusts the
            // callee's key to be the one the server holds.
            let key = match &wire.key {
                None => None,
                Some(text) => Some(
                    text.whole()
                        .map_err(parlo_fsm::KeyError::Length)
                        .and_then(PublicKey::parse)
                        .map_err(ReplyError::BadKey)?,
                ),
            };
            return Ok(Reply::Found(Contact {
                ip,
                port,
                dialect,
                key,
            }));
        }
        if let Some(users) = &wire.users {
            if users.overflow {
                return Err(ReplyError::TooManyNames);
            }
            let mut names = Page::new();
            for text in &users.names {
                let text = text
                    .whole()
                    .map_err(|len| ReplyError::BadName(NameError::TooLong { len }))?;
                let name = Name::new(text).map_err(ReplyError::BadName)?;
                // Cannot overflow: `users.names` has the page's capacity.
                let _ = names.push(name);
            }
            return Ok(Reply::Users {
                names,
                more: wire.more.unwrap_or(false),
            });
        }
        if let Some(key) = &wire.server_key {
            return match key.whole().map(PublicKey::parse) {
                Ok(Ok(key)) => Ok(Reply::Key(key)),
                _ => Err(ReplyError::Malformed("the server's key is not a key")),
            };
        }
        Err(ReplyError::NotAResponse)
    }
}

#[cfg(test)]
mod client_side_tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::string::String;

    fn name(s: &str) -> Name {
        Name::new(s).expect("test names are valid")
    }

    fn encoded(request: &Request) -> String {
        let mut buf = [0u8; MAX_ENCODED_REQUEST];
        let len = request
            .encode(&mut buf)
            .expect("MAX_ENCODED_REQUEST always suffices");
        String::from_utf8(buf[..len].to_vec()).expect("requests are UTF-8")
    }

    fn reply(s: &str) -> Result<Reply, ReplyError> {
        Reply::parse(s.as_bytes())
    }

    #[test]
    fn requests_are_encoded_byte_for_byte() {
        let alice = name("alice");
        assert_eq!(
            encoded(&Request::Reg {
                name: alice.clone(),
                port: Some(5001)
            }),
            "{\"command\":\"REG\",\"name\":\"alice\",\"port\":5001}\n"
        );
        // What an original phone sends (without Python's spacing).
        assert_eq!(
            encoded(&Request::Reg {
                name: alice.clone(),
                port: None
            }),
            "{\"command\":\"REG\",\"name\":\"alice\"}\n"
        );
        assert_eq!(
            encoded(&Request::Get { name: name("bob") }),
            "{\"command\":\"GET\",\"name\":\"bob\"}\n"
        );
        assert_eq!(
            encoded(&Request::Disconnect { name: alice }),
            "{\"command\":\"DISCONNECT\",\"name\":\"alice\"}\n"
        );
        assert_eq!(
            encoded(&Request::List {
                after: None,
                offset: 0
            }),
            "{\"command\":\"LIST\"}\n"
        );
        assert_eq!(
            encoded(&Request::List {
                after: None,
                offset: 32
            }),
            "{\"command\":\"LIST\",\"offset\":32}\n"
        );
        // The cursor, and the offset for a server of Parlo's first version.
        assert_eq!(
            encoded(&Request::List {
                after: Some(name("b\"ob")),
                offset: 32
            }),
            "{\"command\":\"LIST\",\"after\":\"b\\\"ob\",\"offset\":32}\n"
        );
        assert_eq!(encoded(&Request::Ping), "{\"command\":\"PING\"}\n");
    }

    #[test]
    fn encoded_requests_parse_back_to_themselves() {
        for request in [
            Request::Reg {
                name: name("d\"o\\or;1"),
                port: Some(65535),
            },
            Request::Reg {
                name: name("old"),
                port: None,
            },
            Request::Get {
                name: name("é€")
            },
            Request::Disconnect { name: name("x") },
            Request::List {
                after: None,
                offset: 7,
            },
            Request::List {
                after: None,
                offset: 0,
            },
            Request::List {
                after: Some(name("zoë")),
                offset: 0,
            },
            Request::List {
                after: Some(name("\\")),
                offset: 64,
            },
            Request::Ping,
        ] {
            let text = encoded(&request);
            let object = text.strip_suffix('\n').expect("ends with a newline");
            assert_eq!(Request::parse(object.as_bytes()), Ok(request));
        }
    }

    #[test]
    fn longest_request_fits_and_short_buffers_fail_cleanly() {
        let mut buf = [0u8; MAX_ENCODED_REQUEST];
        let quotes = Request::Reg {
            name: name(&"\"".repeat(MAX_NAME_LEN)),
            port: Some(65535),
        };
        let len = quotes.encode(&mut buf).expect("fits");
        assert!(len <= MAX_ENCODED_REQUEST);
        let list = Request::List {
            after: Some(name(&"\"".repeat(MAX_NAME_LEN))),
            offset: u32::MAX,
        };
        let len = list.encode(&mut buf).expect("fits");
        assert!(len <= MAX_ENCODED_REQUEST);
        let mut small = [0u8; 10];
        assert_eq!(quotes.encode(&mut small), Err(BufferTooSmall));
    }

    #[test]
    fn every_response_of_the_server_is_understood() {
        assert_eq!(
            reply(r#"{"ack":"Registered successfully","server":"parlo"}"#),
            Ok(Reply::Registered {
                server: ServerKind::Parlo
            })
        );
        let Ok(Reply::NameTaken { reason }) =
            reply(r#"{"ack":"Error Registering","reason":"\"bob\" is already registered"}"#)
        else {
            panic!("name taken");
        };
        assert_eq!(reason.as_str(), "\"bob\" is already registered");
        assert_eq!(
            reply(r#"{"ip":"127.0.0.2","port":6000,"dialect":"parlo"}"#),
            Ok(Reply::Found(Contact {
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                port: 6000,
                dialect: Some(Dialect::Parlo),
                key: None
            }))
        );
        assert_eq!(
            reply(r#"{"ip":"127.0.0.3","port":5001,"dialect":"original"}"#),
            Ok(Reply::Found(Contact {
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
                port: 5001,
                dialect: Some(Dialect::Original),
                key: None
            }))
        );
        // A dialect from a later version is unknown, not an error.
        assert!(matches!(
            reply(r#"{"ip":"127.0.0.3","port":5001,"dialect":"klingon"}"#),
            Ok(Reply::Found(Contact { dialect: None, .. }))
        ));
        assert_eq!(reply(r#"{"ip":"None"}"#), Ok(Reply::NotFound));
        assert_eq!(reply(r#"{"ack":"Disconnected"}"#), Ok(Reply::Disconnected));
        assert_eq!(reply(r#"{"ack":"PONG"}"#), Ok(Reply::Pong));
        let Ok(Reply::Error { reason }) = reply(r#"{"ack":"Error","reason":"name is empty"}"#)
        else {
            panic!("error");
        };
        assert_eq!(reason.as_str(), "name is empty");
        let Ok(Reply::Users { names, more }) = reply(r#"{"users":["alice","bob"],"more":true}"#)
        else {
            panic!("users");
        };
        assert_eq!(names.as_slice(), &[name("alice"), name("bob")]);
        assert!(more);
        assert_eq!(
            reply(r#"{"users":[],"more":false}"#),
            Ok(Reply::Users {
                names: Page::new(),
                more: false
            })
        );
    }

    #[test]
    fn a_found_answer_gives_the_callee_s_key_when_the_server_has_one() {
        let key = PublicKey(core::array::from_fn(|i| i as u8));
        let text = format!(r#"{{"ip":"127.0.0.2","port":6000,"dialect":"parlo","key":"{key}"}}"#);
        assert_eq!(
            reply(&text),
            Ok(Reply::Found(Contact {
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                port: 6000,
                dialect: Some(Dialect::Parlo),
                key: Some(key)
            }))
        );
        // Without one (a plain registration, an older server), the contact has none.
        assert!(matches!(
            reply(r#"{"ip":"127.0.0.2","port":6000,"dialect":"parlo"}"#),
            Ok(Reply::Found(Contact { key: None, .. }))
        ));
        // A key that is not one is refused, not taken for none.
        for (bad, error) in [
            ("short=", parlo_fsm::KeyError::Length(6)),
            (&"A".repeat(60), parlo_fsm::KeyError::Length(60)),
            (&"!".repeat(44), parlo_fsm::KeyError::NotBase64),
        ] {
            let text = format!(r#"{{"ip":"127.0.0.2","key":"{bad}"}}"#);
            assert_eq!(reply(&text), Err(ReplyError::BadKey(error)), "{bad}");
        }
        assert!(
            ReplyError::BadKey(parlo_fsm::KeyError::NotBase64)
                .to_string()
                .contains("key")
        );
        let wrong_type = reply(r#"{"ip":"127.0.0.2","key":7}"#);
        assert!(
            matches!(wrong_type, Err(ReplyError::Malformed(_))),
            "{wrong_type:?}"
        );
    }

    #[test]
    fn original_server_responses() {
        // The original answers with Python's spacing, no port, no dialect, no reason, and
        // does not say what it is.
        assert_eq!(
            reply(r#"{"ack": "Registered successfully"}"#),
            Ok(Reply::Registered {
                server: ServerKind::Original
            })
        );
        assert_eq!(
            reply(r#"{"ip": "192.168.1.20"}"#),
            Ok(Reply::Found(Contact {
                ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
                port: DEFAULT_PEER_PORT,
                dialect: None,
                key: None
            }))
        );
        assert_eq!(
            reply(r#"{"ack": "Error"}"#),
            Ok(Reply::Error {
                reason: ServerText::default()
            })
        );
        assert_eq!(
            reply(r#"{"ack": "Error Registering"}"#),
            Ok(Reply::NameTaken {
                reason: ServerText::default()
            })
        );
        // Only "parlo" says Parlo.
        assert_eq!(
            reply(r#"{"ack":"Registered successfully","server":"other"}"#),
            Ok(Reply::Registered {
                server: ServerKind::Original
            })
        );
    }

    #[test]
    fn what_the_server_encodes_the_phone_parses() {
        let contact = Contact::registered(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), Some(5001));
        let original = Contact::registered(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4)), None);
        let keyed = contact.with_key(Some(PublicKey([0xfb; 32])));
        let names = [name("a\"b"), name("c\\d")];
        for (response, expected) in [
            (
                Response::Registered,
                Reply::Registered {
                    server: ServerKind::Parlo,
                },
            ),
            (Response::Found(original), Reply::Found(original)),
            (Response::Found(contact), Reply::Found(contact)),
            (Response::Found(keyed), Reply::Found(keyed)),
            (Response::NotFound, Reply::NotFound),
            (Response::Disconnected, Reply::Disconnected),
            (Response::Pong, Reply::Pong),
            (
                Response::Users {
                    names: &names,
                    more: false,
                },
                Reply::Users {
                    names: Page::from_slice(&names).expect("fits"),
                    more: false,
                },
            ),
        ] {
            let mut buf = [0u8; MAX_RESPONSE];
            let len = response.encode(&mut buf).expect("fits");
            let object = &buf[..len - 1];
            assert_eq!(Reply::parse(object), Ok(expected));
        }
        let mut buf = [0u8; MAX_RESPONSE];
        let len = Response::Error(Reason::ServerFull)
            .encode(&mut buf)
            .expect("fits");
        let Ok(Reply::Error { reason }) = Reply::parse(&buf[..len - 1]) else {
            panic!("error response");
        };
        assert_eq!(reason.as_str(), "server full, try again later");
    }

    #[test]
    fn what_a_server_says_is_escaped_before_anyone_prints_it() {
        let Ok(Reply::Error { reason }) =
            reply(r#"{"ack":"Error","reason":"\u001b[31mred\u0007 \r\nnext\tline\u202e=ok\\"}"#)
        else {
            panic!("an error reply");
        };
        assert_eq!(
            reason.as_str(),
            r"\u{1b}[31mred\u{7} \u{d}\u{a}next\u{9}line\u{202e}=ok\"
        );
        let Ok(Reply::NameTaken { reason }) =
            reply("{\"ack\":\"Error Registering\",\"reason\":\"\u{9b}2J caf\u{e9}\"}")
        else {
            panic!("a refusal");
        };
        assert_eq!(reason.as_str(), r"\u{9b}2J café");
        // Echoes of unknown values are escaped too, and all stay within their bounds.
        let Err(ReplyError::UnknownAck(ack)) = reply(r#"{"ack":"\u001b]0;owned\u0007"}"#) else {
            panic!("an unknown ack");
        };
        assert!(!ack.chars().any(char::is_control), "{ack:?}");
        let long = format!(r#"{{"ack":"Error","reason":"{}"}}"#, r"\u001b".repeat(200));
        let Ok(Reply::Error { reason }) = reply(&long) else {
            panic!("an error reply");
        };
        assert!(reason.as_str().len() <= MAX_REASON_LEN);
        assert!(reason.as_str().ends_with("\\u{1b}"), "cut between escapes");
    }

    #[test]
    fn bad_responses_say_what_is_wrong() {
        assert!(matches!(reply("{\"ack\":"), Err(ReplyError::Malformed(_))));
        assert!(matches!(reply("[1]"), Err(ReplyError::Malformed(_))));
        assert_eq!(reply(r#"{"x":1}"#), Err(ReplyError::NotAResponse));
        assert_eq!(
            reply(r#"{"ack":"Maybe"}"#),
            Err(ReplyError::UnknownAck(echo("Maybe")))
        );
        assert_eq!(
            reply(r#"{"ip":"not-an-ip"}"#),
            Err(ReplyError::BadIp(echo("not-an-ip")))
        );
        assert_eq!(
            reply(r#"{"ip":"127.0.0.1","port":0}"#),
            Err(ReplyError::BadPort(0))
        );
        assert_eq!(
            reply(r#"{"ip":"127.0.0.1","port":70000}"#),
            Err(ReplyError::BadPort(70000))
        );
        assert!(matches!(
            reply(r#"{"users":["has space"],"more":false}"#),
            Err(ReplyError::BadName(NameError::Whitespace { ch: ' ' }))
        ));
        let long = format!(r#"{{"users":["{}"],"more":false}}"#, "n".repeat(40));
        assert_eq!(
            reply(&long),
            Err(ReplyError::BadName(NameError::TooLong { len: 40 }))
        );
        let many: std::vec::Vec<String> = (0..=LIST_PAGE).map(|i| format!("\"u{i}\"")).collect();
        let many = format!(r#"{{"users":[{}],"more":true}}"#, many.join(","));
        assert_eq!(reply(&many), Err(ReplyError::TooManyNames));
        for error in [
            ReplyError::NotAResponse,
            ReplyError::BadPort(0),
            ReplyError::TooManyNames,
        ] {
            assert!(!error.to_string().is_empty());
        }
    }
}

#[cfg(test)]
mod client_side_properties {
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    /// Valid names: printable, no whitespace, 1 to 32 bytes.
    fn names() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_\\-\"\\\\é]{1,10}"
    }

    proptest! {
        #[test]
        fn reply_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Reply::parse(&bytes);
        }

        #[test]
        fn reply_parse_survives_mangled_responses(
            which in 0usize..4,
            cut in 0usize..80,
            flip in any::<u8>(),
            at in 0usize..80,
        ) {
            let valid = [
                &br#"{"ack":"Registered successfully"}"#[..],
                br#"{"ip":"127.0.0.2","port":5001}"#,
                br#"{"users":["alice","b\"ob"],"more":true}"#,
                br#"{"ack":"Error","reason":"name is empty"}"#,
            ][which];
            let mut bytes: Vec<u8> = valid.to_vec();
            if let Some(byte) = bytes.get_mut(at) {
                *byte ^= flip;
            }
            bytes.truncate(cut.max(1));
            let _ = Reply::parse(&bytes);
        }

        #[test]
        fn listed_names_come_back_as_sent(list in proptest::collection::vec(names(), 0..LIST_PAGE), more: bool) {
            let names: Vec<Name> = list.iter().map(|n| Name::new(n).expect("valid")).collect();
            let mut buf = [0u8; MAX_RESPONSE];
            let response = Response::Users { names: &names, more };
            if let Ok(len) = response.encode(&mut buf) {
                let reply = Reply::parse(&buf[..len - 1]);
                prop_assert_eq!(reply, Ok(Reply::Users {
                    names: Page::from_slice(&names).expect("fits"),
                    more,
                }));
            }
        }

        #[test]
        fn encoded_names_parse_back(name in names(), port in proptest::option::of(1u16..)) {
            let request = Request::Reg { name: Name::new(&name).expect("valid"), port };
            let mut buf = [0u8; MAX_ENCODED_REQUEST];
            let len = request.encode(&mut buf).expect("fits");
            prop_assert_eq!(Request::parse(&buf[..len - 1]), Ok(request));
        }
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use std::string::String;

    struct Keyed(Option<PublicKey>);

    impl Registry for Keyed {
        fn find(&self, _: &Name) -> Option<Contact> {
            None
        }
        fn insert(&mut self, _: &Name, _: Contact) {}
        fn remove(&mut self, _: &Name) {}
        fn page(&self, _: Option<&Name>, _: u32, _: &mut Page) -> bool {
            false
        }
        fn owner(&self, _: &Name) -> Owner {
            Owner::Free
        }
        fn bind(&mut self, _: &Name, _: &PublicKey) {}
        fn keys_required(&self) -> bool {
            false
        }
        fn server_key(&self) -> Option<PublicKey> {
            self.0
        }
    }

    fn answer(key: Option<PublicKey>) -> String {
        let mut buf = [0u8; MAX_ENCODED_REQUEST];
        let len = Request::Key.encode(&mut buf).expect("fits");
        let request = Request::parse(&buf[..len - 1]).expect("KEY parses");
        assert_eq!(request, Request::Key);
        let mut page = Page::new();
        let response = Session::new().handle_request(
            request,
            [127, 0, 0, 1].into(),
            &mut Keyed(key),
            &mut page,
        );
        let mut out = [0u8; MAX_RESPONSE];
        let len = response.encode(&mut out).expect("fits");
        String::from_utf8(out[..len].to_vec()).expect("UTF-8")
    }

    #[test]
    fn key_carries_a_name_for_the_original_server_and_gets_the_server_s_key() {
        let mut buf = [0u8; MAX_ENCODED_REQUEST];
        let len = Request::Key.encode(&mut buf).expect("fits");
        assert_eq!(
            &buf[..len],
            b"{\"command\":\"KEY\",\"name\":\"server key\"}\n"
        );
        let key = PublicKey([5; 32]);
        let text = answer(Some(key));
        assert_eq!(text, format!("{{\"server_key\":\"{key}\"}}\n"));
        assert_eq!(
            Reply::parse(text.trim_end().as_bytes()),
            Ok(Reply::Key(key))
        );
    }

    #[test]
    fn a_server_without_a_key_says_so() {
        let text = answer(None);
        assert!(text.contains("\"ack\":\"Error\""), "{text}");
        assert!(matches!(
            Reply::parse(text.trim_end().as_bytes()),
            Ok(Reply::Error { .. })
        ));
    }
}
