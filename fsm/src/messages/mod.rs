//! The message machine: text messages between phones, sent, acknowledged, retransmitted,
//! deduplicated and rate-limited — pure and table-driven, independent of the call
//! machine.
//!
//! A phone is sender and receiver at once. [`Messenger`] holds the messages it sends
//! until each is settled, and remembers, per sender, which messages it has printed. Each
//! event concerns one message (or, for a session coming up, each message waiting for it);
//! the machine classifies it against what it holds about that message ([`State`]) and
//! applies one entry of [`TABLE`], as the call machine does.
//!
//! # Contract
//! ```text
//! shell                                   messenger
//!   Messenger::new(config, run, now)
//!   handle(now, &Event)          ─────▶   classify, apply the table
//!                                ◀─────   Actions (execute in order)
//!   poll_timeout()               ◀─────   earliest deadline
//!   handle_timeout(now)          ─────▶   fire one due timer (repeat while due)
//! ```
//! The shell routes by kind: the lines of this vocabulary ([`Line`]) and the `msg`
//! command go to the messenger, signalling and media to the call machine. Neither
//! machine sees the other's events, so a message never disturbs a call and a call never
//! delays a message (`specs/messages/during-call-setup.spec`).
//!
//! # Sending
//! [`Event::Send`] takes a fresh [`MessageId`] and tells the user at once
//! ([`Note::Sending`]); every id then gets exactly one outcome: [`Note::Delivered`] or
//! [`Note::Undelivered`] with a [`Reason`]. A text longer than [`MAX_TEXT`] bytes is
//! `too-long` at once; with [`QUEUE`] messages already held, the new one is `queue-full`
//! at once. Otherwise the message waits for a secure session with its peer: the machine
//! asks for one ([`Action::Connect`], once per peer while messages wait) and the shell
//! answers [`Event::Route`] (the session is up: every waiting message goes out) or
//! [`Event::NoRoute`] with a reason (`unknown-user`: the directory does not know the
//! name; `unreachable`, `refused`: the session could not be set up). A message sent while
//! another to the same peer is out needs no new session. A session that does not come up
//! within [`Config::route_wait`] makes its messages `unreachable`.
//!
//! A sent message is retransmitted until acknowledged: after [`Config::retransmit_initial`]
//! (500 ms), doubling, for [`Config::tries`] transmissions in all (5: at 0, 0.5, 1.5, 3.5
//! and 7.5 s); 8 s after the last, at 15.5 s, it is `unreachable`. `ACK` makes it
//! delivered; `NAK` undelivered, for the reason the receiver gives (`too-long`,
//! `refused`, `rate-limited`).
//!
//! # Message ids
//! Per sender, never reused within a run: the high 32 bits are the run's number, drawn at
//! random when the phone starts (injected: [`Messenger::new`]'s `run`), the low 32 bits
//! count from 1. A restarted phone draws another run, so its ids do not collide with the
//! ones a receiver still remembers from the previous run (but with probability 2⁻³²).
//!
//! # Receiving
//! A `MSG` from a sender is printed ([`Note::Message`]) exactly once per (sender, id),
//! and acknowledged each time it arrives, duplicates included, so that the sender stops.
//! Before it is printed:
//! - the sender must be key-verified ([`Verification::is_key_verified`]: `key` or `new`)
//!   and allowed by [`Config::from`] (`--messages-from NAME,...`, default any
//!   key-verified sender); otherwise `NAK refused`, and nothing is printed;
//! - the sender must be within its rate: a token bucket per sender, [`Config::rate_burst`]
//!   (10) at once, refilled at [`Config::rate_per_second`] (5) per second; over it,
//!   `NAK rate-limited`, nothing printed — and the id is remembered as refused, so that
//!   a copy arriving later, tokens or not, is refused too: a message whose sender was
//!   told `rate-limited` is never printed. A duplicate of a printed message costs no
//!   token: it is answered `ACK` whatever the rate, since its sender is only asking
//!   whether it arrived.
//! - a text longer than [`MAX_TEXT`] is `NAK too-long`.
//!
//! The memory of senders is bounded ([`SENDERS`]); when it is full, the sender heard
//! least recently is forgotten. Only allowed senders are remembered, so refused ones
//! cannot push the others out.
//!
//! Duplicates are recognised by a window per sender: the highest id of the sender's
//! current run and the [`WINDOW`] ids below it, each marked printed or refused. Ids of one run increase, and a sender holds
//! at most [`QUEUE`] messages at a time, fewer than the window, so an id below the window
//! belongs to a message its sender has long settled: it is taken as seen (acknowledged,
//! not printed). An id of another run starts the window afresh (the sender restarted).
//! Stragglers of the previous run cannot follow: they were sealed for the previous
//! session, which the restart ended. Only when more than [`SENDERS`] allowed senders
//! write at once can a sender be forgotten and a late duplicate of its be printed again.
//!
//! # Order
//! The receiver prints messages in the order they arrive, which over a lossy or
//! reordering link is not necessarily the order they were sent. Each carries its id, and
//! the ids of one sender's run increase in send order, so a script that needs send order
//! sorts by id. (A hold-back buffer would delay every message behind a lost one by a
//! retransmission, 0.5 s or more, for an order most uses — "parcel at the door" — do not
//! need.)
//!
//! # Wire form (for `parlo-net`)
//! The lines travel inside the secure session, one per datagram, as text:
//! ```text
//! MSG <id> <text>          id: 16 hex digits; text: the rest of the datagram, UTF-8,
//!                          at most MAX_TEXT bytes, any character (newlines included)
//! ACK <id>
//! NAK <id> <reason>        reason: too-long | refused | rate-limited
//! ```
//! A `MSG` whose text is longer than [`MAX_TEXT`] is read as [`Line::Oversize`], so that
//! the messenger answers it. The text is the network's: it reaches the user only through
//! [`crate::Escaped`] (as every event text), never raw.
//!
//! The specs (`specs/messages/*.spec`) write these lines in this form.

