//! parlo-server end to end: names bound to keys (`--names`, `names`, `release`,
//! `--require-keys`), seen from plain JSON clients.
//!
//! Keys are proved on encrypted connections; here the bindings come from `--names`, so
//! that a plain client (an original phone, or anyone on the LAN) meets them.

use std::path::Path;
use std::process::Command;

use parlo_tests::server_harness::{
    LineClient, Server, TempDir, eventually, run_to_exit, server_binary,
};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}";
const ALICE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const REFUSED_AS_ANOTHER_KEYS: &str =
    "{\"ack\":\"Error Registering\",\"reason\":\"\\\"alice\\\" belongs to another key\"}";

fn reg(server: &Server, name: &str) -> (LineClient, String) {
    let mut client = LineClient::new(server.connect());
    let reply = client.ask(&format!(r#"{{"command":"REG","name":"{name}"}}"#));
    (client, reply)
}

/// Runs `parlo-server WORDS --db DB` and returns its exit code and stdout.
fn subcommand(words: &[&str], db: &Path) -> (Option<i32>, String) {
    let output = Command::new(server_binary())
        .args(words)
        .arg("--db")
        .arg(db)
        .output()
        .expect("parlo-server runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn names_file(dir: &Path, text: &str) -> String {
    let path = dir.join("site.names");
    std::fs::write(&path, text).expect("the names file is written");
    path.to_string_lossy().into_owned()
}

#[test]
fn a_name_the_names_file_binds_is_refused_to_plain_clients_across_restarts() {
    let dir = TempDir::new("names-bound");
    let db = dir.path().join("directory.db");
    let file = names_file(
        dir.path(),
        &format!("# the front door\nalice {ALICE_KEY}  # since forever\n"),
    );
    let mut server = Server::start_in(TempDir::new("unused"), db.clone(), &["--names", &file]);
    let (_, reply) = reg(&server, "alice");
    assert_eq!(reply, REFUSED_AS_ANOTHER_KEYS);
    let (_bob, reply) = reg(&server, "bob");
    assert_eq!(reply, REGISTERED, "names no key owns are first come");
    server.wait_for_log("belongs to another key");
    server.signal("TERM");
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    // Restarted without the file: the database remembers.
    let server = Server::start_in(TempDir::new("unused"), db.clone(), &[]);
    let (_, reply) = reg(&server, "alice");
    assert_eq!(reply, REFUSED_AS_ANOTHER_KEYS);
    let (code, listed) = subcommand(&["names"], &db);
    assert_eq!(code, Some(0));
    let line = listed
        .lines()
        .find(|line| line.starts_with("alice "))
        .unwrap_or_else(|| panic!("alice listed: {listed}"));
    assert!(line.contains(ALICE_KEY), "{line}");
    assert!(line.contains(" 20"), "since when: {line}");
    assert!(listed.ends_with("1 name bound\n"), "{listed}");
    assert!(
        !listed.contains("bob"),
        "a plain registration binds nothing"
    );
}

#[test]
fn release_frees_a_name_while_the_server_runs() {
    let dir = TempDir::new("names-release");
    let db = dir.path().join("directory.db");
    let file = names_file(dir.path(), &format!("alice {ALICE_KEY}\n"));
    let server = Server::start_in(TempDir::new("unused"), db.clone(), &["--names", &file]);
    assert_eq!(reg(&server, "alice").1, REFUSED_AS_ANOTHER_KEYS);
    let (code, said) = subcommand(&["release", "alice"], &db);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(ALICE_KEY), "{said}");
    server.wait_for_log("\"alice\" released");
    let (_alice, reply) = reg(&server, "alice");
    assert_eq!(reply, REGISTERED);
    let (code, listed) = subcommand(&["names"], &db);
    assert_eq!(
        (code, listed.contains("alice")),
        (Some(0), false),
        "{listed}"
    );
    // Nothing more to release.
    let (code, said) = subcommand(&["release", "alice"], &db);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not bound"), "{said}");
}

#[test]
fn required_keys_refuse_plain_registrations_saying_why() {
    let server = Server::start(&["--require-keys"]);
    let (mut plain, reply) = reg(&server, "carol");
    assert!(
        reply.starts_with("{\"ack\":\"Error\",\"reason\":") && reply.contains("prove a key"),
        "{reply}"
    );
    // Lookups are still answered.
    assert_eq!(
        plain.ask(r#"{"command":"GET","name":"carol"}"#),
        "{\"ip\":\"None\"}"
    );
    assert!(server.log().contains("--require-keys"));
}

#[test]
fn a_bad_names_file_stops_the_server_at_start_saying_which_line() {
    let dir = TempDir::new("names-bad");
    let db = dir.path().join("directory.db");
    let file = names_file(
        dir.path(),
        &format!("# site\nalice {ALICE_KEY}\n\nbob not-a-key\n"),
    );
    let (status, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db.to_string_lossy(),
        "--names",
        &file,
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("the key of \"bob\""), "{stderr}");
    let (status, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db.to_string_lossy(),
        "--names",
        &dir.path().join("missing.names").to_string_lossy(),
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.names"), "{stderr}");
}

#[test]
fn bindings_survive_a_database_locked_at_start_through_their_copy() {
    let dir = TempDir::new("names-locked");
    let db = dir.path().join("directory.db");
    let file = names_file(dir.path(), &format!("alice {ALICE_KEY}\n"));
    let mut server = Server::start_in(TempDir::new("unused"), db.clone(), &["--names", &file]);
    eventually("the copy of the bindings is written", || {
        std::fs::read_to_string(dir.path().join("directory.db.bindings"))
            .is_ok_and(|copy| copy.contains(ALICE_KEY))
    });
    server.signal("TERM");
    server.wait();
    let other = rusqlite::Connection::open(&db).expect("another program opens it");
    other
        .execute_batch("BEGIN EXCLUSIVE; CREATE TABLE mine (x);")
        .expect("and keeps it locked");
    // Restarted without the file on a database it cannot read: alice is still bound.
    let server = Server::start_in(TempDir::new("unused"), db.clone(), &[]);
    server.wait_for_log("read from the copy");
    assert_eq!(reg(&server, "alice").1, REFUSED_AS_ANOTHER_KEYS);
    let (_dave, reply) = reg(&server, "dave");
    assert_eq!(reply, REGISTERED);
    drop(other);
}
