//! parlo-client end to end: the call flows of the specs between real phones on loopback,
//! each phone on its own 127.x.y.z address, with a real directory server.

use std::time::{Duration, Instant};

use parlo_tests::phone_harness::{Phone, connect_call};
use parlo_tests::server_harness::Server;

/// A server and two registered phones, alice and bob.
fn alice_and_bob() -> (Server, Phone, Phone) {
    let server = Server::start(&[]);
    let alice = Phone::registered("alice", &server);
    let bob = Phone::registered("bob", &server);
    (server, alice, bob)
}

#[test]
fn alice_calls_bob_bob_answers_alice_hangs_up() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    assert_eq!(alice.expect_event("calling").peer(), Some("bob"));
    let incoming = bob.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("alice"), "{incoming}");
    assert_eq!(
        incoming.field("from"),
        Some(alice.addr.to_string()),
        "{incoming}"
    );
    // Encrypted, and alice's key is the one the directory binds to her name: verified by
    // key, and pinned on this first contact.
    assert_eq!(
        incoming.field("verified").as_deref(),
        Some("key"),
        "{incoming}"
    );
    assert_eq!(incoming.field("new").as_deref(), Some("yes"), "{incoming}");
    assert_eq!(incoming.field("address"), None, "{incoming}");
    assert_eq!(alice.expect_event("ringing").peer(), Some("bob"));
    let status = alice.status();
    assert_eq!(
        status.field("state").as_deref(),
        Some("dialing"),
        "{status}"
    );
    let status = bob.status();
    assert_eq!(
        status.field("state").as_deref(),
        Some("ringing"),
        "{status}"
    );
    bob.send("accept");
    let connected = alice.expect_event("connected");
    let answered = bob.expect_event("connected");
    assert_eq!(connected.peer(), Some("bob"));
    assert_eq!(answered.peer(), Some("alice"));
    // Both phones show the same short code.
    assert!(connected.field("code").is_some(), "{connected}");
    assert_eq!(connected.field("code"), answered.field("code"));
    let status = alice.status();
    assert_eq!(
        status.field("state").as_deref(),
        Some("in-call"),
        "{status}"
    );
    assert_eq!(
        status.field("peer_addr"),
        Some(bob.addr.to_string()),
        "{status}"
    );
    assert_eq!(
        status.field("dialect").as_deref(),
        Some("parlo"),
        "{status}"
    );
    alice.send("hangup");
    assert_eq!(alice.expect_ended("hangup").peer(), Some("bob"));
    assert_eq!(bob.expect_ended("remote-hangup").peer(), Some("alice"));
}

#[test]
fn bob_calls_alice_and_the_callee_hangs_up() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut bob, &mut alice);
    alice.send("hangup");
    assert_eq!(alice.expect_ended("hangup").peer(), Some("bob"));
    assert_eq!(bob.expect_ended("remote-hangup").peer(), Some("alice"));
}

#[test]
fn rejected_call() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    bob.expect_event("incoming");
    bob.send("reject");
    assert_eq!(alice.expect_ended("rejected").peer(), Some("bob"));
    let ended = bob.expect_event("ended");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
    alice.expect_no_event("connected", Duration::from_millis(300));
    bob.expect_no_event("connected", Duration::ZERO);
}

#[test]
fn no_answer_ends_the_call_on_both_sides_after_the_callers_answer_timeout() {
    let server = Server::start(&[]);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).answer_timeout(1));
    let mut bob = Phone::registered("bob", &server);
    let dialed = Instant::now();
    alice.send("call bob");
    bob.expect_event("incoming");
    let ended = alice.expect_ended("no-answer");
    let waited = ended.at - dialed;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "no-answer after {waited:?} with --answer-timeout 1\n{}",
        alice.transcript()
    );
    // The caller cancels: the callee stops ringing.
    assert_eq!(bob.expect_ended("cancelled").peer(), Some("alice"));
    bob.send("accept");
    bob.expect_event("error");
}

#[test]
fn a_callee_that_hears_nothing_more_stops_ringing_on_its_own_timeout() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    let mut bob = Phone::start_registered(Phone::builder("bob").server(&server).answer_timeout(1));
    alice.send("call bob");
    bob.expect_event("incoming");
    alice.expect_event("ringing");
    // Alice's phone vanishes while Bob's rings: no CLOSE will ever come.
    alice.kill();
    let ended = bob.expect_event("ended");
    assert_eq!(ended.peer(), Some("alice"), "{ended}");
}

