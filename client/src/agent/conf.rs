//! The agent's side of conferences: one call machine per leg, and the conference layer
//! ([`parlo_fsm::conference::Conference`]) above them.
//!
//! A conference leg is an ordinary call, made by its own [`Machine`], whose START carries
//! the conference id ([`fsm::Config::conference`]). The layer decides which legs to dial,
//! accept, ring, hold, refuse or hang up; the agent runs the legs' machines, tells the layer
//! what they do (connected, ended, an incoming START), carries the layer's ROSTER and
//! LINKS lines over the legs' encrypted sessions, and prints the layer's notes
//! (`conference`, `joined`, `left`, `full`, `conference-ended`) in place of the legs'
//! own call events. Routing is by address: a signalling message, a media packet or a
//! session line from a leg's peer goes to that leg.
//!
//! Rules the agent adds to the layer's:
//! - A leg is answered at once only when its caller is verified by key; an invitation
//!   from anyone else rings, for the user to decide.
//! - A conference needs encrypted legs (the roster travels inside them): `conf` and
//!   `invite` are refused under `--security off`, and a leg that connects in the clear is
//!   hung up.
//!
//! Original-protocol phones cannot be members: a leg's machine (its conference set) does
//! not call one at all (`left NAME reason=original-phone`), and their STARTs, which carry
//! no conference id, get BUSY during a conference.

use std::net::SocketAddr;

use parlo_fsm::conference::{self as conf, ConfId, LegEnd};
use parlo_fsm::{self as fsm, Action, CallIds, Machine, Note, PublicKey, State};
use parlo_net::message::SessionLine;

use super::{Agent, Call, Origin, Output, Pending, state_name};
use crate::media::MediaStats;
use crate::output::{Event as Out, LegStatus, Member};

/// What the layer decided for an incoming leg, carried out once its machine has verified
/// the caller and rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Answer it at once (if its caller is verified by key).
    Accept,
    /// Let the user answer: the invitation.
    Ring,
    /// Leave it ringing, unannounced, until the invitation is answered.
    Hold,
}

/// One leg: the call machine with one member.
#[derive(Debug)]
pub(super) struct Leg<R> {
    /// The member.
    pub(super) peer: fsm::Name,
    /// Its call.
    pub(super) machine: Machine<R>,
    /// For an incoming leg: what to do once it rings.
    pub(super) answer: Option<Answer>,
    /// Whether it rings (its machine announced the caller).
    pub(super) ringing: bool,
    /// Its `incoming` event, kept while it is held (shown if it is the one to ring).
    pub(super) incoming: Option<Out>,
    /// The peer's address while its media runs.
    pub(super) media: Option<SocketAddr>,
}

impl<R: CallIds + Clone> Agent<R> {
    /// A fresh call machine for a leg of conference `id`: its STARTs carry the id, and it
    /// never answers by itself (the layer decides).
    fn leg_machine(&mut self, id: Option<ConfId>) -> Machine<R> {
        let mut config = self.machine.config().clone();
        config.conference = id;
        config.auto_answer = false;
        Machine::new(config, self.ids.clone(), self.now)
    }

    fn add_leg(&mut self, peer: fsm::Name, machine: Machine<R>) {
        self.legs.retain(|l| l.peer != peer);
        self.legs.push(Leg {
            peer,
            machine,
            answer: None,
            ringing: false,
            incoming: None,
            media: None,
        });
    }

    pub(super) fn leg(&self, peer: &fsm::Name) -> Option<&Leg<R>> {
        self.legs.iter().find(|l| &l.peer == peer)
    }

    pub(super) fn leg_mut(&mut self, peer: &fsm::Name) -> Option<&mut Leg<R>> {
        self.legs.iter_mut().find(|l| &l.peer == peer)
    }

    /// The leg whose peer is at `addr`.
    pub(super) fn leg_at(&self, addr: SocketAddr) -> Option<&Leg<R>> {
        self.legs
            .iter()
            .find(|l| l.machine.peer_addr() == Some(addr) || l.media == Some(addr))
    }

