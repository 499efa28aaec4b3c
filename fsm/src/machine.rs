//! The machine that applies [`TABLE`] to a phone's events.

use core::net::SocketAddr;

use crate::conference::ConfId;
use crate::table::{Entry, EventKind, Guard, Next, Outcome, Say, State, Step, TABLE, Tell};
use crate::types::{
    Action, Binding, CallIds, Event, Instant, Note, Security, Sender, Timer, Verification,
    verify_key,
};
use crate::vocab::{CallId, Codec, Dialect, Message, Name, Preference, PublicKey, VERSION};

/// Most names [`Config::answer_from`] holds.
pub const MAX_ANSWER_FROM: usize = 16;

/// Most actions one transition can produce (the longest row, plus the timer
/// cancellations of a state change, fits with room to spare).
pub const MAX_ACTIONS: usize = 16;

/// The actions of one transition, in order.
pub type Actions = heapless::Vec<Action, MAX_ACTIONS>;

/// Timing and identity of a phone. Durations are in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// This phone's user name (sent in START; calling it is refused).
    pub name: Name,
    /// How long a caller waits for an answer (the original's 7 s).
    pub answer_timeout: u64,
    /// How much longer than `answer_timeout` a callee rings before giving up by itself,
    /// in case the caller's CLOSE is lost.
    pub ring_grace: u64,
    /// First retransmission delay; it doubles on each attempt...
    pub retransmit_initial: u64,
    /// ...up to this cap.
    pub retransmit_cap: u64,
    /// Retransmissions of one message before giving up.
    pub retransmit_attempts: u8,
    /// How long `Closing` waits for acknowledgements and late duplicates.
    pub linger: u64,
    /// Peer silence (no media) that ends a call as peer-lost.
    pub peer_silence: u64,
    /// How long a caller waits before saying START a second (and last) time to a callee
    /// of the original project: it never says RINGING and takes each START as a new
    /// call, so the retransmissions of a Parlo START would ring it again and again.
    pub original_start_pause: u64,
    /// How long the original peer of an ended call is remembered after its last audio.
    /// The original often misses our CLOSE and streams on: while its audio comes, it is
    /// answered with CLOSE (see `ended_close_interval`). 10 s: longer than any pause in a
    /// stream that runs, short enough that a later user of the address is not pestered.
    pub ended_peer_memory: u64,
    /// The least time between two CLOSEs answering the audio of an ended original peer.
    pub ended_close_interval: u64,
    /// How long an incoming call waits for the directory to confirm the caller's name
    /// before it is announced unverified.
    pub verify_wait: u64,
    /// Whether the phone answers an incoming call by itself once it is announced (an
    /// intercom) — only a caller verified by its key ([`Verification::Key`]), and only
    /// one on [`Config::answer_from`] when that list is not empty; every other call
    /// rings for the user to answer. With [`Security::Off`], which verifies nobody by
    /// key, any caller (on the list), as the original project's phones did.
    pub auto_answer: bool,
    /// Which callers an intercom answers by itself, by name (each must be key-verified
    /// too). Empty: every key-verified caller.
    pub answer_from: heapless::Vec<Name, MAX_ANSWER_FROM>,
    /// Which calls may go without encryption (`--security`; default
    /// [`Security::Required`]).
    pub security: Security,
    /// Whether calls with phones of the original project, which have no encryption, are
    /// made and taken (in plaintext, and told so). Default: yes.
    pub original_phones: bool,
    /// The codecs this phone accepts, most preferred first: offered in START (as a set),
    /// and chosen from by preference when answering one.
    pub codecs: Preference,
    /// The conference the calls of this machine are legs of, if any: every Parlo START
    /// it sends carries it (`conf=`). Default: none (ordinary calls). A START to an
    /// original phone never carries it.
    pub conference: Option<ConfId>,
}

impl Config {
    /// Whether this phone, as an intercom, answers a call from `peer`, verified as
    /// `verification`, by itself (see [`Config::auto_answer`]): the same rule for a call
    /// and for an invitation into a conference.
    pub fn answers_by_itself(&self, peer: &Name, verification: Verification) -> bool {
        self.auto_answer
            && (verification == Verification::Key || self.security == Security::Off)
            && (self.answer_from.is_empty() || self.answer_from.contains(peer))
    }

    /// The defaults for a phone named `name`.
    pub fn new(name: Name) -> Config {
        Config {
            name,
            answer_timeout: 7_000,
            ring_grace: 2_000,
            retransmit_initial: 500,
            retransmit_cap: 2_000,
            retransmit_attempts: 5,
            linger: 3_000,
            peer_silence: 5_000,
            original_start_pause: 4_000,
            ended_peer_memory: 10_000,
            ended_close_interval: 1_000,
            verify_wait: 1_000,
            auto_answer: false,
            answer_from: heapless::Vec::new(),
            security: Security::default(),
            original_phones: true,
            codecs: Preference::default(),
            conference: None,
        }
    }
}

/// The call in progress (absent exactly when the machine is `Idle`).
#[derive(Debug, Clone)]
struct Call {
    /// The call id; `None` for a call from a peer speaking the original protocol.
    id: Option<CallId>,
    /// The other side's name.
    peer: Name,
    /// The other side's address, once known.
    addr: Option<SocketAddr>,
    /// The protocol the other side speaks.
    dialect: Dialect,
    /// Whether `dialect` is settled. Always, except for a call placed to a phone whose
    /// dialect the directory did not say, until the callee's first answer.
    dialect_fixed: bool,
    /// The codec of the call: chosen by the callee (L16 until the caller hears which).
    codec: Codec,
    /// Whether this phone placed the call.
    outgoing: bool,
    /// Whether the user was told of the incoming call (always, for an outgoing one).
    announced: bool,
    /// The message being retransmitted until acknowledged.
    awaiting: Option<Say>,
    /// Retransmissions of `awaiting` so far.
    resends: u8,
    /// The peer's static key: `Some` for an encrypted call (everything is sealed for it,
    /// and only what comes out of a session with it belongs to the call), `None` for a
    /// plaintext one.
    key: Option<PublicKey>,
    /// For an incoming call: this phone's pin for the name the START claims.
    pinned: Option<PublicKey>,
    /// How the peer is verified, once known (an incoming call: at its announcement).
    verification: Option<Verification>,
    /// Whether the call's key is to be pinned (first contact).
    pin: NewKey,
}

/// Whether a call's key is new to this phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewKey {
    /// No: pinned already, or no key.
    No,
    /// Yes: the next note about the peer says `new`, and [`Step::Pin`] pins it.
    ToPin,
    /// It was new, and is pinned now.
    Pinned,
}

impl Call {
    /// Settles the dialect. A call in the original dialect has no call id: the peer
    /// knows none, and messages that carry one are not from it.
    fn fix_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
        self.dialect_fixed = true;
        if dialect == Dialect::Original {
            self.id = None;
        }
    }

    /// Whether something from `sender` can be the peer's: out of a session with the
    /// call's key in an encrypted call, in the clear in a plaintext one.
    fn fits(&self, sender: Sender) -> bool {
        Sender::of(self.key) == sender
    }

    /// The verification the user is told once it is known: a caller's is settled at its
    /// announcement; a callee is `key` when the call is encrypted (with the pinned key,
    /// or the directory's on first contact), else `plaintext`.
    fn verified(&self) -> Verification {
        self.verification.unwrap_or(match self.key {
            Some(_) => Verification::Key,
            None => Verification::Plaintext,
        })
    }
}

/// The original peer of a call that ended while media flowed, remembered after the call
/// because it may have missed our CLOSE.
#[derive(Debug, Clone, Copy)]
struct EndedPeer {
    /// Its address.
    addr: SocketAddr,
    /// When audio last came from it (at first: when the call ended).
    heard: Instant,
    /// When CLOSE last went to it.
    closed: Instant,
}

/// Counters the machine keeps for the phone's `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages and media ignored because they belonged to another call or address.
    pub foreign: u64,
    /// Signalling messages resent.
    pub retransmissions: u64,
}

