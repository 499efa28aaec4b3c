//! The phone's event loop: one thread, one `mio` poll, the call machine in the middle.
//!
//! Sources: the UDP socket (signalling and media), the directory connection, signals,
//! stdin, the control socket, and a waker shared by the audio device thread, the stdin
//! reader thread and the directory server's host-name lookup. Each input becomes an event for the machine ([`parlo_fsm::Machine`]),
//! whose actions are executed here in order: look a name up, send a message, start or
//! stop media, tell the user. Timers are the machine's (`poll_timeout`) plus the
//! directory's reconnection, the shutdown limit and media's playout deadline (a frame
//! handed to the audio device just before its tick).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use parlo_fsm::{self as fsm, Action, Machine, Note, State};
use parlo_net::directory::client::{Answer, Query};
use parlo_net::media::Datagram;
use parlo_net::peer::Wire;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::cli::PhoneConfig;
use crate::command::{self, Command};
use crate::control::{ConnectionId, Control};
use crate::directory::{Directory, Outcome, Purpose};
use crate::error::{Error, Exit};
use crate::media::{self, Media};
use crate::output::{Event as Out, Status};
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

/// How long quitting may take (hanging up, DISCONNECT).
const QUIT_WAIT: Duration = Duration::from_secs(2);
/// Largest datagram read; anything longer is cut and fails to parse.
const RECV_BUF: usize = 2048;

/// Where a command came from: its answer goes back there (and to stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A line on stdin.
    Stdin,
    /// A line on a control connection.
    Control(ConnectionId),
}

#[derive(Debug)]
struct Quit {
    deadline: Instant,
    origin: Option<Origin>,
}

/// The running phone.
pub struct Phone {
    config: PhoneConfig,
    poll: Poll,
    waker: Arc<Waker>,
    started: Instant,
    udp: UdpSocket,
    machine: Machine<OsRandom>,
    directory: Directory,
    outcomes: Vec<Outcome>,
    media: Media,
    control: Option<Control>,
    stdin: Stdin,
    signals: Signals,
    /// Each call's SSRC, first sequence number and timestamp.
    random: OsRandom,
    followups: VecDeque<fsm::Event>,
    quitting: Option<Quit>,
    garbage: u64,
    warnings: bool,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("name", &self.config.name)
            .field("state", &self.machine.state())
            .finish()
    }
}

fn poll_error(doing: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Poll { doing, source }
}

/// Why a directory request did not get the answer it wanted: the server's refusal, an
/// answer of the wrong kind, or the connection's failure.
fn failure(result: Result<Answer, String>) -> String {
    match result {
        Ok(answer) => format!("unexpected answer {answer:?}"),
        Err(e) => e,
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Idle => "idle",
        State::Dialing => "dialing",
        State::Ringing => "ringing",
        State::InCall => "in-call",
        State::Closing => "closing",
    }
}

impl Phone {
    /// Binds the sockets and sets every source up. Nothing is sent yet.
    pub fn new(config: PhoneConfig) -> Result<Phone, Error> {
        Media::check_device(&config.audio).map_err(Error::Audio)?;
        let started = Instant::now();
        let poll = Poll::new().map_err(poll_error("create the event loop"))?;
        let registry = poll.registry();
        let waker = Arc::new(Waker::new(registry, WAKER).map_err(poll_error("create a waker"))?);
        let mut udp = UdpSocket::bind(config.listen).map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
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
        let mut machine_config = fsm::Config::new(config.name.clone());
        machine_config.answer_timeout = config.answer_timeout_ms;
        machine_config.codecs = config.codecs.clone();
        machine_config.auto_answer = config.auto_answer;
        let call_ids = OsRandom::new().map_err(Error::Random)?;
        let machine = Machine::new(machine_config, call_ids, fsm::Instant(0));
        let lookup_waker = Arc::clone(&waker);
        let directory = Directory::new(
            config.server.clone(),
            config.name.clone(),
            config.listen,
            DIRECTORY,
            started,
            Arc::new(move || {
                let _ = lookup_waker.wake();
            }),
        );
        log::info!(
            "{} listening for calls on UDP {}, directory server {}, audio {}",
            config.name.as_str(),
            config.listen,
            config.server,
            config.audio
        );
        Ok(Phone {
            media: Media::new(config.audio.clone()),
            config,
            poll,
            waker,
            started,
            udp,
            machine,
            directory,
            outcomes: Vec::with_capacity(8),
            control,
            stdin,
            signals,
            random: OsRandom::new().map_err(Error::Random)?,
            followups: VecDeque::with_capacity(8),
            quitting: None,
            garbage: 0,
            warnings: false,
        })
    }

