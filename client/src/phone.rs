//! The phone's event loop: one thread, one `mio` poll, the user agent in the middle.
//!
//! Sources: the UDP socket (signalling and media), the directory connection, signals,
//! stdin, the control socket, and a waker shared by the audio device thread, the stdin
//! reader thread and the directory server's host-name lookup. The loop owns them, the
//! audio device, the clock and the timers; every decision is the user agent's
//! ([`Agent`]): each input is handed to it, then its outputs are carried out here in
//! order (print and answer, send, ask the directory, start or stop media) until it has
//! none. Timers are the agent's (the call machine's and the quit limit) plus the
//! directory's reconnection and media's playout deadline (a frame handed to the audio
//! device just before its tick).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use parlo_fsm as fsm;
use parlo_net::media::{Datagram, RAW_PCM_LEN};
use parlo_net::message::{self, SessionLine};
use parlo_net::peer::Wire;
use parlo_net::secure::{self, Kind};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::agent::{self, Agent, MediaFailure, Origin, Output, Settings, Snapshot};
use crate::cli::PhoneConfig;
use crate::control::Control;
use crate::crypto::{Closed, Crypto, SealedLink};
use crate::directory::{Directory, Outcome};
use crate::error::{Error, Exit};
use crate::keys::Keys;
use crate::media::{self, Media};
use crate::output::{Event as Out, Format};
use crate::pins::KnownPeers;
use crate::random::OsRandom;
use crate::stdin::{Input, Stdin};

const UDP: Token = Token(0);
const DIRECTORY: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
const STDIN: Token = Token(4);
const CONTROL: Token = Token(5);
/// Control connections take tokens from here on.
const FIRST_CONNECTION: usize = 16;

/// Largest datagram read; anything longer is cut and fails to parse.
const RECV_BUF: usize = 2048;

/// The running phone.
pub struct Phone {
    json: bool,
    poll: Poll,
    waker: Arc<Waker>,
    started: Instant,
    udp: UdpSocket,
    agent: Agent<OsRandom>,
    directory: Directory,
    outcomes: Vec<Outcome>,
    media: Media,
    control: Option<Control>,
    stdin: Stdin,
    signals: Signals,
    /// Each call's SSRC, first sequence number and timestamp.
    random: OsRandom,
    /// Datagrams that could not be parsed.
    garbage: u64,
    /// The encrypted sessions with other phones.
    crypto: Crypto,
    /// Other phones' pinned keys, as written to `known_peers`.
    known_peers: KnownPeers,
    /// Where media is sealed: allocated once.
    sealed: Box<[u8; secure::MAX_DATAGRAM]>,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("name", self.agent.name())
            .field("state", &self.agent.state())
            .finish()
    }
}

fn poll_error(doing: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Poll { doing, source }
}

