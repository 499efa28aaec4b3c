//! The messenger: applies the message table to a phone's events.

use super::table::{Entry, EventKind, Guard, Next, Outcome, State, Step, TABLE, Tell};
use super::{
    Action, Config, Event, Line, MAX_TEXT, MessageId, Note, QUEUE, Reason, SENDERS, Text, WINDOW,
};
use crate::types::Instant;
use crate::vocab::Name;

/// Most actions one event produces: a session coming up sends every message waiting for
/// it (at most [`QUEUE`]); no other row does more than three.
pub const MAX_ACTIONS: usize = QUEUE + 4;

/// The actions of one event, in order.
pub type Actions = heapless::Vec<Action, MAX_ACTIONS>;

/// One token, in the thousandths the buckets count in (so that refilling by the
/// millisecond stays exact at any rate per second).
const TOKEN: u64 = 1_000;

/// A message of ours, held until it is settled.
#[derive(Debug, Clone)]
struct Held {
    id: MessageId,
    to: Name,
    text: Text,
    /// `Waiting` or `Sent`.
    state: State,
    /// Its one timer: the session wait, or the next retransmission.
    deadline: Instant,
    /// Transmissions so far.
    tries: u8,
}

/// What this phone remembers of one sender: its rate and the ids it printed.
#[derive(Debug, Clone)]
struct Sender {
    name: Name,
    /// The run of the ids in the window.
    run: u32,
    /// The highest counter printed in that run.
    top: u32,
    /// Bit `i`: counter `top - i` was printed.
    seen: u64,
    /// Bit `i`: counter `top - i` was refused over the rate (and is refused again if it
    /// comes again: printing it later would contradict the NAK its sender was given).
    limited: u64,
    /// Tokens, in thousandths, as of `refilled`.
    tokens: u64,
    refilled: Instant,
    /// When a message of its was last accepted (the least recent is forgotten first).
    heard: Instant,
}

impl Sender {
    /// Where `id` falls in the window: `Some(bit)` within it, `None` when it is new
    /// (another run, or above the highest); below the window, `Some(None)`.
    fn slot(&self, id: MessageId) -> Option<Option<u32>> {
        if id.run() != self.run || id.counter() > self.top {
            return None;
        }
        let back = self.top - id.counter();
        Some((back < WINDOW).then_some(back))
    }

    fn has_seen(&self, id: MessageId) -> bool {
        match self.slot(id) {
            None => false,
            // Below the window: its sender settled it long ago (see the module docs).
            Some(None) => true,
            Some(Some(back)) => self.seen & (1 << back) != 0,
        }
    }

    fn was_limited(&self, id: MessageId) -> bool {
        matches!(self.slot(id), Some(Some(back)) if self.limited & (1 << back) != 0)
    }

    /// Remembers `id` as printed, or as refused over the rate.
    fn remember(&mut self, id: MessageId, printed: bool) {
        let counter = id.counter();
        if id.run() != self.run {
            // The sender restarted: its previous run is over.
            (self.run, self.top, self.seen, self.limited) = (id.run(), counter, 0, 0);
        } else if counter > self.top {
            let shift = counter - self.top;
            let slide = |bits: u64| if shift >= WINDOW { 0 } else { bits << shift };
            (self.seen, self.limited) = (slide(self.seen), slide(self.limited));
            self.top = counter;
        }
        if let Some(Some(back)) = self.slot(id) {
            if printed {
                self.seen |= 1 << back;
            } else {
                self.limited |= 1 << back;
            }
        }
    }

    fn tokens(&self, now: Instant, config: &Config) -> u64 {
        let elapsed = now.0.saturating_sub(self.refilled.0);
        let refill = elapsed.saturating_mul(u64::from(config.rate_per_second));
        self.tokens
            .saturating_add(refill)
            .min(u64::from(config.rate_burst) * TOKEN)
    }
}

