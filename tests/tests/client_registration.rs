//! parlo-client end to end: what a supervisor sees of the phone's registration — a name
//! taken (a warning, `status`), the service manager's status line (`sd_notify`), and how
//! soon a site registers again once its server is back.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

use parlo_tests::phone_harness::Phone;
use parlo_tests::server_harness::{PATIENCE, Server, TempDir, eventually};

/// The stderr lines of `phone` that are warnings.
fn warnings(phone: &Phone) -> Vec<String> {
    phone
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("[WARN]"))
        .collect()
}

/// How many times the directory refused `phone`'s REG, as its log shows (the first as a
/// warning, the retries at debug level; the wire itself is encrypted).
fn refusals(phone: &Phone) -> usize {
    phone
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("refused our registration") && l.contains("taken"))
        .count()
}

#[test]
fn a_name_taken_is_a_warning_once_and_status_says_why() {
    let server = Server::start(&[]);
    let _first = Phone::registered("door", &server);
    let mut text = Phone::builder("door").server(&server).start();
    let mut json = Phone::builder("door")
        .server(&server)
        .json()
        .control()
        .start();
    text.expect_event("unregistered");
    json.expect_event("unregistered");

    // On stdin, as text: registered=no, and the reason last.
    let status = text.status();
    assert_eq!(
        status.field("registered").as_deref(),
        Some("no"),
        "{status}"
    );
    let reason = status.reason().unwrap_or_default();
    assert!(
        reason.contains("taken") && reason.contains(&server.addr.to_string()),
        "{status}"
    );
    assert!(reason.contains("next attempt in "), "{status}");
    // Through the control socket, as JSON.
    let answer = json.ctl(&["status"], "");
    let line = String::from_utf8_lossy(&answer.stdout);
    let value: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON status");
    assert_eq!(
        value["registered"],
        serde_json::Value::Bool(false),
        "{line}"
    );
    assert!(
        value["reason"]
            .as_str()
            .is_some_and(|r| r.contains("taken")),
        "{line}"
    );

    // A warning in the log, once: the next refusal (a few seconds later) is not news.
    let warned = warnings(&text);
    assert_eq!(warned.len(), 1, "{}", text.transcript());
    assert!(warned[0].contains("taken"), "{}", warned[0]);
    eventually("the name is asked for again", || refusals(&text) >= 2);
    assert_eq!(warnings(&text).len(), 1, "{}", text.transcript());
    text.expect_no_event("unregistered", Duration::ZERO);
}

#[test]
fn after_a_server_restart_phones_register_again_within_5_s() {
    // The server keeps its identity across the restart, as in its state directory: the
    // phones pinned its key.
    let keys = TempDir::new("server-identity");
    let identity = keys.path().join("identity").display().to_string();
    let mut server = Server::start(&["--identity", &identity]);
    let addr = server.addr;
    let mut site: Vec<Phone> = ["door", "hall", "gate", "yard"]
        .into_iter()
        .map(|name| Phone::registered(name, &server))
        .collect();
    server.signal("KILL");
    server.wait();
    drop(server);
    for phone in &mut site {
        phone.expect_event("unregistered");
    }
    // Down as long as a slow restart or the server's box rebooting: long enough for a
    // doubling delay to have grown to 8 s.
    std::thread::sleep(Duration::from_secs(8));

    let dir = TempDir::new("server");
    let db = dir.path().join("directory.db");
    let listen = addr.to_string();
    let back = Instant::now();
    let _server = Server::start_in(dir, db, &["--listen", &listen, "--identity", &identity]);
    let mut worst = Duration::ZERO;
    for phone in &mut site {
        let registered = phone.expect_event("registered");
        let took = registered.at.saturating_duration_since(back);
        println!(
            "{} registered again {} ms after the server started",
            phone.name,
            took.as_millis()
        );
        worst = worst.max(took);
    }
    println!(
        "the whole site was registered again within {} ms",
        worst.as_millis()
    );
    assert!(worst < Duration::from_secs(5), "took {worst:?}");
}

/// A socket standing in for the service manager's, and the value of `NOTIFY_SOCKET` that
/// names it: a file `tag.sock` in `dir`, or with `abstract_name` a name in Linux's
/// abstract namespace (`@...`, as systemd gives).
fn notify_socket(dir: &TempDir, tag: &str, abstract_name: bool) -> (UnixDatagram, String) {
    if abstract_name {
        let name = format!("parlo-test-notify-{tag}-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
        (socket, format!("@{name}"))
    } else {
        let path = dir.path().join(format!("{tag}.sock"));
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        (socket, path.display().to_string())
    }
}

/// Reads the notifications sent to `socket`, each datagram cut into its `KEY=VALUE`
/// lines, until `done` says so; fails after [`PATIENCE`] with what came.
fn notifications(socket: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "notifications so far: {lines:?}");
        socket.set_read_timeout(Some(left)).expect("a timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines
}

#[test]
fn the_service_manager_is_told_ready_and_the_registration_as_it_changes() {
    let server = Server::start(&[]);
    let dir = TempDir::new("notify");
    let (socket, path) = notify_socket(&dir, "door", false);
    let mut door = Phone::builder("door")
        .server(&server)
        .env("NOTIFY_SOCKET", path)
        .start();
    let registered = format!("STATUS=registered as door with {}", server.addr);
    let told = notifications(&socket, |l| l.contains(&registered));
    assert!(told.contains(&"READY=1".to_owned()), "{told:?}");
    door.expect_event("registered");

    // Another phone wanting the same name, told through an abstract socket.
    let (socket, name) = notify_socket(&dir, "second", true);
    let _second = Phone::builder("door")
        .server(&server)
        .env("NOTIFY_SOCKET", name)
        .start();
    let told = notifications(&socket, |l| {
        l.iter().any(|l| l.starts_with("STATUS=not registered:"))
    });
    assert!(told.contains(&"READY=1".to_owned()), "{told:?}");
    let status = told
        .iter()
        .find(|l| l.starts_with("STATUS=not registered:"))
        .expect("found above");
    assert!(
        status.contains("door") && status.contains("taken") && status.contains("retrying in"),
        "{status}"
    );

    // Quitting is said too.
    let (socket, path) = notify_socket(&dir, "gate", false);
    let mut gate = Phone::builder("gate")
        .server(&server)
        .env("NOTIFY_SOCKET", path)
        .start();
    gate.expect_event("registered");
    assert_eq!(gate.quit().code(), Some(0));
    notifications(&socket, |l| l.contains(&"STOPPING=1".to_owned()));
}