impl Phone {
    /// Binds the sockets and sets every source up. Nothing is sent yet.
    pub fn new(mut config: PhoneConfig) -> Result<Phone, Error> {
        Media::check_device(&config.audio).map_err(Error::Audio)?;
        let started = Instant::now();
        let poll = Poll::new().map_err(poll_error("create the event loop"))?;
        let registry = poll.registry();
        let waker = Arc::new(Waker::new(registry, WAKER).map_err(poll_error("create a waker"))?);
        let mut udp = UdpSocket::bind(config.listen).map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        // With port 0 the system picked one: the directory must be given that one.
        config.listen = udp
            .local_addr()
            .map_err(poll_error("read the address of the UDP socket"))?;
        registry
            .register(&mut udp, UDP, Interest::READABLE)
            .map_err(poll_error("watch the UDP socket"))?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(poll_error("handle signals"))?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(poll_error("watch signals"))?;
        let control = match &config.control {
            Some(path) => Some(Control::bind(path, registry, CONTROL, FIRST_CONNECTION)?),
            None => None,
        };
        let stdin = Stdin::open(registry, STDIN, Arc::clone(&waker));
        let keys = Keys::load(&config)?;
        let known_peers =
            KnownPeers::load(&config.known_peers).map_err(|why| Error::KnownPeers {
                path: config.known_peers.clone(),
                why,
            })?;
        let on = config.security != fsm::Security::Off;
        let crypto = Crypto::new(
            keys.identity.clone(),
            secure::Config {
                max_skew: config.max_clock_skew_ms,
                rekey_after: config.rekey_after_ms,
                ..secure::Config::default()
            },
            on,
            OsRandom::new().map_err(Error::Random)?,
        );
        log::info!(
            "security {}: {}; {} other phones' keys pinned in {}",
            config.security.name(),
            match config.security {
                fsm::Security::Required => "calls with Parlo phones are encrypted, or refused",
                fsm::Security::Preferred => {
                    "calls with Parlo phones are encrypted when their key is known"
                }
                fsm::Security::Off => "no call is encrypted",
            },
            known_peers.len(),
            known_peers.path().display()
        );
        let call_ids = OsRandom::new().map_err(Error::Random)?;
        let mut random = OsRandom::new().map_err(Error::Random)?;
        let mut settings = Settings::of(&config, known_peers.pins(), keys.identity.public());
        // Truncation intended: 32 random bits.
        settings.run = random.next_u64() as u32;
        let agent = Agent::new(settings, call_ids, fsm::Instant(0));
        let lookup_waker = Arc::clone(&waker);
        let directory = Directory::new(
            config.server.clone(),
            config.name.clone(),
            config.listen,
            DIRECTORY,
            random.next_u64(),
            started,
            Arc::new(move || {
                let _ = lookup_waker.wake();
            }),
            parlo_daemon::notify::Notifier::from_env(),
            keys,
        );
        log::info!(
            "{} listening for calls on UDP {}, directory server {}, audio {}",
            config.name.as_str(),
            config.listen,
            config.server,
            config.audio
        );
        Ok(Phone {
            json: config.json,
            media: Media::new(config.audio),
            poll,
            waker,
            started,
            udp,
            agent,
            directory,
            outcomes: Vec::with_capacity(8),
            control,
            stdin,
            signals,
            random,
            garbage: 0,
            crypto,
            known_peers,
            sealed: Box::new([0; secure::MAX_DATAGRAM]),
        })
    }

    /// The agent's clock: milliseconds since start.
    fn ms(&self) -> fsm::Instant {
        fsm::Instant(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn at(&self, instant: fsm::Instant) -> Instant {
        self.started + Duration::from_millis(instant.0)
    }

    /// Runs until `quit`, a signal, or the end of stdin (see `--help`).
    pub fn run(mut self) -> Result<Exit, Error> {
        self.directory.ready();
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            self.handle_timers(now);
            if self.agent.is_done(self.ms(), self.directory.has_pending()) {
                break;
            }
            let timeout = self
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(now));
            parlo_daemon::wait(&mut self.poll, &mut events, timeout)
                .map_err(poll_error("wait for events"))?;
            for event in events.iter() {
                match event.token() {
                    UDP => self.handle_udp(),
                    DIRECTORY => {
                        let now = Instant::now();
                        self.directory
                            .handle_ready(self.poll.registry(), now, &mut self.outcomes);
                    }
                    SIGNALS => self.handle_signals(),
                    WAKER => self.handle_wake(),
                    STDIN => self.handle_stdin(),
                    CONTROL => {
                        if let Some(control) = &mut self.control {
                            control.accept(self.poll.registry());
                        }
                    }
                    token => self.handle_control(token, event.is_readable(), event.is_writable()),
                }
                self.drive();
            }
        }
        Ok(self.finish())
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.agent.poll_timeout().map(|t| self.at(t)),
            self.directory.poll_timeout(),
            self.media.playout_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timers(&mut self, now: Instant) {
        self.media.handle_playout(now);
        self.agent.handle_timeout(self.ms());
        self.drive();
        self.directory
            .handle_timeout(self.poll.registry(), now, &mut self.outcomes);
        self.drive();
    }

    // ---- the agent's outputs ----

    /// Carries out the agent's outputs until it has none, and hands it what the
    /// directory connection reported meanwhile.
    fn drive(&mut self) {
        loop {
            while let Some(output) = self.agent.poll_output() {
                self.execute(output);
            }
            if self.outcomes.is_empty() {
                return;
            }
            let outcome = self.outcomes.remove(0);
            self.agent.handle_directory(self.ms(), outcome);
        }
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Print { event, answer } => self.write(&event, answer),
            Output::Send { to, message, key } => self.send(to, &message, key),
            Output::SendLine {
                to,
                key,
                line,
                open,
            } => self.send_line(to, key, &line, open),
            Output::Pin { name, key } => {
                if let Err(e) = self.known_peers.pin(&name, key) {
                    log::warn!(
                        "cannot write the pin of {name} to {}: {e} (it holds until the phone \
                         stops)",
                        self.known_peers.path().display()
                    );
                }
            }
            Output::Query { query, purpose } => {
                let registry = self.poll.registry();
                let now = Instant::now();
                let sent =
                    self.directory
                        .request(registry, query, purpose, now, &mut self.outcomes);
                if let Err((purpose, why)) = sent {
                    let failed = Outcome::Answer(purpose, Err(why));
                    self.agent.handle_directory(self.ms(), failed);
                }
            }
            Output::StartMedia {
                peer,
                dialect,
                codec,
                key,
            } => {
                let waker = Arc::clone(&self.waker);
                let wake: parlo_audio::Wake = Arc::new(move || {
                    let _ = waker.wake();
                });
                let random = self.random.next_u64();
                if let Err(e) = self.media.start(peer, dialect, codec, key, wake, random) {
                    let failure = MediaFailure::Start(e.to_string());
                    self.agent.handle_media_failed(self.ms(), failure);
                }
            }
            Output::StopMedia { peer: None } => self.stop_media(),
            Output::StopMedia { peer: Some(peer) } => {
                if let Err(e) = self.media.stop_leg(peer) {
                    let failure = MediaFailure::Stop(e.to_string());
                    self.agent.handle_media_failed(self.ms(), failure);
                }
            }
            Output::Disconnect => {
                self.directory
                    .disconnect(self.poll.registry(), Instant::now(), &mut self.outcomes);
            }
            Output::ShowStatus { answer } => {
                let status = Out::Status(Box::new(self.agent.status(&self.snapshot())));
                self.write(&status, Some(answer));
            }
            Output::Configure {
                connection,
                watch,
                format,
            } => {
                if let Some(control) = &mut self.control {
                    control.configure(self.poll.registry(), connection, watch, format);
                }
            }
        }
    }

