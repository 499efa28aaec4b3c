//! Media packets: RTP (RFC 3550) carrying 512-sample frames, the original project's raw PCM
//! datagrams, and the first-byte demultiplexing of everything that arrives on the peer
//! socket.
//!
//! # Frames
//!
//! Audio travels in frames of [`FRAME_SAMPLES`] (512) signed 16-bit mono samples at
//! [`SAMPLE_RATE`] (8 kHz): 64 ms each, the original's `pyaudio` chunk.
//!
//! # RTP
//!
//! Parlo's media packets are RTP version 2 with a 12-byte header and one frame of payload:
//!
//! | payload type | codec | payload |
//! | --- | --- | --- |
//! | 96 (dynamic, [`PayloadType::L16`]) | L16 mono 8 kHz, network byte order | 1024 bytes |
//! | 0 (static, [`PayloadType::Pcmu`]) | G.711 µ-law 8 kHz | 512 bytes |
//!
//! L16 has no static payload type at 8 kHz (static 10 and 11 are 44.1 kHz stereo and mono),
//! so Parlo uses the first dynamic one, 96, for it; without SDP both ends simply agree on
//! that number. The timestamp advances by 512 per frame, the sequence number by one, both
//! wrapping.
//!
//! [`RtpPacket`] is a zero-copy view that checks a buffer against RFC 3550: version 2, the
//! CSRC list, the header extension and the padding all within the datagram.
//! [`RtpRepr`] is what Parlo accepts on top of that: a payload type it knows and exactly
//! one frame of payload. [`RtpRepr::emit`] writes the minimal header (no padding, no
//! extension, no CSRC). This module converts L16 payloads to and from samples; the µ-law
//! conversion belongs with the audio code.
//!
//! # The original's raw PCM
//!
//! A peer of the original project sends each frame as a bare datagram of exactly
//! [`RAW_PCM_LEN`] (1024) bytes: 512 samples, little-endian, no header ([`RawPcm`]).
//!
//! # Demultiplexing
//!
//! Signalling and media share one UDP socket. [`classify`] sorts a datagram by its first
//! byte — `0x80..=0xBF` is RTP (version 2 in the top bits), `b'A'..=b'Z'` is a signalling
//! keyword — except in a call with an original peer: there a raw PCM datagram may start
//! with any byte, `A`..`Z` and `0x80`.. included, so every 1024-byte datagram from that
//! peer is media, whatever its first byte. This is unambiguous because no signalling line
//! can be that long ([`MAX_LINE_LEN`](crate::peer::MAX_LINE_LEN) is 512) and the original
//! sends no RTP. Outside such a call a 1024-byte datagram that is neither RTP nor
//! signalling by its first byte is still recognised as raw PCM (stray audio from an
//! original peer, counted by the caller rather than treated as garbage); one that starts
//! with `A`..`Z` or `0x80`.. is sorted by that byte and then fails to parse, which the
//! caller counts too.
//!
//! Parsing and emitting never allocate and never panic, whatever the input.

use core::fmt;

use crate::peer::{self, Codec, Dialect, Message, Wire};

pub use parlo_fsm::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Length of an RTP header without CSRC list or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// The RTP version Parlo speaks.
pub const RTP_VERSION: u8 = 2;

/// Length of an L16 payload: one frame, two bytes a sample.
pub const L16_PAYLOAD_LEN: usize = 2 * FRAME_SAMPLES;

/// Length of a PCMU payload: one frame, one byte a sample.
pub const PCMU_PAYLOAD_LEN: usize = FRAME_SAMPLES;

/// Longest packet [`RtpRepr::emit`] writes (L16): a buffer of this size always suffices.
pub const MAX_RTP_LEN: usize = RTP_HEADER_LEN + L16_PAYLOAD_LEN;

/// Length of the original's raw PCM datagram.
pub const RAW_PCM_LEN: usize = 2 * FRAME_SAMPLES;

/// What went wrong while classifying, parsing or emitting a media datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The datagram is empty.
    Empty,
    /// The datagram is neither RTP, nor signalling, nor the original's raw PCM.
    Unrecognised {
        /// Its first byte.
        first_byte: u8,
        /// Its length, in bytes.
        len: usize,
    },
    /// The datagram is shorter than the RTP header it announces (fixed part, CSRC list
    /// and extension).
    RtpTruncated {
        /// Bytes the header needs.
        needed: usize,
        /// Length of the datagram.
        len: usize,
    },
    /// The RTP version is not 2.
    RtpVersion {
        /// The version found.
        version: u8,
    },
    /// The RTP padding count is zero or larger than what follows the header.
    RtpPadding {
        /// The padding count (last byte of the datagram).
        padding: u8,
        /// Bytes after the header, padding included.
        available: usize,
    },
    /// The RTP payload type is not one Parlo knows.
    UnknownPayloadType {
        /// The payload type found.
        payload_type: u8,
    },
    /// The payload is not exactly one frame of its payload type.
    PayloadLength {
        /// The packet's payload type.
        payload_type: PayloadType,
        /// Length of the payload, in bytes.
        len: usize,
    },
    /// An operation for one payload type got another (e.g. L16 samples from a PCMU packet).
    PayloadTypeMismatch {
        /// The payload type expected.
        expected: PayloadType,
        /// The payload type found.
        found: PayloadType,
    },
    /// A raw PCM datagram is not exactly [`RAW_PCM_LEN`] bytes.
    RawPcmLength {
        /// Length of the datagram.
        len: usize,
    },
    /// The datagram was sorted as signalling and is not a valid message.
    Signalling(peer::Error),
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => write!(f, "empty datagram"),
            Error::Unrecognised { first_byte, len } => write!(
                f,
                "unrecognised datagram of {len} bytes starting with 0x{first_byte:02x}: expected RTP (0x80-0xbf), a signalling keyword (A-Z) or {RAW_PCM_LEN} bytes of raw PCM"
            ),
            Error::RtpTruncated { needed, len } => write!(
                f,
                "truncated RTP packet: its header needs {needed} bytes but the datagram has {len}"
            ),
            Error::RtpVersion { version } => {
                write!(f, "RTP version {version} where version 2 was expected")
            }
            Error::RtpPadding { padding, available } => write!(
                f,
                "invalid RTP padding count {padding}: expected 1 to {available}, the bytes after the header"
            ),
            Error::UnknownPayloadType { payload_type } => write!(
                f,
                "unknown RTP payload type {payload_type}: expected 96 (L16) or 0 (PCMU)"
            ),
            Error::PayloadLength { payload_type, len } => write!(
                f,
                "{} payload of {len} bytes: expected {} bytes ({FRAME_SAMPLES} samples)",
                payload_type.codec(),
                payload_type.payload_len()
            ),
            Error::PayloadTypeMismatch { expected, found } => write!(
                f,
                "{} packet where {} was expected",
                found.codec(),
                expected.codec()
            ),
            Error::RawPcmLength { len } => write!(
                f,
                "raw PCM datagram of {len} bytes: expected exactly {RAW_PCM_LEN}"
            ),
            Error::Signalling(error) => write!(f, "{error}"),
            Error::BufferTooSmall { needed, available } => write!(
                f,
                "media packet needs {needed} bytes but the buffer holds {available}"
            ),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Signalling(error) => Some(error),
            _ => None,
        }
    }
}

