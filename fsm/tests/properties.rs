//! Property tests: random sequences of events, from every state, under every security
//! policy, never panic and keep the machine's invariants.

use std::net::SocketAddr;

use parlo_fsm::{
    Action, CallId, CallIds, Codec, CodecSet, Config, Dialect, EndReason, Event, Instant,
    MAX_ACTIONS, Machine, Message, Name, Note, Preference, PublicKey, Security, Sender, State,
    Timer,
};
use proptest::prelude::*;

/// Call ids cycle through a small set, so that random messages often match.
#[derive(Debug)]
struct FewIds(u32);

impl CallIds for FewIds {
    fn next_call_id(&mut self) -> CallId {
        self.0 = self.0 % 3 + 1;
        CallId(self.0)
    }
}

const NAMES: [&str; 3] = ["me", "bob", "carol"];

fn name(i: usize) -> Name {
    Name::new(NAMES[i % NAMES.len()]).expect("short name")
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + i % 3], 5001))
}

/// Two keys, so that random keys often match and sometimes differ.
fn key() -> impl Strategy<Value = PublicKey> {
    (1u8..=2).prop_map(|b| PublicKey([b; 32]))
}

fn sender() -> impl Strategy<Value = Sender> {
    prop_oneof![Just(Sender::Plain), key().prop_map(Sender::Key)]
}

fn security() -> impl Strategy<Value = Security> {
    prop_oneof![
        Just(Security::Required),
        Just(Security::Preferred),
        Just(Security::Off)
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Event(Event),
    /// Time passes by this many milliseconds, then due timers fire.
    Wait(u64),
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::L16), Just(Codec::Pcmu)]
}

/// Offers: none (an original or older caller), or any subset, the empty one included.
fn offer() -> impl Strategy<Value = Option<CodecSet>> {
    prop::option::of((0u8..4).prop_map(|bits| {
        Codec::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, c)| c)
            .collect()
    }))
}

/// A phone's preference: one codec or both, in either order.
fn preference() -> impl Strategy<Value = Preference> {
    prop_oneof![
        Just(vec![Codec::L16, Codec::Pcmu]),
        Just(vec![Codec::Pcmu, Codec::L16]),
        Just(vec![Codec::L16]),
        Just(vec![Codec::Pcmu]),
    ]
    .prop_map(|list| Preference::new(&list).expect("valid preference"))
}

