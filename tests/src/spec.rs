//! The spec replayer: runs a plain-text scenario from `specs/` against the call machine.
//!
//! A spec is written for people who do not read Rust:
//!
//! ```text
//! # Alice calls Bob.                      comments start with '#'
//! me alice                                this phone's name
//! ids 0000002a                            the call ids its random source will give
//! config answer-timeout=7000              optional overrides: timings (milliseconds),
//!                                         codecs=PCMU,L16 (the phone's preference),
//!                                         auto-answer=yes, security=required|preferred|off,
//!                                         original-phones=yes|no, answer-from=bob,carol,
//!                                         conference=ID (16 hex digits: a leg's machine)
//! config security preferred               (one setting may also be written `NAME VALUE`;
//!                                         `config` lines add up)
//! key bob 2                               a test key, named: bob's is [2; 32]
//! pin bob bob                             this phone's known peers: bob is pinned to
//!                                         the key named bob
//!
//! at 0 dial bob                           an event, at a time in milliseconds
//!   state Dialing                         the state expected after it...
//!   lookup bob                            ...and every action, in order
//!   notify calling bob
//!
//! at 5 resolved bob 127.0.0.2:5001 key bob
//!   state Dialing
//!   send START alice call=0000002a v=2 codecs=L16,PCMU to 127.0.0.2:5001 key bob
//!   arm retransmit at 505
//!
//! at 20 from 127.0.0.2:5001 key bob: RINGING call=0000002a
//!   state Dialing
//!   cancel retransmit
//!   notify ringing bob
//! ```
//!
//! Events: `dial NAME`, `accept`, `reject`, `hangup`, `resolved NAME ADDR` (the
//! directory does not say the phone's dialect, and binds no key to the name), with
//! optionally `parlo` or `original` (the dialect it says) and `key KEY` (the key it
//! binds to the name) after the address; `unknown NAME`, `lookup-failed NAME`, `from
//! ADDR: MESSAGE` (in the clear) or `from ADDR key KEY: MESSAGE` (out of a secure session
//! with KEY), `media from ADDR` or `media from ADDR key KEY`, and `tick` (fire every
//! timer due by then).
//!
//! Keys are written by the names `key` lines give them (or as 44 characters of base64).
//! The phone's pins are the `pin NAME KEY` lines, plus every `pin NAME KEY` the machine
//! asks for as the spec runs (the shell records them): a START and a `resolved` event
//! carry the pin for their name, unless the event line says otherwise with `pinned KEY`
//! or `pinned none` (before the `:` of a `from` line, after the address of `resolved`).
//!
//! Besides actions, the expectations may say `foreign N` (messages ignored as belonging
//! to another call so far) and `deadline T` or `deadline none` (the next timer
//! deadline). An event followed by `state` alone expects no action at all.
//!
//! Messages are written as on the wire (`RINGING call=0000002a`) and go through the
//! wire: a received message is parsed by `parlo-net`'s parser, the very one real
//! datagrams go through, and an expected `send MESSAGE to ADDR` (sent in the clear) or
//! `send MESSAGE to ADDR key KEY` (sealed for KEY) is parsed the same way and compared
//! with what the machine asked to send. Other actions are compared as text, in the
//! notation of [`render_with`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;

use parlo_fsm::conference::ConfId;
use parlo_fsm::{
    Action, CallId, CallIds, Codec, Config, Dialect, Event, Instant, Machine, Message, Name,
    Preference, PublicKey, Security, Sender, State,
};
use parlo_net::peer::Wire;

/// Call ids listed by the spec, handed out in order.
#[derive(Debug, Default)]
pub struct ScriptedIds(VecDeque<CallId>);

impl ScriptedIds {
    /// Adds an id to hand out after the others.
    pub fn push(&mut self, id: CallId) {
        self.0.push_back(id);
    }
}

