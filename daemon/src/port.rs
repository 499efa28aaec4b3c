//! The one port rule of both daemons, and its one wording.
//!
//! A port is from 1024 to 65535, as the original project required of every port: ports
//! below 1024 need privileges, which a Parlo daemon never has. An address a daemon listens
//! on may also take port 0, for a free port the system picks (the tests run their daemons
//! so). Every flag that takes a port (`--server`, `--listen` of the phone, `--listen` of
//! the server) is checked here, so a refusal reads the same whatever the flag:
//!
//! ```text
//! --listen: port 80 is below 1024; choose a port from 1024 to 65535, or 0 for a free port
//! --server: port 70000 is above 65535; choose a port from 1024 to 65535
//! ```
//!
//! The errors are the text of a usage error; each daemon wraps it in its own.

use std::net::{IpAddr, SocketAddr};

/// The lowest port a daemon accepts (but 0 to listen on).
pub const LOWEST: u16 = 1024;

/// What a port is for, which decides whether 0 is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A port to listen on: 0 asks the system for a free one.
    Listen,
    /// A port to connect to: it must be a real one.
    Connect,
}

impl Role {
    /// What the user may choose, after "choose ".
    fn choices(self) -> &'static str {
        match self {
            Role::Listen => "a port from 1024 to 65535, or 0 for a free port",
            Role::Connect => "a port from 1024 to 65535",
        }
    }
}

/// `port`, given to `flag` for `role`, if the rule allows it; otherwise the usage error
/// that says why and what to choose.
pub fn check(flag: &str, port: u16, role: Role) -> Result<u16, String> {
    if port >= LOWEST || (port == 0 && role == Role::Listen) {
        return Ok(port);
    }
    Err(format!(
        "{flag}: port {port} is below {LOWEST}; choose {}",
        role.choices()
    ))
}

/// The port written `text` (the part after the last `:` of an address), given to `flag`
/// for `role`.
pub fn parse(flag: &str, text: &str, role: Role) -> Result<u16, String> {
    if text.is_empty() {
        return Err(format!(
            "{flag}: the port after ':' is missing; choose {}",
            role.choices()
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{flag}: port \"{text}\" is not a number; choose {}",
            role.choices()
        ));
    }
    match text.parse::<u16>() {
        Ok(port) => check(flag, port, role),
        // Only digits, yet not a u16: too large.
        Err(_) => Err(format!(
            "{flag}: port {text} is above 65535; choose {}",
            role.choices()
        )),
    }
}

/// The address `ADDR:PORT` (`[ADDR]:PORT` for IPv6) given to `flag` to listen on, with
/// its port checked. `example_port` is the port shown in the example of a malformed
/// address (the flag's default).
pub fn listen_addr(flag: &str, text: &str, example_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        check(flag, addr.port(), Role::Listen)?;
        return Ok(addr);
    }
    // An address that fails only by its port (70000, "http") is told about the port.
    if let Some((host, port)) = text.rsplit_once(':') {
        let ip = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.strip_suffix(']'),
            None => (!host.contains(':')).then_some(host),
        };
        if ip.is_some_and(|ip| ip.parse::<IpAddr>().is_ok()) {
            parse(flag, port, Role::Listen)?;
        }
    }
    Err(format!(
        "{flag}: expected ADDR:PORT such as 0.0.0.0:{example_port} or [::]:{example_port}, \
         got \"{text}\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<T: std::fmt::Debug>(result: Result<T, String>) -> String {
        match result {
            Ok(value) => panic!("expected a refusal, got {value:?}"),
            Err(text) => text,
        }
    }

    #[test]
    fn ports_from_1024_to_65535_are_allowed_for_both_roles() {
        for role in [Role::Listen, Role::Connect] {
            for port in [1024, 5001, 10000, 65535] {
                assert_eq!(check("--x", port, role), Ok(port));
                assert_eq!(parse("--x", &port.to_string(), role), Ok(port));
            }
        }
    }

    #[test]
    fn port_0_is_a_free_port_to_listen_on_and_no_port_to_connect_to() {
        assert_eq!(check("--listen", 0, Role::Listen), Ok(0));
        assert_eq!(parse("--listen", "0", Role::Listen), Ok(0));
        assert_eq!(
            refusal(check("--server", 0, Role::Connect)),
            "--server: port 0 is below 1024; choose a port from 1024 to 65535"
        );
    }

    #[test]
    fn every_refusal_says_what_was_given_and_what_to_choose() {
        assert_eq!(
            refusal(check("--listen", 80, Role::Listen)),
            "--listen: port 80 is below 1024; choose a port from 1024 to 65535, or 0 for a \
             free port"
        );
        assert_eq!(
            refusal(parse("--server", "1023", Role::Connect)),
            "--server: port 1023 is below 1024; choose a port from 1024 to 65535"
        );
        assert_eq!(
            refusal(parse("--server", "70000", Role::Connect)),
            "--server: port 70000 is above 65535; choose a port from 1024 to 65535"
        );
        assert_eq!(
            refusal(parse("--server", "99999999999999999999", Role::Connect)),
            "--server: port 99999999999999999999 is above 65535; choose a port from 1024 \
             to 65535"
        );
        assert_eq!(
            refusal(parse("--server", "http", Role::Connect)),
            "--server: port \"http\" is not a number; choose a port from 1024 to 65535"
        );
        assert_eq!(
            refusal(parse("--server", "+5000", Role::Connect)),
            "--server: port \"+5000\" is not a number; choose a port from 1024 to 65535"
        );
        assert_eq!(
            refusal(parse("--server", "", Role::Connect)),
            "--server: the port after ':' is missing; choose a port from 1024 to 65535"
        );
    }

    #[test]
    fn listen_addresses() {
        for (text, addr) in [
            ("0.0.0.0:5001", "0.0.0.0:5001"),
            ("127.0.0.3:0", "127.0.0.3:0"),
            ("[::]:10000", "[::]:10000"),
            ("[::1]:0", "[::1]:0"),
        ] {
            assert_eq!(
                listen_addr("--listen", text, 5001),
                Ok(addr.parse().expect("an address")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_listen_address_wrong_only_by_its_port_is_told_about_the_port() {
        for (text, said) in [
            ("127.0.0.1:80", "port 80 is below 1024"),
            ("127.0.0.1:70000", "port 70000 is above 65535"),
            ("[::1]:http", "port \"http\" is not a number"),
            ("0.0.0.0:", "the port after ':' is missing"),
        ] {
            let text = refusal(listen_addr("--listen", text, 5001));
            assert!(text.starts_with("--listen: "), "{text}");
            assert!(text.contains(said), "{text}");
            assert!(text.ends_with("or 0 for a free port"), "{text}");
        }
    }

    #[test]
    fn a_malformed_listen_address_shows_an_example() {
        for text in ["10000", "localhost:5001", "::1:5001", "1.2.3:5001", ""] {
            assert_eq!(
                refusal(listen_addr("--listen", text, 10000)),
                format!(
                    "--listen: expected ADDR:PORT such as 0.0.0.0:10000 or [::]:10000, got \
                     \"{text}\""
                ),
            );
        }
    }
}