/// What the directory says of a phone's dialect: nothing (an original server), or one.
fn dialect() -> impl Strategy<Value = Option<Dialect>> {
    prop_oneof![
        Just(None),
        Just(Some(Dialect::Parlo)),
        Just(Some(Dialect::Original)),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let id = || (1u32..=4).prop_map(CallId);
    let call = || prop_oneof![Just(None), id().prop_map(Some)];
    prop_oneof![
        (0..3usize, call(), offer()).prop_map(|(i, call, codecs)| Message::Start {
            caller: name(i),
            call,
            version: call.map(|_| parlo_fsm::VERSION),
            codecs,
            conf: None,
        }),
        id().prop_map(|call| Message::Ringing { call }),
        (call(), prop::option::of(codec()))
            .prop_map(|(call, codec)| Message::Accept { call, codec }),
        call().prop_map(|call| Message::Reject { call }),
        call().prop_map(|call| Message::Busy { call }),
        call().prop_map(|call| Message::Close { call }),
        id().prop_map(|call| Message::Closed { call }),
        id().prop_map(|call| Message::Ack { call }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => (0..3usize).prop_map(|i| Input::Event(Event::Dial(name(i)))),
        1 => Just(Input::Event(Event::Accept)),
        1 => Just(Input::Event(Event::Reject)),
        1 => Just(Input::Event(Event::Hangup)),
        1 => (0..3usize, 0..3u8, dialect(), prop::option::of(key()), prop::option::of(key()))
            .prop_map(|(n, a, dialect, key, pinned)| Input::Event(Event::Resolved {
                name: name(n),
                addr: addr(a),
                dialect,
                key,
                pinned,
            })),
        1 => (0..3usize).prop_map(|n| Input::Event(Event::Unknown { name: name(n) })),
        1 => (0..3usize).prop_map(|n| Input::Event(Event::LookupFailed { name: name(n) })),
        4 => (0..3u8, message(), sender(), prop::option::of(key()))
            .prop_map(|(a, message, sender, pinned)| {
                // The shell looks a pin up for a START only.
                let pinned = pinned.filter(|_| matches!(message, Message::Start { .. }));
                Input::Event(Event::Peer { from: addr(a), message, sender, pinned })
            }),
        2 => (0..3u8, sender()).prop_map(|(a, sender)| Input::Event(Event::Media { from: addr(a), sender })),
        3 => prop_oneof![0..100u64, 0..3_000u64, 0..12_000u64].prop_map(Input::Wait),
    ]
}

/// Prefixes that bring a fresh machine into each state.
/// The calls they make are encrypted with bob's key (so that every policy lets them
/// through), except under `Off`, which looks at no key.
fn prefix(state: State, security: Security) -> Vec<Input> {
    let bob = PublicKey([1; 32]);
    let sender = match security {
        Security::Off => Sender::Plain,
        Security::Required | Security::Preferred => Sender::Key(bob),
    };
    let dial = || Input::Event(Event::Dial(name(1)));
    let resolved = || {
        Input::Event(Event::Resolved {
            name: name(1),
            addr: addr(0),
            dialect: None,
            key: Some(bob),
            pinned: Some(bob),
        })
    };
    let from_bob = |message: Message| {
        Input::Event(Event::Peer {
            from: addr(0),
            message,
            sender,
            pinned: None,
        })
    };
    let accept = || {
        from_bob(Message::Accept {
            call: Some(CallId(1)),
            codec: None,
        })
    };
    match state {
        State::Idle => vec![],
        State::Dialing => vec![dial(), resolved()],
        State::Ringing => vec![from_bob(Message::Start {
            caller: name(1),
            call: Some(CallId(4)),
            version: Some(parlo_fsm::VERSION),
            codecs: None,
            conf: None,
        })],
        State::InCall => vec![dial(), resolved(), accept()],
        State::Closing => vec![dial(), resolved(), accept(), Input::Event(Event::Hangup)],
    }
}

/// What the user and the media engine have seen, checked as the actions come.
#[derive(Debug, Default)]
struct Observer {
    media_on: bool,
    call_open: bool,
    started: usize,
    ended: usize,
    /// Bare STARTs (to an original callee) since the last call began.
    bare_starts: usize,
}

/// Whether `note` says a key is new (first contact).
fn says_new(note: &Note) -> bool {
    matches!(
        note,
        Note::Incoming { new: true, .. } | Note::Connected { new: true, .. }
    )
}

impl Observer {
    fn see(&mut self, actions: &[Action]) -> Result<(), String> {
        if actions.len() >= MAX_ACTIONS {
            return Err(format!("action list full: {actions:?}"));
        }
        // A key is pinned exactly when the user is told it is new, in the same step.
        let pins = actions
            .iter()
            .filter(|a| matches!(a, Action::Pin { .. }))
            .count();
        let news = actions
            .iter()
            .filter(|a| matches!(a, Action::Notify(n) if says_new(n)))
            .count();
        if pins != news || pins > 1 {
            return Err(format!("{pins} pins, {news} notes saying new: {actions:?}"));
        }
        for action in actions {
            match action {
                Action::StartMedia { .. } => {
                    if self.media_on {
                        return Err("media started twice".into());
                    }
                    self.media_on = true;
                }
                Action::StopMedia => self.media_on = false,
                Action::Notify(Note::Calling { .. } | Note::Incoming { .. }) => {
                    if self.call_open {
                        return Err("a second call began before the first ended".into());
                    }
                    self.call_open = true;
                    self.started += 1;
                    self.bare_starts = 0;
                }
                Action::Send {
                    message: Message::Start { call: None, .. },
                    ..
                } => {
                    // An original callee takes each START as a new call: at most two.
                    self.bare_starts += 1;
                    if self.bare_starts > 2 {
                        return Err("a third START to an original callee".into());
                    }
                }
                Action::Notify(Note::Connected { .. }) if !self.call_open => {
                    return Err("`connected` for a call never announced".into());
                }
                Action::Notify(Note::Ended {
                    reason: EndReason::KeyChanged | EndReason::Insecure,
                    ..
                }) if !self.call_open => {
                    // A START refused without ringing: it began no call. It must have
                    // been answered with a REJECT.
                    let rejected = actions.iter().any(|a| {
                        matches!(
                            a,
                            Action::Send {
                                message: Message::Reject { .. },
                                ..
                            }
                        )
                    });
                    if !rejected {
                        return Err(format!("a refused START without REJECT: {actions:?}"));
                    }
                }
                Action::Notify(Note::Ended { .. }) => {
                    if !self.call_open {
                        return Err("`ended` without a call in progress".into());
                    }
                    self.call_open = false;
                    self.ended += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn check_invariants<R: CallIds>(m: &Machine<R>, seen: &Observer) -> Result<(), String> {
    let state = m.state();
    if seen.media_on != (state == State::InCall) {
        return Err(format!("media on = {} in {state:?}", seen.media_on));
    }
    for timer in Timer::ALL {
        if m.deadline(timer).is_some() && !state.timers().contains(&timer) {
            return Err(format!("{timer:?} still armed in {state:?}"));
        }
    }
    if m.peer().is_some() != (state != State::Idle) {
        return Err(format!(
            "call context present = {} in {state:?}",
            m.peer().is_some()
        ));
    }
    Ok(())
}

struct Run {
    machine: Machine<FewIds>,
    now: u64,
    seen: Observer,
}

/// The codec rules, checked on every action: a START offers exactly this phone's
/// preference; an ACCEPT names the call's codec when it has a call id and nothing for an
/// original peer; media starts with the call's codec, L16 with an original peer, and on
/// the callee's side a codec of its own preference or the L16 baseline.
fn check_codecs<R: CallIds>(m: &Machine<R>, actions: &[Action]) -> Result<(), String> {
    let preference = &m.config().codecs;
    for action in actions {
        match action {
            Action::Send { message, .. } => match message {
                Message::Start {
                    call: Some(_),
                    codecs,
                    ..
                } if *codecs != Some(preference.set()) => {
                    return Err(format!("START offers {codecs:?}, not {preference}"));
                }
                Message::Accept { call, codec } => {
                    let want = call.and(m.codec());
                    if *codec != want {
                        return Err(format!("{message:?} names {codec:?}, expected {want:?}"));
                    }
                }
                _ => {}
            },
            Action::StartMedia { dialect, codec, .. } => {
                if Some(*codec) != m.codec() {
                    return Err(format!("media with {codec}, the call has {:?}", m.codec()));
                }
                if *dialect == Dialect::Original && *codec != Codec::L16 {
                    return Err(format!("original peer with {codec}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The security rules, checked on every event: in an encrypted call, a message other
/// than START, or media, that does not come out of a session with the call's key changes
/// nothing (a forgery from the peer's address included); every message sent to the
/// peer of an encrypted call, from the same call, is sealed for its key; and a BUSY or
/// REJECT answering a START goes back the way the START came.
fn check_security<R: CallIds>(
    before: (Option<PublicKey>, Option<SocketAddr>, State, Option<CallId>),
    m: &Machine<R>,
    event: &Event,
    actions: &[Action],
) -> Result<(), String> {
    let (key, peer, state, id) = before;
    let sender = match event {
        Event::Peer {
            sender, message, ..
        } if !matches!(message, Message::Start { .. }) => Some(*sender),
        Event::Media { sender, .. } => Some(*sender),
        _ => None,
    };
    if let (Some(k), Some(sender)) = (key, sender) {
        if sender != Sender::Key(k) && (!actions.is_empty() || m.state() != state) {
            return Err(format!(
                "{event:?} from {sender:?} moved an encrypted call with {k:?}: {actions:?}"
            ));
        }
    }
    for action in actions {
        if let Action::Send {
            to,
            message,
            key: sent_with,
        } = action
        {
            let answer_to_start =
                matches!(
                    event,
                    Event::Peer {
                        message: Message::Start { .. },
                        ..
                    }
                ) && matches!(message, Message::Busy { .. } | Message::Reject { .. });
            // The call the message is of: the one after the event (a new one, or the same),
            // else the one before (it ended).
            let of = |peer: Option<SocketAddr>, id: Option<CallId>| {
                Some(*to) == peer && message.call_id().is_some() && message.call_id() == id
            };
            let call_key = if of(m.peer_addr(), m.call_id()) {
                Some(m.peer_key())
            } else if of(peer, id) {
                Some(key)
            } else {
                None
            };
            if let (Some(call_key), false) = (call_key, answer_to_start) {
                if *sent_with != call_key {
                    return Err(format!(
                        "{message:?} of a call with {call_key:?} sent with {sent_with:?}"
                    ));
                }
            }
            if let Event::Peer { sender, .. } = event {
                if answer_to_start && *sent_with != sender.key() {
                    return Err(format!(
                        "{message:?} answers a START from {sender:?} with {sent_with:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Run {
    fn step(&mut self, input: &Input) -> Result<(), String> {
        match input {
            Input::Event(e) => {
                let m = &self.machine;
                let before = (m.peer_key(), m.peer_addr(), m.state(), m.call_id());
                let actions = self.machine.handle(Instant(self.now), e);
                self.seen.see(&actions)?;
                check_codecs(&self.machine, &actions)?;
                check_security(before, &self.machine, e, &actions)?;
                if let Event::Peer {
                    message:
                        Message::Start {
                            call: Some(_),
                            codecs,
                            ..
                        },
                    ..
                } = e
                {
                    // A callee's choice: its most preferred codec among those offered,
                    // checked when the START began a call (whose caller is looked up).
                    let began = actions
                        .iter()
                        .any(|a| matches!(a, Action::LookupCaller { .. }));
                    if began {
                        let chosen = self.machine.codec();
                        let offer = codecs.unwrap_or(CodecSet::only(Codec::L16));
                        let best = self
                            .machine
                            .config()
                            .codecs
                            .iter()
                            .find(|c| offer.contains(*c));
                        if chosen != Some(best.unwrap_or(Codec::L16)) {
                            return Err(format!("chose {chosen:?} for offer {offer}"));
                        }
                    }
                }
            }
            Input::Wait(ms) => {
                self.now += ms;
                let now = Instant(self.now);
                while self.machine.poll_timeout().is_some_and(|t| t <= now) {
                    let actions = self.machine.handle_timeout(now);
                    self.seen.see(&actions)?;
                    check_codecs(&self.machine, &actions)?;
                }
            }
        }
        check_invariants(&self.machine, &self.seen)
    }
}

/// The settings a run varies: codecs, auto-answer, the security policy, and whether
/// original phones are allowed.
type Settings = (Preference, bool, Security, bool);

fn settings() -> impl Strategy<Value = Settings> {
    (preference(), any::<bool>(), security(), any::<bool>())
}

fn run(
    start: State,
    (codecs, auto_answer, security, original_phones): Settings,
    inputs: Vec<Input>,
) -> Result<(), TestCaseError> {
    let mut config = Config::new(name(0));
    config.codecs = codecs;
    config.auto_answer = auto_answer;
    config.security = security;
    config.original_phones = original_phones;
    let mut run = Run {
        machine: Machine::new(config, FewIds(0), Instant(0)),
        now: 0,
        seen: Observer::default(),
    };
    for input in prefix(start, security) {
        run.step(&input).map_err(TestCaseError::fail)?;
    }
    prop_assert_eq!(
        run.machine.state(),
        start,
        "prefix did not reach {:?}",
        start
    );
    for (i, input) in inputs.iter().enumerate() {
        run.step(input)
            .map_err(|e| TestCaseError::fail(format!("after input {i} ({input:?}): {e}")))?;
    }
    // The events stop; only time passes. Every call must end, in Idle, told once.
    let mut fired = 0;
    while let Some(t) = run.machine.poll_timeout() {
        let wait = t.0.saturating_sub(run.now);
        run.step(&Input::Wait(wait)).map_err(TestCaseError::fail)?;
        fired += 1;
        prop_assert!(fired < 100, "timers keep firing without end");
    }
    prop_assert_eq!(
        run.machine.state(),
        State::Idle,
        "still {:?} with no timer left",
        run.machine.state()
    );
    prop_assert_eq!(run.seen.started, run.seen.ended, "calls begun vs ended");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_events_from_idle(
        settings in settings(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Idle, settings, inputs)?;
    }

    #[test]
    fn random_events_from_dialing(
        settings in settings(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Dialing, settings, inputs)?;
    }

    #[test]
    fn random_events_from_ringing(
        settings in settings(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Ringing, settings, inputs)?;
    }

    #[test]
    fn random_events_from_in_call(
        settings in settings(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::InCall, settings, inputs)?;
    }

    #[test]
    fn random_events_from_closing(
        settings in settings(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Closing, settings, inputs)?;
    }
}
