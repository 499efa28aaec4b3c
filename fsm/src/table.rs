//! The transition table: the specification of the call machine, one row per line.
//!
//! Every (state, event) pair appears here, either as one or more rows
//! `(state, event, guard) -> (next state, steps)` or as an explicit `ignore` with the
//! reason. A test proves the table complete; `specs/transitions.txt` is its rendering.
//!
//! Two rules hold for every row and are not repeated in it:
//! - leaving a state cancels every timer armed in it (a state's timers never outlive it);
//! - entering `Idle` forgets the call.
//!
//! # Security
//! A call is encrypted with one peer key, or plaintext; the machine decides which and
//! the shell does the cryptography ([`crate::Action::Send`]'s `key`). The rows that
//! decide are these:
//! - A new START in `Idle` or `Closing` is `welcome` (it rings), `key changed` (it comes
//!   out of a secure session with another key than the one pinned for the name it
//!   claims) or `plaintext refused` (in the clear, and the policy refuses it: a Parlo
//!   START under [`crate::Security::Required`], an original one without
//!   [`crate::Config::original_phones`]). A refused START rings nothing: its sender gets
//!   REJECT, the user is told `ended <name>: key-changed` or `insecure`, and a call
//!   lingering in `Closing` is left as it was.
//! - `Dialing × resolved` chooses the callee's key: the pin for its name, else the key
//!   the directory binds to it. Both known and different: `key changed`, nothing is
//!   sent. None, with a Parlo (or unknown) callee, under `Required`: `plaintext
//!   refused`. An original callee is called in plaintext when original phones are
//!   allowed, else refused alike. Under [`crate::Security::Off`] keys are not looked at.
//! - The incoming call is announced with the caller's verification (see
//!   [`crate::Verification`] and [`crate::Machine`]); only a `key`-verified caller, on
//!   the [`crate::Config::answer_from`] list when it is not empty, is answered by an
//!   intercom (`auto-answer`); every other call rings.
//! - A key seen for the first time (the directory binds it, this phone has no pin) is
//!   pinned ([`crate::Action::Pin`]) when it is told: at the announcement of an incoming
//!   call, when an outgoing call connects.
//!
//! The classification (in [`crate::Machine`]) keeps the rest out: in an encrypted call
//! only what comes out of a session with the call's key belongs to it; in a plaintext
//! call only what comes in the clear.

use crate::types::{EndReason, Refusal, Timer};

/// The states of a phone (the design card's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No call.
    Idle,
    /// Placing a call: looking the callee up, then waiting for its answer.
    Dialing,
    /// An incoming call is alerting the user.
    Ringing,
    /// Connected; media flows.
    InCall,
    /// The call has ended; waiting briefly for acknowledgements and late duplicates.
    Closing,
}

impl State {
    /// Every state, in table order.
    pub const ALL: [State; 5] = [
        State::Idle,
        State::Dialing,
        State::Ringing,
        State::InCall,
        State::Closing,
    ];

    /// The timers that may be armed in this state.
    pub fn timers(self) -> &'static [Timer] {
        match self {
            State::Idle => &[],
            State::Dialing => &[Timer::Retransmit, Timer::NoAnswer, Timer::StartAgain],
            State::Ringing => &[Timer::NoAnswer, Timer::Verify],
            State::InCall => &[Timer::Retransmit, Timer::PeerSilence],
            State::Closing => &[Timer::Retransmit, Timer::Linger],
        }
    }
}

