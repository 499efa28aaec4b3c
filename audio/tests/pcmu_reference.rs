//! PCMU against reference vectors generated independently by Python's `audioop`
//! (`tests/data/gen_pcmu.py`): every one of the 65,536 inputs and all 256 codes.

use parlo_audio::pcmu;

const ENCODE: &[u8] = include_bytes!("data/pcmu_encode.bin");
const DECODE: &[u8] = include_bytes!("data/pcmu_decode.bin");

#[test]
fn encode_matches_reference_for_every_input() {
    assert_eq!(ENCODE.len(), 65_536);
    let mut mismatches = Vec::new();
    for (i, &expected) in ENCODE.iter().enumerate() {
        let sample = (i as i32 - 32_768) as i16;
        let got = pcmu::encode(sample);
        if got != expected {
            mismatches.push((sample, got, expected));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

#[test]
fn decode_matches_reference_for_every_code() {
    assert_eq!(DECODE.len(), 512);
    for code in 0..=255u8 {
        let i = usize::from(code) * 2;
        let expected = i16::from_le_bytes([DECODE[i], DECODE[i + 1]]);
        assert_eq!(pcmu::decode(code), expected, "code {code:#04x}");
    }
}

#[test]
fn frame_functions_agree_with_the_reference() {
    let mut frame = [0i16; parlo_audio::FRAME_SAMPLES];
    let mut bytes = [0u8; pcmu::FRAME_BYTES];
    // Walk all inputs a frame at a time.
    for start in (0..65_536usize).step_by(parlo_audio::FRAME_SAMPLES) {
        for (j, s) in frame.iter_mut().enumerate() {
            *s = ((start + j) as i32 - 32_768) as i16;
        }
        pcmu::encode_frame(&frame, &mut bytes);
        assert_eq!(
            &bytes[..],
            &ENCODE[start..start + parlo_audio::FRAME_SAMPLES]
        );
        let mut decoded = [0i16; parlo_audio::FRAME_SAMPLES];
        pcmu::decode_frame(&bytes, &mut decoded);
        for (k, &b) in bytes.iter().enumerate() {
            assert_eq!(decoded[k], pcmu::decode(b));
        }
    }
}
