//! Events: what the phone tells its user, one line each, as text or as JSON.
//!
//! Text: the event's name, then the peer's name when there is one, then `key=value`
//! fields; a free-text `reason=` always comes last and runs to the end of the line.
//! JSON (`--json`): one object per line, `"event"` first, then `"peer"` and the fields.
//!
//! ```text
//! registered alice server=127.0.0.1:10000     {"event":"registered","name":"alice","server":"127.0.0.1:10000"}
//! unregistered reason=TEXT                    {"event":"unregistered","reason":"TEXT"}
//! calling bob                                 {"event":"calling","peer":"bob"}
//! ringing bob                                 {"event":"ringing","peer":"bob"}
//! incoming bob from=127.0.0.2:5001 verified=key new=yes
//!                                             {"event":"incoming","peer":"bob","from":"127.0.0.2:5001","verified":"key","new":true}
//! incoming bob from=127.0.0.2:5001 verified=plaintext address=yes
//!                                             {"event":"incoming","peer":"bob","from":"127.0.0.2:5001","verified":"plaintext","new":false,"address":true}
//! connected bob dialect=parlo codec=L16 verified=key code=0123-4567
//!                                             {"event":"connected","peer":"bob","dialect":"parlo","codec":"L16","verified":"key","new":false,"code":"0123-4567"}
//! trusted bob key=KEY fingerprint=FP          {"event":"trusted","peer":"bob","key":"KEY","fingerprint":"FP"}
//! sending ID to=bob                           {"event":"sending","id":"ID","to":"bob"}
//! delivered ID to=bob                         {"event":"delivered","id":"ID","to":"bob"}
//! undelivered ID to=bob reason=unreachable    {"event":"undelivered","id":"ID","to":"bob","reason":"unreachable"}
//! message alice id=ID verified=key text=TEXT  {"event":"message","peer":"alice","id":"ID","verified":"key","text":"TEXT"}
//! ended bob reason=hangup                     {"event":"ended","peer":"bob","reason":"hangup"}
//! users alice bob                             {"event":"users","users":["alice","bob"]}
//! status state=in-call peer=bob ...           {"event":"status","state":"in-call","peer":"bob",...}
//! status state=idle registered=no ... reason=TEXT
//!                                             {"event":"status","state":"idle","registered":false,"reason":"TEXT",...}
//! help call NAME|accept|...                   {"event":"help","commands":["call NAME",...]}
//! bye                                         {"event":"bye"}
//! error reason=TEXT                           {"event":"error","reason":"TEXT"}
//! ```
//! `verified` says how the peer is verified: `key`, `unbound`, `no`, `unknown` or
//! `plaintext` (see [`parlo_fsm::Verification`]); `new=yes` (JSON `"new":true`) when its
//! key was seen for the first time and pinned. A plaintext caller's `address` says
//! whether the directory gives its name the IP address the call came from: `yes`, `no`,
//! or `unknown` (JSON `true`, `false`, `null`) when the directory could not be asked;
//! it is absent for an encrypted call. `code` is the short code of an encrypted call's
//! session, for the two users to read to each other (a man in the middle makes two
//! sessions with two different codes); a plaintext call has none. `trusted` answers
//! `trust NAME [KEY]`: the key now pinned for that name. `status`
//! says `registered=yes` while the directory holds the phone's registration; otherwise
//! `registered=no` and, last, why and when the next attempt is (`reason=`: the name taken,
//! the server unreachable, the first attempt under way).
//!
//! Every text in an event is escaped ([`Escaped`]): control characters (ESC, BEL, C1...),
//! DEL and invisible or reordering characters are written visibly (`\u{1b}` in text,
//! `\u001b` in JSON), so that a directory server's reason or a user's words cannot drive
//! the terminal, forge an event or hide text; in text form line breaks become spaces.
//! The control socket's answers are these same lines.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::media::MediaStats;

use parlo_fsm::{Escaped, Verification};

/// The commands, as `help` lists them.
pub const COMMANDS: [&str; 14] = [
    "call NAME",
    "accept",
    "reject",
    "hangup",
    "conf NAME...",
    "invite NAME",
    "list",
    "status",
    "msg NAME TEXT",
    "trust NAME [KEY]",
    "quit",
    "help",
    "watch [text|json]",
    "format text|json",
];

/// How lines are written: the phone's stdout by `--json`, each control connection as it
/// chooses (`format`, `watch json`), the phone's by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text lines: the event's name, the peer, `key=value` fields.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// `--json` or not.
    pub fn of(json: bool) -> Format {
        if json { Format::Json } else { Format::Text }
    }

    /// The format a word names: `text` or `json`, in any case.
    pub fn from_name(word: &str) -> Option<Format> {
        if word.eq_ignore_ascii_case("text") {
            Some(Format::Text)
        } else if word.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// Its name, as `format` and `watch` take it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// Whether the directory holds the phone's registration, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// It does.
    Registered,
    /// It does not: why, and when the next attempt is, in words.
    Unregistered {
        /// Why (empty when there is nothing to say).
        reason: String,
    },
}

impl Default for Registration {
    fn default() -> Self {
        Registration::Unregistered {
            reason: String::new(),
        }
    }
}

impl Registration {
    /// Whether the directory holds the registration.
    pub fn is_registered(&self) -> bool {
        *self == Registration::Registered
    }

    /// Why not, when there is something to say.
    fn reason(&self) -> Option<&str> {
        match self {
            Registration::Unregistered { reason } if !reason.is_empty() => Some(reason),
            _ => None,
        }
    }
}

