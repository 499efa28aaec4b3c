//! [`Conference`]: the members, their legs, and the decisions of the conference layer.

use super::{Action, ConfId, Entry, Event, LegEnd, MAX_MEMBERS, Note, Roster, Status};
use crate::types::Verification;
use crate::vocab::{Name, PublicKey};

/// Most actions one event yields: a roster to every member, links to every member, and
/// a few notes, with room to spare.
pub const MAX_ACTIONS: usize = 32;

/// The actions of one event, to execute in order.
pub type Actions = heapless::Vec<Action, MAX_ACTIONS>;

/// Where this phone stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In no conference.
    Idle,
    /// An invitation into this conference rings; no leg is up yet.
    Invited(ConfId),
    /// A member of this conference.
    Member(ConfId),
}

/// This phone's leg with one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// None yet: the member sorts before this phone and dials it.
    Awaiting,
    /// This phone dialled it.
    Dialling,
    /// It dialled this phone: ringing, held or accepted.
    Incoming,
    /// Up.
    Connected,
}

#[derive(Debug, Clone)]
struct Member {
    name: Name,
    key: Option<PublicKey>,
    leg: Leg,
    verification: Option<Verification>,
    /// The connected legs it last reported, and that report's number.
    links: Option<(u32, u8)>,
    /// Its leg is an ordinary call this phone adopted, and no ROSTER from it has yet
    /// shown that it took the call as a leg too: LINKS wait for that ROSTER (sent
    /// before, they could reach a phone in no conference, which ignores them).
    adopted: bool,
}

impl Member {
    /// Whether the conference event lists it: every member but one known only by name
    /// from a roster, which no member has reached yet (no key, no leg with this phone).
    /// A member whose introducer fails to reach it (an original phone refused, no
    /// answer) thus never shows on the other phones, and is not counted in `legs=K/N`.
    fn is_shown(&self) -> bool {
        !(self.leg == Leg::Awaiting && self.key.is_none())
    }

    fn new(name: Name, leg: Leg) -> Member {
        Member {
            name,
            key: None,
            leg,
            verification: None,
            links: None,
            adopted: false,
        }
    }
}

/// The conference layer of one phone. See the module docs ([`super`]) for the rules.
#[derive(Debug)]
pub struct Conference {
    me: Name,
    key: PublicKey,
    phase: Phase,
    /// Every member but this phone.
    members: heapless::Vec<Member, { MAX_MEMBERS - 1 }>,
    /// The last conference event given, so that it is given again only when it changes.
    last: Option<Note>,
    /// Members whose leg ended: a roster still listing them does not bring them back
    /// (only an `invite` does).
    gone: heapless::Deque<Name, MAX_MEMBERS>,
    /// The number of the last LINKS this phone sent.
    links_seq: u32,
}

fn push(actions: &mut Actions, action: Action) {
    // MAX_ACTIONS bounds what any event yields (see its docs); an overflow is a bug.
    let pushed = actions.push(action);
    debug_assert!(pushed.is_ok(), "more than MAX_ACTIONS actions");
}

impl Conference {
    /// The layer of the phone named `me`, whose static key is `key`: in no conference.
    pub fn new(me: Name, key: PublicKey) -> Conference {
        Conference {
            me,
            key,
            phase: Phase::Idle,
            members: heapless::Vec::new(),
            last: None,
            gone: heapless::Deque::new(),
            links_seq: 0,
        }
    }

    /// Where this phone stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The members but this phone, in the order this phone learnt of them.
    pub fn members(&self) -> impl Iterator<Item = &Name> {
        self.members.iter().map(|m| &m.name)
    }

    /// The members this phone holds a connected leg with.
    pub fn connected(&self) -> impl Iterator<Item = &Name> {
        self.members
            .iter()
            .filter(|m| m.leg == Leg::Connected)
            .map(|m| &m.name)
    }

    /// The roster as this phone would send it now, or `None` in no conference.
    pub fn roster(&self) -> Option<Roster> {
        let Phase::Member(id) = self.phase else {
            return None;
        };
        let mut members = heapless::Vec::new();
        let me = Entry {
            name: self.me.clone(),
            key: Some(self.key),
        };
        let others = self.members.iter().map(|m| Entry {
            name: m.name.clone(),
            key: m.key,
        });
        for entry in core::iter::once(me).chain(others) {
            // At most MAX_MEMBERS: this phone and MAX_MEMBERS - 1 others.
            let _ = members.push(entry);
        }
        Some(Roster { id, members })
    }

