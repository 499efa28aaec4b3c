//! The media of a call: the audio device, the RTP (or raw PCM) packets both ways, and the
//! jitter buffer.
//!
//! Started and stopped by the call machine's `StartMedia`/`StopMedia`. The capture clock
//! paces everything (parlo-audio's contract): for each captured frame, one packet goes to
//! the peer and one frame moves from the jitter buffer to playback. Nothing here allocates
//! per frame: the packet buffer, the frames and the jitter buffer are allocated once.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use parlo_audio::{Audio, DeviceSpec, Frame, JitterBuffer, JitterConfig, SILENCE, Wake, pcmu};
use parlo_net::media::{MAX_RTP_LEN, PayloadType, RAW_PCM_LEN, RawPcm, RtpHeader, RtpRepr};
use parlo_net::peer::Dialect;

/// Jitter-buffer depth: at least two frames (128 ms). With one, a peer whose frames
/// arrive right at our capture ticks (two devices started together, as on a LAN) makes
/// playout stall early in the call and insert a frame of silence; two absorb that phase.
const JITTER: JitterConfig = JitterConfig {
    min_depth: 2,
    max_depth: 8,
};

/// Counters of one call's media, kept after it ends for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Packets sent.
    pub sent: u64,
    /// Packets that could not be sent (the socket refused them).
    pub send_errors: u64,
    /// Packets received from the peer.
    pub received: u64,
    /// Frames played from received packets.
    pub played: u64,
    /// Frames missing at their playout time.
    pub lost: u64,
    /// Packets too late to play.
    pub late: u64,
    /// Packets received twice.
    pub duplicate: u64,
    /// Ticks concealed or silent during playout.
    pub concealed: u64,
    /// Playback underruns at the device.
    pub underruns: u64,
    /// Jitter-buffer depth, in frames.
    pub depth: usize,
}

struct Session {
    audio: Audio,
    peer: SocketAddr,
    dialect: Dialect,
    header: RtpHeader,
    /// Sequence numbers given to raw PCM frames, which carry none, in arrival order.
    raw_seq: u16,
    sent: u64,
    send_errors: u64,
}

/// The media side of the phone.
pub struct Media {
    spec: DeviceSpec,
    session: Option<Session>,
    jitter: Box<JitterBuffer>,
    packet: Box<[u8; MAX_RTP_LEN]>,
    frame: Box<Frame>,
    last: MediaStats,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("spec", &self.spec)
            .field("active", &self.session.is_some())
            .finish()
    }
}

impl Media {
    /// Media on the device `spec`; nothing runs until [`Media::start`].
    pub fn new(spec: DeviceSpec) -> Media {
        Media {
            spec,
            session: None,
            jitter: Box::new(JitterBuffer::new(JITTER)),
            packet: Box::new([0; MAX_RTP_LEN]),
            frame: Box::new(SILENCE),
            last: MediaStats::default(),
        }
    }

    /// Whether a call's media is running.
    pub fn is_active(&self) -> bool {
        self.session.is_some()
    }

    /// Starts the device and media with `peer`. `random` seeds the RTP SSRC, sequence
    /// number and timestamp.
    pub fn start(
        &mut self,
        peer: SocketAddr,
        dialect: Dialect,
        wake: Wake,
        random: u64,
    ) -> Result<(), parlo_audio::Error> {
        if let Err(e) = self.stop() {
            log::warn!("audio device of the previous call: {e}");
        }
        let audio = Audio::start(&self.spec, wake)?;
        *self.jitter = JitterBuffer::new(JITTER);
        self.last = MediaStats::default();
        let header = RtpHeader {
            payload_type: PayloadType::L16,
            marker: true,
            sequence: random as u16,
            timestamp: (random >> 16) as u32,
            ssrc: (random >> 32) as u32,
        };
        log::info!(
            "media with {peer} ({}) on {}",
            match dialect {
                Dialect::Parlo => "RTP L16",
                Dialect::Original => "raw PCM, original protocol",
            },
            self.spec
        );
        self.session = Some(Session {
            audio,
            peer,
            dialect,
            header,
            raw_seq: 0,
            sent: 0,
            send_errors: 0,
        });
        Ok(())
    }