/// Counters the messenger keeps for the phone's `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `MSG` lines resent.
    pub retransmissions: u64,
    /// Duplicates received (acknowledged again, not printed).
    pub duplicates: u64,
    /// Messages refused: sender not key-verified or not allowed.
    pub refused: u64,
    /// Messages refused over a sender's rate.
    pub rate_limited: u64,
}

/// A phone's message machine (see the module docs).
///
/// Contract: the shell turns the `msg` command, the answers to [`Action::Connect`] and
/// every message line received over a secure session into an [`Event`], and calls
/// [`Messenger::handle`] with the current time; it asks [`Messenger::poll_timeout`] when
/// to call [`Messenger::handle_timeout`]. Each returns the [`Actions`] to execute, in
/// order. A time earlier than one seen before is taken as that one.
#[derive(Debug)]
pub struct Messenger {
    config: Config,
    /// The run of the ids this phone gives, and the last counter given.
    run: u32,
    counter: u32,
    held: heapless::Vec<Held, QUEUE>,
    senders: heapless::Vec<Sender, SENDERS>,
    now: Instant,
    counters: Counters,
    /// The indices in [`TABLE`] of the entries the last event or timer applied.
    applied: heapless::Vec<usize, QUEUE>,
}

impl Messenger {
    /// A messenger holding nothing. `run` numbers this run's message ids: draw it from
    /// the operating system's random source, so that ids differ from a previous run's.
    pub fn new(config: Config, run: u32, now: Instant) -> Messenger {
        Messenger {
            config,
            run,
            counter: 0,
            held: heapless::Vec::new(),
            senders: heapless::Vec::new(),
            now,
            counters: Counters::default(),
            applied: heapless::Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The messages held, waiting for a session or for their ACK.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The senders remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The indices in [`TABLE`] of the entries (rows or ignores) the last call of
    /// [`Messenger::handle`] or [`Messenger::handle_timeout`] applied, in order: one per
    /// message concerned. Lets tests tell which rows their scenarios reach.
    pub fn last_entries(&self) -> &[usize] {
        &self.applied
    }

    /// The earliest timer deadline: when [`Messenger::handle_timeout`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.deadline).min()
    }

    /// Feeds one event.
    #[must_use]
    pub fn handle(&mut self, now: Instant, event: &Event<'_>) -> Actions {
        self.now = self.now.max(now);
        self.applied.clear();
        let mut out = Actions::new();
        match event {
            Event::Send { .. } => {
                let id = self.fresh_id();
                self.apply(State::None, EventKind::Send, id, Some(event), &mut out);
            }
            Event::Route { to } | Event::NoRoute { to, .. } => {
                let kind = match event {
                    Event::Route { .. } => EventKind::Route,
                    _ => EventKind::NoRoute,
                };
                let mut waiting: heapless::Vec<MessageId, QUEUE> = heapless::Vec::new();
                for h in self.held.iter().filter(|h| h.to == *to) {
                    if h.state == State::Waiting {
                        // Cannot fail: as many as `held` holds.
                        let _ = waiting.push(h.id);
                    }
                }
                if waiting.is_empty() {
                    self.apply(State::None, kind, MessageId(0), Some(event), &mut out);
                }
                for id in waiting {
                    self.apply(State::Waiting, kind, id, Some(event), &mut out);
                }
            }
            Event::Peer { from, line, .. } => {
                let id = line.id();
                let (kind, state) = match line {
                    Line::Msg { .. } => {
                        let sender = self.sender(from);
                        if sender.is_some_and(|s| s.has_seen(id)) {
                            self.counters.duplicates += 1;
                            (EventKind::Msg, State::Seen)
                        } else if sender.is_some_and(|s| s.was_limited(id)) {
                            (EventKind::Msg, State::Limited)
                        } else {
                            (EventKind::Msg, State::None)
                        }
                    }
                    Line::Oversize { .. } => (EventKind::MsgTooLong, State::None),
                    Line::Ack { .. } | Line::Nak { .. } => {
                        let state = self
                            .held
                            .iter()
                            .find(|h| h.id == id && h.to == *from)
                            .map_or(State::None, |h| h.state);
                        let kind = match line {
                            Line::Ack { .. } => EventKind::Ack,
                            _ => EventKind::Nak,
                        };
                        (kind, state)
                    }
                };
                self.apply(state, kind, id, Some(event), &mut out);
            }
        }
        out
    }

    /// Fires the earliest timer due at `now`, if any. Call it until
    /// [`Messenger::poll_timeout`] is later than `now`.
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        self.now = self.now.max(now);
        self.applied.clear();
        let mut out = Actions::new();
        let due = self
            .held
            .iter()
            .filter(|h| h.deadline <= self.now)
            .min_by_key(|h| (h.deadline, h.id));
        let Some(h) = due else {
            return out;
        };
        let (id, state) = (h.id, h.state);
        let kind = match state {
            State::Waiting => EventKind::RouteWait,
            _ if h.tries >= self.config.tries => EventKind::RetransmitExhausted,
            _ => EventKind::Retransmit,
        };
        self.apply(state, kind, id, None, &mut out);
        out
    }

