//! The conference layer: a full mesh of ordinary calls ("legs") between 3 to
//! [`MAX_MEMBERS`] phones, and the small pure core that decides which legs to dial,
//! accept, refuse and hang up.
//!
//! Every member holds one call leg (one call machine, encrypted) to every other member.
//! [`Conference`] sits above the legs: it is told what the user asks (`conf`, `invite`,
//! `hangup`), what the legs do (connected, ended with a reason, an incoming START that
//! carries a conference id) and what other members say over them (their roster, their
//! links), and it answers with [`Action`]s for the shell: dial a member, accept, ring,
//! hold or refuse an incoming leg, send a roster or the links, hang a leg up, tell the
//! user. It is pure: no I/O, no clock, no threads, no allocation (fixed capacity,
//! `heapless`); the conference id, the only randomness, comes with [`Event::Start`].
//!
//! # Contract
//! ```text
//! shell                                   conference
//!   Conference::new(me, key)
//!   handle(&Event)               ─────▶   update the members, decide
//!                                ◀─────   Actions (execute in order)
//! ```
//! The layer has no timers: every leg is an ordinary call, whose own machine gives up
//! on an unanswered dial, a lost peer or a refusal, and reports it as [`Event::Ended`].
//!
//! # Plain code, not a table
//! The call and message machines are tables because their states multiply with their
//! events. This layer has three states ([`Phase`]: idle, invited, member) and a handful
//! of events, and what it decides depends less on the state than on the roster: how
//! many members there are, which of them sort after this phone, which legs are up. A
//! table row would hide that behind guards named after loops; plain `match` arms over
//! the phase, each a few lines, read better.
//!
//! # Members and legs
//! - `conf NAME ...` ([`Event::Start`], up to [`MAX_MEMBERS`]` - 1` others, duplicates
//!   and this phone's own name dropped, each one beyond the limit told `full NAME`) starts a conference with a fresh [`ConfId`]: this
//!   phone dials every named phone ([`Action::Dial`], carrying the id), and sends the
//!   roster ([`Action::SendRoster`]) over every leg that connects.
//! - An incoming START with a conference id while this phone is in no conference is an
//!   invitation: it rings ([`Action::Ring`]); further STARTs with the same id are held
//!   ([`Action::Hold`]) until the user answers the first, then accepted
//!   ([`Action::Accept`]). The first leg that connects makes this phone a member.
//! - Rosters merge: a member adds the members a roster names that it did not know (but
//!   not those whose leg with it ended: only an `invite` brings them back) and the keys
//!   it did not have, so that every member learns of every other, whoever introduced
//!   whom and in whatever order. What a member knows only grows (up to
//!   [`MAX_MEMBERS`] names and keys), so the rosters going round come to an end.
//! - A member dials every member it has no leg with **whose name sorts after its own**
//!   (byte order), once that member is in: once some roster gives its key, which a
//!   member lists only when its own leg to it is up. The others dial it. The starter
//!   (or inviter) dials everyone it introduces, and nobody else dials a phone before
//!   its introducer's leg to it is up, so each pair of members gets exactly one leg:
//!   without the wait, a phone reached first by another member's dial would itself
//!   dial its introducer, whose own dial to it is still on its way.
//! - Whenever a leg connects, or a roster teaches this phone a member or a key, it
//!   sends its roster to every member it is connected to.
//! - A START carrying this conference's id is accepted at once (a member, or one just
//!   invited whose roster has not reached this phone yet: only members know the id,
//!   which travels only inside encrypted legs). Any other START while in a conference or
//!   invited — no id, another id, or the conference full — gets BUSY ([`Action::Busy`]).
//! - `invite NAME` ([`Event::Invite`]) dials NAME, sends it the roster when its leg
//!   connects, and sends the new roster to every member now; the sort rule then decides
//!   who dials whom. An invitation beyond [`MAX_MEMBERS`] is refused (`notify full`).
//! - `invite NAME` during an ordinary two-party call turns that call into a conference
//!   without dropping it: the shell gives [`Event::Adopt`] (a fresh id, the call's peer,
//!   its key and verification) and then [`Event::Invite`]. The call becomes a connected
//!   leg as if it had just connected (its peer is sent the roster, the conference event
//!   is given) but without `joined NAME`: the user already talks to that phone. At the
//!   other end, a ROSTER arriving over an ordinary call while in no conference makes the
//!   shell give [`Event::Adopt`] with the roster's id, then [`Event::Roster`]; from
//!   there the rules above bring the invited phone in. Adopting is heeded only in no
//!   conference. LINKS go over an adopted leg only once a ROSTER came back over it
//!   (this phone's links at that moment, and from then on as over any leg): sent
//!   earlier, they could reach a phone still in no conference, which ignores them, and
//!   its conference event would show this phone's links wrong until they next change.
//! - `hangup` ([`Event::Hangup`]) hangs up every leg of this phone; the others carry on.
//! - A leg that ends ([`Event::Ended`]: peer lost, rejected, busy, no answer, hung up)
//!   drops its member: `left NAME reason=...`; the others carry on. When no member is
//!   left, the conference is over (`notify ended`).
//!
//! # Partly connected members
//! Each member tells every member it is connected to which members it holds a connected
//! leg with ([`Action::SendLinks`], whenever that set changes). From these, the
//! conference event ([`Note::Conference`]) lists each member with its verification (of
//! this phone's leg to it) and `legs=k/n`: the connected legs it reported, out of the
//! `n` it should hold. A member this phone hears but some others do not shows `legs=2/3`
//! rather than being silently half heard. A member known only by name from a roster,
//! whose key no roster has given (no member has reached it yet), is neither listed nor
//! counted: when its introducer cannot reach it (an original phone refused, no answer),
//! the others never show it; an `invite` of it dials it. The event is given whenever
//! that list changes.
//!
//! # Limits
//! - Legs are named by their peer: the shell keeps at most one leg per member, and
//!   reports [`Event::Ended`] only for the leg the layer holds (not for a START it
//!   answered BUSY).
//! - Two members inviting the same phone at the same moment both dial it, and both legs
//!   are accepted; the sort rule has no say there. Nothing yet breaks that tie.
//! - An adopted call's peer learns of the conference from the inviter's ROSTER over the
//!   call. Should that roster be lost and an invited phone dial the peer first, the peer
//!   takes that START as an invitation (it rings), and the roster that then comes over
//!   the call is not adopted (this phone is no longer idle): the call stays outside the
//!   mesh. Adopting a call into the conference one is already in would close that gap.
//! - A member whose leg with this phone ended is not brought back by a roster, only by
//!   an `invite`; and a departure is not announced to the others: each learns of it by
//!   its own leg ending, or by the member's LINKS.
//!
//! # Wire form (for `parlo-net`)
//! Two lines, each travelling over a leg's encrypted session like the message lines, one
//! per datagram; a conference id is 16 hex digits, a key 64 hex digits or `-` when the
//! sender has not yet heard it:
//! ```text
//! ROSTER <conf-id> <name>=<key> ...      every member, the sender included
//! LINKS <conf-id> <seq> <name> ...       the members the sender holds a connected leg
//!                                        with; seq: decimal, one more on each LINKS the
//!                                        sender sends, so that a reordered older one is
//!                                        ignored
//! ```
//! and the START of a leg carries `conf=<conf-id>` ([`crate::Message::Start`]'s `conf`,
//! which [`crate::Config::conference`] makes a call machine send). A roster of no member
//! or more than [`MAX_MEMBERS`], or a name twice, is malformed; so is a LINKS naming more
//! than [`MAX_MEMBERS`] or a name twice. `parlo-net`'s `message` module reads and writes
//! both lines, and `docs/protocol.md` (section 3.11) gives their exact grammar.