impl From<peer::Error> for Error {
    fn from(error: peer::Error) -> Error {
        Error::Signalling(error)
    }
}

/// The RTP payload types Parlo sends and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// L16 mono 8 kHz, dynamic payload type 96.
    L16,
}

impl PayloadType {
    /// The payload type's number in the RTP header.
    pub const fn number(self) -> u8 {
        match self {
            PayloadType::Pcmu => 0,
            PayloadType::L16 => 96,
        }
    }

    /// The payload type of that number, if Parlo knows it.
    pub const fn from_number(number: u8) -> Option<PayloadType> {
        match number {
            0 => Some(PayloadType::Pcmu),
            96 => Some(PayloadType::L16),
            _ => None,
        }
    }

    /// Length of one frame of payload, in bytes.
    pub const fn payload_len(self) -> usize {
        match self {
            PayloadType::Pcmu => PCMU_PAYLOAD_LEN,
            PayloadType::L16 => L16_PAYLOAD_LEN,
        }
    }

    /// The codec the payload type carries.
    pub const fn codec(self) -> Codec {
        match self {
            PayloadType::Pcmu => Codec::Pcmu,
            PayloadType::L16 => Codec::L16,
        }
    }

    /// The payload type carrying `codec`.
    pub const fn of_codec(codec: Codec) -> PayloadType {
        match codec {
            Codec::Pcmu => PayloadType::Pcmu,
            Codec::L16 => PayloadType::L16,
        }
    }
}

impl From<Codec> for PayloadType {
    fn from(codec: Codec) -> PayloadType {
        PayloadType::of_codec(codec)
    }
}

