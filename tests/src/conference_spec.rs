//! The conference spec replayer: runs a plain-text scenario from `specs/conference/`
//! against one phone's conference layer (`parlo_fsm::conference::Conference`).
//!
//! ```text
//! # Carol starts a conference.            comments start with '#'
//! me carol                                this phone's name
//!
//! conf 00000000000000c0 alice bob         an event (not indented)
//!   dial alice conf=00000000000000c0      every action, in order (indented)
//!   phase member                          a check: idle, invited or member
//! ```
//!
//! Events: `conf ID NAME...` (the `conf` command with the id the shell drew), `invite
//! NAME`, `hangup`, `start NAME` or `start NAME conf=ID` (an incoming START), `connected
//! NAME VERIFICATION` (a leg is up), `adopt NAME VERIFICATION conf=ID` (the ordinary call
//! with NAME becomes a leg of conference ID), `ended NAME REASON` (a leg ended:
//! `hung-up`, `peer-lost`, `rejected`, `busy`, `no-answer`, `unreachable`,
//! `original-phone`, `key-changed`, `insecure`), `from NAME: ROSTER ID NAME=KEY ...` and
//! `from NAME: LINKS ID SEQ NAME ...` (a line over the leg with NAME, in the wire form of
//! the conference module docs).
//!
//! Keys: every phone's key is derived from its name (the name's bytes, zero-padded to
//! 32); a spec writes `K` for "the key of that name", `-` for none, and the replayer
//! shows `?` for any other key.
//!
//! Actions: `dial NAME conf=ID`, `accept NAME`, `ring NAME`, `hold NAME`, `busy NAME`,
//! `hangup NAME`, `send NAME: ROSTER ...`, `send NAME: LINKS ...`, `notify NOTE` (the
//! user event as the phone prints it); `nothing` when the event does none. Every line
//! the layer sends also goes through `parlo_net::message` (emitted, parsed back, the
//! same line), so that what the specs show is what travels.

use parlo_fsm::Verification;
use parlo_fsm::conference::{Action, ConfId, Conference, Entry, Event, LegEnd, Phase, Roster};
use parlo_fsm::{Name, PublicKey};
use parlo_net::message::{self, SessionLine};

use crate::spec::Failure;

fn fail<T>(line: usize, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        line,
        message: message.into(),
    })
}

/// The key a spec's phone named `name` has: the name's bytes, zero-padded.
pub fn key_of(name: &Name) -> PublicKey {
    let mut bytes = [0u8; PublicKey::LEN];
    for (b, c) in bytes.iter_mut().zip(name.as_str().bytes()) {
        *b = c;
    }
    PublicKey(bytes)
}

fn name(line: usize, text: &str) -> Result<Name, Failure> {
    Name::new(text).or_else(|e| fail(line, format!("not a name: {text:?}: {e}")))
}

fn conf_id(line: usize, text: &str) -> Result<ConfId, Failure> {
    ConfId::parse(text).map_or_else(
        || {
            fail(
                line,
                format!("not a conference id (16 hex digits): {text:?}"),
            )
        },
        Ok,
    )
}

fn roster_text(roster: &Roster) -> String {
    let mut text = format!("ROSTER {}", roster.id);
    for entry in &roster.members {
        let key = match entry.key {
            None => "-",
            Some(key) if key == key_of(&entry.name) => "K",
            Some(_) => "?",
        };
        text.push_str(&format!(" {}={key}", entry.name));
    }
    text
}

/// An action of the conference layer in the notation of the specs.
pub fn render(action: &Action) -> String {
    match action {
        Action::Dial { to, id } => format!("dial {to} conf={id}"),
        Action::Accept(n) => format!("accept {n}"),
        Action::Ring(n) => format!("ring {n}"),
        Action::Hold(n) => format!("hold {n}"),
        Action::Busy(n) => format!("busy {n}"),
        Action::Hangup(n) => format!("hangup {n}"),
        Action::SendRoster { to, roster } => format!("send {to}: {}", roster_text(roster)),
        Action::SendLinks { to, id, seq, peers } => {
            let mut text = format!("send {to}: LINKS {id} {seq}");
            for p in peers {
                text.push_str(&format!(" {p}"));
            }
            text
        }
        Action::Notify(note) => format!("notify {note}"),
    }
}

/// What a line over a leg carries, read from its wire form.
enum Line {
    Roster(Box<Roster>),
    Links(ConfId, u32, Vec<Name>),
}