/// A phone's call state machine.
///
/// Contract: the shell turns everything that happens into an [`Event`] and calls
/// [`Machine::handle`] with the current time; it asks [`Machine::poll_timeout`] when to
/// call [`Machine::handle_timeout`] next. Each call returns the [`Actions`] to execute, in
/// order. Time is in milliseconds from any origin; a time earlier than one seen before is
/// treated as that earlier-seen time.
///
/// Before the table is consulted, an event is classified against the current call: a
/// peer message belongs to the call when it comes from the peer's address, carries the
/// call's id (no id in a call in the original dialect, which has none; see the crate
/// docs on dialects) and comes the call's way: out of a secure session with the call's
/// key in an encrypted call, in the clear in a plaintext one ([`Sender`]). One that does
/// not belong is [`EventKind::Foreign`]: a CLOSE forged in the clear from the peer's
/// address, with the right id, cannot end an encrypted call. Media belongs by the same
/// address and sender rules. A START is a repeat of the current call's (same name,
/// address, id and sender), a crossing call (glare) when it comes from the address the
/// directory gave for the phone being dialled and with the key it is being dialled
/// with (or both in the clear), or else a new call request.
///
/// # Verification
/// An incoming call is announced ([`Note::Incoming`]) with how its caller is verified.
/// A plaintext call is [`Verification::Plaintext`], with the old address check (`address`:
/// does the directory give the name the IP address the call came from). An encrypted
/// call from key `k`, whose START's name this phone has pinned to `p` (`None` or `k`:
/// another pin refuses the call as `key-changed`), is:
///
/// | the directory's answer                | `p == Some(k)` | `p == None`        |
/// | ------------------------------------- | -------------- | ------------------ |
/// | resolved, binds `k`                    | `key`          | `key`, new: pinned |
/// | resolved, binds another key            | `no`           | `no`               |
/// | resolved, binds none (unbound)         | `key`          | `unbound`          |
/// | unknown (the name is not registered)   | `key`          | `no`               |
/// | lookup failed, no answer in time, or the call announced before the answer | `key` | `unknown` |
///
/// A callee is `key` when the call is encrypted (`new`, and pinned, when the key came
/// from the directory without a pin), `plaintext` otherwise; it is told when the call
/// connects ([`Note::Connected`]).
#[derive(Debug)]
pub struct Machine<R> {
    config: Config,
    ids: R,
    state: State,
    call: Option<Call>,
    /// The original peer of the last call, while it may still be streaming at us.
    ended: Option<EndedPeer>,
    timers: [Option<Instant>; Timer::ALL.len()],
    now: Instant,
    counters: Counters,
    /// The index in [`TABLE`] of the entry the last event or timer applied.
    last_entry: Option<usize>,
}

impl<R: CallIds> Machine<R> {
    /// An idle phone.
    pub fn new(config: Config, ids: R, now: Instant) -> Machine<R> {
        Machine {
            config,
            ids,
            state: State::Idle,
            call: None,
            ended: None,
            timers: [None; Timer::ALL.len()],
            now,
            counters: Counters::default(),
            last_entry: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The other side of the current call.
    pub fn peer(&self) -> Option<&Name> {
        self.call.as_ref().map(|c| &c.peer)
    }

    /// The other side's address, once known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.call.as_ref().and_then(|c| c.addr)
    }

    /// The current call's id (`None` without a call, or with an original-protocol peer).
    pub fn call_id(&self) -> Option<CallId> {
        self.call.as_ref().and_then(|c| c.id)
    }

    /// The current call's peer key: `Some` while the call is encrypted (everything sent
    /// in it is sealed for this key), `None` without a call or in a plaintext one.
    pub fn peer_key(&self) -> Option<PublicKey> {
        self.call.as_ref().and_then(|c| c.key)
    }

    /// How the current call's peer is verified, once known: an incoming call's from its
    /// announcement, an outgoing call's from the directory's answer.
    pub fn verification(&self) -> Option<Verification> {
        self.call.as_ref().and_then(|c| c.verification)
    }

    /// The protocol the current peer speaks.
    pub fn dialect(&self) -> Option<Dialect> {
        self.call.as_ref().map(|c| c.dialect)
    }

    /// The media format to expect from `from` at `now`: the current call's dialect from
    /// its peer, the original's from the original peer of an ended call that may still
    /// be streaming (see [`Config::ended_peer_memory`]), else none known. The shell's
    /// media demultiplexer needs it: raw PCM looks like nothing in particular.
    pub fn media_dialect(&self, now: Instant, from: SocketAddr) -> Option<Dialect> {
        match &self.call {
            Some(c) if c.addr == Some(from) => Some(c.dialect),
            Some(_) => None,
            None => self
                .ended_peer(now.max(self.now), from)
                .map(|_| Dialect::Original),
        }
    }

    /// The remembered ended peer, if `from` is it and it has not been silent too long.
    fn ended_peer(&self, now: Instant, from: SocketAddr) -> Option<&EndedPeer> {
        self.ended
            .as_ref()
            .filter(|e| e.addr == from && now < e.heard.after(self.config.ended_peer_memory))
    }

    /// The codec of the current call (the callee's choice; on the caller's side, L16
    /// until the ACCEPT says otherwise).
    pub fn codec(&self) -> Option<Codec> {
        self.call.as_ref().map(|c| c.codec)
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The index in [`TABLE`] of the entry (row or ignore) that the last call of
    /// [`Machine::handle`] or [`Machine::handle_timeout`] applied; `None` when it applied
    /// none (no timer was due). Lets tests tell which rows their scenarios reach.
    pub fn last_entry(&self) -> Option<usize> {
        self.last_entry
    }

    /// The deadline of `timer`, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers[timer as usize]
    }

    /// The earliest timer deadline: when [`Machine::handle_timeout`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Feeds one event.
    #[must_use]
    pub fn handle(&mut self, now: Instant, event: &Event) -> Actions {
        self.advance(now);
        let kind = self.classify(event);
        self.apply(kind, Some(event))
    }

    /// Fires the earliest timer that is due at `now`, if any. Call it until
    /// [`Machine::poll_timeout`] is later than `now`.
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        self.advance(now);
        self.last_entry = None;
        let due = Timer::ALL
            .iter()
            .copied()
            .filter(|&t| self.timers[t as usize].is_some_and(|at| at <= self.now))
            .min_by_key(|&t| self.timers[t as usize]);
        let Some(timer) = due else {
            return Actions::new();
        };
        self.timers[timer as usize] = None;
        let mut kind = EventKind::of_timer(timer);
        if timer == Timer::Retransmit
            && self
                .call
                .as_ref()
                .is_some_and(|c| c.resends >= self.config.retransmit_attempts)
        {
            kind = EventKind::RetransmitExhausted;
        }
        self.apply(kind, None)
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn classify(&self, event: &Event) -> EventKind {
        let call = self.call.as_ref();
        match event {
            Event::Dial(_) => EventKind::Dial,
            Event::Accept => EventKind::Accept,
            Event::Reject => EventKind::Reject,
            Event::Hangup => EventKind::Hangup,
            Event::Resolved { name, .. }
            | Event::Unknown { name }
            | Event::LookupFailed { name } => {
                // Wanted: the callee's address while dialling, the caller's name while
                // an incoming call waits for its verification.
                let wanted = call.is_some_and(|c| {
                    &c.peer == name
                        && match self.state {
                            State::Dialing => c.addr.is_none(),
                            State::Ringing => !c.announced,
                            _ => false,
                        }
                });
                match event {
                    _ if matches!(self.state, State::Dialing | State::Ringing) && !wanted => {
                        EventKind::Foreign
                    }
                    Event::Resolved { .. } => EventKind::Resolved,
                    Event::Unknown { .. } => EventKind::Unknown,
                    _ => EventKind::LookupFailed,
                }
            }
            Event::Media { from, sender } => match call {
                Some(c) if c.addr != Some(*from) || !c.fits(*sender) => EventKind::Foreign,
                Some(_) => EventKind::Media,
                // The ended peer is an original phone: its audio comes in the clear.
                None if *sender == Sender::Plain && self.ended_peer(self.now, *from).is_some() => {
                    EventKind::LeftoverMedia
                }
                None => EventKind::Media,
            },
            Event::Peer {
                from,
                message,
                sender,
                ..
            } => {
                let Some(c) = call else {
                    return peer_kind(message);
                };
                if let Message::Start { caller, call, .. } = message {
                    if !c.outgoing
                        && c.addr == Some(*from)
                        && c.id == *call
                        && &c.peer == caller
                        && c.fits(*sender)
                    {
                        EventKind::StartRepeat
                    } else if self.state == State::Dialing
                        && &c.peer == caller
                        && c.addr == Some(*from)
                        && c.fits(*sender)
                    {
                        // Only from the directory's address for the callee, and with the
                        // key it is dialled with: before the lookup has answered, anyone
                        // could claim the callee's name.
                        EventKind::StartCrossing
                    } else {
                        EventKind::Start
                    }
                } else if self.belongs(c, *from, *sender, message) {
                    peer_kind(message)
                } else {
                    EventKind::Foreign
                }
            }
        }
    }

    /// Whether a message other than START belongs to the call `c`: it comes from the
    /// peer's address, the call's way (sealed for the call's key, or in the clear in a
    /// plaintext call), and carries the call's id, or none in a call in the original
    /// dialect. The dialect is fixed when the call is set up; the one exception is a
    /// plaintext call whose callee's dialect the directory did not say, where the
    /// callee's first answer (ACCEPT or REJECT, bare or not) fixes it. (An encrypted call
    /// is Parlo's from the start: an original phone has no key.)
    fn belongs(&self, c: &Call, from: SocketAddr, sender: Sender, message: &Message) -> bool {
        if c.addr != Some(from) || !c.fits(sender) {
            return false;
        }
        match message.call_id() {
            Some(id) => c.dialect == Dialect::Parlo && c.id == Some(id),
            None if c.dialect_fixed => c.dialect == Dialect::Original,
            None => {
                self.state == State::Dialing
                    && c.key.is_none()
                    && matches!(message, Message::Accept { .. } | Message::Reject { .. })
            }
        }
    }

    /// Which of `welcome`, `plaintext refused` and `key changed` a START is (see the
    /// table's module docs).
    fn start_verdict(&self, event: Option<&Event>) -> Guard {
        let Some(Event::Peer {
            message: Message::Start { call, .. },
            sender,
            pinned,
            ..
        }) = event
        else {
            return Guard::Welcome;
        };
        match sender {
            // Under `Off` the shell drops encrypted STARTs; one that comes anyway is
            // taken as it is.
            Sender::Key(_) if self.config.security == Security::Off => Guard::Welcome,
            Sender::Key(k) if pinned.is_some_and(|p| p != *k) => Guard::KeyChanged,
            Sender::Key(_) => Guard::Welcome,
            Sender::Plain => {
                let refused = match call {
                    Some(_) => self.config.security == Security::Required,
                    None => !self.config.original_phones,
                };
                if refused {
                    Guard::PlaintextRefused
                } else {
                    Guard::Welcome
                }
            }
        }
    }

    /// Which of `callee original`, `callee parlo or unknown`, `key changed` and
    /// `plaintext refused` the directory's answer about a callee is (see the table's
    /// module docs).
    fn dial_verdict(&self, event: Option<&Event>) -> Guard {
        let Some(Event::Resolved {
            dialect,
            key,
            pinned,
            ..
        }) = event
        else {
            return Guard::ParloCallee;
        };
        let original = *dialect == Some(Dialect::Original);
        let security = self.config.security;
        // Under `Off` keys are not looked at; an original phone has none.
        let plaintext_refused = if original {
            !self.config.original_phones
        } else {
            security == Security::Required && pinned.or(*key).is_none()
        };
        if original && self.config.conference.is_some() {
            Guard::OriginalInConference
        } else if security != Security::Off && matches!((pinned, key), (Some(p), Some(k)) if p != k)
        {
            Guard::CalleeKeyChanged
        } else if plaintext_refused {
            Guard::CalleeRefused
        } else if original {
            Guard::OriginalCallee
        } else {
            Guard::ParloCallee
        }
    }

    /// How the caller of the incoming call `c` is verified when announced after `event`
    /// (see [`Machine`]): the verification, whether its key is new (to be pinned), and,
    /// for a plaintext call, whether the directory gives the address it came from.
    fn verify(c: &Call, event: Option<&Event>) -> (Verification, bool, Option<bool>) {
        let Some(k) = c.key else {
            let address = match (event, c.addr) {
                (Some(Event::Resolved { addr, .. }), Some(from)) => {
                    Some(addr.ip().to_canonical() == from.ip().to_canonical())
                }
                (Some(Event::Unknown { .. }), _) => Some(false),
                _ => None,
            };
            return (Verification::Plaintext, false, address);
        };
        let binding = match event {
            Some(Event::Resolved { key: Some(d), .. }) => Binding::Key(*d),
            Some(Event::Resolved { key: None, .. }) => Binding::NoKey,
            Some(Event::Unknown { .. }) => Binding::NotRegistered,
            _ => Binding::NoAnswer,
        };
        let (verification, new) = verify_key(k, c.pinned, binding);
        (verification, new, None)
    }

    /// Whether this phone answers the incoming call `c` by itself (an intercom): only a
    /// key-verified caller, and one on the list when there is a list. A phone with
    /// security off verifies no one by key: it answers as the original did, anyone (on
    /// the list).
    fn answers_itself(&self, c: &Call, event: Option<&Event>) -> bool {
        let verification = c.verification.unwrap_or_else(|| Self::verify(c, event).0);
        self.config.answers_by_itself(&c.peer, verification)
    }

    fn guard_holds(&self, guard: Guard, event: Option<&Event>) -> bool {
        let call = self.call.as_ref();
        match guard {
            Guard::Always => true,
            Guard::ToSelf | Guard::ToOther => {
                let to_self = matches!(event, Some(Event::Dial(n)) if *n == self.config.name);
                to_self == (guard == Guard::ToSelf)
            }
            Guard::PeerKnown => call.is_some_and(|c| c.addr.is_some()),
            Guard::PeerUnknown => call.is_none_or(|c| c.addr.is_none()),
            Guard::TheyWin | Guard::WeWin => {
                let they_win = match (event, call) {
                    (
                        Some(Event::Peer {
                            message:
                                Message::Start {
                                    caller,
                                    call: theirs,
                                    ..
                                },
                            ..
                        }),
                        Some(ours),
                    ) => match (theirs, ours.id) {
                        (None, _) => true,
                        // Our START went bare (the directory says they are original): to
                        // them it is the call that cannot yield, so it wins on both sides.
                        (Some(_), None) => false,
                        (Some(t), Some(o)) if *t != o => *t < o,
                        _ => caller.as_str() < self.config.name.as_str(),
                    },
                    _ => false,
                };
                they_win == (guard == Guard::TheyWin)
            }
            Guard::OriginalCallee
            | Guard::ParloCallee
            | Guard::CalleeKeyChanged
            | Guard::CalleeRefused
            | Guard::OriginalInConference => self.dial_verdict(event) == guard,
            Guard::Welcome | Guard::PlaintextRefused | Guard::KeyChanged => {
                self.start_verdict(event) == guard
            }
            Guard::CloseDue | Guard::CloseRecent => {
                let due = self
                    .ended
                    .is_some_and(|e| self.now >= e.closed.after(self.config.ended_close_interval));
                due == (guard == Guard::CloseDue)
            }
            Guard::AutoAnswer | Guard::ManualAnswer => {
                let auto = call.is_some_and(|c| self.answers_itself(c, event));
                auto == (guard == Guard::AutoAnswer)
            }
            Guard::Awaiting => call.is_some_and(|c| c.awaiting.is_some()),
            Guard::NotAwaiting => call.is_none_or(|c| c.awaiting.is_none()),
        }
    }

    /// The one place transitions happen: finds the entry, logs `from -(event)-> to`,
    /// runs its steps.
    fn apply(&mut self, kind: EventKind, event: Option<&Event>) -> Actions {
        let mut out = Actions::new();
        let from = self.state;
        let entry = TABLE
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == from && e.event == kind)
            .find(|(_, e)| self.guard_holds(e.guard, event));
        self.last_entry = entry.map(|(i, _)| i);
        let Some((_, &Entry { outcome, .. })) = entry else {
            log::error!("{from:?}: no table entry for {}; ignored", kind.name());
            return out;
        };
        let (next, steps) = match outcome {
            Outcome::Ignore(why) => {
                log::debug!("{from:?} -({})-> ignored: {why}", kind.name());
                return out;
            }
            Outcome::Row { next, steps } => (next, steps),
        };
        let to = match next {
            Next::Stay => from,
            Next::To(to) => to,
        };
        log::debug!("{from:?} -({})-> {to:?}", kind.name());
        if to != from {
            for timer in Timer::ALL {
                self.cancel(timer, &mut out);
            }
        }
        for &step in steps {
            self.run(step, event, &mut out);
        }
        self.state = to;
        if to == State::Idle {
            self.call = None;
        }
        out
    }