    /// Whether this phone is in a conference or invited into one.
    pub(super) fn in_conference(&self) -> bool {
        self.conference.phase() != conf::Phase::Idle
    }

    /// A fresh conference id, from the call ids' random source.
    fn conference_id(&mut self) -> ConfId {
        let high = u64::from(self.ids.next_call_id().0);
        let low = u64::from(self.ids.next_call_id().0);
        ConfId((high << 32) | low)
    }

    /// Why conferences cannot be held here, if they cannot.
    fn conference_refusal(&self) -> Option<String> {
        (self.machine.config().security == fsm::Security::Off).then(|| {
            "a conference needs encrypted calls, and --security is off: its members' list \
             travels inside the calls' encrypted sessions"
                .to_owned()
        })
    }

    // ---- the user's commands ----

    /// `conf NAME ...`.
    pub(super) fn start_conference(&mut self, others: &[fsm::Name], origin: Origin) {
        if let Some(reason) = self.conference_refusal() {
            return self.print(Out::Error { reason }, Some(origin));
        }
        if self.in_conference() {
            let reason = "already in a conference: invite NAME adds a member".to_owned();
            return self.print(Out::Error { reason }, Some(origin));
        }
        if self.machine.state() != State::Idle {
            let reason = "in a call: invite NAME turns it into a conference with NAME, or hang \
                          up first"
                .to_owned();
            return self.print(Out::Error { reason }, Some(origin));
        }
        let id = self.conference_id();
        log::info!("starting conference {id} with {} others", others.len());
        self.answer = Some(origin);
        let actions = self.conference.handle(&conf::Event::Start { id, others });
        self.carry_out_conference(actions);
        self.answer = None;
    }

    /// `invite NAME`: into the conference, or turning the two-party call into one.
    pub(super) fn invite(&mut self, name: fsm::Name, origin: Origin) {
        if let Some(reason) = self.conference_refusal() {
            return self.print(Out::Error { reason }, Some(origin));
        }
        if name == *self.name() {
            let reason = "cannot invite this phone itself".to_owned();
            return self.print(Out::Error { reason }, Some(origin));
        }
        match self.conference.phase() {
            conf::Phase::Member(_) => {}
            conf::Phase::Invited(_) => {
                let reason = "the invitation is not answered yet: accept it first".to_owned();
                return self.print(Out::Error { reason }, Some(origin));
            }
            conf::Phase::Idle => {
                if let Err(reason) = self.adopt_call(None) {
                    return self.print(Out::Error { reason }, Some(origin));
                }
            }
        }
        if self.conference.members().any(|m| *m == name) {
            let reason = format!("{name} is already in the conference");
            return self.print(Out::Error { reason }, Some(origin));
        }
        self.answer = Some(origin);
        let actions = self.conference.handle(&conf::Event::Invite(name));
        self.carry_out_conference(actions);
        self.answer = None;
    }

    /// The two-party call in progress becomes a leg of a conference: a fresh one (`None`,
    /// this phone invites), or the one whose roster its peer sent. Its machine and media
    /// go on as they are; the phone's own machine is idle again.
    fn adopt_call(&mut self, id: Option<ConfId>) -> Result<(), String> {
        let (Some(peer), Some(key), Some(verification)) = (
            self.machine.peer().cloned(),
            self.machine.peer_key(),
            self.machine.verification(),
        ) else {
            return Err(match self.machine.state() {
                State::Idle => "no conference or call to invite into: conf NAME ... starts a \
                                conference"
                    .to_owned(),
                _ => "the call is not encrypted: a conference needs encrypted calls".to_owned(),
            });
        };
        if self.machine.state() != State::InCall {
            return Err("the call is not connected yet".to_owned());
        }
        let id = match id {
            Some(id) => id,
            None => self.conference_id(),
        };
        log::info!("the call with {peer} becomes a leg of conference {id}");
        let fresh = Machine::new(self.machine.config().clone(), self.ids.clone(), self.now);
        let machine = std::mem::replace(&mut self.machine, fresh);
        let media = machine.peer_addr();
        self.add_leg(peer.clone(), machine);
        if let Some(leg) = self.leg_mut(&peer) {
            leg.media = media;
        }
        let event = conf::Event::Adopt {
            peer,
            key,
            verification,
            id,
        };
        let actions = self.conference.handle(&event);
        self.carry_out_conference(actions);
        Ok(())
    }

