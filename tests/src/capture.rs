//! What a passive listener learns from the datagrams of a call: whether a tone can be
//! heard in them, whether runs of the bytes a phone sent cross the wire as they are, and
//! which names appear in clear.
//!
//! The listener does not know the format, so it tries every reading a call of today could
//! use ([`Reading`]): signed 16-bit samples in either byte order, starting at either byte
//! of the datagram (so a header of any length leaves one of the two starts on the
//! samples), and G.711 µ-law, one byte per sample. Each reading is searched for the tone
//! in 512-sample windows with the Goertzel filter, whose output is normalized by the
//! window's energy: a window in which one frequency carries most of the energy is a tone,
//! however loud; noise spreads its energy over every frequency and never comes near.
//!
//! These functions make the security claims of an encrypted call testable from outside:
//! run on a plaintext call, each must find what is there (the control); run on an
//! encrypted call, each must find nothing.

use std::collections::HashSet;

use crate::phone_harness::SAMPLE_RATE;

/// Samples in a window searched for a tone: one frame of a call.
pub const WINDOW: usize = 512;

/// Distance between the starts of two windows within a datagram, in samples.
pub const WINDOW_STEP: usize = 64;

/// The share of a window's energy that must lie at the tone's frequency (as
/// [`goertzel`] measures it) for [`has_tone`] to hear it. A pure tone gives about 1,
/// white noise about `2 / WINDOW` (0.004), and the chance that white noise reaches 0.25 in
/// a 512-sample window is about e^-64.
pub const TONE_THRESHOLD: f64 = 0.25;

/// How much of the energy of `samples` lies at `freq` (Hz, at sample rate `rate`): the
/// Goertzel filter's power at that frequency divided by `N/2` times the energy of the
/// samples, where `N` is their number. 1 for a pure sine of that frequency over a whole
/// number of periods (a little off otherwise), `2 / N` on average for white noise, 0 for
/// silence.
pub fn goertzel(samples: &[f64], freq: f64, rate: f64) -> f64 {
    let energy: f64 = samples.iter().map(|x| x * x).sum();
    if samples.is_empty() || energy == 0.0 {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (samples.len() as f64 / 2.0 * energy)
}

/// Whether `samples` (at 8 kHz) carry a tone of `freq` Hz: [`goertzel`] at or above
/// [`TONE_THRESHOLD`].
pub fn has_tone(samples: &[f64], freq: f64) -> bool {
    goertzel(samples, freq, f64::from(SAMPLE_RATE)) >= TONE_THRESHOLD
}

/// One way of reading a datagram's bytes as audio samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Signed 16-bit little-endian samples from byte `offset` on (raw PCM).
    LittleEndian16 {
        /// The first byte of the first sample: 0 or 1.
        offset: usize,
    },
    /// Signed 16-bit big-endian samples from byte `offset` on (RTP L16).
    BigEndian16 {
        /// The first byte of the first sample: 0 or 1.
        offset: usize,
    },
    /// G.711 µ-law, one sample per byte (RTP PCMU).
    MuLaw,
}

impl Reading {
    /// Every reading an eavesdropper tries.
    pub const ALL: [Reading; 5] = [
        Reading::LittleEndian16 { offset: 0 },
        Reading::LittleEndian16 { offset: 1 },
        Reading::BigEndian16 { offset: 0 },
        Reading::BigEndian16 { offset: 1 },
        Reading::MuLaw,
    ];

    /// The samples `bytes` hold when read this way (a trailing odd byte is left out).
    pub fn samples(self, bytes: &[u8]) -> Vec<f64> {
        match self {
            Reading::LittleEndian16 { offset } => bytes
                .get(offset..)
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Reading::BigEndian16 { offset } => bytes
                .get(offset..)
                .unwrap_or_default()
                .chunks_exact(2)
                .map(|b| f64::from(i16::from_be_bytes([b[0], b[1]])))
                .collect(),
            Reading::MuLaw => bytes.iter().map(|&b| f64::from(mu_law(b))).collect(),
        }
    }
}

/// The linear value of a G.711 µ-law code (ITU-T G.711, the decoder's segment mid-points:
/// `0xFF` and `0x7F` are 0, `0x80` is 32124, `0x00` is -32124).
pub fn mu_law(code: u8) -> i16 {
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    // At most (15 << 3 + 0x84) << 7 - 0x84 = 32124: fits.
    let value = if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    };
    value as i16
}

/// Where a tone was heard: the datagram's index in the capture, and how it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// Index of the datagram.
    pub datagram: usize,
    /// The reading that made the tone audible.
    pub reading: Reading,
}

