//! Message sessions on the wire: the lines of [`parlo_fsm::messages`], the line that
//! opens a session made only for messages, and the two lines members of a conference
//! ([`parlo_fsm::conference`]) send each other over their legs.
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
//! ROSTER <conf-id> <name>=<key> ...   the members of a conference, as the sender knows them
//! LINKS <conf-id> <seq> <name> ...    the members the sender holds a connected leg with
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
//! - `<conf-id>` is a [`ConfId`]: exactly 16 hexadecimal digits, read in either case,
//!   written in lower case.
//! - A `ROSTER` lists 1 to [`MAX_MEMBERS`] members, no name twice, each `<name>=<key>`:
//!   the key is 64 hexadecimal digits (the 32 bytes of a [`PublicKey`], read in either
//!   case, written in lower case), or `-` when the sender has not heard it yet.
//! - A `LINKS` gives `<seq>`, a decimal number up to 4294967295 without leading zeros
//!   (one more on each `LINKS` the sender sends), then 0 to [`MAX_MEMBERS`] names, no name
//!   twice.
//!
//! Keywords are upper case, fields separated by single spaces. Apart from a `MSG`'s text,
//! nothing is tolerated: no terminator, no trailing space, no unknown field. These lines
//! are Parlo's alone (no phone of the original project sends them), and a phone writes them
//! only as [`emit_session_line`] does.
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
//! packet) is `MSG`, `NAK`, `HELLO`, `ROSTER` or `LINKS`, or when it is `ACK` followed by a
//! space and a word without `=`. The call's `ACK call=0000002a` and the messenger's `ACK 0123456789abcdef`
//! share a keyword; every field of a signalling line is written `key=value`, so the first
//! word after `ACK` tells them apart, and a malformed messenger `ACK` (a short id, say)
//! still reaches [`parse`], whose error names what is wrong with it.
//!
//! Parsing and emitting never allocate and never panic, whatever the input.

use core::fmt;

use parlo_fsm::conference::{ConfId, Entry, MAX_MEMBERS, Roster};
use parlo_fsm::messages::{Line, MAX_TEXT, MessageId, Reason, Text};
pub use parlo_fsm::{MAX_NAME_LEN, NameError};
use parlo_fsm::{Name, PublicKey};

pub use crate::peer::Excerpt;

/// Longest line [`emit_session_line`] (and [`emit_line`], [`emit_hello`]) writes: a
/// buffer of this size always suffices. `MSG `, 16 digits, a space and [`MAX_TEXT`] bytes
/// of text; every other line is shorter (the longest roster is [`MAX_ROSTER_LEN`]).
pub const MAX_LINE: usize = PREFIX_LEN + MAX_TEXT;

/// Longest `ROSTER` line: `ROSTER `, 16 digits, and [`MAX_MEMBERS`] entries of a space,
/// a name of [`MAX_NAME_LEN`] bytes, `=` and a 64-digit key. Below [`MAX_LINE`].
pub const MAX_ROSTER_LEN: usize = 7 + CONF_ID_LEN + MAX_MEMBERS * (1 + MAX_NAME_LEN + 1 + KEY_LEN);

/// Longest `LINKS` line: `LINKS `, 16 digits, a space, a 10-digit number and
/// [`MAX_MEMBERS`] names of [`MAX_NAME_LEN`] bytes, each after a space.
pub const MAX_LINKS_LEN: usize = 6 + CONF_ID_LEN + 1 + 10 + MAX_MEMBERS * (1 + MAX_NAME_LEN);

// Every conference line fits the buffer every emitter is given.
const _: () = assert!(MAX_ROSTER_LEN <= MAX_LINE && MAX_LINKS_LEN <= MAX_LINE);

/// Digits of a written [`ConfId`].
const CONF_ID_LEN: usize = 16;

/// Digits of a written [`PublicKey`].
const KEY_LEN: usize = 2 * PublicKey::LEN;

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
    /// `ROSTER <conf-id> <name>=<key|-> ...`: the members of a conference, as the
    /// sending member knows them (itself included).
    Roster(Roster),
    /// `LINKS <conf-id> <seq> <name> ...`: the members the sender holds a connected leg
    /// with.
    Links {
        /// The conference.
        id: ConfId,
        /// The sender's LINKS number: one more on each it sends, so that an older one
        /// arriving late is known as such.
        seq: u32,
        /// The members the sender holds a connected leg with (none or up to
        /// [`MAX_MEMBERS`], no name twice).
        peers: heapless::Vec<Name, MAX_MEMBERS>,
    },
}

