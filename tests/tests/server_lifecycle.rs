//! parlo-server end to end: start-up errors, signals, exit codes, `users`.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{
    LineClient, PATIENCE, Server, TempDir, eventually, loopback, run_to_exit, server_binary,
    signal, wait_exit,
};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\"}";

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
fn sigint_stops_cleanly_too() {
    let mut server = Server::start(&[]);
    let _client = register(&server, "someone");
    server.signal("INT");
    assert_eq!(server.wait().code(), Some(0));
    assert!(server.log().contains("stopping on SIGINT"));
}

#[test]
fn sighup_logs_a_status_line_and_rewrites_a_deleted_database() {
    let mut server = Server::start(&[]);
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

#[test]
fn users_without_a_database_is_a_critical_error() {
    let dir = TempDir::new("users-missing");
    let db = dir.path().join("nothing-here.db");
    let (status, stderr) = run_to_exit(&["users", "--db", &db.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
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
