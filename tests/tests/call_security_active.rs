//! Active attacks on encrypted calls, against the real binaries: an attacker who calls a
//! phone that answers by itself (`--auto-answer`) with a key that is not the one bound
//! to the name it claims, or in the clear; a directory that gives a caller the wrong key
//! for its callee; a man in the middle that terminates the encryption; a phone whose key
//! changed.
//!
//! The attacker is [`Attacker`]: a real implementation of the call protocol
//! (`parlo_net::secure`) driven by hand. [`FakeDirectory`] is the directory of an attacker
//! who took the server over: it tells phones whatever address and key the test says.
//!
//! The attacks have control runs beside them: the same tools, given what the attacker
//! must not have (the victim's private key, a directory that tells the truth, a caller
//! verified by its key), get what the attacks are refused, so the checks of the attacks
//! can fail.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use parlo_fsm::{CallId, PublicKey};
use parlo_net::noise::fingerprint;
use parlo_net::secure::Kind;
use parlo_tests::attacker::{Attacker, Received, fresh_identity, identity_of, start_line};
use parlo_tests::phone_harness::{Event, Phone, PhoneBuilder};
use parlo_tests::relay::{Plan, Relay, Toward};
use parlo_tests::server_harness::{FakeDirectory, PATIENCE, Server, loopback};

/// How long a phone is watched for something that must not happen (an answer, a
/// datagram).
const QUIET: Duration = Duration::from_millis(1500);

/// A key in its text form, as a phone logs it.
fn key(text: &str) -> PublicKey {
    PublicKey::parse(text).unwrap_or_else(|e| panic!("{text:?} is not a key: {e}"))
}

/// A phone's public key, from its log.
fn key_of(phone: &Phone) -> PublicKey {
    key(&phone.public_key())
}

/// A field of an event, failing the test with the event when it is missing.
fn field(event: &Event, name: &str) -> String {
    event
        .field(name)
        .unwrap_or_else(|| panic!("no {name}= in {event}"))
}

/// The phone's call state, from `status`.
fn state(phone: &mut Phone) -> String {
    field(&phone.status(), "state")
}