/// What went wrong while reading or writing a message-session line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The packet is empty.
    Empty,
    /// The first word is not `MSG`, `ACK`, `NAK`, `HELLO`, `ROSTER` or `LINKS`.
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
    /// `ROSTER` or `LINKS` without a conference id.
    MissingConfId {
        /// The line's keyword.
        keyword: &'static str,
    },
    /// The conference id is not exactly 16 hexadecimal digits.
    InvalidConfId {
        /// The line's keyword.
        keyword: &'static str,
        /// The word where the id was expected.
        found: Excerpt,
    },
    /// A `ROSTER` or `LINKS` has an empty word: two spaces in a row, or a space at the end.
    ExtraSpace {
        /// The line's keyword.
        keyword: &'static str,
        /// Offset in the packet of the extra space.
        offset: usize,
    },
    /// A `ROSTER` lists no member (it names the sender at least).
    NoMembers,
    /// A `ROSTER` entry is not written `<name>=<key>`.
    NotAnEntry(Excerpt),
    /// A name in a `ROSTER` or `LINKS` breaks the naming rule.
    MemberName {
        /// The line's keyword.
        keyword: &'static str,
        /// What is wrong with it.
        error: NameError,
    },
    /// A `ROSTER` key is neither 64 hexadecimal digits nor `-`.
    InvalidKey {
        /// The member whose key it is.
        name: Name,
        /// The key as written.
        found: Excerpt,
    },
    /// A `ROSTER` or `LINKS` names more than [`MAX_MEMBERS`] members.
    TooManyMembers {
        /// The line's keyword.
        keyword: &'static str,
    },
    /// A `ROSTER` or `LINKS` names a member twice.
    DuplicateMember {
        /// The line's keyword.
        keyword: &'static str,
        /// The name given twice.
        name: Name,
    },
    /// `LINKS <conf-id>` without its number.
    MissingSeq,
    /// The number of a `LINKS` is not a decimal number up to 4294967295 without leading
    /// zeros.
    InvalidSeq(Excerpt),
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
                "empty message-session packet: expected a line starting with MSG, ACK, NAK, HELLO, ROSTER or LINKS"
            ),
            Error::UnknownKeyword(word) => write!(
                f,
                "unknown message-session keyword \"{word}\": expected MSG, ACK, NAK, HELLO, ROSTER or LINKS"
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
            Error::MissingConfId { keyword } => write!(
                f,
                "{keyword} without a conference id: expected \"{keyword} <16 hexadecimal digits> ...\""
            ),
            Error::InvalidConfId { keyword, found } => write!(
                f,
                "invalid conference id \"{found}\" in {keyword}: expected exactly 16 hexadecimal digits"
            ),
            Error::ExtraSpace { keyword, offset } => write!(
                f,
                "{keyword} line has an extra space at byte {offset}: words are separated by single spaces, with none at the end"
            ),
            Error::NoMembers => write!(
                f,
                "ROSTER lists no member: expected at least the sender's \"<name>=<key>\""
            ),
            Error::NotAnEntry(word) => write!(
                f,
                "unexpected \"{word}\" in ROSTER: expected a member written <name>=<key> or <name>=-"
            ),
            Error::MemberName { keyword, error } => {
                write!(f, "invalid member name in {keyword}: {error}")
            }
            Error::InvalidKey { name, found } => write!(
                f,
                "invalid key \"{found}\" for {name} in ROSTER: expected 64 hexadecimal digits or -"
            ),
            Error::TooManyMembers { keyword } => write!(
                f,
                "{keyword} names more than {MAX_MEMBERS} members: a conference has at most {MAX_MEMBERS}"
            ),
            Error::DuplicateMember { keyword, name } => {
                write!(f, "{keyword} names {name} twice: expected each member once")
            }
            Error::MissingSeq => write!(
                f,
                "LINKS without its number: expected \"LINKS <conference id> <number> <name> ...\""
            ),
            Error::InvalidSeq(word) => write!(
                f,
                "invalid LINKS number \"{word}\": expected a decimal number from 0 to 4294967295 without leading zeros"
            ),
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
/// `MSG`, `NAK`, `HELLO`, `ROSTER` or `LINKS`, or it is `ACK` followed by a space and a
/// word without `=` (see the module docs). It says no to every valid call signalling
/// line, yes to every line [`emit_session_line`] writes, and looks at no more than the
/// first two words.
pub fn is_session_line(inner: &[u8]) -> bool {
    let (keyword, rest) = split_word(inner);
    match keyword {
        b"MSG" | b"NAK" | b"HELLO" | b"ROSTER" | b"LINKS" => true,
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
        b"ROSTER" => return parse_roster(at, rest).map(SessionLine::Roster),
        b"LINKS" => return parse_links(at, rest),
        other => return Err(Error::UnknownKeyword(excerpt(other))),
    };
    Ok(SessionLine::Message(line))
}

/// Writes any session line into `out`, without a line terminator, and returns its
/// length: the one emitter of this module, which the others serve.
///
/// A buffer of [`MAX_LINE`] bytes always suffices. What cannot travel is refused, and
/// nothing is written: a [`Line::Oversize`] (its text was not kept), a `NAK` with a
/// reason that never travels, a roster with no member or a name twice, links with a
/// name twice.
pub fn emit_session_line(line: &SessionLine, out: &mut [u8]) -> Result<usize, Error> {
    match line {
        SessionLine::Hello(name) => emit_hello(name, out),
        SessionLine::Message(line) => emit_line(line, out),
        SessionLine::Roster(roster) => emit_roster(roster, out),
        SessionLine::Links { id, seq, peers } => emit_links(*id, *seq, peers, out),
    }
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

fn emit_roster(roster: &Roster, out: &mut [u8]) -> Result<usize, Error> {
    if roster.members.is_empty() {
        return Err(Error::NoMembers);
    }
    if let Some(name) = twice(roster.members.iter().map(|entry| &entry.name)) {
        return Err(Error::DuplicateMember {
            keyword: "ROSTER",
            name: name.clone(),
        });
    }
    let entries: usize = roster
        .members
        .iter()
        .map(|entry| 1 + entry.name.as_str().len() + 1 + entry.key.map_or(1, |_| KEY_LEN))
        .sum();
    let mut writer = Writer::new(out);
    writer.need(7 + CONF_ID_LEN + entries)?;
    writer.put(b"ROSTER ");
    writer.put_hex(roster.id.0.to_be_bytes());
    for entry in &roster.members {
        writer.put(b" ");
        writer.put(entry.name.as_str().as_bytes());
        writer.put(b"=");
        match entry.key {
            Some(key) => writer.put_hex(key.0),
            None => writer.put(b"-"),
        }
    }
    Ok(writer.len)
}

fn emit_links(id: ConfId, seq: u32, peers: &[Name], out: &mut [u8]) -> Result<usize, Error> {
    if let Some(name) = twice(peers.iter()) {
        return Err(Error::DuplicateMember {
            keyword: "LINKS",
            name: name.clone(),
        });
    }
    let mut digits = [0u8; 10];
    let seq = decimal(seq, &mut digits);
    let names: usize = peers.iter().map(|name| 1 + name.as_str().len()).sum();
    let mut writer = Writer::new(out);
    writer.need(6 + CONF_ID_LEN + 1 + seq.len() + names)?;
    writer.put(b"LINKS ");
    writer.put_hex(id.0.to_be_bytes());
    writer.put(b" ");
    writer.put(seq);
    for name in peers {
        writer.put(b" ");
        writer.put(name.as_str().as_bytes());
    }
    Ok(writer.len)
}

/// The first name met a second time, if any.
fn twice<'a>(names: impl Iterator<Item = &'a Name> + Clone) -> Option<&'a Name> {
    names
        .clone()
        .enumerate()
        .find(|(i, name)| names.clone().take(*i).any(|earlier| earlier == *name))
        .map(|(_, name)| name)
}

