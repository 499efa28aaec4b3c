//! User commands: one line each, from stdin or the control socket.

use parlo_net::peer::Name;

/// Longest command line accepted, in bytes.
pub const MAX_COMMAND_LEN: usize = 1024;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `call NAME`
    Call(Name),
    /// `accept`
    Accept,
    /// `reject`
    Reject,
    /// `hangup`
    Hangup,
    /// `list`
    List,
    /// `status`
    Status,
    /// `quit`
    Quit,
    /// `help`
    Help,
}

/// Parses one line. `Ok(None)` for a blank line (nothing to answer); `Err` says what is
/// wrong, for an `error` event.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    if line.len() > MAX_COMMAND_LEN {
        return Err(format!(
            "command of {} bytes is longer than {MAX_COMMAND_LEN}",
            line.len()
        ));
    }
    let mut words = line.split_whitespace();
    let Some(word) = words.next() else {
        return Ok(None);
    };
    let word = word.to_ascii_lowercase();
    let command = match word.as_str() {
        "call" => {
            let Some(name) = words.next() else {
                return Err("call needs a name: call NAME".into());
            };
            let name = Name::new(name).map_err(|e| format!("call: {e}"))?;
            Command::Call(name)
        }
        "accept" | "answer" => Command::Accept,
        "reject" | "decline" => Command::Reject,
        "hangup" | "hang-up" => Command::Hangup,
        "list" => Command::List,
        "status" => Command::Status,
        "quit" | "exit" => Command::Quit,
        "help" | "?" => Command::Help,
        _ => {
            let shown: String = word.chars().take(32).collect();
            return Err(format!(
                "unknown command \"{shown}\": expected call NAME, accept, reject, hangup, \
                 list, status, quit or help"
            ));
        }
    };
    if let Some(extra) = words.next() {
        let shown: String = extra.chars().take(32).collect();
        return Err(format!("{word}: unexpected \"{shown}\" after the command"));
    }
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command() {
        assert_eq!(
            parse("call bob"),
            Ok(Some(Command::Call(Name::new("bob").expect("name"))))
        );
        assert_eq!(parse("  accept \r"), Ok(Some(Command::Accept)));
        assert_eq!(parse("REJECT"), Ok(Some(Command::Reject)));
        assert_eq!(parse("hangup"), Ok(Some(Command::Hangup)));
        assert_eq!(parse("list"), Ok(Some(Command::List)));
        assert_eq!(parse("status"), Ok(Some(Command::Status)));
        assert_eq!(parse("quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse("help"), Ok(Some(Command::Help)));
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(parse("call").expect_err("refused").contains("needs a name"));
        assert!(
            parse("call bo\u{200b}b")
                .expect_err("refused")
                .contains("call:")
        );
        assert!(
            parse("call bob now")
                .expect_err("refused")
                .contains("unexpected")
        );
        assert!(
            parse("dance")
                .expect_err("refused")
                .contains("unknown command \"dance\"")
        );
        assert!(
            parse("status please")
                .expect_err("refused")
                .contains("unexpected")
        );
        assert!(
            parse(&"x".repeat(2000))
                .expect_err("refused")
                .contains("longer")
        );
    }
}