impl From<PayloadType> for Codec {
    fn from(payload_type: PayloadType) -> Codec {
        payload_type.codec()
    }
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A zero-copy view of an RTP packet in a buffer.
///
/// Build it with [`RtpPacket::new_checked`], which checks the layout; the accessors then
/// read fields in place. (A view built with [`RtpPacket::new_unchecked`] over a short
/// buffer reads zeros and empty slices rather than panicking.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> RtpPacket<T> {
        RtpPacket { buffer }
    }

    /// Wraps a buffer after checking it holds a well-formed RTP version 2 packet: the
    /// fixed header, the CSRC list and the header extension fit, and the padding count (if
    /// the padding bit is set) is between 1 and the number of bytes after the header.
    pub fn new_checked(buffer: T) -> Result<RtpPacket<T>, Error> {
        let packet = RtpPacket { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < RTP_HEADER_LEN {
            return Err(Error::RtpTruncated {
                needed: RTP_HEADER_LEN,
                len,
            });
        }
        if self.version() != RTP_VERSION {
            return Err(Error::RtpVersion {
                version: self.version(),
            });
        }
        let csrc_end = RTP_HEADER_LEN + 4 * usize::from(self.csrc_count());
        if self.has_extension() && len < csrc_end + 4 {
            return Err(Error::RtpTruncated {
                needed: csrc_end + 4,
                len,
            });
        }
        let header_len = self.header_len();
        if len < header_len {
            return Err(Error::RtpTruncated {
                needed: header_len,
                len,
            });
        }
        if self.has_padding() {
            let padding = self.padding_len();
            let available = len - header_len;
            if padding == 0 || usize::from(padding) > available {
                return Err(Error::RtpPadding { padding, available });
            }
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    /// The version field (2 for RTP as it is used today).
    pub fn version(&self) -> u8 {
        self.byte(0) >> 6
    }

    /// Whether the padding bit is set.
    pub fn has_padding(&self) -> bool {
        self.byte(0) & 0x20 != 0
    }

    /// Whether the extension bit is set.
    pub fn has_extension(&self) -> bool {
        self.byte(0) & 0x10 != 0
    }

    /// The number of contributing sources listed after the fixed header.
    pub fn csrc_count(&self) -> u8 {
        self.byte(0) & 0x0f
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.byte(1) & 0x80 != 0
    }

    /// The payload type number.
    pub fn payload_type(&self) -> u8 {
        self.byte(1) & 0x7f
    }

    /// The sequence number.
    pub fn sequence_number(&self) -> u16 {
        be_u16(self.buffer.as_ref(), 2)
    }

    /// The timestamp, in samples.
    pub fn timestamp(&self) -> u32 {
        be_u32(self.buffer.as_ref(), 4)
    }

    /// The synchronisation source.
    pub fn ssrc(&self) -> u32 {
        be_u32(self.buffer.as_ref(), 8)
    }

    /// The `index`th contributing source, if the list has one there.
    pub fn csrc(&self, index: usize) -> Option<u32> {
        (index < usize::from(self.csrc_count()))
            .then(|| be_u32(self.buffer.as_ref(), RTP_HEADER_LEN + 4 * index))
    }

    /// The header extension's profile-defined identifier, when there is an extension.
    pub fn extension_profile(&self) -> Option<u16> {
        self.has_extension()
            .then(|| be_u16(self.buffer.as_ref(), self.csrc_end()))
    }

    /// The header extension's data (after its 4-byte preamble), when there is one.
    pub fn extension_data(&self) -> Option<&[u8]> {
        let start = self.csrc_end() + 4;
        self.has_extension()
            .then(|| self.buffer.as_ref().get(start..self.header_len()))
            .flatten()
    }

    fn csrc_end(&self) -> usize {
        RTP_HEADER_LEN + 4 * usize::from(self.csrc_count())
    }

    /// Length of the header: fixed part, CSRC list and extension.
    pub fn header_len(&self) -> usize {
        let csrc_end = self.csrc_end();
        if self.has_extension() {
            let words = be_u16(self.buffer.as_ref(), csrc_end + 2);
            csrc_end + 4 + 4 * usize::from(words)
        } else {
            csrc_end
        }
    }

    /// The padding count (the datagram's last byte) when the padding bit is set, else 0.
    pub fn padding_len(&self) -> u8 {
        if self.has_padding() {
            self.buffer.as_ref().last().copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// The payload: what follows the header, without the padding.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(self.payload_range())
            .unwrap_or_default()
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        self.header_len()..len.saturating_sub(usize::from(self.padding_len()))
    }
}

/// The header fields of a Parlo media packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// What the payload carries.
    pub payload_type: PayloadType,
    /// The marker bit (set on the first packet of a talk spurt, if at all).
    pub marker: bool,
    /// The sequence number: +1 per packet, wrapping.
    pub sequence: u16,
    /// The timestamp of the frame's first sample: +[`FRAME_SAMPLES`] per frame, wrapping.
    pub timestamp: u32,
    /// The synchronisation source: random, fixed for a call.
    pub ssrc: u32,
}

impl RtpHeader {
    /// The header of the next frame: sequence + 1 and timestamp + 512, both wrapping, and
    /// no marker.
    #[must_use]
    pub const fn next_frame(self) -> RtpHeader {
        RtpHeader {
            marker: false,
            sequence: self.sequence.wrapping_add(1),
            timestamp: self.timestamp.wrapping_add(FRAME_SAMPLES as u32),
            ..self
        }
    }

    /// Writes the 12-byte header (version 2, no padding, extension or CSRC).
    fn emit(&self, buf: &mut [u8; RTP_HEADER_LEN]) {
        buf[0] = RTP_VERSION << 6;
        buf[1] = (u8::from(self.marker) << 7) | self.payload_type.number();
        buf[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }

    /// Writes a whole L16 packet, header and `frame` as big-endian samples, into `buf`;
    /// returns its length ([`MAX_RTP_LEN`]). The header's payload type must be L16.
    pub fn emit_l16(&self, frame: &Frame, buf: &mut [u8]) -> Result<usize, Error> {
        if self.payload_type != PayloadType::L16 {
            return Err(Error::PayloadTypeMismatch {
                expected: PayloadType::L16,
                found: self.payload_type,
            });
        }
        let (header, payload) = split_packet(buf, L16_PAYLOAD_LEN)?;
        self.emit(header);
        write_l16(frame, payload)?;
        Ok(MAX_RTP_LEN)
    }
}

/// Splits `buf` into a header and a payload of `payload_len` bytes, or says how much is
/// missing.
fn split_packet(
    buf: &mut [u8],
    payload_len: usize,
) -> Result<(&mut [u8; RTP_HEADER_LEN], &mut [u8]), Error> {
    let needed = RTP_HEADER_LEN + payload_len;
    let available = buf.len();
    let too_small = Error::BufferTooSmall { needed, available };
    let packet = buf.get_mut(..needed).ok_or(too_small.clone())?;
    let (header, payload) = packet.split_at_mut(RTP_HEADER_LEN);
    let header = <&mut [u8; RTP_HEADER_LEN]>::try_from(header).map_err(|_| too_small)?;
    Ok((header, payload))
}

/// A Parlo media packet: an RTP packet of a known payload type carrying exactly one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpRepr<'a> {
    /// The header fields.
    pub header: RtpHeader,
    /// The payload, borrowed from the datagram: one frame of the header's payload type.
    pub payload: &'a [u8],
}

impl<'a> RtpRepr<'a> {
    /// Parses a datagram as a Parlo media packet.
    ///
    /// Accepts anything RFC 3550 allows in the header (CSRC list, extension, padding; all
    /// skipped) as long as the payload type is one of [`PayloadType`] and the payload,
    /// without padding, is exactly one frame.
    pub fn parse(datagram: &'a [u8]) -> Result<RtpRepr<'a>, Error> {
        let packet = RtpPacket::new_checked(datagram)?;
        let payload_type =
            PayloadType::from_number(packet.payload_type()).ok_or(Error::UnknownPayloadType {
                payload_type: packet.payload_type(),
            })?;
        // Borrowed from the datagram itself, not from the view, to live as long as it.
        let payload = datagram.get(packet.payload_range()).unwrap_or_default();
        if payload.len() != payload_type.payload_len() {
            return Err(Error::PayloadLength {
                payload_type,
                len: payload.len(),
            });
        }
        Ok(RtpRepr {
            header: RtpHeader {
                payload_type,
                marker: packet.marker(),
                sequence: packet.sequence_number(),
                timestamp: packet.timestamp(),
                ssrc: packet.ssrc(),
            },
            payload,
        })
    }

    /// The number of bytes [`RtpRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        RTP_HEADER_LEN + self.payload.len()
    }

    /// Writes the packet into `buf` with a minimal header and returns its length.
    ///
    /// The payload must be exactly one frame of the header's payload type.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let payload_type = self.header.payload_type;
        if self.payload.len() != payload_type.payload_len() {
            return Err(Error::PayloadLength {
                payload_type,
                len: self.payload.len(),
            });
        }
        let (header, payload) = split_packet(buf, self.payload.len())?;
        self.header.emit(header);
        payload.copy_from_slice(self.payload);
        Ok(self.buffer_len())
    }

    /// Reads the samples of an L16 packet into `frame`.
    pub fn read_l16(&self, frame: &mut Frame) -> Result<(), Error> {
        if self.header.payload_type != PayloadType::L16 {
            return Err(Error::PayloadTypeMismatch {
                expected: PayloadType::L16,
                found: self.header.payload_type,
            });
        }
        read_l16(self.payload, frame)
    }
}

/// Writes `frame` as an L16 payload (big-endian samples) into the first
/// [`L16_PAYLOAD_LEN`] bytes of `out`; returns that length.
pub fn write_l16(frame: &Frame, out: &mut [u8]) -> Result<usize, Error> {
    let available = out.len();
    let out = out
        .get_mut(..L16_PAYLOAD_LEN)
        .ok_or(Error::BufferTooSmall {
            needed: L16_PAYLOAD_LEN,
            available,
        })?;
    for (bytes, sample) in out.chunks_exact_mut(2).zip(frame) {
        bytes.copy_from_slice(&sample.to_be_bytes());
    }
    Ok(L16_PAYLOAD_LEN)
}

/// Reads an L16 payload (big-endian samples) of exactly [`L16_PAYLOAD_LEN`] bytes into
/// `frame`.
pub fn read_l16(payload: &[u8], frame: &mut Frame) -> Result<(), Error> {
    if payload.len() != L16_PAYLOAD_LEN {
        return Err(Error::PayloadLength {
            payload_type: PayloadType::L16,
            len: payload.len(),
        });
    }
    for (sample, bytes) in frame.iter_mut().zip(payload.chunks_exact(2)) {
        *sample = i16::from_be_bytes([bytes[0], bytes[1]]);
    }
    Ok(())
}

/// The original project's media datagram: one frame of little-endian samples, no header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPcm<'a> {
    bytes: &'a [u8; RAW_PCM_LEN],
}