/// The `status` answer: the call state and the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `idle`, `dialing`, `ringing`, `in-call`, `closing`.
    pub state: &'static str,
    /// The other side, if any.
    pub peer: Option<String>,
    /// The peer's address, once known.
    pub peer_addr: Option<SocketAddr>,
    /// `parlo` or `original`, during a call.
    pub dialect: Option<&'static str>,
    /// How the peer of the current or last call is verified (`key`, `plaintext`, ...).
    pub verified: Option<Verification>,
    /// The short code of that call's encrypted session.
    pub code: Option<String>,
    /// This phone's policy: `required`, `preferred` or `off`.
    pub security: Option<&'static str>,
    /// What the encrypted sessions dropped, and handshakes done, since the phone started.
    pub secure: parlo_net::secure::Counters,
    /// Key changes so far in the current call's session.
    pub rekeys: u64,
    /// Whether the directory holds our registration, and if not why.
    pub registration: Registration,
    /// The media counters of the current or last call (and its codec).
    pub media: MediaStats,
    /// Signalling or media ignored as belonging to another call or address.
    pub foreign: u64,
    /// Datagrams that could not be parsed.
    pub garbage: u64,
    /// Signalling messages resent.
    pub retransmissions: u64,
    /// The conference this phone is in, if any.
    pub conference: Option<String>,
    /// Its legs, one per member.
    pub legs: Vec<LegStatus>,
}

impl Status {
    /// The numeric fields, in the order `status` prints them (numbers in both the text and
    /// the JSON form; the jitter in milliseconds with three decimals).
    fn counters(&self) -> [(&'static str, Counter); 23] {
        let media = &self.media;
        [
            ("sent", Counter::Count(media.sent)),
            ("received", Counter::Count(media.received)),
            ("played", Counter::Count(media.played)),
            ("lost", Counter::Count(media.lost)),
            ("late", Counter::Count(media.late)),
            ("duplicate", Counter::Count(media.duplicate)),
            ("discarded", Counter::Count(media.discarded)),
            ("concealed", Counter::Count(media.concealed)),
            ("underruns", Counter::Count(media.underruns)),
            ("depth", Counter::Count(media.depth as u64)),
            ("jitter_ms", Counter::Micros(media.jitter_us)),
            ("capture_overruns", Counter::Count(media.capture_overruns)),
            ("playback_overruns", Counter::Count(media.playback_overruns)),
            ("foreign", Counter::Count(self.foreign)),
            ("foreign_media", Counter::Count(media.foreign_media)),
            ("garbage", Counter::Count(self.garbage)),
            ("retransmissions", Counter::Count(self.retransmissions)),
            ("auth_failures", Counter::Count(self.secure.auth_failures)),
            ("replays", Counter::Count(self.secure.replays)),
            ("stale", Counter::Count(self.secure.stale)),
            ("rate_limited", Counter::Count(self.secure.rate_limited)),
            ("handshakes", Counter::Count(self.secure.handshakes)),
            ("rekeys", Counter::Count(self.rekeys)),
        ]
    }
}

/// One number of `status`.
enum Counter {
    /// A count.
    Count(u64),
    /// Microseconds, shown as milliseconds with three decimals.
    Micros(u64),
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Counter::Count(n) => write!(f, "{n}"),
            Counter::Micros(us) => write!(f, "{}.{:03}", us / 1000, us % 1000),
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The directory accepted our registration.
    Registered {
        /// Our name.
        name: String,
        /// The server, as given.
        server: String,
    },
    /// The directory connection is down (retrying).
    Unregistered {
        /// Why, and when the next attempt is.
        reason: String,
    },
    /// An outgoing call began.
    Calling {
        /// The callee.
        peer: String,
    },
    /// The callee's phone rings.
    Ringing {
        /// The callee.
        peer: String,
    },
    /// Someone calls.
    Incoming {
        /// The name the caller announced.
        peer: String,
        /// Where the call comes from.
        from: SocketAddr,
        /// How the caller is verified.
        verified: Verification,
        /// Whether its key was pinned just now (first contact).
        new: bool,
        /// For a plaintext call: whether the directory's address for that name is the
        /// caller's (None: unknown).
        address: Option<bool>,
        /// The conference this call invites the phone into, if it does.
        conf: Option<String>,
    },
    /// The call is connected.
    Connected {
        /// The other side.
        peer: String,
        /// `parlo` or `original`.
        dialect: &'static str,
        /// The codec of the call's media: `L16` or `PCMU`.
        codec: &'static str,
        /// How the other side is verified.
        verified: Verification,
        /// Whether its key was pinned just now (first contact).
        new: bool,
        /// The short code of the call's encrypted session (`1234-5678`), for the two
        /// users to read to each other; `None` for a plaintext call.
        code: Option<String>,
    },
    /// The call ended.
    Ended {
        /// The other side.
        peer: String,
        /// Why (`hangup`, `remote-hangup`, ...).
        reason: &'static str,
    },
    /// A key is pinned for a name on the user's word (`trust`).
    Trusted {
        /// The name.
        peer: String,
        /// The key, in its text form.
        key: String,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// A message to `to` was taken as `id` (the answer to `msg`); its outcome follows.
    Sending {
        /// The message's id.
        id: String,
        /// The receiver.
        to: String,
    },
    /// The receiver acknowledged the message `id`.
    Delivered {
        /// The message's id.
        id: String,
        /// The receiver.
        to: String,
    },
    /// The message `id` was not delivered.
    Undelivered {
        /// The message's id.
        id: String,
        /// The receiver it was for.
        to: String,
        /// Why: `unknown-user`, `unreachable`, `refused`, `too-long`, `rate-limited`,
        /// `queue-full`.
        reason: &'static str,
    },
    /// A message arrived.
    Message {
        /// The sender.
        peer: String,
        /// The sender's id for it.
        id: String,
        /// How the sender's key is verified: `key`, or `new` (pinned just now).
        verified: &'static str,
        /// The text (escaped when written).
        text: String,
    },
    /// The registered names.
    Users {
        /// Every name, in the directory's order.
        names: Vec<String>,
    },
    /// The answer to `status`.
    Status(Box<Status>),
    /// The answer to `help`.
    Help,
    /// The phone is stopping.
    Bye,
    /// A command was refused or something failed.
    Error {
        /// What and why.
        reason: String,
    },
    /// The conference and its members, whenever that changes.
    Conference {
        /// The conference id.
        id: String,
        /// Every member but this phone.
        members: Vec<Member>,
    },
    /// A member's leg with this phone connected.
    Joined {
        /// The member.
        peer: String,
    },
    /// A member left the conference (its leg with this phone ended).
    Left {
        /// The member.
        peer: String,
        /// Why.
        reason: &'static str,
    },
    /// Inviting this phone would make the conference larger than its limit.
    Full {
        /// The phone not invited.
        peer: String,
    },
    /// This phone is in the conference no more.
    ConferenceEnded {
        /// The conference id.
        id: String,
    },
}

/// One member in a `conference` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// How this phone's leg to it is verified; `None` while that leg is not up.
    pub verified: Option<Verification>,
    /// The connected legs it reported.
    pub legs: u8,
    /// The legs it should hold.
    pub of: u8,
}

/// One conference leg in `status`: its member and its media counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegStatus {
    /// The member.
    pub peer: String,
    /// Its state (`dialing`, `ringing`, `in-call`, `closing`).
    pub state: &'static str,
    /// How it is verified, once known.
    pub verified: Option<Verification>,
    /// Its media counters.
    pub media: MediaStats,
}

