//! The directory protocol, as much of it as the load generator speaks.
//!
//! Requests are written as newline-terminated JSON into a caller's fixed buffer (no
//! allocation per request). Replies are one JSON object per line; the load generator only
//! needs to know which answer it got, so [`parse_reply`] looks up the `ack`, `ip` and `port`
//! fields of a line without building a document.

use std::io::Write as _;

/// Longest name the directory accepts, in bytes.
pub const MAX_NAME: usize = 32;
/// Room for the longest request [`encode`] writes (a DISCONNECT or REG of a 32-byte name).
pub const REQUEST_CAP: usize = 128;

/// A request to the directory. Names are `prefix` followed by `index` in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Register `prefix index` with UDP port `port`.
    Reg {
        prefix: &'a str,
        index: u32,
        port: u16,
    },
    /// Look up `prefix index`.
    Get { prefix: &'a str, index: u32 },
    /// Remove the registration of `prefix index`.
    Disconnect { prefix: &'a str, index: u32 },
    /// Liveness check.
    Ping,
}

/// Writes `request` as one JSON line into `out` and returns its length.
///
/// The prefix must have passed [`check_prefix`]: then every request fits in [`REQUEST_CAP`];
/// a request that would not fit is cut short (and the directory would reject it).
pub fn encode(out: &mut [u8; REQUEST_CAP], request: Request<'_>) -> usize {
    let mut cursor = &mut out[..];
    // A write into a slice fails only when the slice is full; check_prefix rules that out.
    let _ = match request {
        Request::Reg {
            prefix,
            index,
            port,
        } => writeln!(
            cursor,
            r#"{{"command":"REG","name":"{prefix}{index}","port":{port}}}"#
        ),
        Request::Get { prefix, index } => {
            writeln!(cursor, r#"{{"command":"GET","name":"{prefix}{index}"}}"#)
        }
        Request::Disconnect { prefix, index } => {
            writeln!(
                cursor,
                r#"{{"command":"DISCONNECT","name":"{prefix}{index}"}}"#
            )
        }
        Request::Ping => writeln!(cursor, r#"{{"command":"PING"}}"#),
    };
    REQUEST_CAP - cursor.len()
}

/// The UDP port the load generator registers for name `index`, so that a lookup can check
/// it got that name's record and not another's.
pub fn port_for(index: u32) -> u16 {
    // 1024 + (0..64512) stays within 1024..=65535.
    (1024 + index % 64_512) as u16
}

/// Checks that names `prefix0` ..= `prefix{highest}` are valid directory names that need no
/// JSON escaping: at most [`MAX_NAME`] bytes of printable ASCII other than `"` and `\`.
pub fn check_prefix(prefix: &str, highest: u32) -> Result<(), String> {
    if let Some(bad) = prefix
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '"' || *c == '\\')
    {
        return Err(format!(
            "prefix {prefix:?} contains {bad:?}: use printable ASCII without spaces, quotes or backslashes"
        ));
    }
    let longest = prefix.len() + highest.to_string().len();
    if longest > MAX_NAME {
        return Err(format!(
            "prefix {prefix:?} makes names of up to {longest} bytes; the directory accepts {MAX_NAME}: shorten it"
        ));
    }
    Ok(())
}

/// What a reply line says, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `{"ack":"Registered successfully"}`
    Registered,
    /// `{"ack":"Error Registering"}`: the name is taken.
    RegisterRefused,
    /// `{"ack":"Disconnected"}`
    Disconnected,
    /// `{"ack":"PONG"}`
    Pong,
    /// `{"ack":"Error",...}`
    Error,
    /// `{"ip":"A.B.C.D","port":P}`; `port` is `None` when absent or not a number.
    Found { port: Option<u32> },
    /// `{"ip":"None"}`
    NotFound,
    /// Anything else: another ack string, no known field, not JSON.
    Unexpected,
}

/// Classifies one reply line (without its `\n`).
pub fn parse_reply(line: &[u8]) -> Reply {
    if let Some(Value::Str(ack)) = field(line, b"ack") {
        return match ack {
            b"Registered successfully" => Reply::Registered,
            b"Error Registering" => Reply::RegisterRefused,
            b"Disconnected" => Reply::Disconnected,
            b"PONG" => Reply::Pong,
            b"Error" => Reply::Error,
            _ => Reply::Unexpected,
        };
    }
    match field(line, b"ip") {
        Some(Value::Str(b"None")) => Reply::NotFound,
        Some(Value::Str(_)) => Reply::Found {
            port: match field(line, b"port") {
                Some(Value::Num(port)) => Some(port),
                _ => None,
            },
        },
        _ => Reply::Unexpected,
    }
}

/// A field's value: a string's raw bytes (escapes left as they are) or an unsigned integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Str(&'a [u8]),
    Num(u32),
}

