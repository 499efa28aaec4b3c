//! The media of a call or a conference: the audio device, the RTP (or raw PCM) packets
//! both ways with each peer, a jitter buffer per peer, and the mix of what they say.
//!
//! Started and stopped by the call machine's `StartMedia`/`StopMedia`. Media with one peer
//! is a **leg**: its address, dialect, codec and key, its own RTP stream (SSRC, sequence
//! numbers, timestamps), its own jitter buffer. A plain call has one leg; a member of a
//! conference of up to eight phones holds one leg with each of the others (up to
//! [`MAX_LEGS`]). [`Media::start`] adds a leg, starting the device with the first;
//! [`Media::stop_leg`] removes one, stopping the device with the last; [`Media::stop`]
//! stops everything.
//!
//! The device's clocks pace everything (parlo-audio's contract): each captured frame goes
//! to every leg at once, each encoded with that leg's codec and header and sent with its
//! key, and for each playback tick of the device one frame moves to the playback queue:
//! the mix of a frame from each leg's jitter buffer (`parlo_audio::mix`: the sum,
//! saturated to 16 bits; the phone's own voice is never in it). It is handed over as soon
//! as every leg that is playing has its frame due in the jitter buffer (and at least one
//! leg has), or else at the last safe moment, [`GUARD`] before the device's next tick (to
//! conceal a lost frame, or wait a tick for a late one, leg by leg). A leg whose playout
//! has not begun adds nothing to the mix. With one leg the mix is that leg's frame,
//! sample for sample. A packet arriving up to then plays at that tick: mouth-to-ear
//! latency is one frame to fill, the network's delay, and the wait for the listener's
//! next tick: less than a frame, plus a frame when the frames come too close to the tick
//! for comfort ([`START_MARGIN`]). Handing a frame over as soon as it is there leaves the
//! device all the time until its tick to take it, should the loop be slow.
//!
//! Media is taken from a leg's address only, and of RTP only the leg's stream: the
//! payload type of its codec, and the SSRC of the first such packet from it, out of a
//! session with its key in an encrypted call. Other packets from that address (a forged
//! or stray stream) are counted for that leg ([`MediaStats::foreign_media`]), never
//! played, and are no sign of the peer's life. Raw PCM from an original peer carries no
//! SSRC: its address is all there is to check.
//!
//! Nothing here allocates per frame: the packet buffer, the frames, the mixer, the list
//! of legs and each leg's jitter buffer are allocated once, when media or a leg starts
//! (`tests/media_no_alloc.rs` counts, over 1,200 frames each way through a lossy relay,
//! in calls and in a conference).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use parlo_audio::mix::Mixer;
use parlo_audio::{
    Audio, DeviceSpec, FRAME_DURATION, Frame, JitterBuffer, JitterConfig, SILENCE, Wake, pcmu,
};
use parlo_fsm::PublicKey;
use parlo_net::media::{
    MAX_RTP_LEN, PayloadType, RAW_PCM_LEN, RawPcm, RtpHeader, RtpRepr, StreamLock, Verdict,
};
use parlo_net::peer::{Codec, Dialect};

/// Jitter-buffer depth: one frame on a clean network, where frames come at a steady
/// phase to the device's ticks; the buffer deepens by itself under jitter (up to 8
/// frames, 512 ms).
const JITTER: JitterConfig = JitterConfig {
    min_depth: 1,
    max_depth: 8,
};

/// The most legs media holds at once: one with each other member of a conference of
/// eight.
pub const MAX_LEGS: usize = 7;
/// How long before the device's next playback tick the loop hands it the next frame: room
/// for the loop's own wake-up delay. Each time the device nevertheless finds nothing to play
/// in a call, the guard grows by this much, up to [`MAX_GUARD`] (a busy machine).
pub const GUARD: Duration = Duration::from_millis(8);
/// The largest [`GUARD`]: half a frame.
pub const MAX_GUARD: Duration = Duration::from_millis(32);
/// How far past the playout deadline the loop may come to it and still hand over the
/// frame due (the poll's timeout has millisecond steps).
pub const LATE: Duration = Duration::from_millis(2);
/// How long before the playout deadline the first frame of a leg must come to play at
/// that tick. The frames after it come as much before theirs, give or take the network's
/// and the schedulers' jitter: with less room, one of them would miss its tick (a frame
/// of silence, and a frame more delay for the rest of the call); without enough, playout
/// starts a tick later, with a frame of room.
pub const START_MARGIN: Duration = Duration::from_millis(16);
/// Arrival times kept: as many frames as the jitter buffer holds.
const ARRIVALS: usize = parlo_audio::jitter::CAPACITY;

/// Where media packets go: the phone's UDP socket, in the clear or through an encrypted
/// session.
pub trait Link {
    /// Sends one media packet (RTP or raw PCM) to `to`: sealed for `key` (the peer's) in
    /// an encrypted call, in the clear when it is `None`.
    fn send(&mut self, packet: &[u8], to: SocketAddr, key: Option<PublicKey>) -> io::Result<()>;
}

/// The socket itself: media in the clear. It has no sessions, so it refuses a packet to
/// be sealed rather than send it in the clear.
impl Link for &UdpSocket {
    fn send(&mut self, packet: &[u8], to: SocketAddr, key: Option<PublicKey>) -> io::Result<()> {
        if key.is_some() {
            return Err(io::Error::other(
                "media of an encrypted call cannot be sent without its session",
            ));
        }
        self.send_to(packet, to).map(|_| ())
    }
}

/// Counters of media, kept after it ends for `status`: of one leg, or of all of them
/// (see [`Media::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// The codec sent (`None` before the first call).
    pub codec: Option<Codec>,
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
    /// Packets dropped as far outside the jitter buffer's window (strays, or the first
    /// packets of a restarted stream).
    pub discarded: u64,
    /// RTP packets from the peer's address that are not the call's stream (another SSRC
    /// or payload type): ignored.
    pub foreign_media: u64,
    /// Ticks concealed or silent during playout.
    pub concealed: u64,
    /// Playback underruns at the device (it found nothing to play).
    pub underruns: u64,
    /// Playback overruns (the loop found the playback queue full; frame dropped).
    pub playback_overruns: u64,
    /// Capture overruns (the device found the capture queue full: the loop fell behind).
    pub capture_overruns: u64,
    /// Jitter-buffer depth, in frames.
    pub depth: usize,
    /// Estimated interarrival jitter (RFC 3550), in microseconds.
    pub jitter_us: u64,
}

impl MediaStats {
    /// Adds the counters of another leg: counters are summed, the depth and jitter are
    /// the larger ones, the codec the first known.
    fn add(&mut self, leg: &MediaStats) {
        self.codec = self.codec.or(leg.codec);
        self.sent += leg.sent;
        self.send_errors += leg.send_errors;
        self.received += leg.received;
        self.played += leg.played;
        self.lost += leg.lost;
        self.late += leg.late;
        self.duplicate += leg.duplicate;
        self.discarded += leg.discarded;
        self.foreign_media += leg.foreign_media;
        self.concealed += leg.concealed;
        self.depth = self.depth.max(leg.depth);
        self.jitter_us = self.jitter_us.max(leg.jitter_us);
    }
}

