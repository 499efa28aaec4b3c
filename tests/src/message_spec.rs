//! The message spec replayer: runs a plain-text scenario from `specs/messages/` against
//! a phone's message machine — and, when the spec says `call`, its call machine beside
//! it, the events routed by kind as the phone's shell routes them.
//!
//! ```text
//! # Alice sends Bob a message.            comments start with '#'
//! me alice                                this phone's name
//! run 00000001                            the run number of its message ids
//! config messages-from=bob                optional: messages-from=NAME,..., and timings
//!                                         (retransmit-initial, tries, route-wait,
//!                                         rate-burst, rate-per-second)
//! call                                    optional: a call machine too (`ids` as in
//! ids 0000002a                            specs/*.spec), for the call events; it makes
//!                                         and takes plaintext calls (`security preferred`)
//!
//! at 0 msg bob hello there                an event, at a time in milliseconds
//!   notify sending 0000000100000001 to bob    every action, in order
//!   connect bob
//!   held 1                                messages held (waiting or sent)
//!   deadline 10000                        the messenger's next deadline (or `none`)
//! ```
//!
//! Message events: `msg NAME TEXT` (the `msg` command), `route NAME` (a secure session
//! with NAME is up), `no-route NAME REASON`, `from NAME VERIFICATION: LINE` (a line over
//! the session with NAME, verified `key`, `new`, `unbound` or `key-changed`), and `tick`
//! (fire every timer due by then, of both machines). Lines are written in their wire form
//! and read by the phone's codec (`parlo_net::message`): `MSG <id> <text>`, `ACK <id>`,
//! `NAK <id> <reason>`. A text written `C*N` is the character C N times (`x*1001`, an
//! over-long text). With
//! `call`, the call events of `specs/*.spec` (`dial`, `from ADDR: START …`, …) go to
//! the call machine, and `state STATE` checks its state.
//!
//! Each event is followed by what it does: every action of either machine, in order
//! (`nothing` when it does none), and the checks above.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

use parlo_fsm::messages::{self, Action, Event, Line, Messenger, Policy, Reason, Verification};
use parlo_fsm::{CallId, Config, Instant, Machine, Name, Security};
use parlo_net::message::{self, SessionLine};

use crate::spec::{self, Failure, ScriptedIds, expected_send, fail, name};

/// An action of the messenger in the notation of the specs: `connect bob`, `send MSG
/// 0000000100000001 hello to bob`, `notify delivered 0000000100000001`.
pub fn render(action: &Action) -> String {
    match action {
        Action::Connect(to) => format!("connect {to}"),
        Action::Send { to, line } => format!("send {line} to {to}"),
        Action::Notify(note) => format!("notify {note}"),
    }
}

/// A text as specs write it: as is, or `C*N` for C repeated N times.
fn text(text: &str) -> String {
    let mut chars = text.chars();
    if let (Some(c), Some('*')) = (chars.next(), chars.next()) {
        if let Ok(n) = chars.as_str().parse::<usize>() {
            return c.to_string().repeat(n);
        }
    }
    text.to_string()
}

fn reason(line: usize, text: &str) -> Result<Reason, Failure> {
    Reason::from_name(text).map_or_else(|| fail(line, format!("no such reason: {text}")), Ok)
}

fn verification(line: usize, text: &str) -> Result<Verification, Failure> {
    Verification::ALL
        .into_iter()
        .find(|v| v.name() == text)
        .map_or_else(|| fail(line, format!("no such verification: {text}")), Ok)
}

/// A message line as the spec writes it: the wire form, read by the phone's codec
/// (`parlo_net::message`), except that a `MSG`'s text may be written `C*N`.
fn message_line(line: usize, written: &str) -> Result<Line, Failure> {
    let wire = match written
        .strip_prefix("MSG ")
        .and_then(|rest| rest.split_once(' '))
    {
        Some((id, body)) => format!("MSG {id} {}", text(body)),
        None => written.to_string(),
    };
    match message::parse(wire.as_bytes()) {
        Ok(SessionLine::Message(read)) => Ok(read),
        Ok(_) => fail(line, format!("not a message line: {written}")),
        Err(error) => fail(line, format!("not a message line: {written}: {error}")),
    }
}