impl CallIds for ScriptedIds {
    fn next_call_id(&mut self) -> CallId {
        // A spec that dials more often than it lists ids gets a recognisable filler.
        self.0.pop_front().unwrap_or(CallId(0xdead_beef))
    }
}

/// The keys a spec names (`key NAME BYTE`), to write keys readably.
#[derive(Debug, Default, Clone)]
pub struct Keys(BTreeMap<String, PublicKey>);

impl Keys {
    /// Names `key`.
    pub fn insert(&mut self, name: &str, key: PublicKey) {
        self.0.insert(name.to_string(), key);
    }

    /// The key a spec writes: a name given by a `key` line, or base64.
    pub fn parse(&self, line: usize, text: &str) -> Result<PublicKey, Failure> {
        match self.0.get(text) {
            Some(key) => Ok(*key),
            None => PublicKey::parse(text).or_else(|_| {
                fail(
                    line,
                    format!("no key is named {text} (name one with `key {text} BYTE`)"),
                )
            }),
        }
    }

    /// How a spec writes `key`: by its name, or in base64 when it has none.
    pub fn show(&self, key: &PublicKey) -> String {
        self.0
            .iter()
            .find(|(_, k)| *k == key)
            .map_or_else(|| key.to_string(), |(name, _)| name.clone())
    }
}

/// A replay failure: where in which file, and what differed.
#[derive(Debug)]
pub struct Failure {
    /// 1-based line number in the spec.
    pub line: usize,
    /// What was expected and what happened.
    pub message: String,
}

pub(crate) fn fail<T>(line: usize, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        line,
        message: message.into(),
    })
}

pub(crate) fn name(line: usize, text: &str) -> Result<Name, Failure> {
    Name::new(text).or_else(|e| fail(line, format!("{text:?}: {e}")))
}

fn addr(line: usize, text: &str) -> Result<SocketAddr, Failure> {
    text.parse()
        .or_else(|_| fail(line, format!("not an address: {text}")))
}

fn codec(line: usize, text: &str) -> Result<Codec, Failure> {
    Codec::from_name(text).map_or_else(|| fail(line, format!("no such codec: {text}")), Ok)
}

/// A comma-separated codec list (empty allowed: an offer of nothing known).
fn codecs(line: usize, text: &str) -> Result<Vec<Codec>, Failure> {
    text.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| codec(line, c))
        .collect()
}

fn dialect(line: usize, text: &str) -> Result<Dialect, Failure> {
    [Dialect::Parlo, Dialect::Original]
        .into_iter()
        .find(|d| d.name() == text)
        .map_or_else(|| fail(line, format!("no such dialect: {text}")), Ok)
}

pub(crate) fn state(line: usize, text: &str) -> Result<State, Failure> {
    State::ALL
        .into_iter()
        .find(|s| format!("{s:?}") == text)
        .map_or_else(|| fail(line, format!("no such state: {text}")), Ok)
}

/// Parses a peer message written as on the wire, with the wire's parser.
fn message(line: usize, text: &str) -> Result<Message, Failure> {
    Message::parse(text.as_bytes()).or_else(|e| fail(line, format!("`{text}`: {e}")))
}

/// An action in the notation of the specs, keys in base64 (see [`render_with`]).
pub fn render(action: &Action) -> String {
    render_with(action, &Keys::default())
}