/// Every event of `kind` the phone printed so far, read or not.
fn events_of(phone: &Phone, kind: &str) -> Vec<Event> {
    phone
        .events()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// A directory, alice registered with her own key, and bob as `bob` says.
fn alice_and_bob(bob: impl FnOnce(PhoneBuilder) -> PhoneBuilder) -> (Server, Phone, Phone) {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(Phone::builder("alice").server(&server));
    let bob = Phone::start_registered(bob(Phone::builder("bob").server(&server)));
    (server, alice, bob)
}

/// Bob as an intercom: answers by himself, and sends a tone once he does.
fn intercom(bob: PhoneBuilder) -> PhoneBuilder {
    bob.auto_answer().audio("tone")
}

/// Waits for the callee's `incoming` and checks who it names, where the call came from
/// and how it is verified.
fn expect_incoming(callee: &mut Phone, peer: &str, from: SocketAddr, verified: &str) -> Event {
    let incoming = callee.expect_event("incoming");
    assert_eq!(incoming.peer(), Some(peer), "{incoming}");
    assert_eq!(field(&incoming, "from"), from.to_string(), "{incoming}");
    assert_eq!(field(&incoming, "verified"), verified, "{incoming}");
    incoming
}

/// Checks that a callee that must not answer `attacker` gave it nothing but its ringing:
/// the first datagram is the Response to the Init, carrying `RINGING` and no longer than
/// the Init; everything after it is a copy of that Response or `RINGING` again (answers
/// to the START's retransmissions); no media, no `ACCEPT`; and over the whole exchange
/// the attacker got no more bytes than it sent.
fn assert_only_ringing(attacker: &Attacker, init: &[u8], received: &[Received], call: CallId) {
    let all: Vec<String> = received.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    println!(
        "the attacker sent {} bytes and got {}:\n{all}",
        attacker.bytes_sent(),
        attacker.bytes_received()
    );
    let ringing = format!("RINGING call={call}");
    let first = received
        .first()
        .unwrap_or_else(|| panic!("the callee does not even ring back"));
    let opened = first
        .opened
        .as_ref()
        .unwrap_or_else(|| panic!("the first answer is not a Response: {first}"));
    assert_eq!(opened.kind, Kind::Answer, "{first}");
    assert_eq!(first.line(), Some(ringing.clone()), "{first}");
    assert!(
        first.datagram.len() <= init.len(),
        "the Response ({} bytes) is longer than the Init ({} bytes)",
        first.datagram.len(),
        init.len()
    );
    for datagram in received {
        assert!(
            !datagram.is_media(),
            "media to the attacker: {datagram}\n{all}"
        );
        assert!(
            datagram.line().as_deref() == Some(ringing.as_str())
                || datagram.datagram == first.datagram,
            "the attacker got more than its ringing: {datagram}\n{all}"
        );
    }
    assert!(
        attacker.bytes_received() <= attacker.bytes_sent(),
        "the attacker got {} bytes for the {} it sent:\n{all}",
        attacker.bytes_received(),
        attacker.bytes_sent()
    );
}

/// An attacker calls bob as `claimed` with a fresh key of its own, and sends the Init
/// again a moment later, as a caller that got no answer does: bob rings, announces the
/// call as `verified`, and never answers, whatever `--auto-answer` says.
fn forged_init_rings_and_is_not_answered(claimed: &str, verified: &str) {
    let (_server, _alice, mut bob) = alice_and_bob(intercom);
    let mut attacker = Attacker::new();
    let call = CallId::new(0x5eed_0001);
    let init = attacker.send_start(bob.addr, &key_of(&bob), claimed, call);
    let mut received = attacker.receive_for(Duration::from_millis(300));
    attacker.send_plain(bob.addr, &init);
    expect_incoming(&mut bob, claimed, attacker.addr(), verified);
    received.extend(attacker.receive_for(QUIET));
    bob.expect_no_event("connected", Duration::ZERO);
    assert_eq!(state(&mut bob), "ringing", "{}", bob.transcript());
    assert_only_ringing(&attacker, &init, &received, call);
}

/// A key that is not alice's, claiming alice (registered with her own key): bob says
/// `verified=no`, rings, and does not answer; the attacker gets its ringing and nothing
/// else.
#[test]
fn auto_answer_does_not_answer_another_key_claiming_a_registered_name() {
    forged_init_rings_and_is_not_answered("alice", "no");
}

/// A fresh key claiming a name nobody registered: `verified=no`, not answered.
#[test]
fn auto_answer_does_not_answer_a_key_claiming_an_unregistered_name() {
    forged_init_rings_and_is_not_answered("zoe", "no");
}

/// An original phone's plaintext `START alice` from an address that is not alice's:
/// allowed (original phones are by default), so it rings, `verified=plaintext
/// address=no`, and is never answered by itself. The original dialect has no RINGING:
/// the attacker gets nothing at all.
#[test]
fn auto_answer_does_not_answer_an_original_plaintext_start() {
    let (_server, _alice, mut bob) = alice_and_bob(intercom);
    let mut attacker = Attacker::new();
    attacker.send_plain(bob.addr, b"START alice");
    let incoming = expect_incoming(&mut bob, "alice", attacker.addr(), "plaintext");
    assert_eq!(field(&incoming, "address"), "no", "{incoming}");
    let received = attacker.receive_for(QUIET);
    bob.expect_no_event("connected", Duration::ZERO);
    assert_eq!(state(&mut bob), "ringing", "{}", bob.transcript());
    assert!(
        received.is_empty(),
        "an unanswered original call got datagrams: {received:?}"
    );
}

/// A plaintext START in Parlo's dialect, which a Parlo phone would have encrypted:
/// refused under `--security required` (REJECT, `ended alice reason=insecure`), never
/// announced; the REJECT is shorter than the START.
#[test]
fn a_plaintext_parlo_start_is_refused() {
    let (_server, _alice, mut bob) = alice_and_bob(intercom);
    let mut attacker = Attacker::new();
    let call = CallId::new(0x5eed_0004);
    attacker.send_plain(bob.addr, start_line("alice", call).as_bytes());
    let ended = bob.expect_event("ended");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
    assert_eq!(ended.reason().as_deref(), Some("insecure"), "{ended}");
    let received = attacker.receive_for(QUIET);
    assert!(
        events_of(&bob, "incoming").is_empty(),
        "{}",
        bob.transcript()
    );
    assert_eq!(state(&mut bob), "idle", "{}", bob.transcript());
    let lines: Vec<Option<String>> = received.iter().map(Received::line).collect();
    assert_eq!(lines, [Some(format!("REJECT call={call}"))], "{received:?}");
    assert!(!received[0].is_encrypted());
    assert!(attacker.bytes_received() <= attacker.bytes_sent());
}

/// The real alice, verified by her key, calling an intercom that answers only carol:
/// bob rings (`verified=key`) and does not answer.
#[test]
fn auto_answer_with_answer_from_rings_for_anyone_else() {
    let (_server, mut alice, mut bob) =
        alice_and_bob(|bob| intercom(bob).arg("--answer-from").arg("carol"));
    alice.send("call bob");
    expect_incoming(&mut bob, "alice", alice.addr, "key");
    alice.expect_event("ringing");
    bob.expect_no_event("connected", Duration::from_secs(2));
    alice.expect_no_event("connected", Duration::ZERO);
    assert_eq!(state(&mut bob), "ringing", "{}", bob.transcript());
}

/// The control: the real alice calling an intercom is answered at once, verified by
/// her key, and both phones show the same short code.
#[test]
fn auto_answer_answers_the_caller_verified_by_key() {
    let (_server, mut alice, mut bob) = alice_and_bob(intercom);
    alice.send("call bob");
    let at_bob = bob.expect_event("connected");
    assert_eq!(at_bob.peer(), Some("alice"), "{at_bob}");
    assert_eq!(field(&at_bob, "verified"), "key", "{at_bob}");
    let at_alice = alice.expect_event("connected");
    assert_eq!(field(&at_alice, "verified"), "key", "{at_alice}");
    assert_eq!(field(&at_alice, "code"), field(&at_bob, "code"));
}

/// The control of the attacker's tool: holding alice's private key (her identity file,
/// copied), the Init that
/// [`auto_answer_does_not_answer_another_key_claiming_a_registered_name`] sees refused
/// is answered: ACCEPT, and media. So what that test watches for would be seen, and a
/// stolen identity is as good as the phone.
#[test]
fn a_stolen_identity_is_answered_like_its_owner() {
    let (_server, alice, mut bob) = alice_and_bob(intercom);
    let mut thief = Attacker::with_identity(identity_of(&alice));
    assert_eq!(thief.public_key(), key_of(&alice));
    let call = CallId::new(0x5eed_0007);
    thief.send_start(bob.addr, &key_of(&bob), "alice", call);
    let connected = bob.expect_event("connected");
    assert_eq!(field(&connected, "verified"), "key", "{connected}");
    let received = thief.receive_until(PATIENCE, Received::is_media);
    let accept = format!("ACCEPT call={call} codec=L16");
    assert!(
        received
            .iter()
            .any(|r| r.line().as_deref() == Some(&accept)),
        "{received:?}"
    );
}

/// A directory that gives alice a relay's address and the relay's own key for bob:
/// alice's START is sealed for the relay's key, which the relay cannot change into one
/// bob can open. Forwarded to bob, it fails to authenticate; nothing rings; alice is
/// never connected and gives up (`no-answer`).
#[test]
fn a_start_sealed_for_a_substituted_key_is_opened_by_nobody() {
    let server = Server::start(&[]);
    let mut bob = Phone::start_registered(Phone::builder("bob").server(&server));
    let fake = FakeDirectory::start();
    let relay = relay_to(bob.addr);
    fake.claim("bob", relay.addr, &fresh_identity().public());
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server_addr(fake.addr)
            .answer_timeout(2),
    );
    alice.send("call bob");
    alice.expect_ended("no-answer");
    let captured = relay.captured();
    let inits = captured
        .iter()
        .filter(|c| c.toward == Toward::Callee && c.bytes.first() == Some(&0x01))
        .count();
    assert!(inits >= 1, "alice's START did not reach bob: {captured:?}");
    assert!(
        captured.iter().all(|c| c.toward == Toward::Callee),
        "bob answered something: {captured:?}"
    );
    let status = bob.status();
    assert!(
        status.number("auth_failures").is_some_and(|n| n >= 1),
        "{status}"
    );
    assert_eq!(status.number("handshakes"), Some(0), "{status}");
    assert!(
        events_of(&bob, "incoming").is_empty(),
        "{}",
        bob.transcript()
    );
    for kind in ["ringing", "connected"] {
        assert!(events_of(&alice, kind).is_empty(), "{}", alice.transcript());
    }
}

