//! Media datagrams: classification and parsing never panic on any bytes, in any call
//! dialect, and whatever parses is emitted back to an equivalent packet.
//!
//! The first input byte chooses the dialect of the call in progress; the rest is the
//! datagram.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parlo_net::media::{
    Datagram, FRAME_SAMPLES, MAX_RTP_LEN, PayloadType, RAW_PCM_LEN, RawPcm, RtpPacket, RtpRepr,
    classify,
};
use parlo_net::peer::Dialect;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let call = match selector % 3 {
        0 => None,
        1 => Some(Dialect::Original),
        _ => Some(Dialect::Parlo),
    };

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
                repr.read_l16(&mut frame).expect("an L16 packet has an L16 payload");
                let mut again = [0u8; MAX_RTP_LEN];
                let again_len = repr.header.emit_l16(&frame, &mut again).expect("large enough");
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
});