    fn find(&self, name: &Name) -> Option<usize> {
        self.members.iter().position(|m| &m.name == name)
    }

    /// Applies one event and says what to do.
    pub fn handle(&mut self, event: &Event<'_>) -> Actions {
        let mut out = Actions::new();
        match (self.phase, event) {
            (Phase::Idle, Event::Start { id, others }) => self.start(*id, others, &mut out),
            (Phase::Member(id), Event::Invite(name)) => self.invite(id, name, &mut out),
            (Phase::Idle, Event::Hangup) => {}
            (Phase::Invited(id) | Phase::Member(id), Event::Hangup) => {
                for m in self.members.iter().filter(|m| m.leg != Leg::Awaiting) {
                    push(&mut out, Action::Hangup(m.name.clone()));
                }
                self.leave(id, &mut out);
            }
            (_, Event::Incoming { from, id }) => self.incoming(from, *id, &mut out),
            (
                _,
                Event::Connected {
                    peer,
                    key,
                    verification,
                },
            ) => self.leg_connected(peer, *key, *verification, &mut out),
            (
                Phase::Idle,
                Event::Adopt {
                    peer,
                    key,
                    verification,
                    id,
                },
            ) => self.adopt(*id, peer, *key, *verification, &mut out),
            (_, Event::Ended { peer, reason }) => self.ended(peer, *reason, &mut out),
            (Phase::Member(id), Event::Roster { from, roster }) => {
                self.roster_from(id, from, roster, &mut out);
            }
            (
                Phase::Member(id),
                Event::Links {
                    from,
                    id: of,
                    seq,
                    peers,
                },
            ) if id == *of => {
                if let Some(i) = self.find(from) {
                    let fresh = self.members[i].links.is_none_or(|(last, _)| *seq > last);
                    if self.members[i].leg == Leg::Connected && fresh {
                        let mut distinct: heapless::Vec<&Name, MAX_MEMBERS> = heapless::Vec::new();
                        for p in peers.iter() {
                            if !distinct.contains(&p) && distinct.push(p).is_err() {
                                break;
                            }
                        }
                        // At most MAX_MEMBERS.
                        self.members[i].links = Some((*seq, distinct.len() as u8));
                        self.note_conference(&mut out);
                    }
                }
            }
            // `conf` while in a conference, `invite` outside one, a call adopted while
            // invited or in one, a roster or links outside one or about another: nothing
            // to do.
            _ => {}
        }
        out
    }

    fn start(&mut self, id: ConfId, others: &[Name], out: &mut Actions) {
        self.members.clear();
        self.last = None;
        self.gone.clear();
        for name in others {
            if *name == self.me || self.find(name).is_some() {
                continue;
            }
            if self
                .members
                .push(Member::new(name.clone(), Leg::Dialling))
                .is_err()
            {
                push(out, Action::Notify(Note::Full(name.clone())));
                continue;
            }
            push(
                out,
                Action::Dial {
                    to: name.clone(),
                    id,
                },
            );
        }
        if self.members.is_empty() {
            return;
        }
        self.phase = Phase::Member(id);
        self.note_conference(out);
    }

    fn invite(&mut self, id: ConfId, name: &Name, out: &mut Actions) {
        if *name == self.me {
            return;
        }
        match self.find(name) {
            // Only named by a roster, not reached by anyone yet (its introducer's dial
            // may have failed): this phone dials it itself.
            Some(i) if !self.members[i].is_shown() => self.members[i].leg = Leg::Dialling,
            Some(_) => return,
            None => {
                self.forget_gone(name);
                if self
                    .members
                    .push(Member::new(name.clone(), Leg::Dialling))
                    .is_err()
                {
                    push(out, Action::Notify(Note::Full(name.clone())));
                    return;
                }
            }
        }
        push(
            out,
            Action::Dial {
                to: name.clone(),
                id,
            },
        );
        self.send_rosters(out);
        self.note_conference(out);
    }

