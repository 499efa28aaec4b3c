//! parlo-server end to end: start-up errors, signals, exit codes, `users`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{
    LineClient, PATIENCE, Server, TempDir, eventually, loopback, proc_net_tcp_addr, run_to_exit,
    server_binary, signal, wait_exit,
};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}";

fn register(server: &Server, name: &str) -> LineClient {
    let mut client = LineClient::new(server.connect());
    let reply = client.ask(&format!(r#"{{"command":"REG","name":"{name}"}}"#));
    assert_eq!(reply, REGISTERED);
    client
}

#[test]
fn sigterm_stops_within_a_second_with_exit_0_and_an_empty_directory() {
    let mut server = Server::start(&[]);
    let mut clients: Vec<LineClient> = (0..20)
        .map(|i| register(&server, &format!("p{i}")))
        .collect();
    eventually("the registrations reach the database", || {
        server.users().contains("20 online")
    });
    let asked = Instant::now();
    server.signal("TERM");
    let status = server.wait();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    for client in &mut clients {
        assert!(client.is_closed_by_server());
    }
    assert!(server.users().ends_with("nobody online\n"));
    let log = server.log();
    assert!(
        log.contains("stopping on SIGTERM") && log.contains("stopped"),
        "{log}"
    );
}

#[test]
fn presence_left_by_a_crash_is_cleared_at_the_next_start() {
    let dir = TempDir::new("crash");
    let db = dir.path().join("directory.db");
    let mut crashed = Server::start_in(TempDir::new("unused"), db.clone(), &[]);
    let _client = register(&crashed, "ghost");
    eventually("ghost reaches the database", || {
        crashed.users().contains("ghost")
    });
    crashed.signal("KILL");
    crashed.wait();
    assert!(
        crashed.users().contains("ghost"),
        "a crash leaves the row behind"
    );
    let restarted = Server::start_in(dir, db, &[]);
    assert!(restarted.users().ends_with("nobody online\n"));
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut server = Server::start(&[]);
    let _client = register(&server, "someone");
    server.signal("INT");
    assert_eq!(server.wait().code(), Some(0));
    assert!(server.log().contains("stopping on SIGINT"));
}

#[test]
fn sighup_logs_a_status_line_and_rewrites_a_deleted_database() {
    let server = Server::start(&[]);
    let _a = register(&server, "alpha");
    let _b = register(&server, "beta");
    eventually("both in the database", || {
        server.users().contains("2 online")
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.db.display()));
    }
    server.signal("HUP");
    let status = server.wait_for_log("status: ");
    assert!(
        status.contains("2 connections") && status.contains("2 registered"),
        "{status}"
    );
    server.wait_for_log("database reopened, 2 registrations written");
    let table = server.users();
    assert!(table.contains("alpha") && table.contains("beta"), "{table}");
    // Still serving after the reload.
    let mut probe = LineClient::new(server.connect());
    assert!(
        probe
            .ask(r#"{"command":"GET","name":"alpha"}"#)
            .starts_with("{\"ip\":")
    );
}

#[test]
fn port_in_use_is_a_critical_error_saying_where() {
    let ip = loopback();
    let taken = TcpListener::bind((ip, 0)).expect("bind a port");
    let addr = taken.local_addr().expect("address").to_string();
    let dir = TempDir::new("port-in-use");
    let db = dir.path().join("d.db");
    let (status, stderr) = run_to_exit(&["--listen", &addr, "--db", &db.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn unusable_database_is_a_critical_error_saying_where() {
    let dir = TempDir::new("bad-db");
    let missing = dir.path().join("no-such-directory").join("d.db");
    let listen = format!("{}:0", loopback());
    for db in [missing, dir.path().to_path_buf()] {
        let (status, stderr) = run_to_exit(&["--listen", &listen, "--db", &db.to_string_lossy()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("database {}", db.display())),
            "{stderr}"
        );
    }
}

#[test]
fn bad_command_line_is_a_critical_error_and_help_explains_every_flag() {
    let (status, stderr) = run_to_exit(&["--max-clients", "lots"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--max-clients"), "{stderr}");
    let (status, stderr) = run_to_exit(&["--no-such-flag"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("no-such-flag"), "{stderr}");
    let help = Command::new(server_binary())
        .arg("--help")
        .output()
        .expect("runs");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--db",
        "--max-clients",
        "--log-level",
        "--idle-timeout",
        "--request-timeout",
        "--keepalive",
        "users",
        "SIGHUP",
        "EXIT CODES",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

/// The message of a daemon refusing to start: its stderr without the `program: ` prefix.
fn refusal(stderr: &str, program: &str) -> String {
    let line = stderr.lines().find(|l| l.starts_with(program));
    let line = line.unwrap_or_else(|| panic!("{program} said nothing: {stderr:?}"));
    line[program.len()..].trim_start_matches(": ").to_owned()
}

#[test]
fn a_port_below_1024_is_refused_at_start_with_exit_2_in_the_phones_words() {
    let dir = TempDir::new("port-80");
    let db = dir.path().join("d.db");
    // Bounded: a server running as root would otherwise sit on port 80.
    let mut child = Command::new(server_binary())
        .args(["--listen", "127.0.0.1:80", "--db", &db.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parlo-server runs");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("parlo-server --listen 127.0.0.1:80 started");
    }
    let output = child.wait_with_output().expect("stderr");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let server_said = refusal(&stderr, "parlo-server");
    assert_eq!(
        server_said,
        "--listen: port 80 is below 1024; choose a port from 1024 to 65535, or 0 for a free \
         port (see --help)"
    );
    let phone = parlo_tests::phone_harness::run_client(&[
        "--server",
        "127.0.0.1",
        "--name",
        "x",
        "--listen",
        "127.0.0.1:80",
    ]);
    assert_eq!(phone.status.code(), Some(2), "{phone:?}");
    let phone_said = refusal(&String::from_utf8_lossy(&phone.stderr), "parlo-client");
    assert_eq!(phone_said, server_said, "one rule, one wording");
}

#[test]
fn users_without_a_database_is_a_critical_error() {
    let dir = TempDir::new("users-missing");
    let db = dir.path().join("nothing-here.db");
    let (status, stderr) = run_to_exit(&["users", "--db", &db.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
}

/// The kernel timer armed on the server's side of connection `client` (the
/// `tr:tm->when` column of /proc/net/tcp): `(kind, ticks left)`, kind 2 being keepalive.
fn server_side_timer(server: SocketAddr, client: SocketAddr) -> (u32, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("procfs");
    let (local, remote) = (proc_net_tcp_addr(server), proc_net_tcp_addr(client));
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1] == local && f[2] == remote)
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"));
    let (kind, when) = row[5].split_once(':').expect("tr:tm->when");
    (
        u32::from_str_radix(kind, 16).expect("hex"),
        u64::from_str_radix(when, 16).expect("hex"),
    )
}

#[test]
fn dead_peer_detection_arms_tcp_keepalive_on_every_connection() {
    // A box that loses power never sends a FIN: only keepalive probes can find out.
    let ticks_per_second = 100; // USER_HZ, as /proc/net/tcp reports it
    let server = Server::start(&["--keepalive", "30"]);
    let client = register(&server, "powered");
    let client_addr = client.local_addr();
    let (kind, left) = server_side_timer(server.addr, client_addr);
    assert_eq!(kind, 2, "keepalive timer armed");
    assert!(
        (25 * ticks_per_second..=30 * ticks_per_second).contains(&left),
        "first probe in {left} ticks, expected about 30 s"
    );
    let quiet = Server::start(&["--keepalive", "0"]);
    let client = register(&quiet, "unprobed");
    assert_eq!(server_side_timer(quiet.addr, client.local_addr()).0, 0);
}

#[test]
fn users_watch_follows_changes_and_stops_on_sigterm() {
    let server = Server::start(&[]);
    let mut watcher = Command::new(server_binary())
        .args(["users", "--watch", "--db"])
        .arg(&server.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("users --watch starts");
    let stdout = watcher.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let _late = register(&server, "latecomer");
    let deadline = Instant::now() + PATIENCE;
    let mut saw = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && line.starts_with("latecomer")
        {
            saw = true;
            break;
        }
    }
    assert!(saw, "users --watch showed the new registration");
    signal(watcher.id(), "TERM");
    let status = wait_exit(&mut watcher, PATIENCE).expect("users --watch stops");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_server_on_a_live_database_is_refused_and_the_first_keeps_its_directory() {
    let first = Server::start(&[]);
    let mut phone = LineClient::new(first.connect());
    assert!(
        phone
            .ask(r#"{"command":"REG","name":"kitchen","port":5050}"#)
            .contains("Registered successfully")
    );
    let db = first.db.display().to_string();
    let listen = format!("{}:0", loopback());
    let mut second = Command::new(server_binary())
        .args(["--listen", &listen, "--db", &db])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parlo-server runs");
    let Some(status) = wait_exit(&mut second, PATIENCE) else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second server started on a database in use");
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = second.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another parlo-server"),
        "{stderr}"
    );
    // The first server still answers for kitchen, and its database still lists it.
    assert!(
        phone
            .ask(r#"{"command":"GET","name":"kitchen"}"#)
            .contains("5050")
    );
    eventually("the database still lists kitchen", || {
        first.users().contains("kitchen")
    });
}

#[test]
fn a_database_file_of_garbage_is_moved_aside_kept_and_replaced() {
    let dir = TempDir::new("garbage-db");
    let db = dir.path().join("directory.db");
    let garbage: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
    std::fs::write(&db, &garbage).expect("garbage written");
    let server = Server::start_in(dir, db, &[]);
    let mut phone = register(&server, "porch");
    assert_eq!(phone.ask(r#"{"command":"PING"}"#), "{\"ack\":\"PONG\"}");
    let line = server.wait_for_log("moved it aside to ");
    assert!(
        line.contains("[ERROR]") && line.contains("not a database"),
        "{line}"
    );
    let kept: Vec<_> = std::fs::read_dir(server.dir())
        .expect("listable")
        .map(|entry| entry.expect("an entry").path())
        .filter(|p| p.to_string_lossy().contains("directory.db.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).expect("kept"), garbage);
    eventually("the new database lists the phone", || {
        server.users().contains("porch")
    });
}

#[test]
fn a_database_another_program_keeps_locked_is_rewritten_once_it_lets_go() {
    let dir = TempDir::new("locked-db");
    let db = dir.path().join("directory.db");
    let other = rusqlite::Connection::open(&db).expect("another program opens it");
    other
        .execute_batch("CREATE TABLE mine (x); BEGIN EXCLUSIVE; INSERT INTO mine VALUES (1);")
        .expect("and keeps it locked");
    let mut server = Server::start_in(dir, db, &[]);
    let _phone = register(&server, "attic");
    let mut asker = LineClient::new(server.connect());
    assert_eq!(asker.ask(r#"{"command":"PING"}"#), "{\"ack\":\"PONG\"}");
    assert!(
        asker
            .ask(r#"{"command":"GET","name":"attic"}"#)
            .starts_with("{\"ip\":\"127.")
    );
    let line = server.wait_for_log("another program holds a lock on it");
    assert!(
        line.contains("[ERROR]") && line.contains("served from memory"),
        "{line}"
    );
    other.execute_batch("COMMIT").expect("the lock ends");
    drop(other);
    server.wait_for_log("rewritten with the 1 live registrations");
    assert!(server.users().contains("attic"));
    // Stopping clears the directory in the database as usual, and the exit status says
    // that the database could not always be written.
    server.signal("TERM");
    let status = server.wait();
    assert_eq!(status.code(), Some(1), "{}", server.log());
    assert!(!server.users().contains("attic"));
}
