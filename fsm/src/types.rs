//! The machine's own types: time, events, timers, actions and what it tells the user.

use core::fmt;
use core::net::SocketAddr;

use crate::vocab::{CallId, Codec, Dialect, Message, Name, PublicKey};

/// A point in time, in milliseconds since an origin the shell chooses (e.g. its start).
///
/// The machine never reads a clock: every entry point takes `now`, so tests and specs
/// write times as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// This instant plus `ms` milliseconds (saturating: time does not wrap).
    #[must_use]
    pub const fn after(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where call ids come from. Injected so that tests and specs choose them.
pub trait CallIds {
    /// A fresh call id for a call this phone places.
    fn next_call_id(&mut self) -> CallId;
}

/// A seeded SplitMix64 generator, for tests and specs: the same seed gives the same ids.
/// Not for a phone (its ids would be as guessable as its seed): the phone shell reads
/// its ids from the operating system's random source.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl CallIds for SplitMix64 {
    fn next_call_id(&mut self) -> CallId {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Truncation intended: a call id is the low 32 bits of the mix.
        CallId(z as u32)
    }
}

/// Something that happens to a phone, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user asks to call `name`.
    Dial(Name),
    /// The user answers the ringing call.
    Accept,
    /// The user declines the ringing call.
    Reject,
    /// The user hangs up (or cancels the call being placed).
    Hangup,
    /// The directory says where `name` is.
    Resolved {
        /// The name that was looked up.
        name: Name,
        /// The phone's UDP address.
        addr: SocketAddr,
        /// The protocol the phone speaks, when the directory says (a Parlo directory
        /// server does; one of the original project does not: `None`).
        dialect: Option<Dialect>,
        /// The key the directory binds to the name: `None` when no key is bound to it
        /// (anyone could register it) or the directory knows no keys.
        key: Option<PublicKey>,
        /// This phone's pin for the name (its known peers), if it has one.
        pinned: Option<PublicKey>,
    },
    /// The directory does not know `name`.
    Unknown {
        /// The name that was looked up.
        name: Name,
    },
    /// The directory could not be asked about `name` (not connected, the server refused,
    /// the connection was lost): the lookup will get no answer.
    LookupFailed {
        /// The name that was to be looked up.
        name: Name,
    },
    /// A signalling message arrived from `from`.
    Peer {
        /// Source address of the datagram.
        from: SocketAddr,
        /// The decoded message.
        message: Message,
        /// How it reached the phone: in the clear, or out of a secure session.
        sender: Sender,
        /// For a START: this phone's pin for the name the START claims, if it has one
        /// (the shell looks it up). `None` for every other message.
        pinned: Option<PublicKey>,
    },
    /// A media packet arrived from `from`.
    Media {
        /// Source address of the packet.
        from: SocketAddr,
        /// How it reached the phone: in the clear, or out of a secure session.
        sender: Sender,
    },
}

/// How a peer message or media packet reached the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// In the clear: anyone who can send to the phone's address could have sent it.
    Plain,
    /// Out of a secure (Noise) session whose remote static key is this one: only the
    /// holder of the key's private half could have sent it.
    Key(PublicKey),
}

impl Sender {
    /// The key it came with, if it came out of a secure session.
    pub const fn key(self) -> Option<PublicKey> {
        match self {
            Sender::Plain => None,
            Sender::Key(key) => Some(key),
        }
    }

    /// The sender of a message sealed for `key` (`None`: in the clear).
    pub const fn of(key: Option<PublicKey>) -> Sender {
        match key {
            None => Sender::Plain,
            Some(key) => Sender::Key(key),
        }
    }
}

/// The phone's security policy (`--security`): which calls without encryption it makes
/// and takes. Calls with phones of the original project, which have no encryption, have
/// their own switch ([`crate::Config::original_phones`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Security {
    /// Every call between Parlo phones is encrypted: a Parlo phone without a key is
    /// neither called nor answered (`insecure`).
    #[default]
    Required,
    /// Encrypted when the peer has a key; a Parlo phone without one is called and
    /// answered in plaintext, and the user is told (`verified=plaintext`).
    Preferred,
    /// Never encrypted: keys are not looked at, every call is plaintext.
    Off,
}