fn session_line(line: usize, text: &str) -> Result<Line, Failure> {
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or("");
    let id = conf_id(line, words.next().unwrap_or(""))?;
    match verb {
        "ROSTER" => {
            let mut roster = Roster {
                id,
                members: Default::default(),
            };
            for word in words {
                let Some((n, k)) = word.split_once('=') else {
                    return fail(line, format!("expected NAME=KEY, found {word:?}"));
                };
                let n = name(line, n)?;
                let key = match k {
                    "-" => None,
                    "K" => Some(key_of(&n)),
                    other => Some(
                        PublicKey::parse(other)
                            .or_else(|e| fail(line, format!("not a key: {other:?}: {e}")))?,
                    ),
                };
                if roster.members.push(Entry { name: n, key }).is_err() {
                    return fail(line, "a roster of more than 8 members");
                }
            }
            Ok(Line::Roster(Box::new(roster)))
        }
        "LINKS" => {
            let seq_text = words.next().unwrap_or("");
            let seq = seq_text
                .parse()
                .or_else(|_| fail(line, format!("expected a LINKS number, found {seq_text:?}")))?;
            let peers = words.map(|w| name(line, w)).collect::<Result<_, _>>()?;
            Ok(Line::Links(id, seq, peers))
        }
        other => fail(line, format!("expected ROSTER or LINKS, found {other:?}")),
    }
}

/// What a replay went through.
#[derive(Debug, Default)]
pub struct Replay {
    /// The number of events replayed.
    pub events: usize,
    /// The actions the events yielded, all told.
    pub actions: usize,
}

struct Step {
    line: usize,
    event: String,
    expected: Vec<(usize, String)>,
}

fn apply(conf: &mut Conference, step: &Step) -> Result<Vec<String>, Failure> {
    let line = step.line;
    let (verb, rest) = step.event.split_once(' ').unwrap_or((&step.event, ""));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    let actions = match verb {
        "conf" => {
            let id = conf_id(line, word(0))?;
            let others: Vec<Name> = words[1..]
                .iter()
                .map(|w| name(line, w))
                .collect::<Result<_, _>>()?;
            conf.handle(&Event::Start {
                id,
                others: &others,
            })
        }
        "invite" => conf.handle(&Event::Invite(name(line, word(0))?)),
        "hangup" => conf.handle(&Event::Hangup),
        "start" => {
            let from = name(line, word(0))?;
            let id = match word(1).strip_prefix("conf=") {
                Some(id) => Some(conf_id(line, id)?),
                None if word(1).is_empty() => None,
                None => return fail(line, format!("expected conf=ID, found {:?}", word(1))),
            };
            conf.handle(&Event::Incoming { from, id })
        }
        "connected" => {
            let peer = name(line, word(0))?;
            let verification = verification(line, word(1))?;
            conf.handle(&Event::Connected {
                key: key_of(&peer),
                peer,
                verification,
            })
        }
        "adopt" => {
            let peer = name(line, word(0))?;
            let verification = verification(line, word(1))?;
            let Some(id) = word(2).strip_prefix("conf=") else {
                return fail(line, format!("expected conf=ID, found {:?}", word(2)));
            };
            conf.handle(&Event::Adopt {
                key: key_of(&peer),
                peer,
                verification,
                id: conf_id(line, id)?,
            })
        }
        "ended" => {
            let peer = name(line, word(0))?;
            let Some(reason) = LegEnd::ALL.into_iter().find(|r| r.name() == word(1)) else {
                return fail(line, format!("no such reason: {:?}", word(1)));
            };
            conf.handle(&Event::Ended { peer, reason })
        }
        "from" => {
            let Some((from, text)) = rest.split_once(": ") else {
                return fail(line, "expected from NAME: LINE");
            };
            let from = name(line, from)?;
            match session_line(line, text)? {
                Line::Roster(roster) => conf.handle(&Event::Roster {
                    from,
                    roster: &roster,
                }),
                Line::Links(id, seq, peers) => conf.handle(&Event::Links {
                    from,
                    id,
                    seq,
                    peers: &peers,
                }),
            }
        }
        other => return fail(line, format!("no such event: {other:?}")),
    };
    for action in &actions {
        travels(line, action)?;
    }
    Ok(actions.iter().map(render).collect())
}

fn verification(line: usize, text: &str) -> Result<Verification, Failure> {
    match Verification::ALL.into_iter().find(|v| v.name() == text) {
        Some(verification) => Ok(verification),
        None => fail(line, format!("no such verification: {text:?}")),
    }
}

