//! The phone's side of text messages around the message machine: over which encrypted
//! session each peer's messages go, and who sent what comes in. Pure, like the agent that
//! owns it.
//!
//! - **Routes (sending).** Messages to a name go over a session with that phone's key: the
//!   current call's, when the call is with that name and encrypted, or else a session
//!   made only for messages. That one is opened with an Init carrying `HELLO <our name>`,
//!   sent again after 0.5 s, doubling, until the peer answers with its own `HELLO` (the
//!   message machine gives up on its messages after its own wait).
//! - **Senders (receiving).** A line that comes out of a session is from the phone that
//!   proved the session's key. Its name is the one the session was opened with (`HELLO
//!   <name>`, or the name looked up to send to it), or the current call's peer. A name
//!   claimed in a `HELLO` is verified as a caller's is: by the pin for that name, or else
//!   by the key the directory binds to it; lines wait for the directory's answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use parlo_fsm::messages::{Line, Verification};
use parlo_fsm::{Instant, Name, PublicKey};

/// First wait before an unanswered `HELLO` goes again, in ms; it doubles.
pub const HELLO_RETRY_MS: u64 = 500;
/// Longest wait between two `HELLO`s, in ms.
pub const HELLO_RETRY_CAP_MS: u64 = 4_000;
/// How long an unanswered `HELLO` is sent again, in ms: as long as the message machine
/// waits for a session (its messages are unreachable then).
pub const HELLO_GIVE_UP_MS: u64 = 10_000;
/// Sessions opened to us that are remembered (their senders' names).
pub const SENDERS: usize = 64;
/// Lines held per sender while the directory is asked about its name.
pub const HELD: usize = 32;

/// How messages to one name travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The phone's address.
    pub addr: SocketAddr,
    /// Its key: the session is with that key only.
    pub key: PublicKey,
    /// Whether the session is up (the peer answered, or it is the call's).
    pub up: bool,
    /// When the session was asked for.
    pub opened: Instant,
    /// When the `HELLO` goes again, while not up.
    pub retry_at: Instant,
    /// The wait after that.
    pub retry_wait: u64,
}

/// What is known of a phone that opened a session to us, or that we opened one to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Its name.
    pub name: Name,
    /// How its key is verified; `None` while the directory is asked.
    pub verification: Option<Verification>,
    /// Lines that came while it was being verified, in order.
    pub held: Vec<Line>,
    /// When it was last heard (to forget the oldest).
    pub heard: Instant,
}

/// The routes and senders.
#[derive(Debug, Default)]
pub struct Mail {
    routes: BTreeMap<Name, Route>,
    senders: BTreeMap<(SocketAddr, PublicKey), Sender>,
}

impl Mail {
    /// The route to `name`, if one is known.
    pub fn route(&self, name: &Name) -> Option<&Route> {
        self.routes.get(name)
    }

    /// A session for messages to `name` at `addr` with `key` is being opened at `now`
    /// (not up yet), or is up already (`up`: the call's).
    pub fn open(&mut self, name: &Name, addr: SocketAddr, key: PublicKey, up: bool, now: Instant) {
        self.routes.insert(
            name.clone(),
            Route {
                addr,
                key,
                up,
                opened: now,
                retry_at: now.after(HELLO_RETRY_MS),
                retry_wait: HELLO_RETRY_MS,
            },
        );
        // Lines from that session are from `name`, verified as the key we chose for it.
        self.remember(addr, key, name, Some(Verification::Key), now);
    }

    /// The peer at `addr` with `key` answered our `HELLO`: the name whose route that is,
    /// now up.
    pub fn answered(&mut self, addr: SocketAddr, key: PublicKey) -> Option<Name> {
        let (name, route) = self
            .routes
            .iter_mut()
            .find(|(_, r)| r.addr == addr && r.key == key && !r.up)?;
        route.up = true;
        Some(name.clone())
    }

    /// Forgets the route to `name` (its session failed, or its messages are settled).
    pub fn forget_route(&mut self, name: &Name) {
        self.routes.remove(name);
    }

    /// The routes whose `HELLO` is due at `now`: each is rescheduled, and given back to
    /// be sent again. A route unanswered for [`HELLO_GIVE_UP_MS`] is forgotten (a later
    /// message asks for a session afresh).
    pub fn due_hellos(&mut self, now: Instant) -> Vec<(SocketAddr, PublicKey)> {
        self.routes
            .retain(|_, r| r.up || now < r.opened.after(HELLO_GIVE_UP_MS));
        let mut due = Vec::new();
        for route in self.routes.values_mut().filter(|r| !r.up) {
            if route.retry_at <= now {
                due.push((route.addr, route.key));
                route.retry_wait = (route.retry_wait * 2).min(HELLO_RETRY_CAP_MS);
                route.retry_at = now.after(route.retry_wait);
            }
        }
        due
    }