    /// Sends `message` to `to`: sealed for `key`, or in the clear.
    fn send(&mut self, to: SocketAddr, message: &fsm::Message, key: Option<fsm::PublicKey>) {
        let mut line = [0u8; parlo_net::peer::MAX_MESSAGE_LEN];
        let len = match message.emit(&mut line) {
            Ok(len) => len,
            Err(e) => return log::error!("cannot encode {}: {e}", message.keyword()),
        };
        let Some(key) = key else {
            log::debug!("-> {to}: {}", message.wire());
            if let Err(e) = self.udp.send_to(&line[..len], to) {
                log::warn!("cannot send {} to {to}: {e}", message.keyword());
            }
            return;
        };
        let start = matches!(message, fsm::Message::Start { .. });
        let now = self.ms().0;
        let mut sealed = [0u8; secure::MAX_DATAGRAM];
        let n = match self
            .crypto
            .seal(now, to, &key, &line[..len], start, &mut sealed)
        {
            Ok(n) => n,
            Err(e) => {
                // A CLOSE before the callee's answer came: there is no session to send it
                // on (the callee stops ringing by itself).
                return log::debug!("cannot send {} to {to}: {e}", message.keyword());
            }
        };
        log::debug!("-> {to} (encrypted, {n} bytes): {}", message.wire());
        if let Err(e) = self.udp.send_to(&sealed[..n], to) {
            log::warn!("cannot send {} to {to}: {e}", message.keyword());
        }
        // Answering a START completes its session: its short code is known now.
        if !start {
            if let Some(session) = self.crypto.session(to).filter(|s| s.key == key) {
                self.agent.handle_session(to, key, session.code.to_string());
            }
        }
    }

