//! Pictures of the machines, generated from their tables: the call machine's full
//! transition matrix as text (`specs/transitions.txt`) and a Mermaid state diagram (in
//! the README), and the message machine's matrix (`specs/messages/transitions.txt`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use parlo_fsm::table::{Entry, Next, Outcome, Say, Step, Tell};
use parlo_fsm::{EventKind, Guard, State, TABLE, messages};

fn say(s: Say) -> &'static str {
    match s {
        Say::Start => "START",
        Say::Ringing => "RINGING",
        Say::Accept => "ACCEPT",
        Say::Reject => "REJECT",
        Say::Close => "CLOSE",
        Say::Closed => "CLOSED",
        Say::Ack => "ACK",
    }
}

fn step(s: Step) -> String {
    match s {
        Step::BeginOutgoing => "begin outgoing call".into(),
        Step::BeginIncoming => "begin incoming call".into(),
        Step::Lookup => "look up".into(),
        Step::LookupCaller => "look the caller up".into(),
        Step::Announce => "announce incoming (once)".into(),
        Step::LearnAddress => "learn address".into(),
        Step::LearnDialect => "learn dialect".into(),
        Step::LearnKey => "learn key".into(),
        Step::Pin => "pin a new key".into(),
        Step::LearnCodec => "learn codec".into(),
        Step::Send(m) => format!("send {}", say(m)),
        Step::SendReliably(m) => format!("send {} reliably", say(m)),
        Step::Resend => "resend".into(),
        Step::StopRetransmitting => "stop retransmitting".into(),
        Step::ReplyBusy => "reply BUSY".into(),
        Step::ReplyReject => "reply REJECT".into(),
        Step::Arm(t) => format!("arm {}", t.name()),
        Step::Disarm(t) => format!("disarm {}", t.name()),
        Step::StartMedia => "start media".into(),
        Step::StopMedia => "stop media".into(),
        Step::Tell(Tell::Calling) => "tell calling".into(),
        Step::Tell(Tell::Ringing) => "tell ringing".into(),
        Step::Tell(Tell::Connected) => "tell connected".into(),
        Step::Tell(Tell::Ended(r)) => format!("tell ended ({})", r.name()),
        Step::Tell(Tell::EndedRequest(r)) => format!("tell ended ({}) about the START", r.name()),
        Step::Tell(Tell::Refused(r)) => format!("tell refused ({r})"),
        Step::CountForeign => "count foreign".into(),
        Step::RememberEnded => "remember an original peer".into(),
        Step::HearEnded => "note audio from the ended peer".into(),
        Step::CloseEnded => "send CLOSE to the ended peer".into(),
    }
}

fn event_label(e: &Entry) -> String {
    match e.guard {
        Guard::Always => e.event.name().to_string(),
        g => format!("{} [{}]", e.event.name(), g.name()),
    }
}

/// The whole transition matrix as text: a grid of next states, then every entry.
pub fn matrix() -> String {
    let mut out = String::new();
    out.push_str(
        "# The call machine's transition matrix, generated from parlo-fsm's table.\n\
         # Do not edit: `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` rewrites it.\n\
         #\n\
         # Grid: the state after each event. `=` stays, `·` ignores; `a/b` depends on a guard.\n\n",
    );
    let width = EventKind::ALL
        .iter()
        .map(|e| e.name().len())
        .max()
        .unwrap_or(0);
    let _ = write!(out, "{:width$}", "");
    for s in State::ALL {
        let _ = write!(out, " {:>13}", format!("{s:?}"));
    }
    out.push('\n');
    for event in EventKind::ALL {
        let _ = write!(out, "{:width$}", event.name());
        for state in State::ALL {
            let cells: Vec<String> = TABLE
                .iter()
                .filter(|e| e.state == state && e.event == event)
                .map(|e| match e.outcome {
                    Outcome::Ignore(_) => "·".to_string(),
                    Outcome::Row {
                        next: Next::Stay, ..
                    } => "=".to_string(),
                    Outcome::Row {
                        next: Next::To(s), ..
                    } => format!("{s:?}"),
                })
                .collect();
            let _ = write!(out, " {:>13}", cells.join("/"));
        }
        out.push('\n');
    }
    for state in State::ALL {
        let _ = write!(out, "\n## {state:?}\n");
        for e in TABLE.iter().filter(|e| e.state == state) {
            let label = event_label(e);
            match e.outcome {
                Outcome::Ignore(why) => {
                    let _ = writeln!(out, "  {label:<34} ignored: {why}");
                }
                Outcome::Row { next, steps } => {
                    let to = match next {
                        Next::Stay => "=".to_string(),
                        Next::To(s) => format!("{s:?}"),
                    };
                    let steps: Vec<String> = steps.iter().map(|s| step(*s)).collect();
                    let steps = if steps.is_empty() {
                        "(no action)".to_string()
                    } else {
                        steps.join(", ")
                    };
                    let _ = writeln!(out, "  {label:<34} -> {to:<8} {steps}");
                }
            }
        }
    }
    out
}

