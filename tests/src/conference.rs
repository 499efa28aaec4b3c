//! What the end-to-end conference tests and the conference benchmark share: members that
//! each play a tone of their own as their microphone, the `conference` event read into its
//! parts, waits on several phones at once, and the measure of which tones a recording
//! holds.
//!
//! Each member of a test conference speaks a sine of its own frequency (file device, the
//! tone as IN, what it plays written to OUT). A conference mixes the other members'
//! voices and never a member's own, so a member's recording must hold every other
//! member's tone and not its own: [`tone_level`] measures each frequency's share of a
//! recording's energy with the Goertzel filter of [`crate::capture`].
//!
//! The waits here never consume a phone's events (unlike [`Phone::expect_event`]): they
//! poll everything the phone printed so far, so that several phones can be watched in any
//! order and a test can later look back at what was printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capture::{WINDOW, goertzel, tone};
use crate::phone_harness::{Event, Phone, PhoneBuilder, SAMPLE_RATE, read_wav, write_wav};

/// Loudness of each member's tone, in dBFS: eight of them add up to at most
/// 8 · 3277 = 26,214, below full scale, so the mix never clips.
pub const TONE_DBFS: f64 = -20.0;

/// Below this share of a recording's energy (see [`tone_level`]) a tone is absent. A tone
/// 150 Hz from the one measured leaks about 0.001 of its energy into a 512-sample window;
/// silence between frames or a concealed frame moves nothing at a frequency nobody sends.
pub const ABSENT_MAX: f64 = 0.02;

/// At or above this share a tone is heard. One of `k` equal tones holds `1 / k` of the
/// energy: 0.14 with the 7 others of a full conference, 0.33 with three, so 0.08 leaves
/// room for a voice that is missing (lost, concealed) in part of the windows.
pub const HEARD_MIN: f64 = 0.08;

/// Windows quieter than this RMS are left out of [`tone_level`]: the silence before the
/// first voice arrives, or between a departure and the next voice.
pub const QUIET_RMS: f64 = 100.0;

/// One other member as a `conference` event lists it: `name:verification:legs=K/N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// Its name.
    pub name: String,
    /// How this phone's leg to it is verified (`key`), or `-` while that leg is not up.
    pub verification: String,
    /// The legs the member reported connected.
    pub legs_up: u32,
    /// The legs it should hold.
    pub legs_due: u32,
}

/// A `conference <id> members=...` event, read into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceState {
    /// The conference's id: 16 hexadecimal digits.
    pub id: String,
    /// Every other member, in the order printed.
    pub members: Vec<MemberState>,
}

impl ConferenceState {
    /// Reads a `conference` event in its text form:
    /// `conference 0123456789abcdef members=bob:key:legs=3/3,carol:-:legs=1/3`. `None` for
    /// another event or a line of another shape.
    pub fn parse(event: &Event) -> Option<ConferenceState> {
        if event.kind != "conference" {
            return None;
        }
        let mut words = event.line.split(' ');
        words.next()?;
        let id = words.next()?.to_owned();
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let list = event.field("members")?;
        let mut members = Vec::new();
        for item in list.split(',').filter(|item| !item.is_empty()) {
            let mut parts = item.splitn(3, ':');
            let name = parts.next()?.to_owned();
            let verification = parts.next()?.to_owned();
            let (up, due) = parts.next()?.strip_prefix("legs=")?.split_once('/')?;
            members.push(MemberState {
                name,
                verification,
                legs_up: up.parse().ok()?,
                legs_due: due.parse().ok()?,
            });
        }
        Some(ConferenceState { id, members })
    }

