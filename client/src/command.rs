//! User commands: one line each, from stdin or the control socket.

use parlo_fsm::PublicKey;
use parlo_net::peer::Name;

use crate::output::Format;

/// Longest command line accepted, in bytes.
pub const MAX_COMMAND_LEN: usize = 1024;

/// A command line as read from a byte stream: the text, or why it cannot be a command
/// (to be answered with an `error` event).
pub type Line = Result<String, String>;

/// Cuts a byte stream (stdin, a control connection) into command lines. Invalid UTF-8
/// and over-long lines become errors, never lossy text; the rest of an over-long line is
/// skipped up to its newline.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    skipping: bool,
}

impl Lines {
    /// Takes `bytes` and appends every line they complete to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Line>) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
            } else if self.partial.len() + end > MAX_COMMAND_LEN {
                out.push(Err(too_long()));
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                out.push(line(&self.partial));
            }
            self.partial.clear();
            bytes = &bytes[end + 1..];
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_COMMAND_LEN {
            out.push(Err(too_long()));
            self.partial.clear();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// The end of the stream: a last line without its newline.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        if !self.skipping && !self.partial.is_empty() {
            out.push(line(&self.partial));
        }
        self.partial.clear();
        self.skipping = false;
    }
}

fn too_long() -> String {
    format!("command longer than {MAX_COMMAND_LEN} bytes")
}

fn line(bytes: &[u8]) -> Line {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.trim_end_matches('\r').to_owned()),
        Err(_) => Err("command is not valid UTF-8".to_owned()),
    }
}

/// Whether `line` asks for an answer (blank lines do not).
pub fn is_answered(line: &Line) -> bool {
    line.as_ref().map_or(true, |text| !text.trim().is_empty())
}

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
    /// `watch [text|json]`: this control connection receives every event from now on,
    /// in the format given (else its own, by default the phone's).
    Watch(Option<Format>),
    /// `format text|json`: this control connection's lines from now on.
    Format(Format),
    /// `trust NAME [KEY]`: pin `KEY` for `NAME` (in `known_peers`), or, without a key,
    /// the key `NAME` last called or answered with, refused as `key-changed`: the way to
    /// accept a phone's new key on purpose.
    Trust(Name, Option<PublicKey>),
    /// `msg NAME TEXT`: sends TEXT (the rest of the line, spaces kept) to NAME.
    Msg(Name, String),
    /// `conf NAME ...`: starts a conference with these phones (up to 7).
    Conf(Vec<Name>),
    /// `invite NAME`: adds NAME to the conference in progress, or turns the two-party call
    /// in progress into a conference with NAME.
    Invite(Name),
}

/// Most names `conf` takes: the others of a conference of eight.
pub const MAX_CONF_NAMES: usize = parlo_fsm::conference::MAX_MEMBERS - 1;

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
        "watch" => Command::Watch(match words.next() {
            Some(format) => Some(format_named(&word, format)?),
            None => None,
        }),
        "msg" | "message" => {
            let Some(name) = words.next() else {
                return Err("msg needs a name and a text: msg NAME TEXT".into());
            };
            let name = Name::new(name).map_err(|e| format!("msg: {e}"))?;
            // The text: everything after the name and the one space that follows it.
            let after = line.trim_start();
            let after =
                after[after.find(char::is_whitespace).unwrap_or(after.len())..].trim_start();
            let text = after[name.as_str().len()..]
                .strip_prefix(' ')
                .unwrap_or("")
                .trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                return Err(format!("msg needs a text after the name: msg {name} TEXT"));
            }
            return Ok(Some(Command::Msg(name, text.to_owned())));
        }
        "conf" | "conference" => {
            let mut names = Vec::new();
            for word in words.by_ref() {
                let name = Name::new(word).map_err(|e| format!("conf: {e}"))?;
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            if names.is_empty() {
                return Err("conf needs the names to call: conf NAME1 NAME2 ...".into());
            }
            if names.len() > MAX_CONF_NAMES {
                return Err(format!(
                    "conf takes at most {MAX_CONF_NAMES} names (a conference is at most {} \
                     phones), got {}",
                    MAX_CONF_NAMES + 1,
                    names.len()
                ));
            }
            Command::Conf(names)
        }
        "invite" => {
            let Some(name) = words.next() else {
                return Err("invite needs a name: invite NAME".into());
            };
            let name = Name::new(name).map_err(|e| format!("invite: {e}"))?;
            Command::Invite(name)
        }
        "trust" => {
            let Some(name) = words.next() else {
                return Err("trust needs a name: trust NAME [KEY]".into());
            };
            let name = Name::new(name).map_err(|e| format!("trust: {e}"))?;
            let key = match words.next() {
                Some(key) => Some(PublicKey::parse(key).map_err(|e| format!("trust: {e}"))?),
                None => None,
            };
            Command::Trust(name, key)
        }
        "format" => {
            let Some(format) = words.next() else {
                return Err("format needs text or json: format json".into());
            };
            Command::Format(format_named(&word, format)?)
        }
        _ => {
            let shown: String = word.chars().take(32).collect();
            return Err(format!(
                "unknown command \"{shown}\": expected call NAME, accept, reject, hangup, \
                 conf, invite, list, status, msg, trust, quit, help, watch or format"
            ));
        }
    };
    if let Some(extra) = words.next() {
        let shown: String = extra.chars().take(32).collect();
        return Err(format!("{word}: unexpected \"{shown}\" after the command"));
    }
    Ok(Some(command))
}

