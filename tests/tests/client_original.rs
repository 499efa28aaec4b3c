//! parlo-client end to end with a phone of the original project, emulated as its report
//! describes it (bare `START <name>`, `ACCEPT` ten times, raw little-endian PCM datagrams,
//! several `CLOSE`, always port 5001). The Parlo phones here listen on port 5001 of their
//! own address, as the original expects of its peers. Last, a Parlo phone with the
//! original project's directory server, emulated as its code behaves.

use std::time::{Duration, Instant};

use parlo_tests::phone_harness::{
    Answer, ORIGINAL_PORT, OriginalPeer, Phone, SAMPLE_RATE, align, assert_in_order, read_wav,
    speechlike, write_wav,
};
use parlo_tests::server_harness::{
    OriginalClient, OriginalServer, Server, TempDir, eventually, loopback,
};

/// A Parlo phone on port 5001 of its own address, its audio from and to WAV files.
fn parlo_phone(
    name: &str,
    server: &Server,
    dir: &TempDir,
    says: &[i16],
) -> (Phone, std::path::PathBuf) {
    let input = dir.path().join(format!("{name}-says.wav"));
    let output = dir.path().join(format!("{name}-hears.wav"));
    write_wav(&input, says);
    let phone = Phone::start_registered(
        Phone::builder(name)
            .server(server)
            .port(ORIGINAL_PORT)
            .audio(format!("file:{},{}", input.display(), output.display())),
    );
    (phone, output)
}

/// `recording` holds all of `sent`, exactly.
fn assert_intact(what: &str, sent: &[i16], recording: &[i16]) {
    let found = align(sent, recording)
        .unwrap_or_else(|| panic!("{what}: nothing of what was sent arrived"));
    assert_eq!(
        (found.overlap, found.mismatches),
        (sent.len(), 0),
        "{what}: {found:?}"
    );
    println!(
        "{what}: {} samples intact, starting {} samples ({:.1} ms) in",
        sent.len(),
        found.offset,
        found.offset_ms()
    );
}

const TALK: Duration = Duration::from_millis(2500);

fn samples(seconds: f64, seed: u32) -> Vec<i16> {
    speechlike((seconds * f64::from(SAMPLE_RATE)) as usize, seed)
}

#[test]
fn an_original_phone_calls_a_parlo_phone_and_hangs_up() {
    let server = Server::start(&[]);
    let dir = TempDir::new("orig");
    let bob_says = samples(1.5, 21);
    let (mut bob, bob_hears) = parlo_phone("bob", &server, &dir, &bob_says);
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);
    let caller = std::thread::spawn(move || {
        let answer = old.call("bob");
        (old, answer)
    });
    let incoming = bob.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("oldphone"), "{incoming}");
    assert_eq!(
        incoming.field("verified").as_deref(),
        Some("plaintext"),
        "{incoming}"
    );
    assert_eq!(
        incoming.field("address").as_deref(),
        Some("yes"),
        "{incoming}"
    );
    bob.send("accept");
    let connected = bob.expect_event("connected");
    assert_eq!(
        connected.field("dialect").as_deref(),
        Some("original"),
        "{connected}"
    );
    let (old, (answer, from)) = caller.join().expect("the original's call");
    assert_eq!(answer, Answer::Accept, "{}", bob.transcript());
    assert_eq!(from, Some(bob.addr));

    let old_says = samples(1.5, 22);
    let media = old.talk(bob.addr, &old_says, TALK);
    assert!(!media.closed_by_peer, "{media:?}");
    assert_eq!(
        media.odd_datagrams, 0,
        "a Parlo phone sends the original only raw PCM"
    );
    old.hangup(bob.addr);
    assert_eq!(bob.expect_ended("remote-hangup").peer(), Some("oldphone"));
    // The repeated CLOSEs change nothing more.
    bob.expect_no_event("ended", Duration::from_millis(300));
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());

    assert_intact("parlo bob -> original", &bob_says, &media.received);
    // Through the Parlo phone's jitter buffer: see client_audio.rs for its glitches.
    assert_in_order("original -> parlo bob", &old_says, &read_wav(&bob_hears), 4);
    old.disconnect();
}

