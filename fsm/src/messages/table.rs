//! The message machine's transition table, one row per line.
//!
//! An event concerns one message; its state is what this phone holds about that message.
//! Every (state, event) pair appears here, either as one or more rows `(state, event,
//! guard) -> (next state, steps)` or as an explicit `ignore` with the reason. A test
//! proves the table complete; `specs/messages/transitions.txt` is its rendering.
//!
//! Two rules hold for every row and are not repeated in it:
//! - a held message has one timer: the session wait in `Waiting`, the retransmission in
//!   `Sent`; a step that arms it replaces it;
//! - entering `None` forgets the message and its timer (its outcome is told).

use super::Reason;

/// What this phone holds about the message an event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Nothing: a new message, a message settled (or forgotten), a stray line.
    None,
    /// Ours, waiting for a secure session with its peer.
    Waiting,
    /// Ours, sent, awaiting its ACK.
    Sent,
    /// Theirs, printed already (its id is in the sender's window).
    Seen,
    /// Theirs, refused over its sender's rate (its id is in the sender's window).
    Limited,
}

impl State {
    /// Every state, in table order.
    pub const ALL: [State; 5] = [
        State::None,
        State::Waiting,
        State::Sent,
        State::Seen,
        State::Limited,
    ];
}

/// The table's columns: a [`super::Event`] or a timer, classified against the message it
/// concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// The user sends a message.
    Send,
    /// A session with the peer is up.
    Route,
    /// No session with the peer can be set up.
    NoRoute,
    /// `MSG` from a peer.
    Msg,
    /// `MSG` with a text over the limit.
    MsgTooLong,
    /// `ACK` from the peer a message was sent to.
    Ack,
    /// `NAK` from the peer a message was sent to.
    Nak,
    /// The retransmission timer fired and tries remain.
    Retransmit,
    /// The retransmission timer fired after the last try.
    RetransmitExhausted,
    /// The session did not come up in time.
    RouteWait,
}

impl EventKind {
    /// Every event kind, in table order.
    pub const ALL: [EventKind; 10] = [
        EventKind::Send,
        EventKind::Route,
        EventKind::NoRoute,
        EventKind::Msg,
        EventKind::MsgTooLong,
        EventKind::Ack,
        EventKind::Nak,
        EventKind::Retransmit,
        EventKind::RetransmitExhausted,
        EventKind::RouteWait,
    ];

    /// The event's name in the matrix and logs.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Send => "msg",
            EventKind::Route => "route",
            EventKind::NoRoute => "no route",
            EventKind::Msg => "MSG",
            EventKind::MsgTooLong => "MSG too long",
            EventKind::Ack => "ACK",
            EventKind::Nak => "NAK",
            EventKind::Retransmit => "retransmit timer",
            EventKind::RetransmitExhausted => "retransmit exhausted",
            EventKind::RouteWait => "route-wait timer",
        }
    }
}

/// A condition picking between rows of the same (state, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// No condition.
    Always,
    /// The text is longer than [`super::MAX_TEXT`].
    TooLong,
    /// The text fits, but [`super::QUEUE`] messages are held already.
    QueueFull,
    /// It can be held, and a message to the same peer is out: its session is up.
    RouteUp,
    /// It can be held, and messages to the same peer wait for a session asked for.
    RouteAsked,
    /// It can be held, and nothing is held for the peer: a session must be asked for.
    RouteNone,
    /// The sender is not key-verified, or not allowed by the policy.
    Refused,
    /// The sender is allowed but has no token left.
    RateLimited,
    /// The sender is allowed and within its rate.
    Accepted,
}

impl Guard {
    /// The guard as the matrix prints it (empty for [`Guard::Always`]).
    pub fn name(self) -> &'static str {
        match self {
            Guard::Always => "",
            Guard::TooLong => "too long",
            Guard::QueueFull => "queue full",
            Guard::RouteUp => "session up",
            Guard::RouteAsked => "session asked",
            Guard::RouteNone => "no session",
            Guard::Refused => "sender refused",
            Guard::RateLimited => "over the rate",
            Guard::Accepted => "accepted",
        }
    }

    /// The guards that together cover every case when one of them is used; they are
    /// exclusive, tried in this order.
    pub fn family(self) -> &'static [Guard] {
        match self {
            Guard::Always => &[Guard::Always],
            Guard::TooLong
            | Guard::QueueFull
            | Guard::RouteUp
            | Guard::RouteAsked
            | Guard::RouteNone => &[
                Guard::TooLong,
                Guard::QueueFull,
                Guard::RouteUp,
                Guard::RouteAsked,
                Guard::RouteNone,
            ],
            Guard::Refused | Guard::RateLimited | Guard::Accepted => {
                &[Guard::Refused, Guard::RateLimited, Guard::Accepted]
            }
        }
    }
}