/// An action in the notation of the specs: `lookup bob`, `lookup caller alice from
/// 127.0.0.1:5001`, `send RINGING call=0000002a to 127.0.0.2:5001` (the message as
/// `parlo-net` writes it; `... key bob` when sealed for the key named bob), `pin bob
/// bob`, `arm retransmit at 505`, `cancel retransmit`, `start media with 127.0.0.2:5001
/// (L16)`, `stop media`, `notify ringing bob`.
pub fn render_with(action: &Action, keys: &Keys) -> String {
    match action {
        Action::Lookup(name) => format!("lookup {name}"),
        Action::LookupCaller { name, from } => format!("lookup caller {name} from {from}"),
        Action::Send { to, message, key } => match key {
            None => format!("send {} to {to}", message.wire()),
            Some(key) => format!("send {} to {to} key {}", message.wire(), keys.show(key)),
        },
        Action::Pin { name, key } => format!("pin {name} {}", keys.show(key)),
        Action::ArmTimer { timer, at } => format!("arm {} at {at}", timer.name()),
        Action::CancelTimer(timer) => format!("cancel {}", timer.name()),
        Action::StartMedia {
            peer,
            dialect,
            codec,
        } => match dialect {
            Dialect::Original => format!("start media with {peer} (original)"),
            Dialect::Parlo => format!("start media with {peer} ({codec})"),
        },
        Action::StopMedia => "stop media".to_string(),
        Action::Notify(note) => format!("notify {note}"),
    }
}

/// An expected `send MESSAGE to ADDR`, read through the wire's parser (keys in base64).
pub(crate) fn expected_send(line: usize, text: &str) -> Result<Option<Action>, Failure> {
    expected_send_with(line, text, &Keys::default())
}

/// An expected `send MESSAGE to ADDR [key KEY]`, read through the wire's parser.
pub(crate) fn expected_send_with(
    line: usize,
    text: &str,
    keys: &Keys,
) -> Result<Option<Action>, Failure> {
    let Some(rest) = text.strip_prefix("send ") else {
        return Ok(None);
    };
    let Some((wire, to)) = rest.rsplit_once(" to ") else {
        return fail(
            line,
            "expected `send MESSAGE to ADDR` or `... to ADDR key KEY`",
        );
    };
    let (to, key) = match to.split_once(" key ") {
        Some((to, key)) => (to, Some(keys.parse(line, key.trim())?)),
        None => (to, None),
    };
    Ok(Some(Action::Send {
        to: addr(line, to)?,
        message: message(line, wire)?,
        key,
    }))
}

/// An event as a spec line writes it: the event, and whether the line says the pin
/// itself (`pinned KEY` or `pinned none`), which the phone's pins otherwise give.
pub(crate) struct Written {
    /// The event; `None` means `tick`.
    pub event: Option<Event>,
    /// Whether the line says the pin.
    pub pinned: bool,
}

/// Reads `key KEY` and `pinned KEY|none` options, in any order: the sender and the pin.
fn options(
    line: usize,
    words: &[&str],
    keys: &Keys,
) -> Result<(Option<PublicKey>, Option<Option<PublicKey>>), Failure> {
    let (mut key, mut pinned) = (None, None);
    for pair in words.chunks(2) {
        match pair {
            ["key", k] => key = Some(keys.parse(line, k)?),
            ["pinned", "none"] => pinned = Some(None),
            ["pinned", k] => pinned = Some(Some(keys.parse(line, k)?)),
            _ => {
                return fail(
                    line,
                    format!(
                        "expected `key KEY` or `pinned KEY|none`, got `{}`",
                        pair.join(" ")
                    ),
                );
            }
        }
    }
    Ok((key, pinned))
}

/// `None` means `tick`. Keys in base64; pins as the line says them.
pub(crate) fn event(line: usize, text: &str) -> Result<Option<Event>, Failure> {
    Ok(event_with(line, text, &Keys::default())?.event)
}

