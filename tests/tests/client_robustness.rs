//! parlo-client end to end: forged and stray datagrams from third parties, a directory
//! server that goes away and comes back.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use parlo_tests::phone_harness::{
    Impairment, Phone, Relay, connect_call, statuses_in_call, third_party,
};
use parlo_tests::server_harness::{Server, TempDir, eventually, loopback};

/// The call id of the phone's current call, as its debug log shows it (`call=<8 hex>`).
fn call_id_from_log(phone: &Phone) -> Option<String> {
    let scan = || {
        phone.stderr_lines().iter().rev().find_map(|line| {
            let at = line.find("call=")?;
            let id = line.get(at + 5..at + 13)?;
            id.chars()
                .all(|c| c.is_ascii_hexdigit())
                .then(|| id.to_owned())
        })
    };
    // The log is read from the phone's stderr as it comes, apart from its events: the
    // call's lines may come in a moment after `connected`.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let found = scan();
        if found.is_some() || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every datagram a third party might throw at a phone in a call.
fn forgeries(id: Option<&str>) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = vec![
        b"CLOSE".to_vec(),
        b"CLOSE call=00000000".to_vec(),
        b"REJECT".to_vec(),
        b"BUSY".to_vec(),
        b"START mallory call=12345678 v=2".to_vec(),
        b"START mallory".to_vec(),
        b"garbage \x00\xff".to_vec(),
        vec![0x80; 12 + 1024],
        vec![0x41; 1024],
        vec![],
    ];
    if let Some(id) = id {
        for keyword in ["CLOSE", "REJECT", "BUSY", "ACCEPT", "CLOSED", "ACK"] {
            all.push(format!("{keyword} call={id}").into_bytes());
        }
    }
    all
}

/// alice and bob, registered with a server of their own.
fn alice_and_bob() -> (Server, Phone, Phone) {
    let server = Server::start(&[]);
    let alice = Phone::registered("alice", &server);
    let bob = Phone::registered("bob", &server);
    (server, alice, bob)
}

/// alice and bob in a call alice placed.
fn alice_and_bob_in_a_call() -> (Server, Phone, Phone) {
    let (server, mut alice, mut bob) = alice_and_bob();
    connect_call(&mut alice, &mut bob);
    (server, alice, bob)
}

#[test]
fn a_forged_close_from_a_third_address_is_ignored() {
    let (_server, mut alice, mut bob) = alice_and_bob_in_a_call();
    let id = call_id_from_log(&alice);
    assert!(
        id.is_some(),
        "the debug log shows the call id\n{}",
        alice.transcript()
    );
    let mallory = third_party();
    // Also from the right IP but another port: an address is IP and port.
    let neighbour = UdpSocket::bind((bob.addr.ip(), 0)).expect("bob's IP, another port");
    for forgery in forgeries(id.as_deref()) {
        for target in [alice.addr, bob.addr] {
            mallory.send_to(&forgery, target).expect("send");
            neighbour.send_to(&forgery, target).expect("send");
        }
    }
    alice.expect_no_event("ended", Duration::from_millis(1500));
    bob.expect_no_event("ended", Duration::ZERO);
    // Both still in the call, and it ends normally.
    for status in statuses_in_call(&mut alice, &mut bob) {
        assert!(
            status.number("foreign").is_some_and(|n| n > 0),
            "the forgeries are counted: {status}"
        );
    }
    bob.send("hangup");
    bob.expect_ended("hangup");
    alice.expect_ended("remote-hangup");
    // A phone must not crash on what it got: it still answers.
    alice.status();
    bob.status();
}

/// Sends `payload` to `to` as a UDP datagram that claims to come from `from`, through a
/// raw socket (root only; loopback addresses only). Returns `false` when raw sockets are
/// not allowed here.
fn send_spoofed(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> bool {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        panic!("IPv4 loopback addresses only");
    };
    assert!(
        from.ip().is_loopback() && to.ip().is_loopback(),
        "loopback only"
    );
    let udp_len = 8 + payload.len();
    let mut packet = Vec::with_capacity(20 + udp_len);
    // IPv4 header: the kernel fills in the total length, the id and the checksum.
    packet.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    // UDP header, checksum 0 (none: allowed over IPv4).
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    // SAFETY: plain socket calls on a descriptor owned here and closed before returning;
    // `dest` and `packet` outlive the calls that borrow them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return false;
        }
        let mut dest: libc::sockaddr_in = std::mem::zeroed();
        dest.sin_family = libc::AF_INET as libc::sa_family_t;
        dest.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const dest).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        assert_eq!(sent, packet.len() as isize, "the forged datagram is sent");
    }
    true
}