mod machine;

pub use machine::{Actions, Conference, MAX_ACTIONS, Phase};

use core::fmt;

use crate::types::{EndReason, Verification};
use crate::vocab::{Name, PublicKey};

/// Most members of a conference, this phone included.
pub const MAX_MEMBERS: usize = 8;

/// Identifies one conference: 64 random bits, written as 16 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfId(pub u64);

impl fmt::Display for ConfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl ConfId {
    /// Reads exactly 16 hexadecimal digits, in either case (no sign, no prefix).
    pub fn parse(text: &str) -> Option<ConfId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ConfId)
    }
}

/// One member as a roster lists it: its name and, when the sender has heard it, its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The member's name.
    pub name: Name,
    /// Its static key, as the sender's leg to it is verified; `None` before that leg
    /// connected.
    pub key: Option<PublicKey>,
}

/// The members of a conference, as one member sends them to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Roster {
    /// The conference.
    pub id: ConfId,
    /// Every member, the sender included, in the sender's order.
    pub members: heapless::Vec<Entry, MAX_MEMBERS>,
}

/// Why a member left, as `left NAME reason=...` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegEnd {
    /// The member hung up.
    HungUp,
    /// The member stopped answering.
    PeerLost,
    /// The member refused the call.
    Rejected,
    /// The member was busy.
    Busy,
    /// The member did not answer.
    NoAnswer,
    /// The member could not be found.
    Unreachable,
    /// The member is a phone of the original project, which cannot be in a conference
    /// (it has no encryption and knows nothing of `conf=`).
    Original,
    /// The member's key is not the one pinned for its name.
    KeyChanged,
    /// The security policy refuses the leg (a plaintext call).
    Insecure,
}