    /// Stops the device (joining its thread, finishing an output file). Returns the
    /// error the device met while running, if any.
    pub fn stop(&mut self) -> Result<(), parlo_audio::Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.last = self.stats_of(Some(&session));
        log::info!(
            "media ended: {} sent, {} received, {} lost, {} late, {} duplicate",
            self.last.sent,
            self.last.received,
            self.last.lost,
            self.last.late,
            self.last.duplicate
        );
        session.audio.stop()
    }

    /// Drains the captured frames: one packet out and one frame played per frame.
    /// Returns whether the device failed (media should end).
    pub fn handle_wake(&mut self, udp: &UdpSocket) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        while let Some(captured) = session.audio.pop_captured() {
            let len = match session.dialect {
                Dialect::Parlo => session.header.emit_l16(&captured, &mut self.packet[..]),
                Dialect::Original => RawPcm::emit_frame(&captured, &mut self.packet[..]),
            };
            match len {
                Ok(len) => match udp.send_to(&self.packet[..len], session.peer) {
                    Ok(_) => session.sent += 1,
                    Err(e) => {
                        session.send_errors += 1;
                        if session.send_errors == 1 {
                            log::warn!("cannot send media to {}: {e}", session.peer);
                        }
                    }
                },
                Err(e) => log::error!("cannot build a media packet: {e}"),
            }
            session.header = session.header.next_frame();
            self.jitter.get(&mut self.frame);
            session.audio.push_playback(&self.frame);
        }
        if session.audio.input_ended() {
            log::trace!("audio input ended; sending silence");
        }
        session.audio.failed()
    }

    /// A media packet from the peer. `arrival` is the arrival time in 8 kHz ticks.
    pub fn handle_rtp(&mut self, from: SocketAddr, packet: &RtpRepr<'_>, arrival: u32) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if from != session.peer {
            return;
        }
        let decoded = match packet.header.payload_type {
            PayloadType::L16 => packet.read_l16(&mut self.frame).is_ok(),
            PayloadType::Pcmu => match <&[u8; pcmu::FRAME_BYTES]>::try_from(packet.payload) {
                Ok(bytes) => {
                    pcmu::decode_frame(bytes, &mut self.frame);
                    true
                }
                Err(_) => false,
            },
        };
        if decoded {
            let h = packet.header;
            self.jitter
                .put(h.sequence, h.timestamp, arrival, &self.frame);
        }
    }

    /// A raw PCM datagram from an original peer. `arrival` as for [`Media::handle_rtp`].
    pub fn handle_raw(&mut self, from: SocketAddr, raw: &RawPcm<'_>, arrival: u32) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if from != session.peer {
            return;
        }
        raw.read_frame(&mut self.frame);
        let seq = session.raw_seq;
        session.raw_seq = seq.wrapping_add(1);
        let timestamp = u32::from(seq).wrapping_mul(RAW_PCM_LEN as u32 / 2);
        self.jitter.put(seq, timestamp, arrival, &self.frame);
    }

    /// The counters of the current call, or of the last one.
    pub fn stats(&self) -> MediaStats {
        match &self.session {
            Some(session) => self.stats_of(Some(session)),
            None => self.last,
        }
    }

    fn stats_of(&self, session: Option<&Session>) -> MediaStats {
        let Some(session) = session else {
            return self.last;
        };
        let jitter = self.jitter.stats();
        let queues = session.audio.stats();
        MediaStats {
            sent: session.sent,
            send_errors: session.send_errors,
            received: jitter.received + jitter.late + jitter.duplicate + jitter.discarded,
            played: jitter.played,
            lost: jitter.lost,
            late: jitter.late,
            duplicate: jitter.duplicate,
            concealed: jitter.concealed,
            underruns: queues.playback_underruns,
            depth: jitter.depth,
        }
    }
}