    /// The machine's clock: milliseconds since start.
    fn ms(&self) -> fsm::Instant {
        fsm::Instant(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn at(&self, instant: fsm::Instant) -> Instant {
        self.started + Duration::from_millis(instant.0)
    }

    /// Runs until `quit`, a signal, or the end of stdin (see `--help`).
    pub fn run(mut self) -> Result<Exit, Error> {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            self.handle_timers(now);
            if self.should_stop(now) {
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
                self.drain_outcomes();
            }
        }
        Ok(self.finish())
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.machine.poll_timeout().map(|t| self.at(t)),
            self.directory.poll_timeout(),
            self.quitting.as_ref().map(|q| q.deadline),
            self.media.playout_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timers(&mut self, now: Instant) {
        self.media.handle_playout(now);
        loop {
            let ms = self.ms();
            match self.machine.poll_timeout() {
                Some(due) if due <= ms => {
                    let actions = self.machine.handle_timeout(ms);
                    self.execute(actions, &mut None);
                    self.run_followups();
                }
                _ => break,
            }
        }
        self.directory
            .handle_timeout(self.poll.registry(), now, &mut self.outcomes);
        self.drain_outcomes();
    }

    fn should_stop(&self, now: Instant) -> bool {
        let Some(quit) = &self.quitting else {
            return false;
        };
        // A call that is only lingering (nothing left to be acknowledged) need not hold
        // the exit up.
        let call_done = match self.machine.state() {
            State::Idle => true,
            State::Closing => self.machine.deadline(fsm::Timer::Retransmit).is_none(),
            _ => false,
        };
        now >= quit.deadline || (call_done && !self.directory.has_pending())
    }

    // ---- the call machine ----

    /// Feeds one event to the machine and executes what it asks, then the follow-ups.
    fn feed(&mut self, event: &fsm::Event, origin: Option<Origin>) {
        let mut origin = origin;
        let actions = self.machine.handle(self.ms(), event);
        self.execute(actions, &mut origin);
        self.run_followups();
    }

    /// Events the phone's own user agent adds after a transition (auto-answer, giving up
    /// a call whose lookup or audio failed), fed once the transition's actions are done.
    fn run_followups(&mut self) {
        while let Some(event) = self.followups.pop_front() {
            let actions = self.machine.handle(self.ms(), &event);
            self.execute(actions, &mut None);
        }
    }

    fn execute(&mut self, actions: fsm::Actions, origin: &mut Option<Origin>) {
        for action in actions {
            match action {
                Action::Lookup(name) => self.lookup(name),
                Action::LookupCaller { name, from } => self.lookup_caller(name, from),
                Action::Send { to, message } => self.send(to, &message),
                Action::ArmTimer { .. } | Action::CancelTimer(_) => {}
                Action::StartMedia {
                    peer,
                    dialect,
                    codec,
                } => self.start_media(peer, dialect, codec, origin),
                Action::StopMedia => {
                    if let Err(e) = self.media.stop() {
                        log::warn!("audio device: {e}");
                        self.warnings = true;
                    }
                }
                Action::Notify(note) => self.notify(note, origin),
            }
        }
    }

    fn lookup(&mut self, name: fsm::Name) {
        let sent = self.directory.request(
            self.poll.registry(),
            Query::Lookup(name.clone()),
            Purpose::Dial(name.clone()),
            Instant::now(),
            &mut self.outcomes,
        );
        if sent.is_err() {
            self.emit(
                Out::Error {
                    reason: format!(
                        "cannot look {name} up: not connected to the directory server {}",
                        self.directory.server()
                    ),
                },
                &mut None,
            );
            self.followups.push_back(fsm::Event::LookupFailed { name });
        }
    }

    /// Asks the directory where an incoming caller's name is registered; the machine
    /// announces the call when it answers (or fails, or is too slow).
    fn lookup_caller(&mut self, name: fsm::Name, from: SocketAddr) {
        let purpose = Purpose::Verify {
            peer: name.clone(),
            from,
        };
        let sent = self.directory.request(
            self.poll.registry(),
            Query::Lookup(name.clone()),
            purpose,
            Instant::now(),
            &mut self.outcomes,
        );
        if sent.is_err() {
            log::info!("cannot verify the caller {name}: not connected to the directory");
            self.followups.push_back(fsm::Event::LookupFailed { name });
        }
    }

    fn send(&mut self, to: SocketAddr, message: &fsm::Message) {
        let mut buf = [0u8; parlo_net::peer::MAX_MESSAGE_LEN];
        match message.emit(&mut buf) {
            Ok(len) => {
                log::debug!("-> {to}: {}", message.wire());
                if let Err(e) = self.udp.send_to(&buf[..len], to) {
                    log::warn!("cannot send {} to {to}: {e}", message.keyword());
                }
            }
            Err(e) => log::error!("cannot encode {}: {e}", message.keyword()),
        }
    }

    fn start_media(
        &mut self,
        peer: SocketAddr,
        dialect: fsm::Dialect,
        codec: fsm::Codec,
        origin: &mut Option<Origin>,
    ) {
        let waker = Arc::clone(&self.waker);
        let wake: parlo_audio::Wake = Arc::new(move || {
            let _ = waker.wake();
        });
        let random = self.random.next_u64();
        if let Err(e) = self.media.start(peer, dialect, codec, wake, random) {
            self.emit(
                Out::Error {
                    reason: format!("audio device {}: {e}; hanging up", self.config.audio),
                },
                origin,
            );
            self.warnings = true;
            self.followups.push_back(fsm::Event::Hangup);
        }
    }

    fn notify(&mut self, note: Note, origin: &mut Option<Origin>) {
        let event = match note {
            Note::Calling { peer } => Out::Calling {
                peer: peer.to_string(),
            },
            Note::Ringing { peer } => Out::Ringing {
                peer: peer.to_string(),
            },
            Note::Incoming {
                peer,
                from,
                verified,
            } => Out::Incoming {
                peer: peer.to_string(),
                from,
                verified,
            },
            Note::Connected { peer } => Out::Connected {
                peer: peer.to_string(),
                dialect: self.machine.dialect().map_or("parlo", fsm::Dialect::name),
                codec: self.machine.codec().map_or("L16", fsm::Codec::name),
            },
            Note::Ended { peer, reason } => Out::Ended {
                peer: peer.to_string(),
                reason: reason.name(),
            },
            Note::Refused(why) => Out::Error {
                reason: why.to_string(),
            },
        };
        self.emit(event, origin);
    }

    // ---- output ----

    /// Prints an event on stdout, and answers the command's origin with it (the first
    /// event of a command is its answer).
    fn emit(&mut self, event: Out, origin: &mut Option<Origin>) {
        self.write(&event, origin);
    }

    fn write(&mut self, event: &Out, origin: &mut Option<Origin>) {
        let line = event.line(self.config.json);
        let mut stdout = io::stdout().lock();
        // A closed stdout (a terminal gone) must not stop the phone.
        let _ = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
        drop(stdout);
        if let Some(Origin::Control(id)) = origin.take() {
            if let Some(control) = &mut self.control {
                control.send(self.poll.registry(), id, &line);
            }
        }
    }

    fn status(&self) -> Status {
        let stats = self.media.stats();
        let counters = self.machine.counters();
        Status {
            state: state_name(self.machine.state()),
            peer: self.machine.peer().map(ToString::to_string),
            peer_addr: self.machine.peer_addr(),
            dialect: self.machine.dialect().map(fsm::Dialect::name),
            registered: self.directory.is_registered(),
            sent: stats.sent,
            received: stats.received,
            played: stats.played,
            lost: stats.lost,
            late: stats.late,
            duplicate: stats.duplicate,
            discarded: stats.discarded,
            foreign_media: stats.foreign_media,
            concealed: stats.concealed,
            underruns: stats.underruns,
            depth: stats.depth,
            codec: stats.codec.map(parlo_net::peer::Codec::name),
            jitter_us: stats.jitter_us,
            capture_overruns: stats.capture_overruns,
            playback_overruns: stats.playback_overruns,
            foreign: counters.foreign,
            garbage: self.garbage,
            retransmissions: counters.retransmissions,
            allocations: crate::alloc_count::allocations(),
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
            let dialect = self.machine.media_dialect(self.ms(), from);
            let arrival = (self.ms().0 as u32).wrapping_mul(8);
            match Datagram::parse(&buf[..len], dialect) {
                Ok(Datagram::Signalling(message)) => {
                    log::debug!("<- {from}: {}", message.wire());
                    self.feed(&fsm::Event::Peer { from, message }, None);
                }
                Ok(Datagram::Rtp(packet)) => {
                    // Another stream from the peer's address is no sign of the peer's life.
                    if self.media.handle_rtp(from, &packet, arrival) {
                        self.feed(&fsm::Event::Media { from }, None);
                    }
                }
                Ok(Datagram::RawPcm(raw)) => {
                    self.feed(&fsm::Event::Media { from }, None);
                    self.media.handle_raw(from, &raw, arrival);
                }
                Err(e) => {
                    self.garbage += 1;
                    log::debug!("ignored a datagram of {len} bytes from {from}: {e}");
                }
            }
        }
    }

    fn handle_wake(&mut self) {
        if self.media.handle_wake(&self.udp) {
            // A call without sound is no use to either side: stop the device (its error
            // says what went wrong), say so, and hang up so the peer is told at once
            // rather than by peer silence.
            let why = match self.media.stop() {
                Err(e) => e.to_string(),
                Ok(()) => "it stopped delivering audio".to_owned(),
            };
            self.emit(
                Out::Error {
                    reason: format!(
                        "audio device {} failed: {why}; media stopped, hanging up",
                        self.config.audio
                    ),
                },
                &mut None,
            );
            self.warnings = true;
            self.feed(&fsm::Event::Hangup, None);
        }
        if !self.stdin.is_polled() {
            self.handle_stdin();
        }
    }

    fn handle_stdin(&mut self) {
        // Polled means a terminal, a pipe or a socket: its end means whoever drove the
        // phone is gone. /dev/null and files are read by the thread and end at once.
        let polled = self.stdin.is_polled();
        let inputs = self.stdin.read(self.poll.registry());
        for input in inputs {
            match input {
                Input::Line(Ok(line)) => self.handle_line(&line, Origin::Stdin),
                Input::Line(Err(reason)) => {
                    self.emit(Out::Error { reason }, &mut Some(Origin::Stdin));
                }
                Input::End => {
                    log::info!("end of stdin");
                    if polled && self.control.is_none() {
                        self.quit(None);
                    }
                }
            }
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
                match line {
                    Ok(line) => self.handle_line(&line, Origin::Control(id)),
                    Err(reason) => {
                        self.emit(Out::Error { reason }, &mut Some(Origin::Control(id)));
                    }
                }
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
                SIGHUP => log::info!("{}", Out::Status(Box::new(self.status())).text()),
                _ => {
                    log::info!("signal {signal}: stopping");
                    self.quit(None);
                }
            }
        }
    }

    // ---- commands ----

    fn handle_line(&mut self, line: &str, origin: Origin) {
        let mut answer_to = Some(origin);
        let command = match command::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return,
            Err(reason) => return self.emit(Out::Error { reason }, &mut answer_to),
        };
        log::debug!("command: {line}");
        if self.quitting.is_some() && command != Command::Status {
            return self.emit(
                Out::Error {
                    reason: "the phone is stopping".into(),
                },
                &mut answer_to,
            );
        }
        match command {
            Command::Call(name) => self.feed(&fsm::Event::Dial(name), Some(origin)),
            Command::Accept => self.feed(&fsm::Event::Accept, Some(origin)),
            Command::Reject => self.feed(&fsm::Event::Reject, Some(origin)),
            Command::Hangup => self.feed(&fsm::Event::Hangup, Some(origin)),
            Command::List => self.list(origin),
            Command::Status => {
                let status = Out::Status(Box::new(self.status()));
                self.emit(status, &mut answer_to);
            }
            Command::Quit => self.quit(Some(origin)),
            Command::Help => self.emit(Out::Help, &mut answer_to),
        }
        self.drain_outcomes();
    }

