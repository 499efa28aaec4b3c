//! Peer signalling: `Message::parse` on any bytes never panics, and whatever it accepts is
//! emitted within `MAX_MESSAGE_LEN` bytes and parses back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parlo_net::peer::{Dialect, MAX_MESSAGE_LEN, MAX_NAME_LEN, Message, Name, Wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = Name::from_bytes(data) {
        assert!(!name.as_str().is_empty() && name.as_str().len() <= MAX_NAME_LEN);
        assert_eq!(Name::new(name.as_str()).as_ref(), Ok(&name));
    }

    let message = match Message::parse(data) {
        Ok(message) => message,
        Err(error) => {
            // Rendering the error must not panic either.
            let _ = error.to_string();
            return;
        }
    };
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let len = message.emit(&mut buf).expect("MAX_MESSAGE_LEN holds any message");
    assert_eq!(len, message.buffer_len());
    let line = &buf[..len];
    let again = Message::parse(line).expect("an emitted message parses");
    assert_eq!(again, message);
    let mut second = [0u8; MAX_MESSAGE_LEN];
    let second_len = again.emit(&mut second).expect("MAX_MESSAGE_LEN holds any message");
    assert_eq!(&second[..second_len], line, "emit is canonical");
    assert_eq!(
        message.is_original(),
        message.dialect() == Dialect::Original
    );
    if message.is_original() {
        assert!(message.call_id().is_none());
    }
});