impl<'a> RawPcm<'a> {
    /// Parses a datagram of exactly [`RAW_PCM_LEN`] bytes. Any content is valid audio.
    pub fn parse(datagram: &'a [u8]) -> Result<RawPcm<'a>, Error> {
        let bytes = <&[u8; RAW_PCM_LEN]>::try_from(datagram).map_err(|_| Error::RawPcmLength {
            len: datagram.len(),
        })?;
        Ok(RawPcm { bytes })
    }

    /// The datagram.
    pub const fn as_bytes(&self) -> &'a [u8; RAW_PCM_LEN] {
        self.bytes
    }

    /// Reads the samples into `frame`.
    pub fn read_frame(&self, frame: &mut Frame) {
        for (sample, bytes) in frame.iter_mut().zip(self.bytes.chunks_exact(2)) {
            *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
        }
    }

    /// Writes `frame` as a raw PCM datagram (little-endian samples) into `buf` and
    /// returns its length, [`RAW_PCM_LEN`].
    pub fn emit_frame(frame: &Frame, buf: &mut [u8]) -> Result<usize, Error> {
        let available = buf.len();
        let out = buf.get_mut(..RAW_PCM_LEN).ok_or(Error::BufferTooSmall {
            needed: RAW_PCM_LEN,
            available,
        })?;
        for (bytes, sample) in out.chunks_exact_mut(2).zip(frame) {
            bytes.copy_from_slice(&sample.to_le_bytes());
        }
        Ok(RAW_PCM_LEN)
    }
}

/// What a datagram on the peer socket is, by [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// A signalling line ([`Message`]).
    Signalling,
    /// An RTP packet ([`RtpRepr`]).
    Rtp,
    /// The original's raw PCM ([`RawPcm`]).
    RawPcm,
}

/// Sorts a datagram by its first byte and length (see the [module documentation](self)).
///
/// `call` is the dialect of the call in progress with the datagram's sender, `None` when
/// there is none: in an [`Dialect::Original`] call every [`RAW_PCM_LEN`]-byte datagram is
/// raw PCM, whatever its first byte.
pub fn classify(datagram: &[u8], call: Option<Dialect>) -> Result<DatagramKind, Error> {
    let len = datagram.len();
    if call == Some(Dialect::Original) && len == RAW_PCM_LEN {
        return Ok(DatagramKind::RawPcm);
    }
    match datagram.first() {
        None => Err(Error::Empty),
        Some(0x80..=0xBF) => Ok(DatagramKind::Rtp),
        Some(b'A'..=b'Z') => Ok(DatagramKind::Signalling),
        Some(_) if len == RAW_PCM_LEN => Ok(DatagramKind::RawPcm),
        Some(&first_byte) => Err(Error::Unrecognised { first_byte, len }),
    }
}

/// A datagram from the peer socket, classified and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A signalling message.
    Signalling(Message),
    /// A Parlo media packet.
    Rtp(RtpRepr<'a>),
    /// The original's raw PCM.
    RawPcm(RawPcm<'a>),
}

impl<'a> Datagram<'a> {
    /// Classifies `datagram` with [`classify`] and parses it as what it is.
    pub fn parse(datagram: &'a [u8], call: Option<Dialect>) -> Result<Datagram<'a>, Error> {
        Ok(match classify(datagram, call)? {
            DatagramKind::Signalling => Datagram::Signalling(Message::parse(datagram)?),
            DatagramKind::Rtp => Datagram::Rtp(RtpRepr::parse(datagram)?),
            DatagramKind::RawPcm => Datagram::RawPcm(RawPcm::parse(datagram)?),
        })
    }
}

/// Which RTP packets from the peer's address are the call's stream: those of the
/// negotiated payload type, from the SSRC of the first such packet. Packets of another
/// payload type or SSRC are someone else's (a forger on the LAN, a stale stream): they are
/// not played and are no sign of the peer's life.
///
/// The SSRC is learnt from the first packet of the call's payload type and fixed from then
/// on (the signalling does not carry it): a forged packet that comes before the peer's
/// first one would be taken for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLock {
    payload_type: PayloadType,
    ssrc: Option<u32>,
}

/// What [`StreamLock::check`] says of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call's stream.
    Stream,
    /// Not the call's payload type.
    OtherPayloadType,
    /// The call's payload type, but not the stream's SSRC.
    OtherSsrc,
}