/// Media with one peer.
struct Leg {
    peer: SocketAddr,
    dialect: Dialect,
    codec: Codec,
    /// The peer's key when the call is encrypted: its media must come out of a session
    /// with that key, and ours is sealed for it.
    key: Option<PublicKey>,
    header: RtpHeader,
    /// Which packets from the peer's address are its stream.
    stream: StreamLock,
    /// RTP packets from the peer's address but not of its stream.
    foreign: u64,
    /// Sequence numbers given to raw PCM frames, which carry none, in arrival order.
    raw_seq: u16,
    sent: u64,
    send_errors: u64,
    jitter: Box<JitterBuffer>,
    /// When recent frames arrived, by sequence number modulo [`ARRIVALS`].
    arrivals: [Option<(u16, Instant)>; ARRIVALS],
}

impl Leg {
    fn new(
        peer: SocketAddr,
        dialect: Dialect,
        codec: Codec,
        key: Option<PublicKey>,
        random: u64,
    ) -> Leg {
        let codec = match dialect {
            Dialect::Parlo => codec,
            Dialect::Original => Codec::L16,
        };
        let header = RtpHeader {
            payload_type: PayloadType::of_codec(codec),
            marker: true,
            sequence: random as u16,
            timestamp: (random >> 16) as u32,
            ssrc: (random >> 32) as u32,
        };
        Leg {
            peer,
            dialect,
            codec,
            key,
            header,
            stream: StreamLock::new(codec),
            foreign: 0,
            raw_seq: 0,
            sent: 0,
            send_errors: 0,
            jitter: Box::new(JitterBuffer::new(JITTER)),
            arrivals: [None; ARRIVALS],
        }
    }

    /// Whether the leg would play a received frame at the next tick (see
    /// [`JitterBuffer::ready`]).
    fn ready(&self) -> bool {
        self.jitter.ready()
    }

    /// Whether the leg's playout has begun.
    fn playing(&self) -> bool {
        self.jitter.playout_seq().is_some()
    }

    /// Takes the leg's frame for the tick whose frame must be handed over by `deadline`,
    /// into `out`. A frame due that arrived past the deadline (by more than [`LATE`]; for
    /// the first frame of a leg, less than [`START_MARGIN`] before it) does not play at
    /// this tick, though it is here now: the tick is concealed
    /// ([`JitterBuffer::get_late`]) and the frame plays at the next. Played so close to
    /// the tick, the frames after it would make their tick or miss it from one to the
    /// next. A loop that merely runs late still hands over a frame that came in time.
    fn take(&mut self, deadline: Instant, out: &mut Frame) {
        // The first frame of a leg sets the phase for all the others: it must come with
        // room to spare, or playout starts a tick later, a whole frame clear of the edge.
        let came = self.jitter.due_seq().and_then(|seq| {
            self.arrivals[usize::from(seq) % ARRIVALS]
                .filter(|&(s, _)| s == seq)
                .map(|(_, at)| at)
        });
        let late = self.jitter.ready()
            && came.is_some_and(|at| match self.jitter.playout_seq() {
                None => at + START_MARGIN > deadline,
                Some(_) => at > deadline + LATE,
            });
        if late {
            self.jitter.get_late(out);
        } else {
            self.jitter.get(out);
        }
    }

    /// Encodes `captured` for this leg into `packet` (`pcmu`: the frame's µ-law payload,
    /// encoded once for all the legs that send PCMU) and sends it through `link`.
    fn send(
        &mut self,
        captured: &Frame,
        pcmu: &[u8; pcmu::FRAME_BYTES],
        packet: &mut [u8; MAX_RTP_LEN],
        link: &mut dyn Link,
    ) {
        let len = match (self.dialect, self.codec) {
            (Dialect::Original, _) => RawPcm::emit_frame(captured, &mut packet[..]),
            (Dialect::Parlo, Codec::L16) => self.header.emit_l16(captured, &mut packet[..]),
            (Dialect::Parlo, Codec::Pcmu) => RtpRepr {
                header: self.header,
                payload: &pcmu[..],
            }
            .emit(&mut packet[..]),
        };
        match len {
            Ok(len) => match link.send(&packet[..len], self.peer, self.key) {
                Ok(()) => self.sent += 1,
                Err(e) => {
                    self.send_errors += 1;
                    if self.send_errors == 1 {
                        log::warn!("cannot send media to {}: {e}", self.peer);
                    }
                }
            },
            Err(e) => log::error!("cannot build a media packet: {e}"),
        }
        self.header = self.header.next_frame();
    }

    /// The leg's counters (the device's are not the leg's: zero here).
    fn stats(&self) -> MediaStats {
        let jitter = self.jitter.stats();
        MediaStats {
            codec: Some(self.codec),
            sent: self.sent,
            send_errors: self.send_errors,
            received: jitter.received + jitter.late + jitter.duplicate + jitter.discarded,
            played: jitter.played,
            lost: jitter.lost,
            late: jitter.late,
            duplicate: jitter.duplicate,
            discarded: jitter.discarded,
            foreign_media: self.foreign,
            concealed: jitter.concealed,
            underruns: 0,
            playback_overruns: 0,
            capture_overruns: 0,
            depth: jitter.depth,
            // Samples at 8 kHz: 125 µs each.
            jitter_us: u64::from(jitter.jitter) * 125,
        }
    }
}

/// The audio device and its playout schedule, shared by the legs.
struct Device {
    audio: Audio,
    /// The device's last playback tick seen, as it noted it.
    last_pop: Option<Instant>,
    /// When that tick was due, by the device's schedule (see [`Device::tick_time`]).
    tick: Option<Instant>,
    /// When the next frame must be handed over (see [`Media::playout_deadline`]).
    playout: Option<Instant>,
    guard: Duration,
    /// Frames handed to the device.
    pushed: u64,
    /// Device underruns already accounted for.
    underruns: u64,
}

impl Device {
    fn new(audio: Audio) -> Device {
        Device {
            audio,
            last_pop: None,
            tick: None,
            playout: None,
            guard: GUARD,
            pushed: 0,
            underruns: 0,
        }
    }

    /// Catches up with the device's playback: its last tick (the time it noted), the
    /// frames still queued for it, and so the playout deadline. The device does not wake
    /// the loop when it ticks: every entry into the media (a captured frame, a packet, the
    /// deadline) looks here instead, which is enough to follow it. Returns the frames
    /// still queued.
    fn sync(&mut self) -> usize {
        // The tick's time and the queue, read as one: a tick between the two reads would
        // pair a new tick with a frame it has already taken.
        let (pop, queued) = loop {
            let pop = self.audio.last_pop();
            let queued = self.audio.playback_queued();
            if self.audio.last_pop() == pop {
                break (pop, queued);
            }
        };
        let Some(pop) = pop else {
            return queued;
        };
        if self.last_pop != Some(pop) {
            self.last_pop = Some(pop);
            self.tick_time(pop);
            self.note_underruns();
        }
        if let Some(tick) = self.tick {
            // The device's next tick takes the frame queued, if any; the next frame to hand
            // over is for the tick after the queued ones.
            let ticks = u32::try_from(1 + queued).unwrap_or(u32::MAX);
            self.playout = Some(tick + FRAME_DURATION * ticks - self.guard);
        }
        queued
    }

    /// When the playback tick the device just made (at `pop`, by its note) was due. A
    /// device runs on a steady clock, one tick per frame, but its thread can run late,
    /// and catches up after: the next tick is due a frame after the scheduled time, not
    /// after the late one. So a tick seen later than expected moves the schedule only by
    /// a sixteenth of the difference (enough to follow a device clock slower than ours);
    /// one seen earlier is taken as it is (a device clock faster than ours).
    fn tick_time(&mut self, pop: Instant) {
        let tick = match self.tick {
            Some(previous) => {
                // Whole frames since the last tick seen (the loop may have missed some).
                let frame = FRAME_DURATION.as_micros();
                let since = pop.saturating_duration_since(previous).as_micros();
                let frames = ((since + frame / 2) / frame).clamp(1, 1 << 16);
                let expected = previous + FRAME_DURATION * frames as u32;
                match pop.checked_duration_since(expected) {
                    Some(late) => expected + late / 16,
                    None => pop,
                }
            }
            None => pop,
        };
        self.tick = Some(tick);
    }