#[test]
fn a_parlo_phone_calls_an_original_phone_and_hangs_up() {
    let server = Server::start(&[]);
    let dir = TempDir::new("orig");
    let alice_says = samples(1.5, 31);
    let (mut alice, alice_hears) = parlo_phone("alice", &server, &dir, &alice_says);
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);

    alice.send("call oldphone");
    let (start, from) = old
        .wait_start(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no START reached the original\n{}", alice.transcript()));
    assert_eq!(from, alice.addr);
    // The original takes the caller's name as the word after START.
    let caller = start.split_whitespace().nth(1).expect("a name after START");
    assert_eq!(caller, "alice", "{start:?}");
    let to = old.accept(caller);
    assert_eq!(to, alice.addr);
    let connected = alice.expect_event("connected");
    assert_eq!(connected.peer(), Some("oldphone"));
    assert_eq!(
        connected.field("dialect").as_deref(),
        Some("original"),
        "{connected}"
    );

    let old_says = samples(1.5, 32);
    let talker = std::thread::spawn(move || {
        let media = old.talk(to, &old_says, Duration::from_secs(8));
        (old, old_says, media)
    });
    std::thread::sleep(TALK);
    alice.send("hangup");
    assert_eq!(alice.expect_ended("hangup").peer(), Some("oldphone"));
    let (old, old_says, media) = talker.join().expect("the original's audio");
    assert!(
        media.closed_by_peer,
        "the original must see CLOSE: {:?}",
        media.signalling
    );
    assert!(
        media.signalling.iter().all(|l| l == "CLOSE"),
        "only the original's bare words: {:?}",
        media.signalling
    );
    assert_eq!(media.odd_datagrams, 0);
    assert_eq!(alice.quit().code(), Some(0), "{}", alice.transcript());

    assert_intact("parlo alice -> original", &alice_says, &media.received);
    assert_intact(
        "original -> parlo alice",
        &old_says,
        &read_wav(&alice_hears),
    );
    old.disconnect();
}

#[test]
fn an_original_phone_rejects_a_parlo_call() {
    let server = Server::start(&[]);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).port(ORIGINAL_PORT));
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);
    alice.send("call oldphone");
    let (start, _) = old.wait_start(Duration::from_secs(5)).expect("a START");
    // The directory says oldphone is an original client: it is called the original's way.
    assert_eq!(
        start, "START alice",
        "the original's START, without call id or version"
    );
    let caller = start.split_whitespace().nth(1).expect("a name").to_owned();
    old.reject(&caller);
    assert_eq!(alice.expect_ended("rejected").peer(), Some("oldphone"));
    // A second call is placed the same way.
    while old.recv(Duration::from_millis(200)).is_some() {}
    alice.send("call oldphone");
    let (again, _) = old
        .wait_start(Duration::from_secs(5))
        .expect("a second START");
    assert_eq!(again, "START alice");
}

#[test]
fn a_parlo_phone_rejects_an_original_call() {
    let server = Server::start(&[]);
    let mut bob =
        Phone::start_registered(Phone::builder("bob").server(&server).port(ORIGINAL_PORT));
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);
    let caller = std::thread::spawn(move || old.call("bob").0);
    bob.expect_event("incoming");
    bob.send("reject");
    assert_eq!(caller.join().expect("the original's call"), Answer::Reject);
    bob.expect_event("ended");
}

#[test]
fn an_original_phone_calling_a_busy_parlo_phone_is_rejected() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    let mut bob =
        Phone::start_registered(Phone::builder("bob").server(&server).port(ORIGINAL_PORT));
    parlo_tests::phone_harness::connect_call(&mut alice, &mut bob);
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);
    let (answer, _) = old.call("bob");
    assert_eq!(answer, Answer::Reject, "{}", bob.transcript());
    bob.expect_no_event("ended", Duration::from_millis(200));
    alice.send("hangup");
    bob.expect_ended("remote-hangup");
}

/// bob, a Parlo phone on port 5001, has answered a call from `oldphone`, an original
/// phone: both are returned in the call.
fn bob_answers_an_original_call(server: &Server) -> (Phone, OriginalPeer) {
    let mut bob = Phone::start_registered(Phone::builder("bob").server(server).port(ORIGINAL_PORT));
    let mut old = OriginalPeer::register("oldphone", loopback(), server.addr);
    let caller = std::thread::spawn(move || {
        let answer = old.call("bob");
        (old, answer)
    });
    bob.expect_event("incoming");
    bob.send("accept");
    bob.expect_event("connected");
    let (old, (answer, _)) = caller.join().expect("the original's call");
    assert_eq!(answer, Answer::Accept);
    (bob, old)
}

#[test]
fn an_original_phone_that_goes_silent_is_lost_and_the_parlo_phone_hangs_up_on_it() {
    let server = Server::start(&[]);
    let (mut bob, old) = bob_answers_an_original_call(&server);
    let media = old.talk(bob.addr, &samples(0.5, 41), Duration::from_millis(700));
    assert!(!media.received.is_empty());
    // The original's box loses power: nothing more comes from it.
    let ended = bob.expect_ended("peer-lost");
    assert_eq!(ended.peer(), Some("oldphone"));
    // The Parlo phone says CLOSE, in the original's words.
    let mut closes = 0;
    while let Some((bytes, _)) = old.recv(Duration::from_millis(300)) {
        if bytes == b"CLOSE" {
            closes += 1;
        }
    }
    assert!(closes >= 1, "no bare CLOSE reached the original");
}