    /// `hangup` in a conference: leave it.
    pub(super) fn leave_conference(&mut self, origin: Option<Origin>) {
        self.answer = origin;
        let actions = self.conference.handle(&conf::Event::Hangup);
        self.carry_out_conference(actions);
        self.answer = None;
    }

    /// `accept` or `reject` for a ringing invitation: the leg the user was told of.
    pub(super) fn answer_invitation(&mut self, accept: bool, origin: Origin) -> bool {
        let Some(leg) = self.legs.iter().find(|l| {
            l.ringing
                && l.incoming.is_none()
                && matches!(l.answer, Some(Answer::Ring | Answer::Accept))
        }) else {
            return false;
        };
        let event = if accept {
            fsm::Event::Accept
        } else {
            fsm::Event::Reject
        };
        let call = Call::Leg(leg.peer.clone());
        self.pending
            .push_back(Pending::Event(call, event, Some(origin)));
        true
    }

    // ---- what comes from the network ----

    /// A START from `from` while a conference is going, or one carrying a conference id:
    /// the layer decides. Returns the START back when it is the phone's own call's
    /// business.
    pub(super) fn conference_start(
        &mut self,
        from: SocketAddr,
        message: fsm::Message,
        sender: fsm::Sender,
        pinned: Option<PublicKey>,
    ) -> Option<fsm::Message> {
        let (caller, id) = match &message {
            fsm::Message::Start { caller, conf, .. } => (caller.clone(), *conf),
            _ => return Some(message),
        };
        // A phone in an ordinary call is busy for invitations too: its machine says so.
        if !self.in_conference() && (id.is_none() || self.machine.state() != State::Idle) {
            return Some(message);
        }
        let event = conf::Event::Incoming {
            from: caller.clone(),
            id,
        };
        let actions = self.conference.handle(&event);
        let answer = actions.iter().find_map(|a| match a {
            conf::Action::Accept(n) if *n == caller => Some(Answer::Accept),
            conf::Action::Ring(n) if *n == caller => Some(Answer::Ring),
            conf::Action::Hold(n) if *n == caller => Some(Answer::Hold),
            _ => None,
        });
        let peer = fsm::Event::Peer {
            from,
            message,
            sender,
            pinned,
        };
        match answer {
            Some(answer) => {
                let machine = self.leg_machine(id);
                self.add_leg(caller.clone(), machine);
                if let Some(leg) = self.leg_mut(&caller) {
                    leg.answer = Some(answer);
                }
                self.pending
                    .push_back(Pending::Event(Call::Leg(caller.clone()), peer, None));
            }
            None => self.busy(peer),
        }
        // The rest (rosters, notes) once the leg exists; its own answer waits for it to
        // ring.
        let rest: Vec<conf::Action> = actions
            .into_iter()
            .filter(|a| {
                !matches!(a, conf::Action::Accept(n) | conf::Action::Ring(n)
                    | conf::Action::Hold(n) | conf::Action::Busy(n) if *n == caller)
            })
            .collect();
        self.carry_out_conference(rest);
        None
    }

    /// Answers a START with BUSY: given to a machine in a call, which refuses it as the
    /// START of someone else.
    fn busy(&mut self, start: fsm::Event) {
        let busy = |state: State| matches!(state, State::Dialing | State::Ringing | State::InCall);
        let call = if busy(self.machine.state()) {
            Some(Call::Main)
        } else {
            self.legs
                .iter()
                .find(|l| busy(l.machine.state()))
                .map(|l| Call::Leg(l.peer.clone()))
        };
        match call {
            Some(call) => self.pending.push_back(Pending::Event(call, start, None)),
            None => log::info!("a START during the conference's set-up: not answered"),
        }
    }