/// Finds `"key"` followed by `:` in `line` and returns the value after it.
///
/// Not a JSON parser: a key quoted inside another string value could be mistaken for a
/// field, which the directory's replies (fields `ack`, `ip`, `port`, `reason`, `users`,
/// `more`) never cause for the keys looked up here, since `ack`/`ip` come first.
fn field<'a>(line: &'a [u8], key: &[u8]) -> Option<Value<'a>> {
    let mut from = 0;
    while let Some(offset) = line[from..].iter().position(|&b| b == b'"') {
        let quote = from + offset;
        from = quote + 1;
        let rest = &line[quote + 1..];
        let escaped = quote > 0 && line[quote - 1] == b'\\';
        if escaped || !rest.starts_with(key) || rest.get(key.len()) != Some(&b'"') {
            continue;
        }
        let after = skip_space(&rest[key.len() + 1..]);
        let Some((&b':', value)) = after.split_first() else {
            continue;
        };
        return parse_value(skip_space(value));
    }
    None
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn parse_value(bytes: &[u8]) -> Option<Value<'_>> {
    if let Some(body) = bytes.strip_prefix(b"\"") {
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\\' => i += 2,
                b'"' => return Some(Value::Str(&body[..i])),
                _ => i += 1,
            }
        }
        return None;
    }
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let number = bytes[..digits]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    Some(Value::Num(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(request: Request<'_>) -> String {
        let mut out = [0; REQUEST_CAP];
        let len = encode(&mut out, request);
        String::from_utf8_lossy(&out[..len]).into_owned()
    }

    #[test]
    fn requests_are_json_lines() {
        let prefix = "b42-";
        assert_eq!(
            encoded(Request::Reg {
                prefix,
                index: 7,
                port: 1031
            }),
            "{\"command\":\"REG\",\"name\":\"b42-7\",\"port\":1031}\n"
        );
        assert_eq!(
            encoded(Request::Get { prefix, index: 12 }),
            "{\"command\":\"GET\",\"name\":\"b42-12\"}\n"
        );
        assert_eq!(
            encoded(Request::Disconnect { prefix, index: 0 }),
            "{\"command\":\"DISCONNECT\",\"name\":\"b42-0\"}\n"
        );
        assert_eq!(encoded(Request::Ping), "{\"command\":\"PING\"}\n");
    }

    #[test]
    fn longest_requests_fit() {
        let prefix = "p".repeat(MAX_NAME - 10);
        check_prefix(&prefix, u32::MAX).expect("22 + 10 digits is 32 bytes");
        let line = encoded(Request::Reg {
            prefix: &prefix,
            index: u32::MAX,
            port: u16::MAX,
        });
        assert!(line.ends_with(",\"port\":65535}\n"), "{line}");
        let line = encoded(Request::Disconnect {
            prefix: &prefix,
            index: u32::MAX,
        });
        assert!(line.ends_with("4294967295\"}\n"), "{line}");
    }

    #[test]
    fn prefixes_that_would_make_bad_names_are_refused() {
        assert!(check_prefix("bench-", 9_999).is_ok());
        assert!(check_prefix("", 0).is_ok());
        assert!(check_prefix("has space", 1).is_err());
        assert!(check_prefix("quo\"te", 1).is_err());
        assert!(check_prefix("back\\slash", 1).is_err());
        assert!(check_prefix("é", 1).is_err());
        assert!(check_prefix(&"x".repeat(28), 9_999).is_ok());
        assert!(check_prefix(&"x".repeat(29), 9_999).is_err());
    }

    #[test]
    fn ports_stay_in_the_unprivileged_range() {
        assert_eq!(port_for(0), 1024);
        assert_eq!(port_for(64_511), 65_535);
        assert_eq!(port_for(64_512), 1024);
        assert_eq!(port_for(u32::MAX), 1024 + (u32::MAX % 64_512) as u16);
    }

    #[test]
    fn acks_are_recognised() {
        assert_eq!(
            parse_reply(br#"{"ack":"Registered successfully"}"#),
            Reply::Registered
        );
        assert_eq!(
            parse_reply(br#"{"ack": "Error Registering", "reason": "name taken"}"#),
            Reply::RegisterRefused
        );
        assert_eq!(
            parse_reply(br#"{"ack":"Disconnected"}"#),
            Reply::Disconnected
        );
        assert_eq!(parse_reply(br#"{"ack":"PONG"}"#), Reply::Pong);
        assert_eq!(
            parse_reply(br#"{"ack":"Error","reason":"unknown command \"ip\""}"#),
            Reply::Error
        );
        assert_eq!(parse_reply(br#"{"ack":"Bye"}"#), Reply::Unexpected);
    }

    #[test]
    fn lookups_are_recognised() {
        assert_eq!(
            parse_reply(br#"{"ip":"127.0.0.1","port":5001}"#),
            Reply::Found { port: Some(5001) }
        );
        assert_eq!(
            parse_reply(br#"{ "ip" : "10.0.0.2" , "port" : 65535 }"#),
            Reply::Found { port: Some(65535) }
        );
        assert_eq!(
            parse_reply(br#"{"port":1024,"ip":"::1"}"#),
            Reply::Found { port: Some(1024) }
        );
        assert_eq!(
            parse_reply(br#"{"ip":"127.0.0.1"}"#),
            Reply::Found { port: None }
        );
        assert_eq!(parse_reply(br#"{"ip":"None"}"#), Reply::NotFound);
    }

    #[test]
    fn garbage_is_unexpected_and_never_panics() {
        for line in [
            &b""[..],
            b"{",
            b"\"",
            b"\"ack\"",
            b"\"ack\":",
            b"{\"ack\":\"unterminated",
            b"{\"ack\":\"ends in escape\\",
            b"{\"ip\":5}",
            b"{\"ip\":\"1.2.3.4\",\"port\":\"5\"}",
            b"{\"ip\":\"1.2.3.4\",\"port\":99999999999}",
            b"\xff\xfe\x00",
            b"{\"\\\"ack\":\"PONG\"}",
        ] {
            let reply = parse_reply(line);
            assert!(
                matches!(reply, Reply::Unexpected | Reply::Found { port: None }),
                "{line:?} -> {reply:?}"
            );
        }
    }
}