    fn fresh_id(&mut self) -> MessageId {
        self.counter = self.counter.wrapping_add(1);
        if self.counter == 0 {
            // Four billion messages: go on as a new run rather than reuse an id.
            self.run = self.run.wrapping_add(1);
            self.counter = 1;
        }
        MessageId::new(self.run, self.counter)
    }

    fn sender(&self, name: &Name) -> Option<&Sender> {
        self.senders.iter().find(|s| s.name == *name)
    }

    /// The sender's record, made (forgetting the least recently heard sender if the
    /// memory is full) if there is none.
    fn sender_mut(&mut self, name: &Name, id: MessageId) -> Option<&mut Sender> {
        if self.sender(name).is_none() {
            if self.senders.is_full() {
                let oldest = self
                    .senders
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.heard)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    self.senders.swap_remove(i);
                }
            }
            let fresh = Sender {
                name: name.clone(),
                run: id.run(),
                top: id.counter(),
                seen: 0,
                limited: 0,
                tokens: u64::from(self.config.rate_burst) * TOKEN,
                refilled: self.now,
                heard: self.now,
            };
            // Cannot fail: a place was just made.
            let _ = self.senders.push(fresh);
        }
        self.senders.iter_mut().find(|s| s.name == *name)
    }

    fn guard_holds(&self, guard: Guard, event: Option<&Event<'_>>) -> bool {
        match (guard, event) {
            (Guard::Always, _) => true,
            (
                Guard::TooLong
                | Guard::QueueFull
                | Guard::RouteUp
                | Guard::RouteAsked
                | Guard::RouteNone,
                Some(Event::Send { to, text }),
            ) => {
                let case = if text.len() > MAX_TEXT {
                    Guard::TooLong
                } else if self.held.is_full() {
                    Guard::QueueFull
                } else if self
                    .held
                    .iter()
                    .any(|h| h.to == *to && h.state == State::Sent)
                {
                    Guard::RouteUp
                } else if self.held.iter().any(|h| h.to == *to) {
                    Guard::RouteAsked
                } else {
                    Guard::RouteNone
                };
                case == guard
            }
            (
                Guard::Refused | Guard::RateLimited | Guard::Accepted,
                Some(Event::Peer {
                    from, verification, ..
                }),
            ) => {
                let tokens = self
                    .sender(from)
                    .map_or(u64::from(self.config.rate_burst) * TOKEN, |s| {
                        s.tokens(self.now, &self.config)
                    });
                let case = if !self.config.from.allows(from, *verification) {
                    Guard::Refused
                } else if tokens < TOKEN {
                    Guard::RateLimited
                } else {
                    Guard::Accepted
                };
                case == guard
            }
            _ => false,
        }
    }

    /// The one place transitions happen: finds the entry for the message `id` in
    /// `state`, logs it, runs its steps.
    fn apply(
        &mut self,
        state: State,
        kind: EventKind,
        id: MessageId,
        event: Option<&Event<'_>>,
        out: &mut Actions,
    ) {
        let entry = TABLE
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == state && e.event == kind)
            .find(|(_, e)| self.guard_holds(e.guard, event));
        let Some((index, &Entry { outcome, .. })) = entry else {
            log::error!(
                "{state:?}: no message table entry for {}; ignored",
                kind.name()
            );
            return;
        };
        // Cannot fail: one entry per message concerned, at most QUEUE of them.
        let _ = self.applied.push(index);
        let (next, steps) = match outcome {
            Outcome::Ignore(why) => {
                log::debug!("message {id} {state:?} -({})-> ignored: {why}", kind.name());
                return;
            }
            Outcome::Row { next, steps } => (next, steps),
        };
        let to = match next {
            Next::Stay => state,
            Next::To(to) => to,
        };
        log::debug!("message {id} {state:?} -({})-> {to:?}", kind.name());
        for &step in steps {
            self.run(step, id, event, out);
        }
        match to {
            State::None => self.held.retain(|h| h.id != id),
            State::Waiting | State::Sent => {
                if let Some(h) = self.held.iter_mut().find(|h| h.id == id) {
                    h.state = to;
                }
            }
            State::Seen | State::Limited => {}
        }
    }

    fn run(&mut self, step: Step, id: MessageId, event: Option<&Event<'_>>, out: &mut Actions) {
        let now = self.now;
        match step {
            Step::Hold => {
                if let Some(Event::Send { to, text }) = event {
                    let Ok(text) = Text::new(text) else { return };
                    let held = Held {
                        id,
                        to: to.clone(),
                        text,
                        state: State::Waiting,
                        deadline: now,
                        tries: 0,
                    };
                    // Cannot fail: the `queue full` row takes a full queue.
                    let _ = self.held.push(held);
                }
            }
            Step::Connect => {
                if let Some(Event::Send { to, .. }) = event {
                    push(out, Action::Connect(to.clone()));
                }
            }
            Step::ArmRouteWait => {
                let wait = self.config.route_wait;
                if let Some(h) = self.held.iter_mut().find(|h| h.id == id) {
                    h.deadline = now.after(wait);
                }
            }
            Step::Transmit | Step::Resend => {
                let initial = self.config.retransmit_initial;
                let Some(h) = self.held.iter_mut().find(|h| h.id == id) else {
                    return;
                };
                h.tries = if step == Step::Transmit {
                    1
                } else {
                    h.tries.saturating_add(1)
                };
                let delay = initial.saturating_mul(1u64 << h.tries.saturating_sub(1).min(32));
                h.deadline = now.after(delay);
                let line = Line::Msg {
                    id,
                    text: h.text.clone(),
                };
                let to = h.to.clone();
                if step == Step::Resend {
                    self.counters.retransmissions += 1;
                }
                push(out, Action::Send { to, line });
            }
            Step::Spend => {
                if let Some(Event::Peer { from, .. }) = event {
                    let config = self.config.clone();
                    if let Some(s) = self.sender_mut(from, id) {
                        s.tokens = s.tokens(now, &config).saturating_sub(TOKEN);
                        s.refilled = now;
                        s.heard = now;
                    }
                }
            }
            Step::Remember | Step::RememberLimited => {
                if let Some(Event::Peer { from, .. }) = event {
                    if let Some(s) = self.sender_mut(from, id) {
                        s.remember(id, step == Step::Remember);
                    }
                }
            }
            Step::Deliver => {
                if let Some(Event::Peer {
                    from,
                    verification,
                    line: Line::Msg { text, .. },
                }) = event
                {
                    let note = Note::Message {
                        from: from.clone(),
                        verification: *verification,
                        id,
                        text: text.clone(),
                    };
                    push(out, Action::Notify(note));
                }
            }
            Step::Ack => {
                if let Some(Event::Peer { from, .. }) = event {
                    let line = Line::Ack { id };
                    push(
                        out,
                        Action::Send {
                            to: from.clone(),
                            line,
                        },
                    );
                }
            }
            Step::Nak(reason) => {
                if let Some(Event::Peer { from, .. }) = event {
                    match reason {
                        Reason::RateLimited => self.counters.rate_limited += 1,
                        _ => self.counters.refused += 1,
                    }
                    let line = Line::Nak { id, reason };
                    push(
                        out,
                        Action::Send {
                            to: from.clone(),
                            line,
                        },
                    );
                }
            }
            Step::Tell(tell) => {
                let to = match event {
                    Some(Event::Send { to, .. }) => Some(to.clone()),
                    _ => self.held.iter().find(|h| h.id == id).map(|h| h.to.clone()),
                };
                let Some(to) = to else { return };
                let note = match tell {
                    Tell::Sending => Note::Sending { id, to },
                    Tell::Delivered => Note::Delivered { id, to },
                    Tell::Undelivered(reason) => Note::Undelivered { id, to, reason },
                    Tell::UndeliveredAsTold => {
                        let reason = match event {
                            Some(Event::NoRoute { reason, .. })
                            | Some(Event::Peer {
                                line: Line::Nak { reason, .. },
                                ..
                            }) => *reason,
                            _ => Reason::Unreachable,
                        };
                        Note::Undelivered { id, to, reason }
                    }
                };
                push(out, Action::Notify(note));
            }
        }
    }
}