impl StreamLock {
    /// The lock of a call with `codec`, before any packet.
    pub const fn new(codec: Codec) -> StreamLock {
        StreamLock {
            payload_type: PayloadType::of_codec(codec),
            ssrc: None,
        }
    }

    /// The call's payload type.
    pub const fn payload_type(&self) -> PayloadType {
        self.payload_type
    }

    /// The stream's SSRC, once learnt.
    pub const fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Judges the header of a packet from the peer's address; the first packet of the
    /// call's payload type fixes the SSRC.
    pub fn check(&mut self, header: &RtpHeader) -> Verdict {
        if header.payload_type != self.payload_type {
            return Verdict::OtherPayloadType;
        }
        match self.ssrc {
            None => {
                self.ssrc = Some(header.ssrc);
                Verdict::Stream
            }
            Some(ssrc) if ssrc == header.ssrc => Verdict::Stream,
            Some(_) => Verdict::OtherSsrc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::CallId;
    use std::vec::Vec;

    /// A frame whose samples are all different, extremes included.
    fn ramp() -> Frame {
        let mut frame = [0i16; FRAME_SAMPLES];
        for (index, sample) in frame.iter_mut().enumerate() {
            *sample = (index as i16).wrapping_mul(127).wrapping_sub(300);
        }
        frame[0] = 0;
        frame[1] = 1;
        frame[2] = -1;
        frame[3] = 0x1234;
        frame[4] = i16::MIN;
        frame[5] = i16::MAX;
        frame
    }

    fn l16_header() -> RtpHeader {
        RtpHeader {
            payload_type: PayloadType::L16,
            marker: true,
            sequence: 0x1234,
            timestamp: 0x0000_0200,
            ssrc: 0xdead_beef,
        }
    }

    fn l16_packet() -> Vec<u8> {
        let mut buf = [0u8; MAX_RTP_LEN];
        let len = l16_header()
            .emit_l16(&ramp(), &mut buf)
            .expect("buffer is large enough");
        buf[..len].to_vec()
    }

    /// An RTP packet built by hand: `first` byte, then PT `payload_type`, sequence 7,
    /// timestamp 0x01020304, SSRC 0x0a0b0c0d, then `rest`.
    fn raw_rtp(first: u8, payload_type: u8, rest: &[u8]) -> Vec<u8> {
        let mut packet = vec![
            first,
            payload_type,
            0,
            7,
            1,
            2,
            3,
            4,
            0x0a,
            0x0b,
            0x0c,
            0x0d,
        ];
        packet.extend_from_slice(rest);
        packet
    }

    // --- RTP: exact bytes --------------------------------------------------------------

    #[test]
    fn an_l16_packet_has_fixed_bytes() {
        let packet = l16_packet();
        assert_eq!(packet.len(), 1036);
        assert_eq!(
            packet[..24],
            [
                0x80, 0xe0, 0x12, 0x34, // V=2, M=1, PT=96, sequence
                0x00, 0x00, 0x02, 0x00, // timestamp
                0xde, 0xad, 0xbe, 0xef, // SSRC
                0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0x12, 0x34, 0x80, 0x00, 0x7f, 0xff,
            ]
        );
        let repr = RtpRepr::parse(&packet).expect("valid");
        assert_eq!(repr.header, l16_header());
        let mut frame = [0; FRAME_SAMPLES];
        repr.read_l16(&mut frame).expect("L16");
        assert_eq!(frame, ramp());
    }

    #[test]
    fn a_pcmu_packet_parses_and_emits_the_same_bytes() {
        let payload: Vec<u8> = (0..PCMU_PAYLOAD_LEN).map(|index| index as u8).collect();
        let packet = raw_rtp(0x80, 0x00, &payload);
        let repr = RtpRepr::parse(&packet).expect("valid");
        assert_eq!(
            repr.header,
            RtpHeader {
                payload_type: PayloadType::Pcmu,
                marker: false,
                sequence: 7,
                timestamp: 0x0102_0304,
                ssrc: 0x0a0b_0c0d,
            }
        );
        assert_eq!(repr.payload, &payload[..]);
        let mut buf = [0u8; MAX_RTP_LEN];
        let len = repr.emit(&mut buf).expect("large enough");
        assert_eq!(len, 524);
        assert_eq!(buf[..len], packet[..]);
        let mut frame = [0; FRAME_SAMPLES];
        assert_eq!(
            repr.read_l16(&mut frame),
            Err(Error::PayloadTypeMismatch {
                expected: PayloadType::L16,
                found: PayloadType::Pcmu
            })
        );
    }

    #[test]
    fn csrcs_extension_and_padding_are_skipped() {
        let mut rest = Vec::new();
        rest.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        rest.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension, one word
        let payload = [0x55u8; PCMU_PAYLOAD_LEN];
        rest.extend_from_slice(&payload);
        rest.extend_from_slice(&[0, 0, 0, 4]); // padding of 4, count included
        let packet = raw_rtp(0x80 | 0x20 | 0x10 | 2, 0x80, &rest); // P, X, CC=2; M set, PT 0
        let view = RtpPacket::new_checked(&packet[..]).expect("well-formed");
        assert_eq!(view.csrc_count(), 2);
        assert_eq!(view.csrc(0), Some(1));
        assert_eq!(view.csrc(1), Some(2));
        assert_eq!(view.csrc(2), None);
        assert_eq!(view.extension_profile(), Some(0xbede));
        assert_eq!(view.extension_data(), Some(&[9u8, 9, 9, 9][..]));
        assert_eq!(view.header_len(), 12 + 8 + 8);
        assert_eq!(view.padding_len(), 4);
        assert_eq!(view.payload(), &payload[..]);
        let repr = RtpRepr::parse(&packet).expect("valid");
        assert!(repr.header.marker);
        assert_eq!(repr.header.payload_type, PayloadType::Pcmu);
        assert_eq!(repr.payload, &payload[..]);
        // Emitting writes the minimal header.
        let mut buf = [0u8; MAX_RTP_LEN];
        let len = repr.emit(&mut buf).expect("large enough");
        assert_eq!(len, RTP_HEADER_LEN + PCMU_PAYLOAD_LEN);
        assert_eq!(buf[0], 0x80);
        assert_eq!(RtpRepr::parse(&buf[..len]), Ok(repr));
    }

    // --- RTP: errors -------------------------------------------------------------------

    #[test]
    fn malformed_rtp_is_refused_with_the_reason() {
        let pcmu = [0u8; PCMU_PAYLOAD_LEN];
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (
                vec![0x80; 11],
                Error::RtpTruncated {
                    needed: 12,
                    len: 11,
                },
            ),
            (raw_rtp(0x40, 0, &pcmu), Error::RtpVersion { version: 1 }),
            (raw_rtp(0x00, 0, &pcmu), Error::RtpVersion { version: 0 }),
            (raw_rtp(0xc0, 0, &pcmu), Error::RtpVersion { version: 3 }),
            // 15 CSRCs announced, 8 bytes present.
            (
                raw_rtp(0x8f, 0, &[0; 8]),
                Error::RtpTruncated {
                    needed: 72,
                    len: 20,
                },
            ),
            // Extension bit without room for its preamble.
            (
                raw_rtp(0x90, 0, &[0xbe, 0xde]),
                Error::RtpTruncated {
                    needed: 16,
                    len: 14,
                },
            ),
            // Extension announcing 0xffff words.
            (
                raw_rtp(0x90, 0, &[0xbe, 0xde, 0xff, 0xff, 1, 2]),
                Error::RtpTruncated {
                    needed: 16 + 4 * 0xffff,
                    len: 18,
                },
            ),
            // Padding count of zero, and larger than what follows the header.
            (
                raw_rtp(0xa0, 0, &[1, 2, 0]),
                Error::RtpPadding {
                    padding: 0,
                    available: 3,
                },
            ),
            (
                raw_rtp(0xa0, 0, &[1, 2, 4]),
                Error::RtpPadding {
                    padding: 4,
                    available: 3,
                },
            ),
            (
                raw_rtp(0xa0, 0, &[]),
                Error::RtpPadding {
                    padding: 0x0d,
                    available: 0,
                },
            ),
            (
                raw_rtp(0x80, 8, &pcmu),
                Error::UnknownPayloadType { payload_type: 8 },
            ),
            (
                raw_rtp(0x80, 11, &[0; 1024]),
                Error::UnknownPayloadType { payload_type: 11 },
            ),
            (
                raw_rtp(0x80, 96, &[0; 1023]),
                Error::PayloadLength {
                    payload_type: PayloadType::L16,
                    len: 1023,
                },
            ),
            (
                raw_rtp(0x80, 96, &[0; 1026]),
                Error::PayloadLength {
                    payload_type: PayloadType::L16,
                    len: 1026,
                },
            ),
            (
                raw_rtp(0x80, 0, &[0; 513]),
                Error::PayloadLength {
                    payload_type: PayloadType::Pcmu,
                    len: 513,
                },
            ),
            (
                raw_rtp(0x80, 0, &[]),
                Error::PayloadLength {
                    payload_type: PayloadType::Pcmu,
                    len: 0,
                },
            ),
        ];
        for (packet, error) in cases {
            assert_eq!(RtpRepr::parse(&packet), Err(error.clone()), "{error}");
        }
    }

    #[test]
    fn errors_say_what_was_expected() {
        let error = RtpRepr::parse(&raw_rtp(0x80, 96, &[0; 10])).expect_err("short payload");
        assert_eq!(
            error.to_string(),
            "L16 payload of 10 bytes: expected 1024 bytes (512 samples)"
        );
        let error = classify(&[0x01, 0x02], None).expect_err("garbage");
        assert!(error.to_string().contains("starting with 0x01"), "{error}");
    }

    #[test]
    fn emit_checks_the_payload_and_the_buffer() {
        let short = [0u8; 10];
        let repr = RtpRepr {
            header: l16_header(),
            payload: &short,
        };
        assert_eq!(
            repr.emit(&mut [0; MAX_RTP_LEN]),
            Err(Error::PayloadLength {
                payload_type: PayloadType::L16,
                len: 10
            })
        );
        let packet = l16_packet();
        let repr = RtpRepr::parse(&packet).expect("valid");
        assert_eq!(
            repr.emit(&mut [0; MAX_RTP_LEN - 1]),
            Err(Error::BufferTooSmall {
                needed: MAX_RTP_LEN,
                available: MAX_RTP_LEN - 1
            })
        );
        assert_eq!(
            l16_header().emit_l16(&ramp(), &mut [0; 12]),
            Err(Error::BufferTooSmall {
                needed: MAX_RTP_LEN,
                available: 12
            })
        );
        let pcmu_header = RtpHeader {
            payload_type: PayloadType::Pcmu,
            ..l16_header()
        };
        assert_eq!(
            pcmu_header.emit_l16(&ramp(), &mut [0; MAX_RTP_LEN]),
            Err(Error::PayloadTypeMismatch {
                expected: PayloadType::L16,
                found: PayloadType::Pcmu
            })
        );
    }

    #[test]
    fn the_next_frame_advances_sequence_and_timestamp_with_wrapping() {
        let header = RtpHeader {
            sequence: 0xfffe,
            timestamp: u32::MAX - 511,
            ..l16_header()
        };
        let next = header.next_frame();
        assert_eq!(
            (next.sequence, next.timestamp, next.marker),
            (0xffff, 0, false)
        );
        let after = next.next_frame();
        assert_eq!((after.sequence, after.timestamp), (0, 512));
        assert_eq!(
            (after.ssrc, after.payload_type),
            (header.ssrc, header.payload_type)
        );
    }

    #[test]
    fn l16_payloads_are_big_endian() {
        let mut payload = [0u8; L16_PAYLOAD_LEN];
        assert_eq!(write_l16(&ramp(), &mut payload), Ok(L16_PAYLOAD_LEN));
        assert_eq!(payload[6..12], [0x12, 0x34, 0x80, 0x00, 0x7f, 0xff]);
        let mut frame = [0; FRAME_SAMPLES];
        assert_eq!(read_l16(&payload, &mut frame), Ok(()));
        assert_eq!(frame, ramp());
        assert_eq!(
            read_l16(&payload[1..], &mut frame),
            Err(Error::PayloadLength {
                payload_type: PayloadType::L16,
                len: 1023
            })
        );
        assert_eq!(
            write_l16(&ramp(), &mut payload[1..]),
            Err(Error::BufferTooSmall {
                needed: 1024,
                available: 1023
            })
        );
    }

    #[test]
    fn payload_types_map_to_codecs() {
        assert_eq!(PayloadType::from_number(96), Some(PayloadType::L16));
        assert_eq!(PayloadType::from_number(0), Some(PayloadType::Pcmu));
        assert_eq!(PayloadType::from_number(11), None);
        for codec in Codec::ALL {
            assert_eq!(Codec::from(PayloadType::from(codec)), codec);
        }
    }

    // --- raw PCM -----------------------------------------------------------------------

    #[test]
    fn raw_pcm_is_little_endian_and_exactly_1024_bytes() {
        let mut buf = [0u8; RAW_PCM_LEN];
        assert_eq!(RawPcm::emit_frame(&ramp(), &mut buf), Ok(RAW_PCM_LEN));
        assert_eq!(
            buf[..12],
            [
                0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0x34, 0x12, 0x00, 0x80, 0xff, 0x7f
            ]
        );
        let raw = RawPcm::parse(&buf).expect("1024 bytes");
        assert_eq!(raw.as_bytes(), &buf);
        let mut frame = [0; FRAME_SAMPLES];
        raw.read_frame(&mut frame);
        assert_eq!(frame, ramp());
        assert_eq!(
            RawPcm::parse(&buf[1..]),
            Err(Error::RawPcmLength { len: 1023 })
        );
        assert_eq!(
            RawPcm::parse(&[0; 1025]),
            Err(Error::RawPcmLength { len: 1025 })
        );
        assert_eq!(
            RawPcm::emit_frame(&ramp(), &mut [0; 100]),
            Err(Error::BufferTooSmall {
                needed: 1024,
                available: 100
            })
        );
    }

    // --- demultiplexing ----------------------------------------------------------------

    #[test]
    fn datagrams_are_sorted_by_first_byte_and_by_the_calls_dialect() {
        let original = Some(Dialect::Original);
        let parlo = Some(Dialect::Parlo);
        let mut pcm_s = [0u8; RAW_PCM_LEN];
        pcm_s[0] = b'S';
        let mut pcm_rtp_like = [0u8; RAW_PCM_LEN];
        pcm_rtp_like[0] = 0x80;
        let pcm_zero = [0u8; RAW_PCM_LEN];
        type Case<'a> = (&'a [u8], Option<Dialect>, Result<DatagramKind, Error>);
        let cases: &[Case<'_>] = &[
            (b"START alice", None, Ok(DatagramKind::Signalling)),
            (b"CLOSE", original, Ok(DatagramKind::Signalling)),
            (b"ZZZ", parlo, Ok(DatagramKind::Signalling)),
            (b"ACK call=00000001", parlo, Ok(DatagramKind::Signalling)),
            (&[0x80, 0], None, Ok(DatagramKind::Rtp)),
            (&[0xbf], parlo, Ok(DatagramKind::Rtp)),
            (
                &[0xc0, 0, 0],
                None,
                Err(Error::Unrecognised {
                    first_byte: 0xc0,
                    len: 3,
                }),
            ),
            (
                &[0x7f],
                parlo,
                Err(Error::Unrecognised {
                    first_byte: 0x7f,
                    len: 1,
                }),
            ),
            (
                b"close",
                None,
                Err(Error::Unrecognised {
                    first_byte: b'c',
                    len: 5,
                }),
            ),
            (b"", original, Err(Error::Empty)),
            // In a call with an original peer, 1024 bytes are audio whatever they start with.
            (&pcm_s, original, Ok(DatagramKind::RawPcm)),
            (&pcm_rtp_like, original, Ok(DatagramKind::RawPcm)),
            (&pcm_zero, original, Ok(DatagramKind::RawPcm)),
            // Elsewhere the first byte decides when it can; 1024 bytes are audio otherwise.
            (&pcm_s, parlo, Ok(DatagramKind::Signalling)),
            (&pcm_s, None, Ok(DatagramKind::Signalling)),
            (&pcm_rtp_like, parlo, Ok(DatagramKind::Rtp)),
            (&pcm_zero, parlo, Ok(DatagramKind::RawPcm)),
            (&pcm_zero, None, Ok(DatagramKind::RawPcm)),
            (
                &pcm_zero[..1023],
                original,
                Err(Error::Unrecognised {
                    first_byte: 0,
                    len: 1023,
                }),
            ),
        ];
        for (datagram, call, kind) in cases {
            assert_eq!(
                &classify(datagram, *call),
                kind,
                "{:?}.. ({} bytes) in {call:?}",
                datagram.first(),
                datagram.len()
            );
        }
    }