impl LegStatus {
    /// The numeric fields of a leg, in the order `status` prints them.
    fn counters(&self) -> [(&'static str, Counter); 10] {
        let media = &self.media;
        [
            ("sent", Counter::Count(media.sent)),
            ("received", Counter::Count(media.received)),
            ("played", Counter::Count(media.played)),
            ("lost", Counter::Count(media.lost)),
            ("late", Counter::Count(media.late)),
            ("duplicate", Counter::Count(media.duplicate)),
            ("concealed", Counter::Count(media.concealed)),
            ("foreign_media", Counter::Count(media.foreign_media)),
            ("depth", Counter::Count(media.depth as u64)),
            ("jitter_ms", Counter::Micros(media.jitter_us)),
        ]
    }
}

/// How a peer is verified, and for a plaintext caller (`address` is `Some`) the address
/// check, as a text line ends: ` verified=V`, ` new=yes` when new, ` address=A`.
fn verification_text(
    out: &mut String,
    verified: Verification,
    new: bool,
    address: Option<Option<bool>>,
) -> fmt::Result {
    write!(out, " verified={}", verified.name())?;
    if new {
        out.push_str(" new=yes");
    }
    if let Some(address) = address {
        write!(out, " address={}", parlo_fsm::address_name(address))?;
    }
    Ok(())
}

/// The same as JSON fields: `,"verified":"V","new":B` and `,"address":true|false|null`.
fn verification_json(
    out: &mut String,
    verified: Verification,
    new: bool,
    address: Option<Option<bool>>,
) {
    let _ = write!(out, ",\"verified\":\"{}\",\"new\":{new}", verified.name());
    if let Some(address) = address {
        out.push_str(",\"address\":");
        out.push_str(match address {
            Some(true) => "true",
            Some(false) => "false",
            None => "null",
        });
    }
}

/// The address check an `incoming` event shows: a plaintext caller's only.
fn shown_address(verified: Verification, address: Option<bool>) -> Option<Option<bool>> {
    (verified == Verification::Plaintext).then_some(address)
}

/// Appends `s` as a JSON string (with quotes), escaped.
fn json_string(out: &mut String, s: &str) {
    // Writing into a String cannot fail.
    let _ = write!(out, "\"{}\"", Escaped::json(s));
}

/// Free text for a text line: line breaks become spaces (the text stays on its line,
/// readable), and what else would not show as itself is escaped.
fn text(s: &str) -> Escaped<String> {
    Escaped::text(s.replace(['\n', '\r'], " "))
}

impl Event {
    /// The event's name (the first word of its line).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Registered { .. } => "registered",
            Event::Unregistered { .. } => "unregistered",
            Event::Calling { .. } => "calling",
            Event::Ringing { .. } => "ringing",
            Event::Incoming { .. } => "incoming",
            Event::Connected { .. } => "connected",
            Event::Trusted { .. } => "trusted",
            Event::Sending { .. } => "sending",
            Event::Delivered { .. } => "delivered",
            Event::Undelivered { .. } => "undelivered",
            Event::Message { .. } => "message",
            Event::Ended { .. } => "ended",
            Event::Users { .. } => "users",
            Event::Status(_) => "status",
            Event::Help => "help",
            Event::Bye => "bye",
            Event::Error { .. } => "error",
            Event::Conference { .. } => "conference",
            Event::Joined { .. } => "joined",
            Event::Left { .. } => "left",
            Event::Full { .. } => "full",
            Event::ConferenceEnded { .. } => "conference-ended",
        }
    }

    /// The event as a text line, without the newline.
    pub fn text(&self) -> String {
        let mut out = String::from(self.name());
        // Writing into a String cannot fail.
        let _ = match self {
            Event::Registered { name, server } => {
                write!(out, " {} server={}", text(name), text(server))
            }
            Event::Unregistered { reason } | Event::Error { reason } => {
                write!(out, " reason={}", text(reason))
            }
            Event::Calling { peer } | Event::Ringing { peer } => write!(out, " {}", text(peer)),
            Event::Incoming {
                peer,
                from,
                verified,
                new,
                address,
                conf,
            } => {
                let _ = write!(out, " {} from={from}", text(peer));
                let address = shown_address(*verified, *address);
                let _ = verification_text(&mut out, *verified, *new, address);
                match conf {
                    Some(conf) => write!(out, " conf={conf}"),
                    None => Ok(()),
                }
            }
            Event::Connected {
                peer,
                dialect,
                codec,
                verified,
                new,
                code,
            } => {
                let _ = write!(out, " {} dialect={dialect} codec={codec}", text(peer));
                let _ = verification_text(&mut out, *verified, *new, None);
                match code {
                    Some(code) => write!(out, " code={code}"),
                    None => Ok(()),
                }
            }
            Event::Trusted {
                peer,
                key,
                fingerprint,
            } => write!(out, " {} key={key} fingerprint={fingerprint}", text(peer)),
            Event::Sending { id, to } | Event::Delivered { id, to } => {
                write!(out, " {id} to={}", text(to))
            }
            Event::Undelivered { id, to, reason } => {
                write!(out, " {id} to={} reason={reason}", text(to))
            }
            Event::Message {
                peer,
                id,
                verified,
                text: words,
            } => write!(
                out,
                " {} id={id} verified={verified} text={}",
                text(peer),
                text(words)
            ),
            Event::Ended { peer, reason } | Event::Left { peer, reason } => {
                write!(out, " {} reason={reason}", text(peer))
            }
            Event::Joined { peer } | Event::Full { peer } => write!(out, " {}", text(peer)),
            Event::ConferenceEnded { id } => write!(out, " {id}"),
            Event::Conference { id, members } => {
                let _ = write!(out, " {id} members=");
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let verified = m.verified.map_or("-", Verification::name);
                    let _ = write!(out, "{}:{verified}:legs={}/{}", text(&m.name), m.legs, m.of);
                }
                Ok(())
            }
            Event::Users { names } => {
                for name in names {
                    let _ = write!(out, " {}", text(name));
                }
                Ok(())
            }
            Event::Status(status) => {
                let s = status;
                let _ = write!(out, " state={}", s.state);
                if let Some(peer) = &s.peer {
                    let _ = write!(out, " peer={}", text(peer));
                }
                if let Some(addr) = &s.peer_addr {
                    let _ = write!(out, " peer_addr={addr}");
                }
                if let Some(dialect) = s.dialect {
                    let _ = write!(out, " dialect={dialect}");
                }
                if let Some(codec) = s.media.codec.map(parlo_fsm::Codec::name) {
                    let _ = write!(out, " codec={codec}");
                }
                if let Some(verified) = s.verified {
                    let _ = write!(out, " verified={}", verified.name());
                }
                if let Some(code) = &s.code {
                    let _ = write!(out, " code={code}");
                }
                if let Some(security) = s.security {
                    let _ = write!(out, " security={security}");
                }
                let registered = if s.registration.is_registered() {
                    "yes"
                } else {
                    "no"
                };
                let _ = write!(out, " registered={registered}");
                for (key, value) in s.counters() {
                    let _ = write!(out, " {key}={value}");
                }
                if let Some(id) = &s.conference {
                    let _ = write!(out, " conference={id}");
                }
                for leg in &s.legs {
                    let peer = text(&leg.peer);
                    let _ = write!(out, " leg.{peer}.state={}", leg.state);
                    if let Some(verified) = leg.verified {
                        let _ = write!(out, " leg.{peer}.verified={}", verified.name());
                    }
                    for (key, value) in leg.counters() {
                        let _ = write!(out, " leg.{peer}.{key}={value}");
                    }
                }
                // Free text: last.
                if let Some(reason) = s.registration.reason() {
                    let _ = write!(out, " reason={}", text(reason));
                }
                Ok(())
            }
            Event::Help => write!(out, " {}", COMMANDS.join("|")),
            Event::Bye => Ok(()),
        };
        out
    }

    /// The event as a JSON object, without the newline.
    pub fn json(&self) -> String {
        let mut out = String::from("{\"event\":");
        json_string(&mut out, self.name());
        let field = |out: &mut String, key: &str, value: &str| {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            json_string(out, value);
        };
        match self {
            Event::Registered { name, server } => {
                field(&mut out, "name", name);
                field(&mut out, "server", server);
            }
            Event::Unregistered { reason } | Event::Error { reason } => {
                field(&mut out, "reason", reason);
            }
            Event::Calling { peer } | Event::Ringing { peer } => field(&mut out, "peer", peer),
            Event::Incoming {
                peer,
                from,
                verified,
                new,
                address,
                conf,
            } => {
                field(&mut out, "peer", peer);
                field(&mut out, "from", &from.to_string());
                let address = shown_address(*verified, *address);
                verification_json(&mut out, *verified, *new, address);
                if let Some(conf) = conf {
                    field(&mut out, "conf", conf);
                }
            }
            Event::Connected {
                peer,
                dialect,
                codec,
                verified,
                new,
                code,
            } => {
                field(&mut out, "peer", peer);
                field(&mut out, "dialect", dialect);
                field(&mut out, "codec", codec);
                verification_json(&mut out, *verified, *new, None);
                if let Some(code) = code {
                    field(&mut out, "code", code);
                }
            }
            Event::Trusted {
                peer,
                key,
                fingerprint,
            } => {
                field(&mut out, "peer", peer);
                field(&mut out, "key", key);
                field(&mut out, "fingerprint", fingerprint);
            }
            Event::Sending { id, to } | Event::Delivered { id, to } => {
                field(&mut out, "id", id);
                field(&mut out, "to", to);
            }
            Event::Undelivered { id, to, reason } => {
                field(&mut out, "id", id);
                field(&mut out, "to", to);
                field(&mut out, "reason", reason);
            }
            Event::Message {
                peer,
                id,
                verified,
                text,
            } => {
                field(&mut out, "peer", peer);
                field(&mut out, "id", id);
                field(&mut out, "verified", verified);
                field(&mut out, "text", text);
            }
            Event::Ended { peer, reason } | Event::Left { peer, reason } => {
                field(&mut out, "peer", peer);
                field(&mut out, "reason", reason);
            }
            Event::Joined { peer } | Event::Full { peer } => field(&mut out, "peer", peer),
            Event::ConferenceEnded { id } => field(&mut out, "id", id),
            Event::Conference { id, members } => {
                field(&mut out, "id", id);
                out.push_str(",\"members\":[");
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str("{\"name\":");
                    json_string(&mut out, &m.name);
                    out.push_str(",\"verified\":");
                    match m.verified {
                        Some(v) => json_string(&mut out, v.name()),
                        None => out.push_str("null"),
                    }
                    let _ = write!(out, ",\"legs\":{},\"of\":{}}}", m.legs, m.of);
                }
                out.push(']');
            }
            Event::Users { names } => {
                out.push_str(",\"users\":[");
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(&mut out, name);
                }
                out.push(']');
            }
            Event::Status(s) => {
                field(&mut out, "state", s.state);
                if let Some(peer) = &s.peer {
                    field(&mut out, "peer", peer);
                }
                if let Some(addr) = &s.peer_addr {
                    field(&mut out, "peer_addr", &addr.to_string());
                }
                if let Some(dialect) = s.dialect {
                    field(&mut out, "dialect", dialect);
                }
                if let Some(codec) = s.media.codec.map(parlo_fsm::Codec::name) {
                    field(&mut out, "codec", codec);
                }
                if let Some(verified) = s.verified {
                    field(&mut out, "verified", verified.name());
                }
                if let Some(code) = &s.code {
                    field(&mut out, "code", code);
                }
                if let Some(security) = s.security {
                    field(&mut out, "security", security);
                }
                let _ = write!(out, ",\"registered\":{}", s.registration.is_registered());
                if let Some(reason) = s.registration.reason() {
                    field(&mut out, "reason", reason);
                }
                for (key, value) in s.counters() {
                    let _ = write!(out, ",\"{key}\":{value}");
                }
                if let Some(id) = &s.conference {
                    field(&mut out, "conference", id);
                }
                if !s.legs.is_empty() {
                    out.push_str(",\"legs\":[");
                    for (i, leg) in s.legs.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str("{\"peer\":");
                        json_string(&mut out, &leg.peer);
                        let _ = write!(out, ",\"state\":\"{}\"", leg.state);
                        if let Some(verified) = leg.verified {
                            let _ = write!(out, ",\"verified\":\"{}\"", verified.name());
                        }
                        for (key, value) in leg.counters() {
                            let _ = write!(out, ",\"{key}\":{value}");
                        }
                        out.push('}');
                    }
                    out.push(']');
                }
            }
            Event::Help => {
                out.push_str(",\"commands\":[");
                for (i, command) in COMMANDS.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(&mut out, command);
                }
                out.push(']');
            }
            Event::Bye => {}
        }
        out.push('}');
        out
    }

    /// The event as one line in the chosen format, newline included.
    pub fn line(&self, json: bool) -> String {
        let mut line = if json { self.json() } else { self.text() };
        line.push('\n');
        line
    }
}