#[test]
fn a_bare_close_forged_from_the_peers_own_address_does_not_end_the_call() {
    // The attacker knows both addresses but not the call id: a bare CLOSE, the original
    // protocol's, sent with alice's address as its source. A Parlo call's dialect is fixed
    // when it is set up, so bob takes it for foreign. A plaintext call (security off): in
    // an encrypted one not even the call's id would do (`call_security.rs`).
    let server = Server::start(&[]);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).security("off"));
    let mut bob = Phone::start_registered(Phone::builder("bob").server(&server).security("off"));
    connect_call(&mut alice, &mut bob);
    if !send_spoofed(alice.addr, bob.addr, b"CLOSE") {
        println!("skipped: raw sockets need root");
        return;
    }
    bob.expect_no_event("ended", Duration::from_millis(1500));
    let [_, status] = statuses_in_call(&mut alice, &mut bob);
    assert!(
        status.number("foreign").is_some_and(|n| n > 0),
        "the forgery reached bob and was counted: {status}"
    );
    // The control run: the same forgery with the call's id does end the call, so the
    // forged datagrams do reach bob as coming from alice.
    let id = call_id_from_log(&alice).expect("the debug log shows the call id");
    assert!(send_spoofed(
        alice.addr,
        bob.addr,
        format!("CLOSE call={id}").as_bytes()
    ));
    bob.expect_ended("remote-hangup");
}

#[test]
fn a_forged_accept_does_not_connect_a_call_that_rings() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    alice.send("call bob");
    bob.expect_event("incoming");
    alice.expect_event("ringing");
    let id = call_id_from_log(&alice);
    let mallory = third_party();
    for forgery in forgeries(id.as_deref()) {
        mallory.send_to(&forgery, alice.addr).expect("send");
    }
    alice.expect_no_event("connected", Duration::from_millis(800));
    alice.expect_no_event("ended", Duration::ZERO);
    bob.send("accept");
    alice.expect_event("connected");
    bob.expect_event("connected");
}

#[test]
fn datagrams_out_of_any_call_are_ignored() {
    let (_server, mut alice, mut bob) = alice_and_bob();
    let mallory = third_party();
    for forgery in forgeries(Some("0000002a")) {
        if forgery.starts_with(b"START") {
            continue;
        }
        mallory.send_to(&forgery, alice.addr).expect("send");
    }
    alice.expect_no_event("ended", Duration::from_millis(500));
    alice.expect_no_event("connected", Duration::ZERO);
    connect_call(&mut alice, &mut bob);
}

/// A TCP port nobody listens on, on an address of this test.
fn silent_server_addr() -> SocketAddr {
    let listener = TcpListener::bind((loopback(), 0)).expect("a loopback port");
    listener.local_addr().expect("bound")
}

#[test]
fn a_phone_started_before_its_server_registers_when_the_server_comes() {
    let addr = silent_server_addr();
    let mut alice = Phone::builder("alice").server_addr(addr).start();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        alice.exit_status(),
        None,
        "the phone keeps running without its server\n{}",
        alice.transcript()
    );
    assert!(
        !alice.stdout_lines().is_empty() || !alice.stderr_lines().is_empty(),
        "the phone says the server is unreachable"
    );
    let dir = TempDir::new("server");
    let db = dir.path().join("directory.db");
    let listen = addr.to_string();
    let server = Server::start_in(dir, db, &["--listen", &listen]);
    assert_eq!(server.addr, addr);
    alice.expect_event("registered");
    // While unregistered, commands still get answers.
    alice.status();
}

#[test]
fn after_a_server_restart_phones_register_again_and_the_call_in_progress_goes_on() {
    // The server keeps its identity across the restart, as in its state directory: the
    // phones pinned its key.
    let keys = TempDir::new("server-identity");
    let identity = keys.path().join("identity").display().to_string();
    let mut server = Server::start(&["--identity", &identity]);
    let addr = server.addr;
    let mut alice = Phone::registered("alice", &server);
    let mut bob = Phone::registered("bob", &server);
    connect_call(&mut alice, &mut bob);

    server.signal("KILL");
    server.wait();
    drop(server);
    // Each phone says its server went away.
    alice.expect_event("unregistered");
    bob.expect_event("unregistered");
    alice.expect_no_event("ended", Duration::from_millis(1000));
    bob.expect_no_event("ended", Duration::ZERO);
    assert!(alice.exit_status().is_none() && bob.exit_status().is_none());

    let dir = TempDir::new("server");
    let db = dir.path().join("directory.db");
    let listen = addr.to_string();
    let server = Server::start_in(dir, db, &["--listen", &listen, "--identity", &identity]);
    alice.expect_event("registered");
    bob.expect_event("registered");
    alice.expect_no_event("ended", Duration::ZERO);

    // The call that was in progress ends normally.
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    // The new directory knows them both: a new call finds its callee.
    connect_call(&mut bob, &mut alice);
    let listed = alice.ask("list", "users");
    assert!(listed.line.contains("bob"), "{listed}");
    drop(server);
}

