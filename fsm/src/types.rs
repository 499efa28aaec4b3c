//! The vocabulary of the machine: time, names, call ids, messages, events and actions.

use core::fmt;
use core::net::SocketAddr;

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

/// Longest user name, in bytes (the directory's rule).
pub const NAME_MAX: usize = 32;

/// A user name as the machine carries it. Validation (printable, no whitespace) is the
/// codec's job; the machine only needs to store and compare names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Name(heapless::String<NAME_MAX>);

impl Name {
    /// Wraps `name`, or `None` when it is longer than [`NAME_MAX`] bytes.
    pub fn new(name: &str) -> Option<Name> {
        heapless::String::try_from(name).ok().map(Name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one call between two phones; chosen at random by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u32);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Where call ids come from. Injected so that tests and specs choose them.
pub trait CallIds {
    /// A fresh call id for a call this phone places.
    fn next_call_id(&mut self) -> CallId;
}

/// A seeded SplitMix64 generator: the shell seeds it from the operating system.
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

/// Which protocol the peer of a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Parlo: call ids, RINGING, acknowledgements, RTP media.
    Parlo,
    /// The original project: bare `START <name>`, `ACCEPT`, `REJECT`, `CLOSE`, and raw
    /// PCM media. It knows nothing of RINGING, BUSY, CLOSED or ACK.
    Original,
}

/// An audio codec a call can use; both carry 8 kHz mono audio in 512-sample frames.
///
/// L16 is the baseline every phone speaks (the original's raw PCM is L16 too): a START
/// that offers nothing, or an ACCEPT that names nothing, means L16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// 16-bit linear PCM (RTP payload L16; raw PCM with an original peer).
    L16,
    /// G.711 µ-law (RTP payload type 0): half the bandwidth, lossy.
    Pcmu,
}

impl Codec {
    /// Every codec, in the order a [`CodecSet`] lists them.
    pub const ALL: [Codec; 2] = [Codec::L16, Codec::Pcmu];

    /// The codec's name on the wire and in specs.
    pub fn name(self) -> &'static str {
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

/// A set of codecs: what a caller offers in START. Unordered: the callee's preference
/// decides, not the order of the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CodecSet(u8);

impl CodecSet {
    /// No codec (an offer naming only codecs Parlo does not know).
    pub const EMPTY: CodecSet = CodecSet(0);

    /// The set holding only `codec`.
    pub const fn only(codec: Codec) -> CodecSet {
        CodecSet(codec.bit())
    }

    /// This set with `codec` added.
    #[must_use]
    pub const fn with(self, codec: Codec) -> CodecSet {
        CodecSet(self.0 | codec.bit())
    }

