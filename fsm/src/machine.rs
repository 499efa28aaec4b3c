//! The machine that applies [`TABLE`] to a phone's events.

use core::net::SocketAddr;

use crate::table::{Entry, EventKind, Guard, Next, Outcome, Say, State, Step, TABLE, Tell};
use crate::types::{Action, CallIds, Event, Instant, Note, Timer};
use crate::vocab::{CallId, Codec, Dialect, Message, Name, Preference};

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
    /// intercom).
    pub auto_answer: bool,
    /// The codecs this phone accepts, most preferred first: offered in START (as a set),
    /// and chosen from by preference when answering one.
    pub codecs: Preference,
}

impl Config {
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
            codecs: Preference::default(),
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
/// peer message belongs to the call when it comes from the peer's address and carries
/// the call's id (no id in a call in the original dialect, which has none; see the crate
/// docs on dialects). One that does not belong is [`EventKind::Foreign`]. A START is a
/// repeat of the current call's, a crossing call (glare) when it comes from the address
/// the directory gave for the phone being dialled, or else a new call request.
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
            Event::Media { from } => match call {
                Some(c) if c.addr != Some(*from) => EventKind::Foreign,
                Some(_) => EventKind::Media,
                None if self.ended_peer(self.now, *from).is_some() => EventKind::LeftoverMedia,
                None => EventKind::Media,
            },
            Event::Peer { from, message } => {
                let Some(c) = call else {
                    return peer_kind(message);
                };
                if let Message::Start { caller, call, .. } = message {
                    if !c.outgoing && c.addr == Some(*from) && c.id == *call && &c.peer == caller {
                        EventKind::StartRepeat
                    } else if self.state == State::Dialing
                        && &c.peer == caller
                        && c.addr == Some(*from)
                    {
                        // Only from the directory's address for the callee: before the
                        // lookup has answered, anyone could claim the callee's name.
                        EventKind::StartCrossing
                    } else {
                        EventKind::Start
                    }
                } else if self.belongs(c, *from, message) {
                    peer_kind(message)
                } else {
                    EventKind::Foreign
                }
            }
        }
    }

    /// Whether a message other than START belongs to the call `c`: it comes from the
    /// peer's address and carries the call's id, or none in a call in the original
    /// dialect. The dialect is fixed when the call is set up; the one exception is a
    /// call whose callee's dialect the directory did not say, where the callee's first
    /// answer (ACCEPT or REJECT, bare or not) fixes it.
    fn belongs(&self, c: &Call, from: SocketAddr, message: &Message) -> bool {
        if c.addr != Some(from) {
            return false;
        }
        match message.call_id() {
            Some(id) => c.dialect == Dialect::Parlo && c.id == Some(id),
            None if c.dialect_fixed => c.dialect == Dialect::Original,
            None => {
                self.state == State::Dialing
                    && matches!(message, Message::Accept { .. } | Message::Reject { .. })
            }
        }
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
            Guard::OriginalCallee | Guard::ParloCallee => {
                let original = matches!(
                    event,
                    Some(Event::Resolved {
                        dialect: Some(Dialect::Original),
                        ..
                    })
                );
                original == (guard == Guard::OriginalCallee)
            }
            Guard::CloseDue | Guard::CloseRecent => {
                let due = self
                    .ended
                    .is_some_and(|e| self.now >= e.closed.after(self.config.ended_close_interval));
                due == (guard == Guard::CloseDue)
            }
            Guard::AutoAnswer => self.config.auto_answer,
            Guard::ManualAnswer => !self.config.auto_answer,
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
                }) = event
                {
                    self.ended = None;
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
            Step::ReplyBusy => {
                if let Some(Event::Peer { from, message }) = event {
                    // The original protocol has no BUSY; its callers understand REJECT.
                    let message = match message.call_id() {
                        Some(call) => Message::Busy { call: Some(call) },
                        None => Message::Reject { call: None },
                    };
                    push(out, Action::Send { to: *from, message });
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
                        },
                    );
                }
            }
        }
    }

    /// Tells the user of the incoming call, once. The directory's answer about the
    /// caller's name says whether the call comes from where that name is registered;
    /// anything else (no answer in time, a failed lookup, the user or the caller acting
    /// first) leaves it unverified.
    fn announce(&mut self, event: Option<&Event>, out: &mut Actions) {
        let Some(c) = &mut self.call else { return };
        let Some(from) = c.addr else { return };
        if c.announced {
            return;
        }
        c.announced = true;
        let verified = match event {
            Some(Event::Resolved { addr, .. }) => {
                Some(addr.ip().to_canonical() == from.ip().to_canonical())
            }
            Some(Event::Unknown { .. }) => Some(false),
            _ => None,
        };
        let peer = c.peer.clone();
        push(
            out,
            Action::Notify(Note::Incoming {
                peer,
                from,
                verified,
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
            Tell::Connected => Note::Connected { peer },
            Tell::Ended(reason) => Note::Ended { peer, reason },
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
                Say::Start => {
                    Message::start(self.config.name.clone(), call, self.config.codecs.set())
                }
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
        push(out, Action::Send { to, message });
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
        }
    }

    fn accept(call: Option<CallId>) -> Message {
        Message::Accept { call, codec: None }
    }

    fn idle() -> Machine<SplitMix64> {
        Machine::new(Config::new(name("alice")), SplitMix64(7), Instant(0))
    }

    fn dialing() -> Machine<SplitMix64> {
        dialing_as(idle(), None)
    }

    /// `m` dials bob, whom the directory finds at BOB and says speaks `dialect`.
    fn dialing_as(mut m: Machine<SplitMix64>, dialect: Option<Dialect>) -> Machine<SplitMix64> {
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let _ = m.handle(
            Instant(0),
            &Event::Resolved {
                name: name("bob"),
                addr: addr(BOB),
                dialect,
            },
        );
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
        let zoe = Machine::new(Config::new(name("zoe")), SplitMix64(7), Instant(0));
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
        assert!(actions.contains(&Action::Send {
            to: addr(BOB),
            message: Message::Close { call: None }
        }));
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
        })
    }

    fn callee_with(preference: &[Codec], start: &Event) -> Machine<SplitMix64> {
        let mut config = Config::new(name("alice"));
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
            assert!(actions.contains(&Action::Send {
                to: addr(BOB),
                message: Message::Accept {
                    call: id,
                    codec: Some(want)
                }
            }));
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
        assert!(actions.contains(&Action::Send {
            to: addr(BOB),
            message: accept(None)
        }));
        assert_eq!(m.codec(), Some(Codec::L16));
    }

    #[test]
    fn the_caller_offers_its_preference_and_follows_the_answer() {
        let mut config = Config::new(name("alice"));
        config.codecs = Preference::new(&[Codec::L16]).expect("valid preference");
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let _ = m.handle(Instant(0), &Event::Dial(name("bob")));
        let actions = m.handle(
            Instant(0),
            &Event::Resolved {
                name: name("bob"),
                addr: addr(BOB),
                dialect: None,
            },
        );
        let id = m.call_id();
        assert!(actions.contains(&Action::Send {
            to: addr(BOB),
            message: Message::start(
                name("alice"),
                id.expect("a Parlo call has an id"),
                crate::vocab::CodecSet::only(Codec::L16)
            )
        }));
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
        ringing_unannounced_with(Config::new(name("bob")))
    }

    fn ringing_unannounced_with(config: Config) -> Machine<SplitMix64> {
        let mut m = Machine::new(config, SplitMix64(7), Instant(0));
        let start = Event::Peer {
            from: addr(ALICE),
            message: Message::start(name("alice"), CallId(1), Preference::default().set()),
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
                    verified: None
                }),
                "after {first:?}: {actions:?}"
            );
            assert_eq!(told.len(), 2, "then what happened: {actions:?}");
        }
        // The ring limit too, with a verification wait longer than it.
        let mut config = Config::new(name("bob"));
        config.verify_wait = 60_000;
        let mut m = ringing_unannounced_with(config);
        let actions = m.handle_timeout(Instant(9_000));
        assert!(matches!(
            notes(&actions).as_slice(),
            [Note::Incoming { verified: None, .. }, Note::Ended { .. }]
        ));
    }

    #[test]
    fn the_call_is_announced_once() {
        let mut m = ringing_unannounced();
        let resolved = Event::Resolved {
            name: name("alice"),
            addr: addr(ALICE),
            dialect: None,
        };
        let actions = m.handle(Instant(10), &resolved);
        assert_eq!(notes(&actions).len(), 1);
        let actions = m.handle(Instant(20), &Event::Accept);
        assert_eq!(
            notes(&actions),
            [&Note::Connected {
                peer: name("alice")
            }]
        );
    }

    // ---- InCall ----

    #[test]
    fn foreign_media_does_not_keep_a_call_alive() {
        let mut m = in_call();
        let before = m.deadline(Timer::PeerSilence);
        let _ = m.handle(
            Instant(100),
            &Event::Media {
                from: addr("127.0.0.9:5001"),
            },
        );
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
        let actions = m.handle(Instant(1_200), &Event::Media { from: addr(BOB) });
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(m.media_dialect(Instant(1_200), addr(BOB)), None);
        let _ = m.handle(Instant(1_300), &Event::Hangup);
        let actions = m.handle(Instant(2_500), &Event::Media { from: addr(BOB) });
        assert!(actions.is_empty(), "still forgotten once idle: {actions:?}");
    }

    #[test]
    fn a_parlo_peer_is_not_remembered_after_the_call() {
        let mut m = in_call();
        hang_up_and_settle(&mut m, 1_000);
        assert_eq!(m.media_dialect(Instant(5_000), addr(BOB)), None);
        let actions = m.handle(Instant(5_000), &Event::Media { from: addr(BOB) });
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