#[test]
fn a_call_placed_while_the_server_is_away_fails_clearly() {
    let mut server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    let _bob = Phone::registered("bob", &server);
    server.signal("KILL");
    server.wait();
    std::thread::sleep(Duration::from_millis(300));
    alice.skip_unread();
    alice.send("call bob");
    // One coherent answer: an error right away (the phone knows the server is gone), and
    // then nothing more about a call that never began; or, were the dead server not
    // noticed yet, a call that ends saying the lookup failed or that nobody answered.
    let answer = alice.next_event();
    match answer.kind.as_str() {
        "error" => {
            let reason = answer.reason().unwrap_or_default();
            assert!(reason.contains("cannot call bob"), "{answer}");
            alice.expect_no_event("calling", Duration::from_millis(300));
            alice.expect_no_event("ended", Duration::ZERO);
        }
        "calling" => {
            let ended = alice.expect_event("ended");
            assert!(
                matches!(
                    ended.reason().as_deref(),
                    Some("lookup-failed" | "no-answer")
                ),
                "{ended}\n{}",
                alice.transcript()
            );
        }
        _ => panic!(
            "answer to a call without a server: {answer}\n{}",
            alice.transcript()
        ),
    }
    assert_eq!(alice.exit_status(), None);
}

#[test]
fn lost_signalling_is_retransmitted_until_acknowledged() {
    let server = Server::start(&[]);
    // The relay reads the signalling lines: a plaintext call (security off).
    let mut bob =
        Phone::start_registered(Phone::builder("bob-phone").server(&server).security("off"));
    // The first START and the first two answers (RINGING, ACCEPT or its repeats) vanish.
    let relay = Relay::start(
        "bob",
        &server,
        bob.addr,
        Impairment {
            drop_first_requests: 1,
            drop_first_answers: 2,
            ..Impairment::default()
        },
    );
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).security("off"));
    alice.send("call bob");
    bob.expect_event("incoming");
    bob.send("accept");
    alice.expect_event("connected");
    bob.expect_event("connected");
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    let retransmitted = |phone: &mut Phone| phone.status().number("retransmissions");
    assert!(
        retransmitted(&mut alice).is_some_and(|n| n >= 1),
        "alice resent START"
    );
    assert!(
        retransmitted(&mut bob).is_some_and(|n| n >= 1),
        "bob resent what was lost"
    );
    let report = relay.finish();
    let starts = report
        .requests
        .iter()
        .filter(|l| l.contains("START"))
        .count();
    assert!(starts >= 2, "START was sent again: {report:?}");
}

#[test]
fn the_directory_records_the_address_the_phone_listens_on() {
    let server = Server::start(&[]);
    let alice = Phone::registered("alice", &server);
    eventually("the registration reaches the database", || {
        server.users().contains("alice")
    });
    let table = server.users();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("alice"))
        .unwrap_or_else(|| panic!("alice is not in the directory:\n{table}"));
    assert!(
        row.contains(&alice.addr.ip().to_string()) && row.contains(&alice.addr.port().to_string()),
        "directory row {row:?} for a phone listening on {}",
        alice.addr
    );
}

#[test]
fn a_phone_on_port_0_gets_a_free_port_which_the_directory_records() {
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .port(0)
            .auto_answer(),
    );
    eventually("the registration reaches the database", || {
        server.users().contains("alice")
    });
    let table = server.users();
    let port = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("alice"))
        .and_then(|row| row.split_whitespace().nth(2))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("alice has no port in the directory:\n{table}"));
    assert_ne!(port, 0, "{table}");
    let listening = format!("listening for calls on UDP {}:{port}", alice.addr.ip());
    assert!(
        alice.stderr_lines().iter().any(|l| l.contains(&listening)),
        "{}",
        alice.transcript()
    );
    let mut bob = Phone::registered("bob", &server);
    bob.send("call alice");
    bob.expect_event("connected");
    alice.expect_event("connected");
}