/// An event of either machine; `Tick` fires the timers.
enum Input {
    Tick,
    Message(Box<Event<'static>>),
    Call(parlo_fsm::Event),
}

fn input(line: usize, text_: &str, with_call: bool) -> Result<Input, Failure> {
    let (verb, rest) = text_.split_once(' ').unwrap_or((text_, ""));
    if verb == "tick" {
        return Ok(Input::Tick);
    }
    let message = match verb {
        "msg" => {
            let (to, body) = rest.split_once(' ').unwrap_or((rest, ""));
            // The text is leaked: a spec is replayed once, by a test.
            let body: &'static str = text(body).leak();
            Some(Event::Send {
                to: name(line, to)?,
                text: body,
            })
        }
        "route" => Some(Event::Route {
            to: name(line, rest.trim())?,
        }),
        "no-route" => {
            let Some((to, r)) = rest.split_once(' ') else {
                return fail(line, "expected `no-route NAME REASON`");
            };
            Some(Event::NoRoute {
                to: name(line, to)?,
                reason: reason(line, r.trim())?,
            })
        }
        "from" => match rest.split_once(": ") {
            Some((who, l)) if who.trim().parse::<SocketAddr>().is_err() => {
                let Some((n, v)) = who.trim().split_once(' ') else {
                    return fail(line, "expected `from NAME VERIFICATION: LINE`");
                };
                Some(Event::Peer {
                    from: name(line, n)?,
                    verification: verification(line, v)?,
                    line: message_line(line, l)?,
                })
            }
            _ => None,
        },
        _ => None,
    };
    match message {
        Some(event) => Ok(Input::Message(Box::new(event))),
        None if with_call => match spec::event(line, text_)? {
            Some(event) => Ok(Input::Call(event)),
            None => Ok(Input::Tick),
        },
        None => fail(line, format!("unknown event: {text_}")),
    }
}

fn config(line: usize, settings: &str) -> Result<messages::Config, Failure> {
    let mut config = messages::Config::default();
    for setting in settings.split_whitespace() {
        let Some((key, value)) = setting.split_once('=') else {
            return fail(line, format!("expected key=value, got {setting}"));
        };
        if key == "messages-from" {
            let names: Vec<Name> = value
                .split(',')
                .map(|n| name(line, n))
                .collect::<Result<_, _>>()?;
            config.from = Policy::only(&names)
                .map_or_else(|| fail(line, "too many names in messages-from"), Ok)?;
            continue;
        }
        let value: u64 = value
            .parse()
            .or_else(|_| fail(line, format!("not a number: {value}")))?;
        let small = |v: u64| u32::try_from(v).or_else(|_| fail(line, "too large"));
        match key {
            "retransmit-initial" => config.retransmit_initial = value,
            "tries" => {
                config.tries =
                    u8::try_from(value).or_else(|_| fail(line, "tries is at most 255"))?;
            }
            "route-wait" => config.route_wait = value,
            "rate-burst" => config.rate_burst = small(value)?,
            "rate-per-second" => config.rate_per_second = small(value)?,
            other => return fail(line, format!("unknown setting: {other}")),
        }
    }
    Ok(config)
}

struct Step {
    line: usize,
    text: String,
    at: u64,
    input: Input,
    expect: Vec<(usize, String)>,
}

/// What a replay went through.
#[derive(Debug, Default)]
pub struct Replay {
    /// The number of events replayed (`tick` included).
    pub events: usize,
    /// The indices in [`parlo_fsm::messages::TABLE`] of the entries the events applied.
    pub reached: BTreeSet<usize>,
}

/// One action of either machine.
enum Done {
    Message(Box<Action>),
    Call(parlo_fsm::Action),
}

impl Done {
    fn render(&self) -> String {
        match self {
            Done::Message(a) => render(a),
            Done::Call(a) => spec::render(a),
        }
    }
}

/// Replays the message spec `text`.
pub fn replay(text_: &str) -> Result<Replay, Failure> {
    let mut me = None;
    let mut run = None;
    let mut ids = ScriptedIds::default();
    let mut settings = (0, String::new());
    let mut with_call = false;
    let mut steps: Vec<Step> = Vec::new();
    for (i, raw) in text_.lines().enumerate() {
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
            "run" => {
                let r = u32::from_str_radix(rest.trim(), 16)
                    .or_else(|_| fail(line, format!("bad run: {rest}")))?;
                run = Some(r);
            }
            "call" => with_call = true,
            "ids" => {
                for hex in rest.split_whitespace() {
                    let id = u32::from_str_radix(hex, 16)
                        .or_else(|_| fail(line, format!("bad call id: {hex}")))?;
                    ids.push(CallId(id));
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
                    input: input(line, ev.trim(), with_call)?,
                    expect: Vec::new(),
                });
            }
            _ => return fail(line, format!("unknown directive: {word}")),
        }
    }
    let me: Name = me.map_or_else(|| fail(1, "the spec does not say `me NAME`"), Ok)?;
    let run = run.map_or_else(|| fail(1, "the spec does not say `run HEX`"), Ok)?;
    let mut messenger = Messenger::new(config(settings.0, &settings.1)?, run, Instant(0));
    // The calls of these specs are plaintext (their subject is the messages beside them).
    let mut call = with_call.then(|| {
        let mut config = Config::new(me.clone());
        config.security = Security::Preferred;
        Machine::new(config, ids, Instant(0))
    });

    let mut reached = BTreeSet::new();
    for step in &steps {
        let now = Instant(step.at);
        let mut done: Vec<Done> = Vec::new();
        match &step.input {
            Input::Message(ev) => {
                done.extend(
                    messenger
                        .handle(now, ev)
                        .into_iter()
                        .map(|a| Done::Message(Box::new(a))),
                );
                reached.extend(messenger.last_entries().iter().copied());
            }
            Input::Call(ev) => {
                let Some(m) = call.as_mut() else {
                    return fail(step.line, "a call event needs `call`");
                };
                done.extend(m.handle(now, ev).into_iter().map(Done::Call));
            }
            Input::Tick => loop {
                let call_due = call.as_ref().and_then(Machine::poll_timeout);
                let msg_due = messenger.poll_timeout();
                match (call_due, msg_due) {
                    (Some(c), m) if c <= now && m.is_none_or(|m| c <= m) => {
                        if let Some(machine) = call.as_mut() {
                            done.extend(machine.handle_timeout(now).into_iter().map(Done::Call));
                        }
                    }
                    (_, Some(m)) if m <= now => {
                        done.extend(
                            messenger
                                .handle_timeout(now)
                                .into_iter()
                                .map(|a| Done::Message(Box::new(a))),
                        );
                        reached.extend(messenger.last_entries().iter().copied());
                    }
                    _ => break,
                }
            },
        }
        check(step, &messenger, call.as_ref(), &done)?;
    }
    Ok(Replay {
        events: steps.len(),
        reached,
    })
}