impl Security {
    /// Every policy.
    pub const ALL: [Security; 3] = [Security::Required, Security::Preferred, Security::Off];

    /// The policy's name on the command line and in specs.
    pub const fn name(self) -> &'static str {
        match self {
            Security::Required => "required",
            Security::Preferred => "preferred",
            Security::Off => "off",
        }
    }

    /// The policy a name names.
    pub fn from_name(name: &str) -> Option<Security> {
        Security::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How the peer of a call is verified, as the user is told in `incoming` and `connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verification {
    /// Encrypted, and the peer's key is the one the name is known by: this phone's pin
    /// for the name, or (first contact) the one the directory binds to it.
    Key,
    /// Encrypted, but no key is bound to the name at the directory and this phone has no
    /// pin for it: anyone could have claimed the name.
    Unbound,
    /// Encrypted, but the key is not the name's: the directory binds another key to it,
    /// or does not know the name (and this phone has no pin for it).
    No,
    /// Encrypted, but the directory could not say in time, and this phone has no pin for
    /// the name.
    Unknown,
    /// Not encrypted: the name is only as good as the address it came from.
    Plaintext,
}

impl Verification {
    /// Every verification.
    pub const ALL: [Verification; 5] = [
        Verification::Key,
        Verification::Unbound,
        Verification::No,
        Verification::Unknown,
        Verification::Plaintext,
    ];

    /// Its name in events and specs: `key`, `unbound`, `no`, `unknown`, `plaintext`.
    pub const fn name(self) -> &'static str {
        match self {
            Verification::Key => "key",
            Verification::Unbound => "unbound",
            Verification::No => "no",
            Verification::Unknown => "unknown",
            Verification::Plaintext => "plaintext",
        }
    }
}

/// What the directory said about a name whose holder is being verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The name is bound to this key.
    Key(PublicKey),
    /// The name is registered, with no key bound to it.
    NoKey,
    /// The name is not registered.
    NotRegistered,
    /// The directory could not be asked, or did not answer in time.
    NoAnswer,
}

/// How a peer that proved `key` and gives a name is verified, from this phone's pin for
/// that name (`pinned`: a different pin is refused as a changed key before this) and the
/// directory's word on it: the verification, and whether the key is new (first contact,
/// the directory confirms it: to be pinned). The one rule of calls and messages alike:
///
/// | the directory | the key is pinned for the name | no pin |
/// | --- | --- | --- |
/// | binds the name to `key` | `Key` | `Key`, new |
/// | binds it to another key | `No` | `No` |
/// | binds no key to it | `Key` | `Unbound` |
/// | does not know the name | `Key` | `No` |
/// | cannot say | `Key` | `Unknown` |
pub fn verify_key(
    key: PublicKey,
    pinned: Option<PublicKey>,
    binding: Binding,
) -> (Verification, bool) {
    let is_pinned = pinned == Some(key);
    let verification = match binding {
        Binding::Key(bound) if bound == key => return (Verification::Key, pinned.is_none()),
        Binding::Key(_) => Verification::No,
        _ if is_pinned => Verification::Key,
        Binding::NoKey => Verification::Unbound,
        Binding::NotRegistered => Verification::No,
        Binding::NoAnswer => Verification::Unknown,
    };
    (verification, false)
}

/// The timers of a call; each is either off or armed with one deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Resend the message awaiting acknowledgement.
    Retransmit,
    /// The call has not been answered in time, counted from the dial (caller: this
    /// bounds the lookup too), or the ringing has lasted too long (callee).
    NoAnswer,
    /// End of the short wait in `Closing` for acknowledgements and late duplicates.
    Linger,
    /// No media from the peer for too long.
    PeerSilence,
    /// The pause before saying START once more to a callee of the original project,
    /// which takes every START as a new call.
    StartAgain,
    /// How long an incoming call waits for the directory to confirm the caller before it
    /// is announced unverified.
    Verify,
}

impl Timer {
    /// Every timer, in table order.
    pub const ALL: [Timer; 6] = [
        Timer::Retransmit,
        Timer::NoAnswer,
        Timer::Linger,
        Timer::PeerSilence,
        Timer::StartAgain,
        Timer::Verify,
    ];

    /// The timer's name in specs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Timer::Retransmit => "retransmit",
            Timer::NoAnswer => "no-answer",
            Timer::Linger => "linger",
            Timer::PeerSilence => "peer-silence",
            Timer::StartAgain => "start-again",
            Timer::Verify => "verify",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// This phone's user hung up.
    Hangup,
    /// The peer hung up.
    RemoteHangup,
    /// The call was declined (by the callee; reported on both sides).
    Rejected,
    /// The callee was already in a call.
    Busy,
    /// Nobody answered within the answer timeout.
    NoAnswer,
    /// The directory does not know the name called.
    UnknownUser,
    /// The peer stopped responding.
    PeerLost,
    /// The caller gave up before the call was answered.
    Cancelled,
    /// The directory could not be asked where the callee is.
    LookupFailed,
    /// The peer's key is not the one pinned for its name (a caller's START, or the
    /// directory's key for a callee): nothing was said to it in the clear and nothing
    /// rang.
    KeyChanged,
    /// The security policy refuses the call: a plaintext call with a Parlo phone under
    /// [`Security::Required`], or one with an original phone when they are not allowed.
    Insecure,
    /// The callee is a phone of the original project, and the call would be a
    /// conference's leg ([`crate::Config::conference`]): an original phone has no
    /// conferences, and nothing is sent to it.
    OriginalPhone,
}

impl EndReason {
    /// The reason as the phone prints it.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::RemoteHangup => "remote-hangup",
            EndReason::Rejected => "rejected",
            EndReason::Busy => "busy",
            EndReason::NoAnswer => "no-answer",
            EndReason::UnknownUser => "unknown-user",
            EndReason::PeerLost => "peer-lost",
            EndReason::Cancelled => "cancelled",
            EndReason::LookupFailed => "lookup-failed",
            EndReason::KeyChanged => "key-changed",
            EndReason::Insecure => "insecure",
            EndReason::OriginalPhone => "original-phone",
        }
    }
}

/// Why a user command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `accept` or `reject` with no call ringing.
    NoIncomingCall,
    /// `hangup` with no call in progress.
    NoCall,
    /// `call` while a call is already in progress.
    AlreadyInCall,
    /// `call` with this phone's own name.
    CallingSelf,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NoIncomingCall => "no incoming call to answer",
            Refusal::NoCall => "no call to hang up",
            Refusal::AlreadyInCall => "already in a call: hang up first",
            Refusal::CallingSelf => "cannot call yourself",
        })
    }
}

/// What the phone tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An outgoing call to `peer` has begun.
    Calling {
        /// The callee.
        peer: Name,
    },
    /// The callee's phone is ringing.
    Ringing {
        /// The callee.
        peer: Name,
    },
    /// `peer` is calling from `from`.
    Incoming {
        /// The caller's name as it announced itself.
        peer: Name,
        /// The caller's address.
        from: SocketAddr,
        /// How the caller is verified.
        verified: Verification,
        /// Whether the caller's key was pinned just now (first contact, the directory
        /// binding it to the name): an [`Action::Pin`] goes with the note.
        new: bool,
        /// For a plaintext call, whether the directory gives the name the IP address the
        /// call came from: `Some(false)` when another or none (the name is not
        /// registered), `None` when it could not say in time. Always `None` for an
        /// encrypted call, where the key says more than the address.
        address: Option<bool>,
    },
    /// The call with `peer` is connected.
    Connected {
        /// The other side.
        peer: Name,
        /// How the other side is verified.
        verified: Verification,
        /// Whether the peer's key was pinned just now (first contact): an
        /// [`Action::Pin`] goes with the note.
        new: bool,
    },
    /// The call with `peer` ended.
    Ended {
        /// The other side.
        peer: Name,
        /// Why.
        reason: EndReason,
    },
    /// A user command was refused.
    Refused(Refusal),
}

/// A request from the machine to its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the directory where `0` is, to call it; answer with [`Event::Resolved`],
    /// [`Event::Unknown`] or [`Event::LookupFailed`].
    Lookup(Name),
    /// Ask the directory where `name` is, to verify an incoming caller's name against
    /// `from`; answer as for [`Action::Lookup`]. A failure is no news for the user: the
    /// call is announced unverified.
    LookupCaller {
        /// The name the caller announced.
        name: Name,
        /// The address the call came from.
        from: SocketAddr,
    },
    /// Send `message` to `to`.
    Send {
        /// Destination.
        to: SocketAddr,
        /// What to send.
        message: Message,
        /// `Some(k)`: seal it in a secure session with the holder of static key `k`, and
        /// never send it in the clear (the call's key; for a BUSY or REJECT answering a
        /// START, that START's sender's key). `None`: send it in the clear.
        key: Option<PublicKey>,
    },
    /// Record `key` as the pin for `name` (first contact: the directory bound it to the
    /// name, and this phone had no pin for it).
    Pin {
        /// The peer's name.
        name: Name,
        /// Its key.
        key: PublicKey,
    },
    /// `timer` is armed for `at`. Informational: the machine keeps its timers itself and
    /// reports the earliest through [`crate::Machine::poll_timeout`].
    ArmTimer {
        /// Which timer.
        timer: Timer,
        /// Its deadline.
        at: Instant,
    },
    /// `0` is no longer armed. Informational, as [`Action::ArmTimer`].
    CancelTimer(Timer),
    /// Start sending and playing media with `peer`, in the format of `dialect`, with
    /// `codec`.
    StartMedia {
        /// The peer's address.
        peer: SocketAddr,
        /// RTP for Parlo peers, raw PCM for original ones.
        dialect: Dialect,
        /// The codec the call uses (always L16 with an original peer).
        codec: Codec,
    },
    /// Stop media.
    StopMedia,
    /// Tell the user.
    Notify(Note),
}

/// Whether a plaintext caller's address is the one the directory gives for its name, in
/// the words of events and specs: `yes`, `no` (another address, or the name is unknown),
/// `unknown` (the directory could not say in time).
pub const fn address_name(address: Option<bool>) -> &'static str {
    match address {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Calling { peer } => write!(f, "calling {peer}"),
            Note::Ringing { peer } => write!(f, "ringing {peer}"),
            Note::Incoming {
                peer,
                from,
                verified,
                new,
                address,
            } => {
                write!(
                    f,
                    "incoming {peer} from {from} verified={}",
                    verified.name()
                )?;
                if *new {
                    f.write_str(" new=yes")?;
                }
                if *verified == Verification::Plaintext {
                    write!(f, " address={}", address_name(*address))?;
                }
                Ok(())
            }
            Note::Connected {
                peer,
                verified,
                new,
            } => {
                write!(f, "connected {peer} verified={}", verified.name())?;
                if *new {
                    f.write_str(" new=yes")?;
                }
                Ok(())
            }
            Note::Ended { peer, reason } => write!(f, "ended {peer}: {}", reason.name()),
            Note::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages;

    #[test]
    fn a_key_is_verified_by_the_pin_or_the_directory_as_the_table_says() {
        let (k, other) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let cases = [
            (Binding::Key(k), Some(k), (Verification::Key, false)),
            (Binding::Key(k), None, (Verification::Key, true)),
            (Binding::Key(other), Some(k), (Verification::No, false)),
            (Binding::Key(other), None, (Verification::No, false)),
            (Binding::NoKey, Some(k), (Verification::Key, false)),
            (Binding::NoKey, None, (Verification::Unbound, false)),
            (Binding::NotRegistered, Some(k), (Verification::Key, false)),
            (Binding::NotRegistered, None, (Verification::No, false)),
            (Binding::NoAnswer, Some(k), (Verification::Key, false)),
            (Binding::NoAnswer, None, (Verification::Unknown, false)),
        ];
        for (binding, pinned, expected) in cases {
            assert_eq!(
                verify_key(k, pinned, binding),
                expected,
                "{binding:?} {pinned:?}"
            );
        }
        // A message sender is key-verified exactly when a caller would be.
        for call in Verification::ALL {
            for new in [false, true] {
                let sender = messages::Verification::of_call(call, new);
                assert_eq!(
                    sender.is_key_verified(),
                    call == Verification::Key,
                    "{call:?}"
                );
            }
        }
    }
}
