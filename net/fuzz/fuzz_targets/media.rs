//! Media datagrams: classification and parsing never panic on any bytes, in any call
//! dialect, and whatever parses is emitted back to an equivalent packet.
//!
//! The first input byte is a selector: its value modulo 3 chooses the dialect of the call in
//! progress (none, original, Parlo). When its top bit is set, the rest of the input is not
//! used as is but shaped into a well-formed minimal RTP packet (header from the input,
//! version 2, payload type L16 or PCMU, payload cycled from the input to exactly one frame)
//! which must parse and be emitted back byte for byte: random bytes almost never have the
//! exact length of a frame, and this keeps the valid path fuzzed without a seed corpus.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parlo_net::media::{
    Datagram, FRAME_SAMPLES, MAX_RTP_LEN, PayloadType, RAW_PCM_LEN, RTP_HEADER_LEN, RawPcm,
    RtpPacket, RtpRepr, classify,
};
use parlo_net::peer::Dialect;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let call = match selector % 3 {
        0 => None,
        1 => Some(Dialect::Original),
        _ => Some(Dialect::Parlo),
    };
    if selector & 0x80 != 0 {
        check_shaped_rtp(rest, call);
    } else {
        check_datagram(rest, call);
    }
});

fn check_datagram(datagram: &[u8], call: Option<Dialect>) {
    if let Ok(view) = RtpPacket::new_checked(datagram) {
        assert!(view.header_len() <= datagram.len());
        assert!(view.payload().len() <= datagram.len());
        let _ = (view.csrc(15), view.extension_data(), view.extension_profile());
    }

    let parsed = Datagram::parse(datagram, call);
    if classify(datagram, call).is_err() {
        assert!(parsed.is_err());
    }
    match parsed {
        Err(error) => {
            let _ = error.to_string();
        }
        Ok(Datagram::Signalling(_)) => {
            assert!(matches!(datagram.first(), Some(b'A'..=b'Z')));
        }
        Ok(Datagram::Rtp(repr)) => {
            let mut buf = [0u8; MAX_RTP_LEN];
            let len = repr.emit(&mut buf).expect("MAX_RTP_LEN holds any packet");
            assert_eq!(RtpRepr::parse(&buf[..len]), Ok(repr));
            if repr.header.payload_type == PayloadType::L16 {
                let mut frame = [0i16; FRAME_SAMPLES];
                repr.read_l16(&mut frame)
                    .expect("an L16 packet has an L16 payload");
                let mut again = [0u8; MAX_RTP_LEN];
                let again_len = repr
                    .header
                    .emit_l16(&frame, &mut again)
                    .expect("large enough");
                assert_eq!(&again[..again_len], &buf[..len]);
            }
        }
        Ok(Datagram::RawPcm(raw)) => {
            assert_eq!(datagram.len(), RAW_PCM_LEN);
            let mut frame = [0i16; FRAME_SAMPLES];
            raw.read_frame(&mut frame);
            let mut buf = [0u8; RAW_PCM_LEN];
            RawPcm::emit_frame(&frame, &mut buf).expect("large enough");
            assert_eq!(&buf, raw.as_bytes());
        }
    }
}

fn check_shaped_rtp(input: &[u8], call: Option<Dialect>) {
    let mut header = [0u8; RTP_HEADER_LEN];
    for (byte, source) in header.iter_mut().zip(input) {
        *byte = *source;
    }
    header[0] = 0x80;
    let payload_type = if header[1] & 1 == 0 {
        PayloadType::L16
    } else {
        PayloadType::Pcmu
    };
    header[1] = (header[1] & 0x80) | payload_type.number();
    let len = RTP_HEADER_LEN + payload_type.payload_len();
    let mut packet = [0u8; MAX_RTP_LEN];
    packet[..RTP_HEADER_LEN].copy_from_slice(&header);
    let body = input.get(RTP_HEADER_LEN..).unwrap_or_default();
    if !body.is_empty() {
        for (byte, source) in packet[RTP_HEADER_LEN..len].iter_mut().zip(body.iter().cycle()) {
            *byte = *source;
        }
    }
    let packet = &packet[..len];

    let repr = RtpRepr::parse(packet).expect("a well-formed minimal packet parses");
    let mut buf = [0u8; MAX_RTP_LEN];
    let emitted = repr.emit(&mut buf).expect("MAX_RTP_LEN holds any packet");
    assert_eq!(&buf[..emitted], packet, "a minimal packet is emitted byte for byte");
    // Neither raw PCM nor signalling by length or first byte, in any dialect.
    assert!(matches!(
        Datagram::parse(packet, call),
        Ok(Datagram::Rtp(parsed)) if parsed == repr
    ));
    check_datagram(packet, call);
}