/// `value` in decimal, written into the end of `digits`.
fn decimal(mut value: u32, digits: &mut [u8; 10]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        // Truncation intended: a remainder of 10 is below 256.
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[start..]
}

/// The words of a `ROSTER` or `LINKS` after its keyword (`at`: the offset of `rest` in
/// the packet). An empty word (two spaces in a row, a space at
/// the end) is an error at the extra space: the second of two, or the last byte.
fn words<'a>(
    keyword: &'static str,
    at: usize,
    rest: &'a [u8],
) -> impl Iterator<Item = Result<&'a [u8], Error>> + 'a {
    let end = at + rest.len();
    let mut offset = at;
    rest.split(|&byte| byte == b' ').map(move |word| {
        let start = offset;
        offset += word.len() + 1;
        if word.is_empty() {
            Err(Error::ExtraSpace {
                keyword,
                offset: if start < end { start } else { end - 1 },
            })
        } else {
            Ok(word)
        }
    })
}

/// Reads the conference id that starts a `ROSTER` or `LINKS`.
fn conf_id(keyword: &'static str, word: Option<Result<&[u8], Error>>) -> Result<ConfId, Error> {
    let word = word.ok_or(Error::MissingConfId { keyword })??;
    core::str::from_utf8(word)
        .ok()
        .and_then(ConfId::parse)
        .ok_or_else(|| Error::InvalidConfId {
            keyword,
            found: excerpt(word),
        })
}

