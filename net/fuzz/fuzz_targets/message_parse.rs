//! Message sessions: `message::parse` on any bytes never panics; whatever it accepts is a
//! session line by `is_session_line`, is emitted within `MAX_LINE` bytes and parses back to
//! the same line, byte for byte but the case of an id (or a ROSTER's key); and no
//! bytes are both a valid call signalling line and a session line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parlo_fsm::messages::{Line, MAX_TEXT};
use parlo_net::message::{self, MAX_LINE, SessionLine};
use parlo_net::peer::{Message, Wire};

fuzz_target!(|data: &[u8]| {
    if Message::parse(data).is_ok() {
        assert!(
            !message::is_session_line(data),
            "a signalling line sorted as a session line"
        );
    }

    let line = match message::parse(data) {
        Ok(line) => line,
        Err(error) => {
            // Rendering the error must not panic either.
            let _ = error.to_string();
            return;
        }
    };
    assert!(
        message::is_session_line(data),
        "an accepted line not sorted as one"
    );
    let mut buf = [0u8; MAX_LINE];
    let len = match &line {
        SessionLine::Hello(name) => {
            let len = message::emit_hello(name, &mut buf).expect("MAX_LINE holds a HELLO");
            assert_eq!(&buf[..len], data, "HELLO is read only in its one form");
            len
        }
        SessionLine::Message(Line::Oversize { .. }) => {
            assert!(
                data.len() > MAX_LINE,
                "only a text over {MAX_TEXT} bytes is oversize"
            );
            return;
        }
        SessionLine::Roster(_) | SessionLine::Links { .. } => {
            let len = message::emit_session_line(&line, &mut buf).expect("MAX_LINE holds any line");
            // Ids and keys may differ in case; names, which may hold any letters, may not.
            assert_eq!(data.len(), len);
            assert!(data.eq_ignore_ascii_case(&buf[..len]));
            len
        }
        SessionLine::Message(inner) => {
            let len = message::emit_line(inner, &mut buf).expect("MAX_LINE holds any line");
            // The keyword and id (20 bytes) may differ in the id's case, nothing else.
            assert_eq!(data.len(), len);
            assert!(data[..20].eq_ignore_ascii_case(&buf[..20]));
            assert_eq!(&data[20..], &buf[20..len]);
            len
        }
    };
    let again = message::parse(&buf[..len]).expect("an emitted line parses");
    assert_eq!(again, line);
});