/// Checks that a line the layer sends goes on the wire and comes back the same.
fn travels(line: usize, action: &Action) -> Result<(), Failure> {
    let sent = match action {
        Action::SendRoster { roster, .. } => SessionLine::Roster(roster.clone()),
        Action::SendLinks { id, seq, peers, .. } => SessionLine::Links {
            id: *id,
            seq: *seq,
            peers: peers.clone(),
        },
        _ => return Ok(()),
    };
    let mut buf = [0u8; message::MAX_LINE];
    let len = message::emit_session_line(&sent, &mut buf)
        .or_else(|e| fail(line, format!("`{}` cannot be sent: {e}", render(action))))?;
    match message::parse(&buf[..len]) {
        Ok(read) if read == sent => Ok(()),
        other => fail(
            line,
            format!(
                "`{}` does not come back from the wire: {other:?}",
                render(action)
            ),
        ),
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "idle",
        Phase::Invited(_) => "invited",
        Phase::Member(_) => "member",
    }
}

/// Replays one spec; the first difference is the failure.
pub fn replay(text: &str) -> Result<Replay, Failure> {
    let mut me = None;
    let mut steps: Vec<Step> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        if content.trim().is_empty() {
            continue;
        }
        if content.starts_with(' ') {
            match steps.last_mut() {
                Some(step) => step.expected.push((line, content.trim().to_string())),
                None => return fail(line, "an expectation before any event"),
            }
        } else if let Some(n) = content.strip_prefix("me ") {
            me = Some(name(line, n.trim())?);
        } else {
            steps.push(Step {
                line,
                event: content.trim().to_string(),
                expected: Vec::new(),
            });
        }
    }
    let Some(me) = me else {
        return fail(1, "the spec names no phone (me NAME)");
    };
    let mut conf = Conference::new(me.clone(), key_of(&me));
    let mut replay = Replay::default();
    for step in &steps {
        let got = apply(&mut conf, step)?;
        replay.events += 1;
        replay.actions += got.len();
        let mut got_iter = got.iter();
        let mut said_nothing = false;
        for (line, want) in &step.expected {
            if let Some(phase) = want.strip_prefix("phase ") {
                let is = phase_name(conf.phase());
                if is != phase {
                    return fail(*line, format!("expected phase {phase}, the layer is {is}"));
                }
            } else if want == "nothing" {
                said_nothing = true;
            } else {
                match got_iter.next() {
                    Some(action) if action == want => {}
                    Some(action) => {
                        return fail(
                            *line,
                            format!("expected `{want}`, the layer did `{action}`\n  all: {got:#?}"),
                        );
                    }
                    None => {
                        return fail(*line, format!("expected `{want}`, the layer did no more"));
                    }
                }
            }
        }
        let rest: Vec<&String> = got_iter.collect();
        if !rest.is_empty() {
            return fail(
                step.expected.last().map_or(step.line, |(l, _)| *l),
                format!("after `{}` the layer also did: {rest:#?}", step.event),
            );
        }
        if said_nothing && !got.is_empty() {
            return fail(
                step.line,
                format!("expected nothing, the layer did {got:#?}"),
            );
        }
        if step.expected.is_empty() && !got.is_empty() {
            return fail(
                step.line,
                format!("`{}` expects nothing written", step.event),
            );
        }
    }
    Ok(replay)
}

/// Writes a spec out with what the layer does now: every comment, `me` line and event
/// kept, each event's expectations replaced by its actions (`nothing` when none). For
/// drafting a spec, whose every line is then to be read and judged.
pub fn record(text: &str) -> Result<String, Failure> {
    let mut out = String::new();
    let mut conf: Option<Conference> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.starts_with(' ') {
            continue;
        }
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        out.push_str(raw);
        out.push('\n');
        if content.is_empty() {
            continue;
        }
        if let Some(n) = content.strip_prefix("me ") {
            let me = name(line, n.trim())?;
            conf = Some(Conference::new(me.clone(), key_of(&me)));
            continue;
        }
        let Some(conf) = conf.as_mut() else {
            return fail(line, "the spec names no phone (me NAME) before its events");
        };
        let step = Step {
            line,
            event: content.to_string(),
            expected: Vec::new(),
        };
        let got = apply(conf, &step)?;
        if got.is_empty() {
            out.push_str("  nothing\n");
        }
        for action in got {
            out.push_str(&format!("  {action}\n"));
        }
        out.push_str(&format!("  phase {}\n", phase_name(conf.phase())));
    }
    Ok(out)
}