    #[test]
    fn datagrams_parse_as_what_they_are() {
        let packet = l16_packet();
        assert!(
            matches!(Datagram::parse(&packet, Some(Dialect::Parlo)), Ok(Datagram::Rtp(repr)) if repr.header == l16_header())
        );
        assert_eq!(
            Datagram::parse(b"CLOSE call=00000009\n", Some(Dialect::Parlo)),
            Ok(Datagram::Signalling(Message::Close {
                call: Some(CallId::new(9))
            }))
        );
        let mut pcm = [0u8; RAW_PCM_LEN];
        pcm[..5].copy_from_slice(b"CLOSE");
        assert!(
            matches!(Datagram::parse(&pcm, Some(Dialect::Original)), Ok(Datagram::RawPcm(raw)) if raw.as_bytes() == &pcm)
        );
        // The same bytes outside such a call are a signalling line too long to be one.
        assert_eq!(
            Datagram::parse(&pcm, None),
            Err(Error::Signalling(peer::Error::TooLong { len: RAW_PCM_LEN }))
        );
        assert_eq!(
            Datagram::parse(b"HELLO", None),
            Err(Error::Signalling(peer::Error::UnknownKeyword(
                Message::parse(b"HELLO")
                    .err()
                    .and_then(|e| match e {
                        peer::Error::UnknownKeyword(word) => Some(word),
                        _ => None,
                    })
                    .expect("unknown keyword")
            )))
        );
        assert_eq!(
            Datagram::parse(&packet[..100], None),
            Err(Error::PayloadLength {
                payload_type: PayloadType::L16,
                len: 88
            })
        );
    }