    fn incoming(&mut self, from: &Name, id: Option<ConfId>, out: &mut Actions) {
        match (self.phase, id) {
            // An ordinary call: the call machine's business.
            (Phase::Idle, None) => {}
            (Phase::Idle, Some(id)) => {
                self.members.clear();
                self.last = None;
                self.gone.clear();
                let _ = self.members.push(Member::new(from.clone(), Leg::Incoming));
                self.phase = Phase::Invited(id);
                push(out, Action::Ring(from.clone()));
            }
            (Phase::Invited(ours), Some(id)) if ours == id => match self.find(from) {
                Some(_) => {}
                None => {
                    if self
                        .members
                        .push(Member::new(from.clone(), Leg::Incoming))
                        .is_ok()
                    {
                        push(out, Action::Hold(from.clone()));
                    } else {
                        push(out, Action::Busy(from.clone()));
                    }
                }
            },
            (Phase::Member(ours), Some(id)) if ours == id => match self.find(from) {
                Some(i) if matches!(self.members[i].leg, Leg::Awaiting | Leg::Dialling) => {
                    self.members[i].leg = Leg::Incoming;
                    push(out, Action::Accept(from.clone()));
                }
                // A second leg with a member: one is enough.
                Some(_) => push(out, Action::Busy(from.clone())),
                None => {
                    if self
                        .members
                        .push(Member::new(from.clone(), Leg::Incoming))
                        .is_ok()
                    {
                        self.forget_gone(from);
                        push(out, Action::Accept(from.clone()));
                        self.send_rosters(out);
                        self.note_conference(out);
                    } else {
                        push(out, Action::Busy(from.clone()));
                    }
                }
            },
            // No id, or another conference's, while in one or invited: busy.
            (Phase::Invited(_) | Phase::Member(_), _) => push(out, Action::Busy(from.clone())),
        }
    }

    fn leg_connected(
        &mut self,
        peer: &Name,
        key: PublicKey,
        verification: Verification,
        out: &mut Actions,
    ) {
        let Some(i) = self.find(peer) else { return };
        if self.members[i].leg == Leg::Connected {
            return;
        }
        match self.phase {
            Phase::Idle => return,
            Phase::Invited(id) => {
                self.phase = Phase::Member(id);
                for m in self.members.iter().filter(|m| m.name != *peer) {
                    push(out, Action::Accept(m.name.clone()));
                }
            }
            Phase::Member(_) => {}
        }
        let member = &mut self.members[i];
        member.leg = Leg::Connected;
        member.key = Some(key);
        member.verification = Some(verification);
        push(out, Action::Notify(Note::Joined(peer.clone())));
        // Every member learns that `peer` is in (its key), the peer the roster.
        self.send_rosters(out);
        self.send_links(out);
        self.note_conference(out);
    }

    /// The ordinary call with `peer` becomes the first leg of conference `id`.
    fn adopt(
        &mut self,
        id: ConfId,
        peer: &Name,
        key: PublicKey,
        verification: Verification,
        out: &mut Actions,
    ) {
        if *peer == self.me {
            return;
        }
        self.members.clear();
        self.last = None;
        self.gone.clear();
        let mut member = Member::new(peer.clone(), Leg::Connected);
        member.key = Some(key);
        member.verification = Some(verification);
        member.adopted = true;
        // The first member of an empty list: there is room.
        let _ = self.members.push(member);
        self.phase = Phase::Member(id);
        // As for a leg that just connected, but no `joined` (the user talks to it
        // already), and the links wait for the peer's roster.
        self.send_rosters(out);
        self.send_links(out);
        self.note_conference(out);
    }

    fn ended(&mut self, peer: &Name, reason: LegEnd, out: &mut Actions) {
        let Some(i) = self.find(peer) else { return };
        let was_connected = self.members[i].leg == Leg::Connected;
        self.members.remove(i);
        if self.gone.is_full() {
            self.gone.pop_front();
        }
        let _ = self.gone.push_back(peer.clone());
        match self.phase {
            Phase::Idle => {}
            Phase::Invited(_) => {
                if self.members.is_empty() {
                    self.phase = Phase::Idle;
                }
            }
            Phase::Member(id) => {
                push(out, Action::Notify(Note::Left(peer.clone(), reason)));
                if self.members.is_empty() {
                    self.leave(id, out);
                    return;
                }
                if was_connected {
                    self.send_links(out);
                }
                self.note_conference(out);
            }
        }
    }