mod machine;
pub mod table;

pub use machine::{Actions, Counters, MAX_ACTIONS, Messenger};
pub use table::{EventKind, Guard, State, TABLE};

use core::fmt;

use crate::vocab::{Escaped, Name};

/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT: usize = 1000;

/// Most messages a phone holds unsettled (waiting for a session or for their ACK).
pub const QUEUE: usize = 16;

/// Most senders a phone remembers (their rate and the ids it printed).
pub const SENDERS: usize = 32;

/// Ids below a sender's highest that are remembered one by one.
pub const WINDOW: u32 = 64;

/// Most names `--messages-from` may list.
pub const MAX_ALLOWED: usize = 16;

/// Identifies one message of one sender: the run (high 32 bits) and a counter (low 32
/// bits). Written as 16 hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl MessageId {
    /// The id of message `counter` of run `run`.
    pub const fn new(run: u32, counter: u32) -> MessageId {
        MessageId(((run as u64) << 32) | counter as u64)
    }

    /// The sender's run.
    pub const fn run(self) -> u32 {
        // Truncation intended: the high half.
        (self.0 >> 32) as u32
    }

    /// The counter within the run.
    pub const fn counter(self) -> u32 {
        // Truncation intended: the low half.
        self.0 as u32
    }

    /// Reads exactly 16 hexadecimal digits, in either case.
    pub fn parse(text: &str) -> Option<MessageId> {
        if text.len() != 16 {
            return None;
        }
        let mut id = 0u64;
        for byte in text.bytes() {
            id = (id << 4) | u64::from(char::from(byte).to_digit(16)?);
        }
        Some(MessageId(id))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Why a text is not a valid [`Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextError {
    /// Longer than [`MAX_TEXT`] bytes.
    TooLong {
        /// Its length, in bytes.
        len: usize,
    },
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::TooLong { len } => {
                write!(f, "message is {len} bytes long, at most {MAX_TEXT} allowed")
            }
        }
    }
}

impl core::error::Error for TextError {}

/// The text of a message: UTF-8, at most [`MAX_TEXT`] bytes, any character. It is the
/// user's or the network's: show it only through [`Escaped`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Text(heapless::String<MAX_TEXT>);

impl Text {
    /// Checks the length of `text`.
    pub fn new(text: &str) -> Result<Text, TextError> {
        let mut s = heapless::String::new();
        s.push_str(text)
            .map_err(|_| TextError::TooLong { len: text.len() })?;
        Ok(Text(s))
    }

    /// The text, raw: escape it before it leaves the program.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// Why a message was not delivered, as the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The directory does not know the name.
    UnknownUser,
    /// No answer: no session could be set up in time, or no ACK after the last try.
    Unreachable,
    /// The receiver does not take messages from this sender (not key-verified, or not
    /// in its `--messages-from`), or the session was refused.
    Refused,
    /// The text is longer than [`MAX_TEXT`] bytes.
    TooLong,
    /// The receiver's rate limit for this sender is exceeded.
    RateLimited,
    /// This phone already holds [`QUEUE`] unsettled messages.
    QueueFull,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 6] = [
        Reason::UnknownUser,
        Reason::Unreachable,
        Reason::Refused,
        Reason::TooLong,
        Reason::RateLimited,
        Reason::QueueFull,
    ];

    /// The reason as events and the wire write it.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown-user",
            Reason::Unreachable => "unreachable",
            Reason::Refused => "refused",
            Reason::TooLong => "too-long",
            Reason::RateLimited => "rate-limited",
            Reason::QueueFull => "queue-full",
        }
    }

    /// The reason a name writes.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// How the shell verified the sender of a line (the session's static key against the
/// directory's binding and the local pins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verification {
    /// The key is the one the directory binds to the name, and agrees with the local pin
    /// (or, the directory unreachable, the pin alone).
    Key,
    /// As `Key`, on first contact: the key has just been pinned.
    New,
    /// No key is bound to the name: anyone could claim it.
    Unbound,
    /// The key is not the one pinned for the name.
    Changed,
}

impl Verification {
    /// A sender verified as a caller is (`call`, and `new`: its key pinned just now):
    /// `key` and `new` for a key-verified one, `key-changed` for a key not the name's,
    /// `unbound` for the rest (no key bound, the directory silent, in the clear).
    pub const fn of_call(call: crate::Verification, new: bool) -> Verification {
        match call {
            crate::Verification::Key if new => Verification::New,
            crate::Verification::Key => Verification::Key,
            crate::Verification::No => Verification::Changed,
            crate::Verification::Unbound
            | crate::Verification::Unknown
            | crate::Verification::Plaintext => Verification::Unbound,
        }
    }

    /// Whether the sender is key-verified (`key` or `new`).
    pub const fn is_key_verified(self) -> bool {
        matches!(self, Verification::Key | Verification::New)
    }

    /// The verification as events write it.
    pub const fn name(self) -> &'static str {
        match self {
            Verification::Key => "key",
            Verification::New => "new",
            Verification::Unbound => "unbound",
            Verification::Changed => "key-changed",
        }
    }

    /// Every verification.
    pub const ALL: [Verification; 4] = [
        Verification::Key,
        Verification::New,
        Verification::Unbound,
        Verification::Changed,
    ];
}

/// One line of the message exchange, as read from (or written to) a secure session.
// Fixed capacity, no allocation: the text (or name list) lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Line {
    /// `MSG <id> <text>`: a message.
    Msg {
        /// Its id.
        id: MessageId,
        /// Its text.
        text: Text,
    },
    /// A `MSG` whose text is longer than [`MAX_TEXT`]: only its id was kept.
    Oversize {
        /// Its id.
        id: MessageId,
    },
    /// `ACK <id>`: the message arrived (printed now or before).
    Ack {
        /// The message.
        id: MessageId,
    },
    /// `NAK <id> <reason>`: the message was refused and not printed.
    Nak {
        /// The message.
        id: MessageId,
        /// Why.
        reason: Reason,
    },
}

impl Line {
    /// The message the line is about.
    pub const fn id(&self) -> MessageId {
        match self {
            Line::Msg { id, .. }
            | Line::Oversize { id }
            | Line::Ack { id }
            | Line::Nak { id, .. } => *id,
        }
    }
}

/// The line in the form of the specs and of the wire (see the module docs), the text
/// escaped.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Msg { id, text } => write!(f, "MSG {id} {}", Escaped::text(text.as_str())),
            Line::Oversize { id } => write!(f, "MSG {id} (too long)"),
            Line::Ack { id } => write!(f, "ACK {id}"),
            Line::Nak { id, reason } => write!(f, "NAK {id} {}", reason.name()),
        }
    }
}

/// Who may message this phone.
// Fixed capacity, no allocation: the text (or name list) lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Policy {
    /// Any key-verified sender (the default).
    #[default]
    AnyVerified,
    /// Only these names, key-verified (`--messages-from NAME,...`).
    Only(heapless::Vec<Name, MAX_ALLOWED>),
}

impl Policy {
    /// Only `names` (`--messages-from`); `None` when they are more than [`MAX_ALLOWED`].
    pub fn only(names: &[Name]) -> Option<Policy> {
        heapless::Vec::from_slice(names).ok().map(Policy::Only)
    }

    /// Whether `from`, verified so, may message this phone.
    pub fn allows(&self, from: &Name, verification: Verification) -> bool {
        verification.is_key_verified()
            && match self {
                Policy::AnyVerified => true,
                Policy::Only(names) => names.contains(from),
            }
    }
}

/// Timing, limits and policy of the message exchange. Durations in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first retransmission delay; it doubles at each try.
    pub retransmit_initial: u64,
    /// Transmissions of one message in all, the first included.
    pub tries: u8,
    /// How long a message waits for a session with its peer before it is unreachable.
    pub route_wait: u64,
    /// Messages a sender may send at once, its bucket full.
    pub rate_burst: u32,
    /// Messages per second a sender's bucket refills by.
    pub rate_per_second: u32,
    /// Who may message this phone.
    pub from: Policy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            retransmit_initial: 500,
            tries: 5,
            route_wait: 10_000,
            rate_burst: 10,
            rate_per_second: 5,
            from: Policy::AnyVerified,
        }
    }
}

/// Something that happens to the message exchange, as the shell reports it.
// Fixed capacity, no allocation: the text (or name list) lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The user sends `text` to `to` (`msg NAME TEXT`).
    Send {
        /// The receiver.
        to: Name,
        /// The text, not yet checked.
        text: &'a str,
    },
    /// A secure session with `to` is up: messages may go (answers [`Action::Connect`]).
    Route {
        /// The peer.
        to: Name,
    },
    /// No session with `to` can be set up (answers [`Action::Connect`]): the directory
    /// does not know it (`unknown-user`), cannot be asked or the handshake failed
    /// (`unreachable`), or the peer refused it (`refused`).
    NoRoute {
        /// The peer.
        to: Name,
        /// Why, as the sender will be told.
        reason: Reason,
    },
    /// A line arrived over the secure session with `from`.
    Peer {
        /// The sender, as its session's key names it.
        from: Name,
        /// How the key was verified.
        verification: Verification,
        /// The line.
        line: Line,
    },
}

/// What the messenger tells its user.
// Fixed capacity, no allocation: the text (or name list) lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A message to `to` was taken as `id`; its outcome will follow.
    Sending {
        /// Its id.
        id: MessageId,
        /// The receiver.
        to: Name,
    },
    /// The receiver acknowledged the message.
    Delivered {
        /// Its id.
        id: MessageId,
        /// The receiver.
        to: Name,
    },
    /// The message was not delivered.
    Undelivered {
        /// Its id.
        id: MessageId,
        /// The receiver it was for.
        to: Name,
        /// Why.
        reason: Reason,
    },
    /// A message arrived.
    Message {
        /// The sender.
        from: Name,
        /// How the sender was verified.
        verification: Verification,
        /// The sender's id for it.
        id: MessageId,
        /// The text (escape it to show it).
        text: Text,
    },
}

/// The note as specs and logs write it, the text escaped.
impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Sending { id, to } => write!(f, "sending {id} to {to}"),
            Note::Delivered { id, .. } => write!(f, "delivered {id}"),
            Note::Undelivered { id, reason, .. } => {
                write!(f, "undelivered {id} reason={}", reason.name())
            }
            Note::Message {
                from,
                verification,
                id,
                text,
            } => write!(
                f,
                "message {from} {} {id}: {}",
                verification.name(),
                Escaped::text(text.as_str())
            ),
        }
    }
}

/// A request from the messenger to its shell.
// Fixed capacity, no allocation: the text (or name list) lives inline, by design.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set up (or find) a secure session with `0` — look it up, handshake — and answer
    /// [`Event::Route`] or [`Event::NoRoute`].
    Connect(Name),
    /// Send `line` over the secure session with `to`.
    Send {
        /// The peer.
        to: Name,
        /// What to send.
        line: Line,
    },
    /// Tell the user.
    Notify(Note),
}