    // --- properties --------------------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn headers() -> impl Strategy<Value = RtpHeader> {
            (
                any::<bool>(),
                any::<bool>(),
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
            )
                .prop_map(|(l16, marker, sequence, timestamp, ssrc)| RtpHeader {
                    payload_type: if l16 {
                        PayloadType::L16
                    } else {
                        PayloadType::Pcmu
                    },
                    marker,
                    sequence,
                    timestamp,
                    ssrc,
                })
        }

        fn frames() -> impl Strategy<Value = Frame> {
            proptest::collection::vec(any::<i16>(), FRAME_SAMPLES).prop_map(|samples| {
                let mut frame = [0; FRAME_SAMPLES];
                frame.copy_from_slice(&samples);
                frame
            })
        }

        proptest! {
            #[test]
            fn l16_frames_survive_rtp(header in headers(), frame in frames()) {
                let header = RtpHeader { payload_type: PayloadType::L16, ..header };
                let mut buf = [0u8; MAX_RTP_LEN];
                let len = header.emit_l16(&frame, &mut buf).expect("large enough");
                let repr = RtpRepr::parse(&buf[..len]).expect("valid");
                prop_assert_eq!(repr.header, header);
                let mut back = [0; FRAME_SAMPLES];
                repr.read_l16(&mut back).expect("L16");
                prop_assert_eq!(back, frame);
                prop_assert_eq!(classify(&buf[..len], Some(Dialect::Parlo)), Ok(DatagramKind::Rtp));
            }

            #[test]
            fn any_rtp_repr_round_trips(header in headers(), byte in any::<u8>()) {
                let payload = [byte; L16_PAYLOAD_LEN];
                let repr = RtpRepr { header, payload: &payload[..header.payload_type.payload_len()] };
                let mut buf = [0u8; MAX_RTP_LEN];
                let len = repr.emit(&mut buf).expect("large enough");
                prop_assert_eq!(len, repr.buffer_len());
                prop_assert_eq!(RtpRepr::parse(&buf[..len]), Ok(repr));
            }

            #[test]
            fn raw_pcm_frames_round_trip(frame in frames()) {
                let mut buf = [0u8; RAW_PCM_LEN];
                RawPcm::emit_frame(&frame, &mut buf).expect("large enough");
                prop_assert_eq!(classify(&buf, Some(Dialect::Original)), Ok(DatagramKind::RawPcm));
                let mut back = [0; FRAME_SAMPLES];
                RawPcm::parse(&buf).expect("1024 bytes").read_frame(&mut back);
                prop_assert_eq!(back, frame);
            }

            #[test]
            fn any_datagram_parses_or_fails_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..1100),
                call in proptest::option::of(prop_oneof![Just(Dialect::Original), Just(Dialect::Parlo)]),
            ) {
                let _ = Datagram::parse(&bytes, call);
                if let Ok(view) = RtpPacket::new_checked(&bytes[..]) {
                    prop_assert!(view.header_len() <= bytes.len());
                    prop_assert!(view.payload().len() <= bytes.len());
                }
            }
        }
    }

    #[test]
    fn the_stream_is_the_call_s_payload_type_from_the_first_ssrc() {
        let header = |payload_type, ssrc| RtpHeader {
            payload_type,
            marker: false,
            sequence: 1,
            timestamp: 512,
            ssrc,
        };
        let mut lock = StreamLock::new(Codec::Pcmu);
        assert_eq!(lock.payload_type(), PayloadType::Pcmu);
        // Another payload type teaches nothing, even first.
        assert_eq!(
            lock.check(&header(PayloadType::L16, 7)),
            Verdict::OtherPayloadType
        );
        assert_eq!(lock.ssrc(), None);
        // The first packet of the call's payload type fixes the SSRC.
        assert_eq!(lock.check(&header(PayloadType::Pcmu, 9)), Verdict::Stream);
        assert_eq!(lock.ssrc(), Some(9));
        assert_eq!(lock.check(&header(PayloadType::Pcmu, 9)), Verdict::Stream);
        assert_eq!(
            lock.check(&header(PayloadType::Pcmu, 7)),
            Verdict::OtherSsrc
        );
        assert_eq!(
            lock.check(&header(PayloadType::L16, 9)),
            Verdict::OtherPayloadType
        );
        assert_eq!(lock.ssrc(), Some(9), "refusals change nothing");
    }
}
