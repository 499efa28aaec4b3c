//! parlo-server end to end on a hostile network: one host cannot take every connection
//! slot, one busy client cannot starve the others, connections that never register do not
//! stay, and nothing a request says reaches the log raw or unthrottled.

use parlo_tests::server_harness::{LineClient, Server, eventually, loopback};

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