/// The format `word` names, after the command `command`.
fn format_named(command: &str, word: &str) -> Result<Format, String> {
    Format::from_name(word).ok_or_else(|| {
        let shown: String = word.chars().take(32).collect();
        format!("{command}: expected text or json, got \"{shown}\"")
    })
}

#[cfg(test)]
mod tests {

    fn cut(chunks: &[&[u8]]) -> Vec<Line> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, &mut out);
        }
        lines.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_cut_across_chunks_and_at_the_end() {
        assert_eq!(
            cut(&[b"sta", b"tus\r\nli", b"st\n\nquit"]),
            [
                Ok("status".into()),
                Ok("list".into()),
                Ok(String::new()),
                Ok("quit".into())
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_not_lossy_text() {
        assert_eq!(
            cut(&[b"call \xff\xfe\nstatus\n"]),
            [
                Err("command is not valid UTF-8".into()),
                Ok("status".into())
            ]
        );
    }

    #[test]
    fn an_over_long_line_is_one_error_and_is_skipped_to_its_newline() {
        let long = vec![b'x'; 3 * MAX_COMMAND_LEN];
        let out = cut(&[&long[..1500], &long[1500..], b"\nstatus\n"]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].is_err());
        assert_eq!(out[1], Ok("status".into()));
        let exact = vec![b'y'; MAX_COMMAND_LEN];
        assert_eq!(cut(&[&exact, b"\n"]).len(), 1);
        assert!(cut(&[&exact, b"\n"])[0].is_ok());
    }

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
        assert_eq!(parse("watch"), Ok(Some(Command::Watch(None))));
        assert_eq!(
            parse("watch JSON"),
            Ok(Some(Command::Watch(Some(Format::Json))))
        );
        assert_eq!(
            parse("format text"),
            Ok(Some(Command::Format(Format::Text)))
        );
        let bob = Name::new("bob").expect("name");
        assert_eq!(
            parse("trust bob"),
            Ok(Some(Command::Trust(bob.clone(), None)))
        );
        let key = PublicKey([5; 32]);
        assert_eq!(
            parse(&format!("trust bob {key}")),
            Ok(Some(Command::Trust(bob, Some(key))))
        );
        assert_eq!(
            parse("msg bob parcel at  the door "),
            Ok(Some(Command::Msg(
                Name::new("bob").expect("name"),
                "parcel at  the door ".into()
            )))
        );
        let names = |list: &[&str]| -> Vec<Name> {
            list.iter().map(|n| Name::new(n).expect("name")).collect()
        };
        assert_eq!(
            parse("conf bob carol  dave bob"),
            Ok(Some(Command::Conf(names(&["bob", "carol", "dave"]))))
        );
        assert_eq!(
            parse("invite erin"),
            Ok(Some(Command::Invite(Name::new("erin").expect("name"))))
        );
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn conference_mistakes_are_explained() {
        assert!(
            parse("conf")
                .expect_err("refused")
                .contains("needs the names")
        );
        assert!(
            parse("conf a b c d e f g h")
                .expect_err("refused")
                .contains("at most 7 names")
        );
        assert!(parse("conf a b c d e f g").is_ok());
        assert!(
            parse("invite")
                .expect_err("refused")
                .contains("needs a name")
        );
        assert!(
            parse("invite bob carol")
                .expect_err("refused")
                .contains("unexpected")
        );
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
            parse("format")
                .expect_err("refused")
                .contains("text or json")
        );
        assert!(
            parse("watch xml")
                .expect_err("refused")
                .contains("expected text or json")
        );
        assert!(
            parse("watch json now")
                .expect_err("refused")
                .contains("unexpected")
        );
        assert!(
            parse("trust")
                .expect_err("refused")
                .contains("needs a name")
        );
        assert!(parse("msg").expect_err("refused").contains("needs a name"));
        assert!(
            parse("msg bob")
                .expect_err("refused")
                .contains("needs a text")
        );
        assert!(
            parse("msg bob ")
                .expect_err("refused")
                .contains("needs a text")
        );
        assert!(
            parse("trust bob notakey")
                .expect_err("refused")
                .contains("44 characters")
        );
        assert!(
            parse(&"x".repeat(2000))
                .expect_err("refused")
                .contains("longer")
        );
    }
}