    fn roster_from(&mut self, id: ConfId, from: &Name, roster: &Roster, out: &mut Actions) {
        if roster.id != id {
            return;
        }
        match self.find(from) {
            Some(i) if self.members[i].leg == Leg::Connected => {}
            _ => return,
        }
        let mut grew = false;
        for entry in &roster.members {
            if entry.name == self.me || self.gone.iter().any(|g| *g == entry.name) {
                continue;
            }
            match self.find(&entry.name) {
                Some(i) => {
                    if self.members[i].key.is_none() && entry.key.is_some() {
                        self.members[i].key = entry.key;
                        grew = true;
                    }
                }
                None => {
                    let mut member = Member::new(entry.name.clone(), Leg::Awaiting);
                    member.key = entry.key;
                    if self.members.push(member).is_err() {
                        break;
                    }
                    grew = true;
                }
            }
        }
        for m in &mut self.members {
            let after_me = m.name.as_str().as_bytes() > self.me.as_str().as_bytes();
            if m.leg == Leg::Awaiting && m.key.is_some() && after_me {
                m.leg = Leg::Dialling;
                push(
                    out,
                    Action::Dial {
                        to: m.name.clone(),
                        id,
                    },
                );
            }
        }
        if grew {
            self.send_rosters(out);
        }
        if let Some(i) = self.find(from).filter(|&i| self.members[i].adopted) {
            // Its roster shows it in the conference: the links it has waited for.
            self.members[i].adopted = false;
            push(
                out,
                Action::SendLinks {
                    to: from.clone(),
                    id,
                    seq: self.links_seq,
                    peers: self.links(),
                },
            );
        }
        self.note_conference(out);
    }

    fn forget_gone(&mut self, name: &Name) {
        let mut kept = heapless::Deque::new();
        for g in self.gone.iter().filter(|g| *g != name) {
            let _ = kept.push_back(g.clone());
        }
        self.gone = kept;
    }

    fn leave(&mut self, id: ConfId, out: &mut Actions) {
        self.members.clear();
        self.last = None;
        self.phase = Phase::Idle;
        push(out, Action::Notify(Note::Ended(id)));
    }

    fn send_rosters(&self, out: &mut Actions) {
        let Some(roster) = self.roster() else { return };
        for name in self.connected() {
            push(
                out,
                Action::SendRoster {
                    to: name.clone(),
                    roster: roster.clone(),
                },
            );
        }
    }

    fn send_links(&mut self, out: &mut Actions) {
        let Phase::Member(id) = self.phase else {
            return;
        };
        self.links_seq = self.links_seq.wrapping_add(1);
        let seq = self.links_seq;
        let peers = self.links();
        let ready = self
            .members
            .iter()
            .filter(|m| m.leg == Leg::Connected && !m.adopted);
        for name in ready.map(|m| &m.name) {
            push(
                out,
                Action::SendLinks {
                    to: name.clone(),
                    id,
                    seq,
                    peers: peers.clone(),
                },
            );
        }
    }

    /// The members this phone holds a connected leg with, as LINKS lists them.
    fn links(&self) -> heapless::Vec<Name, MAX_MEMBERS> {
        let mut peers = heapless::Vec::new();
        for name in self.connected() {
            // At most MAX_MEMBERS - 1 others.
            let _ = peers.push(name.clone());
        }
        peers
    }

    fn note_conference(&mut self, out: &mut Actions) {
        let Phase::Member(id) = self.phase else {
            return;
        };
        // At most MAX_MEMBERS - 1 others: a u8.
        let of = self.members.iter().filter(|m| m.is_shown()).count() as u8;
        let mut members = heapless::Vec::new();
        for m in self.members.iter().filter(|m| m.is_shown()) {
            let connected = m.leg == Leg::Connected;
            let _ = members.push(Status {
                name: m.name.clone(),
                verification: m.verification.filter(|_| connected),
                legs: m.links.map_or(u8::from(connected), |(_, legs)| legs),
                of,
            });
        }
        let note = Note::Conference { id, members };
        if self.last.as_ref() != Some(&note) {
            self.last = Some(note.clone());
            push(out, Action::Notify(note));
        }
    }
}