/// What the user is told, as a row writes it (the machine fills in ids and names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tell {
    /// `sending <id> to <peer>`.
    Sending,
    /// `delivered <id>`.
    Delivered,
    /// `undelivered <id> reason=<reason>`.
    Undelivered(Reason),
    /// `undelivered <id> reason=<the reason the event gives>`.
    UndeliveredAsTold,
}

/// One step of a row, executed in order by [`super::Messenger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Hold the new message (under its fresh id) until it is settled.
    Hold,
    /// Ask the shell for a secure session with the peer.
    Connect,
    /// Arm the session wait.
    ArmRouteWait,
    /// Send `MSG` (the first try) and arm the retransmission.
    Transmit,
    /// Send `MSG` again and back off (the delay doubles).
    Resend,
    /// Take one token from the sender's bucket.
    Spend,
    /// Remember the id in the sender's window, as printed.
    Remember,
    /// Remember the id in the sender's window, as refused over the rate.
    RememberLimited,
    /// Tell the user of the message received.
    Deliver,
    /// Answer the sender `ACK`.
    Ack,
    /// Answer the sender `NAK` with the reason.
    Nak(Reason),
    /// Tell the user.
    Tell(Tell),
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

const FRESH: &str = "a message sent gets a fresh id: it is never held";
const NOT_WAITING: &str = "no message waits for a session with this peer";
const NO_TIMER: &str = "this timer is never armed in this state";
const NOT_OURS: &str =
    "no message of ours is out under this id to this peer (a late duplicate, or already settled)";
const NOT_SENT: &str = "not sent yet: an answer about it is not its receiver's";
const THEIRS: &str = "concerns the messages we send; this one was received";
const OURS: &str = "only a received message is in a sender's window; ours never are";