fn member_name(keyword: &'static str, word: &[u8]) -> Result<Name, Error> {
    Name::from_bytes(word).map_err(|error| Error::MemberName { keyword, error })
}

/// `ROSTER <conf-id> <name>=<key|-> ...`; `rest` follows the keyword's space at `at`.
fn parse_roster(at: usize, rest: Option<&[u8]>) -> Result<Roster, Error> {
    const KEYWORD: &str = "ROSTER";
    let rest = rest
        .filter(|rest| !rest.is_empty())
        .ok_or(Error::MissingConfId { keyword: KEYWORD })?;
    let mut words = words(KEYWORD, at, rest);
    let id = conf_id(KEYWORD, words.next())?;
    let mut members: heapless::Vec<Entry, MAX_MEMBERS> = heapless::Vec::new();
    for word in words {
        let word = word?;
        let Some(equals) = word.iter().position(|&byte| byte == b'=') else {
            return Err(Error::NotAnEntry(excerpt(word)));
        };
        let (name, key) = (&word[..equals], &word[equals + 1..]);
        if name.is_empty() {
            return Err(Error::NotAnEntry(excerpt(word)));
        }
        let name = member_name(KEYWORD, name)?;
        let key = match key {
            b"-" => None,
            digits => Some(parse_key(digits).ok_or_else(|| Error::InvalidKey {
                name: name.clone(),
                found: excerpt(digits),
            })?),
        };
        if members.iter().any(|entry| entry.name == name) {
            return Err(Error::DuplicateMember {
                keyword: KEYWORD,
                name,
            });
        }
        members
            .push(Entry { name, key })
            .map_err(|_| Error::TooManyMembers { keyword: KEYWORD })?;
    }
    if members.is_empty() {
        return Err(Error::NoMembers);
    }
    Ok(Roster { id, members })
}

/// `LINKS <conf-id> <seq> <name> ...`; `rest` follows the keyword's space at `at`.
fn parse_links(at: usize, rest: Option<&[u8]>) -> Result<SessionLine, Error> {
    const KEYWORD: &str = "LINKS";
    let rest = rest
        .filter(|rest| !rest.is_empty())
        .ok_or(Error::MissingConfId { keyword: KEYWORD })?;
    let mut words = words(KEYWORD, at, rest);
    let id = conf_id(KEYWORD, words.next())?;
    let seq = words.next().ok_or(Error::MissingSeq)??;
    let seq = parse_seq(seq).ok_or_else(|| Error::InvalidSeq(excerpt(seq)))?;
    let mut peers: heapless::Vec<Name, MAX_MEMBERS> = heapless::Vec::new();
    for word in words {
        let word = word?;
        let name = member_name(KEYWORD, word)?;
        if peers.contains(&name) {
            return Err(Error::DuplicateMember {
                keyword: KEYWORD,
                name,
            });
        }
        peers
            .push(name)
            .map_err(|_| Error::TooManyMembers { keyword: KEYWORD })?;
    }
    Ok(SessionLine::Links { id, seq, peers })
}

/// A decimal `u32` without sign or leading zeros.
fn parse_seq(word: &[u8]) -> Option<u32> {
    if word.is_empty() || word.len() > 10 || (word.len() > 1 && word[0] == b'0') {
        return None;
    }
    word.iter().try_fold(0u32, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value.checked_mul(10)?.checked_add(digit)
    })
}