/// Reads an event line, keys named by `keys`.
pub(crate) fn event_with(line: usize, text: &str, keys: &Keys) -> Result<Written, Failure> {
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    let mut pinned_said = false;
    let event = match (verb, args.as_slice()) {
        ("tick", []) => None,
        ("dial", [n]) => Some(Event::Dial(name(line, n)?)),
        ("accept", []) => Some(Event::Accept),
        ("reject", []) => Some(Event::Reject),
        ("hangup", []) => Some(Event::Hangup),
        ("resolved", [n, a, more @ ..]) => {
            let (dialect, more) = match more {
                [d, more @ ..] if *d != "key" && *d != "pinned" => (Some(dialect(line, d)?), more),
                more => (None, more),
            };
            let (key, pinned) = options(line, more, keys)?;
            pinned_said = pinned.is_some();
            Some(Event::Resolved {
                name: name(line, n)?,
                addr: addr(line, a)?,
                dialect,
                key,
                pinned: pinned.flatten(),
            })
        }
        ("unknown", [n]) => Some(Event::Unknown {
            name: name(line, n)?,
        }),
        ("lookup-failed", [n]) => Some(Event::LookupFailed {
            name: name(line, n)?,
        }),
        ("media", ["from", a, more @ ..]) => {
            let (key, pinned) = options(line, more, keys)?;
            if pinned.is_some() {
                return fail(line, "media has no pin");
            }
            Some(Event::Media {
                from: addr(line, a)?,
                sender: Sender::of(key),
            })
        }
        ("from", _) => {
            let Some((a, m)) = rest.split_once(": ") else {
                return fail(
                    line,
                    "expected `from ADDR: MESSAGE` or `from ADDR key KEY: MESSAGE`",
                );
            };
            let mut words = a.split_whitespace();
            let from = addr(line, words.next().unwrap_or(""))?;
            let (key, pinned) = options(line, &words.collect::<Vec<_>>(), keys)?;
            pinned_said = pinned.is_some();
            Some(Event::Peer {
                from,
                message: message(line, m)?,
                sender: Sender::of(key),
                pinned: pinned.flatten(),
            })
        }
        _ => return fail(line, format!("unknown event: {text}")),
    };
    Ok(Written {
        event,
        pinned: pinned_said,
    })
}

/// The event as the shell gives it: a START, or the directory's answer about a name,
/// carries the phone's pin for the name (unless the spec line said the pin).
fn with_pin(event: &Event, said: bool, pins: &BTreeMap<Name, PublicKey>) -> Event {
    let mut event = event.clone();
    if !said {
        match &mut event {
            Event::Peer {
                message: Message::Start { caller, .. },
                pinned,
                ..
            } => *pinned = pins.get(caller).copied(),
            Event::Resolved { name, pinned, .. } => *pinned = pins.get(name).copied(),
            _ => {}
        }
    }
    event
}

fn yes_no(line: usize, key: &str, value: &str) -> Result<bool, Failure> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => fail(line, format!("{key} is yes or no")),
    }
}

/// Applies the settings of `config` lines, each `NAME=VALUE ...` or `NAME VALUE`.
fn config(me: &Name, lines: &[(usize, String)]) -> Result<Config, Failure> {
    let mut config = Config::new(me.clone());
    for (line, settings) in lines {
        let line = *line;
        let words: Vec<&str> = settings.split_whitespace().collect();
        let pairs: Vec<(&str, &str)> = match words.as_slice() {
            [key, value] if !key.contains('=') => vec![(*key, *value)],
            _ => words
                .iter()
                .map(|w| {
                    w.split_once('=')
                        .map_or_else(|| fail(line, format!("expected NAME=VALUE, got {w}")), Ok)
                })
                .collect::<Result<_, _>>()?,
        };
        for (key, value) in pairs {
            setting(line, &mut config, key, value)?;
        }
    }
    Ok(config)
}