/// A transparent, recording relay in front of `callee`, on addresses of its own.
fn relay_to(callee: SocketAddr) -> Relay {
    let socket = || UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
    Relay::between(socket(), socket(), callee, Plan::transparent().recording())
}

/// A directory that gives alice a relay's address and key for bob, when alice has bob's
/// real key pinned: she refuses before sending anything (`key-changed`), says how to
/// accept a new key on purpose, and the relay sees no datagram.
#[test]
fn a_substituted_key_is_refused_against_the_pin() {
    let server = Server::start(&[]);
    let bob = Phone::start_registered(Phone::builder("bob").server(&server));
    let fake = FakeDirectory::start();
    let relay = relay_to(bob.addr);
    fake.claim("bob", relay.addr, &fresh_identity().public());
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server_addr(fake.addr)
            .pin("bob", &bob.public_key()),
    );
    alice.send("call bob");
    alice.expect_ended("key-changed");
    std::thread::sleep(Duration::from_millis(500));
    assert!(relay.captured().is_empty(), "{:?}", relay.captured());
    assert!(
        alice
            .stderr_lines()
            .iter()
            .any(|line| line.contains("trust bob")),
        "{}",
        alice.transcript()
    );
}

/// The call id of a START line.
fn call_id_of(start: &str) -> CallId {
    start
        .split(' ')
        .find_map(|word| word.strip_prefix("call="))
        .and_then(CallId::parse)
        .unwrap_or_else(|| panic!("no call id in {start:?}"))
}