/// The table's columns: an [`crate::Event`] or a timer, classified against the current
/// call (see [`crate::Machine`] for the classification rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// The user dials a name.
    Dial,
    /// The user accepts.
    Accept,
    /// The user rejects.
    Reject,
    /// The user hangs up.
    Hangup,
    /// The directory resolved the name being dialled (or the caller being verified).
    Resolved,
    /// The directory does not know the name being dialled (or the caller being
    /// verified).
    Unknown,
    /// The directory could not be asked about the name being dialled (or the caller
    /// being verified).
    LookupFailed,
    /// A START that is a new call request (not ours, not a repeat).
    Start,
    /// A repeat of the START of the current call (same caller, address and call id).
    StartRepeat,
    /// While dialling X, a START from X: both called each other at once (glare).
    StartCrossing,
    /// RINGING for the current call.
    Ringing,
    /// ACCEPT for the current call.
    PeerAccept,
    /// REJECT for the current call.
    PeerReject,
    /// BUSY for the current call.
    Busy,
    /// CLOSE for the current call.
    Close,
    /// CLOSED for the current call.
    Closed,
    /// ACK for the current call.
    Ack,
    /// Media from the peer of the current call.
    Media,
    /// A message or media that does not belong to the current call (another call id or
    /// another address): ignored and counted.
    Foreign,
    /// The retransmission timer fired and attempts remain.
    Retransmit,
    /// The retransmission timer fired with every attempt used.
    RetransmitExhausted,
    /// The answer timer fired.
    NoAnswer,
    /// The closing linger ended.
    Linger,
    /// The peer has been silent too long.
    PeerSilence,
    /// The pause before saying START once more to an original callee is over.
    StartAgain,
    /// Raw audio, without a call, from the original peer of a call that ended: it missed
    /// our CLOSE (see [`crate::Config::ended_peer_memory`]).
    LeftoverMedia,
    /// The directory did not confirm the caller in time.
    Verify,
}

impl EventKind {
    /// Every event kind, in table order.
    pub const ALL: [EventKind; 27] = [
        EventKind::Dial,
        EventKind::Accept,
        EventKind::Reject,
        EventKind::Hangup,
        EventKind::Resolved,
        EventKind::Unknown,
        EventKind::LookupFailed,
        EventKind::Start,
        EventKind::StartRepeat,
        EventKind::StartCrossing,
        EventKind::Ringing,
        EventKind::PeerAccept,
        EventKind::PeerReject,
        EventKind::Busy,
        EventKind::Close,
        EventKind::Closed,
        EventKind::Ack,
        EventKind::Media,
        EventKind::Foreign,
        EventKind::Retransmit,
        EventKind::RetransmitExhausted,
        EventKind::NoAnswer,
        EventKind::Linger,
        EventKind::PeerSilence,
        EventKind::StartAgain,
        EventKind::LeftoverMedia,
        EventKind::Verify,
    ];

    /// The event's name in the matrix, specs and logs.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Dial => "dial",
            EventKind::Accept => "accept",
            EventKind::Reject => "reject",
            EventKind::Hangup => "hangup",
            EventKind::Resolved => "resolved",
            EventKind::Unknown => "unknown",
            EventKind::LookupFailed => "lookup failed",
            EventKind::Start => "START",
            EventKind::StartRepeat => "START again",
            EventKind::StartCrossing => "START crossing",
            EventKind::Ringing => "RINGING",
            EventKind::PeerAccept => "ACCEPT",
            EventKind::PeerReject => "REJECT",
            EventKind::Busy => "BUSY",
            EventKind::Close => "CLOSE",
            EventKind::Closed => "CLOSED",
            EventKind::Ack => "ACK",
            EventKind::Media => "media",
            EventKind::Foreign => "foreign",
            EventKind::Retransmit => "retransmit timer",
            EventKind::RetransmitExhausted => "retransmit exhausted",
            EventKind::NoAnswer => "no-answer timer",
            EventKind::Linger => "linger timer",
            EventKind::PeerSilence => "peer-silence timer",
            EventKind::StartAgain => "start-again timer",
            EventKind::LeftoverMedia => "leftover media",
            EventKind::Verify => "verify timer",
        }
    }

    /// The event a firing timer becomes (retransmission exhaustion is decided by the
    /// machine, which counts attempts).
    pub fn of_timer(timer: Timer) -> EventKind {
        match timer {
            Timer::Retransmit => EventKind::Retransmit,
            Timer::NoAnswer => EventKind::NoAnswer,
            Timer::Linger => EventKind::Linger,
            Timer::PeerSilence => EventKind::PeerSilence,
            Timer::StartAgain => EventKind::StartAgain,
            Timer::Verify => EventKind::Verify,
        }
    }
}

