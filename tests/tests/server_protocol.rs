//! parlo-server end to end: the directory protocol as clients see it, on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use parlo_tests::server_harness::{
    LineClient, OriginalClient, PATIENCE, Server, eventually, loopback, signal, wait_exit,
};

const REGISTERED: &str = "{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n";
const DISCONNECTED: &str = "{\"ack\":\"Disconnected\"}\n";
const NOT_FOUND: &str = "{\"ip\":\"None\"}\n";

/// GET `name` on a fresh newline-JSON connection.
fn lookup(server: &Server, name: &str) -> String {
    LineClient::new(server.connect()).ask(&format!(r#"{{"command":"GET","name":"{name}"}}"#))
}

#[test]
fn original_client_registers_looks_up_and_disconnects() {
    let server = Server::start(&[]);
    let mut alice = OriginalClient::new(server.connect());
    let mut bob = OriginalClient::new(server.connect());
    assert_eq!(alice.request("REG", "alice"), REGISTERED);
    assert_eq!(bob.request("REG", "bob"), REGISTERED);
    // Registered without a port: a phone of the original project.
    assert_eq!(
        bob.request("GET", "alice"),
        "{\"ip\":\"127.0.0.1\",\"port\":5001,\"dialect\":\"original\"}\n"
    );
    assert_eq!(bob.request("GET", "carol"), NOT_FOUND);
    assert_eq!(alice.request("DISCONNECT", "alice"), DISCONNECTED);
    assert_eq!(bob.request("GET", "alice"), NOT_FOUND);
    // The connection stays usable after DISCONNECT: the name can be taken again.
    assert_eq!(alice.request("REG", "alice"), REGISTERED);
    server.wait_for_log(r#"REG "alice" port 5001: registered"#);
    server.wait_for_log(r#"DISCONNECT "alice": disconnected"#);
}

#[test]
fn newline_json_client_pipelined_and_split_requests() {
    let server = Server::start(&[]);
    let mut client = LineClient::new(server.connect());
    // Three requests in one write, compact and spaced, with CRLF and a blank line.
    client.send_raw(
        b"{\"command\":\"REG\",\"name\":\"n1\",\"port\":6000}\r\n\n\
          {\"command\": \"PING\"}\n{\"command\":\"GET\",\"name\":\"n1\"}\n",
    );
    assert_eq!(client.line(), REGISTERED.trim_end());
    assert_eq!(client.line(), "{\"ack\":\"PONG\"}");
    assert_eq!(
        client.line(),
        "{\"ip\":\"127.0.0.1\",\"port\":6000,\"dialect\":\"parlo\"}"
    );
    // One request in three writes, with pauses long enough to be separate segments.
    for part in [&b"{\"comm"[..], b"and\":\"GET\",\"na", b"me\":\"n1\"}\n"] {
        client.send_raw(part);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        client.line(),
        "{\"ip\":\"127.0.0.1\",\"port\":6000,\"dialect\":\"parlo\"}"
    );
    // Bare objects back to back, no separator at all, in one write.
    client.send_raw(b"{\"command\":\"PING\"}{\"command\":\"GET\",\"name\":\"zz\"}");
    assert_eq!(client.line(), "{\"ack\":\"PONG\"}");
    assert_eq!(client.line(), NOT_FOUND.trim_end());
}

#[test]
fn registered_ip_is_the_peer_address() {
    let server = Server::start(&[]);
    let phone_ip = loopback();
    let mut phone = LineClient::new(server.connect_from(phone_ip));
    assert_eq!(
        phone.ask(r#"{"command":"REG","name":"door","port":7070}"#),
        REGISTERED.trim_end()
    );
    assert_eq!(
        lookup(&server, "door"),
        format!("{{\"ip\":\"{phone_ip}\",\"port\":7070,\"dialect\":\"parlo\"}}")
    );
}

#[test]
fn get_tells_an_original_phone_from_a_parlo_phone() {
    let server = Server::start(&[]);
    let (old_ip, parlo_ip) = (loopback(), loopback());
    let mut old = OriginalClient::new(server.connect_from(old_ip));
    let mut parlo = LineClient::new(server.connect_from(parlo_ip));
    assert_eq!(old.request("REG", "oldphone"), REGISTERED);
    assert_eq!(
        parlo.ask(r#"{"command":"REG","name":"door","port":5001}"#),
        REGISTERED.trim_end()
    );
    // The original's own lookup, with its json.dumps spacing and one recv(1024): the
    // extra field is one json.loads ignores.
    assert_eq!(
        old.request("GET", "door"),
        format!("{{\"ip\":\"{parlo_ip}\",\"port\":5001,\"dialect\":\"parlo\"}}\n")
    );
    assert_eq!(
        lookup(&server, "oldphone"),
        format!("{{\"ip\":\"{old_ip}\",\"port\":5001,\"dialect\":\"original\"}}")
    );
    eventually("the database mirrors both dialects", || {
        let table = server.users();
        table
            .lines()
            .any(|l| l.starts_with("oldphone") && l.contains(" original "))
            && table
                .lines()
                .any(|l| l.starts_with("door") && l.contains(" parlo "))
    });
}

#[test]
fn name_taken_by_a_live_registration_is_refused() {
    let server = Server::start(&[]);
    let mut first = OriginalClient::new(server.connect_from(loopback()));
    let mut second = OriginalClient::new(server.connect());
    assert_eq!(first.request("REG", "alice"), REGISTERED);
    let refused = second.request("REG", "alice");
    assert!(
        refused.starts_with("{\"ack\":\"Error Registering\",\"reason\":"),
        "{refused}"
    );
    // The first registration is untouched, and the name frees up when its owner leaves.
    let owner = lookup(&server, "alice");
    assert!(!owner.contains("127.0.0.1\""), "{owner}");
    assert_eq!(first.request("DISCONNECT", "alice"), DISCONNECTED);
    assert_eq!(second.request("REG", "alice"), REGISTERED);
}

#[test]
fn one_registration_per_connection() {
    let server = Server::start(&[]);
    let mut client = LineClient::new(server.connect());
    assert_eq!(
        client.ask(r#"{"command":"REG","name":"first"}"#),
        REGISTERED.trim_end()
    );
    let second = client.ask(r#"{"command":"REG","name":"second"}"#);
    assert!(second.contains("already registered as"), "{second}");
    assert_eq!(lookup(&server, "second"), NOT_FOUND.trim_end());
}

#[test]
fn disconnect_of_someone_elses_name_is_refused() {
    let server = Server::start(&[]);
    let mut alice = OriginalClient::new(server.connect());
    let mut mallory = OriginalClient::new(server.connect());
    assert_eq!(alice.request("REG", "alice"), REGISTERED);
    let refused = mallory.request("DISCONNECT", "alice");
    assert!(
        refused.starts_with("{\"ack\":\"Error\",\"reason\":"),
        "{refused}"
    );
    assert!(refused.contains("another connection"), "{refused}");
    assert_ne!(lookup(&server, "alice"), NOT_FOUND.trim_end());
    // Closing mallory's connection does not touch alice either.
    drop(mallory);
    std::thread::sleep(Duration::from_millis(50));
    assert_ne!(lookup(&server, "alice"), NOT_FOUND.trim_end());
}

#[test]
fn registration_removed_when_the_connection_closes() {
    let server = Server::start(&[]);
    let mut client = OriginalClient::new(server.connect());
    assert_eq!(client.request("REG", "leaver"), REGISTERED);
    drop(client);
    eventually("the closed connection's name is freed", || {
        lookup(&server, "leaver") == NOT_FOUND.trim_end()
    });
    server.wait_for_log("\"leaver\" unregistered: closed by the peer");
}

/// Not a test on its own: the client process that `registration_removed_when_a_client_
/// process_is_killed` starts and kills (the test binary re-run with `--ignored`).
#[test]
#[ignore = "child process of registration_removed_when_a_client_process_is_killed"]
fn killed_client_process() {
    let addr = std::env::var("PARLO_TEST_SERVER").expect("started by the parent test");
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut client = OriginalClient::new(stream);
    assert_eq!(client.request("REG", "victim"), REGISTERED);
    println!("registered");
    std::io::stdout().flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn registration_removed_when_a_client_process_is_killed() {
    let server = Server::start(&[]);
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--ignored",
            "--exact",
            "killed_client_process",
            "--nocapture",
        ])
        .env("PARLO_TEST_SERVER", server.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test binary can be re-run");
    let stdout = child.stdout.take().expect("piped");
    let registered = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "registered");
    assert!(registered, "the child process registered");
    assert_ne!(lookup(&server, "victim"), NOT_FOUND.trim_end());
    signal(child.id(), "KILL");
    wait_exit(&mut child, PATIENCE).expect("a killed process exits");
    eventually("the killed client's name is freed", || {
        lookup(&server, "victim") == NOT_FOUND.trim_end()
    });
}

/// The names of a LIST answer, and whether more follow.
fn users_page(page: &str) -> (Vec<String>, bool) {
    let (list, more) = page
        .strip_prefix("{\"users\":[")
        .and_then(|rest| rest.split_once("],\"more\":"))
        .unwrap_or_else(|| panic!("a users page: {page}"));
    let names = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_owned())
        .collect();
    (names, more == "true}")
}

#[test]
fn list_pages_through_every_registered_name() {
    let server = Server::start(&[]);
    let mut phones = Vec::new();
    for i in 0..45 {
        let mut phone = LineClient::new(server.connect());
        let reply = phone.ask(&format!(r#"{{"command":"REG","name":"phone-{i:02}"}}"#));
        assert_eq!(reply, REGISTERED.trim_end());
        phones.push(phone);
    }
    let expected: Vec<String> = (0..45).map(|i| format!("phone-{i:02}")).collect();
    let mut client = LineClient::new(server.connect());
    // By offset, as phones of Parlo's first version page.
    let mut names: Vec<String> = Vec::new();
    loop {
        let offset = names.len();
        let (on_page, more) =
            users_page(&client.ask(&format!(r#"{{"command":"LIST","offset":{offset}}}"#)));
        assert!(!on_page.is_empty() || !more);
        names.extend(on_page);
        if !more {
            break;
        }
    }
    assert_eq!(names, expected);
    // By cursor: each page after the last name of the one before.
    let mut names: Vec<String> = Vec::new();
    loop {
        let request = match names.last() {
            Some(last) => format!(r#"{{"command":"LIST","after":"{last}"}}"#),
            None => r#"{"command":"LIST"}"#.to_owned(),
        };
        let (on_page, more) = users_page(&client.ask(&request));
        names.extend(on_page);
        if !more {
            break;
        }
    }
    assert_eq!(names, expected);
    // An offset further than any phone asks is refused, saying how to page instead.
    let reply = client.ask(r#"{"command":"LIST","offset":5000}"#);
    assert!(
        reply.starts_with("{\"ack\":\"Error\"") && reply.contains("after"),
        "{reply}"
    );
}

#[test]
fn users_subcommand_prints_the_live_directory() {
    let server = Server::start(&[]);
    let phone_ip = loopback();
    let mut phone = LineClient::new(server.connect_from(phone_ip));
    assert_eq!(
        phone.ask(r#"{"command":"REG","name":"kitchen","port":5050}"#),
        REGISTERED.trim_end()
    );
    eventually("users lists kitchen", || server.users().contains("kitchen"));
    let table = server.users();
    let row = table
        .lines()
        .find(|l| l.starts_with("kitchen"))
        .unwrap_or_else(|| panic!("{table}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&fields[..3], ["kitchen", &phone_ip.to_string(), "5050"]);
    assert!(table.ends_with("1 online\n"), "{table}");
    assert_eq!(
        phone.ask(r#"{"command":"DISCONNECT","name":"kitchen"}"#),
        DISCONNECTED.trim_end()
    );
    eventually("users no longer lists kitchen", || {
        server.users().ends_with("nobody online\n")
    });
}

#[test]
fn sql_looking_names_are_just_names() {
    let server = Server::start(&[]);
    let mut mallory = LineClient::new(server.connect());
    let mut victim = OriginalClient::new(server.connect());
    assert_eq!(victim.request("REG", "victim"), REGISTERED);
    let tricky = r#"x\"OR\"1\"<>\"1"#;
    assert_eq!(
        mallory.ask(&format!(r#"{{"command":"REG","name":"{tricky}"}}"#)),
        REGISTERED.trim_end()
    );
    assert_eq!(
        mallory.ask(r#"{"command":"GET","name":"x\"OR\"1\"=\"1"}"#),
        "{\"ack\":\"Error\",\"reason\":\"name contains '=', which separates fields\"}"
    );
    assert_eq!(
        mallory.ask(r#"{"command":"GET","name":"x'; DELETE FROM presence; --"}"#),
        "{\"ack\":\"Error\",\"reason\":\"name contains whitespace\"}"
    );
    assert_eq!(
        mallory.ask(r#"{"command":"GET","name":"x';DELETE/**/FROM/**/presence;--"}"#),
        NOT_FOUND.trim_end()
    );
    eventually("both names in the database", || {
        let table = server.users();
        table.contains("x\"OR\"1\"<>\"1") && table.contains("victim")
    });
}
