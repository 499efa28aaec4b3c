//! One name rule: the directory's request parser, the peer protocol's parser and the
//! phone's command parser give the same verdict on every name of one table.

use parlo_client::command::{self, Command};
use parlo_fsm::Name;
use parlo_net::directory::Request;
use parlo_net::peer::{Message, Wire};

/// Names and whether they are valid.
fn table() -> Vec<(String, bool)> {
    let good = [
        "alice",
        "a",
        "Zoë",
        "名前",
        "o'brien",
        "x-y_z.1",
        "bob\"quote",
        "back\\slash",
        "\u{1F600}",
        "door:front",
    ];
    let bad = [
        "",
        "al ice",
        "al\tice",
        "bob\n",
        "bob\r",
        "bob\0",
        "bob\u{7}",      // BEL
        "bob\u{1b}[31m", // ESC: a terminal escape sequence
        "bob\u{7f}",     // DEL
        "bob\u{85}",     // NEL (C1 control, and whitespace)
        "bob\u{9b}31m",  // CSI (C1 control)
        "bob\u{a0}",     // no-break space
        "bob\u{3000}",   // ideographic space
        "bob\u{ad}",     // soft hyphen
        "bob\u{061C}",   // Arabic letter mark
        "bob\u{180e}",   // Mongolian vowel separator
        "\u{200b}bob",   // zero-width space
        "bob\u{200d}",   // zero-width joiner
        "bob\u{202e}",   // right-to-left override
        "bob\u{2066}",   // left-to-right isolate
        "\u{feff}bob",   // byte-order mark
        "bob\u{fffa}",   // interlinear annotation separator
        "bob\u{E0001}",  // language tag
        "bob\u{E0062}",  // tag letter b
        "bob\u{E007F}",  // cancel tag
        "a=b",
        "verified=yes",
        "=",
    ];
    let mut table: Vec<(String, bool)> = good.iter().map(|n| (n.to_string(), true)).collect();
    table.extend(bad.iter().map(|n| (n.to_string(), false)));
    table.push(("n".repeat(32), true));
    table.push(("é".repeat(16), true));
    table.push(("n".repeat(33), false));
    table.push(("é".repeat(17), false));
    table
}

/// `name` as a JSON string body: every character that is not plain printable ASCII as
/// `\uXXXX` (surrogate pairs beyond the basic plane), so that the request itself is valid
/// JSON whatever the name holds.
fn json_escaped(name: &str) -> String {
    let mut out = String::new();
    for ch in name.chars() {
        if (' '..='~').contains(&ch) && ch != '"' && ch != '\\' {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn directory_accepts(name: &str) -> bool {
    let request = format!(
        r#"{{"command":"REG","name":"{}","port":5001}}"#,
        json_escaped(name)
    );
    match Request::parse(request.as_bytes()) {
        Ok(Request::Reg { name: got, .. }) => got.as_str() == name,
        Ok(other) => panic!("REG parsed as {other:?}"),
        Err(_) => false,
    }
}

fn peer_accepts(name: &str) -> bool {
    let line = format!("START {name} call=0000002a v=2 codecs=L16");
    match Message::parse(line.as_bytes()) {
        Ok(Message::Start { caller, .. }) => caller.as_str() == name,
        Ok(other) => panic!("START parsed as {other:?}"),
        Err(_) => false,
    }
}

fn command_accepts(name: &str) -> bool {
    match command::parse(&format!("call {name}")) {
        Ok(Some(Command::Call(got))) => got.as_str() == name,
        Ok(other) => panic!("call parsed as {other:?}"),
        Err(_) => false,
    }
}

#[test]
fn the_directory_the_peer_protocol_and_the_commands_agree_on_every_name() {
    let mut disagreements = Vec::new();
    for (name, valid) in table() {
        let verdicts = [
            ("rule", Name::new(&name).is_ok()),
            ("directory", directory_accepts(&name)),
            ("peer", peer_accepts(&name)),
            ("command", command_accepts(&name)),
        ];
        for (who, verdict) in verdicts {
            if verdict != valid {
                disagreements.push(format!(
                    "{name:?}: {who} {} it",
                    if verdict { "accepts" } else { "refuses" }
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "verdicts differ from the table:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn the_table_has_both_verdicts() {
    // A table of only good or only bad names could not catch a parser that says yes (or
    // no) to everything.
    let table = table();
    assert!(table.iter().any(|(_, valid)| *valid));
    assert!(table.iter().any(|(_, valid)| !*valid));
}