/// A condition on the call that picks between rows of the same (state, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// No condition.
    Always,
    /// The name dialled is this phone's own.
    ToSelf,
    /// The name dialled is another phone's.
    ToOther,
    /// The peer's address is known (the lookup has answered).
    PeerKnown,
    /// The lookup has not answered yet.
    PeerUnknown,
    /// Glare: the crossing call wins (its call id is lower, or it speaks the original
    /// protocol, which cannot yield).
    TheyWin,
    /// Glare: our call wins.
    WeWin,
    /// A message is still awaiting acknowledgement.
    Awaiting,
    /// Nothing awaits acknowledgement.
    NotAwaiting,
    /// The directory says the callee speaks the original protocol.
    OriginalCallee,
    /// The directory says the callee speaks Parlo, or does not say.
    ParloCallee,
    /// No CLOSE went to the ended original peer for the rate limit's interval.
    CloseDue,
    /// A CLOSE went to the ended original peer less than the interval ago.
    CloseRecent,
    /// The phone answers this call by itself: [`crate::Config::auto_answer`], the caller
    /// is key-verified (or security is off), and on [`crate::Config::answer_from`] when
    /// that list is not empty.
    AutoAnswer,
    /// The user answers this call (every call without auto-answer, and every caller that
    /// is not key-verified or not on the list).
    ManualAnswer,
    /// A START the policy lets ring: encrypted with the key pinned for its name (or a
    /// name without pin), or plaintext that the policy allows.
    Welcome,
    /// A plaintext START the policy refuses: a Parlo START under
    /// [`crate::Security::Required`], an original START without
    /// [`crate::Config::original_phones`].
    PlaintextRefused,
    /// An encrypted START whose key is not the one pinned for the name it claims.
    KeyChanged,
    /// The callee's key from the directory is not the one pinned for its name.
    CalleeKeyChanged,
    /// The policy refuses to call the callee in plaintext: a Parlo (or unknown) callee
    /// without key under [`crate::Security::Required`], an original callee without
    /// [`crate::Config::original_phones`].
    CalleeRefused,
    /// The callee is an original phone and the call a conference's leg.
    OriginalInConference,
}

impl Guard {
    /// The guard as the matrix prints it (empty for [`Guard::Always`]).
    pub fn name(self) -> &'static str {
        match self {
            Guard::Always => "",
            Guard::ToSelf => "to self",
            Guard::ToOther => "to another",
            Guard::PeerKnown => "peer known",
            Guard::PeerUnknown => "peer unknown",
            Guard::TheyWin => "they win",
            Guard::WeWin => "we win",
            Guard::Awaiting => "awaiting ack",
            Guard::NotAwaiting => "nothing awaited",
            Guard::OriginalCallee => "callee original",
            Guard::OriginalInConference => "callee original, conference",
            Guard::ParloCallee => "callee parlo or unknown",
            Guard::Welcome => "welcome",
            Guard::PlaintextRefused | Guard::CalleeRefused => "plaintext refused",
            Guard::KeyChanged | Guard::CalleeKeyChanged => "key changed",
            Guard::CloseDue => "close due",
            Guard::CloseRecent => "close too recent",
            Guard::AutoAnswer => "auto-answer",
            Guard::ManualAnswer => "manual answer",
        }
    }

    /// The guards that together cover every case when one of them is used.
    pub fn family(self) -> &'static [Guard] {
        match self {
            Guard::Always => &[Guard::Always],
            Guard::ToSelf | Guard::ToOther => &[Guard::ToSelf, Guard::ToOther],
            Guard::PeerKnown | Guard::PeerUnknown => &[Guard::PeerKnown, Guard::PeerUnknown],
            Guard::TheyWin | Guard::WeWin => &[Guard::TheyWin, Guard::WeWin],
            Guard::Awaiting | Guard::NotAwaiting => &[Guard::Awaiting, Guard::NotAwaiting],
            Guard::OriginalCallee
            | Guard::ParloCallee
            | Guard::CalleeKeyChanged
            | Guard::CalleeRefused
            | Guard::OriginalInConference => &[
                Guard::OriginalCallee,
                Guard::ParloCallee,
                Guard::CalleeKeyChanged,
                Guard::CalleeRefused,
                Guard::OriginalInConference,
            ],
            Guard::Welcome | Guard::PlaintextRefused | Guard::KeyChanged => {
                &[Guard::Welcome, Guard::PlaintextRefused, Guard::KeyChanged]
            }
            Guard::CloseDue | Guard::CloseRecent => &[Guard::CloseDue, Guard::CloseRecent],
            Guard::AutoAnswer | Guard::ManualAnswer => &[Guard::AutoAnswer, Guard::ManualAnswer],
        }
    }
}