fn check(
    step: &Step,
    messenger: &Messenger,
    call: Option<&Machine<ScriptedIds>>,
    done: &[Done],
) -> Result<(), Failure> {
    let listing = || {
        let mut s = format!("\n  after `{}` the phone did:", step.text);
        for d in done {
            let _ = write!(s, "\n    {}", d.render());
        }
        if done.is_empty() {
            s.push_str(" nothing");
        }
        s
    };
    if step.expect.is_empty() {
        return fail(
            step.line,
            "an event needs at least one expectation (`nothing` for none)",
        );
    }
    let mut actions = done.iter();
    let mut last_line = step.line;
    for (line, want) in &step.expect {
        last_line = *line;
        if want == "nothing" {
            continue;
        }
        if let Some(s) = want.strip_prefix("state ") {
            let want = spec::state(*line, s)?;
            let got = call.map(Machine::state);
            if got != Some(want) {
                return fail(*line, format!("expected call state {want:?}, got {got:?}"));
            }
            continue;
        }
        if let Some(n) = want.strip_prefix("held ") {
            if n.parse() != Ok(messenger.held()) {
                return fail(
                    *line,
                    format!("expected held {n}, holds {}", messenger.held()),
                );
            }
            continue;
        }
        if let Some(t) = want.strip_prefix("deadline ") {
            let got = messenger
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
        let matches = |got: &Done| -> Result<bool, Failure> {
            Ok(match got {
                Done::Message(a) => render(a) == *want,
                Done::Call(a) => match expected_send(*line, want) {
                    Ok(Some(send)) => send == *a,
                    _ => spec::render(a) == *want,
                },
            })
        };
        match actions.next() {
            Some(got) if matches(got)? => {}
            Some(got) => {
                return fail(
                    *line,
                    format!("expected `{want}`, got `{}`{}", got.render(), listing()),
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
    if let Some(extra) = actions.next() {
        return fail(
            last_line,
            format!(
                "unexpected action `{}` after this line{}",
                extra.render(),
                listing()
            ),
        );
    }
    Ok(())
}