#[test]
fn calling_an_unknown_name() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call nobody");
    let ended = alice.expect_ended("unknown-user");
    assert_eq!(ended.peer(), Some("nobody"), "{ended}");
    // And the phone is idle again: a real call works.
    connect_call(&mut alice, &mut bob);
}

#[test]
fn a_third_caller_gets_busy_and_the_call_goes_on() {
    let (server, mut alice, mut bob) = alice_and_bob();
    let mut carol = Phone::registered("carol", &server);
    // While bob's phone rings for alice...
    alice.send("call bob");
    bob.expect_event("incoming");
    carol.send("call bob");
    assert_eq!(carol.expect_ended("busy").peer(), Some("bob"));
    // ...and during the call.
    bob.send("accept");
    alice.expect_event("connected");
    bob.expect_event("connected");
    carol.send("call bob");
    assert_eq!(carol.expect_ended("busy").peer(), Some("bob"));
    carol.send("call alice");
    assert_eq!(carol.expect_ended("busy").peer(), Some("alice"));
    alice.expect_no_event("ended", Duration::from_millis(300));
    bob.expect_no_event("ended", Duration::ZERO);
    bob.expect_no_event("incoming", Duration::ZERO);
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
}

#[test]
fn caller_cancels_while_the_callee_rings() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    bob.expect_event("incoming");
    alice.expect_event("ringing");
    alice.send("hangup");
    assert_eq!(alice.expect_ended("cancelled").peer(), Some("bob"));
    assert_eq!(bob.expect_ended("cancelled").peer(), Some("alice"));
    bob.send("accept");
    bob.expect_event("error");
    alice.expect_no_event("connected", Duration::from_millis(300));
}

#[test]
fn peer_killed_mid_call_ends_the_call_as_peer_lost() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut alice, &mut bob);
    let killed = Instant::now();
    bob.kill();
    let ended = alice.expect_ended("peer-lost");
    assert_eq!(ended.peer(), Some("bob"));
    let after = ended.at - killed;
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(9),
        "peer-lost {after:?} after the peer died\n{}",
        alice.transcript()
    );
    // Idle again: a new call can be placed (bob is gone from the directory).
    alice.send("call bob");
    alice.expect_ended("unknown-user");
}

#[test]
fn a_frozen_peer_is_lost_too_and_its_late_close_changes_nothing() {
    let (server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut alice, &mut bob);
    bob.signal("STOP");
    alice.expect_ended("peer-lost");
    bob.signal("CONT");
    // Bob wakes up, finds his call silent too and ends it; alice may already be busy with
    // carol: nothing from bob's stale call may disturb that.
    let mut carol = Phone::registered("carol", &server);
    connect_call(&mut alice, &mut carol);
    bob.expect_event("ended");
    alice.expect_no_event("ended", Duration::from_millis(500));
    alice.send("hangup");
    alice.expect_ended("hangup");
    carol.expect_ended("remote-hangup");
}

#[test]
fn several_calls_in_a_row_both_ways() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    for round in 0..4 {
        let (caller, callee) = if round % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        connect_call(caller, callee);
        // Either side hangs up.
        let (hanging, other) = if round < 2 {
            (caller, callee)
        } else {
            (callee, caller)
        };
        hanging.send("hangup");
        hanging.expect_ended("hangup");
        other.expect_ended("remote-hangup");
    }
    // A rejected and an unanswered call in between leave nothing behind.
    alice.send("call bob");
    bob.expect_event("incoming");
    bob.send("reject");
    alice.expect_ended("rejected");
    bob.expect_event("ended");
    connect_call(&mut alice, &mut bob);
    bob.send("hangup");
    bob.expect_ended("hangup");
    alice.expect_ended("remote-hangup");
}

#[test]
fn auto_answer_connects_at_once() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    let mut door = Phone::start_registered(Phone::builder("door").server(&server).auto_answer());
    for _ in 0..3 {
        alice.send("call door");
        alice.expect_event("connected");
        door.expect_event("connected");
        alice.send("hangup");
        alice.expect_ended("hangup");
        door.expect_ended("remote-hangup");
    }
}