/// A Mermaid state diagram of the transitions that change state.
pub fn mermaid() -> String {
    let mut edges: BTreeMap<(State, State), Vec<String>> = BTreeMap::new();
    for e in TABLE {
        if let Outcome::Row {
            next: Next::To(to), ..
        } = e.outcome
        {
            if to != e.state {
                edges.entry((e.state, to)).or_default().push(event_label(e));
            }
        }
    }
    let mut out = String::from("```mermaid\nstateDiagram-v2\n    [*] --> Idle\n");
    for ((from, to), labels) in edges {
        let _ = writeln!(out, "    {from:?} --> {to:?}: {}", labels.join(", "));
    }
    out.push_str("```\n");
    out
}

fn message_step(s: messages::table::Step) -> String {
    use messages::table::{Step as S, Tell as T};
    match s {
        S::Hold => "hold".into(),
        S::Connect => "ask for a session".into(),
        S::ArmRouteWait => "arm route-wait".into(),
        S::Transmit => "send MSG, arm retransmit".into(),
        S::Resend => "resend MSG, back off".into(),
        S::Spend => "spend a token".into(),
        S::Remember => "remember as printed".into(),
        S::RememberLimited => "remember as rate-limited".into(),
        S::Deliver => "tell message".into(),
        S::Ack => "reply ACK".into(),
        S::Nak(r) => format!("reply NAK {}", r.name()),
        S::Tell(T::Sending) => "tell sending".into(),
        S::Tell(T::Delivered) => "tell delivered".into(),
        S::Tell(T::Undelivered(r)) => format!("tell undelivered ({})", r.name()),
        S::Tell(T::UndeliveredAsTold) => "tell undelivered (as told)".into(),
    }
}

/// The message machine's whole table as text: a grid of next states, then every entry.
pub fn message_matrix() -> String {
    use messages::table::{Next as N, Outcome as O};
    use messages::{EventKind as K, Guard as G, State as St, TABLE as T};
    let label = |e: &messages::table::Entry| match e.guard {
        G::Always => e.event.name().to_string(),
        g => format!("{} [{}]", e.event.name(), g.name()),
    };
    let mut out = String::new();
    out.push_str(
        "# The message machine's transition matrix, generated from parlo-fsm's table.\n\
         # Do not edit: `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` rewrites it.\n\
         #\n\
         # Rows: what happens; columns: what this phone holds about the message concerned.\n\
         # Grid: the state after each event. `=` stays, `·` ignores; `a/b/c` depends on a guard.\n\n",
    );
    let width = K::ALL.iter().map(|e| e.name().len()).max().unwrap_or(0);
    let _ = write!(out, "{:width$}", "");
    for s in St::ALL {
        let _ = write!(out, " {:>22}", format!("{s:?}"));
    }
    out.push('\n');
    for event in K::ALL {
        let _ = write!(out, "{:width$}", event.name());
        for state in St::ALL {
            let cells: Vec<String> = T
                .iter()
                .filter(|e| e.state == state && e.event == event)
                .map(|e| match e.outcome {
                    O::Ignore(_) => "·".to_string(),
                    O::Row { next: N::Stay, .. } => "=".to_string(),
                    O::Row { next: N::To(s), .. } => format!("{s:?}"),
                })
                .collect();
            let _ = write!(out, " {:>22}", cells.join("/"));
        }
        out.push('\n');
    }
    for state in St::ALL {
        let _ = write!(out, "\n## {state:?}\n");
        for e in T.iter().filter(|e| e.state == state) {
            let label = label(e);
            match e.outcome {
                O::Ignore(why) => {
                    let _ = writeln!(out, "  {label:<34} ignored: {why}");
                }
                O::Row { next, steps } => {
                    let to = match next {
                        N::Stay => "=".to_string(),
                        N::To(s) => format!("{s:?}"),
                    };
                    let steps: Vec<String> = steps.iter().map(|s| message_step(*s)).collect();
                    let _ = writeln!(out, "  {label:<34} -> {to:<8} {}", steps.join(", "));
                }
            }
        }
    }
    out
}