/// Exactly 64 hexadecimal digits, in either case: the 32 bytes of a key.
fn parse_key(word: &[u8]) -> Option<PublicKey> {
    if word.len() != KEY_LEN {
        return None;
    }
    let mut key = [0u8; PublicKey::LEN];
    for (byte, pair) in key.iter_mut().zip(word.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        // Truncation intended: two hexadecimal digits make a byte.
        *byte = (high << 4 | low) as u8;
    }
    Some(PublicKey(key))
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

    /// Appends `bytes` as hexadecimal digits, two a byte, in lower case.
    fn put_hex<const N: usize>(&mut self, bytes: [u8; N]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in bytes {
            self.put(&[
                DIGITS[usize::from(byte >> 4)],
                DIGITS[usize::from(byte & 0xf)],
            ]);
        }
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
            other => panic!("expected a message line, got {other:?}"),
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
        assert!(
            shown.contains("expected a line starting with MSG, ACK, NAK, HELLO, ROSTER or LINKS")
        );
    }

    #[test]
    fn unknown_keywords_are_named() {
        let (error, shown) = refused(b"msg 0123456789abcdef hi");
        assert!(matches!(&error, Error::UnknownKeyword(word) if word.as_str() == "msg"));
        assert_eq!(
            shown,
            "unknown message-session keyword \"msg\": expected MSG, ACK, NAK, HELLO, ROSTER or LINKS"
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

    // --- conference lines ---------------------------------------------------------------

    const CONF: ConfId = ConfId(0x0123_4567_89ab_cdef);

    /// The key whose 32 bytes are all `byte`.
    fn key(byte: u8) -> PublicKey {
        PublicKey([byte; PublicKey::LEN])
    }

    fn roster(entries: &[(&str, Option<PublicKey>)]) -> SessionLine {
        let mut members = heapless::Vec::new();
        for (n, key) in entries {
            members
                .push(Entry {
                    name: name(n),
                    key: *key,
                })
                .expect("at most MAX_MEMBERS in a test");
        }
        SessionLine::Roster(Roster { id: CONF, members })
    }

    fn links(seq: u32, peers: &[&str]) -> SessionLine {
        let mut names = heapless::Vec::new();
        for n in peers {
            names.push(name(n)).expect("at most MAX_MEMBERS in a test");
        }
        SessionLine::Links {
            id: CONF,
            seq,
            peers: names,
        }
    }

    fn emitted_session(line: &SessionLine) -> Vec<u8> {
        let mut buf = [0u8; MAX_LINE];
        let len = emit_session_line(line, &mut buf).expect("MAX_LINE suffices");
        buf[..len].to_vec()
    }

    #[test]
    fn conference_lines_have_fixed_bytes() {
        let ab = "ab".repeat(32);
        let cases = [
            (
                format!("ROSTER 0123456789abcdef alice={ab} bob=-"),
                roster(&[("alice", Some(key(0xab))), ("bob", None)]),
            ),
            (
                "ROSTER 0123456789abcdef carol=-".to_string(),
                roster(&[("carol", None)]),
            ),
            (
                "LINKS 0123456789abcdef 3 bob carol".to_string(),
                links(3, &["bob", "carol"]),
            ),
            ("LINKS 0123456789abcdef 0".to_string(), links(0, &[])),
            (
                "LINKS 0123456789abcdef 4294967295 zoë".to_string(),
                links(u32::MAX, &["zoë"]),
            ),
        ];
        for (bytes, line) in cases {
            assert_eq!(parse(bytes.as_bytes()), Ok(line.clone()), "{bytes}");
            assert_eq!(emitted_session(&line), bytes.as_bytes(), "{bytes}");
            assert!(is_session_line(bytes.as_bytes()), "{bytes}");
            assert!(Message::parse(bytes.as_bytes()).is_err(), "{bytes}");
        }
        // Ids and keys are read in either case, written in lower case.
        let upper = format!("ROSTER 0123456789ABCDEF alice={}", "AB".repeat(32));
        let line = parse(upper.as_bytes()).expect("valid");
        assert_eq!(line, roster(&[("alice", Some(key(0xab)))]));
        let lower = format!("ROSTER 0123456789abcdef alice={}", "ab".repeat(32));
        assert_eq!(emitted_session(&line), lower.as_bytes());
    }

    #[test]
    fn the_one_emitter_writes_every_line() {
        let cases = [
            (SessionLine::Hello(name("alice")), &b"HELLO alice"[..]),
            (
                SessionLine::Message(Line::Ack { id: ID }),
                b"ACK 0123456789abcdef",
            ),
            (links(1, &["bob"]), b"LINKS 0123456789abcdef 1 bob"),
        ];
        for (line, bytes) in cases {
            assert_eq!(emitted_session(&line), bytes);
            assert_eq!(parse(bytes), Ok(line));
        }
        let mut buf = [0u8; MAX_LINE];
        assert_eq!(
            emit_session_line(&SessionLine::Message(Line::Oversize { id: ID }), &mut buf),
            Err(Error::Oversize { id: ID })
        );
    }

    #[test]
    fn the_longest_conference_lines_fit_max_line() {
        let long: Vec<std::string::String> = (0..MAX_MEMBERS)
            .map(|i| format!("{i}{}", "é".repeat((MAX_NAME_LEN - 1) / 2)))
            .map(|n| {
                let mut n = n;
                while n.len() < MAX_NAME_LEN {
                    n.push('x');
                }
                n
            })
            .collect();
        let entries: Vec<(&str, Option<PublicKey>)> =
            long.iter().map(|n| (n.as_str(), Some(key(0xff)))).collect();
        let longest = roster(&entries);
        let bytes = emitted_session(&longest);
        assert_eq!(bytes.len(), MAX_ROSTER_LEN);
        assert_eq!(MAX_ROSTER_LEN, 807);
        const { assert!(MAX_ROSTER_LEN <= MAX_LINE) };
        assert_eq!(parse(&bytes), Ok(longest));
        let names: Vec<&str> = long.iter().map(std::string::String::as_str).collect();
        let longest = links(u32::MAX, &names);
        let bytes = emitted_session(&longest);
        assert_eq!(bytes.len(), MAX_LINKS_LEN);
        const { assert!(MAX_LINKS_LEN <= MAX_LINE) };
        assert_eq!(parse(&bytes), Ok(longest));
        // A short buffer is reported and left alone.
        let mut short = [0u8; MAX_ROSTER_LEN - 1];
        assert_eq!(
            emit_session_line(&roster(&entries), &mut short),
            Err(Error::BufferTooSmall {
                needed: MAX_ROSTER_LEN,
                available: MAX_ROSTER_LEN - 1
            })
        );
        assert!(short.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_roster_needs_a_conference_id() {
        for line in [&b"ROSTER"[..], b"ROSTER "] {
            let (error, shown) = refused(line);
            assert_eq!(
                error,
                Error::MissingConfId { keyword: "ROSTER" },
                "{line:?}"
            );
            assert_eq!(
                shown,
                "ROSTER without a conference id: expected \"ROSTER <16 hexadecimal digits> ...\""
            );
        }
        assert_eq!(
            refused(b"LINKS").0,
            Error::MissingConfId { keyword: "LINKS" }
        );
        for (line, found) in [
            (&b"ROSTER 0123 a=-"[..], "0123"),
            (b"ROSTER 0123456789abcdef0 a=-", "0123456789abcdef0"),
            (b"ROSTER +123456789abcdef a=-", "+123456789abcdef"),
            (b"ROSTER 0123456789abcdeg a=-", "0123456789abcdeg"),
            (b"ROSTER \xff a=-", "\u{fffd}"),
        ] {
            let (error, _) = refused(line);
            let Error::InvalidConfId {
                keyword: "ROSTER",
                found: got,
            } = &error
            else {
                panic!("{line:?}: expected InvalidConfId, got {error:?}");
            };
            assert_eq!(got.as_str(), found, "{line:?}");
        }
        let (_, shown) = refused(b"LINKS 12 1");
        assert_eq!(
            shown,
            "invalid conference id \"12\" in LINKS: expected exactly 16 hexadecimal digits"
        );
    }

    #[test]
    fn a_roster_lists_one_to_eight_members() {
        let (error, shown) = refused(b"ROSTER 0123456789abcdef");
        assert_eq!(error, Error::NoMembers);
        assert_eq!(
            shown,
            "ROSTER lists no member: expected at least the sender's \"<name>=<key>\""
        );
        let mut nine = b"ROSTER 0123456789abcdef".to_vec();
        for i in 0..=MAX_MEMBERS {
            nine.extend_from_slice(format!(" p{i}=-").as_bytes());
        }
        let (error, shown) = refused(&nine);
        assert_eq!(error, Error::TooManyMembers { keyword: "ROSTER" });
        assert_eq!(
            shown,
            "ROSTER names more than 8 members: a conference has at most 8"
        );
        // Eight is the most.
        let eight = &nine[..nine.len() - " p8=-".len()];
        assert!(
            matches!(parse(eight), Ok(SessionLine::Roster(r)) if r.members.len() == MAX_MEMBERS)
        );
        // The emitter refuses a roster the parser would.
        let mut buf = [0u8; MAX_LINE];
        assert_eq!(
            emit_session_line(&roster(&[]), &mut buf),
            Err(Error::NoMembers)
        );
    }

    #[test]
    fn a_roster_names_each_member_once() {
        let (error, shown) = refused(b"ROSTER 0123456789abcdef bob=- alice=- bob=-");
        assert_eq!(
            error,
            Error::DuplicateMember {
                keyword: "ROSTER",
                name: name("bob")
            }
        );
        assert_eq!(shown, "ROSTER names bob twice: expected each member once");
        // Another key does not make another member.
        let line = format!("ROSTER 0123456789abcdef bob=- bob={}", "00".repeat(32));
        assert!(matches!(
            refused(line.as_bytes()).0,
            Error::DuplicateMember { .. }
        ));
        let mut buf = [0u8; MAX_LINE];
        assert_eq!(
            emit_session_line(&roster(&[("bob", None), ("bob", Some(key(1)))]), &mut buf),
            Err(Error::DuplicateMember {
                keyword: "ROSTER",
                name: name("bob")
            })
        );
    }

    #[test]
    fn a_roster_entry_is_a_name_and_a_key() {
        for (line, found) in [
            (&b"ROSTER 0123456789abcdef alice"[..], "alice"),
            (b"ROSTER 0123456789abcdef =-", "=-"),
        ] {
            let (error, _) = refused(line);
            assert_eq!(
                error,
                Error::NotAnEntry(excerpt(found.as_bytes())),
                "{line:?}"
            );
        }
        let (_, shown) = refused(b"ROSTER 0123456789abcdef alice");
        assert_eq!(
            shown,
            "unexpected \"alice\" in ROSTER: expected a member written <name>=<key> or <name>=-"
        );
        let (error, shown) = refused(b"ROSTER 0123456789abcdef al\x1bice=-");
        assert!(
            matches!(
                error,
                Error::MemberName {
                    keyword: "ROSTER",
                    error: NameError::Invisible { .. }
                }
            ),
            "{error:?}"
        );
        assert!(
            shown.starts_with("invalid member name in ROSTER: "),
            "{shown}"
        );
        let too_long = format!("ROSTER 0123456789abcdef {}=-", "n".repeat(33));
        assert_eq!(
            refused(too_long.as_bytes()).0,
            Error::MemberName {
                keyword: "ROSTER",
                error: NameError::TooLong { len: 33 }
            }
        );
        for key in [
            "",
            "--",
            "ab",
            &"ab".repeat(33),
            &format!("{}g", "a".repeat(63)),
            &format!("+{}", "a".repeat(63)),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            let line = format!("ROSTER 0123456789abcdef alice={key}");
            let (error, _) = refused(line.as_bytes());
            let Error::InvalidKey { name: who, found } = &error else {
                panic!("{key:?}: expected InvalidKey, got {error:?}");
            };
            assert_eq!(who, &name("alice"));
            assert_eq!(found, &excerpt(key.as_bytes()), "{key:?}");
        }
        let (_, shown) = refused(b"ROSTER 0123456789abcdef alice=ab");
        assert_eq!(
            shown,
            "invalid key \"ab\" for alice in ROSTER: expected 64 hexadecimal digits or -"
        );
    }

    #[test]
    fn links_carry_a_decimal_number_and_distinct_names() {
        let (error, shown) = refused(b"LINKS 0123456789abcdef");
        assert_eq!(error, Error::MissingSeq);
        assert_eq!(
            shown,
            "LINKS without its number: expected \"LINKS <conference id> <number> <name> ...\""
        );
        for seq in ["", "-1", "+1", "01", "4294967296", "99999999999", "1a", "x"] {
            let line = format!("LINKS 0123456789abcdef {seq} bob");
            let (error, _) = refused(line.as_bytes());
            if seq.is_empty() {
                assert!(matches!(error, Error::ExtraSpace { .. }), "{error:?}");
                continue;
            }
            assert_eq!(error, Error::InvalidSeq(excerpt(seq.as_bytes())), "{seq:?}");
        }
        let (_, shown) = refused(b"LINKS 0123456789abcdef 01");
        assert_eq!(
            shown,
            "invalid LINKS number \"01\": expected a decimal number from 0 to 4294967295 without leading zeros"
        );
        let (error, _) = refused(b"LINKS 0123456789abcdef 1 bob carol bob");
        assert_eq!(
            error,
            Error::DuplicateMember {
                keyword: "LINKS",
                name: name("bob")
            }
        );
        let mut nine = b"LINKS 0123456789abcdef 1".to_vec();
        for i in 0..=MAX_MEMBERS {
            nine.extend_from_slice(format!(" p{i}").as_bytes());
        }
        assert_eq!(refused(&nine).0, Error::TooManyMembers { keyword: "LINKS" });
        assert_eq!(
            refused(b"LINKS 0123456789abcdef 1 a=b").0,
            Error::MemberName {
                keyword: "LINKS",
                error: NameError::Equals
            }
        );
        let mut buf = [0u8; MAX_LINE];
        assert_eq!(
            emit_session_line(&links(2, &["bob", "bob"]), &mut buf),
            Err(Error::DuplicateMember {
                keyword: "LINKS",
                name: name("bob")
            })
        );
    }

    #[test]
    fn conference_lines_have_single_spaces_and_none_at_the_end() {
        for (line, keyword, offset) in [
            (&b"ROSTER  0123456789abcdef a=-"[..], "ROSTER", 7),
            (b"ROSTER 0123456789abcdef  a=-", "ROSTER", 24),
            (b"ROSTER 0123456789abcdef a=- ", "ROSTER", 27),
            (b"LINKS 0123456789abcdef 1 ", "LINKS", 24),
            (b"LINKS 0123456789abcdef 1 bob  carol", "LINKS", 29),
            (b"LINKS 0123456789abcdef ", "LINKS", 22),
        ] {
            let (error, _) = refused(line);
            assert_eq!(error, Error::ExtraSpace { keyword, offset }, "{line:?}");
            assert_eq!(line[offset], b' ', "{line:?}");
        }
        let (_, shown) = refused(b"LINKS 0123456789abcdef 1 ");
        assert_eq!(
            shown,
            "LINKS line has an extra space at byte 24: words are separated by single spaces, with none at the end"
        );
        // No line terminator either: the lines carry none.
        assert!(parse(b"LINKS 0123456789abcdef 1\n").is_err());
        assert!(parse(b"ROSTER 0123456789abcdef a=-\r\n").is_err());
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
            b"ROSTERS x",
            b"LINK 0123456789abcdef 1",
            b"\x80\x60\x00\x01",
        ] {
            assert!(!is_session_line(line), "{line:?}");
        }
        for line in [
            &b"MSG"[..],
            b"NAK",
            b"HELLO",
            b"MSG x",
            b"HELLO alice",
            b"ROSTER",
            b"LINKS",
            b"ROSTER 0123456789abcdef alice=-",
            b"LINKS 0123456789abcdef 1 bob",
        ] {
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
            b"ROSTER 0123456789abcdef alice=-",
            b"LINKS 0123456789abcdef 1 bob",
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

        fn conf_ids() -> impl Strategy<Value = ConfId> {
            any::<u64>().prop_map(ConfId)
        }

        /// Up to MAX_MEMBERS distinct names.
        fn distinct_names(least: usize) -> impl Strategy<Value = heapless::Vec<Name, MAX_MEMBERS>> {
            proptest::collection::vec(names(), least..=MAX_MEMBERS).prop_map(|names| {
                let mut distinct = heapless::Vec::new();
                for name in names {
                    if !distinct.contains(&name) {
                        let _ = distinct.push(name);
                    }
                }
                distinct
            })
        }

        fn conference_lines() -> impl Strategy<Value = SessionLine> {
            prop_oneof![
                (
                    conf_ids(),
                    distinct_names(1),
                    proptest::collection::vec(proptest::option::of(any::<[u8; 32]>()), MAX_MEMBERS),
                )
                    .prop_map(|(id, names, keys)| {
                        let mut members = heapless::Vec::new();
                        for (name, key) in names.into_iter().zip(keys) {
                            let _ = members.push(Entry {
                                name,
                                key: key.map(PublicKey),
                            });
                        }
                        SessionLine::Roster(Roster { id, members })
                    }),
                (conf_ids(), any::<u32>(), distinct_names(0))
                    .prop_map(|(id, seq, peers)| SessionLine::Links { id, seq, peers }),
            ]
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
            fn emit_then_parse_gives_the_conference_line_back(line in conference_lines()) {
                let mut buf = [0u8; MAX_LINE];
                let len = emit_session_line(&line, &mut buf).expect("MAX_LINE suffices");
                prop_assert!(is_session_line(&buf[..len]));
                prop_assert!(Message::parse(&buf[..len]).is_err());
                prop_assert_eq!(parse(&buf[..len]), Ok(line));
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
                        proptest::sample::select(vec![
                            "MSG ", "ACK ", "NAK ", "HELLO ", "MSG 0123456789abcdef ",
                            "NAK 0123456789abcdef ", "ROSTER ", "ROSTER 0123456789abcdef ",
                            "ROSTER 0123456789abcdef alice=", "LINKS ", "LINKS 0123456789abcdef ",
                            "LINKS 0123456789abcdef 7 ",
                        ]),
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
                    Ok(line @ (SessionLine::Roster(_) | SessionLine::Links { .. })) => {
                        let len = emit_session_line(&line, &mut buf).expect("MAX_LINE suffices");
                        // The same bytes, but the case of ids and keys.
                        prop_assert!(buf[..len].eq_ignore_ascii_case(&bytes));
                        prop_assert_eq!(parse(&buf[..len]), Ok(line));
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
