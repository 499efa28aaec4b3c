//! PCMU: ITU-T G.711 µ-law, RTP payload type 0.
//!
//! Each 16-bit sample becomes one byte. The encoder works on the top 14 bits of the sample
//! as G.711 specifies (the same arithmetic as the classic Sun/CCITT reference code and
//! Python's `audioop`); the decoder returns the segment's mid-point value. Neither
//! allocates; a frame encodes into a caller-owned buffer.

use crate::{FRAME_SAMPLES, Frame};

/// RTP payload type of PCMU (RFC 3551).
pub const PAYLOAD_TYPE: u8 = 0;

/// Bytes of one encoded frame.
pub const FRAME_BYTES: usize = FRAME_SAMPLES;

/// Upper bounds of the eight segments, on the biased 14-bit magnitude.
const SEGMENT_END: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Largest 14-bit magnitude before the bias is added.
const CLIP: i16 = 8159;
/// Bias added to the 14-bit magnitude (0x84 on the 16-bit scale).
const BIAS_14: i16 = 0x21;
const BIAS_16: i16 = 0x84;

/// Encodes one linear sample to a µ-law byte.
pub const fn encode(sample: i16) -> u8 {
    let mut magnitude = sample >> 2;
    let mask: u8 = if magnitude < 0 {
        magnitude = -magnitude;
        0x7F
    } else {
        0xFF
    };
    if magnitude > CLIP {
        magnitude = CLIP;
    }
    magnitude += BIAS_14;
    let mut segment = 0;
    while segment < 8 && magnitude > SEGMENT_END[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let code = ((segment as u8) << 4) | ((magnitude >> (segment + 1)) as u8 & 0x0F);
    code ^ mask
}

/// Decodes one µ-law byte to a linear sample.
pub const fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

const fn decode_slow(code: u8) -> i16 {
    let code = !code;
    let mut t = (((code & 0x0F) as i16) << 3) + BIAS_16;
    t <<= (code & 0x70) >> 4;
    if code & 0x80 != 0 {
        BIAS_16 - t
    } else {
        t - BIAS_16
    }
}

const DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_slow(i as u8);
        i += 1;
    }
    table
};

/// Encodes a frame into `out`.
pub fn encode_frame(frame: &Frame, out: &mut [u8; FRAME_BYTES]) {
    for (byte, &sample) in out.iter_mut().zip(frame.iter()) {
        *byte = encode(sample);
    }
}

/// Decodes an encoded frame into `out`.
pub fn decode_frame(bytes: &[u8; FRAME_BYTES], out: &mut Frame) {
    for (sample, &byte) in out.iter_mut().zip(bytes.iter()) {
        *sample = decode(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_extremes() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(decode(0xFF), 0);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
    }

    #[test]
    fn decode_then_encode_is_identity_except_negative_zero() {
        for code in 0..=255u8 {
            let back = encode(decode(code));
            // 0x7F is "negative zero": it decodes to 0, which encodes as positive zero.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut previous = decode(encode(i16::MIN));
        for sample in i16::MIN..=i16::MAX {
            let value = decode(encode(sample));
            assert!(value >= previous, "not monotonic at {sample}");
            previous = value;
        }
    }

    #[test]
    fn frame_round_trip_error_is_bounded() {
        let mut frame = [0i16; FRAME_SAMPLES];
        for (i, s) in frame.iter_mut().enumerate() {
            *s = ((i as i32 * 131 % 65536) - 32768) as i16;
        }
        let mut bytes = [0u8; FRAME_BYTES];
        let mut back = [0i16; FRAME_SAMPLES];
        encode_frame(&frame, &mut bytes);
        decode_frame(&bytes, &mut back);
        for (&a, &b) in frame.iter().zip(back.iter()) {
            // Segment 7 is 1024 wide on the 16-bit scale (and clips beyond 32124).
            let error = (i32::from(a) - i32::from(b)).abs();
            assert!(error <= 1024 || a.unsigned_abs() > 32124, "{a} -> {b}");
        }
    }
}