    fn run(&mut self, step: Step, event: Option<&Event>, out: &mut Actions) {
        match step {
            Step::BeginOutgoing => {
                if let Some(Event::Dial(name)) = event {
                    self.ended = None;
                    let id = self.ids.next_call_id();
                    self.call = Some(Call {
                        id: Some(id),
                        peer: name.clone(),
                        addr: None,
                        dialect: Dialect::Parlo,
                        dialect_fixed: false,
                        codec: Codec::L16,
                        outgoing: true,
                        announced: true,
                        awaiting: None,
                        resends: 0,
                        key: None,
                        pinned: None,
                        verification: None,
                        pin: NewKey::No,
                    });
                }
            }
            Step::BeginIncoming => {
                if let Some(Event::Peer {
                    from,
                    message:
                        Message::Start {
                            caller,
                            call,
                            codecs,
                            ..
                        },
                    sender,
                    pinned,
                }) = event
                {
                    self.ended = None;
                    // A crossing call replaces the one being dialled, with the same peer
                    // and key: what is known of the key carries over.
                    let (verification, pin) = match &self.call {
                        Some(c) if self.state == State::Dialing => (c.verification, c.pin),
                        _ => (None, NewKey::No),
                    };
                    // An original caller (no call id) sends raw PCM, i.e. L16.
                    let (dialect, codec) = match call {
                        Some(_) => (Dialect::Parlo, self.config.codecs.choose(*codecs)),
                        None => (Dialect::Original, Codec::L16),
                    };
                    self.call = Some(Call {
                        id: *call,
                        peer: caller.clone(),
                        addr: Some(*from),
                        dialect,
                        dialect_fixed: true,
                        codec,
                        outgoing: false,
                        announced: false,
                        awaiting: None,
                        resends: 0,
                        key: sender.key(),
                        pinned: *pinned,
                        verification,
                        pin,
                    });
                }
            }
            Step::Lookup => {
                if let Some(c) = &self.call {
                    push(out, Action::Lookup(c.peer.clone()));
                }
            }
            Step::LookupCaller => {
                if let Some(Call {
                    peer,
                    addr: Some(from),
                    ..
                }) = &self.call
                {
                    let (name, from) = (peer.clone(), *from);
                    push(out, Action::LookupCaller { name, from });
                }
            }
            Step::Announce => self.announce(event, out),
            Step::LearnAddress => {
                if let (Some(c), Some(Event::Resolved { addr, .. })) = (&mut self.call, event) {
                    c.addr = Some(*addr);
                }
            }
            Step::LearnDialect => match (&mut self.call, event) {
                (
                    Some(c),
                    Some(Event::Resolved {
                        dialect: Some(d), ..
                    }),
                ) => c.fix_dialect(*d),
                (Some(c), Some(Event::Peer { message, .. })) if !c.dialect_fixed => {
                    c.fix_dialect(message.dialect());
                }
                _ => {}
            },
            Step::LearnKey => {
                if let (
                    Some(c),
                    Some(Event::Resolved {
                        key,
                        pinned,
                        dialect,
                        ..
                    }),
                ) = (&mut self.call, event)
                {
                    // An original phone has no key; under `Off` keys are not looked at.
                    let original = *dialect == Some(Dialect::Original);
                    let key = match self.config.security {
                        _ if original => None,
                        Security::Off => None,
                        Security::Required | Security::Preferred => pinned.or(*key),
                    };
                    c.key = key;
                    c.verification = Some(match key {
                        Some(_) => Verification::Key,
                        None => Verification::Plaintext,
                    });
                    if key.is_some() {
                        c.fix_dialect(Dialect::Parlo);
                        if pinned.is_none() {
                            c.pin = NewKey::ToPin;
                        }
                    }
                }
            }
            Step::Pin => {
                if let Some(c) = &mut self.call {
                    if let (NewKey::ToPin, Some(key)) = (c.pin, c.key) {
                        c.pin = NewKey::Pinned;
                        let name = c.peer.clone();
                        push(out, Action::Pin { name, key });
                    }
                }
            }
            Step::LearnCodec => {
                if let (Some(c), Some(Event::Peer { message, .. })) = (&mut self.call, event) {
                    // The callee decides: its choice stands even if we did not offer it
                    // (both ends decode every codec; a call is not dropped over this).
                    c.codec = match message {
                        Message::Accept {
                            call: Some(_),
                            codec: Some(codec),
                        } => *codec,
                        _ => Codec::L16,
                    };
                }
            }
            Step::Send(say) => self.send(say, out),
            Step::SendReliably(say) => {
                self.send(say, out);
                if let Some(c) = &mut self.call {
                    c.awaiting = Some(say);
                    c.resends = 0;
                }
                let at = self.now.after(self.config.retransmit_initial);
                self.arm(Timer::Retransmit, at, out);
            }
            Step::Resend => {
                let Some(say) = self.call.as_ref().and_then(|c| c.awaiting) else {
                    return;
                };
                self.send(say, out);
                self.counters.retransmissions += 1;
                let mut resends = 0;
                if let Some(c) = &mut self.call {
                    c.resends = c.resends.saturating_add(1);
                    resends = c.resends;
                }
                let delay = self
                    .config
                    .retransmit_initial
                    .saturating_mul(1u64 << resends.min(32))
                    .min(self.config.retransmit_cap);
                self.arm(Timer::Retransmit, self.now.after(delay), out);
            }
            Step::StopRetransmitting => {
                if let Some(c) = &mut self.call {
                    c.awaiting = None;
                }
                self.cancel(Timer::Retransmit, out);
            }
            Step::ReplyBusy | Step::ReplyReject => {
                if let Some(Event::Peer {
                    from,
                    message,
                    sender,
                    ..
                }) = event
                {
                    // The original protocol has no BUSY; its callers understand REJECT.
                    let message = match message.call_id() {
                        Some(call) if step == Step::ReplyBusy => Message::Busy { call: Some(call) },
                        call => Message::Reject { call },
                    };
                    let key = sender.key();
                    push(
                        out,
                        Action::Send {
                            to: *from,
                            message,
                            key,
                        },
                    );
                }
            }
            Step::Disarm(timer) => self.cancel(timer, out),
            Step::Arm(timer) => {
                let ms = match timer {
                    Timer::Retransmit => self.config.retransmit_initial,
                    Timer::NoAnswer => {
                        let callee = self.call.as_ref().is_some_and(|c| !c.outgoing);
                        self.config.answer_timeout + if callee { self.config.ring_grace } else { 0 }
                    }
                    Timer::Linger => self.config.linger,
                    Timer::PeerSilence => self.config.peer_silence,
                    Timer::StartAgain => self.config.original_start_pause,
                    Timer::Verify => self.config.verify_wait,
                };
                self.arm(timer, self.now.after(ms), out);
            }
            Step::StartMedia => {
                if let Some(Call {
                    addr: Some(peer),
                    dialect,
                    codec,
                    ..
                }) = self.call
                {
                    push(
                        out,
                        Action::StartMedia {
                            peer,
                            dialect,
                            codec,
                        },
                    );
                }
            }
            Step::StopMedia => push(out, Action::StopMedia),
            Step::Tell(Tell::EndedRequest(reason)) => {
                if let Some(Event::Peer {
                    message: Message::Start { caller, .. },
                    ..
                }) = event
                {
                    let peer = caller.clone();
                    push(out, Action::Notify(Note::Ended { peer, reason }));
                }
            }
            Step::Tell(tell) => {
                if let Some(note) = self.note(tell) {
                    push(out, Action::Notify(note));
                }
            }
            Step::CountForeign => self.counters.foreign += 1,
            Step::RememberEnded => {
                if let Some(Call {
                    addr: Some(addr),
                    dialect: Dialect::Original,
                    ..
                }) = self.call
                {
                    self.ended = Some(EndedPeer {
                        addr,
                        heard: self.now,
                        closed: self.now,
                    });
                }
            }
            Step::HearEnded => {
                if let Some(e) = &mut self.ended {
                    e.heard = self.now;
                }
            }
            Step::CloseEnded => {
                if let Some(e) = &mut self.ended {
                    e.closed = self.now;
                    let message = Message::Close { call: None };
                    push(
                        out,
                        Action::Send {
                            to: e.addr,
                            message,
                            key: None,
                        },
                    );
                }
            }
        }
    }

