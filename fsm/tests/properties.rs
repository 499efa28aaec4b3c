//! Property tests: random sequences of events, from every state, never panic and keep
//! the machine's invariants.

use std::net::SocketAddr;

use parlo_fsm::{
    Action, CallId, CallIds, Codec, CodecSet, Config, Dialect, Event, Instant, MAX_ACTIONS,
    Machine, Message, Name, Note, Preference, State, Timer,
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
            codecs
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
        1 => (0..3usize, 0..3u8, dialect()).prop_map(|(n, a, dialect)| Input::Event(Event::Resolved {
            name: name(n),
            addr: addr(a),
            dialect,
        })),
        1 => (0..3usize).prop_map(|n| Input::Event(Event::Unknown { name: name(n) })),
        1 => (0..3usize).prop_map(|n| Input::Event(Event::LookupFailed { name: name(n) })),
        4 => (0..3u8, message()).prop_map(|(a, message)| Input::Event(Event::Peer {
            from: addr(a),
            message
        })),
        2 => (0..3u8).prop_map(|a| Input::Event(Event::Media { from: addr(a) })),
        3 => prop_oneof![0..100u64, 0..3_000u64, 0..12_000u64].prop_map(Input::Wait),
    ]
}

/// Prefixes that bring a fresh machine into each state.
fn prefix(state: State) -> Vec<Input> {
    let dial = || Input::Event(Event::Dial(name(1)));
    let resolved = || {
        Input::Event(Event::Resolved {
            name: name(1),
            addr: addr(0),
            dialect: None,
        })
    };
    let from_bob = |message: Message| {
        Input::Event(Event::Peer {
            from: addr(0),
            message,
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

impl Observer {
    fn see(&mut self, actions: &[Action]) -> Result<(), String> {
        if actions.len() >= MAX_ACTIONS {
            return Err(format!("action list full: {actions:?}"));
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

impl Run {
    fn step(&mut self, input: &Input) -> Result<(), String> {
        match input {
            Input::Event(e) => {
                let actions = self.machine.handle(Instant(self.now), e);
                self.seen.see(&actions)?;
                check_codecs(&self.machine, &actions)?;
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

fn run(
    start: State,
    codecs: Preference,
    auto_answer: bool,
    inputs: Vec<Input>,
) -> Result<(), TestCaseError> {
    let mut config = Config::new(name(0));
    config.codecs = codecs;
    config.auto_answer = auto_answer;
    let mut run = Run {
        machine: Machine::new(config, FewIds(0), Instant(0)),
        now: 0,
        seen: Observer::default(),
    };
    for input in prefix(start) {
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
        codecs in preference(),
        auto_answer in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Idle, codecs, auto_answer, inputs)?;
    }

    #[test]
    fn random_events_from_dialing(
        codecs in preference(),
        auto_answer in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Dialing, codecs, auto_answer, inputs)?;
    }

    #[test]
    fn random_events_from_ringing(
        codecs in preference(),
        auto_answer in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Ringing, codecs, auto_answer, inputs)?;
    }

    #[test]
    fn random_events_from_in_call(
        codecs in preference(),
        auto_answer in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::InCall, codecs, auto_answer, inputs)?;
    }

    #[test]
    fn random_events_from_closing(
        codecs in preference(),
        auto_answer in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..300),
    ) {
        run(State::Closing, codecs, auto_answer, inputs)?;
    }
}