/// A message the machine sends to the peer of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Say {
    /// `START <me> call=<id> v=2 codecs=<ours>`.
    Start,
    /// `RINGING`.
    Ringing,
    /// `ACCEPT codec=<chosen>`.
    Accept,
    /// `REJECT`.
    Reject,
    /// `CLOSE`.
    Close,
    /// `CLOSED`.
    Closed,
    /// `ACK`.
    Ack,
}

/// What the user is told, as a row writes it (the machine fills in names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tell {
    /// `calling <peer>`.
    Calling,
    /// `ringing <peer>`.
    Ringing,
    /// `connected <peer>`.
    Connected,
    /// `ended <peer>: <reason>`.
    Ended(EndReason),
    /// `ended <caller>: <reason>` about a START refused without ringing: the name the
    /// START claims, not the current call's peer.
    EndedRequest(EndReason),
    /// `refused: <why>`.
    Refused(Refusal),
}

/// One step of a row, executed in order by [`crate::Machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Begin a call to the name dialled, with a fresh call id.
    BeginOutgoing,
    /// Begin a call from the sender of the START (replacing any call being closed, or
    /// ours on glare).
    BeginIncoming,
    /// Ask the directory for the callee's address.
    Lookup,
    /// Ask the directory for the caller's address, to verify its name.
    LookupCaller,
    /// Tell the user of the incoming call, unless told already, with how the caller is
    /// verified: by the directory's answer when the event is that answer, by the pin
    /// alone otherwise (see [`crate::Machine`]). Every row that tells anything else about
    /// a call not yet announced announces it first.
    Announce,
    /// Remember the address the directory gave.
    LearnAddress,
    /// Fix the dialect of the call, if it is not fixed yet: from the directory's answer
    /// when it says, else from the callee's first answer (one without call id means the
    /// original protocol).
    LearnDialect,
    /// Take the key to call the callee with: this phone's pin for its name, else the key
    /// the directory binds to it (none for an original phone, and none under
    /// [`crate::Security::Off`]). A call with a key is encrypted, and in Parlo's dialect.
    LearnKey,
    /// Pin the call's key to the peer's name if it was seen for the first time (the
    /// directory binds it and there was no pin); once per call.
    Pin,
    /// Take the codec the ACCEPT names (L16 when it names none).
    LearnCodec,
    /// Send once.
    Send(Say),
    /// Send, and resend on the retransmission timer until acknowledged.
    SendReliably(Say),
    /// Resend the message awaiting acknowledgement, if any, and back off.
    Resend,
    /// Stop retransmitting: the message was acknowledged or is given up.
    StopRetransmitting,
    /// Answer the sender of a START (not our peer) with BUSY (REJECT to an original
    /// START), sealed for the START's key when it came encrypted.
    ReplyBusy,
    /// Answer the sender of a START (not our peer) with REJECT (bare to an original
    /// START), sealed for the START's key when it came encrypted.
    ReplyReject,
    /// Arm a timer.
    Arm(Timer),
    /// Disarm a timer.
    Disarm(Timer),
    /// Start media with the peer.
    StartMedia,
    /// Stop media.
    StopMedia,
    /// Tell the user.
    Tell(Tell),
    /// Count a message that did not belong to the call.
    CountForeign,
    /// If the peer speaks the original protocol, remember its address after the call:
    /// it may miss our CLOSE and keep streaming audio.
    RememberEnded,
    /// Note that audio came from the remembered ended peer (it is forgotten once it has
    /// been silent for [`crate::Config::ended_peer_memory`]).
    HearEnded,
    /// Say a bare CLOSE to the remembered ended peer.
    CloseEnded,
}

/// Where a row leads.
pub type Next = crate::rows::Next<State>;
/// What a table entry does.
pub type Outcome = crate::rows::Outcome<State, Step>;
/// One entry of the table.
pub type Entry = crate::rows::Entry<State, EventKind, Guard, Step>;

use crate::rows::{ignore_when, row};

const fn ignore(state: State, event: EventKind, why: &'static str) -> Entry {
    ignore_when(state, event, Guard::Always, why)
}

use crate::rows::Next::{Stay, To};
use EventKind as E;
use Guard::*;
use State::*;
use Step::*;

const NO_CALL: &str = "no call in progress";
const NOT_ARMED: &str = "this timer is never armed in this state";
const NOT_DIALLING: &str = "no lookup is pending";
const LATE_ANSWER: &str = "a late answer to a lookup no longer wanted (glare, or a call answered before its caller was verified)";
const NO_LEFTOVER: &str = "only without a call: a new call forgets the ended peer";