    /// Tells the user of the incoming call, once, with how its caller is verified (see
    /// [`Machine`]): the directory's answer about the caller's name when `event` is it;
    /// anything else (no answer in time, a failed lookup, the user or the caller acting
    /// first) leaves only the pin to go by.
    fn announce(&mut self, event: Option<&Event>, out: &mut Actions) {
        let Some(c) = &mut self.call else { return };
        let Some(from) = c.addr else { return };
        if c.announced {
            return;
        }
        c.announced = true;
        let (verified, new, address) = Self::verify(c, event);
        c.verification = Some(verified);
        if new {
            c.pin = NewKey::ToPin;
        }
        let peer = c.peer.clone();
        push(
            out,
            Action::Notify(Note::Incoming {
                peer,
                from,
                verified,
                new,
                address,
            }),
        );
    }

    fn note(&self, tell: Tell) -> Option<Note> {
        if let Tell::Refused(why) = tell {
            return Some(Note::Refused(why));
        }
        let c = self.call.as_ref()?;
        let peer = c.peer.clone();
        Some(match tell {
            Tell::Calling => Note::Calling { peer },
            Tell::Ringing => Note::Ringing { peer },
            Tell::Connected => Note::Connected {
                peer,
                verified: c.verified(),
                new: c.pin == NewKey::ToPin,
            },
            Tell::Ended(reason) | Tell::EndedRequest(reason) => Note::Ended { peer, reason },
            Tell::Refused(why) => Note::Refused(why),
        })
    }

    fn send(&self, say: Say, out: &mut Actions) {
        let Some(c) = &self.call else { return };
        let Some(to) = c.addr else {
            log::debug!("no address for {:?} yet: not sent", say);
            return;
        };
        let message = match (c.dialect, c.id) {
            (Dialect::Parlo, Some(call)) => match say {
                Say::Start => Message::Start {
                    caller: self.config.name.clone(),
                    call: Some(call),
                    version: Some(VERSION),
                    codecs: Some(self.config.codecs.set()),
                    conf: self.config.conference,
                },
                Say::Ringing => Message::Ringing { call },
                Say::Accept => Message::Accept {
                    call: Some(call),
                    codec: Some(c.codec),
                },
                Say::Reject => Message::Reject { call: Some(call) },
                Say::Close => Message::Close { call: Some(call) },
                Say::Closed => Message::Closed { call },
                Say::Ack => Message::Ack { call },
            },
            // A peer speaking the original protocol knows nothing of call ids, RINGING or
            // acknowledgements.
            _ => match say {
                Say::Start => Message::start_original(self.config.name.clone()),
                Say::Accept => Message::Accept {
                    call: None,
                    codec: None,
                },
                Say::Reject => Message::Reject { call: None },
                Say::Close => Message::Close { call: None },
                Say::Ringing | Say::Closed | Say::Ack => return,
            },
        };
        let key = c.key;
        push(out, Action::Send { to, message, key });
    }

    fn arm(&mut self, timer: Timer, at: Instant, out: &mut Actions) {
        self.timers[timer as usize] = Some(at);
        push(out, Action::ArmTimer { timer, at });
    }

    fn cancel(&mut self, timer: Timer, out: &mut Actions) {
        if self.timers[timer as usize].take().is_some() {
            push(out, Action::CancelTimer(timer));
        }
    }
}