impl LegEnd {
    /// Every reason.
    pub const ALL: [LegEnd; 9] = [
        LegEnd::HungUp,
        LegEnd::PeerLost,
        LegEnd::Rejected,
        LegEnd::Busy,
        LegEnd::NoAnswer,
        LegEnd::Unreachable,
        LegEnd::Original,
        LegEnd::KeyChanged,
        LegEnd::Insecure,
    ];

    /// Its name in events and specs.
    pub const fn name(self) -> &'static str {
        match self {
            LegEnd::HungUp => "hung-up",
            LegEnd::PeerLost => "peer-lost",
            LegEnd::Rejected => "rejected",
            LegEnd::Busy => "busy",
            LegEnd::NoAnswer => "no-answer",
            LegEnd::Unreachable => "unreachable",
            LegEnd::Original => "original-phone",
            LegEnd::KeyChanged => "key-changed",
            LegEnd::Insecure => "insecure",
        }
    }

    /// Why a member left, from why its leg's call ended ([`EndReason`]).
    pub const fn of(reason: EndReason) -> LegEnd {
        match reason {
            EndReason::Hangup | EndReason::RemoteHangup | EndReason::Cancelled => LegEnd::HungUp,
            EndReason::Rejected => LegEnd::Rejected,
            EndReason::Busy => LegEnd::Busy,
            EndReason::NoAnswer => LegEnd::NoAnswer,
            EndReason::UnknownUser | EndReason::LookupFailed => LegEnd::Unreachable,
            EndReason::PeerLost => LegEnd::PeerLost,
            EndReason::KeyChanged => LegEnd::KeyChanged,
            EndReason::Insecure => LegEnd::Insecure,
            EndReason::OriginalPhone => LegEnd::Original,
        }
    }
}

impl From<EndReason> for LegEnd {
    fn from(reason: EndReason) -> LegEnd {
        LegEnd::of(reason)
    }
}