    /// Sends a line of a message session to `to`, sealed for `key` (`open`: as the Init
    /// that opens the session).
    fn send_line(&mut self, to: SocketAddr, key: fsm::PublicKey, line: &SessionLine, open: bool) {
        let mut text = [0u8; message::MAX_LINE];
        let len = match message::emit_session_line(line, &mut text) {
            Ok(len) => len,
            Err(e) => return log::error!("cannot encode a message line: {e}"),
        };
        let now = self.ms().0;
        let mut sealed = [0u8; secure::MAX_DATAGRAM];
        match self
            .crypto
            .seal(now, to, &key, &text[..len], open, &mut sealed)
        {
            Ok(n) => {
                log::debug!("-> {to} (encrypted, {n} bytes): message line of {len} bytes");
                if let Err(e) = self.udp.send_to(&sealed[..n], to) {
                    log::warn!("cannot send a message line to {to}: {e}");
                }
            }
            Err(e) => log::debug!("cannot send a message line to {to}: {e}"),
        }
    }

    fn stop_media(&mut self) {
        if let Err(e) = self.media.stop() {
            let failure = MediaFailure::Stop(e.to_string());
            self.agent.handle_media_failed(self.ms(), failure);
        }
    }

    /// Prints an event on stdout, and sends it to the control connection it answers and
    /// to the watching ones.
    fn write(&mut self, event: &Out, answer: Option<Origin>) {
        let line = event.line(self.json);
        let mut stdout = io::stdout().lock();
        // A closed stdout (a terminal gone) must not stop the phone.
        let _ = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
        drop(stdout);
        if let Some(control) = &mut self.control {
            let to = match answer {
                Some(Origin::Control(id)) => Some(id),
                _ => None,
            };
            let news = agent::is_news(event, answer);
            control.deliver(self.poll.registry(), event, to, news, Format::of(self.json));
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            media: self.media.stats(),
            garbage: self.garbage,
            registration: self.directory.registration(Instant::now()),
            secure: self.crypto.counters(),
            rekeys: self
                .agent
                .peer_addr()
                .and_then(|addr| self.crypto.session(addr))
                .map_or(0, |session| session.rekeys),
            legs: self.media.legs().collect(),
        }
    }

    // ---- inputs ----