#[test]
fn commands_that_make_no_sense_now_get_an_error_and_the_phone_carries_on() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    for command in [
        "accept",
        "reject",
        "hangup",
        "call",
        "call alice",
        "dance",
        "call bob extra words",
    ] {
        alice.send(command);
        let error = alice.expect_event("error");
        assert!(!error.line.is_empty());
    }
    alice.send("");
    connect_call(&mut alice, &mut bob);
    alice.send("call bob");
    alice.expect_event("error");
    alice.send("accept");
    alice.expect_event("error");
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
}

#[test]
fn help_list_and_status_answer() {
    let (server, mut alice, _bob) = alice_and_bob();
    let _carol = Phone::registered("carol", &server);
    alice.send("help");
    // `help` answers with at least one line naming the commands.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = alice.stdout_lines().join("\n");
        if [
            "call", "accept", "reject", "hangup", "list", "status", "quit",
        ]
        .iter()
        .all(|c| text.contains(c))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "help does not name every command\n{}",
            alice.transcript()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    alice.skip_unread();
    let users = alice.ask("list", "users");
    for name in ["alice", "bob", "carol"] {
        assert!(users.line.contains(name), "{users}");
    }
    let status = alice.status();
    assert_eq!(status.field("state").as_deref(), Some("idle"), "{status}");
    assert_eq!(
        status.field("registered").as_deref(),
        Some("yes"),
        "{status}"
    );
}

#[test]
fn quit_disconnects_from_the_directory_and_exits_0() {
    let (server, mut alice, mut bob) = alice_and_bob();
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    assert!(
        bob.events().iter().any(|e| e.kind == "bye"),
        "{}",
        bob.transcript()
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("DISCONNECT") && l.contains("bob")),
        "the server saw bob's DISCONNECT:\n{log}"
    );
    alice.send("call bob");
    alice.expect_ended("unknown-user");
}

#[test]
fn quit_during_a_call_hangs_up_first() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut alice, &mut bob);
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    alice.expect_ended("remote-hangup");
}

#[test]
fn sigterm_hangs_up_and_exits_0() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut alice, &mut bob);
    bob.signal("TERM");
    assert_eq!(bob.wait().code(), Some(0), "{}", bob.transcript());
    alice.expect_ended("remote-hangup");
}

#[test]
fn calling_each_other_at_once_leaves_one_call() {
    for _ in 0..3 {
        let (_server, mut alice, mut bob) = alice_and_bob();
        alice.send("call bob");
        bob.send("call alice");
        // Usually the STARTs cross after both lookups have answered: each phone sees the
        // other's START from the address its lookup gave, and one call connects at once.
        // But a START may arrive before its receiver's lookup has answered: that phone
        // cannot tell it from a stranger's and answers BUSY; that call ends busy and the
        // receiver's own call then rings at the other phone as an ordinary call, answered
        // here. Either way exactly one call survives.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = false;
        loop {
            let has = |p: &Phone, kind: &str| p.events().iter().any(|e| e.kind == kind);
            if has(&alice, "connected") && has(&bob, "connected") {
                break;
            }
            if !answered {
                for phone in [&mut alice, &mut bob] {
                    if has(phone, "incoming") {
                        phone.send("accept");
                        answered = true;
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no call connected\n{}\n{}",
                alice.transcript(),
                bob.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(alice.expect_event("connected").peer(), Some("bob"));
        assert_eq!(bob.expect_event("connected").peer(), Some("alice"));
        alice.expect_no_event("ended", Duration::from_millis(300));
        bob.expect_no_event("ended", Duration::ZERO);
        bob.send("hangup");
        bob.expect_ended("hangup");
        alice.expect_ended("remote-hangup");
        // Nothing of the losing call is left: a new call goes through.
        connect_call(&mut alice, &mut bob);
    }
}

#[test]
fn a_callee_stopped_while_ringing_ends_the_callers_call_at_once() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    bob.expect_event("incoming");
    alice.expect_event("ringing");
    let stopped = Instant::now();
    bob.signal("TERM");
    assert_eq!(bob.wait().code(), Some(0), "{}", bob.transcript());
    let ended = alice.expect_event("ended");
    assert!(
        ended.at - stopped < Duration::from_secs(2),
        "the caller learns at once, not after its answer timeout: {ended}"
    );
}

#[test]
fn a_caller_stopped_while_dialing_cancels_the_call() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    bob.expect_event("incoming");
    alice.signal("TERM");
    assert_eq!(alice.wait().code(), Some(0), "{}", alice.transcript());
    assert_eq!(bob.expect_ended("cancelled").peer(), Some("alice"));
}