/// The first datagram, with the reading, in which a tone of `freq` Hz is heard: every
/// reading of [`Reading::ALL`] of every datagram, searched in windows of [`WINDOW`]
/// samples starting every [`WINDOW_STEP`] samples, and in the window that ends with the
/// datagram (past any header). Datagrams shorter than a window in a reading are skipped
/// in that reading.
pub fn find_tone(datagrams: &[Vec<u8>], freq: f64) -> Option<Heard> {
    find_tone_read(datagrams, freq, &Reading::ALL)
}

/// [`find_tone`] with only the given readings, tried in their order.
pub fn find_tone_read(datagrams: &[Vec<u8>], freq: f64, readings: &[Reading]) -> Option<Heard> {
    for (index, datagram) in datagrams.iter().enumerate() {
        for &reading in readings {
            let samples = reading.samples(datagram);
            if samples.len() < WINDOW {
                continue;
            }
            let last = samples.len() - WINDOW;
            let starts = (0..=last).step_by(WINDOW_STEP).chain([last]);
            for start in starts {
                if has_tone(&samples[start..start + WINDOW], freq) {
                    return Some(Heard {
                        datagram: index,
                        reading,
                    });
                }
            }
        }
    }
    None
}

/// Whether a tone of `freq` Hz can be heard anywhere in `datagrams` (see [`find_tone`]).
pub fn tone_in_capture(datagrams: &[Vec<u8>], freq: f64) -> bool {
    find_tone(datagrams, freq).is_some()
}

/// How many distinct `run`-byte windows of `sent` appear anywhere in the `captured`
/// datagrams (a window that recurs in `sent` counts once). `sent` is what a phone
/// encoded, e.g. its microphone's samples as big-endian L16, as in RTP payloads. 0 when
/// `run` is 0 or longer than `sent`.
pub fn shared_runs(captured: &[Vec<u8>], sent: &[u8], run: usize) -> usize {
    if run == 0 || sent.len() < run {
        return 0;
    }
    let wanted: HashSet<&[u8]> = sent.windows(run).collect();
    let mut found: HashSet<&[u8]> = HashSet::new();
    for datagram in captured {
        for window in datagram.windows(run) {
            if wanted.contains(window) {
                found.insert(window);
            }
        }
    }
    found.len()
}

/// The bytes that set a word off in Parlo's text lines (signalling, directory JSON,
/// message lines): where a name read on the wire starts and ends.
const DELIMITERS: &[u8] = b" \t\r\n=:,;\"'/";

/// Which of `names` appear in any of the datagrams, in the order of `names`. A name of 8
/// bytes or more counts anywhere, as its UTF-8 bytes; a shorter one only as a word, set
/// off on each side by a delimiter (a space, `=`, `:`, a quote, ...) or the datagram's
/// edge, as a line of Parlo's text protocols writes it and as someone grepping a capture
/// would find it. Bare bytes would not do for short names: a three-letter one stands by
/// chance somewhere in a few hundred kilobytes of ciphertext once in about fifty
/// captures; set off by delimiters, once in tens of thousands.
pub fn names_in_capture(datagrams: &[Vec<u8>], names: &[&str]) -> Vec<String> {
    let is_edge = |byte: Option<&u8>| byte.is_none_or(|b| DELIMITERS.contains(b));
    names
        .iter()
        .filter(|name| {
            let needle = name.as_bytes();
            !needle.is_empty()
                && datagrams.iter().any(|d| {
                    d.windows(needle.len()).enumerate().any(|(at, w)| {
                        w == needle
                            && (needle.len() >= 8
                                || is_edge(at.checked_sub(1).and_then(|i| d.get(i)))
                                    && is_edge(d.get(at + needle.len())))
                    })
                })
        })
        .map(|name| (*name).to_owned())
        .collect()
}

/// `seconds` of a sine of `freq` Hz at `dbfs` (0 is full scale, 32767), 8 kHz, as 16-bit
/// samples: a phone's microphone for the capture tests.
pub fn tone(freq: f64, dbfs: f64, seconds: f64) -> Vec<i16> {
    let amplitude = 32_767.0 * 10f64.powf(dbfs / 20.0);
    let rate = f64::from(SAMPLE_RATE);
    (0..(seconds * rate) as usize)
        .map(|n| {
            let x = amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate).sin();
            x.round().clamp(-32_768.0, 32_767.0) as i16
        })
        .collect()
}