    /// When the next `HELLO` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.routes
            .values()
            .filter(|r| !r.up)
            .map(|r| r.retry_at)
            .min()
    }

    /// Remembers that lines from `addr` with `key` are from `name`, verified so (`None`:
    /// not yet). The least recently heard sender is forgotten beyond [`SENDERS`].
    pub fn remember(
        &mut self,
        addr: SocketAddr,
        key: PublicKey,
        name: &Name,
        verification: Option<Verification>,
        now: Instant,
    ) {
        if self.senders.len() >= SENDERS && !self.senders.contains_key(&(addr, key)) {
            let oldest = self
                .senders
                .iter()
                .min_by_key(|(_, s)| s.heard)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.senders.remove(&oldest);
            }
        }
        self.senders.insert(
            (addr, key),
            Sender {
                name: name.clone(),
                verification,
                held: Vec::new(),
                heard: now,
            },
        );
    }

    /// The session the phone named `name` last sent lines over, if any: where answers to
    /// it go.
    pub fn sender_named(&self, name: &Name) -> Option<(SocketAddr, PublicKey)> {
        self.senders
            .iter()
            .filter(|(_, s)| s.name == *name)
            .max_by_key(|(_, s)| s.heard)
            .map(|(k, _)| *k)
    }

    /// The sender of lines from `addr` with `key`, if known.
    pub fn sender(&mut self, addr: SocketAddr, key: PublicKey) -> Option<&mut Sender> {
        self.senders.get_mut(&(addr, key))
    }

    /// The directory answered about the sender at `addr` with `key`: its verification;
    /// gives back the lines held meanwhile, with its name.
    pub fn verified(
        &mut self,
        addr: SocketAddr,
        key: PublicKey,
        verification: Verification,
    ) -> Option<(Name, Vec<Line>)> {
        let sender = self.senders.get_mut(&(addr, key))?;
        let held = std::mem::take(&mut sender.held);
        // `new` is said once, with the first message: the key is pinned now.
        sender.verification = Some(match verification {
            Verification::New if !held.is_empty() => Verification::Key,
            other => other,
        });
        Some((sender.name.clone(), held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("name")
    }

    #[test]
    fn a_route_is_up_once_answered_and_its_hello_is_resent_until_then() {
        let mut mail = Mail::default();
        let bob = addr("127.0.0.2:5001");
        let key = PublicKey([2; 32]);
        mail.open(&name("bob"), bob, key, false, Instant(0));
        assert_eq!(mail.poll_timeout(), Some(Instant(500)));
        assert!(mail.due_hellos(Instant(499)).is_empty());
        assert_eq!(mail.due_hellos(Instant(500)), [(bob, key)]);
        assert_eq!(mail.poll_timeout(), Some(Instant(1500)));
        // Another key at that address is not the answer.
        assert_eq!(mail.answered(bob, PublicKey([9; 32])), None);
        assert_eq!(mail.answered(bob, key), Some(name("bob")));
        assert!(mail.route(&name("bob")).is_some_and(|r| r.up));
        assert_eq!(mail.poll_timeout(), None);
        // One never answered is given up after 10 s.
        let carol = addr("127.0.0.3:5001");
        mail.open(&name("carol"), carol, key, false, Instant(1000));
        let mut sent = 0;
        while let Some(due) = mail.poll_timeout() {
            sent += mail.due_hellos(due).len();
        }
        assert_eq!(sent, 4, "at 0.5, 1.5, 3.5 and 7.5 s");
        assert!(mail.route(&name("carol")).is_none());
        assert!(mail.route(&name("bob")).is_some());
        // Lines from that session are bob's, verified by the key we chose.
        let sender = mail.sender(bob, key).expect("known");
        assert_eq!(
            (sender.name.clone(), sender.verification),
            (name("bob"), Some(Verification::Key))
        );
    }

    #[test]
    fn lines_wait_for_the_verification_and_the_oldest_sender_is_forgotten() {
        let mut mail = Mail::default();
        let key = PublicKey([1; 32]);
        let alice = addr("127.0.0.1:5001");
        mail.remember(alice, key, &name("alice"), None, Instant(0));
        let line = Line::Ack {
            id: parlo_fsm::messages::MessageId(7),
        };
        mail.sender(alice, key)
            .expect("known")
            .held
            .push(line.clone());
        assert_eq!(
            mail.verified(alice, key, Verification::New),
            Some((name("alice"), vec![line]))
        );
        for i in 0..SENDERS as u16 {
            let other = SocketAddr::new(alice.ip(), 6000 + i);
            mail.remember(other, key, &name("x"), None, Instant(10 + u64::from(i)));
        }
        // Alice, heard first, was forgotten for the last.
        assert!(mail.sender(alice, key).is_none());
    }
}