/// The transition table of the call machine.
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    // ---- Idle: no call ------------------------------------------------------------
    row(Idle, E::Dial, ToOther, To(Dialing), &[BeginOutgoing, Lookup, Arm(Timer::NoAnswer), Tell(Tell::Calling)]),
    row(Idle, E::Dial, ToSelf, Stay, &[Tell(Tell::Refused(Refusal::CallingSelf))]),
    row(Idle, E::Accept, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Idle, E::Reject, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Idle, E::Hangup, Always, Stay, &[Tell(Tell::Refused(Refusal::NoCall))]),
    ignore(Idle, E::Resolved, NOT_DIALLING),
    ignore(Idle, E::Unknown, NOT_DIALLING),
    ignore(Idle, E::LookupFailed, NOT_DIALLING),
    row(Idle, E::Start, Welcome, To(Ringing), &[BeginIncoming, Send(Say::Ringing), Arm(Timer::NoAnswer), LookupCaller, Arm(Timer::Verify)]),
    row(Idle, E::Start, PlaintextRefused, Stay, &[ReplyReject, Tell(Tell::EndedRequest(EndReason::Insecure))]),
    row(Idle, E::Start, KeyChanged, Stay, &[ReplyReject, Tell(Tell::EndedRequest(EndReason::KeyChanged))]),
    ignore(Idle, E::StartRepeat, "a repeat needs a current call"),
    ignore(Idle, E::StartCrossing, "a crossing START needs a call being dialled"),
    ignore(Idle, E::Ringing, NO_CALL),
    ignore(Idle, E::PeerAccept, NO_CALL),
    ignore(Idle, E::PeerReject, NO_CALL),
    ignore(Idle, E::Busy, NO_CALL),
    ignore(Idle, E::Close, "no call to close (a late duplicate of an ended call)"),
    ignore(Idle, E::Closed, NO_CALL),
    ignore(Idle, E::Ack, NO_CALL),
    ignore(Idle, E::Media, "no call: stray media is dropped"),
    ignore(Idle, E::Foreign, "nothing is foreign without a call"),
    ignore(Idle, E::Retransmit, NOT_ARMED),
    ignore(Idle, E::RetransmitExhausted, NOT_ARMED),
    ignore(Idle, E::NoAnswer, NOT_ARMED),
    ignore(Idle, E::Linger, NOT_ARMED),
    ignore(Idle, E::PeerSilence, NOT_ARMED),
    ignore(Idle, E::StartAgain, NOT_ARMED),
    row(Idle, E::LeftoverMedia, CloseDue, Stay, &[HearEnded, CloseEnded]),
    row(Idle, E::LeftoverMedia, CloseRecent, Stay, &[HearEnded]),
    ignore(Idle, E::Verify, NOT_ARMED),

    // ---- Dialing: looking the callee up, then waiting for its answer -------------------
    row(Dialing, E::Dial, Always, Stay, &[Tell(Tell::Refused(Refusal::AlreadyInCall))]),
    row(Dialing, E::Accept, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Dialing, E::Reject, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Dialing, E::Hangup, PeerKnown, To(Closing), &[SendReliably(Say::Close), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::Cancelled))]),
    row(Dialing, E::Hangup, PeerUnknown, To(Idle), &[Tell(Tell::Ended(EndReason::Cancelled))]),
    row(Dialing, E::Resolved, ParloCallee, Stay, &[LearnAddress, LearnDialect, LearnKey, SendReliably(Say::Start)]),
    row(Dialing, E::Resolved, OriginalCallee, Stay, &[LearnAddress, LearnDialect, LearnKey, Send(Say::Start), Arm(Timer::StartAgain)]),
    row(Dialing, E::Resolved, CalleeKeyChanged, To(Idle), &[Tell(Tell::Ended(EndReason::KeyChanged))]),
    row(Dialing, E::Resolved, CalleeRefused, To(Idle), &[Tell(Tell::Ended(EndReason::Insecure))]),
    row(Dialing, E::Resolved, OriginalInConference, To(Idle), &[Tell(Tell::Ended(EndReason::OriginalPhone))]),
    row(Dialing, E::Unknown, Always, To(Idle), &[Tell(Tell::Ended(EndReason::UnknownUser))]),
    row(Dialing, E::LookupFailed, Always, To(Idle), &[Tell(Tell::Ended(EndReason::LookupFailed))]),
    row(Dialing, E::Start, Always, Stay, &[ReplyBusy]),
    ignore(Dialing, E::StartRepeat, "only the callee receives START, and the callee is not dialling"),
    row(Dialing, E::StartCrossing, TheyWin, To(InCall), &[BeginIncoming, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected), Pin]),
    ignore_when(Dialing, E::StartCrossing, WeWin, "our call wins the glare: the peer yields to our START"),
    row(Dialing, E::Ringing, Awaiting, Stay, &[LearnDialect, StopRetransmitting, Tell(Tell::Ringing)]),
    ignore_when(Dialing, E::Ringing, NotAwaiting, "a duplicate: the user was told already"),
    row(Dialing, E::PeerAccept, Always, To(InCall), &[LearnDialect, LearnCodec, Send(Say::Ack), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected), Pin]),
    row(Dialing, E::PeerReject, Always, To(Idle), &[LearnDialect, Send(Say::Ack), Tell(Tell::Ended(EndReason::Rejected))]),
    row(Dialing, E::Busy, Always, To(Idle), &[Tell(Tell::Ended(EndReason::Busy))]),
    row(Dialing, E::Close, Always, To(Closing), &[Send(Say::Closed), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::RemoteHangup))]),
    ignore(Dialing, E::Closed, "we sent no CLOSE"),
    ignore(Dialing, E::Ack, "we sent nothing that is acknowledged by ACK"),
    ignore(Dialing, E::Media, "no media before the answer"),
    row(Dialing, E::Foreign, Always, Stay, &[CountForeign]),
    row(Dialing, E::Retransmit, Always, Stay, &[Resend]),
    row(Dialing, E::RetransmitExhausted, Always, To(Idle), &[Tell(Tell::Ended(EndReason::NoAnswer))]),
    row(Dialing, E::NoAnswer, PeerKnown, To(Closing), &[SendReliably(Say::Close), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::NoAnswer))]),
    row(Dialing, E::NoAnswer, PeerUnknown, To(Idle), &[Tell(Tell::Ended(EndReason::NoAnswer))]),
    ignore(Dialing, E::Linger, NOT_ARMED),
    ignore(Dialing, E::PeerSilence, NOT_ARMED),
    row(Dialing, E::StartAgain, Always, Stay, &[Send(Say::Start)]),
    ignore(Dialing, E::LeftoverMedia, NO_LEFTOVER),
    ignore(Dialing, E::Verify, NOT_ARMED),

    // ---- Ringing: an incoming call alerts the user ---------------------------------
    row(Ringing, E::Dial, Always, Stay, &[Announce, Tell(Tell::Refused(Refusal::AlreadyInCall))]),
    row(Ringing, E::Accept, Always, To(InCall), &[Announce, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected)]),
    row(Ringing, E::Reject, Always, To(Closing), &[Announce, SendReliably(Say::Reject), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::Rejected))]),
    row(Ringing, E::Hangup, Always, To(Closing), &[Announce, SendReliably(Say::Reject), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::Rejected))]),
    row(Ringing, E::Resolved, ManualAnswer, Stay, &[Disarm(Timer::Verify), Announce, Pin]),
    row(Ringing, E::Resolved, AutoAnswer, To(InCall), &[Announce, Pin, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected)]),
    row(Ringing, E::Unknown, ManualAnswer, Stay, &[Disarm(Timer::Verify), Announce]),
    row(Ringing, E::Unknown, AutoAnswer, To(InCall), &[Announce, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected)]),
    row(Ringing, E::LookupFailed, ManualAnswer, Stay, &[Disarm(Timer::Verify), Announce]),
    row(Ringing, E::LookupFailed, AutoAnswer, To(InCall), &[Announce, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected)]),
    row(Ringing, E::Start, Always, Stay, &[ReplyBusy]),
    row(Ringing, E::StartRepeat, Always, Stay, &[Send(Say::Ringing)]),
    ignore(Ringing, E::StartCrossing, "a crossing START needs a call being dialled"),
    ignore(Ringing, E::Ringing, "we are the callee: RINGING is ours to send"),
    ignore(Ringing, E::PeerAccept, "we are the callee: ACCEPT is ours to send"),
    ignore(Ringing, E::PeerReject, "we are the callee: REJECT is ours to send"),
    ignore(Ringing, E::Busy, "we are the callee: BUSY is ours to send"),
    row(Ringing, E::Close, Always, To(Closing), &[Announce, Send(Say::Closed), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::Cancelled))]),
    ignore(Ringing, E::Closed, "we sent no CLOSE"),
    ignore(Ringing, E::Ack, "we sent nothing that is acknowledged by ACK"),
    ignore(Ringing, E::Media, "no media before the answer"),
    row(Ringing, E::Foreign, Always, Stay, &[CountForeign]),
    ignore(Ringing, E::Retransmit, NOT_ARMED),
    ignore(Ringing, E::RetransmitExhausted, NOT_ARMED),
    row(Ringing, E::NoAnswer, Always, To(Idle), &[Announce, Tell(Tell::Ended(EndReason::NoAnswer))]),
    ignore(Ringing, E::Linger, NOT_ARMED),
    ignore(Ringing, E::PeerSilence, NOT_ARMED),
    ignore(Ringing, E::StartAgain, NOT_ARMED),
    ignore(Ringing, E::LeftoverMedia, NO_LEFTOVER),
    row(Ringing, E::Verify, ManualAnswer, Stay, &[Announce]),
    row(Ringing, E::Verify, AutoAnswer, To(InCall), &[Announce, SendReliably(Say::Accept), StartMedia, Arm(Timer::PeerSilence), Tell(Tell::Connected)]),

    // ---- InCall: connected -----------------------------------------------------------
    row(InCall, E::Dial, Always, Stay, &[Tell(Tell::Refused(Refusal::AlreadyInCall))]),
    row(InCall, E::Accept, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(InCall, E::Reject, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(InCall, E::Hangup, Always, To(Closing), &[StopMedia, RememberEnded, SendReliably(Say::Close), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::Hangup))]),
    ignore(InCall, E::Resolved, LATE_ANSWER),
    ignore(InCall, E::Unknown, LATE_ANSWER),
    ignore(InCall, E::LookupFailed, LATE_ANSWER),
    row(InCall, E::Start, Always, Stay, &[ReplyBusy]),
    row(InCall, E::StartRepeat, Always, Stay, &[Send(Say::Accept)]),
    ignore(InCall, E::StartCrossing, "a crossing START needs a call being dialled"),
    ignore(InCall, E::Ringing, "a late duplicate: the call is answered"),
    row(InCall, E::PeerAccept, Always, Stay, &[Send(Say::Ack)]),
    ignore(InCall, E::PeerReject, "a late REJECT cannot undo an answered call"),
    ignore(InCall, E::Busy, "a late BUSY cannot undo an answered call"),
    row(InCall, E::Close, Always, To(Closing), &[StopMedia, Send(Say::Closed), Arm(Timer::Linger), Tell(Tell::Ended(EndReason::RemoteHangup))]),
    ignore(InCall, E::Closed, "we sent no CLOSE"),
    row(InCall, E::Ack, Always, Stay, &[StopRetransmitting]),
    row(InCall, E::Media, Always, Stay, &[StopRetransmitting, Arm(Timer::PeerSilence)]),
    row(InCall, E::Foreign, Always, Stay, &[CountForeign]),
    row(InCall, E::Retransmit, Always, Stay, &[Resend]),
    row(InCall, E::RetransmitExhausted, Always, Stay, &[StopRetransmitting]),
    ignore(InCall, E::NoAnswer, NOT_ARMED),
    ignore(InCall, E::Linger, NOT_ARMED),
    row(InCall, E::PeerSilence, Always, To(Idle), &[StopMedia, RememberEnded, Send(Say::Close), Tell(Tell::Ended(EndReason::PeerLost))]),
    ignore(InCall, E::StartAgain, NOT_ARMED),
    ignore(InCall, E::LeftoverMedia, NO_LEFTOVER),
    ignore(InCall, E::Verify, NOT_ARMED),

    // ---- Closing: the call has ended; acknowledgements and late duplicates ----------
    row(Closing, E::Dial, ToOther, To(Dialing), &[BeginOutgoing, Lookup, Arm(Timer::NoAnswer), Tell(Tell::Calling)]),
    row(Closing, E::Dial, ToSelf, Stay, &[Tell(Tell::Refused(Refusal::CallingSelf))]),
    row(Closing, E::Accept, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Closing, E::Reject, Always, Stay, &[Tell(Tell::Refused(Refusal::NoIncomingCall))]),
    row(Closing, E::Hangup, Always, Stay, &[Tell(Tell::Refused(Refusal::NoCall))]),
    ignore(Closing, E::Resolved, NOT_DIALLING),
    ignore(Closing, E::Unknown, NOT_DIALLING),
    ignore(Closing, E::LookupFailed, NOT_DIALLING),
    row(Closing, E::Start, Welcome, To(Ringing), &[BeginIncoming, Send(Say::Ringing), Arm(Timer::NoAnswer), LookupCaller, Arm(Timer::Verify)]),
    row(Closing, E::Start, PlaintextRefused, Stay, &[ReplyReject, Tell(Tell::EndedRequest(EndReason::Insecure))]),
    row(Closing, E::Start, KeyChanged, Stay, &[ReplyReject, Tell(Tell::EndedRequest(EndReason::KeyChanged))]),
    row(Closing, E::StartRepeat, Always, Stay, &[Resend]),
    ignore(Closing, E::StartCrossing, "a crossing START needs a call being dialled"),
    ignore(Closing, E::Ringing, "the call is over"),
    row(Closing, E::PeerAccept, Always, Stay, &[Resend]),
    ignore(Closing, E::PeerReject, "the call is over"),
    ignore(Closing, E::Busy, "the call is over"),
    row(Closing, E::Close, Always, Stay, &[Send(Say::Closed)]),
    row(Closing, E::Closed, Always, To(Idle), &[]),
    row(Closing, E::Ack, Always, To(Idle), &[]),
    ignore(Closing, E::Media, "the call is over: late media is dropped"),
    row(Closing, E::Foreign, Always, Stay, &[CountForeign]),
    row(Closing, E::Retransmit, Always, Stay, &[Resend]),
    row(Closing, E::RetransmitExhausted, Always, To(Idle), &[]),
    ignore(Closing, E::NoAnswer, NOT_ARMED),
    row(Closing, E::Linger, Always, To(Idle), &[]),
    ignore(Closing, E::PeerSilence, NOT_ARMED),
    ignore(Closing, E::StartAgain, NOT_ARMED),
    ignore(Closing, E::LeftoverMedia, NO_LEFTOVER),
    ignore(Closing, E::Verify, NOT_ARMED),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn entries(state: State, event: EventKind) -> Vec<&'static Entry> {
        TABLE
            .iter()
            .filter(|e| e.state == state && e.event == event)
            .collect()
    }

    /// Every (state, event) pair is decided: one entry with no guard, or one entry for
    /// each guard of a single family — never a gap, never two entries for one case.
    #[test]
    fn table_is_complete_and_unambiguous() {
        let mut problems = Vec::new();
        for state in State::ALL {
            for event in EventKind::ALL {
                let found = entries(state, event);
                let Some(first) = found.first() else {
                    problems.push(std::format!("{state:?} × {}: no entry", event.name()));
                    continue;
                };
                let family = first.guard.family();
                let mut guards: Vec<Guard> = found.iter().map(|e| e.guard).collect();
                guards.sort_by_key(|g| family.iter().position(|f| f == g));
                if guards != family {
                    problems.push(std::format!(
                        "{state:?} × {}: guards {guards:?} do not cover {family:?} exactly once",
                        event.name()
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "incomplete table:\n{}",
            problems.join("\n")
        );
    }

    /// A row never arms a timer its next state may not hold.
    #[test]
    fn rows_arm_only_timers_of_their_next_state() {
        for e in TABLE {
            if let Outcome::Row { next, steps } = e.outcome {
                let to = match next {
                    Next::Stay => e.state,
                    Next::To(s) => s,
                };
                for step in steps {
                    let armed = match step {
                        Step::Arm(t) => Some(*t),
                        Step::SendReliably(_) | Step::Resend => Some(Timer::Retransmit),
                        _ => None,
                    };
                    if let Some(t) = armed {
                        assert!(
                            to.timers().contains(&t),
                            "{:?} × {}: arms {t:?} but {to:?} holds only {:?}",
                            e.state,
                            e.event.name(),
                            to.timers()
                        );
                    }
                }
            }
        }
    }
}