/// Whether an answer line (text or JSON) is an `error` event: `ctl` exits 1 on one.
pub fn is_error_line(line: &str) -> bool {
    is_kind(line, "error")
}

/// Whether `line`, text or JSON, is an event of this kind (`bye`, `error`, ...).
pub fn is_kind(line: &str, kind: &str) -> bool {
    let text = line
        .strip_prefix(kind)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
    let mut json = String::from("{\"event\":");
    json_string(&mut json, kind);
    text || line
        .strip_prefix(json.as_str())
        .is_some_and(|rest| rest.starts_with([',', '}']))
}

/// Whether `line`, text or JSON, is the event `kind` about `peer` (`ended bob reason=busy`
/// is `ended` about `bob`): how `ctl call` follows its call in the events it watches.
pub fn is_about(line: &str, kind: &str, peer: &str) -> bool {
    let text = format!("{kind} {}", text(peer));
    let mut json = String::from("{\"event\":");
    json_string(&mut json, kind);
    json.push_str(",\"peer\":");
    json_string(&mut json, peer);
    line.strip_prefix(text.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        || line
            .strip_prefix(json.as_str())
            .is_some_and(|rest| rest.starts_with([',', '}']))
}

/// The message id of `line`, text or JSON, when it is the event `kind` (`sending`,
/// `delivered`, `undelivered`): how `ctl msg` follows its message.
pub fn message_id_of(line: &str, kind: &str) -> Option<String> {
    let mut json = String::from("{\"event\":");
    json_string(&mut json, kind);
    json.push_str(",\"id\":\"");
    let id = match line.strip_prefix(json.as_str()) {
        Some(rest) => rest.split('"').next(),
        None => line
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|rest| rest.split(' ').next()),
    }?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parlo_fsm::PublicKey;

    #[test]
    fn the_id_of_a_message_event_is_read_in_both_forms() {
        let delivered = Event::Delivered {
            id: "00000001000000ff".into(),
            to: "bob".into(),
        };
        for line in [delivered.text(), delivered.json()] {
            assert_eq!(
                message_id_of(&line, "delivered").as_deref(),
                Some("00000001000000ff"),
                "{line}"
            );
            assert_eq!(message_id_of(&line, "undelivered"), None, "{line}");
        }
        assert_eq!(
            message_id_of("delivered nonsense to=bob", "delivered"),
            None
        );
    }

    fn addr() -> SocketAddr {
        "127.0.0.2:5001".parse().expect("address")
    }

    #[test]
    fn text_forms() {
        let cases = [
            (
                Event::Registered {
                    name: "alice".into(),
                    server: "127.0.0.1:10000".into(),
                },
                "registered alice server=127.0.0.1:10000",
            ),
            (
                Event::Unregistered {
                    reason: "connection refused; retrying in 1 s".into(),
                },
                "unregistered reason=connection refused; retrying in 1 s",
            ),
            (Event::Calling { peer: "bob".into() }, "calling bob"),
            (Event::Ringing { peer: "bob".into() }, "ringing bob"),
            (
                Event::Incoming {
                    peer: "bob".into(),
                    from: addr(),
                    verified: Verification::Plaintext,
                    new: false,
                    address: Some(true),
                    conf: None,
                },
                "incoming bob from=127.0.0.2:5001 verified=plaintext address=yes",
            ),
            (
                Event::Incoming {
                    peer: "bob".into(),
                    from: addr(),
                    verified: Verification::Plaintext,
                    new: false,
                    address: None,
                    conf: None,
                },
                "incoming bob from=127.0.0.2:5001 verified=plaintext address=unknown",
            ),
            (
                Event::Incoming {
                    peer: "bob".into(),
                    from: addr(),
                    verified: Verification::Key,
                    new: true,
                    address: None,
                    conf: None,
                },
                "incoming bob from=127.0.0.2:5001 verified=key new=yes",
            ),
            (
                Event::Incoming {
                    peer: "bob".into(),
                    from: addr(),
                    verified: Verification::Unbound,
                    new: false,
                    // Meaningless for an encrypted call: not shown.
                    address: Some(false),
                    conf: None,
                },
                "incoming bob from=127.0.0.2:5001 verified=unbound",
            ),
            (
                Event::Connected {
                    peer: "bob".into(),
                    dialect: "original",
                    codec: "L16",
                    verified: Verification::Plaintext,
                    new: false,
                    code: None,
                },
                "connected bob dialect=original codec=L16 verified=plaintext",
            ),
            (
                Event::Connected {
                    peer: "bob".into(),
                    dialect: "parlo",
                    codec: "PCMU",
                    verified: Verification::Key,
                    new: true,
                    code: Some("0123-4567".into()),
                },
                "connected bob dialect=parlo codec=PCMU verified=key new=yes code=0123-4567",
            ),
            (
                Event::Message {
                    peer: "bob".into(),
                    id: "0000000100000002".into(),
                    verified: "key",
                    text: "parcel at\nthe door".into(),
                },
                "message bob id=0000000100000002 verified=key text=parcel at the door",
            ),
            (
                Event::Undelivered {
                    id: "0000000100000003".into(),
                    to: "bob".into(),
                    reason: "unreachable",
                },
                "undelivered 0000000100000003 to=bob reason=unreachable",
            ),
            (
                Event::Trusted {
                    peer: "bob".into(),
                    key: PublicKey([1; 32]).to_string(),
                    fingerprint: "abcd".into(),
                },
                "trusted bob key=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE= fingerprint=abcd",
            ),
            (
                Event::Ended {
                    peer: "bob".into(),
                    reason: "remote-hangup",
                },
                "ended bob reason=remote-hangup",
            ),
            (
                Event::Users {
                    names: vec!["alice".into(), "bob".into()],
                },
                "users alice bob",
            ),
            (Event::Users { names: vec![] }, "users"),
            (
                Event::Help,
                "help call NAME|accept|reject|hangup|conf NAME...|invite NAME|list|status|msg NAME TEXT|trust NAME [KEY]|quit|help|watch [text|json]|\
                 format text|json",
            ),
            (Event::Bye, "bye"),
            (
                Event::Error {
                    reason: "two\nlines".into(),
                },
                "error reason=two lines",
            ),
        ];
        for (event, text) in cases {
            assert_eq!(event.text(), text);
            assert_eq!(event.line(false), format!("{text}\n"));
        }
    }

    #[test]
    fn conference_events_in_both_forms() {
        let members = vec![
            Member {
                name: "bob".into(),
                verified: Some(Verification::Key),
                legs: 2,
                of: 3,
            },
            Member {
                name: "carol".into(),
                verified: None,
                legs: 0,
                of: 3,
            },
        ];
        let event = Event::Conference {
            id: "00112233aabbccdd".into(),
            members,
        };
        assert_eq!(
            event.text(),
            "conference 00112233aabbccdd members=bob:key:legs=2/3,carol:-:legs=0/3"
        );
        assert_eq!(
            event.json(),
            r#"{"event":"conference","id":"00112233aabbccdd","members":[{"name":"bob","verified":"key","legs":2,"of":3},{"name":"carol","verified":null,"legs":0,"of":3}]}"#
        );
        let left = Event::Left {
            peer: "bob".into(),
            reason: "peer-lost",
        };
        assert_eq!(left.text(), "left bob reason=peer-lost");
        assert_eq!(
            left.json(),
            r#"{"event":"left","peer":"bob","reason":"peer-lost"}"#
        );
        assert_eq!(Event::Joined { peer: "bob".into() }.text(), "joined bob");
        assert_eq!(
            Event::ConferenceEnded {
                id: "00112233aabbccdd".into()
            }
            .text(),
            "conference-ended 00112233aabbccdd"
        );
        let invited = Event::Incoming {
            peer: "alice".into(),
            from: addr(),
            verified: Verification::Key,
            new: false,
            address: None,
            conf: Some("00112233aabbccdd".into()),
        };
        assert_eq!(
            invited.text(),
            "incoming alice from=127.0.0.2:5001 verified=key conf=00112233aabbccdd"
        );
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            Event::Incoming {
                peer: "b\"ob".into(),
                from: addr(),
                verified: Verification::Plaintext,
                new: false,
                address: Some(false),
                conf: None,
            }
            .json(),
            r#"{"event":"incoming","peer":"b\"ob","from":"127.0.0.2:5001","verified":"plaintext","new":false,"address":false}"#
        );
        assert_eq!(
            Event::Incoming {
                peer: "bob".into(),
                from: addr(),
                verified: Verification::Plaintext,
                new: false,
                address: None,
                conf: None,
            }
            .json(),
            r#"{"event":"incoming","peer":"bob","from":"127.0.0.2:5001","verified":"plaintext","new":false,"address":null}"#
        );
        assert_eq!(
            Event::Incoming {
                peer: "bob".into(),
                from: addr(),
                verified: Verification::Key,
                new: true,
                address: None,
                conf: None,
            }
            .json(),
            r#"{"event":"incoming","peer":"bob","from":"127.0.0.2:5001","verified":"key","new":true}"#
        );
        assert_eq!(
            Event::Ended {
                peer: "bob".into(),
                reason: "busy"
            }
            .json(),
            r#"{"event":"ended","peer":"bob","reason":"busy"}"#
        );
        assert_eq!(
            Event::Users {
                names: vec!["a".into(), "b".into()]
            }
            .json(),
            r#"{"event":"users","users":["a","b"]}"#
        );
        assert_eq!(
            Event::Error {
                reason: "x\ty".into()
            }
            .json(),
            r#"{"event":"error","reason":"x\ty"}"#
        );
        assert_eq!(
            Event::Connected {
                peer: "bob".into(),
                dialect: "parlo",
                codec: "PCMU",
                verified: Verification::Key,
                new: false,
                code: Some("0042-0001".into()),
            }
            .json(),
            r#"{"event":"connected","peer":"bob","dialect":"parlo","codec":"PCMU","verified":"key","new":false,"code":"0042-0001"}"#
        );
        assert_eq!(Event::Bye.json(), r#"{"event":"bye"}"#);
        let status = Event::Status(Box::new(Status {
            state: "idle",
            registration: Registration::Registered,
            ..Status::default()
        }));
        assert_eq!(
            status.json(),
            "{\"event\":\"status\",\"state\":\"idle\",\"registered\":true,\"sent\":0,\
             \"received\":0,\"played\":0,\"lost\":0,\"late\":0,\"duplicate\":0,\
             \"discarded\":0,\"concealed\":0,\"underruns\":0,\"depth\":0,\
             \"jitter_ms\":0.000,\"capture_overruns\":0,\"playback_overruns\":0,\
             \"foreign\":0,\"foreign_media\":0,\"garbage\":0,\"retransmissions\":0,\
             \"auth_failures\":0,\"replays\":0,\"stale\":0,\"rate_limited\":0,\
             \"handshakes\":0,\"rekeys\":0}"
        );
        assert_eq!(
            status.text(),
            "status state=idle registered=yes sent=0 received=0 played=0 lost=0 late=0 \
             duplicate=0 discarded=0 concealed=0 underruns=0 depth=0 jitter_ms=0.000 \
             capture_overruns=0 playback_overruns=0 foreign=0 foreign_media=0 garbage=0 \
             retransmissions=0 auth_failures=0 replays=0 stale=0 rate_limited=0 handshakes=0 rekeys=0"
        );
        let refused = Event::Status(Box::new(Status {
            state: "idle",
            registration: Registration::Unregistered {
                reason: "the name is taken; next attempt in 5 s".into(),
            },
            ..Status::default()
        }));
        let text = refused.text();
        assert!(
            text.starts_with("status state=idle registered=no sent=0 "),
            "{text}"
        );
        assert!(
            text.ends_with(" rekeys=0 reason=the name is taken; next attempt in 5 s"),
            "{text}"
        );
        let json = refused.json();
        assert!(
            json.contains(
                r#""registered":false,"reason":"the name is taken; next attempt in 5 s","sent":0"#
            ),
            "{json}"
        );
        // Not registered yet, with nothing to say: no reason.
        let quiet = Event::Status(Box::default());
        assert!(!quiet.text().contains("reason="), "{}", quiet.text());
        assert!(quiet.json().contains(r#""registered":false,"sent""#));
        let in_call = Event::Status(Box::new(Status {
            state: "in-call",
            media: MediaStats {
                codec: Some(parlo_fsm::Codec::Pcmu),
                jitter_us: 12_375,
                capture_overruns: 2,
                playback_overruns: 3,
                ..MediaStats::default()
            },
            ..Status::default()
        }));
        let text = in_call.text();
        assert!(text.contains(" codec=PCMU "), "{text}");
        assert!(text.contains(" jitter_ms=12.375 capture_overruns=2 playback_overruns=3 "));
        let json = in_call.json();
        assert!(json.contains(r#""codec":"PCMU""#), "{json}");
        assert!(json.contains(r#""jitter_ms":12.375,"capture_overruns":2,"playback_overruns":3"#));
    }

    /// Whether `line` holds a character that would not show as itself.
    fn has_raw_controls(line: &str) -> bool {
        line.chars().any(parlo_fsm::is_escaped)
    }

    #[test]
    fn free_text_is_escaped_in_both_forms() {
        let hostile = "\u{1b}[2J\u{7}\u{9b}31m\u{202e}evil\u{7f}";
        let error = Event::Error {
            reason: format!("the server refused: {hostile}\nregistered mallory"),
        };
        assert_eq!(
            error.text(),
            "error reason=the server refused: \\u{1b}[2J\\u{7}\\u{9b}31m\\u{202e}evil\\u{7f} \
             registered mallory"
        );
        assert_eq!(
            error.json(),
            r#"{"event":"error","reason":"the server refused: \u001b[2J\u0007\u009b31m\u202eevil\u007f\nregistered mallory"}"#
        );
        // Every text field, in both forms, and the lines the control socket sends.
        let events = [
            error,
            Event::Unregistered {
                reason: hostile.into(),
            },
            Event::Registered {
                name: hostile.into(),
                server: hostile.into(),
            },
            Event::Calling {
                peer: hostile.into(),
            },
            Event::Incoming {
                peer: hostile.into(),
                from: addr(),
                verified: Verification::Plaintext,
                new: false,
                address: None,
                conf: None,
            },
            Event::Users {
                names: vec!["bob".into(), hostile.into()],
            },
            Event::Status(Box::new(Status {
                state: "in-call",
                peer: Some(hostile.into()),
                ..Status::default()
            })),
            Event::Status(Box::new(Status {
                registration: Registration::Unregistered {
                    reason: hostile.into(),
                },
                ..Status::default()
            })),
        ];
        for event in &events {
            for line in [event.text(), event.json()] {
                assert!(!has_raw_controls(&line), "{line:?}");
                assert!(line.contains("\\u"), "{line:?}");
            }
            let line = event.line(false);
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(!has_raw_controls(line.trim_end_matches('\n')), "{line:?}");
        }
        // Plain text, non-ASCII letters and spaces included, is untouched.
        assert_eq!(
            Event::Error {
                reason: "café Zürich: 東京 ok".into()
            }
            .text(),
            "error reason=café Zürich: 東京 ok"
        );
        // Line and paragraph separators, which JSON allows raw, are escaped too.
        assert!(
            Event::Users {
                names: vec!["a\u{2028}b".into()]
            }
            .json()
            .contains(r#""a\u2028b""#)
        );
    }

    #[test]
    fn error_lines_are_recognised_in_both_forms() {
        let error = Event::Error {
            reason: "no call".into(),
        };
        assert!(is_error_line(&error.text()));
        assert!(is_error_line(&error.json()));
        assert!(!is_error_line(&Event::Bye.text()));
        assert!(!is_error_line("errors are fine"));
        assert!(is_kind("bye", "bye") && is_kind(&Event::Bye.json(), "bye"));
        assert!(!is_kind("byelaw", "bye"));
    }

    #[test]
    fn events_about_a_peer_are_recognised_in_both_forms() {
        let ended = |peer: &str| Event::Ended {
            peer: peer.into(),
            reason: "busy",
        };
        for line in [ended("bob").text(), ended("bob").json()] {
            assert!(is_about(&line, "ended", "bob"), "{line}");
            assert!(!is_about(&line, "ended", "bo"), "{line}");
            assert!(!is_about(&line, "connected", "bob"), "{line}");
        }
        let calling = Event::Calling { peer: "bob".into() };
        assert!(is_about(&calling.text(), "calling", "bob"));
        assert!(is_about(&calling.json(), "calling", "bob"));
        assert!(!is_about("calling bobby", "calling", "bob"));
        // Names that need escaping are compared as printed.
        let odd = "b\"o\u{7}b";
        for line in [ended(odd).text(), ended(odd).json()] {
            assert!(is_about(&line, "ended", odd), "{line}");
        }
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::from_name("JSON"), Some(Format::Json));
        assert_eq!(Format::from_name("text"), Some(Format::Text));
        assert_eq!(Format::from_name("xml"), None);
        assert_eq!(Format::of(true).name(), "json");
    }
}
