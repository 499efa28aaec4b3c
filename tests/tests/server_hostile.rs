//! parlo-server end to end on a hostile network: one host cannot take every connection
//! slot, one busy client cannot starve the others, connections that never register do not
//! stay, and nothing a request says reaches the log raw or unthrottled.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{LineClient, Server, eventually, loopback, proc_net_tcp_addr};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}";
const PONG: &str = "{\"ack\":\"PONG\"}";

fn error_reason(reply: &str) -> &str {
    reply
        .strip_prefix("{\"ack\":\"Error\",\"reason\":\"")
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("not an error response: {reply}"))
}

#[test]
fn one_address_gets_its_share_of_connections_and_others_still_register() {
    let server = Server::start(&["--max-per-address", "4"]);
    let crowd = loopback();
    let mut held: Vec<LineClient> = (0..4)
        .map(|_| {
            let mut client = LineClient::new(server.connect_from(crowd));
            assert_eq!(client.ask(r#"{"command":"PING"}"#), PONG);
            client
        })
        .collect();
    for _ in 0..10 {
        let mut extra = LineClient::new(server.connect_from(crowd));
        let reply = extra.line();
        assert_eq!(
            error_reason(&reply),
            "too many connections from your address (at most 4), try again later"
        );
        assert!(extra.is_closed_by_server());
    }
    // A phone from another address registers, and the crowd's connections still work.
    let mut phone = LineClient::new(server.connect_from(loopback()));
    assert_eq!(
        phone.ask(r#"{"command":"REG","name":"kitchen","port":5001}"#),
        REGISTERED
    );
    for client in &mut held {
        assert_eq!(client.ask(r#"{"command":"PING"}"#), PONG);
    }
    // The refusals are logged: the first of each second, then a count.
    server.wait_for_log(&format!(
        "refused: {crowd} holds 4 connections already (--max-per-address)"
    ));
    server.wait_for_log("more connections refused: too many from their address (at most 4");
    let lines = server
        .log()
        .lines()
        .filter(|l| l.contains("refused"))
        .count();
    assert!(lines < 10, "one line per refusal:\n{}", server.log());
    // A connection that ends frees its address's slot.
    drop(held.pop());
    eventually("the crowd's slot frees up", || {
        let mut again = LineClient::new(server.connect_from(crowd));
        again.ask(r#"{"command":"PING"}"#) == PONG
    });
}

/// LISTs the flooder pipelines.
const FLOOD: usize = 20_000;

/// Forty phones registered under long names, so that every LIST answer is a full page of
/// about 1 KiB; they stay registered while the connections live.
fn forty_long_names(server: &Server) -> Vec<LineClient> {
    (0..40)
        .map(|i| {
            let mut phone = LineClient::new(server.connect());
            let reg = format!(r#"{{"command":"REG","name":"a-rather-long-name-{i:010}"}}"#);
            assert_eq!(phone.ask(&reg), REGISTERED);
            phone
        })
        .collect()
}

#[test]
fn a_client_pipelining_lists_does_not_hold_the_server_from_a_ping() {
    let server = Server::start(&[]);
    let _phones = forty_long_names(&server);
    let mut pinger = LineClient::new(server.connect());
    assert_eq!(pinger.ask(r#"{"command":"PING"}"#), PONG);
    // The flooder writes every LIST at once from one thread and reads the answers as fast
    // as it can from another: the server always has its requests waiting.
    let stream = server.connect();
    let mut writer = stream.try_clone().expect("clone");
    let answered = Arc::new(AtomicUsize::new(0));
    let reader = {
        let answered = Arc::clone(&answered);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            while answered.load(Ordering::Relaxed) < FLOOD {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => assert!(line.starts_with("{\"users\":["), "{line}"),
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let flood = std::thread::spawn(move || {
        let _ = writer.write_all(&br#"{"command":"LIST"}"#.repeat(FLOOD));
    });
    eventually("the flood is being answered", || {
        answered.load(Ordering::Relaxed) > 0
    });
    // PING on the other connection while the flood is answered, again and again.
    let mut slowest = Duration::ZERO;
    let mut during = 0;
    while answered.load(Ordering::Relaxed) < FLOOD && during < 100 {
        let sent = Instant::now();
        assert_eq!(pinger.ask(r#"{"command":"PING"}"#), PONG);
        slowest = slowest.max(sent.elapsed());
        if answered.load(Ordering::Relaxed) < FLOOD {
            during += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    flood.join().expect("the flooder writes");
    reader.join().expect("the flooder reads");
    assert_eq!(
        answered.load(Ordering::Relaxed),
        FLOOD,
        "every LIST answered"
    );
    assert!(
        during > 0,
        "no PING went out while the flood was being answered"
    );
    eprintln!("slowest PING {slowest:?} of {during} during the flood");
    assert!(
        slowest < Duration::from_millis(200),
        "a PING waited {slowest:?} behind the flood ({during} PINGs during it)"
    );
}

#[test]
fn a_connection_that_holds_no_registration_is_closed_after_the_unregistered_timeout() {
    let server = Server::start(&["--unregistered-timeout", "1"]);
    let mut phone = LineClient::new(server.connect());
    assert_eq!(
        phone.ask(r#"{"command":"REG","name":"hall","port":5001}"#),
        REGISTERED
    );
    // Busy, but never registered: being active is not enough.
    let mut lurker = LineClient::new(server.connect());
    let mut quitter = LineClient::new(server.connect());
    assert_eq!(
        quitter.ask(r#"{"command":"REG","name":"quitter","port":5001}"#),
        REGISTERED
    );
    let began = Instant::now();
    assert_eq!(
        quitter.ask(r#"{"command":"DISCONNECT","name":"quitter"}"#),
        "{\"ack\":\"Disconnected\"}"
    );
    let reply = loop {
        let reply = lurker.ask(r#"{"command":"PING"}"#);
        if reply != PONG {
            break reply;
        }
        assert!(began.elapsed() < Duration::from_secs(5), "never closed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(error_reason(&reply), "no registration for 1 s, closing");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    assert!(lurker.is_closed_by_server());
    // A connection that gave its name up is closed too; the registered phone stays.
    assert_eq!(
        error_reason(&quitter.line()),
        "no registration for 1 s, closing"
    );
    assert!(quitter.is_closed_by_server());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(phone.ask(r#"{"command":"PING"}"#), PONG);
    assert!(
        phone
            .ask(r#"{"command":"GET","name":"hall"}"#)
            .starts_with("{\"ip\":\"127.")
    );
}

/// Bad requests carrying what could forge a log line or drive a terminal: escape
/// sequences as JSON escapes and as raw bytes, line breaks, and whole fake log lines.
fn poisoned_requests() -> Vec<Vec<u8>> {
    let forged = "1999-12-31T23:59:59.000Z [ERROR] forged";
    vec![
        br#"{"command":"\u001b[2J\u001b]0;owned\u0007"}"#.to_vec(),
        b"{\"command\":\"\x1b[31mred\"}".to_vec(),
        format!(r#"{{"command":"X\r\n{forged}"}}"#).into_bytes(),
        format!("{{\"command\":\"X\r\n{forged}\"}}").into_bytes(),
        format!("\r\n{forged}\r\n").into_bytes(),
        format!(r#"{{"command":"GET","name":"x\n{forged}"}}"#).into_bytes(),
        format!(r#"{{"command":"LIST","after":"\u001b[1A{forged}"}}"#).into_bytes(),
        b"{\"command\":\"GET\",\"name\":\"\xc2\x9b2J\xe2\x80\xae\"}".to_vec(),
    ]
}

#[test]
fn requests_never_reach_the_log_raw_and_refusals_are_logged_at_a_bounded_rate() {
    let server = Server::start(&[]);
    let mut abuser = LineClient::new(server.connect());
    let abuser_addr = abuser.local_addr().to_string();
    let kinds = poisoned_requests();
    let rounds = 40;
    let mut refused = 0;
    for _ in 0..rounds {
        for request in &kinds {
            abuser.send_raw(request);
            abuser.send_raw(b"\n");
        }
        // Every bad request (or run of bytes outside an object) gets one error answer.
        for _ in 0..kinds.len() {
            let reply = abuser.line();
            assert!(reply.starts_with("{\"ack\":\"Error\""), "{reply}");
            refused += 1;
        }
    }
    // A registration from the same peer is still logged, and the answers were all given.
    assert_eq!(
        abuser.ask(r#"{"command":"REG","name":"1999-12-31T23:59:59.000Z"}"#),
        REGISTERED
    );
    server.wait_for_log("REG \"1999-12-31T23:59:59.000Z\"");
    server.wait_for_log("more refused requests in the last second");
    let log = server.log();
    // Nothing raw: no escape character, no carriage return, no line begun by a request.
    assert!(!log.contains('\u{1b}'), "ESC in the log:\n{log}");
    assert!(!log.contains('\r'), "CR in the log:\n{log}");
    assert!(
        !log.contains('\u{9b}') && !log.contains('\u{202e}'),
        "{log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("1999-") && line.starts_with("20") && line.contains(" ["),
            "a line the server did not begin:\n{line}\nin\n{log}"
        );
    }
    // Refusals: a few lines a second, and the rest counted, so that all are accounted for
    // once the last second's count is written.
    let accounted = |log: &str| {
        let logged = log
            .lines()
            .filter(|l| l.contains("[WARN]") && l.contains(&abuser_addr))
            .count();
        let counted: usize = log
            .lines()
            .filter(|l| l.contains(" more refused requests in the last second"))
            .filter_map(|l| l.split(" more refused").next()?.rsplit(' ').next())
            .filter_map(|count| count.parse::<usize>().ok())
            .sum();
        (logged, counted)
    };
    eventually("every refusal logged or counted", || {
        let (logged, counted) = accounted(&server.log());
        logged + counted == refused
    });
    let (logged, _) = accounted(&server.log());
    assert!(
        logged <= 30,
        "{logged} warnings for {refused} refusals:\n{}",
        server.log()
    );
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Bytes queued in the kernel (to send, and received but not read) on the server's side of
/// its connections to `clients`, from /proc/net/tcp.
fn queued_on_server_side(server: SocketAddr, clients: &[SocketAddr]) -> usize {
    let local = proc_net_tcp_addr(server);
    let remotes: Vec<String> = clients.iter().map(|&c| proc_net_tcp_addr(c)).collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("procfs");
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 4 && f[1] == local && remotes.iter().any(|r| r == f[2]))
        .map(|f| {
            let (tx, rx) = f[4].split_once(':').expect("tx_queue:rx_queue");
            usize::from_str_radix(tx, 16).expect("hex")
                + usize::from_str_radix(rx, 16).expect("hex")
        })
        .sum()
}

#[test]
fn answers_nobody_reads_take_a_bounded_amount_of_memory() {
    let server = Server::start(&[]);
    let _phones = forty_long_names(&server);
    let rss_before = rss_kib(server.pid());
    // Hostile peers: LISTs (a page of about 1 KiB each) for as long as the server reads
    // them, and never a byte read back.
    let hostile = loopback();
    let mut peers: Vec<TcpStream> = (0..30).map(|_| server.connect_from(hostile)).collect();
    let flood = br#"{"command":"LIST"}"#.repeat(1000);
    for peer in &peers {
        peer.set_nonblocking(true).expect("non-blocking");
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for peer in &mut peers {
            let _ = peer.write(&flood);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let clients: Vec<SocketAddr> = peers
        .iter()
        .map(|p| p.local_addr().expect("bound"))
        .collect();
    let queued = queued_on_server_side(server.addr, &clients);
    let grown = rss_kib(server.pid()).saturating_sub(rss_before);
    // Per connection: the kernel holds a few KiB each way, the server one turn's answers.
    assert!(
        queued <= peers.len() * 32 * 1024,
        "{} KiB queued in the kernel for {} peers that do not read",
        queued / 1024,
        peers.len()
    );
    assert!(
        grown <= 2048 + peers.len() as u64 * 16,
        "server RSS grew by {grown} KiB for {} peers that do not read",
        peers.len()
    );
    // And the server is as quick as ever for everyone else.
    let mut phone = LineClient::new(server.connect());
    assert_eq!(phone.ask(r#"{"command":"PING"}"#), PONG);
}