    /// An underrun once frames are being handed over means one came too late: the loop
    /// woke later than the guard allowed. Widen the guard.
    fn note_underruns(&mut self) {
        let underruns = self.audio.stats().playback_underruns;
        if underruns > self.underruns && self.pushed > 0 && self.guard < MAX_GUARD {
            self.guard = (self.guard + GUARD).min(MAX_GUARD);
            log::info!(
                "the audio device found nothing to play: the loop was late; \
                 frames now go to it at least {} ms before its tick",
                self.guard.as_millis()
            );
        }
        self.underruns = underruns;
    }

    /// The device's counters, into `stats`.
    fn add_counters(&self, stats: &mut MediaStats) {
        let queues = self.audio.stats();
        stats.underruns = queues.playback_underruns;
        stats.playback_overruns = queues.playback_overruns;
        stats.capture_overruns = queues.capture_overruns;
    }
}

/// The media side of the phone: the device and the legs.
pub struct Media {
    spec: DeviceSpec,
    /// The device, while at least one leg runs.
    device: Option<Device>,
    /// At most [`MAX_LEGS`], room for all of them reserved at once.
    legs: Vec<Leg>,
    /// The counters of the legs removed while the device ran on for the others.
    gone: MediaStats,
    packet: Box<[u8; MAX_RTP_LEN]>,
    /// A frame's µ-law payload, before it is copied behind the RTP header.
    pcmu: Box<[u8; pcmu::FRAME_BYTES]>,
    /// A received frame, or one leg's frame for the mix.
    frame: Box<Frame>,
    mixer: Box<Mixer>,
    last: MediaStats,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("spec", &self.spec)
            .field("active", &self.device.is_some())
            .field("legs", &self.legs.len())
            .finish()
    }
}

impl Media {
    /// Media on the device `spec`; nothing runs until [`Media::start`].
    pub fn new(spec: DeviceSpec) -> Media {
        Media {
            spec,
            device: None,
            legs: Vec::with_capacity(MAX_LEGS),
            gone: MediaStats::default(),
            packet: Box::new([0; MAX_RTP_LEN]),
            pcmu: Box::new([0; pcmu::FRAME_BYTES]),
            frame: Box::new(SILENCE),
            mixer: Box::new(Mixer::new()),
            last: MediaStats::default(),
        }
    }

    /// Opens and closes a sound card at once, so that a missing or broken one is
    /// reported when the phone starts, not at its first call. Other devices are checked
    /// by the command line (files) or cannot fail to open (tone, null).
    pub fn check_device(spec: &DeviceSpec) -> Result<(), parlo_audio::Error> {
        if !matches!(spec, DeviceSpec::Cpal { .. }) {
            return Ok(());
        }
        Audio::start(spec, std::sync::Arc::new(|| {}))?.stop()
    }

    /// Whether media is running (at least one leg, and the device).
    pub fn is_active(&self) -> bool {
        self.device.is_some()
    }

    /// Adds a leg with `peer`, sending `codec` (always L16, as raw PCM, to an original
    /// peer), and starts the device first if no leg runs. A leg already with `peer` is
    /// replaced (its counters start again, as for a new call). `random` seeds the leg's
    /// RTP SSRC, sequence number and timestamp. In an encrypted call (`key`: the peer's),
    /// only media that came out of a session with that key is played (see
    /// [`Media::handle_rtp`]), and what is sent to the peer is sealed for it. A plain call
    /// is media with one leg. Beyond [`MAX_LEGS`] the leg is refused (logged): the
    /// conference layer keeps to eight members.
    pub fn start(
        &mut self,
        peer: SocketAddr,
        dialect: Dialect,
        codec: Codec,
        key: Option<PublicKey>,
        wake: Wake,
        random: u64,
    ) -> Result<(), parlo_audio::Error> {
        if self.device.is_none() {
            let audio = Audio::start(&self.spec, wake)?;
            self.start_device(audio);
        }
        self.add_leg(peer, dialect, codec, key, random);
        Ok(())
    }

    /// Adds a leg as [`Media::start`] does, with `audio` (a device already running) as
    /// the device if none runs yet; tests drive a device's queues themselves through
    /// [`Audio::from_queues`]. When a device already runs, the leg joins it, and `audio`
    /// is stopped (an error it reports is logged).
    pub fn start_on(
        &mut self,
        audio: Audio,
        peer: SocketAddr,
        dialect: Dialect,
        codec: Codec,
        key: Option<PublicKey>,
        random: u64,
    ) {
        if self.device.is_none() {
            self.start_device(audio);
        } else if let Err(e) = audio.stop() {
            log::warn!("audio device not needed for a further leg: {e}");
        }
        self.add_leg(peer, dialect, codec, key, random);
    }

    /// Takes `audio` as the device, for the legs to come.
    fn start_device(&mut self, audio: Audio) {
        self.legs.clear();
        self.gone = MediaStats::default();
        self.last = MediaStats::default();
        self.device = Some(Device::new(audio));
    }

    fn add_leg(
        &mut self,
        peer: SocketAddr,
        dialect: Dialect,
        codec: Codec,
        key: Option<PublicKey>,
        random: u64,
    ) {
        let leg = Leg::new(peer, dialect, codec, key, random);
        log::info!(
            "media with {peer} ({}) on {}",
            match leg.dialect {
                Dialect::Parlo => match leg.codec {
                    Codec::L16 => "RTP L16",
                    Codec::Pcmu => "RTP PCMU",
                },
                Dialect::Original => "raw PCM, original protocol",
            },
            self.spec
        );
        match self.legs.iter().position(|leg| leg.peer == peer) {
            Some(old) => self.legs[old] = leg,
            None if self.legs.len() < MAX_LEGS => self.legs.push(leg),
            None => log::warn!(
                "no media with {peer}: already {MAX_LEGS} legs, the most a conference has"
            ),
        }
    }

    /// Removes the leg with `peer` (nothing if there is none). When it was the last, the
    /// device stops too, and its error, if any, is returned, as [`Media::stop`] does; the
    /// counters of the media then stay for `status`. Otherwise the leg's counters stay in
    /// [`Media::stats`] while the others run.
    pub fn stop_leg(&mut self, peer: SocketAddr) -> Result<(), parlo_audio::Error> {
        let Some(index) = self.legs.iter().position(|leg| leg.peer == peer) else {
            return Ok(());
        };
        if self.legs.len() == 1 {
            return self.stop();
        }
        let leg = self.legs.swap_remove(index);
        let stats = leg.stats();
        log::info!(
            "media with {peer} ended: {} sent, {} received, {} lost, {} late, {} duplicate, \
             {} foreign",
            stats.sent,
            stats.received,
            stats.lost,
            stats.late,
            stats.duplicate,
            stats.foreign_media
        );
        // Its depth and jitter were the leg's own, gone with it.
        self.gone.add(&MediaStats {
            depth: 0,
            jitter_us: 0,
            ..stats
        });
        Ok(())
    }