    /// A ROSTER or LINKS line out of the session with `from` and `key`.
    pub(super) fn conference_line(&mut self, from: SocketAddr, key: PublicKey, line: SessionLine) {
        let member = self
            .leg_at(from)
            .filter(|l| l.machine.peer_key() == Some(key))
            .map(|l| l.peer.clone());
        let member = match member {
            Some(member) => member,
            None => {
                // The peer of the phone's ordinary call turned it into a conference.
                let ours = self.machine.peer_addr() == Some(from)
                    && self.machine.peer_key() == Some(key)
                    && self.machine.state() == State::InCall
                    && !self.in_conference();
                let (true, SessionLine::Roster(roster), Some(peer)) =
                    (ours, &line, self.machine.peer().cloned())
                else {
                    return log::debug!("a conference line from {from}, not a member: ignored");
                };
                log::info!("{peer} turned the call into conference {}", roster.id);
                if let Err(why) = self.adopt_call(Some(roster.id)) {
                    return log::warn!("cannot join {peer}'s conference: {why}");
                }
                peer
            }
        };
        let actions = match &line {
            SessionLine::Roster(roster) => self.conference.handle(&conf::Event::Roster {
                from: member,
                roster,
            }),
            SessionLine::Links { id, seq, peers } => self.conference.handle(&conf::Event::Links {
                from: member,
                id: *id,
                seq: *seq,
                peers,
            }),
            _ => return,
        };
        self.carry_out_conference(actions);
    }

    // ---- the layer's actions ----

    fn carry_out_conference(&mut self, actions: impl IntoIterator<Item = conf::Action>) {
        for action in actions {
            self.carry_out_conference_action(action);
        }
    }

    fn carry_out_conference_action(&mut self, action: conf::Action) {
        match action {
            conf::Action::Dial { to, id } => {
                let machine = self.leg_machine(Some(id));
                self.add_leg(to.clone(), machine);
                self.pending.push_back(Pending::Event(
                    Call::Leg(to.clone()),
                    fsm::Event::Dial(to),
                    None,
                ));
            }
            conf::Action::Accept(name) => self.decide(&name, Answer::Accept),
            conf::Action::Ring(name) => self.decide(&name, Answer::Ring),
            conf::Action::Hold(name) => self.decide(&name, Answer::Hold),
            // BUSY is answered where the START is (`conference_start`).
            conf::Action::Busy(name) => log::debug!("{name}'s START gets BUSY"),
            conf::Action::SendRoster { to, roster } => {
                self.send_over_leg(&to, SessionLine::Roster(roster));
            }
            conf::Action::SendLinks { to, id, seq, peers } => {
                self.send_over_leg(&to, SessionLine::Links { id, seq, peers });
            }
            conf::Action::Hangup(name) => self.hang_up_leg(name),
            conf::Action::Notify(note) => {
                let event = conference_event(note);
                let answer = self.answer.take();
                self.print(event, answer);
            }
        }
    }