    /// Whether the set holds `codec`.
    pub const fn contains(self, codec: Codec) -> bool {
        self.0 & codec.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The codecs in the set, in [`Codec::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Codec> {
        Codec::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Codec> for CodecSet {
    fn from_iter<I: IntoIterator<Item = Codec>>(iter: I) -> CodecSet {
        iter.into_iter().fold(CodecSet::EMPTY, CodecSet::with)
    }
}

impl fmt::Display for CodecSet {
    /// The wire form of the list: `L16,PCMU` (empty for the empty set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, codec) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(codec.name())?;
        }
        Ok(())
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
        for (i, codec) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(codec.name())?;
        }
        Ok(())
    }
}

/// What a peer message says, without its call id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A call request from `caller`.
    Start {
        /// The caller's user name.
        caller: Name,
        /// The codecs the caller offers; `None` when it says nothing (L16).
        codecs: Option<CodecSet>,
    },
    /// The callee is alerting its user.
    Ringing,
    /// The callee answered.
    Accept {
        /// The codec the callee chose; `None` when it says nothing (L16).
        codec: Option<Codec>,
    },
    /// The callee declined.
    Reject,
    /// The callee is already in a call.
    Busy,
    /// Hang up, or cancel a call not yet answered.
    Close,
    /// Acknowledges CLOSE.
    Closed,
    /// Acknowledges ACCEPT (and REJECT).
    Ack,
}

impl Kind {
    /// The message's keyword on the wire.
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::Start { .. } => "START",
            Kind::Ringing => "RINGING",
            Kind::Accept { .. } => "ACCEPT",
            Kind::Reject => "REJECT",
            Kind::Busy => "BUSY",
            Kind::Close => "CLOSE",
            Kind::Closed => "CLOSED",
            Kind::Ack => "ACK",
        }
    }

    /// Whether the original protocol has this message at all.
    pub fn in_original_protocol(&self) -> bool {
        matches!(
            self,
            Kind::Start { .. } | Kind::Accept { .. } | Kind::Reject | Kind::Close
        )
    }
}

/// One signalling message between phones. `call` is `None` in the original dialect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// What the message says.
    pub kind: Kind,
    /// The call it belongs to; absent when the peer speaks the original protocol.
    pub call: Option<CallId>,
}

impl fmt::Display for Message {
    /// The wire form of the message (`START alice call=0000002a v=2 codecs=L16,PCMU`,
    /// `ACCEPT call=0000002a codec=PCMU`, `ACCEPT`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.keyword())?;
        if let Kind::Start { caller, .. } = &self.kind {
            write!(f, " {caller}")?;
        }
        if let Some(call) = self.call {
            write!(f, " call={call}")?;
            if matches!(self.kind, Kind::Start { .. }) {
                f.write_str(" v=2")?;
            }
        }
        match &self.kind {
            Kind::Start {
                codecs: Some(codecs),
                ..
            } => write!(f, " codecs={codecs}")?,
            Kind::Accept { codec: Some(codec) } => write!(f, " codec={codec}")?,
            _ => {}
        }
        Ok(())
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
    },
    /// The directory does not know `name`.
    Unknown {
        /// The name that was looked up.
        name: Name,
    },
    /// A signalling message arrived from `from`.
    Peer {
        /// Source address of the datagram.
        from: SocketAddr,
        /// The decoded message.
        message: Message,
    },
    /// A media packet arrived from `from`.
    Media {
        /// Source address of the packet.
        from: SocketAddr,
    },
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
}

impl Timer {
    /// Every timer, in table order.
    pub const ALL: [Timer; 4] = [
        Timer::Retransmit,
        Timer::NoAnswer,
        Timer::Linger,
        Timer::PeerSilence,
    ];

    /// The timer's name in specs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Timer::Retransmit => "retransmit",
            Timer::NoAnswer => "no-answer",
            Timer::Linger => "linger",
            Timer::PeerSilence => "peer-silence",
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
    },
    /// The call with `peer` is connected.
    Connected {
        /// The other side.
        peer: Name,
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
    /// Ask the directory where `0` is; answer with [`Event::Resolved`] or
    /// [`Event::Unknown`].
    Lookup(Name),
    /// Send `message` to `to`.
    Send {
        /// Destination.
        to: SocketAddr,
        /// What to send.
        message: Message,
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

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Calling { peer } => write!(f, "calling {peer}"),
            Note::Ringing { peer } => write!(f, "ringing {peer}"),
            Note::Incoming { peer, from } => write!(f, "incoming {peer} from {from}"),
            Note::Connected { peer } => write!(f, "connected {peer}"),
            Note::Ended { peer, reason } => write!(f, "ended {peer}: {}", reason.name()),
            Note::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl fmt::Display for Action {
    /// The action in the notation of `specs/*.spec`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Lookup(name) => write!(f, "lookup {name}"),
            Action::Send { to, message } => write!(f, "send {message} to {to}"),
            Action::ArmTimer { timer, at } => write!(f, "arm {} at {at}", timer.name()),
            Action::CancelTimer(timer) => write!(f, "cancel {}", timer.name()),
            Action::StartMedia {
                peer,
                dialect,
                codec,
            } => match dialect {
                Dialect::Original => write!(f, "start media with {peer} (original)"),
                Dialect::Parlo => write!(f, "start media with {peer} ({codec})"),
            },
            Action::StopMedia => f.write_str("stop media"),
            Action::Notify(note) => write!(f, "notify {note}"),
        }
    }
}