/// Applies one setting.
fn setting(line: usize, config: &mut Config, key: &str, value: &str) -> Result<(), Failure> {
    match key {
        "auto-answer" => config.auto_answer = yes_no(line, key, value)?,
        "original-phones" => config.original_phones = yes_no(line, key, value)?,
        "conference" => {
            config.conference = Some(
                ConfId::parse(value)
                    .map_or_else(|| fail(line, "conference is 16 hexadecimal digits"), Ok)?,
            );
        }
        "security" => {
            config.security = Security::from_name(value)
                .map_or_else(|| fail(line, "security is required, preferred or off"), Ok)?;
        }
        "answer-from" => {
            config.answer_from.clear();
            for n in value.split(',') {
                if config.answer_from.push(name(line, n)?).is_err() {
                    return fail(line, "too many names in answer-from");
                }
            }
        }
        "codecs" => {
            config.codecs = Preference::new(&codecs(line, value)?).map_or_else(
                || fail(line, "codecs= needs at least one codec, none twice"),
                Ok,
            )?;
        }
        _ => {
            let ms: u64 = value
                .parse()
                .or_else(|_| fail(line, format!("not a number: {value}")))?;
            match key {
                "answer-timeout" => config.answer_timeout = ms,
                "ring-grace" => config.ring_grace = ms,
                "retransmit-initial" => config.retransmit_initial = ms,
                "retransmit-cap" => config.retransmit_cap = ms,
                "retransmit-attempts" => {
                    config.retransmit_attempts = u8::try_from(ms)
                        .or_else(|_| fail(line, "retransmit-attempts is at most 255"))?;
                }
                "linger" => config.linger = ms,
                "peer-silence" => config.peer_silence = ms,
                "original-start-pause" => config.original_start_pause = ms,
                "ended-peer-memory" => config.ended_peer_memory = ms,
                "ended-close-interval" => config.ended_close_interval = ms,
                "verify-wait" => config.verify_wait = ms,
                other => return fail(line, format!("unknown setting: {other}")),
            }
        }
    }
    Ok(())
}

struct Step {
    line: usize,
    text: String,
    at: u64,
    event: Option<Event>,
    /// Whether the line says the pin itself.
    pinned: bool,
    expect: Vec<(usize, String)>,
}

/// What a replay went through.
#[derive(Debug, Default)]
pub struct Replay {
    /// The number of events replayed (`tick` included).
    pub events: usize,
    /// The indices in [`parlo_fsm::TABLE`] of the entries the events applied.
    pub reached: BTreeSet<usize>,
}

/// Replays the spec `text` against the machine.
pub fn replay(text: &str) -> Result<Replay, Failure> {
    let mut me = None;
    let mut ids = ScriptedIds::default();
    let mut settings = Vec::new();
    let mut keys = Keys::default();
    let mut pins = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            let Some(step) = steps.last_mut() else {
                return fail(line, "an expectation before any event");
            };
            step.expect.push((line, trimmed.to_string()));
            continue;
        }
        let (word, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        match word {
            "me" => me = Some(name(line, rest.trim())?),
            "ids" => {
                for hex in rest.split_whitespace() {
                    let id = u32::from_str_radix(hex, 16)
                        .or_else(|_| fail(line, format!("bad call id: {hex}")))?;
                    ids.0.push_back(CallId(id));
                }
            }
            "config" => settings.push((line, rest.to_string())),
            "key" => {
                let Some((n, byte)) = rest.trim().split_once(' ') else {
                    return fail(line, "expected `key NAME BYTE`");
                };
                let byte: u8 = byte
                    .trim()
                    .parse()
                    .or_else(|_| fail(line, format!("not a byte (0 to 255): {byte}")))?;
                keys.insert(n, PublicKey([byte; PublicKey::LEN]));
            }
            "pin" => {
                let Some((n, k)) = rest.trim().split_once(' ') else {
                    return fail(line, "expected `pin NAME KEY`");
                };
                pins.push((line, name(line, n)?, k.trim().to_string()));
            }
            "at" => {
                let (t, ev) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                let at = t
                    .parse()
                    .or_else(|_| fail(line, format!("not a time in milliseconds: {t}")))?;
                if steps.last().is_some_and(|s| s.at > at) {
                    return fail(line, "times must not go backwards in a spec");
                }
                let written = event_with(line, ev.trim(), &keys)?;
                steps.push(Step {
                    line,
                    text: trimmed.to_string(),
                    at,
                    event: written.event,
                    pinned: written.pinned,
                    expect: Vec::new(),
                });
            }
            _ => return fail(line, format!("unknown directive: {word}")),
        }
    }
    let me = me.map_or_else(|| fail(1, "the spec does not say `me NAME`"), Ok)?;
    let config = config(&me, &settings)?;
    let mut machine = Machine::new(config, ids, Instant(0));
    // The phone's known peers: as the spec gives them, then as the machine pins.
    let mut known = BTreeMap::new();
    for (line, n, k) in pins {
        known.insert(n, keys.parse(line, &k)?);
    }

    let mut reached = BTreeSet::new();
    for step in &steps {
        let now = Instant(step.at);
        let mut actions: Vec<Action> = Vec::new();
        match &step.event {
            Some(ev) => {
                actions.extend(machine.handle(now, &with_pin(ev, step.pinned, &known)));
                reached.extend(machine.last_entry());
            }
            None => {
                while machine.poll_timeout().is_some_and(|t| t <= now) {
                    actions.extend(machine.handle_timeout(now));
                    reached.extend(machine.last_entry());
                }
            }
        }
        check(step, &machine, &actions, &keys)?;
        for action in &actions {
            if let Action::Pin { name, key } = action {
                known.insert(name.clone(), *key);
            }
        }
    }
    Ok(Replay {
        events: steps.len(),
        reached,
    })
}

