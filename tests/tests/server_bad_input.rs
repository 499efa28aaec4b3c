//! parlo-server end to end: bad input gets a clear error or a clean close, is logged, and
//! never touches another client's registration or service.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{LineClient, OriginalClient, Server, eventually};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}";
const PONG: &str = "{\"ack\":\"PONG\"}";
const NOT_FOUND: &str = "{\"ip\":\"None\"}";

/// A bystander: registered as `name`, checked after each abuse.
struct Bystander {
    client: LineClient,
    name: &'static str,
}

impl Bystander {
    fn new(server: &Server, name: &'static str) -> Bystander {
        let mut client = LineClient::new(server.connect());
        let reply = client.ask(&format!(r#"{{"command":"REG","name":"{name}"}}"#));
        assert_eq!(reply, REGISTERED);
        Bystander { client, name }
    }

    /// Still registered, still served.
    fn is_fine(&mut self) {
        assert_eq!(self.client.ask(r#"{"command":"PING"}"#), PONG);
        let reply = self
            .client
            .ask(&format!(r#"{{"command":"GET","name":"{}"}}"#, self.name));
        assert!(
            reply.starts_with("{\"ip\":\"127."),
            "{} lost: {reply}",
            self.name
        );
    }
}

fn error_reason(reply: &str) -> &str {
    reply
        .strip_prefix("{\"ack\":\"Error\",\"reason\":\"")
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("not an error response: {reply}"))
}

#[test]
fn every_kind_of_bad_request_gets_its_reason_and_the_connection_goes_on() {
    let server = Server::start(&[]);
    let mut bystander = Bystander::new(&server, "bystander");
    let mut abuser = LineClient::new(server.connect());
    let long_name = "n".repeat(33);
    let mut oversize = String::from(r#"{"command":"GET","name":""#);
    oversize.push_str(&"x".repeat(2000));
    oversize.push_str("\"}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"command":"GET",}"#.to_vec(), "malformed JSON: "),
        (br#"{"command" "GET"}"#.to_vec(), "malformed JSON: "),
        (
            [&br#"{"command":"GET","name":"b"#[..], &[0xff, 0xfe], b"\"}"].concat(),
            "malformed JSON: invalid UTF-8",
        ),
        (
            br#"{"command":"FLY"}"#.to_vec(),
            "unknown command \\\"FLY\\\"",
        ),
        (br#"{"name":"bob"}"#.to_vec(), "missing \\\"command\\\""),
        (br#"{"command":"GET"}"#.to_vec(), "missing \\\"name\\\""),
        (br#"{"command":"REG","name":""}"#.to_vec(), "name is empty"),
        (
            format!(r#"{{"command":"REG","name":"{long_name}"}}"#).into_bytes(),
            "name is 33 bytes long",
        ),
        (
            br#"{"command":"REG","name":"bob smith"}"#.to_vec(),
            "name contains whitespace",
        ),
        (
            br#"{"command":"REG","name":"bob\u0000"}"#.to_vec(),
            "name contains a control or invisible character",
        ),
        (
            br#"{"command":"REG","name":"bob","port":70000}"#.to_vec(),
            "port 70000 is not between 1 and 65535",
        ),
        (br#"{"command":5}"#.to_vec(), "malformed JSON: wrong type"),
        (b"[\"REG\",\"bob\"]".to_vec(), "not a JSON object"),
        (
            b"\x00\x01\x02\xff\xfe garbage".to_vec(),
            "not a JSON object",
        ),
        (oversize.into_bytes(), "request longer than 1024 bytes"),
    ];
    for (bytes, expected) in cases {
        let mut request = bytes.clone();
        request.push(b'\n');
        abuser.send_raw(&request);
        let reply = abuser.line();
        let reason = error_reason(&reply);
        assert!(
            reason.contains(expected),
            "{:?} gave {reason:?}, expected {expected:?}",
            String::from_utf8_lossy(&bytes)
        );
        // The abuser's own connection still works, and nobody else noticed.
        assert_eq!(abuser.ask(r#"{"command":"PING"}"#), PONG);
        bystander.is_fine();
    }
    assert_eq!(abuser.ask(r#"{"command":"GET","name":"bob"}"#), NOT_FOUND);
    server.wait_for_log("unknown command");
    let log = server.log();
    let peer = abuser_peer_in(&log);
    assert!(peer.starts_with("127."), "with the peer address: {log}");
}

/// The peer address of the first logged error.
fn abuser_peer_in(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("malformed JSON"))
        .unwrap_or_else(|| panic!("no error logged: {log}"));
    line.split("] ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn original_client_with_bad_json_gets_an_error_it_can_parse() {
    let server = Server::start(&[]);
    let mut client = OriginalClient::new(server.connect());
    // The original client sends Python's repr by mistake: single quotes.
    let reply = client.request("REG", "it's");
    assert_eq!(
        reply,
        format!("{REGISTERED}\n"),
        "an apostrophe is a fine name"
    );
    let mut raw = server.connect();
    raw.write_all(b"{'command': 'GET', 'name': 'x'}")
        .expect("send");
    let mut line = LineClient::new(raw);
    assert!(error_reason(&line.line()).starts_with("malformed JSON"));
}

#[test]
fn half_a_request_then_silence_is_closed_after_the_request_timeout() {
    let server = Server::start(&["--request-timeout", "1"]);
    let mut bystander = Bystander::new(&server, "patient");
    let mut staller = LineClient::new(server.connect());
    assert_eq!(
        staller.ask(r#"{"command":"REG","name":"staller"}"#),
        REGISTERED
    );
    staller.send_raw(br#"{"command":"GET","na"#);
    let began = Instant::now();
    // Meanwhile everyone else is served at once.
    bystander.is_fine();
    let reply = staller.line();
    assert!(
        error_reason(&reply).contains("request incomplete after 1 s"),
        "{reply}"
    );
    assert!(staller.is_closed_by_server());
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    // Its registration went with it; the bystander's did not.
    let mut probe = LineClient::new(server.connect());
    assert_eq!(
        probe.ask(r#"{"command":"GET","name":"staller"}"#),
        NOT_FOUND
    );
    bystander.is_fine();
}

#[test]
fn idle_limit_closes_silent_connections_and_frees_their_names() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut silent = LineClient::new(server.connect());
    assert_eq!(
        silent.ask(r#"{"command":"REG","name":"silent"}"#),
        REGISTERED
    );
    let mut chatty = LineClient::new(server.connect());
    assert_eq!(
        chatty.ask(r#"{"command":"REG","name":"chatty"}"#),
        REGISTERED
    );
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(chatty.ask(r#"{"command":"PING"}"#), PONG);
        std::thread::sleep(Duration::from_millis(200));
    }
    let reply = silent.line();
    assert!(
        error_reason(&reply).contains("nothing received for 1 s"),
        "{reply}"
    );
    assert!(silent.is_closed_by_server());
    assert_eq!(
        chatty.ask(r#"{"command":"GET","name":"silent"}"#),
        NOT_FOUND
    );
    assert!(
        chatty
            .ask(r#"{"command":"GET","name":"chatty"}"#)
            .starts_with("{\"ip\":\"127.")
    );
}

#[test]
fn connections_beyond_max_clients_are_refused_with_an_error() {
    let server = Server::start(&["--max-clients", "3"]);
    let mut held: Vec<Bystander> = ["one", "two", "three"]
        .into_iter()
        .map(|name| Bystander::new(&server, name))
        .collect();
    for _ in 0..20 {
        let mut extra = LineClient::new(server.connect());
        let reply = extra.line();
        assert_eq!(error_reason(&reply), "server full, try again later");
        assert!(extra.is_closed_by_server());
    }
    for bystander in &mut held {
        bystander.is_fine();
    }
    server.wait_for_log("refused: server full (3 clients)");
    // A freed slot is usable again.
    drop(held.pop());
    eventually("a slot frees up", || {
        let mut again = LineClient::new(server.connect());
        again.ask(r#"{"command":"PING"}"#) == PONG
    });
}

/// More than any socket buffers hold: a server that keeps reading lets a hog write this.
const HOG_LIMIT: usize = 256 * 1024 * 1024;

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_client_that_never_reads_does_not_slow_anyone_else() {
    let server = Server::start(&[]);
    let mut bystander = Bystander::new(&server, "reader");
    let hog = server.connect();
    let mut hog_writer = hog.try_clone().expect("clone");
    // Pipeline requests and never read the answers: the server must stop reading from
    // this connection once its answers back up, and serve everyone else meanwhile.
    let writer = std::thread::spawn(move || {
        let burst = br#"{"command":"PING"}"#.repeat(1000);
        let mut sent = 0usize;
        hog_writer
            .set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        while sent < HOG_LIMIT && hog_writer.write_all(&burst).is_ok() {
            sent += burst.len();
        }
        sent
    });
    let started = Instant::now();
    for _ in 0..50 {
        bystander.is_fine();
    }
    let sent = writer.join().expect("writer thread");
    assert!(
        sent < HOG_LIMIT,
        "the server kept reading from a client that never reads ({sent} bytes)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bystander served slowly: {:?}",
        started.elapsed()
    );
    let rss = rss_kib(server.pid());
    assert!(rss < 32 * 1024, "server RSS {rss} KiB with a stuck client");
    drop(hog);
    bystander.is_fine();
}

#[test]
fn garbage_flood_from_many_connections_leaves_registrations_alone() {
    let server = Server::start(&[]);
    let mut bystander = Bystander::new(&server, "steady");
    // Every byte value, from 0: taken for a Noise handshake, which does not verify (first,
    // while the quota of warnings a second has room).
    let garbage: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    for _ in 0..5 {
        let mut stream: TcpStream = server.connect();
        let _ = stream.write_all(&garbage);
        drop(stream);
    }
    // From 1: the original protocol's garbage.
    let mut garbage: Vec<u8> = (0..=255u8).cycle().skip(1).take(64 * 1024).collect();
    garbage.extend_from_slice(b"{{{{[[[[\"\\");
    for _ in 0..20 {
        let mut stream: TcpStream = server.connect();
        let _ = stream.write_all(&garbage);
        drop(stream);
    }
    bystander.is_fine();
    eventually("the server logs the garbage", || {
        server.log().contains("not a JSON object")
    });
    eventually("the server logs the failed handshakes", || {
        server.log().contains("encrypted connection refused")
    });
}

#[test]
fn text_of_a_request_is_escaped_in_the_answer_and_the_log() {
    let server = Server::start(&[]);
    let mut client = LineClient::new(server.connect());
    // Clear the screen, ring, a CSI, a right-to-left override: as JSON escapes, the only
    // way a request carries them.
    let reply = client.ask(r#"{"command":"\u001b[2J\u0007\u009b\u202eX"}"#);
    assert!(
        reply.contains(r#"unknown command \"\\u{1b}[2J\\u{7}\\u{9b}\\u{202e}X\""#),
        "escaped in the reason itself: {reply}"
    );
    assert_eq!(client.ask(r#"{"command":"PING"}"#), PONG);
    let line = server.wait_for_log("unknown command");
    assert!(
        line.contains(r#"unknown command "\u{1b}[2J\u{7}\u{9b}\u{202e}X""#),
        "{line}"
    );
    let log = server.log();
    assert!(
        !log.chars().any(|c| c != '\n' && parlo_fsm::is_escaped(c)),
        "{log:?}"
    );
}