/// Samples as big-endian 16-bit bytes: what an RTP L16 payload carries.
pub fn l16_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Rng;

    const RATE: f64 = SAMPLE_RATE as f64;

    /// White noise of the given RMS, uniform (its variance is width² / 12).
    fn noise(rng: &mut Rng, rms: f64, n: usize) -> Vec<f64> {
        let width = rms * 12f64.sqrt();
        (0..n).map(|_| (rng.unit() - 0.5) * width).collect()
    }

    #[test]
    fn names_are_found_as_words_of_a_line_not_as_bytes_inside_others() {
        let lines =
            |l: &[&str]| -> Vec<Vec<u8>> { l.iter().map(|s| s.as_bytes().to_vec()).collect() };
        let start = lines(&["START alice call=0000002a v=2 codecs=L16"]);
        assert_eq!(names_in_capture(&start, &["alice", "bob"]), ["alice"]);
        let json = lines(&["{\"name\":\"bob\",\"port\":5001}", "MSG 01 bob"]);
        assert_eq!(names_in_capture(&json, &["bob", "MSG"]), ["bob", "MSG"]);
        // Inside other bytes, as ciphertext would hold them by chance: not a name read.
        let inside = vec![
            b"\x93bob\x07".to_vec(),
            b"xalicex".to_vec(),
            b"bobby".to_vec(),
        ];
        assert!(names_in_capture(&inside, &["alice", "bob"]).is_empty());
    }

    fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
        (0..n).map(|_| (rng.unit() * 256.0) as u8).collect()
    }

    /// G.711 µ-law encoding (the classic reference arithmetic), for building PCMU payloads.
    fn mu_law_encode(sample: i16) -> u8 {
        let mut s = i32::from(sample);
        let sign = if s < 0 { 0x80 } else { 0 };
        s = s.abs().min(32_635) + 0x84;
        let exponent = (31 - s.leading_zeros() as i32 - 7).clamp(0, 7);
        let mantissa = (s >> (exponent + 3)) & 0x0F;
        !(sign | (exponent << 4) as u8 | mantissa as u8)
    }

    /// A tone cut into frames, each behind a `header` of pseudo-random bytes, encoded by
    /// `encode`.
    fn packets(
        freq: f64,
        header: usize,
        encode: impl Fn(&[i16]) -> Vec<u8>,
        rng: &mut Rng,
    ) -> Vec<Vec<u8>> {
        tone(freq, -20.0, 1.0)
            .chunks_exact(512)
            .map(|frame| {
                let mut d = random_bytes(rng, header);
                d.extend(encode(frame));
                d
            })
            .collect()
    }

    #[test]
    fn a_minus_20_dbfs_tone_is_heard_in_one_window_and_noise_of_its_energy_is_not() {
        let mut rng = Rng::new(3);
        let rms = 32_767.0 * 10f64.powf(-20.0 / 20.0) / 2f64.sqrt();
        for freq in [300.0, 440.0, 660.0, 1000.0, 3400.0] {
            for phase in 0..8 {
                let start = phase * 37;
                let samples: Vec<f64> = tone(freq, -20.0, 0.2)[start..start + WINDOW]
                    .iter()
                    .map(|&s| f64::from(s))
                    .collect();
                let energy: f64 = samples.iter().map(|x| x * x).sum::<f64>() / WINDOW as f64;
                assert!((energy.sqrt() / rms - 1.0).abs() < 0.05, "{freq} Hz");
                assert!(has_tone(&samples, freq), "{freq} Hz, start {start}");
                let power = goertzel(&samples, freq, RATE);
                assert!(power > 0.9, "{freq} Hz: {power}");
                // Selective: another frequency of a call's band is not this one.
                let other = if freq > 1000.0 { 700.0 } else { freq + 220.0 };
                assert!(!has_tone(&samples, other), "{freq} Hz heard as {other}");
            }
        }
        let mut loudest: f64 = 0.0;
        for _ in 0..2_000 {
            let samples = noise(&mut rng, rms, WINDOW);
            for freq in [440.0, 660.0] {
                loudest = loudest.max(goertzel(&samples, freq, RATE));
                assert!(!has_tone(&samples, freq));
            }
        }
        assert!(loudest < 0.05, "noise reached {loudest}");
        assert_eq!(goertzel(&[0.0; WINDOW], 440.0, RATE), 0.0);
        assert_eq!(goertzel(&[], 440.0, RATE), 0.0);
    }

    #[test]
    fn mu_law_decodes_the_g711_table() {
        assert_eq!(mu_law(0xFF), 0);
        assert_eq!(mu_law(0x7F), 0);
        assert_eq!(mu_law(0x80), 32_124);
        assert_eq!(mu_law(0x00), -32_124);
        assert_eq!(mu_law(0xFE), 8);
        assert_eq!(mu_law(0xEF), 132);
        // Every code decodes, and encoding its value gives it back (0x7F is -0 = +0).
        for code in 0..=255u8 {
            let value = mu_law(code);
            let again = mu_law_encode(value);
            assert!(
                again == code || (code == 0x7F && again == 0xFF),
                "{code:#04x}"
            );
        }
    }

    #[test]
    fn a_tone_is_found_in_rtp_l16_rtp_pcmu_and_raw_pcm() {
        let mut rng = Rng::new(8);
        let l16 = packets(440.0, 12, l16_bytes, &mut rng);
        let pcmu = packets(
            440.0,
            12,
            |f| f.iter().map(|&s| mu_law_encode(s)).collect(),
            &mut rng,
        );
        let raw = packets(
            440.0,
            0,
            |f| f.iter().flat_map(|s| s.to_le_bytes()).collect(),
            &mut rng,
        );
        for (what, datagrams, reading) in [
            ("RTP L16", &l16, Reading::BigEndian16 { offset: 0 }),
            ("RTP PCMU", &pcmu, Reading::MuLaw),
            ("raw PCM", &raw, Reading::LittleEndian16 { offset: 0 }),
        ] {
            // The format's own reading hears it in every datagram, and it alone suffices.
            for (k, datagram) in datagrams.iter().enumerate() {
                assert_eq!(
                    find_tone_read(std::slice::from_ref(datagram), 440.0, &[reading]),
                    Some(Heard {
                        datagram: 0,
                        reading
                    }),
                    "{what}, datagram {k}"
                );
            }
            assert!(tone_in_capture(&datagrams[5..6], 440.0), "{what}");
            assert!(!tone_in_capture(datagrams, 660.0), "{what}");
        }
        // Whatever the length of a header in front of L16 or raw PCM, one of the readings
        // lands on the samples.
        for header in 0..=17 {
            let be = packets(660.0, header, l16_bytes, &mut rng);
            let le = packets(
                660.0,
                header,
                |f| f.iter().flat_map(|s| s.to_le_bytes()).collect(),
                &mut rng,
            );
            for (what, datagrams) in [("L16", be), ("raw", le)] {
                assert!(
                    tone_in_capture(&datagrams, 660.0),
                    "{what}, header {header}"
                );
                assert!(
                    !tone_in_capture(&datagrams, 440.0),
                    "{what}, header {header}"
                );
            }
        }
    }

    #[test]
    fn uniformly_random_bytes_read_every_way_hold_no_tone() {
        let mut rng = Rng::new(21);
        // Datagrams of the sizes of encrypted frames and of plaintext ones.
        let datagrams: Vec<Vec<u8>> = [549, 1061, 1036, 524, 1024]
            .iter()
            .cycle()
            .take(40)
            .map(|&n| random_bytes(&mut rng, n))
            .collect();
        for freq in (300..=3400).step_by(100) {
            assert_eq!(find_tone(&datagrams, f64::from(freq)), None, "{freq} Hz");
        }
        // Nor do short ones (signalling), which fill no window.
        assert!(!tone_in_capture(&[b"START alice".to_vec()], 440.0));
    }

    #[test]
    fn shared_runs_counts_the_sent_windows_found_in_the_capture() {
        let mut rng = Rng::new(4);
        // A signal in which no 16 bytes repeat.
        let sent = l16_bytes(&crate::phone_harness::speechlike(4_000, 1));
        // One frame of it behind a header, the rest of the capture random.
        let mut packet = random_bytes(&mut rng, 12);
        packet.extend_from_slice(&sent[2048..2048 + 1024]);
        let capture = vec![random_bytes(&mut rng, 1036), packet];
        // Every 16-byte window of the frame.
        assert_eq!(shared_runs(&capture, &sent, 16), 1024 - 16 + 1);
        assert_eq!(shared_runs(&capture[..1], &sent, 16), 0);
        assert_eq!(shared_runs(&capture, &sent, 0), 0);
        assert_eq!(shared_runs(&capture, &sent[..8], 16), 0);
        let distinct = shared_runs(&[vec![7; 100]], &[7; 40], 16);
        assert_eq!(distinct, 1, "a window that recurs counts once");
    }

    #[test]
    fn names_are_found_as_bytes() {
        let capture = vec![
            b"START alice call=0000002a v=2".to_vec(),
            "START café".as_bytes().to_vec(),
            vec![0x80, 0, 1, 2],
        ];
        assert_eq!(
            names_in_capture(&capture, &["alice", "bob", "café", ""]),
            vec!["alice".to_owned(), "café".to_owned()]
        );
        assert!(names_in_capture(&[], &["alice"]).is_empty());
    }
}