fn push(out: &mut Actions, action: Action) {
    if let Err(dropped) = out.push(action) {
        // Unreachable by construction (MAX_ACTIONS exceeds the most one event does); the
        // unit tests check the largest case.
        log::error!("message action list full: {dropped:?} dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Policy, Verification};
    use std::string::ToString;
    use std::vec::Vec;

    fn name(s: &str) -> Name {
        Name::new(s).expect("test name")
    }

    /// Alice's messenger, run 1, at 0.
    fn alice() -> Messenger {
        Messenger::new(Config::default(), 1, Instant(0))
    }

    fn send(m: &mut Messenger, at: u64, to: &str, text: &str) -> Actions {
        m.handle(Instant(at), &Event::Send { to: name(to), text })
    }

    fn msg_from(from: &str, id: MessageId, text: &str) -> Event<'static> {
        Event::Peer {
            from: name(from),
            verification: Verification::Key,
            line: Line::Msg {
                id,
                text: Text::new(text).expect("short text"),
            },
        }
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

    fn sent(actions: &Actions) -> Vec<&Line> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { line, .. } => Some(line),
                _ => None,
            })
            .collect()
    }

    // ---- ids ----

    #[test]
    fn ids_count_from_one_under_the_run() {
        let mut m = alice();
        let first = send(&mut m, 0, "bob", "a");
        let second = send(&mut m, 0, "bob", "b");
        assert_eq!(
            notes(&first)[0],
            &Note::Sending {
                id: MessageId::new(1, 1),
                to: name("bob")
            }
        );
        assert!(
            matches!(notes(&second)[0], Note::Sending { id, .. } if *id == MessageId::new(1, 2))
        );
        assert_eq!(MessageId::new(1, 2).to_string(), "0000000100000002");
        assert_eq!(
            MessageId::parse("0000000100000002"),
            Some(MessageId::new(1, 2))
        );
        assert_eq!(MessageId::parse("100000002"), None);
    }

    #[test]
    fn an_exhausted_counter_moves_on_to_the_next_run() {
        let mut m = alice();
        m.counter = u32::MAX - 1;
        assert_eq!(m.fresh_id(), MessageId::new(1, u32::MAX));
        assert_eq!(m.fresh_id(), MessageId::new(2, 1));
    }

    // ---- the window of a sender ----

    fn sender_at(top: MessageId) -> Sender {
        let mut s = Sender {
            name: name("bob"),
            run: top.run(),
            top: top.counter(),
            seen: 0,
            limited: 0,
            tokens: 0,
            refilled: Instant(0),
            heard: Instant(0),
        };
        s.remember(top, true);
        s
    }

    #[test]
    fn the_window_remembers_ids_in_any_order() {
        let mut s = sender_at(MessageId::new(7, 10));
        for c in [12, 11, 30] {
            assert!(!s.has_seen(MessageId::new(7, c)));
            s.remember(MessageId::new(7, c), true);
            assert!(s.has_seen(MessageId::new(7, c)));
        }
        assert!(s.has_seen(MessageId::new(7, 10)), "still in the window");
        assert!(!s.has_seen(MessageId::new(7, 29)), "a gap stays unseen");
        s.remember(MessageId::new(7, 29), true);
        assert!(s.has_seen(MessageId::new(7, 29)));
    }

    #[test]
    fn ids_below_the_window_are_taken_as_seen() {
        let s = sender_at(MessageId::new(7, 100));
        assert!(!s.has_seen(MessageId::new(7, 100 - WINDOW + 1)));
        assert!(s.has_seen(MessageId::new(7, 100 - WINDOW)));
        assert!(s.has_seen(MessageId::new(7, 1)));
    }

    #[test]
    fn a_new_run_starts_the_window_afresh() {
        let mut s = sender_at(MessageId::new(7, 100));
        assert!(!s.has_seen(MessageId::new(8, 1)), "a restarted sender");
        s.remember(MessageId::new(8, 1), true);
        assert!(s.has_seen(MessageId::new(8, 1)));
        assert!(
            !s.has_seen(MessageId::new(7, 100)),
            "the previous run is forgotten"
        );
    }

    #[test]
    fn a_jump_beyond_the_window_clears_it() {
        let mut s = sender_at(MessageId::new(7, 1));
        s.remember(MessageId::new(7, 1 + 2 * WINDOW), true);
        assert!(!s.has_seen(MessageId::new(7, 2 + WINDOW)));
        assert!(s.has_seen(MessageId::new(7, 1 + 2 * WINDOW)));
    }

    // ---- sending ----

    #[test]
    fn retries_double_from_500_ms_and_give_up_at_15_5_s() {
        let mut m = alice();
        let _ = send(&mut m, 0, "bob", "hello");
        let _ = m.handle(Instant(0), &Event::Route { to: name("bob") });
        let mut fired = Vec::new();
        let mut outcome = Vec::new();
        while let Some(t) = m.poll_timeout() {
            fired.push(t.0);
            let actions = m.handle_timeout(t);
            outcome.extend(notes(&actions).into_iter().cloned());
        }
        assert_eq!(fired, [500, 1_500, 3_500, 7_500, 15_500]);
        assert_eq!(m.counters().retransmissions, 4);
        assert_eq!(
            outcome,
            [Note::Undelivered {
                id: MessageId::new(1, 1),
                to: name("bob"),
                reason: Reason::Unreachable
            }]
        );
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_a_session_sends_every_waiting_message() {
        let mut m = alice();
        for i in 0..QUEUE {
            let actions = send(&mut m, 0, "bob", "x");
            let connects = actions
                .iter()
                .filter(|a| matches!(a, Action::Connect(_)))
                .count();
            assert_eq!(connects, usize::from(i == 0), "one session asked for");
        }
        let actions = send(&mut m, 0, "carol", "x");
        assert!(matches!(
            notes(&actions).as_slice(),
            [
                Note::Sending { .. },
                Note::Undelivered {
                    reason: Reason::QueueFull,
                    ..
                }
            ]
        ));
        let actions = m.handle(Instant(5), &Event::Route { to: name("bob") });
        assert_eq!(
            sent(&actions).len(),
            QUEUE,
            "the largest event fits MAX_ACTIONS"
        );
        assert_eq!(m.last_entries().len(), QUEUE);
    }

    #[test]
    fn an_over_long_text_is_refused_at_once_and_a_full_one_goes() {
        let mut m = alice();
        let long = "é".repeat(MAX_TEXT / 2) + "x";
        let actions = send(&mut m, 0, "bob", &long);
        assert!(matches!(
            notes(&actions).as_slice(),
            [
                Note::Sending { .. },
                Note::Undelivered {
                    reason: Reason::TooLong,
                    ..
                }
            ]
        ));
        assert_eq!(m.held(), 0);
        let full = "é".repeat(MAX_TEXT / 2);
        let _ = send(&mut m, 0, "bob", &full);
        assert_eq!(m.held(), 1);
    }

    #[test]
    fn an_ack_from_another_peer_settles_nothing() {
        let mut m = alice();
        let _ = send(&mut m, 0, "bob", "hi");
        let _ = m.handle(Instant(0), &Event::Route { to: name("bob") });
        let ack = Event::Peer {
            from: name("mallory"),
            verification: Verification::Key,
            line: Line::Ack {
                id: MessageId::new(1, 1),
            },
        };
        assert!(m.handle(Instant(10), &ack).is_empty());
        assert_eq!(m.held(), 1);
    }

    // ---- receiving ----

    #[test]
    fn a_sender_has_a_burst_of_ten_then_five_a_second() {
        let mut m = alice();
        let mut accepted = 0;
        for c in 1..=20 {
            let actions = m.handle(Instant(0), &msg_from("bob", MessageId::new(9, c), "x"));
            accepted += notes(&actions).len();
        }
        assert_eq!(accepted, 10);
        assert_eq!(m.counters().rate_limited, 10);
        // 5 per second: one token every 200 ms.
        let actions = m.handle(Instant(199), &msg_from("bob", MessageId::new(9, 21), "x"));
        assert!(notes(&actions).is_empty());
        let actions = m.handle(Instant(200), &msg_from("bob", MessageId::new(9, 22), "x"));
        assert_eq!(notes(&actions).len(), 1);
        // A duplicate is acknowledged even over the rate.
        let actions = m.handle(Instant(200), &msg_from("bob", MessageId::new(9, 1), "x"));
        assert_eq!(
            sent(&actions),
            [&Line::Ack {
                id: MessageId::new(9, 1)
            }]
        );
    }

    #[test]
    fn the_least_recently_heard_sender_is_forgotten_and_refused_ones_never_kept() {
        let mut m = alice();
        let names: Vec<std::string::String> = (0..=SENDERS).map(|i| std::format!("s{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            let _ = m.handle(Instant(i as u64), &msg_from(n, MessageId::new(1, 1), "x"));
        }
        assert_eq!(m.senders(), SENDERS);
        assert!(m.sender(&name("s0")).is_none(), "the oldest went");
        assert!(m.sender(&name("s1")).is_some());
        let unbound = Event::Peer {
            from: name("eve"),
            verification: Verification::Unbound,
            line: Line::Msg {
                id: MessageId::new(1, 1),
                text: Text::new("x").expect("short"),
            },
        };
        let actions = m.handle(Instant(100), &unbound);
        assert_eq!(
            sent(&actions),
            [&Line::Nak {
                id: MessageId::new(1, 1),
                reason: Reason::Refused
            }]
        );
        assert!(m.sender(&name("eve")).is_none());
        assert!(m.sender(&name("s1")).is_some());
    }

    #[test]
    fn the_policy_wants_a_listed_key_verified_sender() {
        let mut only = heapless::Vec::new();
        let _ = only.push(name("bob"));
        let policy = Policy::Only(only);
        for v in Verification::ALL {
            assert_eq!(policy.allows(&name("bob"), v), v.is_key_verified(), "{v:?}");
            assert!(!policy.allows(&name("carol"), v));
            assert_eq!(
                Policy::AnyVerified.allows(&name("carol"), v),
                v.is_key_verified()
            );
        }
    }

    #[test]
    fn message_text_is_escaped_in_notes_and_lines() {
        let note = Note::Message {
            from: name("bob"),
            verification: Verification::New,
            id: MessageId::new(1, 1),
            text: Text::new("hi\u{1b}[2J\nthere").expect("short"),
        };
        assert_eq!(
            note.to_string(),
            "message bob new 0000000100000001: hi\\u{1b}[2J\\u{a}there"
        );
    }
}