fn check<R: CallIds>(
    step: &Step,
    machine: &Machine<R>,
    actions: &[Action],
    keys: &Keys,
) -> Result<(), Failure> {
    let listing = || {
        let mut s = format!(
            "\n  after `{}` the machine is in {:?} and did:",
            step.text,
            machine.state()
        );
        for a in actions {
            let _ = write!(s, "\n    {}", render_with(a, keys));
        }
        if actions.is_empty() {
            s.push_str(" nothing");
        }
        s
    };
    let mut expect = step.expect.iter().peekable();
    let Some((line, first)) = expect.next() else {
        return fail(step.line, "an event needs at least `state STATE` after it");
    };
    let Some(want) = first.strip_prefix("state ") else {
        return fail(
            *line,
            "the first expectation after an event is `state STATE`",
        );
    };
    let want = state(*line, want)?;
    if machine.state() != want {
        return fail(
            *line,
            format!(
                "expected state {want:?}, got {:?}{}",
                machine.state(),
                listing()
            ),
        );
    }
    let mut done = actions.iter();
    let mut last_line = *line;
    for (line, want) in expect {
        last_line = *line;
        if let Some(n) = want.strip_prefix("foreign ") {
            let got = machine.counters().foreign;
            if n.parse() != Ok(got) {
                return fail(*line, format!("expected foreign {n}, counted {got}"));
            }
            continue;
        }
        if let Some(t) = want.strip_prefix("deadline ") {
            let got = machine
                .poll_timeout()
                .map_or_else(|| "none".to_string(), |i| i.to_string());
            if t != got {
                return fail(
                    *line,
                    format!("expected deadline {t}, next deadline is {got}"),
                );
            }
            continue;
        }
        let send = expected_send_with(*line, want, keys)?;
        match done.next() {
            Some(got)
                if send
                    .as_ref()
                    .map_or(render_with(got, keys) == *want, |send| send == got) => {}
            Some(got) => {
                return fail(
                    *line,
                    format!(
                        "expected `{want}`, got `{}`{}",
                        render_with(got, keys),
                        listing()
                    ),
                );
            }
            None => {
                return fail(
                    *line,
                    format!("expected `{want}`, but nothing more happened{}", listing()),
                );
            }
        }
    }
    if let Some(extra) = done.next() {
        return fail(
            last_line,
            format!(
                "unexpected action `{}` after this line{}",
                render_with(extra, keys),
                listing()
            ),
        );
    }
    Ok(())
}