/// Whether an error from `recv_from`/`send_to` on the UDP socket is a leftover ICMP
/// report (a peer that went away) rather than a broken socket.
pub fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wake_counter() -> (Wake, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let wake: Wake = Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        (wake, count)
    }

    /// Calls `handle_wake` until `sent` packets went out (or fails after 5 s).
    fn pump(media: &mut Media, udp: &UdpSocket, sent: u64) {
        let limit = Instant::now() + Duration::from_secs(5);
        while media.stats().sent < sent {
            assert!(Instant::now() < limit, "the device never captured");
            std::thread::sleep(Duration::from_millis(10));
            assert!(!media.handle_wake(udp), "the null device does not fail");
        }
    }

    fn peer_socket(addr: &str) -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind(addr).expect("bind the peer");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        socket
    }

    #[test]
    fn parlo_media_is_rtp_l16_with_consecutive_headers_and_received_frames_are_played() {
        let udp = UdpSocket::bind("127.0.0.211:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.212:0");
        let peer_addr = peer.local_addr().expect("address");
        let mut media = Media::new(DeviceSpec::Null);
        let (wake, wakes) = wake_counter();
        media
            .start(peer_addr, Dialect::Parlo, wake, 0x1234_5678_9abc_def0)
            .expect("the null device starts");
        pump(&mut media, &udp, 3);
        assert!(wakes.load(Ordering::Relaxed) >= 3);

        let mut buf = [0u8; 2048];
        let mut headers = Vec::new();
        for _ in 0..3 {
            let (len, from) = peer.recv_from(&mut buf).expect("a packet");
            assert_eq!(from, udp.local_addr().expect("address"));
            let packet = RtpRepr::parse(&buf[..len]).expect("RTP");
            assert_eq!(packet.header.payload_type, PayloadType::L16);
            assert!(
                packet.payload.iter().all(|&b| b == 0),
                "the null device is silent"
            );
            headers.push(packet.header);
        }
        assert_eq!(headers[0].ssrc, 0x1234_5678);
        assert_eq!(headers[0].sequence, 0xdef0);
        assert!(headers[0].marker && !headers[1].marker);
        assert_eq!(headers[1], headers[0].next_frame());
        assert_eq!(headers[2], headers[1].next_frame());

        // Frames from the peer go into the jitter buffer; others are not ours to play.
        let mut frame = SILENCE;
        frame[0] = 1000;
        let mut header = RtpHeader {
            payload_type: PayloadType::L16,
            marker: true,
            sequence: 7,
            timestamp: 0,
            ssrc: 9,
        };
        let mut packet = [0u8; MAX_RTP_LEN];
        for k in 0..4u32 {
            let len = header.emit_l16(&frame, &mut packet).expect("emit");
            let repr = RtpRepr::parse(&packet[..len]).expect("parse");
            media.handle_rtp(peer_addr, &repr, k * 512);
            media.handle_rtp("127.0.0.213:5001".parse().expect("address"), &repr, k * 512);
            header = header.next_frame();
        }
        let stats = media.stats();
        assert_eq!(stats.received, 4, "{stats:?}");
        pump(&mut media, &udp, stats.sent + 3);
        assert!(media.stats().played >= 1, "{:?}", media.stats());
        media.stop().expect("stops cleanly");
        assert!(!media.is_active());
        assert_eq!(
            media.stats().received,
            4,
            "the last call's counters stay for status"
        );
    }

    #[test]
    fn original_media_is_raw_little_endian_pcm() {
        let udp = UdpSocket::bind("127.0.0.214:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.215:0");
        let peer_addr = peer.local_addr().expect("address");
        let mut media = Media::new(DeviceSpec::Tone { hz: 1000 });
        let (wake, _) = wake_counter();
        media
            .start(peer_addr, Dialect::Original, wake, 1)
            .expect("the tone device starts");
        pump(&mut media, &udp, 1);
        let mut buf = [0u8; 2048];
        let (len, _) = peer.recv_from(&mut buf).expect("a datagram");
        assert_eq!(len, RAW_PCM_LEN);
        let first = i16::from_le_bytes([buf[2], buf[3]]);
        assert!(first > 0, "a sine starting at phase 0 rises: {first}");

        let raw = RawPcm::parse(&buf[..len]).expect("raw PCM");
        media.handle_raw(peer_addr, &raw, 0);
        media.handle_raw(peer_addr, &raw, 512);
        assert_eq!(media.stats().received, 2);
        media.stop().expect("stops cleanly");
    }
}
