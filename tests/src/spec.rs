//! The spec replayer: runs a plain-text scenario from `specs/` against the call machine.
//!
//! A spec is written for people who do not read Rust:
//!
//! ```text
//! # Alice calls Bob.                      comments start with '#'
//! me alice                                this phone's name
//! ids 0000002a                            the call ids its random source will give
//! config answer-timeout=7000              optional overrides: timings (milliseconds),
//!                                         codecs=PCMU,L16 (the phone's preference) and
//!                                         auto-answer=yes
//!
//! at 0 dial bob                           an event, at a time in milliseconds
//!   state Dialing                         the state expected after it...
//!   lookup bob                            ...and every action, in order
//!   notify calling bob
//! ```
//!
//! Events: `dial NAME`, `accept`, `reject`, `hangup`, `resolved NAME ADDR` (the
//! directory does not say the phone's dialect) or `resolved NAME ADDR parlo|original`,
//! `unknown NAME`, `lookup-failed NAME`, `from ADDR: MESSAGE`, `media from ADDR`, and `tick` (fire every timer
//! due by then). Besides actions, the expectations may say `foreign N` (messages ignored
//! as belonging to another call so far) and `deadline T` or `deadline none` (the next
//! timer deadline). An event followed by `state` alone expects no action at all.
//!
//! Messages are written as on the wire (`RINGING call=0000002a`) and go through the
//! wire: a received message is parsed by `parlo-net`'s parser, the very one real
//! datagrams go through, and an expected `send MESSAGE to ADDR` is parsed the same way
//! and compared with what the machine asked to send. Other actions are compared as
//! text, in the notation of [`render`].

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;