/// The transition table of the message machine.
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    // ---- None: a new message, a settled one, a stray line --------------------------
    row(None, E::Send, TooLong, Stay, &[Tell(Tell::Sending), Tell(Tell::Undelivered(Reason::TooLong))]),
    row(None, E::Send, QueueFull, Stay, &[Tell(Tell::Sending), Tell(Tell::Undelivered(Reason::QueueFull))]),
    row(None, E::Send, RouteUp, To(Sent), &[Hold, Tell(Tell::Sending), Transmit]),
    row(None, E::Send, RouteAsked, To(Waiting), &[Hold, Tell(Tell::Sending), ArmRouteWait]),
    row(None, E::Send, RouteNone, To(Waiting), &[Hold, Tell(Tell::Sending), Connect, ArmRouteWait]),
    ignore(None, E::Route, NOT_WAITING),
    ignore(None, E::NoRoute, NOT_WAITING),
    row(None, E::Msg, Refused, Stay, &[Nak(Reason::Refused)]),
    row(None, E::Msg, RateLimited, To(Limited), &[RememberLimited, Nak(Reason::RateLimited)]),
    row(None, E::Msg, Accepted, To(Seen), &[Spend, Remember, Deliver, Ack]),
    row(None, E::MsgTooLong, Always, Stay, &[Nak(Reason::TooLong)]),
    ignore(None, E::Ack, NOT_OURS),
    ignore(None, E::Nak, NOT_OURS),
    ignore(None, E::Retransmit, NO_TIMER),
    ignore(None, E::RetransmitExhausted, NO_TIMER),
    ignore(None, E::RouteWait, NO_TIMER),

    // ---- Waiting: ours, waiting for a session --------------------------------------
    ignore(Waiting, E::Send, FRESH),
    row(Waiting, E::Route, Always, To(Sent), &[Transmit]),
    row(Waiting, E::NoRoute, Always, To(None), &[Tell(Tell::UndeliveredAsTold)]),
    ignore(Waiting, E::Msg, THEIRS),
    ignore(Waiting, E::MsgTooLong, THEIRS),
    ignore(Waiting, E::Ack, NOT_SENT),
    ignore(Waiting, E::Nak, NOT_SENT),
    ignore(Waiting, E::Retransmit, NO_TIMER),
    ignore(Waiting, E::RetransmitExhausted, NO_TIMER),
    row(Waiting, E::RouteWait, Always, To(None), &[Tell(Tell::Undelivered(Reason::Unreachable))]),

    // ---- Sent: ours, awaiting its ACK ------------------------------------------------
    ignore(Sent, E::Send, FRESH),
    ignore(Sent, E::Route, "already sent: retransmissions use the session as it is"),
    ignore(Sent, E::NoRoute, "already sent: retransmissions decide"),
    ignore(Sent, E::Msg, THEIRS),
    ignore(Sent, E::MsgTooLong, THEIRS),
    row(Sent, E::Ack, Always, To(None), &[Tell(Tell::Delivered)]),
    row(Sent, E::Nak, Always, To(None), &[Tell(Tell::UndeliveredAsTold)]),
    row(Sent, E::Retransmit, Always, Stay, &[Resend]),
    row(Sent, E::RetransmitExhausted, Always, To(None), &[Tell(Tell::Undelivered(Reason::Unreachable))]),
    ignore(Sent, E::RouteWait, NO_TIMER),

    // ---- Seen: theirs, printed already -----------------------------------------------
    ignore(Seen, E::Send, OURS),
    ignore(Seen, E::Route, OURS),
    ignore(Seen, E::NoRoute, OURS),
    row(Seen, E::Msg, Always, Stay, &[Ack]),
    ignore(Seen, E::MsgTooLong, "an over-long text is never seen: it is not remembered"),
    ignore(Seen, E::Ack, OURS),
    ignore(Seen, E::Nak, OURS),
    ignore(Seen, E::Retransmit, NO_TIMER),
    ignore(Seen, E::RetransmitExhausted, NO_TIMER),
    ignore(Seen, E::RouteWait, NO_TIMER),

    // ---- Limited: theirs, refused over the rate ------------------------------------
    ignore(Limited, E::Send, OURS),
    ignore(Limited, E::Route, OURS),
    ignore(Limited, E::NoRoute, OURS),
    row(Limited, E::Msg, Always, Stay, &[Nak(Reason::RateLimited)]),
    ignore(Limited, E::MsgTooLong, "an over-long text is never remembered"),
    ignore(Limited, E::Ack, OURS),
    ignore(Limited, E::Nak, OURS),
    ignore(Limited, E::Retransmit, NO_TIMER),
    ignore(Limited, E::RetransmitExhausted, NO_TIMER),
    ignore(Limited, E::RouteWait, NO_TIMER),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Every (state, event) pair is decided: one entry with no guard, or one entry for
    /// each guard of a single family — never a gap, never two entries for one case.
    #[test]
    fn table_is_complete_and_unambiguous() {
        let mut problems = Vec::new();
        for state in State::ALL {
            for event in EventKind::ALL {
                let found: Vec<&Entry> = TABLE
                    .iter()
                    .filter(|e| e.state == state && e.event == event)
                    .collect();
                let Some(first) = found.first() else {
                    problems.push(std::format!("{state:?} × {}: no entry", event.name()));
                    continue;
                };
                let guards: Vec<Guard> = found.iter().map(|e| e.guard).collect();
                if guards != first.guard.family() {
                    problems.push(std::format!(
                        "{state:?} × {}: guards {guards:?} are not {:?} in order",
                        event.name(),
                        first.guard.family()
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

    /// A held message has a timer in `Waiting` and in `Sent`: every row that enters one
    /// of them arms it, and no row arms one for another state.
    #[test]
    fn rows_entering_a_held_state_arm_its_timer() {
        for e in TABLE {
            let Outcome::Row { next, steps } = e.outcome else {
                continue;
            };
            let to = match next {
                Next::Stay => e.state,
                Next::To(s) => s,
            };
            let arms = steps
                .iter()
                .any(|s| matches!(s, Step::ArmRouteWait | Step::Transmit | Step::Resend));
            let held = matches!(to, State::Waiting | State::Sent);
            assert!(
                if to == e.state {
                    !arms || held
                } else {
                    arms == held
                },
                "{:?} × {}: timer steps {steps:?} for {to:?}",
                e.state,
                e.event.name()
            );
        }
    }
}