/// What the conference layer is told.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The user's `conf NAME ...`, with a fresh random id.
    Start {
        /// The new conference's id (random, from the shell).
        id: ConfId,
        /// The phones to call.
        others: &'a [Name],
    },
    /// The user's `invite NAME`.
    Invite(Name),
    /// The user's `hangup`: leave the conference.
    Hangup,
    /// A START arrived from `from`, with the conference id it carries, if any.
    Incoming {
        /// The caller.
        from: Name,
        /// The START's `conf=` id.
        id: Option<ConfId>,
    },
    /// The leg with `peer` connected.
    Connected {
        /// The member at the other end.
        peer: Name,
        /// Its static key, as the leg's session has it.
        key: PublicKey,
        /// How the call machine verified it.
        verification: Verification,
    },
    /// This phone's ordinary two-party call with `peer` (connected, encrypted) becomes a
    /// leg of conference `id`, without being dropped. Heeded only in no conference
    /// ([`Phase::Idle`]): the inviter gives it, with a fresh id, just before
    /// [`Event::Invite`]; the other end of that call gives it, with the roster's id, when
    /// a ROSTER arrives over the call, just before [`Event::Roster`].
    Adopt {
        /// The other end of the call.
        peer: Name,
        /// Its static key, as the call's session has it.
        key: PublicKey,
        /// How the call machine verified it.
        verification: Verification,
        /// The conference the call now belongs to.
        id: ConfId,
    },
    /// The leg with `peer` ended (or was never set up).
    Ended {
        /// The member at the other end.
        peer: Name,
        /// Why.
        reason: LegEnd,
    },
    /// A roster arrived over the leg with `from`.
    Roster {
        /// The member that sent it.
        from: Name,
        /// What it says.
        roster: &'a Roster,
    },
    /// A LINKS line arrived over the leg with `from`.
    Links {
        /// The member that sent it.
        from: Name,
        /// The conference it speaks of.
        id: ConfId,
        /// Its sequence number: a LINKS numbered no higher than one already heard from
        /// `from` is stale.
        seq: u32,
        /// The members `from` holds a connected leg with.
        peers: &'a [Name],
    },
}

/// One member in a [`Note::Conference`] event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The member.
    pub name: Name,
    /// How this phone's leg to it is verified; `None` while that leg is not up.
    pub verification: Option<Verification>,
    /// Connected legs the member reported (this phone counts its own leg to it when the
    /// member has not yet said).
    pub legs: u8,
    /// Legs the member should hold: the members but itself.
    pub of: u8,
}

/// What the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "fixed capacity, no allocation: the variants cannot be boxed"
)]
pub enum Note {
    /// `conference ID members=NAME:VERIFICATION:legs=K/N,...`.
    Conference {
        /// The conference.
        id: ConfId,
        /// Every member but this phone.
        members: heapless::Vec<Status, MAX_MEMBERS>,
    },
    /// `joined NAME`: the leg with a member connected.
    Joined(Name),
    /// `left NAME reason=...`.
    Left(Name, LegEnd),
    /// `full NAME`: inviting NAME would exceed [`MAX_MEMBERS`].
    Full(Name),
    /// `ended ID`: this phone is in the conference no more.
    Ended(ConfId),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Conference { id, members } => {
                write!(f, "conference {id} members=")?;
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    let v = m.verification.map_or("-", Verification::name);
                    write!(f, "{}:{v}:legs={}/{}", m.name, m.legs, m.of)?;
                }
                Ok(())
            }
            Note::Joined(name) => write!(f, "joined {name}"),
            Note::Left(name, reason) => write!(f, "left {name} reason={}", reason.name()),
            Note::Full(name) => write!(f, "full {name}"),
            Note::Ended(id) => write!(f, "ended {id}"),
        }
    }
}

/// What the shell is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "fixed capacity, no allocation: the variants cannot be boxed"
)]
pub enum Action {
    /// Dial `to`, the START carrying `conf=<id>`.
    Dial {
        /// The member to call.
        to: Name,
        /// The conference.
        id: ConfId,
    },
    /// Answer the incoming leg from this member at once.
    Accept(Name),
    /// Ring the user for this incoming invitation.
    Ring(Name),
    /// Leave this incoming leg ringing unanswered until the invitation is answered.
    Hold(Name),
    /// Answer this START with BUSY.
    Busy(Name),
    /// Send the roster over the leg with `to`.
    SendRoster {
        /// The member.
        to: Name,
        /// The roster.
        roster: Roster,
    },
    /// Send `LINKS` over the leg with `to`.
    SendLinks {
        /// The member.
        to: Name,
        /// The conference.
        id: ConfId,
        /// This phone's LINKS number, one more than the last.
        seq: u32,
        /// The members this phone holds a connected leg with.
        peers: heapless::Vec<Name, MAX_MEMBERS>,
    },
    /// Hang up the leg with this member.
    Hangup(Name),
    /// Tell the user.
    Notify(Note),
}

#[cfg(test)]
mod tests;