    /// The member called `name`, if listed.
    pub fn member(&self, name: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Whether the others are exactly `others`, each verified by key and holding all its
    /// legs: `name:key:legs=N/N` with `N = others.len()` (each member holds a leg to every
    /// member but itself, and the members are `others` and this phone).
    pub fn is_complete(&self, others: &[&str]) -> bool {
        let n = others.len() as u32;
        self.members.len() == others.len()
            && others.iter().all(|name| {
                self.member(name)
                    .is_some_and(|m| m.verification == "key" && m.legs_up == n && m.legs_due == n)
            })
    }
}

/// The last `conference` event `phone` printed, read.
pub fn latest_conference(phone: &Phone) -> Option<ConferenceState> {
    phone
        .events()
        .iter()
        .rev()
        .find(|e| e.kind == "conference")
        .and_then(ConferenceState::parse)
}

/// Polls everything `phone` printed every 50 ms until `check` finds what it looks for in
/// its events; fails the test with the phone's transcript after `patience`.
pub fn wait_for<T>(
    phone: &Phone,
    what: &str,
    patience: Duration,
    mut check: impl FnMut(&[Event]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(found) = check(&phone.events()) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {what} within {patience:?}\n{}",
            phone.name,
            phone.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until each of `phones` shows, in its latest `conference` event, every other one
/// of `phones` and nobody else, verified by key and holding all its legs
/// ([`ConferenceState::is_complete`]). Returns the conference's id, checked to be the same
/// everywhere.
pub fn wait_complete(phones: &[&Phone], patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    let mut ids = Vec::new();
    for phone in phones {
        let others: Vec<&str> = phones
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| *n != phone.name)
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let state = wait_for(
            phone,
            &format!("conference event with {others:?} all at legs=N/N"),
            left,
            |_| latest_conference(phone).filter(|c| c.is_complete(&others)),
        );
        ids.push((phone.name.clone(), state.id));
    }
    let first = ids[0].1.clone();
    assert!(
        ids.iter().all(|(_, id)| *id == first),
        "the members disagree on the conference's id: {ids:?}"
    );
    first
}

/// Waits for `phone` to print `left NAME reason=...` for `name`, and checks the reason.
/// Returns the event.
pub fn wait_left(phone: &Phone, name: &str, reason: &str, patience: Duration) -> Event {
    let event = wait_for(phone, &format!("`left {name}`"), patience, |events| {
        events
            .iter()
            .find(|e| e.kind == "left" && e.peer() == Some(name))
            .cloned()
    });
    assert_eq!(
        event.reason().as_deref(),
        Some(reason),
        "{}: {name} left for another reason: {event}\n{}",
        phone.name,
        phone.transcript()
    );
    event
}

/// Waits for every one of `phones` to print `left NAME reason=REASON` for `name`, polling
/// them in turn every 20 ms; returns, for each phone, when the poll first saw it (within
/// 20 ms of its printing, whatever the order the phones print in). Fails the test with the
/// transcript of a phone that printed nothing of the kind within `patience`, or gave
/// another reason.
pub fn wait_left_all(
    phones: &[&Phone],
    name: &str,
    reason: &str,
    patience: Duration,
) -> Vec<Instant> {
    let deadline = Instant::now() + patience;
    let mut seen: Vec<Option<Instant>> = vec![None; phones.len()];
    while seen.iter().any(Option::is_none) {
        for (phone, seen) in phones.iter().zip(&mut seen) {
            if seen.is_some() {
                continue;
            }
            let events = phone.events();
            let Some(left) = events
                .iter()
                .find(|e| e.kind == "left" && e.peer() == Some(name))
            else {
                continue;
            };
            assert_eq!(
                left.reason().as_deref(),
                Some(reason),
                "{}: {name} left for another reason: {left}\n{}",
                phone.name,
                phone.transcript()
            );
            *seen = Some(Instant::now());
        }
        if let Some(late) = phones.iter().zip(&seen).find(|(_, s)| s.is_none()) {
            assert!(
                Instant::now() < deadline,
                "{}: no `left {name}` within {patience:?}\n{}",
                late.0.name,
                late.0.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    seen.into_iter().flatten().collect()
}

/// A member of a test conference: a phone whose microphone is a tone of its own.
#[derive(Debug)]
pub struct Member {
    /// The phone.
    pub phone: Phone,
    /// The frequency it speaks, in Hz.
    pub tone: f64,
    /// Its microphone: [`TONE_DBFS`] of `tone`.
    pub mic: PathBuf,
    /// What it played: the mix of the others.
    pub speaker: PathBuf,
    /// When `quit` (or `hangup`, for one that leaves) was sent: the end of its recording.
    pub stopped: Option<Instant>,
}

impl Member {
    /// Writes `seconds` of `tone` Hz to `dir/NAME-mic.wav`, starts `name` with the file
    /// device (recording into `dir/NAME-speaker.wav`) and what `configure` adds (the
    /// server, `--auto-answer`, ...), and waits until it is registered.
    pub fn start(
        dir: &Path,
        name: &str,
        tone_hz: f64,
        seconds: f64,
        configure: impl FnOnce(PhoneBuilder) -> PhoneBuilder,
    ) -> Member {
        let mic = dir.join(format!("{name}-mic.wav"));
        let speaker = dir.join(format!("{name}-speaker.wav"));
        write_wav(&mic, &tone(tone_hz, TONE_DBFS, seconds));
        let builder =
            Phone::builder(name).audio(format!("file:{},{}", mic.display(), speaker.display()));
        Member {
            phone: Phone::start_registered(configure(builder)),
            tone: tone_hz,
            mic,
            speaker,
            stopped: None,
        }
    }

    /// Sends `quit` without waiting, and notes the time: the end of the recording.
    pub fn send_quit(&mut self) {
        self.phone.send("quit");
        self.stopped = Some(Instant::now());
    }

    /// Waits for the phone to exit after [`Member::send_quit`] and reads its recording,
    /// finished when its device stopped. Fails if it exits with an error.
    pub fn finish(&mut self) -> Recording {
        let status = self.phone.wait();
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            self.phone.name,
            self.phone.transcript()
        );
        let end = self.stopped.unwrap_or_else(Instant::now);
        Recording::ending_at(read_wav(&self.speaker), end)
    }
}

/// What a member played, placed in time: its last sample was played at `end` (the file
/// device plays one frame per frame period, in real time, until it is stopped).
#[derive(Debug, Clone)]
pub struct Recording {
    /// The samples, at 8 kHz.
    pub samples: Vec<i16>,
    /// When the last one was played.
    pub end: Instant,
}

impl Recording {
    /// A recording whose last sample was played at `end`.
    pub fn ending_at(samples: Vec<i16>, end: Instant) -> Recording {
        Recording { samples, end }
    }

    /// The index of the sample played at `at`, clamped to the recording.
    pub fn index(&self, at: Instant) -> usize {
        let before_end = self.end.saturating_duration_since(at).as_secs_f64();
        let back = (before_end * f64::from(SAMPLE_RATE)).round() as usize;
        self.samples.len().saturating_sub(back)
    }

    /// The samples played between `from` and `to`. Fails the test if that is less than
    /// `at_least` (the recording is too short: the device started late or stopped early).
    pub fn between(&self, from: Instant, to: Instant, at_least: Duration) -> &[i16] {
        let (a, b) = (self.index(from), self.index(to).max(self.index(from)));
        let wanted = (at_least.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize;
        assert!(
            b - a >= wanted,
            "only {} samples recorded in the span asked for (samples {a}..{b} of {}); \
             {wanted} wanted",
            b - a,
            self.samples.len()
        );
        &self.samples[a..b]
    }
}

/// The share of the energy of `samples` that lies at `freq` Hz: the mean, over the
/// [`WINDOW`]-sample windows louder than [`QUIET_RMS`], of [`goertzel`] in each. About
/// `1 / k` for one of `k` equal tones, 0 for a tone nobody sends; 0 when every window is
/// quiet. Short windows keep a frame concealed or dropped by a jitter buffer (a jump of
/// phase) from cancelling a long coherent sum.
pub fn tone_level(samples: &[i16], freq: f64) -> f64 {
    let mut sum = 0.0;
    let mut loud = 0usize;
    let mut window = [0f64; WINDOW];
    for chunk in samples.chunks_exact(WINDOW) {
        for (w, &s) in window.iter_mut().zip(chunk) {
            *w = f64::from(s);
        }
        let rms = (window.iter().map(|x| x * x).sum::<f64>() / WINDOW as f64).sqrt();
        if rms < QUIET_RMS {
            continue;
        }
        sum += goertzel(&window, freq, f64::from(SAMPLE_RATE));
        loud += 1;
    }
    if loud == 0 { 0.0 } else { sum / loud as f64 }
}

/// Checks that `samples` hold each tone of `heard` (level at least [`HEARD_MIN`]) and none
/// of `absent` (at most [`ABSENT_MAX`]); prints every level. `what` names the recording in
/// the messages.
pub fn assert_tones(what: &str, samples: &[i16], heard: &[f64], absent: &[f64]) {
    let levels = |tones: &[f64]| -> Vec<(f64, f64)> {
        tones.iter().map(|&f| (f, tone_level(samples, f))).collect()
    };
    let (present, missing) = (levels(heard), levels(absent));
    let show = |levels: &[(f64, f64)]| {
        levels
            .iter()
            .map(|(f, l)| format!("{f:.0} Hz {l:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{what}: {} samples; heard: {}; absent: {}",
        samples.len(),
        show(&present),
        show(&missing)
    );
    for &(f, level) in &present {
        assert!(
            level >= HEARD_MIN,
            "{what}: the {f:.0} Hz tone is missing (level {level:.3} < {HEARD_MIN}); heard: \
             {}; absent: {}",
            show(&present),
            show(&missing)
        );
    }
    for &(f, level) in &missing {
        assert!(
            level <= ABSENT_MAX,
            "{what}: the {f:.0} Hz tone should not be there (level {level:.3} > \
             {ABSENT_MAX}); heard: {}; absent: {}",
            show(&present),
            show(&missing)
        );
    }
}

/// The tones of `members` other than `me`'s.
pub fn others_tones(members: &[&Member], me: &str) -> Vec<f64> {
    members
        .iter()
        .filter(|m| m.phone.name != me)
        .map(|m| m.tone)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Event {
        Event::parse(line, false, Instant::now()).expect("an event")
    }

    #[test]
    fn conference_events_are_read_into_members_and_legs() {
        let e = event("conference 00000000deadbeef members=bob:key:legs=3/3,carol:-:legs=1/3");
        let state = ConferenceState::parse(&e).expect("a conference event");
        assert_eq!(state.id, "00000000deadbeef");
        assert_eq!(
            state.member("carol"),
            Some(&MemberState {
                name: "carol".into(),
                verification: "-".into(),
                legs_up: 1,
                legs_due: 3,
            })
        );
        assert!(!state.is_complete(&["bob", "carol"]));
        let done = event("conference 00000000deadbeef members=bob:key:legs=2/2,carol:key:legs=2/2");
        let done = ConferenceState::parse(&done).expect("read");
        assert!(done.is_complete(&["carol", "bob"]));
        assert!(!done.is_complete(&["bob"]), "a member too many");
        assert!(!done.is_complete(&["bob", "carol", "dave"]), "one missing");
        let empty = ConferenceState::parse(&event("conference 0123456789abcdef members="));
        assert_eq!(empty.map(|c| c.members.len()), Some(0));
        for bad in [
            "conference 12 members=bob:key:legs=1/1",
            "conference 0123456789abcdef members=bob:key:3/3",
            "conference 0123456789abcdef members=bob:key:legs=x/3",
            "left bob reason=hung-up",
        ] {
            assert_eq!(ConferenceState::parse(&event(bad)), None, "{bad}");
        }
    }

    fn mix(tones: &[f64], seconds: f64) -> Vec<i16> {
        let voices: Vec<Vec<i16>> = tones.iter().map(|&f| tone(f, TONE_DBFS, seconds)).collect();
        (0..voices[0].len())
            .map(|n| voices.iter().map(|v| i32::from(v[n])).sum::<i32>() as i16)
            .collect()
    }

    #[test]
    fn tone_levels_tell_the_mixed_tones_from_the_absent_ones() {
        let all = [350.0, 500.0, 700.0, 900.0, 1200.0];
        for own in all {
            let others: Vec<f64> = all.iter().copied().filter(|&f| f != own).collect();
            let heard = mix(&others, 2.0);
            for &f in &others {
                let level = tone_level(&heard, f);
                assert!((0.2..0.3).contains(&level), "{f} Hz among 4: {level}");
            }
            let leak = tone_level(&heard, own);
            assert!(leak < ABSENT_MAX / 4.0, "{own} Hz leaks {leak}");
        }
        // A voice missing from a third of the windows (silence, then the others) is still
        // well above the floor.
        let mut gappy = mix(&[350.0, 500.0], 3.0);
        for s in &mut gappy[..8000] {
            *s = 0;
        }
        assert!(tone_level(&gappy, 350.0) > 0.4);
        // Quiet windows count for nothing; all quiet is 0.
        assert_eq!(tone_level(&[0; 4096], 350.0), 0.0);
        assert_eq!(tone_level(&vec![30; 4096], 350.0), 0.0);
        // The control: a member's own microphone is its tone alone.
        assert!(tone_level(&tone(700.0, TONE_DBFS, 1.0), 700.0) > 0.95);
    }

    #[test]
    fn a_recording_is_placed_in_time_from_its_end() {
        let end = Instant::now() + Duration::from_secs(10);
        let rec = Recording::ending_at(vec![0; 8000 * 5], end);
        assert_eq!(rec.index(end), 40_000);
        assert_eq!(rec.index(end - Duration::from_secs(1)), 32_000);
        assert_eq!(rec.index(end - Duration::from_secs(60)), 0);
        assert_eq!(rec.index(end + Duration::from_secs(1)), 40_000);
        let span = rec.between(
            end - Duration::from_secs(3),
            end - Duration::from_millis(500),
            Duration::from_secs(2),
        );
        assert_eq!(span.len(), 20_000);
    }

    #[test]
    #[should_panic(expected = "samples recorded in the span")]
    fn a_span_beyond_the_start_of_a_recording_is_refused() {
        let end = Instant::now();
        let rec = Recording::ending_at(vec![0; 8000], end);
        rec.between(
            end - Duration::from_secs(3),
            end - Duration::from_secs(2),
            Duration::from_millis(900),
        );
    }
}
