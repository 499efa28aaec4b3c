//! Mechanical conversions between parlo-net's wire types and parlo-fsm's machine types.
//!
//! The machine carries only what it decides on (kind, call id, caller); the codec carries
//! what the wire has (versions, codec offers). Nothing here decides anything: a START this
//! phone sends offers the one codec it sends (L16), an ACCEPT names none.

use parlo_fsm as fsm;
use parlo_net::peer::{self, Codec, CodecSet};

/// A wire name as the machine's name (both hold at most 32 bytes).
pub fn name_to_fsm(name: &peer::Name) -> Option<fsm::Name> {
    fsm::Name::new(name.as_str())
}

/// A machine name as a wire name (`None` if it breaks the wire's rules, which a name
/// that came from the wire or the command line never does).
pub fn name_to_net(name: &fsm::Name) -> Option<peer::Name> {
    peer::Name::new(name.as_str()).ok()
}

fn id_to_fsm(id: peer::CallId) -> fsm::CallId {
    fsm::CallId(id.get())
}

fn id_to_net(id: fsm::CallId) -> peer::CallId {
    peer::CallId::new(id.0)
}

/// A received message as the machine's; `None` for a caller name the machine cannot hold.
pub fn message_to_fsm(message: &peer::Message) -> Option<fsm::Message> {
    let call = message.call_id().map(id_to_fsm);
    let kind = match message {
        peer::Message::Start { caller, .. } => fsm::Kind::Start {
            caller: name_to_fsm(caller)?,
        },
        peer::Message::Ringing { .. } => fsm::Kind::Ringing,
        peer::Message::Accept { .. } => fsm::Kind::Accept,
        peer::Message::Reject { .. } => fsm::Kind::Reject,
        peer::Message::Busy { .. } => fsm::Kind::Busy,
        peer::Message::Close { .. } => fsm::Kind::Close,
        peer::Message::Closed { .. } => fsm::Kind::Closed,
        peer::Message::Ack { .. } => fsm::Kind::Ack,
    };
    Some(fsm::Message { kind, call })
}

/// A message the machine asks to send, as the wire's; `None` when the wire cannot carry
/// it (an acknowledgement without call id, which the machine never asks for).
pub fn message_to_net(message: &fsm::Message) -> Option<peer::Message> {
    let call = message.call.map(id_to_net);
    Some(match &message.kind {
        fsm::Kind::Start { caller } => {
            let caller = name_to_net(caller)?;
            match call {
                Some(id) => peer::Message::start(caller, id, CodecSet::only(Codec::L16)),
                None => peer::Message::start_original(caller),
            }
        }
        fsm::Kind::Ringing => peer::Message::Ringing { call: call? },
        fsm::Kind::Accept => peer::Message::Accept { call, codec: None },
        fsm::Kind::Reject => peer::Message::Reject { call },
        fsm::Kind::Busy => peer::Message::Busy { call },
        fsm::Kind::Close => peer::Message::Close { call },
        fsm::Kind::Closed => peer::Message::Closed { call: call? },
        fsm::Kind::Ack => peer::Message::Ack { call: call? },
    })
}

/// The machine's dialect as the media demultiplexer's.
pub fn dialect_to_net(dialect: fsm::Dialect) -> peer::Dialect {
    match dialect {
        fsm::Dialect::Parlo => peer::Dialect::Parlo,
        fsm::Dialect::Original => peer::Dialect::Original,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> peer::Message {
        peer::Message::parse(text.as_bytes()).expect("valid fixture")
    }

    #[test]
    fn every_message_round_trips_through_the_machine_types() {
        for text in [
            "START alice",
            "RINGING call=0000002a",
            "ACCEPT call=0000002a",
            "ACCEPT",
            "REJECT call=0000002a",
            "REJECT",
            "BUSY call=0000002a",
            "BUSY",
            "CLOSE call=0000002a",
            "CLOSE",
            "CLOSED call=0000002a",
            "ACK call=0000002a",
        ] {
            let fsm = message_to_fsm(&wire(text)).expect("converts");
            let back = message_to_net(&fsm).expect("converts back");
            assert_eq!(back.to_string(), text);
            // The machine's own rendering agrees with the wire.
            assert_eq!(fsm.to_string(), text);
        }
    }

    #[test]
    fn parlo_start_offers_l16_and_keeps_the_call_id() {
        let fsm = message_to_fsm(&wire("START alice call=0000002a v=2 codecs=L16,PCMU"))
            .expect("converts");
        assert_eq!(fsm.call, Some(fsm::CallId(0x2a)));
        assert_eq!(fsm.to_string(), "START alice call=0000002a v=2");
        let back = message_to_net(&fsm).expect("converts back");
        assert_eq!(back.to_string(), "START alice call=0000002a v=2 codecs=L16");
    }

    #[test]
    fn acknowledgements_need_a_call_id() {
        let closed = fsm::Message {
            kind: fsm::Kind::Closed,
            call: None,
        };
        assert_eq!(message_to_net(&closed), None);
    }
}
