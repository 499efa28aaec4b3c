//! Fuzzes the phone's directory client with a hostile server: arbitrary bytes, delivered
//! in arbitrary read sizes, as the answers to a phone that keeps asking (lookups and
//! lists), with time moving on between reads so that every timer fires too.
//!
//! Checked besides "never panics": the bytes waiting to be written stay within the
//! unsent limit, a list never holds more than the limit's names, a connection is asked
//! for only when none is open, and no text an event carries holds a control character
//! (everything the server says is escaped before the phone prints it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use parlo_net::directory::client::{
    Answer, Client, Event, LIST_MAX_NAMES, Link, Query, UNSENT_LIMIT,
};
use parlo_net::directory::{MAX_ENCODED_REQUEST, Name};
use parlo_fsm::Instant;

fn check(event: &Event<u32>) {
    let text = match event {
        Event::Lost { reason, .. } => reason.to_string(),
        Event::Answer { result: Err(failure), .. } => failure.to_string(),
        Event::Answer {
            result: Ok(Answer::Users { names, .. }),
            ..
        } => {
            assert!(names.len() <= LIST_MAX_NAMES);
            String::new()
        }
        Event::Disconnected(Err(failure)) => failure.to_string(),
        _ => String::new(),
    };
    assert!(!text.chars().any(parlo_fsm::is_escaped), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so splits land everywhere.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64).max(1);
    let Ok(alice) = Name::new("alice") else {
        return;
    };
    let mut client = Client::<u32>::new(alice.clone(), 5001, 7, Instant(0));
    let mut now = 0u64;
    let mut open = false;
    let mut tag = 0u32;
    for bytes in data.chunks(chunk) {
        client.handle_timeout(Instant(now));
        while let Some(link) = client.poll_link() {
            match link {
                Link::Connect => {
                    assert!(!open, "a second connection while one is open");
                    client.handle_connecting(Instant(now));
                    client.handle_connected(Instant(now));
                    open = true;
                }
                Link::Close => open = false,
            }
        }
        if let Some(waiting) = client.poll_transmit() {
            assert!(waiting.len() <= UNSENT_LIMIT + MAX_ENCODED_REQUEST);
            // The socket takes half of it.
            client.handle_written(waiting.len() / 2);
        }
        tag = tag.wrapping_add(1);
        let query = if bytes[0] & 1 == 0 {
            Query::List
        } else {
            Query::Lookup(alice.clone())
        };
        client.handle_query(Instant(now), query, tag);
        client.handle_received(Instant(now), bytes);
        while let Some(event) = client.poll_event() {
            check(&event);
        }
        // Time moves on by up to 16 s a read: answer timeouts, PINGs and retries fire.
        now += u64::from(bytes[bytes.len() - 1]) * 64;
    }
});