    /// Stops every leg and the device (joining its thread, finishing an output file).
    /// Returns the error the device met while running, if any.
    pub fn stop(&mut self) -> Result<(), parlo_audio::Error> {
        let Some(device) = self.device.take() else {
            return Ok(());
        };
        self.last = self.running_stats(&device);
        self.legs.clear();
        self.gone = MediaStats::default();
        log::info!(
            "media ended: {} sent, {} received, {} lost, {} late, {} duplicate, \
             {} foreign",
            self.last.sent,
            self.last.received,
            self.last.lost,
            self.last.late,
            self.last.duplicate,
            self.last.foreign_media
        );
        device.audio.stop()
    }

    /// Handles a wake from the device: sends each captured frame to every leg (and hands
    /// a frame over if one is owed and ready). Returns whether the device failed (media
    /// should end).
    pub fn handle_wake(&mut self, link: &mut dyn Link) -> bool {
        let Some(device) = self.device.as_mut() else {
            return false;
        };
        let pcmu_legs = self
            .legs
            .iter()
            .any(|leg| (leg.dialect, leg.codec) == (Dialect::Parlo, Codec::Pcmu));
        while let Some(captured) = device.audio.pop_captured() {
            if pcmu_legs {
                pcmu::encode_frame(&captured, &mut self.pcmu);
            }
            for leg in &mut self.legs {
                leg.send(&captured, &self.pcmu, &mut self.packet, link);
            }
        }
        if device.audio.input_ended() {
            log::trace!("audio input ended; sending silence");
        }
        let failed = device.audio.failed();
        self.hand_over(false);
        failed
    }

    /// When [`Media::handle_playout`] is next due: [`GUARD`] before the device's tick
    /// that the next frame to hand over is for (or, the device being late to take the
    /// frame queued, when to look again). `None` without media or before the device's
    /// first playback tick.
    pub fn playout_deadline(&self) -> Option<Instant> {
        self.device.as_ref().and_then(|d| d.playout)
    }

    /// At the playout deadline: hands the device the frame for its next tick, if that is
    /// still owed (the rules are those of a frame handed over on arrival).
    pub fn handle_playout(&mut self, now: Instant) {
        let Some(device) = self.device.as_mut() else {
            return;
        };
        let queued = device.sync();
        let due = device.playout.is_some_and(|due| due <= now);
        if due && queued > 0 {
            // The device has not taken the frame queued for a tick already due: it runs
            // late. Look again shortly.
            device.playout = Some(now + GUARD / 2);
            return;
        }
        self.hand_over(due);
    }

    /// Moves one mixed frame to the playback queue if the queue is empty (the device has
    /// taken the frame handed over for its last tick: one frame ahead of it at most) and
    /// either every leg that is playing has the frame due (and at least one leg has one),
    /// or `due` (the deadline has come: conceal, or wait for a late frame). Each leg
    /// that has its frame, or every leg at the deadline, gives one ([`Leg::take`]); a leg
    /// whose playout has not begun gives silence, nothing to the mix. A frame handed over
    /// late (after the device ticked without it) thus stays the only one queued; the
    /// jitter buffers keep the next, and their depth control takes the extra delay back.
    fn hand_over(&mut self, due: bool) {
        let Some(device) = self.device.as_mut() else {
            return;
        };
        let queued = device.sync();
        let Some(deadline) = device.playout else {
            return;
        };
        if queued > 0 {
            return;
        }
        let ready = self.legs.iter().any(Leg::ready)
            && self.legs.iter().all(|leg| leg.ready() || !leg.playing());
        if !(due || ready) {
            return;
        }
        for leg in &mut self.legs {
            if due || leg.ready() {
                leg.take(deadline, &mut self.frame);
                self.mixer.add(&self.frame);
            }
        }
        self.mixer.take(&mut self.frame);
        device.audio.push_playback(&self.frame);
        device.pushed += 1;
        device.sync();
    }

    /// A media packet. `arrival` is the arrival time in 8 kHz ticks; `key`: the key of
    /// the encrypted session it came out of (`None`: in the clear). Returns `false` for a
    /// packet from a leg's address that is not the leg's stream (another SSRC or payload
    /// type, or not out of a session with the peer's key in an encrypted call, or out of
    /// one in a plaintext call): counted for that leg, not played, and no sign that the
    /// peer is there; `true` for the rest (a leg's media, or a packet from elsewhere, the
    /// machine's to judge).
    pub fn handle_rtp(
        &mut self,
        from: SocketAddr,
        packet: &RtpRepr<'_>,
        arrival: u32,
        key: Option<PublicKey>,
    ) -> bool {
        let Some(leg) = self.legs.iter_mut().find(|leg| leg.peer == from) else {
            return true;
        };
        if key != leg.key {
            leg.foreign += 1;
            if leg.foreign == 1 {
                log::warn!(
                    "ignoring media from {from} {} in {} call (further ones are only counted)",
                    if key.is_some() {
                        "out of an encrypted session"
                    } else {
                        "in the clear"
                    },
                    if leg.key.is_some() {
                        "an encrypted call with another key"
                    } else {
                        "a plaintext"
                    },
                );
            }
            return false;
        }
        let h = packet.header;
        let learnt = leg.stream.ssrc().is_none();
        let verdict = leg.stream.check(&h);
        if verdict != Verdict::Stream {
            leg.foreign += 1;
            if leg.foreign == 1 {
                // Once a leg: a forged stream must not flood the log.
                let (codec, ssrc) = (h.payload_type.codec(), h.ssrc);
                let call = leg.stream.payload_type().codec();
                match leg.stream.ssrc() {
                    Some(peer) => log::warn!(
                        "ignoring media from {from} that is not the call's stream: {codec} \
                         SSRC {ssrc:08x}, the call's is {call} SSRC {peer:08x} (further ones \
                         are only counted)"
                    ),
                    None => log::warn!(
                        "ignoring media from {from} that is not the call's codec: {codec} \
                         SSRC {ssrc:08x}, the call's is {call} (further ones are only counted)"
                    ),
                }
            }
            return false;
        }
        if learnt {
            log::debug!("the media stream of {from} is SSRC {:08x}", h.ssrc);
        }
        // RtpRepr::parse has checked that the payload is one frame of its type.
        let decoded = match h.payload_type {
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
            leg.jitter
                .put(h.sequence, h.timestamp, arrival, &self.frame);
            leg.arrivals[usize::from(h.sequence) % ARRIVALS] = Some((h.sequence, Instant::now()));
            self.hand_over(false);
        }
        true
    }

    /// A raw PCM datagram from an original peer. `arrival` as for [`Media::handle_rtp`].
    pub fn handle_raw(&mut self, from: SocketAddr, raw: &RawPcm<'_>, arrival: u32) {
        let Some(leg) = self.legs.iter_mut().find(|leg| leg.peer == from) else {
            return;
        };
        raw.read_frame(&mut self.frame);
        let mut seq = leg.raw_seq;
        // Raw PCM carries no sequence number, so a lost datagram is invisible: numbered
        // by arrival alone, every later frame would fall behind the playout point and be
        // dropped as late for the rest of the call. A frame that would be behind takes
        // the next slot to play instead.
        if let Some(next) = leg.jitter.playout_seq() {
            if (seq.wrapping_sub(next) as i16) < 0 {
                seq = next;
            }
        }
        leg.raw_seq = seq.wrapping_add(1);
        let timestamp = u32::from(seq).wrapping_mul(RAW_PCM_LEN as u32 / 2);
        leg.jitter.put(seq, timestamp, arrival, &self.frame);
        leg.arrivals[usize::from(seq) % ARRIVALS] = Some((seq, Instant::now()));
        self.hand_over(false);
    }

    /// The counters of the media running, or of the last: with one leg, that leg's and
    /// the device's; with several, the legs' counters summed (with those of legs already
    /// removed), the largest depth and jitter, the first leg's codec, and the device's
    /// counters once.
    pub fn stats(&self) -> MediaStats {
        match &self.device {
            Some(device) => self.running_stats(device),
            None => self.last,
        }
    }