/// Waits for `caller`'s START at the man in the middle and answers it `RINGING`, as bob
/// would: returns the call id and the caller's key.
fn mitm_rings(mitm: &mut Attacker, caller: &Phone) -> (CallId, PublicKey) {
    let received = mitm.receive_until(PATIENCE, |r| {
        r.from == caller.addr && r.opened.as_ref().is_some_and(|i| i.kind == Kind::Start)
    });
    let start = received
        .last()
        .expect("receive_until returns what it waited for");
    let line = start
        .line()
        .unwrap_or_else(|| panic!("not a line: {start}"));
    assert!(
        line.starts_with(&format!("START {} ", caller.name)),
        "{line}"
    );
    let call = call_id_of(&line);
    let caller_key = start.opened.as_ref().map(|i| i.key).expect("opened");
    assert_eq!(
        caller_key,
        key_of(caller),
        "the Init proves the caller's key"
    );
    mitm.send_sealed(
        caller.addr,
        &caller_key,
        format!("RINGING call={call}").as_bytes(),
    )
    .expect("the man in the middle answers the START it opened");
    (call, caller_key)
}

/// A man in the middle that terminates the encryption, put in bob's place by a
/// lying directory, answers alice RINGING then ACCEPT with its own key. Alice, who has
/// no pin for bob, connects, `verified=key`: on first contact a phone trusts what the
/// directory says. What catches the lie is the short code: alice's is the man in the
/// middle's, and differs from the code alice and bob share in a real call through the
/// real directory (made first: both phones show the same code). A pin of bob's real key
/// catches it too, before anything is sent
/// ([`a_substituted_key_is_refused_against_the_pin`]).
#[test]
fn a_man_in_the_middle_connects_on_first_contact_with_another_short_code() {
    // The real call: alice and bob through the real directory.
    let (_server, mut alice, mut bob) = alice_and_bob(|bob| bob);
    alice.send("call bob");
    expect_incoming(&mut bob, "alice", alice.addr, "key");
    bob.send("accept");
    let real = [
        alice.expect_event("connected"),
        bob.expect_event("connected"),
    ];
    let real_codes = real.each_ref().map(|event| field(event, "code"));
    assert_eq!(real_codes[0], real_codes[1], "{real:?}");
    alice.send("hangup");
    alice.expect_ended("hangup");

    // The intercepted call: another phone named alice, on the lying directory.
    let fake = FakeDirectory::start();
    let mut mitm = Attacker::new();
    fake.claim("bob", mitm.addr(), &mitm.public_key());
    let mut fooled = Phone::start_registered(Phone::builder("alice").server_addr(fake.addr));
    fooled.send("call bob");
    let (call, fooled_key) = mitm_rings(&mut mitm, &fooled);
    fooled.expect_event("ringing");
    mitm.send_sealed(
        fooled.addr,
        &fooled_key,
        format!("ACCEPT call={call} codec=L16").as_bytes(),
    )
    .expect("the session is established");
    let connected = fooled.expect_event("connected");
    assert_eq!(connected.peer(), Some("bob"), "{connected}");
    assert_eq!(field(&connected, "verified"), "key", "{connected}");
    assert_eq!(field(&connected, "new"), "yes", "{connected}");
    let code = field(&connected, "code");
    let mitm_code = mitm.code_with(fooled.addr).expect("a session with alice");
    assert_eq!(
        code,
        mitm_code.to_string(),
        "the code is the man in the middle's"
    );
    assert_ne!(
        code, real_codes[0],
        "the intercepted call shows the real call's code"
    );
    assert_eq!(
        events_of(&bob, "incoming").len(),
        1,
        "the real bob heard of the intercepted call: {}",
        bob.transcript()
    );
}