    fn handle_udp(&mut self) {
        let mut buf = [0u8; RECV_BUF];
        loop {
            let (len, from) = match self.udp.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if media::is_transient(&e) => {
                    log::debug!("UDP: {e} (a peer went away)");
                    continue;
                }
                Err(e) => {
                    log::warn!("UDP socket: {e}");
                    return;
                }
            };
            let now = self.ms();
            let dialect = self.agent.media_dialect(now, from);
            // RTP time: 8 kHz samples.
            let arrival = (now.0 as u32).wrapping_mul(8);
            let datagram = &buf[..len];
            // An original peer's raw PCM may start with any byte.
            let raw = dialect == Some(fsm::Dialect::Original) && len == RAW_PCM_LEN;
            if !raw && datagram.first().copied().is_some_and(secure::is_secure) {
                self.handle_sealed(now, from, datagram, arrival, dialect);
            } else {
                self.handle_clear(now, from, datagram, arrival, dialect, None);
            }
        }
    }

    /// An encrypted datagram: opened, then handled as what it carried.
    fn handle_sealed(
        &mut self,
        now: fsm::Instant,
        from: SocketAddr,
        datagram: &[u8],
        arrival: u32,
        dialect: Option<fsm::Dialect>,
    ) {
        let mut inner = [0u8; secure::MAX_INNER];
        let opened = match self.crypto.open(now.0, from, datagram, &mut inner) {
            Ok(opened) => opened,
            Err(Closed::Off) => {
                self.garbage += 1;
                return log::debug!(
                    "ignored an encrypted datagram of {} bytes from {from}: --security off",
                    datagram.len()
                );
            }
            Err(Closed::Dropped(why)) => {
                return log::debug!(
                    "dropped an encrypted datagram of {} bytes from {from}: {why}",
                    datagram.len()
                );
            }
        };
        // The caller's copy of an answer it missed.
        while let Some((to, bytes)) = self.crypto.poll_transmit() {
            if let Err(e) = self.udp.send_to(bytes, to) {
                log::warn!("cannot send to {to}: {e}");
            }
        }
        if let (Kind::Answer, Some(code)) = (opened.kind, opened.code) {
            self.agent
                .handle_session(from, opened.key, code.to_string());
        }
        let inner = &inner[..opened.len];
        if message::is_session_line(inner) {
            match message::parse(inner) {
                Ok(line) => {
                    let answer = opened.kind == Kind::Answer;
                    self.agent
                        .handle_session_line(now, from, opened.key, line, answer);
                    self.drive();
                }
                Err(e) => {
                    self.garbage += 1;
                    log::debug!("ignored a message line from {from}: {e}");
                }
            }
            return;
        }
        self.handle_clear(now, from, inner, arrival, dialect, Some(opened.key));
    }

    /// A datagram in the clear (`key` None), or what an encrypted one carried from a
    /// session with `key`.
    fn handle_clear(
        &mut self,
        now: fsm::Instant,
        from: SocketAddr,
        datagram: &[u8],
        arrival: u32,
        dialect: Option<fsm::Dialect>,
        key: Option<fsm::PublicKey>,
    ) {
        let sender = fsm::Sender::of(key);
        match Datagram::parse(datagram, dialect) {
            Ok(Datagram::Signalling(message)) => {
                log::debug!(
                    "<- {from}{}: {}",
                    if key.is_some() { " (encrypted)" } else { "" },
                    message.wire()
                );
                self.agent.handle_peer(now, from, message, sender);
                self.drive();
            }
            Ok(Datagram::Rtp(packet)) => {
                // Another stream from the peer's address is no sign of the peer's life.
                if self.media.handle_rtp(from, &packet, arrival, key) {
                    self.agent.handle_media(now, from, sender);
                    self.drive();
                }
            }
            Ok(Datagram::RawPcm(_)) if key.is_some() => {
                // Only an original peer sends raw PCM, and it has no encryption.
                self.garbage += 1;
                log::debug!("ignored raw PCM out of an encrypted session with {from}");
            }
            Ok(Datagram::RawPcm(raw)) => {
                self.agent.handle_media(now, from, sender);
                self.drive();
                self.media.handle_raw(from, &raw, arrival);
            }
            Err(e) => {
                self.garbage += 1;
                log::debug!(
                    "ignored a datagram of {} bytes from {from}: {e}",
                    datagram.len()
                );
            }
        }
    }

    fn handle_wake(&mut self) {
        let now = self.ms().0;
        let mut link = SealedLink {
            udp: &self.udp,
            crypto: &mut self.crypto,
            now,
            buf: &mut self.sealed,
        };
        let failed = self.media.handle_wake(&mut link);
        if failed {
            // Stopped here, so that its error says what went wrong.
            let stopped = self.media.stop().err().map(|e| e.to_string());
            self.agent
                .handle_media_failed(self.ms(), MediaFailure::Lost(stopped));
            self.drive();
        }
        if !self.stdin.is_polled() {
            self.handle_stdin();
        }
    }

    fn handle_stdin(&mut self) {
        let polled = self.stdin.is_polled();
        let inputs = self.stdin.read(self.poll.registry());
        for input in inputs {
            match input {
                Input::Line(line) => self.agent.handle_line(self.ms(), line, Origin::Stdin),
                Input::End => self.agent.handle_stdin_end(self.ms(), polled),
            }
            self.drive();
        }
    }

    fn handle_control(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(control) = &mut self.control else {
            return;
        };
        let Some(id) = control.id_of(token) else {
            return;
        };
        if writable {
            control.flush(self.poll.registry(), id);
        }
        if !readable && !control.wants_to_read(id) {
            return;
        }
        loop {
            let Some(control) = &mut self.control else {
                return;
            };
            let lines = control.read(self.poll.registry(), id);
            for line in lines {
                self.agent.handle_line(self.ms(), line, Origin::Control(id));
                self.drive();
            }
            if !self.control.as_mut().is_some_and(|c| c.wants_to_read(id)) {
                return;
            }
        }
    }

    fn handle_signals(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            match signal {
                SIGHUP => {
                    let status = Out::Status(Box::new(self.agent.status(&self.snapshot())));
                    log::info!("{}", status.text());
                }
                _ => {
                    log::info!("signal {signal}: stopping");
                    self.agent.handle_stop(self.ms());
                    self.drive();
                }
            }
        }
    }

    // ---- the end ----

    fn finish(mut self) -> Exit {
        if self.media.is_active() {
            self.stop_media();
        }
        let exit = self.agent.finish();
        self.drive();
        if let (Some(control), Some(Origin::Control(id))) =
            (&mut self.control, self.agent.quit_origin())
        {
            control.finish(self.poll.registry(), id);
        }
        self.stdin.close(self.poll.registry());
        exit
    }
}