    /// The counters of each leg running (the device's underruns and overruns are not a
    /// leg's: zero here, see [`Media::stats`]). Nothing once media has stopped.
    pub fn legs(&self) -> impl Iterator<Item = (SocketAddr, MediaStats)> + '_ {
        self.legs.iter().map(|leg| (leg.peer, leg.stats()))
    }

    fn running_stats(&self, device: &Device) -> MediaStats {
        let mut stats = MediaStats::default();
        for leg in &self.legs {
            stats.add(&leg.stats());
        }
        stats.add(&self.gone);
        device.add_counters(&mut stats);
        stats
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
    use parlo_audio::DeviceEnd;
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
            assert!(
                !media.handle_wake(&mut &*udp),
                "the null device does not fail"
            );
            media.handle_playout(Instant::now());
        }
    }

    /// Media in a call with a peer at `peer_ip`, from a UDP socket on `local_ip`, on
    /// queues whose device end the test plays itself.
    fn on_queues(local_ip: &str, peer_ip: &str) -> (Media, UdpSocket, DeviceEnd, SocketAddr) {
        let local = format!("{local_ip}:0").parse().expect("address");
        let udp = UdpSocket::bind(local).expect("bind");
        let peer: SocketAddr = format!("{peer_ip}:5004").parse().expect("address");
        let (wake, _) = wake_counter();
        let (device, end) = parlo_audio::frame_queues(wake);
        let mut media = Media::new(DeviceSpec::Null);
        media.start_on(
            Audio::from_queues(end),
            peer,
            Dialect::Parlo,
            Codec::L16,
            None,
            1,
        );
        (media, udp, device, peer)
    }

    /// An L16 packet of `frame` with sequence number `seq`, as received from the peer.
    fn receive(media: &mut Media, from: SocketAddr, seq: u16, frame: &Frame) {
        let header = RtpHeader {
            payload_type: PayloadType::L16,
            marker: seq == 0,
            sequence: seq,
            timestamp: u32::from(seq) * 512,
            ssrc: 9,
        };
        let mut packet = [0u8; MAX_RTP_LEN];
        let len = header.emit_l16(frame, &mut packet).expect("emit");
        let repr = RtpRepr::parse(&packet[..len]).expect("parse");
        media.handle_rtp(from, &repr, u32::from(seq) * 512, None);
    }

    /// Offers `media` an RTP packet of `frame` from `from`, with `header`'s fields;
    /// returns what `handle_rtp` said.
    fn offer(media: &mut Media, from: SocketAddr, header: RtpHeader, frame: &Frame) -> bool {
        let mut packet = [0u8; MAX_RTP_LEN];
        let len = match header.payload_type {
            PayloadType::L16 => header.emit_l16(frame, &mut packet).expect("emit"),
            PayloadType::Pcmu => {
                let mut payload = [0u8; pcmu::FRAME_BYTES];
                pcmu::encode_frame(frame, &mut payload);
                RtpRepr {
                    header,
                    payload: &payload,
                }
                .emit(&mut packet)
                .expect("emit")
            }
        };
        let repr = RtpRepr::parse(&packet[..len]).expect("parse");
        media.handle_rtp(from, &repr, header.timestamp, None)
    }

    fn header(payload_type: PayloadType, seq: u16, ssrc: u32) -> RtpHeader {
        RtpHeader {
            payload_type,
            marker: false,
            sequence: seq,
            timestamp: u32::from(seq) * 512,
            ssrc,
        }
    }

    #[test]
    fn an_encrypted_call_plays_only_what_came_out_of_a_session_with_the_peer_s_key() {
        let (wake, _) = wake_counter();
        let (mut device, end) = parlo_audio::frame_queues(wake);
        let mut media = Media::new(DeviceSpec::Null);
        let peer: SocketAddr = "127.0.0.226:5004".parse().expect("address");
        media.start_on(
            Audio::from_queues(end),
            peer,
            Dialect::Parlo,
            Codec::L16,
            Some(PublicKey([7; 32])),
            1,
        );
        let frame = |v: i16| [v; parlo_audio::FRAME_SAMPLES];
        let mut packet = [0u8; MAX_RTP_LEN];
        let mut give = |media: &mut Media, seq: u16, value: i16, key: Option<PublicKey>| {
            let header = header(PayloadType::L16, seq, 9);
            let len = header.emit_l16(&frame(value), &mut packet).expect("emit");
            let repr = RtpRepr::parse(&packet[..len]).expect("parse");
            media.handle_rtp(peer, &repr, header.timestamp, key)
        };
        // In the clear, or out of a session with another key, from the peer's very
        // address, with the stream's next fields: not the call's. Out of a session with
        // the peer's key: played.
        let udp = UdpSocket::bind("127.0.0.227:0".parse().expect("address")).expect("bind");
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));
        for seq in 0..2 {
            assert!(!give(&mut media, seq, 66, None));
            assert!(!give(&mut media, seq, 77, Some(PublicKey([8; 32]))));
            assert!(give(
                &mut media,
                seq,
                seq as i16 + 1,
                Some(PublicKey([7; 32]))
            ));
            assert!(device.pop_playback(&mut played));
            assert_eq!(played, frame(seq as i16 + 1));
        }
        assert_eq!(media.stats().foreign_media, 4);
    }

    #[test]
    fn media_of_another_ssrc_or_payload_type_is_ignored_and_counted() {
        let (mut media, udp, mut device, peer) = on_queues("127.0.0.224", "127.0.0.225");
        let frame = |v: i16| [v; parlo_audio::FRAME_SAMPLES];
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));

        // Before the peer's stream is known, a packet of another codec (PCMU in an L16
        // call) is not the call's, and does not teach its SSRC.
        assert!(!offer(
            &mut media,
            peer,
            header(PayloadType::Pcmu, 0, 5),
            &frame(99)
        ));
        // The first L16 packet does: SSRC 9 from now on.
        assert!(offer(
            &mut media,
            peer,
            header(PayloadType::L16, 0, 9),
            &frame(1)
        ));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(1));
        // Frame 1 forged under another SSRC, with the very sequence number due: ignored.
        assert!(!offer(
            &mut media,
            peer,
            header(PayloadType::L16, 1, 5),
            &frame(66)
        ));
        assert!(!offer(
            &mut media,
            peer,
            header(PayloadType::Pcmu, 1, 9),
            &frame(77)
        ));
        // Far-off forged packets in sequence cannot restart the jitter buffer either.
        for seq in 30_000..30_010 {
            assert!(!offer(
                &mut media,
                peer,
                header(PayloadType::L16, seq, 5),
                &frame(55)
            ));
        }
        // The real frame 1 is still due, and plays.
        assert!(offer(
            &mut media,
            peer,
            header(PayloadType::L16, 1, 9),
            &frame(2)
        ));
        assert!(!media.handle_wake(&mut &udp));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(2));
        // From another address: not for the media to judge (the machine counts it).
        let stranger: SocketAddr = "127.0.0.226:5004".parse().expect("address");
        assert!(offer(
            &mut media,
            stranger,
            header(PayloadType::L16, 2, 5),
            &frame(44)
        ));

        let stats = media.stats();
        assert_eq!(stats.foreign_media, 13, "{stats:?}");
        assert_eq!(stats.received, 2, "{stats:?}");
        assert_eq!(stats.discarded, 0, "{stats:?}");
        media.stop().expect("nothing to stop");
        assert_eq!(media.stats().foreign_media, 13, "kept for status");
    }

    #[test]
    fn a_pcmu_call_takes_pcmu_only() {
        let peer: SocketAddr = "127.0.0.228:5004".parse().expect("address");
        let (wake, _) = wake_counter();
        let (_device, end) = parlo_audio::frame_queues(wake);
        let mut media = Media::new(DeviceSpec::Null);
        media.start_on(
            Audio::from_queues(end),
            peer,
            Dialect::Parlo,
            Codec::Pcmu,
            None,
            1,
        );
        let frame = [100; parlo_audio::FRAME_SAMPLES];
        assert!(!offer(
            &mut media,
            peer,
            header(PayloadType::L16, 0, 9),
            &frame
        ));
        assert!(offer(
            &mut media,
            peer,
            header(PayloadType::Pcmu, 0, 9),
            &frame
        ));
        assert!(offer(
            &mut media,
            peer,
            header(PayloadType::Pcmu, 1, 9),
            &frame
        ));
        let stats = media.stats();
        assert_eq!((stats.received, stats.foreign_media), (2, 1), "{stats:?}");
        media.stop().expect("nothing to stop");
    }

    #[test]
    fn a_frame_is_handed_over_as_it_arrives_or_just_before_the_device_tick() {
        let (mut media, udp, mut device, peer) = on_queues("127.0.0.218", "127.0.0.219");
        let mut played = SILENCE;
        let frame = |v: i16| [v; parlo_audio::FRAME_SAMPLES];

        // The device's first tick: nothing to play yet. The loop learns of it when it
        // next runs, and owes the device a frame by its next tick.
        assert!(!media.handle_wake(&mut &udp));
        assert_eq!(media.playout_deadline(), None, "the device has not ticked");
        let before = Instant::now();
        assert!(!device.pop_playback(&mut played));
        let after = Instant::now();
        assert!(!media.handle_wake(&mut &udp));
        let due = media
            .playout_deadline()
            .expect("a tick arms the playout deadline");
        assert!(
            before + FRAME_DURATION - GUARD <= due && due <= after + FRAME_DURATION - GUARD,
            "due {:?} after the tick",
            due - before
        );

        // Before the deadline and without the frame, nothing moves: it may still come
        // (with room to spare for the first frame of a call: START_MARGIN).
        media.handle_playout(due - START_MARGIN - Duration::from_millis(1));
        assert_eq!(media.playout_deadline(), Some(due));
        // It comes: handed over at once, and played at the tick. The next frame is due
        // for the tick after.
        receive(&mut media, peer, 0, &frame(11));
        assert_eq!(media.playout_deadline(), Some(due + FRAME_DURATION));
        // One frame ahead of the device at most: at that deadline, with the device late
        // to take the frame, nothing is added; the loop looks again shortly.
        media.handle_playout(due + FRAME_DURATION);
        assert_eq!(
            media.playout_deadline(),
            Some(due + FRAME_DURATION + GUARD / 2)
        );
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(11));

        // Frame 1 is late: at the deadline the tick is concealed (the buffer waits a tick
        // for it), and it plays at the next one.
        assert!(!media.handle_wake(&mut &udp));
        let due = media.playout_deadline().expect("armed");
        media.handle_playout(due);
        assert!(device.pop_playback(&mut played));
        assert!(
            played != frame(11) && played != SILENCE,
            "a fade of frame 0"
        );
        receive(&mut media, peer, 1, &frame(12));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(12), "handed over as it came");

        // Frame 2 is slow to come and the loop slow to run: the device ticks before
        // anything is handed over and plays silence; frame 2 is handed over after that
        // tick, and frame 3, there too, is not added to the queue behind it (the jitter
        // buffer keeps it).
        assert!(!device.pop_playback(&mut played), "the loop was late");
        receive(&mut media, peer, 2, &frame(13));
        receive(&mut media, peer, 3, &frame(14));
        assert!(!media.handle_wake(&mut &udp));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(13), "late by a tick, but whole");
        assert!(
            !device.pop_playback(&mut played),
            "a single frame was queued: the delay did not grow in the playback queue"
        );
        assert!(!media.handle_wake(&mut &udp));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, frame(14), "one frame per tick again");

        // The underruns, once frames flowed, widened the guard.
        let tick = Instant::now();
        assert!(!media.handle_wake(&mut &udp));
        let due = media.playout_deadline().expect("armed");
        assert!(
            due <= tick + FRAME_DURATION - 2 * GUARD,
            "guard {:?}",
            tick + FRAME_DURATION - due
        );
        assert_eq!(media.stats().underruns, 3);
        media.stop().expect("nothing to stop");
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
            .start(
                peer_addr,
                Dialect::Parlo,
                Codec::L16,
                None,
                wake,
                0x1234_5678_9abc_def0,
            )
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
            media.handle_rtp(peer_addr, &repr, k * 512, None);
            media.handle_rtp(
                "127.0.0.213:5001".parse().expect("address"),
                &repr,
                k * 512,
                None,
            );
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
    fn a_frame_arriving_past_the_deadline_waits_for_the_next_tick() {
        let (mut media, udp, mut device, peer) = on_queues("127.0.0.222", "127.0.0.223");
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        // The first frame comes after the deadline for the device's next tick (the loop
        // had not even seen that the device ticks): that tick stays silent...
        std::thread::sleep(FRAME_DURATION - GUARD + 2 * LATE);
        receive(&mut media, peer, 0, &[7; parlo_audio::FRAME_SAMPLES]);
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, SILENCE);
        // ... and the frame plays at the one after, a whole frame clear of its deadline.
        assert!(!media.handle_wake(&mut &udp));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, [7; parlo_audio::FRAME_SAMPLES]);
        media.stop().expect("nothing to stop");
    }

    #[test]
    fn a_late_device_tick_does_not_move_the_playout_schedule() {
        let (mut media, udp, mut device, _) = on_queues("127.0.0.220", "127.0.0.221");
        let mut played = SILENCE;
        device.pop_playback(&mut played);
        assert!(!media.handle_wake(&mut &udp));
        let first = media.playout_deadline().expect("armed");
        media.handle_playout(first);
        // The device's next tick runs 20 ms (or more) late.
        std::thread::sleep(FRAME_DURATION + Duration::from_millis(20));
        assert!(device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));
        let due = media.playout_deadline().expect("armed");
        // Its schedule did not move (but for a sixteenth of the lateness): the next tick
        // is due two frames after the first, and so is the next frame, a guard before.
        let moved = due - (first + FRAME_DURATION);
        assert!(moved < Duration::from_millis(5), "moved by {moved:?}");
        media.stop().expect("nothing to stop");
    }

    #[test]
    fn pcmu_media_is_rtp_payload_type_0_with_512_mu_law_bytes() {
        let udp = UdpSocket::bind("127.0.0.216:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.217:0");
        let peer_addr = peer.local_addr().expect("address");
        let mut media = Media::new(DeviceSpec::Tone { hz: 1000 });
        let (wake, _) = wake_counter();
        media
            .start(peer_addr, Dialect::Parlo, Codec::Pcmu, None, wake, 5)
            .expect("the tone device starts");
        pump(&mut media, &udp, 2);
        let mut buf = [0u8; 2048];
        let (len, _) = peer.recv_from(&mut buf).expect("a packet");
        assert_eq!(len, 12 + 512);
        assert_eq!(buf[1] & 0x7f, 0, "payload type 0 is PCMU");
        let packet = RtpRepr::parse(&buf[..len]).expect("RTP");
        assert_eq!(packet.header.payload_type, PayloadType::Pcmu);
        // The tone's second sample, µ-law coded, decodes close to the sine's rise.
        let first = pcmu::decode(packet.payload[1]);
        assert!(first > 0, "a sine starting at phase 0 rises: {first}");

        // What we send, we play back when it comes in.
        let repr = RtpRepr::parse(&buf[..len]).expect("RTP");
        media.handle_rtp(peer_addr, &repr, 0, None);
        assert_eq!(media.stats().received, 1);
        assert_eq!(media.stats().codec, Some(Codec::Pcmu));
        media.stop().expect("stops cleanly");
    }

    #[test]
    fn a_device_that_fails_mid_call_is_reported_and_says_why() {
        // Writing the received audio to /dev/full fails once the writer's buffer fills,
        // a few frames into the call: a device failing mid-call, on demand.
        let dir = std::env::temp_dir().join(format!("parlo-media-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let input = dir.join("in.wav");
        let mut wav =
            hound::WavWriter::create(&input, parlo_audio::device::wav_spec()).expect("wav");
        for i in 0..16_000 {
            wav.write_sample(((i % 40) * 100) as i16).expect("sample");
        }
        wav.finalize().expect("finalize");

        let udp = UdpSocket::bind("127.0.0.218:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.219:0");
        let spec = DeviceSpec::File {
            input: input.clone(),
            output: Some("/dev/full".into()),
        };
        let mut media = Media::new(spec);
        let (wake, _) = wake_counter();
        media
            .start(
                peer.local_addr().expect("address"),
                Dialect::Parlo,
                Codec::L16,
                None,
                wake,
                3,
            )
            .expect("the file device starts");
        let limit = Instant::now() + Duration::from_secs(10);
        while !media.handle_wake(&mut &udp) {
            assert!(
                Instant::now() < limit,
                "the device never reported its failure"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let error = media.stop().expect_err("the device says what failed");
        assert!(error.to_string().contains("/dev/full"), "{error}");
        assert!(!media.is_active());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_missing_sound_card_is_an_error_at_start() {
        let spec = DeviceSpec::Cpal {
            device: Some("no-such-card".into()),
        };
        let error = Media::check_device(&spec).expect_err("no such card");
        assert!(error.to_string().contains("no-such-card"), "{error}");
        assert!(Media::check_device(&DeviceSpec::Null).is_ok());
    }

    #[test]
    fn original_media_is_raw_little_endian_pcm() {
        let udp = UdpSocket::bind("127.0.0.214:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.215:0");
        let peer_addr = peer.local_addr().expect("address");
        let mut media = Media::new(DeviceSpec::Tone { hz: 1000 });
        let (wake, _) = wake_counter();
        media
            .start(peer_addr, Dialect::Original, Codec::Pcmu, None, wake, 1)
            .expect("the tone device starts");
        pump(&mut media, &udp, 1);
        let mut buf = [0u8; 2048];
        let (len, _) = peer.recv_from(&mut buf).expect("a datagram");
        assert_eq!(len, RAW_PCM_LEN);
        let first = i16::from_le_bytes([buf[2], buf[3]]);
        assert!(first > 0, "a sine starting at phase 0 rises: {first}");

        assert_eq!(
            media.stats().codec,
            Some(Codec::L16),
            "original peers get PCM"
        );
        let raw = RawPcm::parse(&buf[..len]).expect("raw PCM");
        media.handle_raw(peer_addr, &raw, 0);
        media.handle_raw(peer_addr, &raw, 512);
        assert_eq!(media.stats().received, 2);
        media.stop().expect("stops cleanly");
    }

    /// Media with a leg to each of `peers` (on `ip`, port 5004, each with `keys[i]` if
    /// given, L16), on queues whose device end the test plays itself; the legs after the
    /// first join through [`Media::start_on`] with spare queues, which are stopped.
    fn conference(
        local_ip: &str,
        peers: &[&str],
        keys: &[Option<PublicKey>],
    ) -> (Media, UdpSocket, DeviceEnd, Vec<SocketAddr>) {
        let udp = UdpSocket::bind(format!("{local_ip}:0").parse().expect("address")).expect("bind");
        let (wake, _) = wake_counter();
        let (device, end) = parlo_audio::frame_queues(Arc::clone(&wake));
        let mut media = Media::new(DeviceSpec::Null);
        let mut end = Some(end);
        let mut addrs = Vec::new();
        for (i, ip) in peers.iter().enumerate() {
            let peer: SocketAddr = format!("{ip}:5004").parse().expect("address");
            let end = end
                .take()
                .unwrap_or_else(|| parlo_audio::frame_queues(Arc::clone(&wake)).1);
            let key = keys.get(i).copied().flatten();
            media.start_on(
                Audio::from_queues(end),
                peer,
                Dialect::Parlo,
                Codec::L16,
                key,
                i as u64,
            );
            addrs.push(peer);
        }
        assert_eq!(media.legs().count(), peers.len());
        (media, udp, device, addrs)
    }

    fn flat(v: i16) -> Frame {
        [v; parlo_audio::FRAME_SAMPLES]
    }

    #[test]
    fn three_legs_are_heard_mixed_and_the_slowest_is_waited_for_until_the_deadline() {
        let (mut media, udp, mut device, legs) = conference(
            "127.0.0.230",
            &["127.0.0.231", "127.0.0.232", "127.0.0.233"],
            &[],
        );
        let [a, b, c] = [legs[0], legs[1], legs[2]];
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));

        // The first frame to come plays at once, alone: the other legs have not begun,
        // and hold nothing back. Theirs wait in their jitter buffers.
        receive(&mut media, a, 0, &flat(100));
        receive(&mut media, b, 0, &flat(20));
        receive(&mut media, c, 0, &flat(3));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, flat(100));

        // Once every leg has its frame, the three are heard at once: the sum.
        assert!(!media.handle_wake(&mut &udp));
        receive(&mut media, a, 1, &flat(100));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, flat(123));

        // A leg that has begun and whose frame is missing holds the others back...
        receive(&mut media, a, 2, &flat(100));
        receive(&mut media, b, 1, &flat(20));
        assert!(!media.handle_wake(&mut &udp));
        assert!(
            !device.pop_playback(&mut played),
            "nothing before the deadline"
        );
        // ... until its frame comes,
        receive(&mut media, c, 1, &flat(3));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, flat(123));
        // or the deadline: the others play, the missing one is concealed (a fade of its
        // last frame, at most its level).
        receive(&mut media, a, 3, &flat(100));
        receive(&mut media, b, 2, &flat(20));
        assert!(!media.handle_wake(&mut &udp));
        let due = media.playout_deadline().expect("armed");
        media.handle_playout(due);
        assert!(device.pop_playback(&mut played));
        assert!(
            played.iter().all(|&s| (120..=123).contains(&s)),
            "{:?}",
            &played[..4]
        );

        let stats = media.stats();
        assert_eq!(stats.received, 9, "{stats:?}");
        let per_leg: Vec<(u64, u64)> = media
            .legs()
            .map(|(_, s)| (s.received, s.concealed))
            .collect();
        assert_eq!(per_leg, [(4, 0), (3, 0), (2, 1)], "{per_leg:?}");
        assert_eq!(stats.concealed, 1, "{stats:?}");
        media.stop().expect("nothing to stop");
        assert_eq!(media.stats().received, 9, "kept for status");
        assert_eq!(media.legs().count(), 0);
    }

    #[test]
    fn a_leg_removed_stops_contributing_and_the_last_one_stops_the_device() {
        let (mut media, udp, mut device, legs) = conference(
            "127.0.0.234",
            &["127.0.0.235", "127.0.0.236", "127.0.0.237"],
            &[],
        );
        let [a, b, c] = [legs[0], legs[1], legs[2]];
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));
        for seq in 0..2 {
            receive(&mut media, c, seq, &flat(3));
            receive(&mut media, b, seq, &flat(20));
            receive(&mut media, a, seq, &flat(100));
            assert!(device.pop_playback(&mut played));
            assert!(!media.handle_wake(&mut &udp));
        }
        assert_eq!(played, flat(123));

        media.stop_leg(c).expect("the device runs on");
        assert!(media.is_active());
        assert_eq!(media.legs().count(), 2);
        // C's media is no longer the media's to take: the machine judges it.
        receive(&mut media, c, 2, &flat(3));
        receive(&mut media, b, 2, &flat(20));
        receive(&mut media, a, 2, &flat(100));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, flat(120), "C is gone from the mix");
        // Its counters stay in the total.
        assert_eq!(media.stats().received, 2 + 3 + 3);

        media.stop_leg(a).expect("the device runs on");
        assert!(!media.handle_wake(&mut &udp));
        receive(&mut media, b, 3, &flat(20));
        assert!(device.pop_playback(&mut played));
        assert_eq!(played, flat(20));
        media.stop_leg(c).expect("no such leg: nothing to do");
        media.stop_leg(b).expect("the last leg stops the device");
        assert!(!media.is_active());
        assert_eq!(media.stats().received, 2 + 3 + 4, "kept for status");
    }

    #[test]
    fn media_of_the_wrong_key_or_ssrc_is_foreign_for_its_leg_only() {
        let (ka, kb) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let (mut media, udp, mut device, legs) = conference(
            "127.0.0.238",
            &["127.0.0.239", "127.0.0.240"],
            &[Some(ka), Some(kb)],
        );
        let [a, b] = [legs[0], legs[1]];
        let mut played = SILENCE;
        assert!(!device.pop_playback(&mut played));
        assert!(!media.handle_wake(&mut &udp));
        let give = |media: &mut Media, from, seq, ssrc, key| {
            let header = header(PayloadType::L16, seq, ssrc);
            let mut packet = [0u8; MAX_RTP_LEN];
            let len = header.emit_l16(&flat(5), &mut packet).expect("emit");
            let repr = RtpRepr::parse(&packet[..len]).expect("parse");
            media.handle_rtp(from, &repr, header.timestamp, key)
        };
        // From A's address: B's key, or none, is not A's media; A's key is, and locks
        // A's stream to SSRC 9.
        assert!(!give(&mut media, a, 0, 9, Some(kb)));
        assert!(!give(&mut media, a, 0, 9, None));
        assert!(give(&mut media, a, 0, 9, Some(ka)));
        // Another SSRC from A: foreign for A. The same SSRC from B, with B's key, is B's
        // own first stream: A's lock is not B's.
        assert!(!give(&mut media, a, 1, 5, Some(ka)));
        assert!(give(&mut media, b, 0, 5, Some(kb)));
        assert!(give(&mut media, b, 1, 5, Some(kb)));
        assert!(!give(&mut media, b, 2, 9, Some(kb)));
        let foreign: Vec<(SocketAddr, u64, u64)> = media
            .legs()
            .map(|(addr, s)| (addr, s.foreign_media, s.received))
            .collect();
        assert_eq!(foreign, [(a, 3, 1), (b, 1, 2)]);
        assert_eq!(media.stats().foreign_media, 4);
        media.stop().expect("nothing to stop");
    }

    #[test]
    fn every_captured_frame_goes_to_every_leg_in_its_own_stream() {
        let udp = UdpSocket::bind("127.0.0.241:0".parse().expect("address")).expect("bind");
        let peers = [
            peer_socket("127.0.0.242:0"),
            peer_socket("127.0.0.243:0"),
            peer_socket("127.0.0.244:0"),
        ];
        let addrs: Vec<SocketAddr> = peers
            .iter()
            .map(|p| p.local_addr().expect("address"))
            .collect();
        let (wake, _) = wake_counter();
        let (mut device, end) = parlo_audio::frame_queues(Arc::clone(&wake));
        let mut media = Media::new(DeviceSpec::Null);
        let mut end = Some(end);
        for (i, (addr, dialect, codec)) in [
            (addrs[0], Dialect::Parlo, Codec::L16),
            (addrs[1], Dialect::Parlo, Codec::Pcmu),
            (addrs[2], Dialect::Original, Codec::Pcmu),
        ]
        .into_iter()
        .enumerate()
        {
            let end = end
                .take()
                .unwrap_or_else(|| parlo_audio::frame_queues(Arc::clone(&wake)).1);
            let random = 0x1111_0000_0000_0000 * (i as u64 + 1) + 100 * i as u64;
            media.start_on(Audio::from_queues(end), addr, dialect, codec, None, random);
        }
        for k in 0..3i16 {
            assert!(device.push_captured(&flat(1000 * (k + 1))));
        }
        assert!(!media.handle_wake(&mut &udp));

        let mut buf = [0u8; 2048];
        let mut ssrcs = Vec::new();
        for (n, peer) in peers.iter().enumerate() {
            let mut headers = Vec::new();
            for k in 0..3i16 {
                let (len, from) = peer.recv_from(&mut buf).expect("a packet");
                assert_eq!(from, udp.local_addr().expect("address"));
                let mut frame = SILENCE;
                if n == 2 {
                    let raw = RawPcm::parse(&buf[..len]).expect("raw PCM");
                    raw.read_frame(&mut frame);
                    assert_eq!(frame, flat(1000 * (k + 1)), "raw PCM, to {n}");
                    continue;
                }
                let packet = RtpRepr::parse(&buf[..len]).expect("RTP");
                match packet.header.payload_type {
                    PayloadType::L16 => packet.read_l16(&mut frame).expect("L16"),
                    PayloadType::Pcmu => {
                        let bytes =
                            <&[u8; pcmu::FRAME_BYTES]>::try_from(packet.payload).expect("a frame");
                        pcmu::decode_frame(bytes, &mut frame);
                    }
                }
                let expected = 1000 * (k + 1);
                assert!(
                    frame.iter().all(|&s| (s - expected).abs() <= expected / 16),
                    "frame {k} to {n}: {}",
                    frame[0]
                );
                headers.push(packet.header);
            }
            if n < 2 {
                assert_eq!(headers[1], headers[0].next_frame());
                assert_eq!(headers[2], headers[1].next_frame());
                ssrcs.push(headers[0].ssrc);
            }
        }
        assert_ne!(ssrcs[0], ssrcs[1], "each leg its own stream");
        let sent: Vec<u64> = media.legs().map(|(_, s)| s.sent).collect();
        assert_eq!(sent, [3, 3, 3]);
        assert_eq!(media.stats().sent, 9);
        media.stop().expect("nothing to stop");
    }

    #[test]
    fn media_to_be_sealed_is_not_sent_in_the_clear_by_the_bare_socket() {
        let udp = UdpSocket::bind("127.0.0.245:0".parse().expect("address")).expect("bind");
        let peer = peer_socket("127.0.0.246:0");
        let to = peer.local_addr().expect("address");
        let mut link = &udp;
        assert!(Link::send(&mut link, b"x", to, Some(PublicKey([3; 32]))).is_err());
        Link::send(&mut link, b"y", to, None).expect("in the clear");
        let mut buf = [0u8; 16];
        let (len, _) = peer.recv_from(&mut buf).expect("a datagram");
        assert_eq!(&buf[..len], b"y", "only the packet in the clear went out");
    }
}