    fn list(&mut self, origin: Origin) {
        let sent = self.directory.request(
            self.poll.registry(),
            Query::List,
            Purpose::List { origin },
            Instant::now(),
            &mut self.outcomes,
        );
        if sent.is_err() {
            self.emit(
                Out::Error {
                    reason: format!(
                        "cannot list the users: not connected to the directory server {}",
                        self.directory.server()
                    ),
                },
                &mut Some(origin),
            );
        }
    }

    fn quit(&mut self, origin: Option<Origin>) {
        if self.quitting.is_some() {
            return;
        }
        self.quitting = Some(Quit {
            deadline: Instant::now() + QUIT_WAIT,
            origin,
        });
        if matches!(
            self.machine.state(),
            State::Dialing | State::Ringing | State::InCall
        ) {
            self.feed(&fsm::Event::Hangup, None);
        }
        self.directory
            .disconnect(self.poll.registry(), Instant::now(), &mut self.outcomes);
    }

    // ---- the directory ----

    fn drain_outcomes(&mut self) {
        while !self.outcomes.is_empty() {
            let outcomes = std::mem::take(&mut self.outcomes);
            for outcome in outcomes {
                self.handle_outcome(outcome);
            }
        }
    }

    fn handle_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Registered => {
                let event = Out::Registered {
                    name: self.config.name.as_str().to_owned(),
                    server: self.directory.server().to_string(),
                };
                self.emit(event, &mut None);
            }
            Outcome::Lost {
                reason,
                retry_in,
                announce,
            } => {
                if announce && self.quitting.is_none() {
                    let reason = format!("{reason}; retrying in {} s", retry_in.as_secs());
                    self.emit(Out::Unregistered { reason }, &mut None);
                }
            }
            Outcome::Answer(purpose, result) => self.handle_answer(purpose, result),
        }
    }

    fn handle_answer(&mut self, purpose: Purpose, result: Result<Answer, String>) {
        match purpose {
            Purpose::Dial(name) => self.handle_lookup(name, result, true),
            Purpose::Verify { peer, .. } => self.handle_lookup(peer, result, false),
            Purpose::List { origin } => match result {
                Ok(Answer::Users { names, complete }) => {
                    if !complete {
                        log::warn!("the directory's list was cut at {} names", names.len());
                    }
                    let names = names.iter().map(|n| n.as_str().to_owned()).collect();
                    self.emit(Out::Users { names }, &mut Some(origin));
                }
                other => {
                    let why = failure(other);
                    self.emit(
                        Out::Error {
                            reason: format!("cannot list the users: {why}"),
                        },
                        &mut Some(origin),
                    );
                }
            },
        }
    }

    /// Gives the machine the directory's answer about `name`: where it is, that it is
    /// unknown, or that the directory could not be asked (said as an error when the user
    /// is dialling; a caller's verification just stays unconfirmed).
    fn handle_lookup(&mut self, name: fsm::Name, result: Result<Answer, String>, dialling: bool) {
        let event = match result {
            Ok(Answer::Found(contact)) => fsm::Event::Resolved {
                name,
                addr: SocketAddr::new(contact.ip.to_canonical(), contact.port),
                dialect: contact.dialect,
            },
            Ok(Answer::NotFound) => fsm::Event::Unknown { name },
            other => {
                let why = failure(other);
                if dialling {
                    let reason = format!("cannot look {name} up: {why}");
                    self.emit(Out::Error { reason }, &mut None);
                } else {
                    log::info!("cannot verify the caller {name}: {why}");
                }
                fsm::Event::LookupFailed { name }
            }
        };
        self.feed(&event, None);
    }

    // ---- the end ----

    fn finish(mut self) -> Exit {
        if self.media.is_active() {
            if let Err(e) = self.media.stop() {
                log::warn!("audio device: {e}");
                self.warnings = true;
            }
        }
        let origin = self.quitting.as_ref().and_then(|q| q.origin);
        self.emit(Out::Bye, &mut origin.clone());
        if let (Some(control), Some(Origin::Control(id))) = (&mut self.control, origin) {
            control.finish(self.poll.registry(), id);
        }
        self.stdin.close(self.poll.registry());
        if self.warnings {
            Exit::Warning
        } else {
            Exit::Done
        }
    }
}