/// The whole attack: a directory that lies to both phones puts the man in the middle
/// in bob's place for alice and in alice's for bob. It answers alice's call and calls
/// bob as alice with its own key; bob accepts. Both phones connect, each `verified=key`
/// and first contact (`new=yes`: bob's when he announces the call, alice's when she
/// connects) — the directory vouched for the man in the middle's key on both sides — and
/// each shows its own session's code: two different codes, which the users read to each
/// other to find the man in the middle. The first contact also pinned his key: when the
/// directory tells the truth again, alice refuses the real bob as `key-changed`.
#[test]
fn a_directory_lying_to_both_phones_is_caught_by_the_short_code() {
    let fake = FakeDirectory::start();
    let mut mitm = Attacker::new();
    fake.claim("bob", mitm.addr(), &mitm.public_key());
    fake.claim("alice", mitm.addr(), &mitm.public_key());
    let mut alice = Phone::start_registered(Phone::builder("alice").server_addr(fake.addr));
    let mut bob = Phone::start_registered(Phone::builder("bob").server_addr(fake.addr));
    let bob_key = key_of(&bob);

    alice.send("call bob");
    let (call, alice_key) = mitm_rings(&mut mitm, &alice);
    alice.expect_event("ringing");
    mitm.send_start(bob.addr, &bob_key, "alice", call);
    let incoming = expect_incoming(&mut bob, "alice", mitm.addr(), "key");
    assert_eq!(field(&incoming, "new"), "yes", "{incoming}");
    bob.send("accept");
    let accept = format!("ACCEPT call={call} codec=L16");
    mitm.receive_until(PATIENCE, |r| {
        r.from == bob.addr && r.line().as_deref() == Some(accept.as_str())
    });
    mitm.send_sealed(bob.addr, &bob_key, format!("ACK call={call}").as_bytes())
        .expect("the session with bob is established");
    mitm.send_sealed(alice.addr, &alice_key, accept.as_bytes())
        .expect("the session with alice is established");

    let at_alice = alice.expect_event("connected");
    let at_bob = bob.expect_event("connected");
    for event in [&at_alice, &at_bob] {
        assert_eq!(field(event, "verified"), "key", "{event}");
    }
    // Bob pinned the key when he announced the call (`incoming ... new=yes`), alice now.
    assert_eq!(field(&at_alice, "new"), "yes", "{at_alice}");
    let codes = [field(&at_alice, "code"), field(&at_bob, "code")];
    let mitm_codes = [alice.addr, bob.addr].map(|peer| {
        mitm.code_with(peer)
            .expect("a session with each phone")
            .to_string()
    });
    assert_eq!(
        codes, mitm_codes,
        "each phone shares its code with the man in the middle"
    );
    assert_ne!(
        codes[0], codes[1],
        "a man in the middle between two equal codes"
    );

    // The directory tells the truth again: alice's pin, taken on first contact, is the
    // man in the middle's key.
    alice.send("hangup");
    alice.expect_ended("hangup");
    fake.claim("bob", bob.addr, &bob_key);
    fake.claim("alice", alice.addr, &alice_key);
    alice.send("call bob");
    alice.expect_ended("key-changed");
}