fn peer_kind(message: &Message) -> EventKind {
    match message {
        Message::Start { .. } => EventKind::Start,
        Message::Ringing { .. } => EventKind::Ringing,
        Message::Accept { .. } => EventKind::PeerAccept,
        Message::Reject { .. } => EventKind::PeerReject,
        Message::Busy { .. } => EventKind::Busy,
        Message::Close { .. } => EventKind::Close,
        Message::Closed { .. } => EventKind::Closed,
        Message::Ack { .. } => EventKind::Ack,
    }
}

fn push(out: &mut Actions, action: Action) {
    if let Err(dropped) = out.push(action) {
        // Unreachable by construction (MAX_ACTIONS exceeds the longest row plus the
        // cancellations); the property tests check it.
        log::error!("action list full: {dropped:?} dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EndReason, Note, SplitMix64};
    use std::string::ToString;
    use std::vec::Vec;

    const BOB: &str = "127.0.0.2:5001";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("test name")
    }

    fn from_bob(message: Message) -> Event {
        Event::Peer {
            from: addr(BOB),
            message,
            sender: Sender::Plain,
            pinned: None,
        }
    }

    /// A phone named `me` that makes and takes plaintext calls with Parlo phones (the
    /// scenarios below are about other things than keys).
    fn plain_config(me: &str) -> Config {
        let mut config = Config::new(name(me));
        config.security = Security::Preferred;
        config
    }

    fn resolved(who: &str, at: &str, dialect: Option<Dialect>) -> Event {
        Event::Resolved {
            name: name(who),
            addr: addr(at),
            dialect,
            key: None,
            pinned: None,
        }
    }

    fn media(from: &str) -> Event {
        Event::Media {
            from: addr(from),
            sender: Sender::Plain,
        }
    }

    fn send(to: &str, message: Message) -> Action {
        Action::Send {
            to: addr(to),
            message,
            key: None,
        }
    }

    fn accept(call: Option<CallId>) -> Message {
        Message::Accept { call, codec: None }
    }

    fn idle() -> Machine<SplitMix64> {
        Machine::new(plain_config("alice"), SplitMix64(7), Instant(0))
    }

    fn dialing() -> Machine<SplitMix64> {
        dialing_as(idle(), None)
    }

    /// `m` dials bob, whom the directory finds at BOB and says speaks `dialect`.
    fn dialing_as(mut m: Machine<SplitMix64>, dialect: Option<Dialect>) -> Machine<SplitMix64> {
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let _ = m.handle(Instant(0), &resolved("bob", BOB, dialect));
        m
    }

    fn in_call() -> Machine<SplitMix64> {
        let mut m = dialing();
        let id = m.call_id();
        let _ = m.handle(Instant(10), &from_bob(accept(id)));
        assert_eq!(m.state(), State::InCall);
        m
    }

    fn notes(actions: &Actions) -> Vec<&Note> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    // ---- Idle ----

    #[test]
    fn idle_has_no_deadline() {
        assert_eq!(idle().poll_timeout(), None);
    }

    #[test]
    fn call_ids_come_from_the_injected_source() {
        let mut a = idle();
        let mut b = idle();
        let _ = a.handle(Instant(0), &Event::Dial(name("bob")));
        let _ = b.handle(Instant(0), &Event::Dial(name("bob")));
        assert_eq!(a.call_id(), b.call_id(), "same seed, same id");
        assert_eq!(a.call_id(), Some(SplitMix64(7).next_call_id()));
    }

    #[test]
    fn our_bare_start_wins_a_crossing_parlo_start() {
        // The directory says bob is original: our START goes bare. Should bob's own START,
        // with a call id, cross it, ours wins here as it does at bob's (a START without id
        // always wins), so that both sides keep the same call — whatever the names' order.
        let zoe = Machine::new(plain_config("zoe"), SplitMix64(7), Instant(0));
        let mut m = dialing_as(zoe, Some(Dialect::Original));
        assert_eq!(m.call_id(), None);
        let actions = m.handle(Instant(10), &start_from_bob(None, Some(CallId(1))));
        assert_eq!(m.state(), State::Dialing);
        assert_eq!(m.peer_addr(), Some(addr(BOB)));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::StartMedia { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn the_last_applied_entry_is_recorded() {
        let mut m = idle();
        assert_eq!(m.last_entry(), None);
        let _ = m.handle(Instant(0), &Event::Hangup);
        let entry = TABLE[m.last_entry().expect("an entry applied")];
        assert_eq!((entry.state, entry.event), (State::Idle, EventKind::Hangup));
        let _ = m.handle_timeout(Instant(1));
        assert_eq!(m.last_entry(), None, "no timer was due");
    }

    // ---- Dialing ----

    #[test]
    fn dialing_retransmits_with_doubling_capped_delays() {
        let mut m = dialing();
        let mut deadlines = Vec::new();
        while let Some(t) = m.poll_timeout() {
            if m.state() != State::Dialing || t > Instant(7_000) {
                break;
            }
            deadlines.push(m.deadline(Timer::Retransmit));
            let _ = m.handle_timeout(t);
        }
        let got: Vec<u64> = deadlines.into_iter().flatten().map(|i| i.0).collect();
        assert_eq!(got, [500, 1_500, 3_500, 5_500, 7_500]);
        assert_eq!(m.counters().retransmissions, 4);
    }

    #[test]
    fn a_bare_first_answer_makes_the_call_original_without_a_call_id() {
        let mut m = dialing();
        let ours = m.call_id();
        let _ = m.handle(Instant(10), &from_bob(accept(None)));
        assert_eq!(m.state(), State::InCall);
        assert_eq!((m.dialect(), m.call_id()), (Some(Dialect::Original), None));
        // Fixed now: a message with our old call id is not the original peer's.
        let _ = m.handle(Instant(20), &from_bob(Message::Close { call: ours }));
        assert_eq!((m.state(), m.counters().foreign), (State::InCall, 1));
        let actions = m.handle(Instant(30), &Event::Hangup);
        assert!(actions.contains(&send(BOB, Message::Close { call: None })));
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut m = dialing();
        let id = m.call_id();
        let id = id.expect("a Parlo call has an id");
        let _ = m.handle(Instant(1_000), &from_bob(Message::Ringing { call: id }));
        // A clock that steps back does not bring deadlines forward or fire them late.
        let actions = m.handle(Instant(100), &from_bob(accept(Some(id))));
        assert!(actions.contains(&Action::ArmTimer {
            timer: Timer::PeerSilence,
            at: Instant(6_000)
        }));
    }

    // ---- codecs ----

    fn start_from_bob(codecs: Option<crate::vocab::CodecSet>, call: Option<CallId>) -> Event {
        from_bob(Message::Start {
            caller: name("bob"),
            call,
            version: call.map(|_| crate::vocab::VERSION),
            codecs,
            conf: None,
        })
    }

    fn callee_with(preference: &[Codec], start: &Event) -> Machine<SplitMix64> {
        let mut config = plain_config("alice");
        config.codecs = Preference::new(preference).expect("valid preference");
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let _ = m.handle(Instant(0), start);
        assert_eq!(m.state(), State::Ringing);
        m
    }

    #[test]
    fn the_callee_chooses_by_its_own_preference() {
        use crate::vocab::CodecSet;
        let both = Some(CodecSet::only(Codec::Pcmu).with(Codec::L16));
        let id = Some(CallId(9));
        let cases: [(&[Codec], Option<CodecSet>, Codec); 6] = [
            (&[Codec::Pcmu, Codec::L16], both, Codec::Pcmu),
            (&[Codec::L16, Codec::Pcmu], both, Codec::L16),
            (
                &[Codec::L16, Codec::Pcmu],
                Some(CodecSet::only(Codec::Pcmu)),
                Codec::Pcmu,
            ),
            (&[Codec::Pcmu], None, Codec::L16),
            (&[Codec::Pcmu], Some(CodecSet::EMPTY), Codec::L16),
            (&[Codec::L16], Some(CodecSet::only(Codec::Pcmu)), Codec::L16),
        ];
        for (preference, offer, want) in cases {
            let mut m = callee_with(preference, &start_from_bob(offer, id));
            assert_eq!(m.codec(), Some(want), "{preference:?} for {offer:?}");
            let actions = m.handle(Instant(10), &Event::Accept);
            assert!(actions.contains(&send(
                BOB,
                Message::Accept {
                    call: id,
                    codec: Some(want)
                }
            )));
            assert!(actions.contains(&Action::StartMedia {
                peer: addr(BOB),
                dialect: Dialect::Parlo,
                codec: want
            }));
        }
    }

    #[test]
    fn an_original_caller_gets_a_bare_accept_and_l16() {
        let mut m = callee_with(&[Codec::Pcmu], &start_from_bob(None, None));
        let actions = m.handle(Instant(10), &Event::Accept);
        assert!(actions.contains(&send(BOB, accept(None))));
        assert_eq!(m.codec(), Some(Codec::L16));
    }

    #[test]
    fn the_caller_offers_its_preference_and_follows_the_answer() {
        let mut config = plain_config("alice");
        config.codecs = Preference::new(&[Codec::L16]).expect("valid preference");
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let actions = m.handle(Instant(0), &resolved("bob", BOB, None));
        let id = m.call_id();
        assert!(actions.contains(&send(
            BOB,
            Message::start(
                name("alice"),
                id.expect("a Parlo call has an id"),
                crate::vocab::CodecSet::only(Codec::L16)
            )
        )));
        // Not offered, but the callee decides and both ends decode every codec.
        let actions = m.handle(
            Instant(5),
            &from_bob(Message::Accept {
                call: id,
                codec: Some(Codec::Pcmu),
            }),
        );
        assert_eq!(m.codec(), Some(Codec::Pcmu));
        assert!(actions.contains(&Action::StartMedia {
            peer: addr(BOB),
            dialect: Dialect::Parlo,
            codec: Codec::Pcmu
        }));
    }

    #[test]
    fn a_leg_of_a_conference_says_so_in_its_start() {
        let conference = Some(crate::conference::ConfId(0x0123_4567_89ab_cdef));
        let mut config = plain_config("alice");
        config.conference = conference;
        let mut m = Machine::new(config.clone(), SplitMix64(7), Instant(0));
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let actions = m.handle(Instant(0), &resolved("bob", BOB, None));
        let start = Message::Start {
            caller: name("alice"),
            call: m.call_id(),
            version: Some(crate::vocab::VERSION),
            codecs: Some(Preference::default().set()),
            conf: conference,
        };
        assert!(actions.contains(&send(BOB, start)), "{actions:?}");
        // The retransmissions carry it too.
        let actions = m.handle_timeout(Instant(500));
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Send { message: Message::Start { conf, .. }, .. } if *conf == conference
            )),
            "{actions:?}"
        );
        // An original phone cannot be in a conference: it is not called at all.
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let actions = m.handle(Instant(0), &resolved("bob", BOB, Some(Dialect::Original)));
        assert!(sends(&actions).is_empty(), "{actions:?}");
        assert_eq!(
            notes(&actions),
            [&Note::Ended {
                peer: name("bob"),
                reason: EndReason::OriginalPhone
            }]
        );
        assert_eq!(m.state(), State::Idle);
    }

    #[test]
    fn preferences_are_non_empty_without_repeats() {
        assert_eq!(Preference::new(&[]), None);
        assert_eq!(Preference::new(&[Codec::L16, Codec::L16]), None);
        assert_eq!(Preference::default().to_string(), "L16,PCMU");
        let pcmu_first = Preference::new(&[Codec::Pcmu, Codec::L16]).expect("valid");
        assert_eq!(pcmu_first.to_string(), "PCMU,L16");
        assert_eq!(
            pcmu_first.set().to_string(),
            "L16,PCMU",
            "a set is unordered"
        );
    }

    // ---- Ringing: the caller's verification ----

    /// Bob's phone, ringing for Alice's call from ALICE, not yet announced.
    fn ringing_unannounced() -> Machine<SplitMix64> {
        ringing_unannounced_with(plain_config("bob"))
    }

    fn ringing_unannounced_with(config: Config) -> Machine<SplitMix64> {
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let start = Event::Peer {
            from: addr(ALICE),
            message: Message::start(name("alice"), CallId(1), Preference::default().set()),
            sender: Sender::Plain,
            pinned: None,
        };
        let actions = m.handle(Instant(0), &start);
        assert!(notes(&actions).is_empty(), "announced at once: {actions:?}");
        assert!(actions.contains(&Action::LookupCaller {
            name: name("alice"),
            from: addr(ALICE)
        }));
        m
    }

    const ALICE: &str = "127.0.0.1:5001";

    #[test]
    fn whatever_comes_first_announces_the_call_unverified() {
        let close = Event::Peer {
            from: addr(ALICE),
            message: Message::Close {
                call: Some(CallId(1)),
            },
            sender: Sender::Plain,
            pinned: None,
        };
        let firsts = [
            Event::Accept,
            Event::Reject,
            Event::Hangup,
            Event::Dial(name("carol")),
            close,
        ];
        for first in firsts {
            let mut m = ringing_unannounced();
            let actions = m.handle(Instant(100), &first);
            let told = notes(&actions);
            assert_eq!(
                told.first(),
                Some(&&Note::Incoming {
                    peer: name("alice"),
                    from: addr(ALICE),
                    verified: Verification::Plaintext,
                    new: false,
                    address: None,
                }),
                "after {first:?}: {actions:?}"
            );
            assert_eq!(told.len(), 2, "then what happened: {actions:?}");
        }
        // The ring limit too, with a verification wait longer than it.
        let mut config = plain_config("bob");
        config.verify_wait = 60_000;
        let mut m = ringing_unannounced_with(config);
        let actions = m.handle_timeout(Instant(9_000));
        assert!(matches!(
            notes(&actions).as_slice(),
            [Note::Incoming { address: None, .. }, Note::Ended { .. }]
        ));
    }

    #[test]
    fn the_call_is_announced_once() {
        let mut m = ringing_unannounced();
        let actions = m.handle(Instant(10), &resolved("alice", ALICE, None));
        assert_eq!(notes(&actions).len(), 1);
        let actions = m.handle(Instant(20), &Event::Accept);
        assert_eq!(
            notes(&actions),
            [&Note::Connected {
                peer: name("alice"),
                verified: Verification::Plaintext,
                new: false,
            }]
        );
    }

    // ---- security ----

    const K: PublicKey = PublicKey([1; 32]);

    /// A key, or none (in the clear, unbound, not pinned).
    type Key = Option<PublicKey>;

    /// Policy, original phones allowed, the START's id, its key, the pin; the refusal.
    type StartCase = (Security, bool, Option<CallId>, Key, Key, Option<EndReason>);
    const OTHER: PublicKey = PublicKey([2; 32]);

    fn secure(me: &str, security: Security) -> Machine<SplitMix64> {
        let mut config = Config::new(name(me));
        config.security = security;
        Machine::new(config, SplitMix64(7), Instant(0))
    }

    /// A START from alice at ALICE (id 1, or bare without `id`), sealed for `key` or in
    /// the clear, with this phone's pin for alice.
    fn start_from_alice(
        id: Option<CallId>,
        key: Option<PublicKey>,
        pinned: Option<PublicKey>,
    ) -> Event {
        Event::Peer {
            from: addr(ALICE),
            message: Message::Start {
                caller: name("alice"),
                call: id,
                version: id.map(|_| crate::vocab::VERSION),
                codecs: None,
                conf: None,
            },
            sender: Sender::of(key),
            pinned,
        }
    }

    fn sends(actions: &Actions) -> Vec<(&Message, Option<PublicKey>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { message, key, .. } => Some((message, *key)),
                _ => None,
            })
            .collect()
    }

    fn pins(actions: &Actions) -> Vec<(&str, PublicKey)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Pin { name, key } => Some((name.as_str(), *key)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_callee_verifies_an_encrypted_caller_by_key_and_pin() {
        let lookup = |key: Option<PublicKey>| Event::Resolved {
            name: name("alice"),
            addr: addr("127.0.0.9:5001"),
            dialect: None,
            key,
            pinned: None,
        };
        let unknown = Event::Unknown {
            name: name("alice"),
        };
        let failed = Event::LookupFailed {
            name: name("alice"),
        };
        // (directory's answer, pin, verification, new); `None`: the verify timer fires.
        let cases: [(Option<&Event>, Option<PublicKey>, Verification, bool); 10] = [
            (Some(&lookup(Some(K))), Some(K), Verification::Key, false),
            (Some(&lookup(Some(K))), None, Verification::Key, true),
            (Some(&lookup(Some(OTHER))), Some(K), Verification::No, false),
            (Some(&lookup(Some(OTHER))), None, Verification::No, false),
            (Some(&lookup(None)), Some(K), Verification::Key, false),
            (Some(&lookup(None)), None, Verification::Unbound, false),
            (Some(&unknown), Some(K), Verification::Key, false),
            (Some(&unknown), None, Verification::No, false),
            (Some(&failed), Some(K), Verification::Key, false),
            (Some(&failed), None, Verification::Unknown, false),
        ];
        for (answer, pinned, want, new) in cases {
            for verify_timer in [false, true] {
                if verify_timer && !matches!(answer, Some(Event::LookupFailed { .. })) {
                    continue;
                }
                let mut m = secure("bob", Security::Required);
                let _ = m.handle(
                    Instant(0),
                    &start_from_alice(Some(CallId(1)), Some(K), pinned),
                );
                assert_eq!((m.state(), m.peer_key()), (State::Ringing, Some(K)));
                let actions = match answer {
                    Some(event) if !verify_timer => m.handle(Instant(10), event),
                    _ => m.handle_timeout(Instant(1_000)),
                };
                let what = std::format!("{answer:?} pinned {pinned:?}");
                assert_eq!(
                    notes(&actions),
                    [&Note::Incoming {
                        peer: name("alice"),
                        from: addr(ALICE),
                        verified: want,
                        new,
                        address: None
                    }],
                    "{what}"
                );
                assert_eq!(m.verification(), Some(want), "{what}");
                let pinned_now = if new {
                    std::vec![("alice", K)]
                } else {
                    std::vec![]
                };
                assert_eq!(pins(&actions), pinned_now, "{what}");
                // Answered: the ACCEPT is sealed for the caller's key, and no second pin.
                let actions = m.handle(Instant(20), &Event::Accept);
                assert_eq!(
                    sends(&actions),
                    [(&accept_with(Some(CallId(1)), Codec::L16), Some(K))],
                    "{what}"
                );
                assert!(pins(&actions).is_empty(), "{what}");
                assert!(
                    notes(&actions).contains(&&Note::Connected {
                        peer: name("alice"),
                        verified: want,
                        new: false
                    }),
                    "{what}: {actions:?}"
                );
            }
        }
    }

    fn accept_with(call: Option<CallId>, codec: Codec) -> Message {
        Message::Accept {
            call,
            codec: Some(codec),
        }
    }

    #[test]
    fn a_start_is_welcome_refused_or_key_changed_by_policy_and_pin() {
        use Security::{Off, Preferred, Required};
        // (policy, original phones allowed, START id, sealed for, pin) -> outcome
        let id = Some(CallId(1));
        let cases: [StartCase; 14] = [
            (Required, true, id, Some(K), None, None),
            (Required, true, id, Some(K), Some(K), None),
            (
                Required,
                true,
                id,
                Some(K),
                Some(OTHER),
                Some(EndReason::KeyChanged),
            ),
            (
                Preferred,
                true,
                id,
                Some(K),
                Some(OTHER),
                Some(EndReason::KeyChanged),
            ),
            (Off, true, id, Some(K), Some(OTHER), None),
            (Required, true, id, None, None, Some(EndReason::Insecure)),
            (Required, true, id, None, Some(K), Some(EndReason::Insecure)),
            (Preferred, true, id, None, None, None),
            (Off, true, id, None, None, None),
            (Required, true, None, None, None, None),
            (Required, false, None, None, None, Some(EndReason::Insecure)),
            (
                Preferred,
                false,
                None,
                None,
                None,
                Some(EndReason::Insecure),
            ),
            (Off, false, None, None, None, Some(EndReason::Insecure)),
            (Preferred, false, id, None, None, None),
        ];
        for (security, original_phones, call, key, pinned, refused) in cases {
            let what = std::format!(
                "{security:?} original={original_phones} {call:?} {key:?} pin {pinned:?}"
            );
            let mut m = secure("bob", security);
            m.config.original_phones = original_phones;
            let actions = m.handle(Instant(0), &start_from_alice(call, key, pinned));
            match refused {
                None => {
                    assert_eq!(m.state(), State::Ringing, "{what}");
                    assert_eq!(m.peer_key(), key, "{what}");
                }
                Some(reason) => {
                    assert_eq!(m.state(), State::Idle, "{what}");
                    assert_eq!(
                        sends(&actions),
                        [(&Message::Reject { call }, key)],
                        "{what}"
                    );
                    assert_eq!(
                        notes(&actions),
                        [&Note::Ended {
                            peer: name("alice"),
                            reason
                        }],
                        "{what}"
                    );
                    assert_eq!(actions.len(), 2, "nothing else: {actions:?}");
                }
            }
        }
    }

    #[test]
    fn a_refused_start_leaves_the_closing_call_alone() {
        let mut m = secure("bob", Security::Required);
        let _ = m.handle(
            Instant(0),
            &start_from_alice(Some(CallId(1)), Some(K), None),
        );
        let _ = m.handle(Instant(10), &Event::Reject);
        assert_eq!(m.state(), State::Closing);
        let deadline = m.poll_timeout();
        // Carol, with a changed key, from another address.
        let carol = Event::Peer {
            from: addr("127.0.0.3:5001"),
            message: Message::start(name("carol"), CallId(9), Preference::default().set()),
            sender: Sender::Key(OTHER),
            pinned: Some(K),
        };
        let actions = m.handle(Instant(20), &carol);
        assert_eq!(
            notes(&actions),
            [&Note::Ended {
                peer: name("carol"),
                reason: EndReason::KeyChanged
            }]
        );
        assert!(actions.contains(&Action::Send {
            to: addr("127.0.0.3:5001"),
            message: Message::Reject {
                call: Some(CallId(9))
            },
            key: Some(OTHER)
        }));
        assert_eq!(m.state(), State::Closing);
        assert_eq!(m.peer(), Some(&name("alice")));
        assert_eq!((m.peer_key(), m.call_id()), (Some(K), Some(CallId(1))));
        assert_eq!(m.poll_timeout(), deadline, "its timers run on");
    }

    #[test]
    fn the_caller_takes_the_pin_else_the_directorys_key() {
        use Security::{Off, Preferred, Required};
        enum Want {
            Call(Option<PublicKey>, bool),
            Ended(EndReason),
        }
        // (policy, directory's dialect, its key, the pin) -> outcome
        let cases = [
            (Required, None, Some(K), None, Want::Call(Some(K), true)),
            (
                Required,
                Some(Dialect::Parlo),
                Some(K),
                Some(K),
                Want::Call(Some(K), false),
            ),
            (Required, None, None, Some(K), Want::Call(Some(K), false)),
            (
                Required,
                None,
                Some(OTHER),
                Some(K),
                Want::Ended(EndReason::KeyChanged),
            ),
            (
                Preferred,
                None,
                Some(OTHER),
                Some(K),
                Want::Ended(EndReason::KeyChanged),
            ),
            (Required, None, None, None, Want::Ended(EndReason::Insecure)),
            (Preferred, None, None, None, Want::Call(None, false)),
            (Off, None, Some(K), None, Want::Call(None, false)),
            (Off, None, Some(OTHER), Some(K), Want::Call(None, false)),
            (
                Required,
                Some(Dialect::Original),
                None,
                None,
                Want::Call(None, false),
            ),
            // An original phone has no key, whatever a pin says.
            (
                Required,
                Some(Dialect::Original),
                None,
                Some(K),
                Want::Call(None, false),
            ),
        ];
        for (security, dialect, key, pinned, want) in cases {
            let what = std::format!("{security:?} {dialect:?} key {key:?} pin {pinned:?}");
            let mut m = secure("alice", security);
            let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
            let actions = m.handle(
                Instant(5),
                &Event::Resolved {
                    name: name("bob"),
                    addr: addr(BOB),
                    dialect,
                    key,
                    pinned,
                },
            );
            match want {
                Want::Ended(reason) => {
                    assert_eq!(m.state(), State::Idle, "{what}");
                    assert!(sends(&actions).is_empty(), "nothing sent: {what}");
                    assert_eq!(
                        notes(&actions),
                        [&Note::Ended {
                            peer: name("bob"),
                            reason
                        }],
                        "{what}"
                    );
                }
                Want::Call(call_key, new) => {
                    assert_eq!(m.state(), State::Dialing, "{what}");
                    assert_eq!(m.peer_key(), call_key, "{what}");
                    let verified = match call_key {
                        Some(_) => Verification::Key,
                        None => Verification::Plaintext,
                    };
                    assert_eq!(m.verification(), Some(verified), "{what}");
                    let sent = sends(&actions);
                    assert_eq!(sent.len(), 1, "{what}");
                    assert_eq!(
                        sent[0].1, call_key,
                        "START sealed for the call's key: {what}"
                    );
                    let id = m.call_id();
                    let answer = match dialect {
                        Some(Dialect::Original) => accept(None),
                        _ => accept(id),
                    };
                    let actions = m.handle(
                        Instant(10),
                        &Event::Peer {
                            from: addr(BOB),
                            message: answer,
                            sender: Sender::of(call_key),
                            pinned: None,
                        },
                    );
                    let verified = match call_key {
                        Some(_) => Verification::Key,
                        None => Verification::Plaintext,
                    };
                    assert_eq!(m.state(), State::InCall, "{what}");
                    assert!(
                        notes(&actions).contains(&&Note::Connected {
                            peer: name("bob"),
                            verified,
                            new
                        }),
                        "{what}: {actions:?}"
                    );
                    let pinned_now = match (new, call_key) {
                        (true, Some(k)) => std::vec![("bob", k)],
                        _ => std::vec![],
                    };
                    assert_eq!(pins(&actions), pinned_now, "{what}");
                }
            }
        }
    }

    #[test]
    fn original_callees_are_refused_when_original_phones_are_not_allowed() {
        let mut m = secure("alice", Security::Preferred);
        m.config.original_phones = false;
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let actions = m.handle(Instant(5), &resolved("bob", BOB, Some(Dialect::Original)));
        assert_eq!(m.state(), State::Idle);
        assert!(sends(&actions).is_empty());
        assert_eq!(
            notes(&actions),
            [&Note::Ended {
                peer: name("bob"),
                reason: EndReason::Insecure
            }]
        );
    }

    /// Alice in an encrypted call with bob (key K) at BOB.
    fn in_secure_call() -> Machine<SplitMix64> {
        let mut m = secure("alice", Security::Required);
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let _ = m.handle(
            Instant(5),
            &Event::Resolved {
                name: name("bob"),
                addr: addr(BOB),
                dialect: None,
                key: Some(K),
                pinned: Some(K),
            },
        );
        let id = m.call_id();
        let sealed = |message| Event::Peer {
            from: addr(BOB),
            message,
            sender: Sender::Key(K),
            pinned: None,
        };
        let _ = m.handle(Instant(10), &sealed(accept(id)));
        assert_eq!(m.state(), State::InCall);
        m
    }

    #[test]
    fn only_the_calls_key_speaks_in_an_encrypted_call() {
        let mut m = in_secure_call();
        let id = m.call_id();
        let close = Message::Close { call: id };
        for sender in [Sender::Plain, Sender::Key(OTHER)] {
            let forged = Event::Peer {
                from: addr(BOB),
                message: close.clone(),
                sender,
                pinned: None,
            };
            let actions = m.handle(Instant(20), &forged);
            assert!(actions.is_empty(), "{sender:?}: {actions:?}");
            assert_eq!(m.state(), State::InCall, "{sender:?}");
            let before = m.deadline(Timer::PeerSilence);
            let _ = m.handle(
                Instant(30),
                &Event::Media {
                    from: addr(BOB),
                    sender,
                },
            );
            assert_eq!(m.deadline(Timer::PeerSilence), before, "{sender:?} media");
        }
        assert_eq!(m.counters().foreign, 4);
        let actions = m.handle(
            Instant(40),
            &Event::Peer {
                from: addr(BOB),
                message: close,
                sender: Sender::Key(K),
                pinned: None,
            },
        );
        assert_eq!(m.state(), State::Closing);
        assert_eq!(
            sends(&actions),
            [(
                &Message::Closed {
                    call: id.expect("an id")
                },
                Some(K)
            )]
        );
    }

    #[test]
    fn a_bare_answer_to_an_encrypted_start_is_foreign() {
        let mut m = secure("alice", Security::Required);
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let _ = m.handle(
            Instant(5),
            &Event::Resolved {
                name: name("bob"),
                addr: addr(BOB),
                dialect: None,
                key: Some(K),
                pinned: None,
            },
        );
        let bare = Event::Peer {
            from: addr(BOB),
            message: accept(None),
            sender: Sender::Key(K),
            pinned: None,
        };
        let actions = m.handle(Instant(10), &bare);
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(
            (m.state(), m.dialect()),
            (State::Dialing, Some(Dialect::Parlo))
        );
    }

    #[test]
    fn a_start_with_another_sender_is_a_new_request() {
        let mut m = secure("bob", Security::Required);
        let first = start_from_alice(Some(CallId(1)), Some(K), None);
        let _ = m.handle(Instant(0), &first);
        // The same START again, sealed for K: a repeat.
        let actions = m.handle(Instant(10), &first);
        assert_eq!(
            sends(&actions),
            [(&Message::Ringing { call: CallId(1) }, Some(K))]
        );
        for key in [Some(OTHER), None] {
            let actions = m.handle(Instant(20), &start_from_alice(Some(CallId(1)), key, None));
            assert_eq!(
                sends(&actions),
                [(
                    &Message::Busy {
                        call: Some(CallId(1))
                    },
                    key
                )],
                "{key:?}"
            );
            assert_eq!(m.state(), State::Ringing);
        }
    }

    #[test]
    fn a_crossing_start_must_come_with_the_key_being_dialled() {
        // Bob wins the glare with a lower id, but only sealed for the key Alice dials.
        for (key, crossing) in [(Some(K), true), (Some(OTHER), false), (None, false)] {
            let mut m = secure("alice", Security::Required);
            let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
            let _ = m.handle(
                Instant(5),
                &Event::Resolved {
                    name: name("bob"),
                    addr: addr(BOB),
                    dialect: None,
                    key: Some(K),
                    pinned: None,
                },
            );
            let start = Event::Peer {
                from: addr(BOB),
                message: Message::start(name("bob"), CallId(0), Preference::default().set()),
                sender: Sender::of(key),
                pinned: None,
            };
            let actions = m.handle(Instant(10), &start);
            if crossing {
                assert_eq!(m.state(), State::InCall);
                assert_eq!(m.peer_key(), Some(K));
                assert!(notes(&actions).contains(&&Note::Connected {
                    peer: name("bob"),
                    verified: Verification::Key,
                    new: true
                }));
                assert_eq!(pins(&actions), [("bob", K)]);
            } else {
                assert_eq!(m.state(), State::Dialing, "{key:?}");
                assert_eq!(
                    sends(&actions),
                    [(
                        &Message::Busy {
                            call: Some(CallId(0))
                        },
                        key
                    )],
                    "{key:?}"
                );
            }
        }
    }

    #[test]
    fn an_intercom_answers_only_key_verified_callers_on_its_list() {
        let lookup = |key| Event::Resolved {
            name: name("alice"),
            addr: addr(ALICE),
            dialect: None,
            key,
            pinned: None,
        };
        // (caller's key, directory's key, list) -> answered by itself
        let cases: [(Key, Key, &[&str], bool); 7] = [
            (Some(K), Some(K), &[], true),
            (Some(K), Some(K), &["alice"], true),
            (Some(K), Some(K), &["carol"], false),
            (Some(K), None, &[], false),
            (Some(K), Some(OTHER), &[], false),
            (None, None, &[], false),
            (None, Some(K), &[], false),
        ];
        for (key, bound, list, answered) in cases {
            let mut config = Config::new(name("door"));
            config.security = Security::Preferred;
            config.auto_answer = true;
            for n in list {
                config.answer_from.push(name(n)).expect("room");
            }
            let mut m = Machine::new(config, SplitMix64(7), Instant(0));
            let _ = m.handle(Instant(0), &start_from_alice(Some(CallId(1)), key, None));
            let _ = m.handle(Instant(10), &lookup(bound));
            let want = if answered {
                State::InCall
            } else {
                State::Ringing
            };
            assert_eq!(m.state(), want, "{key:?} bound {bound:?} list {list:?}");
        }
    }

    // ---- InCall ----

    #[test]
    fn foreign_media_does_not_keep_a_call_alive() {
        let mut m = in_call();
        let before = m.deadline(Timer::PeerSilence);
        let _ = m.handle(Instant(100), &media("127.0.0.9:5001"));
        assert_eq!(m.deadline(Timer::PeerSilence), before);
        assert_eq!(m.counters().foreign, 1);
    }

    #[test]
    fn peer_silence_ends_the_call_as_peer_lost() {
        let mut m = in_call();
        let t = m.poll_timeout().expect("peer-silence armed");
        let actions = m.handle_timeout(t);
        assert_eq!(m.state(), State::Idle);
        assert_eq!(
            notes(&actions),
            [&Note::Ended {
                peer: name("bob"),
                reason: EndReason::PeerLost
            }]
        );
    }

    // ---- after a call with an original peer ----

    /// Alice in a call with an original peer at BOB, connected at 10.
    fn in_original_call() -> Machine<SplitMix64> {
        let mut m = dialing();
        let _ = m.handle(Instant(10), &from_bob(accept(None)));
        assert_eq!(m.dialect(), Some(Dialect::Original));
        m
    }

    /// Fires every timer until none is left.
    fn settle(m: &mut Machine<SplitMix64>) {
        while let Some(t) = m.poll_timeout() {
            let _ = m.handle_timeout(t);
        }
    }

    /// Hangs the call up at `at` and lets the closing run its course.
    fn hang_up_and_settle(m: &mut Machine<SplitMix64>, at: u64) {
        let _ = m.handle(Instant(at), &Event::Hangup);
        settle(m);
    }

    #[test]
    fn raw_audio_of_an_ended_original_call_is_recognised_until_it_stops() {
        let mut m = in_original_call();
        let other = addr("127.0.0.9:5001");
        assert_eq!(
            m.media_dialect(Instant(20), addr(BOB)),
            Some(Dialect::Original)
        );
        assert_eq!(m.media_dialect(Instant(20), other), None);
        hang_up_and_settle(&mut m, 1_000);
        assert_eq!(m.state(), State::Idle);
        assert_eq!(
            m.media_dialect(Instant(5_000), addr(BOB)),
            Some(Dialect::Original)
        );
        assert_eq!(m.media_dialect(Instant(5_000), other), None);
        // Remembered for 10 s after the last audio (here: the hangup at 1000).
        assert_eq!(
            m.media_dialect(Instant(10_999), addr(BOB)),
            Some(Dialect::Original)
        );
        assert_eq!(m.media_dialect(Instant(11_000), addr(BOB)), None);
    }

    #[test]
    fn a_new_call_forgets_the_ended_original_peer() {
        let mut m = in_original_call();
        let _ = m.handle(Instant(1_000), &Event::Hangup);
        let _ = m.handle(Instant(1_100), &Event::Dial(name("carol")));
        let actions = m.handle(Instant(1_200), &media(BOB));
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(m.media_dialect(Instant(1_200), addr(BOB)), None);
        let _ = m.handle(Instant(1_300), &Event::Hangup);
        let actions = m.handle(Instant(2_500), &media(BOB));
        assert!(actions.is_empty(), "still forgotten once idle: {actions:?}");
    }

    #[test]
    fn a_parlo_peer_is_not_remembered_after_the_call() {
        let mut m = in_call();
        hang_up_and_settle(&mut m, 1_000);
        assert_eq!(m.media_dialect(Instant(5_000), addr(BOB)), None);
        let actions = m.handle(Instant(5_000), &media(BOB));
        assert!(actions.is_empty(), "{actions:?}");
    }

    // ---- Closing ----

    #[test]
    fn closing_ends_by_itself() {
        let mut m = in_call();
        let _ = m.handle(Instant(20), &Event::Hangup);
        assert_eq!(m.state(), State::Closing);
        settle(&mut m);
        assert_eq!(m.state(), State::Idle);
        assert_eq!(m.peer(), None);
    }
}
