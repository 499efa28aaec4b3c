//! Mechanical conversions between parlo-net's wire types and parlo-fsm's machine types.
//!
//! The machine carries what it decides on (kind, call id, caller, codec offer and choice);
//! the wire carries a little more (the protocol version). Nothing here decides anything.

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

/// A wire codec as the machine's.
pub fn codec_to_fsm(codec: Codec) -> fsm::Codec {
    match codec {
        Codec::L16 => fsm::Codec::L16,
        Codec::Pcmu => fsm::Codec::Pcmu,
    }
}

/// A machine codec as the wire's.
pub fn codec_to_net(codec: fsm::Codec) -> Codec {
    match codec {
        fsm::Codec::L16 => Codec::L16,
        fsm::Codec::Pcmu => Codec::Pcmu,
    }
}

fn set_to_fsm(set: CodecSet) -> fsm::CodecSet {
    set.iter().map(codec_to_fsm).collect()
}

fn set_to_net(set: fsm::CodecSet) -> CodecSet {
    set.iter().map(codec_to_net).collect()
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
        peer::Message::Start { caller, codecs, .. } => fsm::Kind::Start {
            caller: name_to_fsm(caller)?,
            codecs: codecs.map(set_to_fsm),
        },
        peer::Message::Ringing { .. } => fsm::Kind::Ringing,
        peer::Message::Accept { codec, .. } => fsm::Kind::Accept {
            codec: codec.map(codec_to_fsm),
        },
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
        fsm::Kind::Start { caller, codecs } => {
            let caller = name_to_net(caller)?;
            match call {
                Some(id) => peer::Message::Start {
                    caller,
                    call: Some(id),
                    version: Some(peer::VERSION),
                    codecs: codecs.map(set_to_net),
                },
                None => peer::Message::start_original(caller),
            }
        }
        fsm::Kind::Ringing => peer::Message::Ringing { call: call? },
        fsm::Kind::Accept { codec } => peer::Message::Accept {
            call,
            codec: codec.map(codec_to_net),
        },
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
            "START alice call=0000002a v=2 codecs=L16,PCMU",
            "START alice call=0000002a v=2 codecs=PCMU",
            "START alice call=0000002a v=2 codecs=",
            "START alice call=0000002a v=2",
            "RINGING call=0000002a",
            "ACCEPT call=0000002a codec=PCMU",
            "ACCEPT call=0000002a codec=L16",
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
    fn an_offer_is_a_set_and_unknown_codecs_are_dropped() {
        let fsm = message_to_fsm(&wire("START alice call=0000002a v=2 codecs=OPUS,PCMU,L16"))
            .expect("converts");
        assert_eq!(fsm.call, Some(fsm::CallId(0x2a)));
        assert_eq!(
            fsm.to_string(),
            "START alice call=0000002a v=2 codecs=L16,PCMU"
        );
        let back = message_to_net(&fsm).expect("converts back");
        assert_eq!(back.to_string(), fsm.to_string());
    }

    #[test]
    fn codecs_convert_both_ways() {
        for codec in Codec::ALL {
            assert_eq!(codec_to_net(codec_to_fsm(codec)), codec);
            assert_eq!(codec_to_fsm(codec).name(), codec.name());
        }
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