/// Verification binds the key to the name, not to the address or the phone: a fresh
/// key claiming mallory, registered with her own key, is `verified=no` at bob; the real
/// mallory is `verified=key`, and bob pins her key; the fresh key claiming her again is
/// then refused before it rings (`key-changed`).
#[test]
fn a_caller_is_key_verified_only_with_the_key_bound_to_its_name() {
    let (server, _alice, mut bob) = alice_and_bob(|bob| bob);
    let mut mallory = Phone::start_registered(Phone::builder("mallory").server(&server));
    let mut attacker = Attacker::new();
    attacker.send_start(bob.addr, &key_of(&bob), "mallory", CallId::new(0x5eed_000d));
    expect_incoming(&mut bob, "mallory", attacker.addr(), "no");
    bob.send("reject");
    bob.expect_ended("rejected");

    mallory.send("call bob");
    let incoming = expect_incoming(&mut bob, "mallory", mallory.addr, "key");
    assert_eq!(field(&incoming, "new"), "yes", "{incoming}");
    bob.send("reject");
    bob.expect_ended("rejected");
    mallory.expect_ended("rejected");

    attacker.send_start(bob.addr, &key_of(&bob), "mallory", CallId::new(0x5eed_000e));
    let ended = bob.expect_event("ended");
    assert_eq!(ended.reason().as_deref(), Some("key-changed"), "{ended}");
    assert_eq!(events_of(&bob, "incoming").len(), 2, "{}", bob.transcript());
}

/// A key change, and trusting the new key on purpose. Bob has a key pinned for alice
/// that is not hers (as if her phone had got a new identity since): her call is refused
/// (`ended alice reason=key-changed`), never announced, and bob's log says to `trust
/// alice`. `trust alice` pins the key she called with (`trusted alice key=… fingerprint=…`,
/// written to bob's `known_peers`), and her next call rings, `verified=key`.
#[test]
fn a_changed_key_is_refused_until_it_is_trusted() {
    let old_key = fresh_identity().public();
    let (_server, mut alice, mut bob) = alice_and_bob(|bob| bob.pin("alice", &old_key.to_string()));
    let alice_key = key_of(&alice);
    alice.send("call bob");
    let ended = bob.expect_event("ended");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
    assert_eq!(ended.reason().as_deref(), Some("key-changed"), "{ended}");
    alice.expect_ended("rejected");
    assert!(
        events_of(&bob, "incoming").is_empty(),
        "{}",
        bob.transcript()
    );
    assert!(
        bob.stderr_lines()
            .iter()
            .any(|line| line.contains("trust alice") && line.contains(&alice_key.to_string())),
        "{}",
        bob.transcript()
    );

    let trusted = bob.ask("trust alice", "trusted");
    assert_eq!(trusted.peer(), Some("alice"), "{trusted}");
    assert_eq!(field(&trusted, "key"), alice_key.to_string(), "{trusted}");
    assert_eq!(
        field(&trusted, "fingerprint"),
        fingerprint(&alice_key).to_string(),
        "{trusted}"
    );
    let known_peers = std::fs::read_to_string(bob.dir().join("state/parlo/known_peers"))
        .expect("bob's known_peers");
    assert!(
        known_peers.contains(&format!("alice {alice_key}"))
            && !known_peers.contains(&old_key.to_string()),
        "{known_peers}"
    );

    alice.send("call bob");
    let incoming = expect_incoming(&mut bob, "alice", alice.addr, "key");
    assert_eq!(
        incoming.field("new"),
        None,
        "alice is pinned already: {incoming}"
    );
}