use parlo_fsm::{
    Action, CallId, CallIds, Codec, Config, Dialect, Event, Instant, Machine, Message, Name,
    Preference, State,
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

/// An action in the notation of the specs: `lookup bob`, `lookup caller alice from
/// 127.0.0.1:5001`, `send RINGING call=0000002a to
/// 127.0.0.2:5001` (the message as `parlo-net` writes it), `arm retransmit at 505`,
/// `cancel retransmit`, `start media with 127.0.0.2:5001 (L16)`, `stop media`,
/// `notify ringing bob`.
pub fn render(action: &Action) -> String {
    match action {
        Action::Lookup(name) => format!("lookup {name}"),
        Action::LookupCaller { name, from } => format!("lookup caller {name} from {from}"),
        Action::Send { to, message } => format!("send {} to {to}", message.wire()),
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

/// An expected `send MESSAGE to ADDR`, read through the wire's parser.
pub(crate) fn expected_send(line: usize, text: &str) -> Result<Option<Action>, Failure> {
    let Some(rest) = text.strip_prefix("send ") else {
        return Ok(None);
    };
    let Some((wire, to)) = rest.rsplit_once(" to ") else {
        return fail(line, "expected `send MESSAGE to ADDR`");
    };
    Ok(Some(Action::Send {
        to: addr(line, to)?,
        message: message(line, wire)?,
    }))
}

/// `None` means `tick`.
pub(crate) fn event(line: usize, text: &str) -> Result<Option<Event>, Failure> {
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    Ok(Some(match (verb, args.as_slice()) {
        ("tick", []) => return Ok(None),
        ("dial", [n]) => Event::Dial(name(line, n)?),
        ("accept", []) => Event::Accept,
        ("reject", []) => Event::Reject,
        ("hangup", []) => Event::Hangup,
        ("resolved", [n, a]) => Event::Resolved {
            name: name(line, n)?,
            addr: addr(line, a)?,
            dialect: None,
        },
        ("resolved", [n, a, d]) => Event::Resolved {
            name: name(line, n)?,
            addr: addr(line, a)?,
            dialect: Some(dialect(line, d)?),
        },
        ("unknown", [n]) => Event::Unknown {
            name: name(line, n)?,
        },
        ("lookup-failed", [n]) => Event::LookupFailed {
            name: name(line, n)?,
        },
        ("media", ["from", a]) => Event::Media {
            from: addr(line, a)?,
        },
        ("from", _) => {
            let Some((a, m)) = rest.split_once(": ") else {
                return fail(line, "expected `from ADDR: MESSAGE`");
            };
            Event::Peer {
                from: addr(line, a.trim())?,
                message: message(line, m)?,
            }
        }
        _ => return fail(line, format!("unknown event: {text}")),
    }))
}

fn config(line: usize, me: &Name, settings: &str) -> Result<Config, Failure> {
    let mut config = Config::new(me.clone());
    for setting in settings.split_whitespace() {
        let Some((key, value)) = setting.split_once('=') else {
            return fail(line, format!("expected key=value, got {setting}"));
        };
        if key == "auto-answer" {
            config.auto_answer = match value {
                "yes" => true,
                "no" => false,
                _ => return fail(line, "auto-answer is yes or no"),
            };
            continue;
        }
        if key == "codecs" {
            config.codecs = Preference::new(&codecs(line, value)?).map_or_else(
                || fail(line, "codecs= needs at least one codec, none twice"),
                Ok,
            )?;
            continue;
        }
        let value: u64 = value
            .parse()
            .or_else(|_| fail(line, format!("not a number: {value}")))?;
        match key {
            "answer-timeout" => config.answer_timeout = value,
            "ring-grace" => config.ring_grace = value,
            "retransmit-initial" => config.retransmit_initial = value,
            "retransmit-cap" => config.retransmit_cap = value,
            "retransmit-attempts" => {
                config.retransmit_attempts = u8::try_from(value)
                    .or_else(|_| fail(line, "retransmit-attempts is at most 255"))?;
            }
            "linger" => config.linger = value,
            "peer-silence" => config.peer_silence = value,
            "original-start-pause" => config.original_start_pause = value,
            "ended-peer-memory" => config.ended_peer_memory = value,
            "ended-close-interval" => config.ended_close_interval = value,
            "verify-wait" => config.verify_wait = value,
            other => return fail(line, format!("unknown setting: {other}")),
        }
    }
    Ok(config)
}

struct Step {
    line: usize,
    text: String,
    at: u64,
    event: Option<Event>,
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
    let mut settings = (0, String::new());
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
            "config" => settings = (line, rest.to_string()),
            "at" => {
                let (t, ev) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                let at = t
                    .parse()
                    .or_else(|_| fail(line, format!("not a time in milliseconds: {t}")))?;
                if steps.last().is_some_and(|s| s.at > at) {
                    return fail(line, "times must not go backwards in a spec");
                }
                steps.push(Step {
                    line,
                    text: trimmed.to_string(),
                    at,
                    event: event(line, ev.trim())?,
                    expect: Vec::new(),
                });
            }
            _ => return fail(line, format!("unknown directive: {word}")),
        }
    }
    let me = me.map_or_else(|| fail(1, "the spec does not say `me NAME`"), Ok)?;
    let config = config(settings.0, &me, &settings.1)?;
    let mut machine = Machine::new(config, ids, Instant(0));

    let mut reached = BTreeSet::new();
    for step in &steps {
        let now = Instant(step.at);
        let mut actions: Vec<Action> = Vec::new();
        match &step.event {
            Some(ev) => {
                actions.extend(machine.handle(now, ev));
                reached.extend(machine.last_entry());
            }
            None => {
                while machine.poll_timeout().is_some_and(|t| t <= now) {
                    actions.extend(machine.handle_timeout(now));
                    reached.extend(machine.last_entry());
                }
            }
        }
        check(step, &machine, &actions)?;
    }
    Ok(Replay {
        events: steps.len(),
        reached,
    })
}

fn check<R: CallIds>(step: &Step, machine: &Machine<R>, actions: &[Action]) -> Result<(), Failure> {
    let listing = || {
        let mut s = format!(
            "\n  after `{}` the machine is in {:?} and did:",
            step.text,
            machine.state()
        );
        for a in actions {
            let _ = write!(s, "\n    {}", render(a));
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
        let send = expected_send(*line, want)?;
        match done.next() {
            Some(got)
                if send
                    .as_ref()
                    .map_or(render(got) == *want, |send| send == got) => {}
            Some(got) => {
                return fail(
                    *line,
                    format!("expected `{want}`, got `{}`{}", render(got), listing()),
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
                render(extra),
                listing()
            ),
        );
    }
    Ok(())
}