    /// Hangs up the leg with `name`, unless it is over or being hung up already.
    pub(super) fn hang_up_leg(&mut self, name: fsm::Name) {
        let open = self.leg(&name).is_some_and(|l| {
            matches!(
                l.machine.state(),
                State::Dialing | State::Ringing | State::InCall
            )
        });
        let call = Call::Leg(name);
        let queued = self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Event(c, fsm::Event::Hangup, _) if *c == call));
        if open && !queued {
            self.pending
                .push_back(Pending::Event(call, fsm::Event::Hangup, None));
        }
    }

    /// The layer's answer for an incoming leg: carried out now if it rings already, else
    /// once it does.
    fn decide(&mut self, name: &fsm::Name, answer: Answer) {
        let Some(leg) = self.leg_mut(name) else {
            return;
        };
        leg.answer = Some(answer);
        if leg.ringing {
            self.answer_leg(name);
        }
    }

    /// Carries out the layer's answer for the ringing leg with `name`.
    fn answer_leg(&mut self, name: &fsm::Name) {
        let Some(leg) = self.legs.iter_mut().find(|l| l.peer == *name) else {
            return;
        };
        let verification = leg.machine.verification();
        let accept = match (leg.answer, verification) {
            (Some(Answer::Accept), v) => v == Some(fsm::Verification::Key),
            // An intercom (--auto-answer) takes the invitations it would take as calls.
            (Some(Answer::Ring), Some(v)) => self.machine.config().answers_by_itself(name, v),
            (Some(Answer::Ring), None) => false,
            (Some(Answer::Hold) | None, _) => return,
        };
        if accept {
            leg.incoming = None;
            let call = Call::Leg(name.clone());
            return self
                .pending
                .push_back(Pending::Event(call, fsm::Event::Accept, None));
        }
        // An invitation, or a member not verified by key: the user decides.
        if let Some(event) = leg.incoming.take() {
            log::info!("{name} invites this phone into a conference: it rings");
            self.print(event, None);
        }
    }

    /// Sends a conference line over the leg with `to`, once it is up and encrypted.
    fn send_over_leg(&mut self, to: &fsm::Name, line: SessionLine) {
        let session = self
            .leg(to)
            .and_then(|l| l.machine.peer_addr().zip(l.machine.peer_key()));
        match session {
            Some((addr, key)) => self.ready.push_back(Output::SendLine {
                to: addr,
                key,
                line: Box::new(line),
                open: false,
            }),
            None => log::debug!("no session with {to} for a conference line"),
        }
    }

    /// Carries out an action of the machine of the leg with `peer`.
    pub(super) fn carry_out_leg(&mut self, peer: fsm::Name, action: Action) {
        let output = match action {
            Action::Lookup(name) => Output::Query {
                query: parlo_net::directory::client::Query::Lookup(name.clone()),
                purpose: crate::directory::Purpose::Dial(name),
            },
            Action::LookupCaller { name, .. } => Output::Query {
                query: parlo_net::directory::client::Query::Lookup(name.clone()),
                purpose: crate::directory::Purpose::Verify { peer: name },
            },
            Action::Send { to, message, key } => Output::Send { to, message, key },
            Action::Pin { name, key } => return self.pin(name, key),
            Action::ArmTimer { .. } | Action::CancelTimer(_) => return,
            Action::StartMedia {
                peer: addr,
                dialect,
                codec,
            } => {
                let Some(leg) = self.leg_mut(&peer) else {
                    return;
                };
                leg.media = Some(addr);
                Output::StartMedia {
                    peer: addr,
                    dialect,
                    codec,
                    key: leg.machine.peer_key(),
                }
            }
            Action::StopMedia => {
                let Some(addr) = self.leg_mut(&peer).and_then(|l| l.media.take()) else {
                    return;
                };
                Output::StopMedia { peer: Some(addr) }
            }
            Action::Notify(note) => return self.leg_note(peer, note),
        };
        self.ready.push_back(output);
    }

    /// What a leg's machine would tell the user: the layer's business.
    fn leg_note(&mut self, peer: fsm::Name, note: Note) {
        match note {
            Note::Calling { .. } => log::debug!("conference: calling {peer}"),
            Note::Ringing { .. } => log::debug!("conference: {peer} rings"),
            Note::Incoming {
                from,
                verified,
                new,
                address,
                ..
            } => {
                let id = self.leg(&peer).and_then(|l| l.machine.config().conference);
                let event = Out::Incoming {
                    peer: peer.to_string(),
                    from,
                    verified,
                    new,
                    address,
                    conf: id.map(|id| id.to_string()),
                };
                if let Some(leg) = self.leg_mut(&peer) {
                    leg.ringing = true;
                    leg.incoming = Some(event);
                }
                self.answer_leg(&peer);
            }
            Note::Connected { .. } => {
                let Some(leg) = self.leg(&peer) else { return };
                let (key, verification) = (leg.machine.peer_key(), leg.machine.verification());
                let (Some(key), Some(verification)) = (key, verification) else {
                    log::warn!("the conference leg with {peer} is not encrypted: hanging it up");
                    let call = Call::Leg(peer);
                    return self
                        .pending
                        .push_back(Pending::Event(call, fsm::Event::Hangup, None));
                };
                if let Some(leg) = self.leg_mut(&peer) {
                    leg.ringing = false;
                    leg.incoming = None;
                }
                let event = conf::Event::Connected {
                    peer,
                    key,
                    verification,
                };
                let actions = self.conference.handle(&event);
                self.carry_out_conference(actions);
            }
            Note::Ended { reason, .. } => {
                if reason == fsm::EndReason::OriginalPhone {
                    log::warn!(
                        "{peer} is a phone of the original protocol, which has no \
                         conferences: not called into this one (call it on its own)"
                    );
                }
                // An invitation the user was told of, ended before this phone was in
                // (rejected, or cancelled by the caller): told as a call's end, since
                // there is no conference to leave.
                let told = self.leg_mut(&peer).is_some_and(|leg| {
                    let told = leg.ringing && leg.incoming.is_none();
                    leg.ringing = false;
                    leg.incoming = None;
                    told
                });
                let invited = matches!(self.conference.phase(), conf::Phase::Invited(_));
                if told && invited {
                    let event = Out::Ended {
                        peer: peer.to_string(),
                        reason: reason.name(),
                    };
                    let answer = self.answer.take();
                    self.print(event, answer);
                }
                let event = conf::Event::Ended {
                    peer,
                    reason: LegEnd::from(reason),
                };
                let actions = self.conference.handle(&event);
                self.carry_out_conference(actions);
            }
            // The user's `accept` or `reject` of an invitation is answered; what the layer
            // asked a leg that could no longer do it is not the user's business.
            Note::Refused(why) => match self.answer.take() {
                Some(answer) => self.print(
                    Out::Error {
                        reason: why.to_string(),
                    },
                    Some(answer),
                ),
                None => log::debug!("the leg with {peer}: {why}"),
            },
        }
    }

    /// Forgets the legs whose call is over (called once every event is handled: none is
    /// pending for them).
    pub(super) fn drop_finished_legs(&mut self) {
        self.legs
            .retain(|l| l.machine.state() != State::Idle || l.media.is_some());
    }

    /// The conference's part of `status`: its id and each leg with its media counters
    /// (`media`: the loop's, by peer address).
    pub(super) fn leg_statuses(
        &self,
        media: &[(SocketAddr, MediaStats)],
    ) -> (Option<String>, Vec<LegStatus>) {
        let id = match self.conference.phase() {
            conf::Phase::Member(id) | conf::Phase::Invited(id) => Some(id.to_string()),
            conf::Phase::Idle => None,
        };
        let legs = self
            .legs
            .iter()
            .map(|l| {
                let addr = l.media.or(l.machine.peer_addr());
                LegStatus {
                    peer: l.peer.to_string(),
                    state: state_name(l.machine.state()),
                    verified: l.machine.verification(),
                    media: media
                        .iter()
                        .find(|(a, _)| Some(*a) == addr)
                        .map(|(_, m)| *m)
                        .unwrap_or_default(),
                }
            })
            .collect();
        (id, legs)
    }
}

/// What the conference layer tells the user, as an event.
fn conference_event(note: conf::Note) -> Out {
    match note {
        conf::Note::Conference { id, members } => Out::Conference {
            id: id.to_string(),
            members: members
                .iter()
                .map(|m| Member {
                    name: m.name.to_string(),
                    verified: m.verification,
                    legs: m.legs,
                    of: m.of,
                })
                .collect(),
        },
        conf::Note::Joined(name) => Out::Joined {
            peer: name.to_string(),
        },
        conf::Note::Left(name, reason) => Out::Left {
            peer: name.to_string(),
            reason: reason.name(),
        },
        conf::Note::Full(name) => Out::Full {
            peer: name.to_string(),
        },
        conf::Note::Ended(id) => Out::ConferenceEnded { id: id.to_string() },
    }
}