#[test]
fn a_name_bound_to_another_key_is_reported_and_the_phone_keeps_trying() {
    let server = Server::start(&[]);
    let mut first = Phone::registered("alice", &server);
    // Another phone, with a key of its own, asks for the name the first one's key owns.
    let mut second = Phone::builder("alice").server(&server).start();
    // Told clearly, without crashing...
    let said = second.expect_event("unregistered");
    assert!(
        said.reason()
            .is_some_and(|r| r.contains("alice") && r.contains("another key")),
        "{said}"
    );
    assert_eq!(second.exit_status(), None, "{}", second.transcript());
    // ...refused even once the owner is gone (the name is its key's for good)...
    assert_eq!(first.quit().code(), Some(0));
    // ...and registered at its next attempt once an administrator frees the name.
    let released = std::process::Command::new(parlo_tests::server_harness::server_binary())
        .args(["release", "alice", "--db"])
        .arg(&server.db)
        .output()
        .expect("parlo-server release runs");
    assert_eq!(released.status.code(), Some(0), "{released:?}");
    // The first retry after a refusal comes 5 s later.
    second.expect_event_within("registered", Duration::from_secs(12));
}

#[test]
fn without_a_directory_an_incoming_caller_id_is_unknown() {
    let mut server = Server::start(&[]);
    // A phone that takes plaintext calls (`preferred`): its caller's address is checked.
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .security("preferred"),
    );
    server.signal("KILL");
    server.wait();
    alice.expect_event("unregistered");
    let mallory = third_party();
    mallory
        .send_to(b"START bob call=00c0ffee v=2", alice.addr)
        .expect("send");
    let incoming = alice.expect_event("incoming");
    assert_eq!(incoming.peer(), Some("bob"));
    assert_eq!(
        incoming.field("verified").as_deref(),
        Some("plaintext"),
        "{incoming}"
    );
    assert_eq!(
        incoming.field("address").as_deref(),
        Some("unknown"),
        "{incoming}"
    );
}

/// A directory server that registers anyone and answers every other request (but PING)
/// with an error whose reason is made to drive a terminal: clear the screen, ring, a CSI,
/// a right-to-left override and a forged event on a line of its own.
fn hostile_directory() -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind((loopback(), 0)).expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    std::thread::spawn(move || {
        // One connection at a time, as long as the test runs (the phone reconnects).
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // It says it is Parlo's, so that the phone also asks it for the list.
                let answer = if line.contains("\"REG\"") {
                    r#"{"ack":"Registered successfully","server":"parlo"}"#
                } else if line.contains("\"PING\"") {
                    r#"{"ack":"PONG"}"#
                } else {
                    r#"{"ack":"Error","reason":"\u001b[2J\u0007\u009b31m\u202eevil\u007f\nregistered mallory"}"#
                };
                if writeln!(writer, "{answer}").is_err() {
                    break;
                }
            }
        }
    });
    addr
}

/// Whether `text` holds a character that would not show as itself (a line break
/// excepted: it ends the lines `text` is made of).
fn has_raw_controls(text: &str) -> bool {
    text.chars().any(|c| c != '\n' && parlo_fsm::is_escaped(c))
}

#[test]
fn hostile_text_from_the_directory_or_the_user_comes_out_escaped() {
    use std::io::{BufRead, BufReader, Write};
    let mut alice = Phone::builder("alice")
        .server_addr(hostile_directory())
        .control()
        .start();
    alice.expect_event("registered");
    let socket =
        std::os::unix::net::UnixStream::connect(alice.control_path()).expect("the control socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeouts can be set");
    let mut answers = BufReader::new(socket.try_clone().expect("a second handle"));
    let mut ask = |command: &[u8]| {
        (&socket).write_all(command).expect("sent");
        let mut answer = String::new();
        answers.read_line(&mut answer).expect("an answer");
        answer
    };
    // The directory's reason, in the answer to `list`.
    let answer = ask(b"list\n");
    assert!(answer.starts_with("error "), "{answer:?}");
    assert!(
        answer.contains("\\u{1b}[2J\\u{7}\\u{9b}31m\\u{202e}evil\\u{7f}\\u{a}registered mallory"),
        "{answer:?}"
    );
    assert!(!has_raw_controls(&answer), "{answer:?}");
    assert_eq!(answer.matches('\n').count(), 1, "one line: {answer:?}");
    // And in what becomes of a call whose lookup it refuses.
    assert_eq!(ask(b"call bob\n"), "calling bob\n");
    alice.expect_event("ended");
    // A user's unknown command, echoed.
    let answer = ask(b"\x1b[2Jdance\x07\xc2\x9b\n");
    assert!(answer.contains("unknown command"), "{answer:?}");
    assert!(!has_raw_controls(&answer), "{answer:?}");

    // The same on stdout, and in the log.
    let stdout = alice.stdout_lines().join("\n");
    assert!(stdout.contains("\\u{1b}[2J"), "{stdout}");
    assert!(!has_raw_controls(&stdout), "{stdout:?}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("registered mallory")),
        "no forged event: {stdout}"
    );
    let stderr = alice.stderr_lines().join("\n");
    assert!(!has_raw_controls(&stderr), "{stderr:?}");
    assert_eq!(alice.quit().code(), Some(0), "{}", alice.transcript());
}