#[test]
fn an_original_phone_that_misses_the_hangup_is_told_close_again_while_it_streams() {
    let server = Server::start(&[]);
    let (mut bob, old) = bob_answers_an_original_call(&server);
    let to = bob.addr;
    let streamer = std::thread::spawn(move || old.stream_deaf(to, Duration::from_millis(7500)));
    std::thread::sleep(Duration::from_millis(500));
    bob.send("hangup");
    let hung_up = Instant::now();
    bob.expect_ended("hangup");
    let closes = streamer.join().expect("the original's stream");
    // The call closes for 3 s (CLOSE resent on its own schedule); after that, the raw
    // audio of the ended call is still recognised and answered, at most once a second.
    let after: Vec<Duration> = closes
        .iter()
        .filter_map(|t| t.checked_duration_since(hung_up))
        .filter(|d| *d > Duration::from_millis(3500))
        .collect();
    assert!(
        after.len() >= 2,
        "CLOSE answers the ended call's audio after the linger: {after:?}\n{}",
        bob.transcript()
    );
    for pair in after.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "at most one CLOSE a second: {after:?}"
        );
    }
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
}

/// The requests `log` saw, as commands, failing the test on anything the original server
/// cannot take.
fn original_server_survived(server: &OriginalServer) -> Vec<String> {
    let log = server.log();
    assert!(log.failures.is_empty(), "the handler failed: {log:?}");
    assert!(
        log.overlaps.is_empty(),
        "a request came before the previous answer: {log:?}"
    );
    assert_eq!(
        log.commands().len(),
        log.reads.len(),
        "one request per read: {log:?}"
    );
    log.commands()
}

#[test]
fn a_parlo_phone_sends_an_original_server_one_request_at_a_time_and_no_list() {
    // Answers take 300 ms: long enough for a phone that does not wait to be seen.
    let server = OriginalServer::start(Duration::from_millis(300));
    let mut alice = Phone::builder("alice").server_addr(server.addr).start();
    alice.expect_event("registered");
    // The phone knows LIST would break the server's handler: it says so and sends nothing.
    let refused = alice.ask("list", "error");
    assert!(
        refused
            .reason()
            .is_some_and(|r| r.contains("does not support listing")),
        "{refused}"
    );
    // Two lookups at once: a call given up before its answer, and the next call.
    alice.send("call bob");
    alice.send("hangup");
    alice.send("call carol");
    loop {
        let ended = alice.expect_event("ended");
        if ended.peer() == Some("carol") {
            assert_eq!(ended.reason().as_deref(), Some("unknown-user"), "{ended}");
            break;
        }
    }
    // First the phone asks for the server's key, to encrypt: the original has none, says
    // so, and the phone goes on in plain text.
    assert_eq!(
        original_server_survived(&server),
        ["KEY", "REG", "GET", "GET"]
    );
    assert_eq!(alice.quit().code(), Some(0), "{}", alice.transcript());
    assert_eq!(
        original_server_survived(&server),
        ["KEY", "REG", "GET", "GET", "DISCONNECT"]
    );
    // Nothing of alice's is left behind to refuse her next registration.
    eventually("alice's name is free", || !server.is_registered("alice"));
}

#[test]
fn the_emulated_original_server_fails_as_the_original_does() {
    // The control run of the test above: what it watches for does break this server.
    let server = OriginalServer::start(Duration::ZERO);
    let connect = || {
        let stream = std::net::TcpStream::connect(server.addr).expect("it accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
    };
    let mut first = OriginalClient::new(connect());
    assert_eq!(
        first.request("REG", "alice"),
        r#"{"ack": "Registered successfully"}"#
    );
    // A PING has no "name": the handler fails, the connection ends, the name stays.
    assert_eq!(
        first.send(r#"{"command": "PING"}"#),
        "",
        "a closed connection"
    );
    assert_eq!(server.log().failures.len(), 1);
    let mut again = OriginalClient::new(connect());
    assert_eq!(
        again.request("REG", "alice"),
        r#"{"ack": "Error Registering"}"#
    );
    // Two requests in one read fail it too.
    let mut both = OriginalClient::new(connect());
    assert_eq!(
        both.send(r#"{"command": "GET", "name": "a"}{"command": "GET", "name": "b"}"#),
        ""
    );
    assert_eq!(server.log().failures.len(), 2);
    // And a request sent before the previous answer is seen.
    let slow = OriginalServer::start(Duration::from_millis(200));
    let mut eager = std::net::TcpStream::connect(slow.addr).expect("it accepts");
    for request in [
        &br#"{"command": "GET", "name": "a"}"#[..],
        br#"{"command": "GET", "name": "b"}"#,
    ] {
        std::io::Write::write_all(&mut eager, request).expect("send");
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually("an overlap", || !slow.log().overlaps.is_empty());
}
