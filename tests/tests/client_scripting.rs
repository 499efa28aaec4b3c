//! parlo-client end to end, as a script drives it: `ctl call` follows its call to the
//! outcome and says it in its exit code, `ctl watch` streams the events of calls placed
//! by others, and a command gets one coherent answer.

use std::process::Output;
use std::time::Duration;

use parlo_tests::phone_harness::{Event, Phone};
use parlo_tests::server_harness::Server;

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A phone driven only through its control socket, as under systemd.
fn driven(name: &str, server: &Server) -> Phone {
    Phone::start_registered(Phone::builder(name).server(server).stdin_null().control())
}

/// Runs `ctl <args>` on `phone` in a thread of its own (it waits for a call's outcome
/// while the test plays the other side).
fn ctl_in_background(
    phone: &Phone,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let path = phone.control_path().to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        parlo_tests::phone_harness::ctl(&path, &args, "")
    })
}

#[test]
fn ctl_call_of_an_unknown_name_exits_non_zero_and_says_unknown_user() {
    let server = Server::start(&[]);
    let alice = driven("alice", &server);
    let out = alice.ctl(&["call", "nobody"], "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{out:?}\n{}",
        alice.transcript()
    );
    assert_eq!(
        lines(&out),
        ["calling nobody", "ended nobody reason=unknown-user"],
        "{out:?}"
    );
}

#[test]
fn ctl_call_of_a_phone_that_answers_exits_0_after_connected() {
    let server = Server::start(&[]);
    let _bob = Phone::start_registered(Phone::builder("bob").server(&server).auto_answer());
    let alice = driven("alice", &server);
    let out = alice.ctl(&["call", "bob"], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{out:?}\n{}",
        alice.transcript()
    );
    let said = lines(&out);
    assert_eq!(
        said.first().map(String::as_str),
        Some("calling bob"),
        "{out:?}"
    );
    assert!(
        said.last().is_some_and(|l| l.starts_with("connected bob ")),
        "{out:?}"
    );
    assert_eq!(
        alice.ctl(&["status"], "").status.code(),
        Some(0),
        "the control socket still answers"
    );
    let status = String::from_utf8_lossy(&alice.ctl(&["status"], "").stdout).into_owned();
    assert!(status.contains("state=in-call"), "{status}");
}

#[test]
fn ctl_call_that_is_rejected_exits_1_with_the_reason_and_no_wait_does_not_wait() {
    let server = Server::start(&[]);
    let mut bob = Phone::registered("bob", &server);
    let alice = driven("alice", &server);

    let call = ctl_in_background(&alice, &["call", "bob"]);
    bob.expect_event("incoming");
    bob.send("reject");
    let out = call.join().expect("ctl thread");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        lines(&out).last().map(String::as_str),
        Some("ended bob reason=rejected"),
        "{out:?}"
    );

    // --no-wait (before or after the command): the first answer, at once.
    for args in [["--no-wait", "call", "bob"], ["call", "--no-wait", "bob"]] {
        let out = alice.ctl(&args, "");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(lines(&out), ["calling bob"], "{args:?}");
        bob.expect_event("incoming");
        assert_eq!(alice.ctl(&["hangup"], "").status.code(), Some(0));
        bob.expect_ended("cancelled");
    }

    // JSON lines, and a call already in progress refused.
    let out = alice.ctl(&["--no-wait", "call", "bob"], "");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    bob.expect_event("incoming");
    let out = alice.ctl(&["call", "bob", "--json"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = lines(&out);
    assert_eq!(said.len(), 1, "one answer: {out:?}");
    let refusal: serde_json::Value = serde_json::from_str(&said[0]).expect("a JSON line");
    assert_eq!(refusal["event"], "error", "{refusal}");
}

/// The kinds of the events `watch` prints up to and including the call's `ended`.
fn watched_until_ended(watch: &mut parlo_tests::phone_harness::Watch) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = watch.next_event();
        let ended = event.kind == "ended";
        seen.push(event);
        if ended {
            return seen;
        }
    }
}

#[test]
fn ctl_watch_sees_incoming_connected_and_ended_of_a_call_placed_by_another_client() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    let bob = driven("bob", &server);
    let mut text = bob.watch(&["watch"], false);
    let mut json_after = bob.watch(&["watch", "--json"], true);
    let mut json_before = bob.watch(&["--json", "watch"], true);

    alice.send("call bob");
    // Bob answers through another ctl; its answer, and another client's status, are not
    // the watchers' business.
    let incoming = text.next_event();
    assert_eq!(incoming.kind, "incoming", "{}", text.transcript());
    assert_eq!(bob.ctl(&["accept"], "").status.code(), Some(0));
    alice.expect_event("connected");
    assert_eq!(bob.ctl(&["status"], "").status.code(), Some(0));
    alice.send("hangup");
    alice.expect_ended("hangup");

    let rest = watched_until_ended(&mut text);
    let kinds: Vec<&str> = rest.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["connected", "ended"], "{}", text.transcript());
    assert_eq!(incoming.peer(), Some("alice"));
    assert_eq!(rest[1].line, "ended alice reason=remote-hangup");

    for watch in [&mut json_after, &mut json_before] {
        let seen = watched_until_ended(watch);
        let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["incoming", "connected", "ended"],
            "{}",
            watch.transcript()
        );
        for event in &seen {
            assert!(event.json.is_some(), "{event}");
            assert_eq!(event.peer(), Some("alice"), "{event}");
        }
        assert_eq!(seen[2].reason().as_deref(), Some("remote-hangup"));
    }

    // The watchers last as long as the phone: they end with it, after its `bye`.
    assert_eq!(bob.ctl(&["quit"], "").status.code(), Some(0));
    assert_eq!(text.next_event().kind, "bye", "{}", text.transcript());
    assert_eq!(text.wait().code(), Some(0), "{}", text.transcript());
}

#[test]
fn calling_while_the_directory_is_down_gives_exactly_one_error_answer_and_no_calling() {
    let mut server = Server::start(&[]);
    let _bob = Phone::registered("bob", &server);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    server.signal("KILL");
    server.wait();
    alice.expect_event("unregistered");

    let out = alice.ctl(&["call", "bob"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = lines(&out);
    assert_eq!(said.len(), 1, "one answer: {said:?}");
    assert!(
        said[0].starts_with("error reason=cannot call bob: not connected to the directory"),
        "{said:?}"
    );
    // The phone itself printed the same one answer, and no call.
    alice.expect_event("error");
    alice.expect_no_event("calling", Duration::from_millis(300));
    alice.expect_no_event("ended", Duration::ZERO);
    assert_eq!(alice.exit_status(), None);
}

#[test]
fn ctl_watch_ends_as_soon_as_its_reader_goes_away() {
    use std::io::BufRead;
    let server = Server::start(&[]);
    let bob = driven("bob", &server);
    let mut watch = parlo_tests::phone_harness::client_command()
        .arg("ctl")
        .arg("--control")
        .arg(bob.control_path())
        .arg("watch")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("parlo-client ctl starts");
    let mut reader = std::io::BufReader::new(watch.stdout.take().expect("piped"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("a line");
    assert!(first.starts_with("status "), "{first}");
    // `ctl watch | head -1`, `... | while read ...; do break; done`: no event comes,
    // yet ctl must not linger.
    drop(reader);
    let status = parlo_tests::server_harness::wait_exit(&mut watch, Duration::from_secs(2));
    if status.is_none() {
        let _ = watch.kill();
        let _ = watch.wait();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "still running");
}
