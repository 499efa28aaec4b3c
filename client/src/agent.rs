//! The phone's user agent: everything the phone decides, with no I/O.
//!
//! The agent owns the call machine ([`parlo_fsm::Machine`]) and stands between it and the
//! user: it turns command lines into machine events (and answers `help`, `status`, `list`,
//! `quit` and mistakes itself), turns the machine's actions into outputs for the loop,
//! turns the directory's outcomes into machine events and printed events, decides when
//! a quitting phone may stop, and routes answers: **the first event a command's own
//! transition prints is that command's answer**, sent back to where the command came
//! from ([`Origin`]) as well as printed. It reads no socket, clock, device or stdout:
//! time comes in as `now` (milliseconds since the phone started, the machine's
//! [`Instant`]), randomness as the machine's [`CallIds`].
//!
//! # Contract
//! ```text
//! loop                                       agent
//!   Agent::new(settings, ids, now)
//!   handle_line / handle_peer / handle_media
//!   handle_directory / handle_media_failed
//!   handle_stop / handle_stdin_end   ─────▶  queue events for the machine
//!   poll_output()  (until None)      ◀─────  Output: print, send, ask the directory,
//!                                            start or stop media, disconnect, status
//!   media_dialect(now, from)         ◀─────  how to read a media datagram
//!   poll_timeout()                   ◀─────  earliest deadline (machine, quit limit)
//!   handle_timeout(now)              ─────▶  fire the machine's due timers
//!   is_done(now, directory busy)     ◀─────  whether a quitting phone may stop
//!   finish()                         ◀─────  `bye` and the exit code
//! ```
//!
//! # Keys
//! The loop opens and seals the encrypted datagrams; the agent is told, for each message
//! and media packet, the key it came out of ([`fsm::Sender`]), and says, for each message
//! it sends, the key it must be sealed for. It keeps the phone's pins (`known_peers`,
//! loaded by the loop at start): the machine is given the pin of the name a START claims
//! and of the name it dials, together with the key the directory binds to that name.
//! New pins (first contact, `trust`) are kept here and written by the loop
//! ([`Output::Pin`]). The key of every session the loop completes is reported with its
//! short code ([`Agent::handle_session`]), which `connected` shows.
//!
//! The loop drains [`Agent::poll_output`] after every input. Outputs are made one at a
//! time, as the loop asks, so that what the loop reports about an output while it carries
//! it out — a request it could not send ([`Agent::handle_directory`]), a device that would
//! not start ([`Agent::handle_media_failed`]) — is handled in that output's place, before
//! the rest of the transition: the error is printed there, and the hang-up or lookup
//! failure it leads to is fed to the machine once the transition is carried out.

mod conf;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use parlo_fsm::conference::Conference;
use parlo_fsm::messages::{self, Messenger};
use parlo_fsm::{self as fsm, Action, CallIds, Instant, Machine, Note, PublicKey, State};
use parlo_net::directory::client::{Answer, Query};
use parlo_net::message::SessionLine;
use parlo_net::noise::fingerprint;

use crate::cli::PhoneConfig;
use crate::command::{self, Command, Line};
use crate::control::ConnectionId;
use crate::directory::{self, Outcome, Purpose};
use crate::error::Exit;
use crate::mail::Mail;
use crate::media::MediaStats;
use crate::output::{Event as Out, Format, Registration, Status};

/// How long quitting may take (hanging up, DISCONNECT), in milliseconds.
pub const QUIT_WAIT_MS: u64 = 2_000;

/// Where a command came from: its answer goes back there (and to stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A line on stdin.
    Stdin,
    /// A line on a control connection.
    Control(ConnectionId),
}

/// What the agent needs of the phone's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The call machine's: name, codecs, answer timeout, auto-answer.
    pub machine: fsm::Config,
    /// The directory server, as given (named in events).
    pub server: String,
    /// The audio device, as given (named in its errors).
    pub device: String,
    /// Whether commands may also come on a control socket (then the end of stdin does
    /// not stop the phone).
    pub control: bool,
    /// The keys pinned for other phones' names (`known_peers`).
    pub pins: BTreeMap<fsm::Name, PublicKey>,
    /// The message machine's: who may message this phone.
    pub messages: messages::Config,
    /// This run's number in message ids (random: ids are never reused across runs).
    pub run: u32,
    /// This phone's static public key (what conference rosters give for it).
    pub key: PublicKey,
}

impl Settings {
    /// The settings of the phone `config` describes, with the pins `pins`.
    pub fn of(
        config: &PhoneConfig,
        pins: BTreeMap<fsm::Name, PublicKey>,
        key: PublicKey,
    ) -> Settings {
        let mut machine = fsm::Config::new(config.name.clone());
        machine.answer_timeout = config.answer_timeout_ms;
        machine.codecs = config.codecs.clone();
        machine.auto_answer = config.auto_answer;
        machine.answer_from = config.answer_from.clone();
        machine.security = config.security;
        machine.original_phones = config.original_phones;
        let mut messages = messages::Config::default();
        if !config.messages_from.is_empty() {
            messages.from = messages::Policy::Only(config.messages_from.clone());
        }
        Settings {
            machine,
            server: config.server.to_string(),
            device: config.audio.to_string(),
            control: config.control.is_some(),
            pins,
            messages,
            run: 0,
            key,
        }
    }
}

/// What the agent asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Print `event` on stdout; when `answer` is a control connection, send it the same
    /// line (on stdin's, stdout is the answer).
    Print {
        /// The event.
        event: Out,
        /// The origin of the command this event answers, if it answers one.
        answer: Option<Origin>,
    },
    /// Send a signalling message.
    Send {
        /// Destination.
        to: SocketAddr,
        /// What to send.
        message: fsm::Message,
        /// The key it must be sealed for; `None`: in the clear.
        key: Option<PublicKey>,
    },
    /// Send a line of a message session, sealed for `key`: with `open`, as the Init that
    /// opens a session for messages (a `HELLO`), else over the session.
    SendLine {
        /// Destination.
        to: SocketAddr,
        /// The peer's key.
        key: PublicKey,
        /// What to send.
        line: Box<SessionLine>,
        /// Whether it opens the session.
        open: bool,
    },
    /// Record a pin in `known_peers`.
    Pin {
        /// The name.
        name: fsm::Name,
        /// Its key.
        key: PublicKey,
    },
    /// Ask the directory. Its answer comes back as [`Outcome::Answer`] with `purpose`;
    /// when the request cannot be sent (not connected), the loop feeds that failure back
    /// at once, in the same form.
    Query {
        /// The request.
        query: Query,
        /// What the answer is for.
        purpose: Purpose,
    },
    /// Start the device and the call's media; report a failure with
    /// [`MediaFailure::Start`].
    StartMedia {
        /// The peer's address.
        peer: SocketAddr,
        /// RTP or raw PCM.
        dialect: fsm::Dialect,
        /// The codec sent.
        codec: fsm::Codec,
        /// The peer's key when the call is encrypted: media goes sealed for it, and
        /// only media out of its session is played.
        key: Option<PublicKey>,
    },
    /// Stop media; report a failure with [`MediaFailure::Stop`].
    StopMedia {
        /// The conference leg whose media stops (its peer's address); `None`: all media,
        /// the device too.
        peer: Option<SocketAddr>,
    },
    /// Unregister from the directory (DISCONNECT) and stop reconnecting.
    Disconnect,
    /// Print the status ([`Agent::status`], with the loop's [`Snapshot`]) and answer
    /// `answer` with it.
    ShowStatus {
        /// Who asked.
        answer: Origin,
    },
    /// Set a control connection up: from now on it watches (receives every line that
    /// [`is_news`]), or writes its lines in `format`, or both.
    Configure {
        /// The connection.
        connection: ConnectionId,
        /// Whether it starts watching.
        watch: bool,
        /// Its format from now on, if it chose one.
        format: Option<Format>,
    },
}

/// Whether a printed line goes to the control connections that watch, besides the origin
/// it answers: every event, but not the answers to other clients' questions (`status`,
/// `users`, `help`) nor the refusals of their commands (`error` answers), which tell
/// nothing new about the phone. A command's answer that is an event of the phone
/// (`calling`, `connected`, `ended`, `bye`) is news.
pub fn is_news(event: &Out, answer: Option<Origin>) -> bool {
    answer.is_none()
        || !matches!(
            event,
            Out::Status(_) | Out::Users { .. } | Out::Help | Out::Error { .. }
        )
}

/// What went wrong with the audio device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaFailure {
    /// The device would not start for the call: why.
    Start(String),
    /// The device failed during the call: the error it gave on stopping, or `None` when
    /// it just stopped delivering audio.
    Lost(Option<String>),
    /// Stopping the device failed: why (a warning, not a reason to hang up).
    Stop(String),
}

/// What the loop knows that `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The media counters of the current or last call.
    pub media: MediaStats,
    /// Datagrams that could not be parsed.
    pub garbage: u64,
    /// Whether the directory holds our registration, and if not why.
    pub registration: Registration,
    /// What the encrypted sessions dropped, and handshakes done.
    pub secure: parlo_net::secure::Counters,
    /// Key changes so far in the session with the peer of the current call.
    pub rekeys: u64,
    /// The media counters of each conference leg, by its peer's address.
    pub legs: Vec<(SocketAddr, MediaStats)>,
}

/// Which call machine an event or an action belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// The phone's own call (an ordinary two-party call).
    Main,
    /// The conference leg with this member.
    Leg(fsm::Name),
}

/// Work queued behind the transition being carried out.
#[derive(Debug)]
enum Pending {
    /// An event for a machine, and the origin of the command it comes from.
    Event(Call, fsm::Event, Option<Origin>),
    /// An output that must follow the events queued before it.
    Output(Output),
}

#[derive(Debug)]
struct Quit {
    deadline: Instant,
    origin: Option<Origin>,
}

/// The user agent (see the module documentation).
#[derive(Debug)]
pub struct Agent<R> {
    machine: Machine<R>,
    /// Where the legs' machines take their call ids from (and conference ids).
    ids: R,
    /// The conference layer.
    conference: Conference,
    /// The conference legs, one call machine each.
    legs: Vec<conf::Leg<R>>,
    server: String,
    device: String,
    control: bool,
    /// The latest time seen.
    now: Instant,
    /// Outputs ready for the loop, first in line.
    ready: VecDeque<Output>,
    /// The rest of the transition being carried out, with the machine it comes from.
    actions: VecDeque<(Call, Action)>,
    /// The origin of the command whose transition is being carried out, until its first
    /// printed event.
    answer: Option<Origin>,
    /// What comes once the transition is carried out.
    pending: VecDeque<Pending>,
    /// Whether the machine's timers due at `now` are to fire.
    timers_due: bool,
    quit: Option<Quit>,
    /// A dial withdrawn before it was announced (its lookup could not even be sent): the
    /// machine's end of that call is not told, since the user never heard of the call.
    withdrawn: Option<fsm::Name>,
    /// Whether something went wrong that makes the exit code 1.
    warnings: bool,
    /// The keys pinned for other phones' names.
    pins: BTreeMap<fsm::Name, PublicKey>,
    /// The latest key each name was seen with where it differs from its pin (a caller,
    /// or the directory's answer for a callee): what `trust NAME` pins.
    changed: BTreeMap<fsm::Name, PublicKey>,
    /// The sessions the loop completed lately: address, key and short code, newest last.
    sessions: VecDeque<(SocketAddr, PublicKey, String)>,
    /// The message machine.
    messenger: Messenger,
    /// Over which session each peer's messages go, and who sent what comes in.
    mail: Mail,
    /// A name whose messages wait for the session of the call being set up with it.
    waiting_call: Option<fsm::Name>,
    /// The session of the line the message machine is handling: where its answer goes.
    reply_to: Option<(SocketAddr, PublicKey)>,
}

/// Sessions remembered for their short codes: more than one phone has calls going at once.
const SESSIONS_KEPT: usize = 8;

fn state_name(state: State) -> &'static str {
    match state {
        State::Idle => "idle",
        State::Dialing => "dialing",
        State::Ringing => "ringing",
        State::InCall => "in-call",
        State::Closing => "closing",
    }
}

/// Why a directory request did not get the answer it wanted: the server's refusal, an
/// answer of the wrong kind, or the connection's failure.
fn failure(result: Result<Answer, String>) -> String {
    match result {
        // In the words of net's own `unexpected answer (...)`.
        Ok(Answer::Found(contact)) => {
            format!(
                "unexpected answer (an address, {}:{})",
                contact.ip, contact.port
            )
        }
        Ok(Answer::NotFound) => "unexpected answer (not found)".to_owned(),
        Ok(Answer::Users { .. }) => "unexpected answer (a list of names)".to_owned(),
        Err(e) => e,
    }
}

/// What the message machine tells the user, as an event.
fn message_event(note: messages::Note) -> Out {
    match note {
        messages::Note::Sending { id, to } => Out::Sending {
            id: id.to_string(),
            to: to.to_string(),
        },
        messages::Note::Delivered { id, to } => Out::Delivered {
            id: id.to_string(),
            to: to.to_string(),
        },
        messages::Note::Undelivered { id, to, reason } => Out::Undelivered {
            id: id.to_string(),
            to: to.to_string(),
            reason: reason.name(),
        },
        messages::Note::Message {
            from,
            verification,
            id,
            text,
        } => Out::Message {
            peer: from.to_string(),
            id: id.to_string(),
            verified: verification.name(),
            text: text.as_str().to_owned(),
        },
    }
}

impl<R: CallIds + Clone> Agent<R> {
    /// An idle phone; `ids` gives the machines their call ids.
    pub fn new(settings: Settings, ids: R, now: Instant) -> Agent<R> {
        let conference = Conference::new(settings.machine.name.clone(), settings.key);
        Agent {
            machine: Machine::new(settings.machine, ids.clone(), now),
            ids,
            conference,
            legs: Vec::new(),
            server: settings.server,
            device: settings.device,
            control: settings.control,
            now,
            ready: VecDeque::with_capacity(8),
            actions: VecDeque::with_capacity(fsm::MAX_ACTIONS),
            answer: None,
            pending: VecDeque::with_capacity(8),
            timers_due: false,
            quit: None,
            withdrawn: None,
            warnings: false,
            pins: settings.pins,
            changed: BTreeMap::new(),
            sessions: VecDeque::with_capacity(SESSIONS_KEPT),
            messenger: Messenger::new(settings.messages, settings.run, now),
            mail: Mail::default(),
            waiting_call: None,
            reply_to: None,
        }
    }

    /// This phone's name.
    pub fn name(&self) -> &fsm::Name {
        &self.machine.config().name
    }

    /// The call state.
    pub fn state(&self) -> State {
        self.machine.state()
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn print(&mut self, event: Out, answer: Option<Origin>) {
        self.ready.push_back(Output::Print { event, answer });
    }

    fn feed(&mut self, event: fsm::Event, origin: Option<Origin>) {
        self.pending
            .push_back(Pending::Event(Call::Main, event, origin));
    }

    /// The machine of `call`, if it is still there.
    fn machine_of(&mut self, call: &Call) -> Option<&mut Machine<R>> {
        match call {
            Call::Main => Some(&mut self.machine),
            Call::Leg(name) => self.leg_mut(name).map(|l| &mut l.machine),
        }
    }

    /// The machine of the call with the peer at `addr`: a leg's, else the phone's own.
    fn call_at(&self, addr: SocketAddr) -> Call {
        match self.leg_at(addr) {
            Some(leg) => Call::Leg(leg.peer.clone()),
            None => Call::Main,
        }
    }

    /// The encrypted session of a call with `to` that is up: the phone's own call or a
    /// conference leg.
    fn call_session(&self, to: &fsm::Name) -> Option<(SocketAddr, PublicKey)> {
        let machines = std::iter::once(&self.machine).chain(self.legs.iter().map(|l| &l.machine));
        for machine in machines {
            if machine.peer() == Some(to) {
                if let (Some(addr), Some(key)) = (machine.peer_addr(), machine.peer_key()) {
                    return Some((addr, key));
                }
            }
        }
        None
    }

    // ---- inputs ----

    /// A command line from `origin` (or why it is not one).
    pub fn handle_line(&mut self, now: Instant, line: Line, origin: Origin) {
        self.advance(now);
        let answer = Some(origin);
        let parsed = line.and_then(|text| {
            let command = command::parse(&text)?;
            if command.is_some() {
                log::debug!("command: {text}");
            }
            Ok(command)
        });
        let command = match parsed {
            Ok(Some(command)) => command,
            Ok(None) => return,
            Err(reason) => return self.print(Out::Error { reason }, answer),
        };
        if self.quit.is_some() && command != Command::Status {
            let reason = "the phone is stopping".into();
            return self.print(Out::Error { reason }, answer);
        }
        match command {
            Command::Call(_) if self.in_conference() => {
                let reason = "in a conference: invite NAME adds a member".into();
                self.print(Out::Error { reason }, answer);
            }
            Command::Call(name) => self.feed(fsm::Event::Dial(name), answer),
            Command::Accept if self.answer_invitation(true, origin) => {}
            Command::Reject if self.answer_invitation(false, origin) => {}
            Command::Accept => self.feed(fsm::Event::Accept, answer),
            Command::Reject => self.feed(fsm::Event::Reject, answer),
            Command::Hangup if self.in_conference() => self.leave_conference(answer),
            Command::Hangup => self.feed(fsm::Event::Hangup, answer),
            Command::Conf(names) => self.start_conference(&names, origin),
            Command::Invite(name) => self.invite(name, origin),
            Command::List => self.ready.push_back(Output::Query {
                query: Query::List,
                purpose: Purpose::List { origin },
            }),
            Command::Status => self.ready.push_back(Output::ShowStatus { answer: origin }),
            Command::Quit => self.quit(answer),
            Command::Help => self.print(Out::Help, answer),
            Command::Watch(format) => self.configure(origin, true, format),
            Command::Format(format) => self.configure(origin, false, Some(format)),
            Command::Trust(name, key) => self.trust(name, key, origin),
            Command::Msg(to, text) => {
                let event = messages::Event::Send { to, text: &text };
                self.message(&event, Some(origin));
            }
        }
    }

    // ---- messages ----

    /// Feeds the message machine, and carries its actions out (`answer`: the origin of
    /// the command it comes from, answered by its first note).
    fn message(&mut self, event: &messages::Event<'_>, mut answer: Option<Origin>) {
        let actions = self.messenger.handle(self.now, event);
        for action in actions {
            self.carry_out_message(action, &mut answer);
        }
    }

    /// Feeds the message machine a line that came out of the session with `from` and
    /// `key`: its answer goes back there.
    fn handle_line_from(&mut self, from: SocketAddr, key: PublicKey, event: &messages::Event<'_>) {
        self.reply_to = Some((from, key));
        self.message(event, None);
        self.reply_to = None;
    }

    fn carry_out_message(&mut self, action: messages::Action, answer: &mut Option<Origin>) {
        match action {
            messages::Action::Connect(to) => self.connect(to),
            messages::Action::Send { to, line } => match self.session_for(&to, &line) {
                Some((addr, key)) => {
                    let output = Output::SendLine {
                        to: addr,
                        key,
                        line: Box::new(SessionLine::Message(line)),
                        open: false,
                    };
                    self.ready.push_back(output);
                }
                // Not up yet: it goes again at its retransmission, once it is.
                None => log::debug!("message line for {to} waits for its session: {line}"),
            },
            messages::Action::Notify(note) => {
                // A session that carried nothing through is not used again: the next
                // message to that phone asks for one afresh (it may have restarted).
                if let messages::Note::Undelivered {
                    to,
                    reason: messages::Reason::Unreachable,
                    ..
                } = &note
                {
                    self.mail.forget_route(to);
                    if self.waiting_call.as_ref() == Some(to) {
                        self.waiting_call = None;
                    }
                }
                let event = message_event(note);
                self.print(event, answer.take());
            }
        }
    }

    /// The session `line` to `to` goes over: an answer (`ACK`, `NAK`) back over the
    /// session the line it answers came from; a message over the one opened to send `to`
    /// messages, else the one it sent us lines over, else the call's.
    fn session_for(
        &self,
        to: &fsm::Name,
        line: &messages::Line,
    ) -> Option<(SocketAddr, PublicKey)> {
        let answer = matches!(
            line,
            messages::Line::Ack { .. } | messages::Line::Nak { .. }
        );
        if let (true, Some(session)) = (answer, self.reply_to) {
            return Some(session);
        }
        if let Some(route) = self.mail.route(to).filter(|r| r.up) {
            return Some((route.addr, route.key));
        }
        if let Some(session) = self.mail.sender_named(to) {
            return Some(session);
        }
        self.call_session(to)
    }

    /// Pins `key` for `name`: first contact, confirmed by the directory.
    fn pin(&mut self, name: fsm::Name, key: PublicKey) {
        log::info!(
            "pinned {name}'s key {key} (fingerprint {}): first contact, confirmed by the \
             directory",
            fingerprint(&key)
        );
        self.pins.insert(name.clone(), key);
        self.changed.remove(&name);
        self.ready.push_back(Output::Pin { name, key });
    }

    /// The message machine asks for a session with `to`: the call's when the call is with
    /// `to` and encrypted, one already open for messages, or a new one (the directory is
    /// asked where `to` is and with which key).
    fn connect(&mut self, to: fsm::Name) {
        if self.mail.route(&to).is_some_and(|r| r.up) {
            return self.message(&messages::Event::Route { to }, None);
        }
        let leg = self
            .leg(&to)
            .filter(|l| l.machine.state() == State::InCall)
            .and_then(|l| l.machine.peer_addr().zip(l.machine.peer_key()));
        if let Some((addr, key)) = leg {
            self.mail.open(&to, addr, key, true, self.now);
            return self.message(&messages::Event::Route { to }, None);
        }
        let in_call = self.machine.peer() == Some(&to);
        if let (true, Some(addr), Some(key)) =
            (in_call, self.machine.peer_addr(), self.machine.peer_key())
        {
            if self
                .sessions
                .iter()
                .any(|(a, k, _)| (*a, *k) == (addr, key))
            {
                self.mail.open(&to, addr, key, true, self.now);
                return self.message(&messages::Event::Route { to }, None);
            }
            // The call's handshake is under way: its session will carry the messages.
            self.waiting_call = Some(to);
            return;
        }
        self.ready.push_back(Output::Query {
            query: Query::Lookup(to.clone()),
            purpose: Purpose::Message(to),
        });
    }

    /// The directory's answer about `to`, to send it messages.
    fn handle_message_lookup(&mut self, to: fsm::Name, result: Result<Answer, String>) {
        let no_route = |reason| messages::Event::NoRoute {
            to: to.clone(),
            reason,
        };
        let contact = match result {
            Ok(Answer::Found(contact)) => contact,
            Ok(Answer::NotFound) => {
                return self.message(&no_route(messages::Reason::UnknownUser), None);
            }
            other => {
                log::info!(
                    "cannot look {to} up to send it messages: {}",
                    failure(other)
                );
                return self.message(&no_route(messages::Reason::Unreachable), None);
            }
        };
        let pinned = self.pins.get(&to).copied();
        let key = match (contact.dialect, pinned, contact.key) {
            (Some(fsm::Dialect::Original), _, _) => {
                log::info!("{to} is a phone of the original project, which has no messages");
                None
            }
            (_, Some(pin), Some(key)) if pin != key => {
                self.key_changed(&to, pin, key, "is given by the directory");
                None
            }
            (_, pin, key) => {
                let key = pin.or(key);
                if key.is_none() {
                    log::info!("no key known for {to}: messages go encrypted only");
                }
                key
            }
        };
        let Some(key) = key else {
            return self.message(&no_route(messages::Reason::Refused), None);
        };
        let addr = SocketAddr::new(contact.ip.to_canonical(), contact.port);
        self.mail.open(&to, addr, key, false, self.now);
        self.send_hello(addr, key);
    }

    fn send_hello(&mut self, to: SocketAddr, key: PublicKey) {
        let line = Box::new(SessionLine::Hello(self.name().clone()));
        self.ready.push_back(Output::SendLine {
            to,
            key,
            line,
            open: true,
        });
    }

    /// A line of a message session came out of the session with `from` and `key`;
    /// `answer`: it answered our opening `HELLO`.
    pub fn handle_session_line(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: PublicKey,
        line: SessionLine,
        answer: bool,
    ) {
        self.advance(now);
        match line {
            SessionLine::Hello(name) if answer => match self.mail.answered(from, key) {
                Some(to) => self.message(&messages::Event::Route { to }, None),
                None => log::debug!("a HELLO from {name} at {from} that nothing waits for"),
            },
            // The same session opened again (our answer was lost), or over the session.
            SessionLine::Hello(_) if self.mail.sender(from, key).is_some() => {
                let line = Box::new(SessionLine::Hello(self.name().clone()));
                self.ready.push_back(Output::SendLine {
                    to: from,
                    key,
                    line,
                    open: false,
                });
            }
            SessionLine::Hello(name) => self.opened_to_us(from, key, name),
            SessionLine::Message(line) => self.message_line(from, key, line),
            line @ (SessionLine::Roster(_) | SessionLine::Links { .. }) => {
                self.conference_line(from, key, line);
            }
        }
    }

    /// A phone at `from` with `key` opened a session for messages, saying it is `name`:
    /// answered at once, and its name verified as a caller's.
    fn opened_to_us(&mut self, from: SocketAddr, key: PublicKey, name: fsm::Name) {
        let verification = match self.pins.get(&name) {
            Some(pin) if *pin == key => Some(messages::Verification::Key),
            Some(pin) => {
                let pin = *pin;
                self.key_changed(&name, pin, key, "opens a session for messages");
                Some(messages::Verification::Changed)
            }
            None => None,
        };
        log::info!("{name} at {from} opened a session for messages");
        self.mail.remember(from, key, &name, verification, self.now);
        if verification.is_none() {
            self.ready.push_back(Output::Query {
                query: Query::Lookup(name.clone()),
                purpose: Purpose::VerifySender(Box::new((name, from, key))),
            });
        }
        let line = Box::new(SessionLine::Hello(self.name().clone()));
        self.ready.push_back(Output::SendLine {
            to: from,
            key,
            line,
            open: false,
        });
    }

    /// The directory's answer about the name a message sender gave.
    fn handle_sender_lookup(
        &mut self,
        name: fsm::Name,
        addr: SocketAddr,
        key: PublicKey,
        result: Result<Answer, String>,
    ) {
        let binding = match result {
            Ok(Answer::Found(contact)) => {
                contact.key.map_or(fsm::Binding::NoKey, fsm::Binding::Key)
            }
            Ok(Answer::NotFound) => fsm::Binding::NotRegistered,
            other => {
                log::info!(
                    "cannot verify the message sender {name}: {}",
                    failure(other)
                );
                fsm::Binding::NoAnswer
            }
        };
        // No pin for the name: a pin decided at once (`opened_to_us`).
        let (call, new) = fsm::verify_key(key, None, binding);
        if new {
            self.pin(name, key);
        }
        let verification = messages::Verification::of_call(call, new);
        if let Some((from, held)) = self.mail.verified(addr, key, verification) {
            for line in held {
                let event = messages::Event::Peer {
                    from: from.clone(),
                    verification,
                    line,
                };
                self.handle_line_from(addr, key, &event);
            }
        }
    }

    /// A message line from the session with `from` and `key`: from the phone that opened
    /// it, or the call's peer.
    fn message_line(&mut self, from: SocketAddr, key: PublicKey, line: messages::Line) {
        let now = self.now;
        if let Some(sender) = self.mail.sender(from, key) {
            sender.heard = now;
            let Some(verification) = sender.verification else {
                if sender.held.len() < crate::mail::HELD {
                    sender.held.push(line);
                }
                return;
            };
            // `new` is said once, with the first message: the key is pinned now.
            if verification == messages::Verification::New {
                sender.verification = Some(messages::Verification::Key);
            }
            let event = messages::Event::Peer {
                from: sender.name.clone(),
                verification,
                line,
            };
            return self.handle_line_from(from, key, &event);
        }
        let machine = match self.call_at(from) {
            Call::Main => &self.machine,
            Call::Leg(name) => match self.leg(&name) {
                Some(leg) => &leg.machine,
                None => &self.machine,
            },
        };
        let call = (machine.peer_addr(), machine.peer_key());
        if call == (Some(from), Some(key)) {
            if let Some(peer) = machine.peer().cloned() {
                let verification = match machine.verification() {
                    Some(call) => messages::Verification::of_call(call, false),
                    None => {
                        // The call is not announced yet (its caller being verified): the
                        // line waits for the directory's word on the caller's name.
                        self.mail.remember(from, key, &peer, None, now);
                        if let Some(sender) = self.mail.sender(from, key) {
                            sender.held.push(line);
                        }
                        self.ready.push_back(Output::Query {
                            query: Query::Lookup(peer.clone()),
                            purpose: Purpose::VerifySender(Box::new((peer, from, key))),
                        });
                        return;
                    }
                };
                let event = messages::Event::Peer {
                    from: peer,
                    verification,
                    line,
                };
                return self.handle_line_from(from, key, &event);
            }
        }
        log::debug!("a message line from {from} with no known sender: ignored");
    }

    /// `trust NAME [KEY]`: pins `KEY`, or the key `NAME` was last refused with, for
    /// `NAME`: a phone's new key accepted on purpose.
    fn trust(&mut self, name: fsm::Name, key: Option<PublicKey>, origin: Origin) {
        let Some(key) = key.or_else(|| self.changed.get(&name).copied()) else {
            let reason = match self.pins.get(&name) {
                Some(pinned) => format!(
                    "{name} has not been seen with another key than its pinned one ({}); \
                     to pin a key you know: trust {name} KEY",
                    fingerprint(pinned)
                ),
                None => format!(
                    "no key seen for {name}: its key is pinned when it is first verified by \
                     the directory; to pin a key you know: trust {name} KEY"
                ),
            };
            return self.print(Out::Error { reason }, Some(origin));
        };
        self.changed.remove(&name);
        log::info!(
            "trusting {name}'s key {key} (fingerprint {}) on the user's word",
            fingerprint(&key)
        );
        self.pins.insert(name.clone(), key);
        self.ready.push_back(Output::Pin {
            name: name.clone(),
            key,
        });
        let event = Out::Trusted {
            peer: name.to_string(),
            key: key.to_string(),
            fingerprint: fingerprint(&key).to_string(),
        };
        self.print(event, Some(origin));
    }

    /// `watch` and `format`: set the control connection up, and answer with the status
    /// (the state the watching starts from) in its format. Stdin's events are stdout's.
    fn configure(&mut self, origin: Origin, watch: bool, format: Option<Format>) {
        let Origin::Control(connection) = origin else {
            let reason = "watch and format are for the control socket: the events of stdin's \
                          commands are on stdout, in the format --json says"
                .into();
            return self.print(Out::Error { reason }, Some(origin));
        };
        self.ready.push_back(Output::Configure {
            connection,
            watch,
            format,
        });
        self.ready.push_back(Output::ShowStatus { answer: origin });
    }

    /// A signalling message from `from`, in the clear or out of a session with `sender`'s
    /// key.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        message: fsm::Message,
        sender: fsm::Sender,
    ) {
        self.advance(now);
        let pinned = match &message {
            fsm::Message::Start { caller, .. } => {
                let pinned = self.pins.get(caller).copied();
                if let (fsm::Sender::Key(key), Some(pin)) = (sender, pinned) {
                    if key != pin {
                        self.key_changed(caller, pin, key, "calls");
                    }
                }
                pinned
            }
            _ => None,
        };
        let call = match (&message, self.call_at(from)) {
            // A START goes to a leg only as a copy of the leg's own: another call from a
            // leg's address (one whose leg lingers, closing) is the layer's to judge.
            (fsm::Message::Start { call: id, .. }, Call::Leg(name))
                if self.leg(&name).and_then(|l| l.machine.call_id()) != *id =>
            {
                Call::Main
            }
            (_, call) => call,
        };
        let message = match call {
            Call::Main => match self.conference_start(from, message, sender, pinned) {
                Some(message) => message,
                None => return,
            },
            Call::Leg(_) => message,
        };
        let event = fsm::Event::Peer {
            from,
            message,
            sender,
            pinned,
        };
        self.pending.push_back(Pending::Event(call, event, None));
    }

    /// `name` comes with `key` where `pinned` is pinned: remembered for `trust`, and
    /// logged with what to do.
    fn key_changed(&mut self, name: &fsm::Name, pinned: PublicKey, key: PublicKey, how: &str) {
        if self.changed.insert(name.clone(), key) != Some(key) {
            log::warn!(
                "{name} {how} with the key {key} (fingerprint {}), not the one pinned for it \
                 ({}): refused as key-changed. If {name}'s phone really has a new key (check \
                 its `parlo-client id`), accept it with: trust {name}",
                fingerprint(&key),
                fingerprint(&pinned)
            );
        }
    }

    /// Media from `from` that belongs to the call's stream (or raw PCM, which has none
    /// to check): a sign of the peer's life, in the clear or out of a session with
    /// `sender`'s key.
    pub fn handle_media(&mut self, now: Instant, from: SocketAddr, sender: fsm::Sender) {
        self.advance(now);
        let call = self.call_at(from);
        let event = fsm::Event::Media { from, sender };
        self.pending.push_back(Pending::Event(call, event, None));
    }

    /// The loop completed a session with `addr`, whose key is `key`: its short code is
    /// `code`.
    pub fn handle_session(&mut self, addr: SocketAddr, key: PublicKey, code: String) {
        self.sessions.retain(|(a, k, _)| (*a, *k) != (addr, key));
        if self.sessions.len() == SESSIONS_KEPT {
            self.sessions.pop_front();
        }
        self.sessions.push_back((addr, key, code));
        // Messages waiting for this call's session go over it.
        let call = (self.machine.peer_addr(), self.machine.peer_key());
        if call == (Some(addr), Some(key)) {
            if let Some(to) = self
                .waiting_call
                .take_if(|n| self.machine.peer() == Some(n))
            {
                self.mail.open(&to, addr, key, true, self.now);
                self.message(&messages::Event::Route { to }, None);
            }
        }
    }

    /// The short code of the current call's session, if it is encrypted and its
    /// handshake is done.
    fn code(&self) -> Option<String> {
        let addr = self.machine.peer_addr()?;
        let key = self.machine.peer_key()?;
        self.sessions
            .iter()
            .rev()
            .find(|(a, k, _)| (*a, *k) == (addr, key))
            .map(|(_, _, code)| code.clone())
    }

    /// What the directory connection reports: the registration, its loss, an answer.
    pub fn handle_directory(&mut self, now: Instant, outcome: Outcome) {
        self.advance(now);
        match outcome {
            Outcome::Registered => {
                let name = self.name().as_str().to_owned();
                let server = self.server.clone();
                self.print(Out::Registered { name, server }, None);
            }
            Outcome::Lost {
                reason,
                retry_in,
                announce,
            } => {
                if announce && self.quit.is_none() {
                    let reason = format!("{reason}; retrying {}", directory::delay_words(retry_in));
                    self.print(Out::Unregistered { reason }, None);
                }
            }
            Outcome::Answer(purpose, result) => self.handle_answer(purpose, result),
        }
    }

    fn handle_answer(&mut self, purpose: Purpose, result: Result<Answer, String>) {
        match purpose {
            Purpose::Dial(name) => self.handle_lookup(name, result, true),
            Purpose::Verify { peer } => self.handle_lookup(peer, result, false),
            Purpose::Message(to) => self.handle_message_lookup(to, result),
            Purpose::VerifySender(sender) => {
                let (name, addr, key) = *sender;
                self.handle_sender_lookup(name, addr, key, result);
            }
            Purpose::List { origin } => {
                let event = match result {
                    Ok(Answer::Users { names, complete }) => {
                        if !complete {
                            log::warn!("the directory's list was cut at {} names", names.len());
                        }
                        let names = names.iter().map(|n| n.as_str().to_owned()).collect();
                        Out::Users { names }
                    }
                    other => Out::Error {
                        reason: format!("cannot list the users: {}", failure(other)),
                    },
                };
                self.print(event, Some(origin));
            }
        }
    }

    /// Gives the machine the directory's answer about `name`: where it is, that it is
    /// unknown, or that the directory could not be asked (said as an error when the user
    /// is dialling; a caller's verification just stays unconfirmed).
    ///
    /// A dial whose request could not even be sent (the loop reports that in the
    /// request's place, before the dial's `calling` is printed) never begins for the user:
    /// the command's one answer is the error, and neither `calling` nor the `ended` the
    /// machine gives on its way back to idle is told.
    ///
    /// The answer about a conference member goes to that member's leg; its failure is
    /// the leg's alone, and only logged (the leg ends, and the conference tells why).
    fn handle_lookup(&mut self, name: fsm::Name, result: Result<Answer, String>, dialling: bool) {
        let call = match self.leg(&name) {
            Some(_) => Call::Leg(name.clone()),
            None => Call::Main,
        };
        let event = match result {
            Ok(Answer::Found(contact)) => self.resolved(name, &contact, dialling),
            Ok(Answer::NotFound) => fsm::Event::Unknown { name },
            other => {
                let why = failure(other);
                if call != Call::Main {
                    log::info!("cannot look the conference member {name} up: {why}");
                } else if dialling && self.withdraw_unannounced_dial(&name) {
                    let reason = format!("cannot call {name}: {why}");
                    let answer = self.answer.take();
                    self.print(Out::Error { reason }, answer);
                } else if dialling {
                    let reason = format!("cannot look {name} up: {why}");
                    self.print(Out::Error { reason }, None);
                } else {
                    log::info!("cannot verify the caller {name}: {why}");
                }
                fsm::Event::LookupFailed { name }
            }
        };
        self.pending.push_back(Pending::Event(call, event, None));
    }

    /// The machine's event for the directory's `contact` of `name`, with its pin; a
    /// callee given with another key than its pinned one is remembered for `trust`.
    fn resolved(
        &mut self,
        name: fsm::Name,
        contact: &parlo_net::directory::Contact,
        dialling: bool,
    ) -> fsm::Event {
        let pinned = self.pins.get(&name).copied();
        if let (true, Some(key), Some(pin)) = (dialling, contact.key, pinned) {
            if key != pin {
                self.key_changed(&name, pin, key, "is given by the directory");
            }
        }
        fsm::Event::Resolved {
            name,
            addr: SocketAddr::new(contact.ip.to_canonical(), contact.port),
            dialect: contact.dialect,
            key: contact.key,
            pinned,
        }
    }

    /// Whether the dial of `name` is still unannounced, its `calling` waiting in the rest
    /// of the transition being carried out; if so, that `calling` is dropped and the
    /// call's end will be too.
    fn withdraw_unannounced_dial(&mut self, name: &fsm::Name) -> bool {
        let calling = self.actions.iter().position(|(call, action)| {
            *call == Call::Main
                && matches!(action, Action::Notify(Note::Calling { peer }) if peer == name)
        });
        let Some(calling) = calling else {
            return false;
        };
        self.actions.remove(calling);
        self.withdrawn = Some(name.clone());
        true
    }

    /// The audio device failed. A call without sound is no use to either side: the user
    /// is told, and the call is hung up so that the peer is told at once rather than by
    /// peer silence. Either way the exit code becomes 1.
    pub fn handle_media_failed(&mut self, now: Instant, failure: MediaFailure) {
        self.advance(now);
        self.warnings = true;
        let reason = match failure {
            MediaFailure::Stop(why) => {
                log::warn!("audio device: {why}");
                return;
            }
            // Said in the place of the StartMedia: the answer of the command that started
            // the call, if nothing before it was.
            MediaFailure::Start(why) => format!("audio device {}: {why}; hanging up", self.device),
            MediaFailure::Lost(why) => {
                let why = why.unwrap_or_else(|| "it stopped delivering audio".to_owned());
                format!(
                    "audio device {} failed: {why}; media stopped, hanging up",
                    self.device
                )
            }
        };
        let answer = self.answer.take();
        self.print(Out::Error { reason }, answer);
        if self.in_conference() {
            self.leave_conference(None);
        }
        self.feed(fsm::Event::Hangup, None);
    }

    /// A signal asks the phone to stop.
    pub fn handle_stop(&mut self, now: Instant) {
        self.advance(now);
        self.quit(None);
    }

    /// Stdin ended. `polled` stdin (a terminal, a pipe, a socket) ending means whoever
    /// drove the phone is gone, and without a control socket nobody else can: the phone
    /// stops. `/dev/null` and files end at once and mean nothing.
    pub fn handle_stdin_end(&mut self, now: Instant, polled: bool) {
        self.advance(now);
        log::info!("end of stdin");
        if polled && !self.control {
            self.quit(None);
        }
    }

    fn quit(&mut self, origin: Option<Origin>) {
        if self.quit.is_some() {
            return;
        }
        self.quit = Some(Quit {
            deadline: self.now.after(QUIT_WAIT_MS),
            origin,
        });
        if matches!(
            self.machine.state(),
            State::Dialing | State::Ringing | State::InCall
        ) {
            self.feed(fsm::Event::Hangup, None);
        }
        if self.in_conference() {
            self.leave_conference(None);
        }
        // And the legs the layer no longer counts (a leg being refused).
        let legs: Vec<fsm::Name> = self.legs.iter().map(|l| l.peer.clone()).collect();
        for name in legs {
            self.hang_up_leg(name);
        }
        self.pending.push_back(Pending::Output(Output::Disconnect));
    }

    /// When [`Agent::handle_timeout`] is next due: the machine's earliest timer, or the
    /// quit limit (then [`Agent::is_done`] says so).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let quit = self.quit.as_ref().map(|q| q.deadline);
        let legs = self.legs.iter().filter_map(|l| l.machine.poll_timeout());
        [
            self.machine.poll_timeout(),
            quit,
            self.messenger.poll_timeout(),
            self.mail.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .chain(legs)
        .min()
    }

    /// Fires the machine's timers due at `now` (as [`Agent::poll_output`] is drained), and
    /// the message machine's and the sessions' for messages (now).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.timers_due = true;
        while self
            .messenger
            .poll_timeout()
            .is_some_and(|due| due <= self.now)
        {
            let actions = self.messenger.handle_timeout(self.now);
            for action in actions {
                self.carry_out_message(action, &mut None);
            }
        }
        for (to, key) in self.mail.due_hellos(self.now) {
            self.send_hello(to, key);
        }
    }

    // ---- outputs ----

    /// The next thing for the loop to do; `None` when there is nothing more until the
    /// next input.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.ready.pop_front() {
                return Some(output);
            }
            if let Some((call, action)) = self.actions.pop_front() {
                match call {
                    Call::Main => self.carry_out(action),
                    Call::Leg(peer) => self.carry_out_leg(peer, action),
                }
                continue;
            }
            // The transition is carried out: its command has had its answer, if any.
            self.answer = None;
            if self.pending.is_empty() {
                // The withdrawn dial's end, if any, came with the events queued with it.
                self.withdrawn = None;
            }
            match self.pending.pop_front() {
                Some(Pending::Event(call, event, origin)) => {
                    self.answer = origin;
                    let now = self.now;
                    if let Some(machine) = self.machine_of(&call) {
                        let actions = machine.handle(now, &event);
                        let tagged = actions.into_iter().map(|a| (call.clone(), a));
                        self.actions.extend(tagged);
                    }
                }
                Some(Pending::Output(output)) => return Some(output),
                None => match self.due_timer() {
                    Some(call) => {
                        let now = self.now;
                        if let Some(machine) = self.machine_of(&call) {
                            let actions = machine.handle_timeout(now);
                            let tagged = actions.into_iter().map(|a| (call.clone(), a));
                            self.actions.extend(tagged);
                        }
                    }
                    None => {
                        self.timers_due = false;
                        self.drop_finished_legs();
                        return None;
                    }
                },
            }
        }
    }

    /// A machine whose timer is due, when timers are to fire.
    fn due_timer(&self) -> Option<Call> {
        if !self.timers_due {
            return None;
        }
        let due = |machine: &Machine<R>| machine.poll_timeout().is_some_and(|d| d <= self.now);
        if due(&self.machine) {
            return Some(Call::Main);
        }
        self.legs
            .iter()
            .find(|l| due(&l.machine))
            .map(|l| Call::Leg(l.peer.clone()))
    }

    fn carry_out(&mut self, action: Action) {
        let output = match action {
            Action::Lookup(name) => Output::Query {
                query: Query::Lookup(name.clone()),
                purpose: Purpose::Dial(name),
            },
            // The machine compares the address; the answer only needs to name the caller.
            Action::LookupCaller { name, .. } => Output::Query {
                query: Query::Lookup(name.clone()),
                purpose: Purpose::Verify { peer: name },
            },
            Action::Send { to, message, key } => Output::Send { to, message, key },
            Action::Pin { name, key } => return self.pin(name, key),
            Action::ArmTimer { .. } | Action::CancelTimer(_) => return,
            Action::StartMedia {
                peer,
                dialect,
                codec,
            } => Output::StartMedia {
                peer,
                dialect,
                codec,
                key: self.machine.peer_key(),
            },
            Action::StopMedia => Output::StopMedia { peer: None },
            // An incoming call's announcement answers no command: it comes first when a
            // command finds the call not yet announced, and the command's own event
            // (`connected`, a refusal) is its answer.
            Action::Notify(Note::Ended { peer, .. }) if self.withdrawn.as_ref() == Some(&peer) => {
                self.withdrawn = None;
                return;
            }
            Action::Notify(note @ Note::Incoming { .. }) => Output::Print {
                event: self.event_of(note),
                answer: None,
            },
            Action::Notify(note) => Output::Print {
                event: self.event_of(note),
                answer: self.answer.take(),
            },
        };
        self.ready.push_back(output);
    }

    fn event_of(&self, note: Note) -> Out {
        match note {
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
                new,
                address,
            } => Out::Incoming {
                peer: peer.to_string(),
                from,
                verified,
                new,
                address,
                conf: None,
            },
            Note::Connected {
                peer,
                verified,
                new,
            } => Out::Connected {
                peer: peer.to_string(),
                dialect: self.machine.dialect().map_or("parlo", fsm::Dialect::name),
                codec: self.machine.codec().map_or("L16", fsm::Codec::name),
                verified,
                new,
                code: self.code(),
            },
            Note::Ended { peer, reason } => Out::Ended {
                peer: peer.to_string(),
                reason: reason.name(),
            },
            Note::Refused(why) => Out::Error {
                reason: why.to_string(),
            },
        }
    }

    // ---- queries ----

    /// The address of the current call's peer, once known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.machine.peer_addr()
    }

    /// The media format to expect from `from` (the machine's
    /// [`Machine::media_dialect`]).
    pub fn media_dialect(&self, now: Instant, from: SocketAddr) -> Option<fsm::Dialect> {
        match self.leg_at(from) {
            Some(leg) => leg.machine.media_dialect(now, from),
            None => self.machine.media_dialect(now, from),
        }
    }

    /// The `status` answer, with what the loop knows.
    pub fn status(&self, snapshot: &Snapshot) -> Status {
        let counters = self.machine.counters();
        let (conference, legs) = self.leg_statuses(&snapshot.legs);
        let state = match (self.machine.state(), &conference) {
            (State::Idle, Some(_)) => "conference",
            (state, _) => state_name(state),
        };
        Status {
            state,
            peer: self.machine.peer().map(ToString::to_string),
            peer_addr: self.machine.peer_addr(),
            dialect: self.machine.dialect().map(fsm::Dialect::name),
            verified: self.machine.verification(),
            code: self.code(),
            security: Some(self.machine.config().security.name()),
            secure: snapshot.secure,
            rekeys: snapshot.rekeys,
            registration: snapshot.registration.clone(),
            media: snapshot.media,
            foreign: counters.foreign,
            garbage: snapshot.garbage,
            retransmissions: counters.retransmissions,
            conference,
            legs,
        }
    }

    /// Whether a quitting phone may stop at `now`: its quit limit is reached, or its call
    /// is done (a call only lingering, nothing left to be acknowledged, need not hold the
    /// exit up) and the directory (`directory_busy`: requests, DISCONNECT) is too.
    pub fn is_done(&self, now: Instant, directory_busy: bool) -> bool {
        let Some(quit) = &self.quit else {
            return false;
        };
        let done = |machine: &Machine<R>| match machine.state() {
            State::Idle => true,
            State::Closing => machine.deadline(fsm::Timer::Retransmit).is_none(),
            _ => false,
        };
        let call_done = done(&self.machine) && self.legs.iter().all(|l| done(&l.machine));
        let drained = self.ready.is_empty() && self.actions.is_empty() && self.pending.is_empty();
        now.max(self.now) >= quit.deadline || (call_done && drained && !directory_busy)
    }

    /// The origin of the `quit` that stops the phone, if a command did.
    pub fn quit_origin(&self) -> Option<Origin> {
        self.quit.as_ref().and_then(|q| q.origin)
    }

    /// The phone stops: queues `bye` (the answer to `quit`) and gives the exit code.
    pub fn finish(&mut self) -> Exit {
        let answer = self.quit_origin();
        self.print(Out::Bye, answer);
        if self.warnings {
            Exit::Warning
        } else {
            Exit::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parlo_fsm::{CallId, Codec, Dialect, Message, Preference, SplitMix64};
    use parlo_net::directory::Contact;

    use crate::media::MediaStats;

    const SERVER: &str = "127.0.0.1:10000";
    const BOB: &str = "127.0.0.2:5001";
    const NOT_CONNECTED: &str = "not connected to the directory server 127.0.0.1:10000";

    type TestAgent = Agent<SplitMix64>;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn name(s: &str) -> fsm::Name {
        fsm::Name::new(s).expect("test name")
    }

    /// Control connection `n`.
    fn ctl(n: usize) -> Origin {
        Origin::Control(ConnectionId::new(n, 1))
    }

    fn settings() -> Settings {
        // As the phone's: plaintext calls with Parlo phones are made and taken.
        let mut machine = fsm::Config::new(name("alice"));
        machine.security = fsm::Security::Preferred;
        Settings {
            machine,
            server: SERVER.into(),
            device: "tone:440".into(),
            control: true,
            pins: BTreeMap::new(),
            messages: messages::Config::default(),
            run: 0x0102_0304,
            key: PublicKey([0xa1; 32]),
        }
    }

    fn agent_with(settings: Settings) -> TestAgent {
        Agent::new(settings, SplitMix64(7), Instant(0))
    }

    /// Alice's idle phone, with a control socket.
    fn idle() -> TestAgent {
        agent_with(settings())
    }

    /// Everything the agent asks for now, carried out by a loop whose requests and
    /// devices all work.
    fn outputs(agent: &mut TestAgent) -> Vec<Output> {
        std::iter::from_fn(|| agent.poll_output()).collect()
    }

    /// As [`outputs`], by a loop with no directory connection: each request fails at
    /// once, reported as the loop does.
    fn outputs_offline(agent: &mut TestAgent) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(output) = agent.poll_output() {
            if let Output::Query { purpose, .. } = &output {
                let failed = Outcome::Answer(purpose.clone(), Err(NOT_CONNECTED.into()));
                agent.handle_directory(agent.now, failed);
            }
            out.push(output);
        }
        out
    }

    /// The printed lines among `outputs`, each with the origin it answers.
    fn printed(outputs: &[Output]) -> Vec<(String, Option<Origin>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Print { event, answer } => Some((event.text(), *answer)),
                _ => None,
            })
            .collect()
    }

    fn line(agent: &mut TestAgent, at: u64, text: &str, origin: Origin) -> Vec<Output> {
        agent.handle_line(Instant(at), Ok(text.into()), origin);
        outputs(agent)
    }

    fn found(at: &str) -> Result<Answer, String> {
        let at = addr(at);
        Ok(Answer::Found(Contact {
            ip: at.ip(),
            port: at.port(),
            dialect: Some(Dialect::Parlo),
            key: None,
        }))
    }

    fn answer(agent: &mut TestAgent, at: u64, purpose: Purpose, result: Result<Answer, String>) {
        agent.handle_directory(Instant(at), Outcome::Answer(purpose, result));
    }

    /// Alice dialled Bob from control connection 1 at 0; the directory found him at 5 and
    /// START went out.
    fn dialing() -> TestAgent {
        let mut a = idle();
        let out = line(&mut a, 0, "call bob", ctl(1));
        assert_eq!(
            out[0],
            Output::Query {
                query: Query::Lookup(name("bob")),
                purpose: Purpose::Dial(name("bob"))
            }
        );
        answer(&mut a, 5, Purpose::Dial(name("bob")), found(BOB));
        let out = outputs(&mut a);
        let id = a.machine.call_id().expect("a Parlo call has an id");
        let start = Message::start(name("alice"), id, Preference::default().set());
        assert_eq!(
            out,
            [Output::Send {
                to: addr(BOB),
                message: start,
                key: None
            }]
        );
        a
    }

    /// Alice in a call with Bob, connected at 10.
    fn in_call() -> TestAgent {
        let mut a = dialing();
        let call = a.machine.call_id();
        a.handle_peer(
            Instant(10),
            addr(BOB),
            Message::Accept { call, codec: None },
            fsm::Sender::Plain,
        );
        let _ = outputs(&mut a);
        assert_eq!(a.state(), State::InCall);
        a
    }

    fn start_from_bob() -> Message {
        Message::start(name("bob"), CallId(1), Preference::default().set())
    }

    fn verify_bob() -> Purpose {
        Purpose::Verify { peer: name("bob") }
    }

    /// Alice's phone rung by Bob at 0, the directory asked to verify him.
    fn rung_with(settings: Settings) -> TestAgent {
        let mut a = agent_with(settings);
        a.handle_peer(Instant(0), addr(BOB), start_from_bob(), fsm::Sender::Plain);
        let out = outputs(&mut a);
        assert!(
            out.contains(&Output::Query {
                query: Query::Lookup(name("bob")),
                purpose: verify_bob()
            }),
            "{out:?}"
        );
        assert!(
            printed(&out).is_empty(),
            "announced before verification: {out:?}"
        );
        a
    }

    fn rung() -> TestAgent {
        rung_with(settings())
    }

    // ---- dialling ----

    #[test]
    fn a_dial_asks_the_directory_then_starts_the_call_and_tells_its_progress() {
        let mut a = idle();
        let out = line(&mut a, 0, "call bob", ctl(1));
        assert_eq!(printed(&out), [("calling bob".into(), Some(ctl(1)))]);
        let mut a = dialing();
        let call = a.machine.call_id().expect("a Parlo call has an id");
        a.handle_peer(
            Instant(20),
            addr(BOB),
            Message::Ringing { call },
            fsm::Sender::Plain,
        );
        assert_eq!(printed(&outputs(&mut a)), [("ringing bob".into(), None)]);
        let accept = Message::Accept {
            call: Some(call),
            codec: None,
        };
        a.handle_peer(Instant(30), addr(BOB), accept, fsm::Sender::Plain);
        let out = outputs(&mut a);
        assert!(out.contains(&Output::StartMedia {
            peer: addr(BOB),
            dialect: Dialect::Parlo,
            codec: Codec::L16,
            key: None
        }));
        assert!(out.contains(&Output::Send {
            to: addr(BOB),
            message: Message::Ack { call },
            key: None
        }));
        assert_eq!(
            printed(&out),
            [(
                "connected bob dialect=parlo codec=L16 verified=plaintext".into(),
                None
            )]
        );
    }

    #[test]
    fn a_dial_without_the_directory_is_answered_with_one_error_and_no_call() {
        // The request cannot even be sent: the call never begins for the user, and the
        // command's one answer is why. No `calling`, no `ended`.
        for origin in [ctl(1), Origin::Stdin] {
            let mut a = idle();
            a.handle_line(Instant(0), Ok("call bob".into()), origin);
            let out = outputs_offline(&mut a);
            assert_eq!(
                printed(&out),
                [(
                    format!("error reason=cannot call bob: {NOT_CONNECTED}"),
                    Some(origin)
                )]
            );
            assert_eq!(a.state(), State::Idle);
            assert!(
                a.poll_timeout().is_none(),
                "no timer left: {:?}",
                a.poll_timeout()
            );
            // The phone dials again as usual afterwards.
            let out = line(&mut a, 10, "call bob", ctl(2));
            assert_eq!(printed(&out), [("calling bob".into(), Some(ctl(2)))]);
            answer(&mut a, 15, Purpose::Dial(name("bob")), Ok(Answer::NotFound));
            assert_eq!(
                printed(&outputs(&mut a)),
                [("ended bob reason=unknown-user".into(), None)]
            );
        }
    }

    #[test]
    fn a_lookup_lost_after_the_dial_began_ends_the_call_it_announced() {
        // The request went out; the connection broke before its answer: the call was
        // announced (`calling`, the command's answer), so its end is told too.
        let mut a = idle();
        let out = line(&mut a, 0, "call bob", ctl(1));
        assert_eq!(printed(&out), [("calling bob".into(), Some(ctl(1)))]);
        let lost = Err("the directory server 127.0.0.1:10000 went away".to_owned());
        answer(&mut a, 5, Purpose::Dial(name("bob")), lost);
        assert_eq!(
            printed(&outputs(&mut a)),
            [
                (
                    "error reason=cannot look bob up: the directory server 127.0.0.1:10000 \
                     went away"
                        .into(),
                    None
                ),
                ("ended bob reason=lookup-failed".into(), None),
            ]
        );
        assert_eq!(a.state(), State::Idle);
    }

    #[test]
    fn an_unknown_callee_ends_the_call() {
        let mut a = idle();
        let _ = line(&mut a, 0, "call bob", Origin::Stdin);
        answer(&mut a, 5, Purpose::Dial(name("bob")), Ok(Answer::NotFound));
        assert_eq!(
            printed(&outputs(&mut a)),
            [("ended bob reason=unknown-user".into(), None)]
        );
    }

    // ---- incoming calls ----

    #[test]
    fn an_incoming_call_is_announced_once_the_caller_is_verified() {
        let cases = [
            // Bob's directory entry has his IP (another port: the same machine).
            (found("127.0.0.2:6000"), "yes"),
            (found("127.0.0.9:5001"), "no"),
            (Ok(Answer::NotFound), "no"),
            (Err(NOT_CONNECTED.to_owned()), "unknown"),
        ];
        for (result, verified) in cases {
            let mut a = rung();
            answer(&mut a, 10, verify_bob(), result);
            assert_eq!(
                printed(&outputs(&mut a)),
                [(
                    format!("incoming bob from={BOB} verified=plaintext address={verified}"),
                    None
                )]
            );
            assert_eq!(a.state(), State::Ringing);
        }
        // No answer within the verification wait.
        let mut a = rung();
        a.handle_timeout(Instant(1_000));
        assert_eq!(
            printed(&outputs(&mut a)),
            [(
                format!("incoming bob from={BOB} verified=plaintext address=unknown"),
                None
            )]
        );
    }

    const BOB_KEY: PublicKey = PublicKey([0xb0; 32]);
    const MALLORY_KEY: PublicKey = PublicKey([0x66; 32]);

    fn found_with_key(at: &str, key: PublicKey) -> Result<Answer, String> {
        let at = addr(at);
        Ok(Answer::Found(Contact {
            ip: at.ip(),
            port: at.port(),
            dialect: Some(Dialect::Parlo),
            key: Some(key),
        }))
    }

    #[test]
    fn an_intercom_answers_a_caller_verified_by_key_pins_it_and_shows_the_code() {
        let mut settings = settings();
        settings.machine.auto_answer = true;
        let mut a = agent_with(settings);
        let key = Some(BOB_KEY);
        a.handle_peer(
            Instant(0),
            addr(BOB),
            start_from_bob(),
            fsm::Sender::Key(BOB_KEY),
        );
        let out = outputs(&mut a);
        assert!(out.contains(&Output::Send {
            to: addr(BOB),
            message: Message::Ringing { call: CallId(1) },
            key
        }));
        // Sending RINGING answered the START: the loop reports the session.
        a.handle_session(addr(BOB), BOB_KEY, "0042-4242".into());
        answer(&mut a, 10, verify_bob(), found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert!(out.contains(&Output::Pin {
            name: name("bob"),
            key: BOB_KEY
        }));
        assert!(out.contains(&Output::Send {
            to: addr(BOB),
            message: Message::Accept {
                call: Some(CallId(1)),
                codec: Some(Codec::L16)
            },
            key
        }));
        assert!(out.contains(&Output::StartMedia {
            peer: addr(BOB),
            dialect: Dialect::Parlo,
            codec: Codec::L16,
            key
        }));
        assert_eq!(
            printed(&out),
            [
                (
                    format!("incoming bob from={BOB} verified=key new=yes"),
                    None
                ),
                (
                    "connected bob dialect=parlo codec=L16 verified=key code=0042-4242".into(),
                    None
                ),
            ]
        );
        assert_eq!(a.state(), State::InCall);
        assert_eq!(a.pins.get(&name("bob")), Some(&BOB_KEY));
    }

    #[test]
    fn an_intercom_lets_callers_not_verified_by_key_ring() {
        let mut settings = settings();
        settings.machine.auto_answer = true;
        // In the clear: rings.
        let mut a = rung_with(settings.clone());
        answer(&mut a, 10, verify_bob(), found(BOB));
        let out = outputs(&mut a);
        assert!(
            !out.iter().any(|o| matches!(o, Output::StartMedia { .. })),
            "{out:?}"
        );
        assert_eq!(
            printed(&out),
            [(
                format!("incoming bob from={BOB} verified=plaintext address=yes"),
                None
            )]
        );
        assert_eq!(a.state(), State::Ringing);
        // Encrypted, but the directory binds bob to another key: rings, as not bob.
        let mut a = agent_with(settings);
        a.handle_peer(
            Instant(0),
            addr(BOB),
            start_from_bob(),
            fsm::Sender::Key(MALLORY_KEY),
        );
        let _ = outputs(&mut a);
        answer(&mut a, 10, verify_bob(), found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::StartMedia { .. } | Output::Pin { .. }))
        );
        assert_eq!(
            printed(&out),
            [(format!("incoming bob from={BOB} verified=no"), None)]
        );
        assert_eq!(a.state(), State::Ringing);
    }

    #[test]
    fn a_pinned_caller_with_another_key_is_refused_and_trust_accepts_the_new_key() {
        let mut settings = settings();
        settings.pins.insert(name("bob"), BOB_KEY);
        let mut a = agent_with(settings);
        a.handle_peer(
            Instant(0),
            addr(BOB),
            start_from_bob(),
            fsm::Sender::Key(MALLORY_KEY),
        );
        let out = outputs(&mut a);
        assert!(out.contains(&Output::Send {
            to: addr(BOB),
            message: Message::Reject {
                call: Some(CallId(1))
            },
            key: Some(MALLORY_KEY)
        }));
        assert_eq!(
            printed(&out),
            [("ended bob reason=key-changed".into(), None)]
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Query { .. })));

        let out = line(&mut a, 100, "trust bob", ctl(1));
        assert_eq!(
            out[0],
            Output::Pin {
                name: name("bob"),
                key: MALLORY_KEY
            }
        );
        let fp = fingerprint(&MALLORY_KEY);
        assert_eq!(
            printed(&out),
            [(
                format!("trusted bob key={MALLORY_KEY} fingerprint={fp}"),
                Some(ctl(1))
            )]
        );
        // The new key now rings.
        a.handle_peer(
            Instant(200),
            addr(BOB),
            Message::start(name("bob"), CallId(2), Preference::default().set()),
            fsm::Sender::Key(MALLORY_KEY),
        );
        let out = outputs(&mut a);
        assert!(
            out.iter().any(|o| matches!(o, Output::Query { .. })),
            "{out:?}"
        );
        assert_eq!(a.state(), State::Ringing);
    }

    // ---- messages ----

    fn msg_line(id: messages::MessageId, text: &str) -> SessionLine {
        SessionLine::Message(messages::Line::Msg {
            id,
            text: messages::Text::new(text).expect("short"),
        })
    }

    fn line_to(to: &str, key: PublicKey, line: SessionLine, open: bool) -> Output {
        Output::SendLine {
            to: addr(to),
            key,
            line: Box::new(line),
            open,
        }
    }

    #[test]
    fn a_message_opens_a_session_goes_over_it_and_is_delivered() {
        let mut a = idle();
        let out = line(&mut a, 0, "msg bob parcel at the door", ctl(1));
        let id = messages::MessageId::new(0x0102_0304, 1);
        assert_eq!(
            printed(&out),
            [(format!("sending {id} to=bob"), Some(ctl(1)))]
        );
        assert!(out.contains(&Output::Query {
            query: Query::Lookup(name("bob")),
            purpose: Purpose::Message(name("bob"))
        }));
        answer(
            &mut a,
            5,
            Purpose::Message(name("bob")),
            found_with_key(BOB, BOB_KEY),
        );
        let hello = SessionLine::Hello(name("alice"));
        assert_eq!(
            outputs(&mut a),
            [line_to(BOB, BOB_KEY, hello.clone(), true)]
        );
        // Unanswered, the HELLO goes again.
        assert_eq!(a.poll_timeout(), Some(Instant(505)));
        a.handle_timeout(Instant(505));
        assert!(outputs(&mut a).contains(&line_to(BOB, BOB_KEY, hello, true)));
        // Bob's HELLO answers: the message goes over the session.
        a.handle_session_line(
            Instant(600),
            addr(BOB),
            BOB_KEY,
            SessionLine::Hello(name("bob")),
            true,
        );
        let out = outputs(&mut a);
        assert!(
            out.contains(&line_to(
                BOB,
                BOB_KEY,
                msg_line(id, "parcel at the door"),
                false
            )),
            "{out:?}"
        );
        let ack = SessionLine::Message(messages::Line::Ack { id });
        a.handle_session_line(Instant(610), addr(BOB), BOB_KEY, ack, false);
        assert_eq!(
            printed(&outputs(&mut a)),
            [(format!("delivered {id} to=bob"), None)]
        );
    }

    #[test]
    fn a_message_sender_is_verified_before_its_message_is_printed_once() {
        let mut a = idle();
        a.handle_session_line(
            Instant(0),
            addr(BOB),
            BOB_KEY,
            SessionLine::Hello(name("bob")),
            false,
        );
        let out = outputs(&mut a);
        assert!(out.contains(&line_to(
            BOB,
            BOB_KEY,
            SessionLine::Hello(name("alice")),
            false
        )));
        let verify = Purpose::VerifySender(Box::new((name("bob"), addr(BOB), BOB_KEY)));
        assert!(out.contains(&Output::Query {
            query: Query::Lookup(name("bob")),
            purpose: verify.clone()
        }));
        let id = messages::MessageId::new(9, 1);
        a.handle_session_line(
            Instant(5),
            addr(BOB),
            BOB_KEY,
            msg_line(id, "hi\u{1b}[2J"),
            false,
        );
        assert!(outputs(&mut a).is_empty(), "held until bob is verified");
        answer(&mut a, 10, verify, found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert!(out.contains(&Output::Pin {
            name: name("bob"),
            key: BOB_KEY
        }));
        assert_eq!(
            printed(&out),
            [(
                format!("message bob id={id} verified=new text=hi\\u{{1b}}[2J"),
                None
            )]
        );
        let ack = SessionLine::Message(messages::Line::Ack { id });
        assert!(out.contains(&line_to(BOB, BOB_KEY, ack.clone(), false)));
        // A copy: acknowledged again, not printed again.
        a.handle_session_line(Instant(20), addr(BOB), BOB_KEY, msg_line(id, "hi"), false);
        let out = outputs(&mut a);
        assert!(printed(&out).is_empty());
        assert_eq!(out, [line_to(BOB, BOB_KEY, ack, false)]);
    }

    #[test]
    fn a_refusal_goes_back_to_the_forger_not_to_the_phone_whose_name_it_gave() {
        // Alice's phone has a session up with the real bob.
        let mut a = idle();
        let _ = line(&mut a, 0, "msg bob hi", ctl(1));
        answer(
            &mut a,
            5,
            Purpose::Message(name("bob")),
            found_with_key(BOB, BOB_KEY),
        );
        a.handle_session_line(
            Instant(6),
            addr(BOB),
            BOB_KEY,
            SessionLine::Hello(name("bob")),
            true,
        );
        let _ = outputs(&mut a);
        // Someone else says it is bob.
        const FORGER: &str = "127.0.0.66:5001";
        a.handle_session_line(
            Instant(10),
            addr(FORGER),
            MALLORY_KEY,
            SessionLine::Hello(name("bob")),
            false,
        );
        let _ = outputs(&mut a);
        let id = messages::MessageId::new(9, 1);
        a.handle_session_line(
            Instant(11),
            addr(FORGER),
            MALLORY_KEY,
            msg_line(id, "open up"),
            false,
        );
        let verify = Purpose::VerifySender(Box::new((name("bob"), addr(FORGER), MALLORY_KEY)));
        answer(&mut a, 12, verify, found_with_key(BOB, BOB_KEY));
        let nak = SessionLine::Message(messages::Line::Nak {
            id,
            reason: messages::Reason::Refused,
        });
        assert_eq!(outputs(&mut a), [line_to(FORGER, MALLORY_KEY, nak, false)]);
    }

    #[test]
    fn a_message_over_a_call_not_yet_announced_waits_for_the_caller_s_verification() {
        let mut a = idle();
        a.handle_peer(
            Instant(0),
            addr(BOB),
            start_from_bob(),
            fsm::Sender::Key(BOB_KEY),
        );
        let _ = outputs(&mut a);
        let id = messages::MessageId::new(9, 1);
        a.handle_session_line(
            Instant(5),
            addr(BOB),
            BOB_KEY,
            msg_line(id, "I am at the door"),
            false,
        );
        let out = outputs(&mut a);
        let verify = Purpose::VerifySender(Box::new((name("bob"), addr(BOB), BOB_KEY)));
        assert_eq!(
            out,
            [Output::Query {
                query: Query::Lookup(name("bob")),
                purpose: verify.clone()
            }]
        );
        answer(&mut a, 10, verify, found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert_eq!(
            printed(&out),
            [(
                format!("message bob id={id} verified=new text=I am at the door"),
                None
            )]
        );
        let ack = SessionLine::Message(messages::Line::Ack { id });
        assert!(out.contains(&line_to(BOB, BOB_KEY, ack, false)));
    }

    #[test]
    fn a_message_from_a_key_not_bound_to_the_name_it_gives_is_refused_unprinted() {
        let mut a = idle();
        a.handle_session_line(
            Instant(0),
            addr(BOB),
            MALLORY_KEY,
            SessionLine::Hello(name("bob")),
            false,
        );
        let _ = outputs(&mut a);
        let verify = Purpose::VerifySender(Box::new((name("bob"), addr(BOB), MALLORY_KEY)));
        let id = messages::MessageId::new(9, 1);
        a.handle_session_line(
            Instant(5),
            addr(BOB),
            MALLORY_KEY,
            msg_line(id, "open the door"),
            false,
        );
        answer(&mut a, 10, verify, found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert!(printed(&out).is_empty(), "{out:?}");
        let nak = SessionLine::Message(messages::Line::Nak {
            id,
            reason: messages::Reason::Refused,
        });
        assert_eq!(out, [line_to(BOB, MALLORY_KEY, nak, false)]);
    }

    #[test]
    fn trust_without_a_changed_key_asks_for_the_key() {
        let mut a = idle();
        let out = line(&mut a, 0, "trust bob", ctl(1));
        let said = printed(&out);
        assert_eq!(said.len(), 1);
        assert!(
            said[0].0.starts_with("error reason=no key seen for bob"),
            "{said:?}"
        );
        let out = line(&mut a, 1, &format!("trust bob {BOB_KEY}"), ctl(1));
        assert!(out.contains(&Output::Pin {
            name: name("bob"),
            key: BOB_KEY
        }));
        assert_eq!(a.pins.get(&name("bob")), Some(&BOB_KEY));
    }

    #[test]
    fn a_dial_takes_the_directory_s_key_and_a_changed_one_is_refused() {
        let mut a = idle();
        let _ = line(&mut a, 0, "call bob", ctl(1));
        answer(
            &mut a,
            5,
            Purpose::Dial(name("bob")),
            found_with_key(BOB, BOB_KEY),
        );
        let out = outputs(&mut a);
        let id = a.machine.call_id().expect("a Parlo call has an id");
        assert_eq!(
            out,
            [Output::Send {
                to: addr(BOB),
                message: Message::start(name("alice"), id, Preference::default().set()),
                key: Some(BOB_KEY)
            }]
        );
        // Pinned with another key: refused before anything is sent.
        let mut settings = settings();
        settings.pins.insert(name("bob"), MALLORY_KEY);
        let mut a = agent_with(settings);
        let _ = line(&mut a, 0, "call bob", ctl(1));
        answer(
            &mut a,
            5,
            Purpose::Dial(name("bob")),
            found_with_key(BOB, BOB_KEY),
        );
        let out = outputs(&mut a);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Send { .. })),
            "{out:?}"
        );
        assert_eq!(
            printed(&out),
            [("ended bob reason=key-changed".into(), None)]
        );
        assert_eq!(a.changed.get(&name("bob")), Some(&BOB_KEY));
    }

    // ---- commands and their answers ----

    #[test]
    fn a_refused_command_is_answered_with_its_refusal_even_before_the_announcement() {
        // `call` while a call rings, not yet announced: the announcement comes first, but
        // the answer (what `parlo-client ctl` prints, and its exit code) is the refusal.
        let mut a = rung();
        let out = line(&mut a, 100, "call carol", ctl(1));
        assert_eq!(
            printed(&out),
            [
                (
                    format!("incoming bob from={BOB} verified=plaintext address=unknown"),
                    None
                ),
                (
                    "error reason=already in a call: hang up first".into(),
                    Some(ctl(1))
                ),
            ]
        );
    }

    #[test]
    fn only_the_first_event_after_a_command_answers_it() {
        // Accepting a call not yet announced: it is announced first, and the command's
        // own event is its answer.
        let mut a = rung();
        let out = line(&mut a, 100, "accept", ctl(1));
        assert_eq!(
            printed(&out),
            [
                (
                    format!("incoming bob from={BOB} verified=plaintext address=unknown"),
                    None
                ),
                (
                    "connected bob dialect=parlo codec=L16 verified=plaintext".into(),
                    Some(ctl(1))
                ),
            ]
        );
        // Events that follow on their own answer nobody.
        a.handle_peer(
            Instant(200),
            addr(BOB),
            Message::Close {
                call: Some(CallId(1)),
            },
            fsm::Sender::Plain,
        );
        assert_eq!(
            printed(&outputs(&mut a)),
            [("ended bob reason=remote-hangup".into(), None)]
        );
        // A refusal is an answer too.
        let out = line(&mut idle(), 0, "reject", Origin::Stdin);
        assert_eq!(
            printed(&out),
            [(
                "error reason=no incoming call to answer".into(),
                Some(Origin::Stdin)
            )]
        );
    }

    #[test]
    fn help_and_mistakes_are_answered_to_their_origin() {
        let mut a = idle();
        let out = line(&mut a, 0, "help", ctl(2));
        assert_eq!(
            out,
            [Output::Print {
                event: Out::Help,
                answer: Some(ctl(2))
            }]
        );
        let out = line(&mut a, 0, "dance", ctl(1));
        assert!(
            matches!(&printed(&out)[..], [(text, Some(origin))]
                if text.starts_with("error reason=unknown command \"dance\"") && *origin == ctl(1)),
            "{out:?}"
        );
        a.handle_line(Instant(0), Err("command is not valid UTF-8".into()), ctl(3));
        assert_eq!(
            printed(&outputs(&mut a)),
            [(
                "error reason=command is not valid UTF-8".into(),
                Some(ctl(3))
            )]
        );
        assert!(
            line(&mut a, 0, "   ", ctl(1)).is_empty(),
            "a blank line is no command"
        );
    }

    #[test]
    fn list_asks_the_directory_and_answers_the_origin_that_asked() {
        let mut a = idle();
        let list = |origin| Output::Query {
            query: Query::List,
            purpose: Purpose::List { origin },
        };
        assert_eq!(line(&mut a, 0, "list", ctl(1)), [list(ctl(1))]);
        assert_eq!(
            line(&mut a, 0, "list", Origin::Stdin),
            [list(Origin::Stdin)]
        );
        let users = Ok(Answer::Users {
            names: vec![name("alice"), name("bob")],
            complete: true,
        });
        answer(&mut a, 10, Purpose::List { origin: ctl(1) }, users);
        assert_eq!(
            printed(&outputs(&mut a)),
            [("users alice bob".into(), Some(ctl(1)))]
        );
        let refused = Err("the server refused".to_owned());
        answer(
            &mut a,
            20,
            Purpose::List {
                origin: Origin::Stdin,
            },
            refused,
        );
        assert_eq!(
            printed(&outputs(&mut a)),
            [(
                "error reason=cannot list the users: the server refused".into(),
                Some(Origin::Stdin)
            )]
        );
        // Without a connection, the loop reports the failure at once.
        a.handle_line(Instant(30), Ok("list".into()), ctl(2));
        assert_eq!(
            printed(&outputs_offline(&mut a)),
            [(
                format!("error reason=cannot list the users: {NOT_CONNECTED}"),
                Some(ctl(2))
            )]
        );
    }

    #[test]
    fn status_is_answered_to_its_origin_with_the_loop_s_counts() {
        let mut a = in_call();
        assert_eq!(
            line(&mut a, 50, "status", ctl(2)),
            [Output::ShowStatus { answer: ctl(2) }]
        );
        let snapshot = Snapshot {
            media: MediaStats {
                codec: Some(Codec::L16),
                sent: 5,
                ..MediaStats::default()
            },
            garbage: 3,
            registration: Registration::Registered,
            secure: parlo_net::secure::Counters {
                auth_failures: 2,
                ..Default::default()
            },
            rekeys: 4,
            legs: Vec::new(),
        };
        let status = a.status(&snapshot);
        assert_eq!(
            (status.state, status.peer.as_deref(), status.peer_addr),
            ("in-call", Some("bob"), Some(addr(BOB)))
        );
        assert_eq!(
            (status.dialect, status.media.codec),
            (Some("parlo"), Some(fsm::Codec::L16))
        );
        assert_eq!((status.media.sent, status.garbage), (5, 3));
        assert_eq!((status.secure.auth_failures, status.rekeys), (2, 4));
        assert!(status.registration.is_registered());
        assert_eq!(idle().status(&Snapshot::default()).state, "idle");
    }

    #[test]
    fn watch_and_format_set_the_connection_up_and_answer_with_the_status() {
        let mut a = idle();
        let connection = ConnectionId::new(3, 1);
        let origin = Origin::Control(connection);
        assert_eq!(
            line(&mut a, 0, "watch", origin),
            [
                Output::Configure {
                    connection,
                    watch: true,
                    format: None
                },
                Output::ShowStatus { answer: origin }
            ]
        );
        assert_eq!(
            line(&mut a, 0, "watch json", origin)[0],
            Output::Configure {
                connection,
                watch: true,
                format: Some(Format::Json)
            }
        );
        assert_eq!(
            line(&mut a, 0, "format text", origin)[0],
            Output::Configure {
                connection,
                watch: false,
                format: Some(Format::Text)
            }
        );
        // Stdin has nothing to set up.
        let out = line(&mut a, 0, "watch", Origin::Stdin);
        assert!(
            matches!(&printed(&out)[..], [(text, Some(Origin::Stdin))]
                if text.starts_with("error reason=watch and format are for the control socket")),
            "{out:?}"
        );
    }

    #[test]
    fn watchers_get_events_and_not_the_answers_to_other_clients_questions() {
        let error = Out::Error {
            reason: "no incoming call to answer".into(),
        };
        let calling = Out::Calling { peer: "bob".into() };
        let ended = Out::Ended {
            peer: "bob".into(),
            reason: "busy",
        };
        let users = Out::Users { names: vec![] };
        // Events nobody asked for: all news.
        for event in [&error, &calling, &ended, &Out::Bye] {
            assert!(is_news(event, None), "{event:?}");
        }
        // Answers that are events of the phone: news.
        for event in [&calling, &ended, &Out::Bye] {
            assert!(is_news(event, Some(ctl(1))), "{event:?}");
            assert!(is_news(event, Some(Origin::Stdin)), "{event:?}");
        }
        // Answers to questions, and refusals: only for who asked.
        let status = Out::Status(Box::default());
        for event in [&error, &users, &Out::Help, &status] {
            assert!(!is_news(event, Some(ctl(1))), "{event:?}");
            assert!(!is_news(event, Some(Origin::Stdin)), "{event:?}");
        }
    }

    // ---- quitting ----

    #[test]
    fn commands_while_stopping_are_refused_except_status() {
        let mut a = idle();
        assert_eq!(line(&mut a, 0, "quit", Origin::Stdin), [Output::Disconnect]);
        let stopping = |origin| vec![("error reason=the phone is stopping".into(), Some(origin))];
        assert_eq!(
            printed(&line(&mut a, 1, "call bob", ctl(1))),
            stopping(ctl(1))
        );
        assert_eq!(printed(&line(&mut a, 1, "quit", ctl(1))), stopping(ctl(1)));
        assert_eq!(printed(&line(&mut a, 1, "list", ctl(2))), stopping(ctl(2)));
        assert_eq!(
            line(&mut a, 1, "status", ctl(1)),
            [Output::ShowStatus { answer: ctl(1) }]
        );
        // An idle phone is done as soon as the directory is.
        assert!(!a.is_done(Instant(1), true));
        assert!(a.is_done(Instant(1), false));
    }

    #[test]
    fn quit_hangs_up_disconnects_and_waits_for_the_acknowledgement() {
        let mut a = in_call();
        let out = line(&mut a, 100, "quit", ctl(1));
        let call = a.machine.call_id().expect("a Parlo call has an id");
        assert!(out.contains(&Output::Send {
            to: addr(BOB),
            message: Message::Close { call: Some(call) },
            key: None
        }));
        assert!(out.contains(&Output::StopMedia { peer: None }));
        assert_eq!(out.last(), Some(&Output::Disconnect), "after the hang-up");
        // The call's end is no answer: `quit`'s is `bye`.
        assert_eq!(printed(&out), [("ended bob reason=hangup".into(), None)]);
        assert!(
            !a.is_done(Instant(100), false),
            "CLOSE not acknowledged yet"
        );
        a.handle_peer(
            Instant(150),
            addr(BOB),
            Message::Closed { call },
            fsm::Sender::Plain,
        );
        let _ = outputs(&mut a);
        assert!(
            !a.is_done(Instant(150), true),
            "the directory is still busy"
        );
        assert!(a.is_done(Instant(150), false));
        assert_eq!(a.finish(), Exit::Done);
        assert_eq!(
            outputs(&mut a),
            [Output::Print {
                event: Out::Bye,
                answer: Some(ctl(1))
            }]
        );
        assert_eq!(a.quit_origin(), Some(ctl(1)));
    }

    #[test]
    fn quitting_takes_two_seconds_at_most() {
        let mut a = in_call();
        a.handle_stop(Instant(100));
        let _ = outputs(&mut a);
        assert!(a.poll_timeout().is_some_and(|t| t <= Instant(2_100)));
        assert!(!a.is_done(Instant(2_099), true));
        assert!(a.is_done(Instant(2_100), true), "nobody acknowledged");
        assert_eq!(a.quit_origin(), None);
        // A signal's `bye` answers nobody.
        assert_eq!(a.finish(), Exit::Done);
        assert_eq!(printed(&outputs(&mut a)), [("bye".into(), None)]);
    }

    #[test]
    fn the_end_of_stdin_stops_a_phone_nobody_else_drives() {
        let mut alone = settings();
        alone.control = false;
        let mut a = agent_with(alone.clone());
        a.handle_stdin_end(Instant(0), true);
        assert_eq!(outputs(&mut a), [Output::Disconnect]);
        // /dev/null or a file: read to its end at once, meaning nothing.
        let mut a = agent_with(alone);
        a.handle_stdin_end(Instant(0), false);
        assert!(outputs(&mut a).is_empty());
        // The control socket still drives the phone.
        let mut a = idle();
        a.handle_stdin_end(Instant(0), true);
        assert!(outputs(&mut a).is_empty());
        assert!(!a.is_done(Instant(5_000), false));
    }

    // ---- the audio device ----

    #[test]
    fn an_audio_device_failure_prints_an_error_hangs_up_and_warns() {
        let mut a = in_call();
        a.handle_media_failed(Instant(500), MediaFailure::Lost(None));
        let out = outputs(&mut a);
        assert_eq!(
            printed(&out),
            [
                (
                    "error reason=audio device tone:440 failed: it stopped delivering audio; \
                     media stopped, hanging up"
                        .into(),
                    None
                ),
                ("ended bob reason=hangup".into(), None),
            ]
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Send {
                message: Message::Close { .. },
                ..
            }
        )));
        assert_eq!(a.state(), State::Closing);
        assert_eq!(a.finish(), Exit::Warning);
    }

    #[test]
    fn a_device_that_will_not_start_answers_the_command_and_hangs_up() {
        let mut a = rung();
        answer(&mut a, 10, verify_bob(), found(BOB));
        let _ = outputs(&mut a);
        a.handle_line(Instant(100), Ok("accept".into()), ctl(1));
        let mut out = Vec::new();
        while let Some(output) = a.poll_output() {
            if let Output::StartMedia { .. } = output {
                let failure = MediaFailure::Start("no such device".into());
                a.handle_media_failed(Instant(100), failure);
            }
            out.push(output);
        }
        assert_eq!(
            printed(&out),
            [
                (
                    "error reason=audio device tone:440: no such device; hanging up".into(),
                    Some(ctl(1))
                ),
                (
                    "connected bob dialect=parlo codec=L16 verified=plaintext".into(),
                    None
                ),
                ("ended bob reason=hangup".into(), None),
            ]
        );
        assert_eq!(a.finish(), Exit::Warning);
    }

    #[test]
    fn a_device_that_will_not_stop_only_warns() {
        let mut a = idle();
        a.handle_media_failed(Instant(0), MediaFailure::Stop("busy".into()));
        assert!(outputs(&mut a).is_empty());
        assert_eq!(a.finish(), Exit::Warning);
    }

    // ---- the directory connection ----

    #[test]
    fn the_registration_and_its_loss_are_told_but_not_while_quitting() {
        let mut a = idle();
        a.handle_directory(Instant(0), Outcome::Registered);
        assert_eq!(
            printed(&outputs(&mut a)),
            [(format!("registered alice server={SERVER}"), None)]
        );
        let lost = |announce| Outcome::Lost {
            reason: format!("the directory server {SERVER} went away"),
            retry_in: std::time::Duration::from_secs(1),
            announce,
        };
        a.handle_directory(Instant(10), lost(true));
        assert_eq!(
            printed(&outputs(&mut a)),
            [(
                format!(
                    "unregistered reason=the directory server {SERVER} went away; retrying in 1 s"
                ),
                None
            )]
        );
        a.handle_directory(Instant(20), lost(false));
        assert!(outputs(&mut a).is_empty(), "told once per outage");
        a.handle_stop(Instant(30));
        let _ = outputs(&mut a);
        a.handle_directory(Instant(40), lost(true));
        assert!(outputs(&mut a).is_empty());
    }

    // ---- the peer ----

    #[test]
    fn peer_messages_and_media_reach_the_machine() {
        let mut a = in_call();
        assert_eq!(
            a.media_dialect(Instant(20), addr(BOB)),
            Some(Dialect::Parlo)
        );
        assert_eq!(a.media_dialect(Instant(20), addr("127.0.0.9:5001")), None);
        // Media keeps the call alive past the peer-silence limit (5 s after connecting).
        a.handle_media(Instant(4_000), addr(BOB), fsm::Sender::Plain);
        assert!(outputs(&mut a).is_empty());
        a.handle_timeout(Instant(5_010));
        assert!(outputs(&mut a).is_empty());
        assert_eq!(a.poll_timeout(), Some(Instant(9_000)));
        a.handle_timeout(Instant(9_000));
        assert_eq!(
            printed(&outputs(&mut a)),
            [("ended bob reason=peer-lost".into(), None)]
        );
    }

    // ---- conferences ----

    const CAROL: &str = "127.0.0.3:5001";
    const CAROL_KEY: PublicKey = PublicKey([0xc0; 32]);

    fn encrypted() -> TestAgent {
        let mut settings = settings();
        settings.machine.security = fsm::Security::Required;
        agent_with(settings)
    }

    /// The START sent to `to` among `out`.
    fn start_to(out: &[Output], to: &str) -> Option<Message> {
        out.iter().find_map(|o| match o {
            Output::Send {
                to: t,
                message: m @ Message::Start { .. },
                ..
            } if *t == addr(to) => Some(m.clone()),
            _ => None,
        })
    }

    /// Where the signalling messages with `keyword` among `out` went, in order.
    fn sent(out: &[Output], keyword: &str) -> Vec<SocketAddr> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, message, .. } if message.keyword() == keyword => Some(*to),
                _ => None,
            })
            .collect()
    }

    /// The session lines sent among `out`, by destination.
    fn lines_to(out: &[Output], to: &str) -> Vec<SessionLine> {
        out.iter()
            .filter_map(|o| match o {
                Output::SendLine { to: t, line, .. } if *t == addr(to) => Some((**line).clone()),
                _ => None,
            })
            .collect()
    }

    /// Alice started a conference with Bob and Carol from control connection 1; both
    /// were found, with their keys, and STARTs carrying the conference went out.
    fn conferring() -> (TestAgent, fsm::conference::ConfId, CallId) {
        let mut a = encrypted();
        let out = line(&mut a, 0, "conf bob carol", ctl(1));
        let shown = printed(&out);
        assert_eq!(shown.len(), 1, "{out:?}");
        assert!(
            shown[0]
                .0
                .ends_with("members=bob:-:legs=0/2,carol:-:legs=0/2"),
            "{shown:?}"
        );
        assert_eq!(
            shown[0].1,
            Some(ctl(1)),
            "the conference event answers conf"
        );
        let id = a.conference.roster().expect("a member").id;
        answer(
            &mut a,
            5,
            Purpose::Dial(name("bob")),
            found_with_key(BOB, BOB_KEY),
        );
        answer(
            &mut a,
            5,
            Purpose::Dial(name("carol")),
            found_with_key(CAROL, CAROL_KEY),
        );
        let out = outputs(&mut a);
        let Some(Message::Start { conf, call, .. }) = start_to(&out, BOB) else {
            panic!("no START to bob: {out:?}");
        };
        assert_eq!(conf, Some(id), "the leg's START carries the conference");
        assert!(matches!(
            start_to(&out, CAROL),
            Some(Message::Start { conf: Some(c), .. }) if c == id
        ));
        assert!(out.iter().all(|o| match o {
            Output::Send { key, .. } => key.is_some(),
            _ => true,
        }));
        assert!(
            printed(&out).is_empty(),
            "the legs' call events are not told: {out:?}"
        );
        (a, id, call.expect("a Parlo call"))
    }

    /// Bob answers the leg of `call` at 20.
    fn bob_answers(a: &mut TestAgent, call: CallId) -> Vec<Output> {
        a.handle_peer(
            Instant(20),
            addr(BOB),
            Message::Accept {
                call: Some(call),
                codec: None,
            },
            fsm::Sender::Key(BOB_KEY),
        );
        outputs(a)
    }

    #[test]
    fn conf_dials_every_member_and_a_connected_leg_joins_and_gets_the_roster() {
        let (mut a, id, call) = conferring();
        a.handle_session(addr(BOB), BOB_KEY, "1111-2222".into());
        let out = bob_answers(&mut a, call);
        assert!(out.contains(&Output::StartMedia {
            peer: addr(BOB),
            dialect: Dialect::Parlo,
            codec: Codec::L16,
            key: Some(BOB_KEY)
        }));
        let shown: Vec<String> = printed(&out).into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            shown,
            [
                "joined bob".to_owned(),
                format!("conference {id} members=bob:key:legs=1/2,carol:-:legs=0/2"),
            ]
        );
        let lines = lines_to(&out, BOB);
        let Some(SessionLine::Roster(roster)) = lines.first() else {
            panic!("no roster for bob: {out:?}");
        };
        assert_eq!(roster.id, id);
        let names: Vec<&str> = roster.members.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert!(
            matches!(lines.get(1), Some(SessionLine::Links { .. })),
            "{lines:?}"
        );
        assert!(lines_to(&out, CAROL).is_empty(), "carol's leg is not up");
        // Status shows the leg and its counters.
        let snapshot = Snapshot {
            legs: vec![(
                addr(BOB),
                MediaStats {
                    received: 7,
                    ..MediaStats::default()
                },
            )],
            ..Snapshot::default()
        };
        let status = Out::Status(Box::new(a.status(&snapshot))).text();
        assert!(status.contains("state=conference"), "{status}");
        assert!(status.contains(&format!("conference={id}")), "{status}");
        assert!(
            status.contains("leg.bob.state=in-call leg.bob.verified=key"),
            "{status}"
        );
        assert!(status.contains("leg.bob.received=7"), "{status}");
        assert!(status.contains("leg.carol.state=dialing"), "{status}");
        // Bob's leg ends: he left, the conference goes on with Carol.
        a.handle_peer(
            Instant(30),
            addr(BOB),
            Message::Close { call: Some(call) },
            fsm::Sender::Key(BOB_KEY),
        );
        let out = outputs(&mut a);
        assert!(out.contains(&Output::StopMedia {
            peer: Some(addr(BOB))
        }));
        let shown: Vec<String> = printed(&out).into_iter().map(|(l, _)| l).collect();
        assert_eq!(shown[0], "left bob reason=hung-up", "{shown:?}");
        assert!(a.in_conference());
    }

    #[test]
    fn an_invitation_rings_with_its_conference_and_other_starts_get_busy() {
        let mut a = encrypted();
        let id = fsm::conference::ConfId(0x0123_4567_89ab_cdef);
        let mut start = start_from_bob();
        if let Message::Start { conf, .. } = &mut start {
            *conf = Some(id);
        }
        a.handle_peer(Instant(0), addr(BOB), start, fsm::Sender::Key(BOB_KEY));
        let _ = outputs(&mut a);
        answer(&mut a, 5, verify_bob(), found_with_key(BOB, BOB_KEY));
        let out = outputs(&mut a);
        assert_eq!(
            printed(&out),
            [(
                format!("incoming bob from={BOB} verified=key new=yes conf={id}"),
                None
            )]
        );
        // Carol, a member too, calls in before the invitation is answered: held.
        let mut carol = Message::start(name("carol"), CallId(2), Preference::default().set());
        if let Message::Start { conf, .. } = &mut carol {
            *conf = Some(id);
        }
        a.handle_peer(Instant(6), addr(CAROL), carol, fsm::Sender::Key(CAROL_KEY));
        let _ = outputs(&mut a);
        answer(
            &mut a,
            7,
            Purpose::Verify {
                peer: name("carol"),
            },
            found_with_key(CAROL, CAROL_KEY),
        );
        let out = outputs(&mut a);
        assert!(printed(&out).is_empty(), "a held leg is not told: {out:?}");
        // Dave, with no conference, gets BUSY.
        let dave = Message::start(name("dave"), CallId(3), Preference::default().set());
        let dave_at = addr("127.0.0.4:5001");
        a.handle_peer(Instant(8), dave_at, dave, fsm::Sender::Key(MALLORY_KEY));
        let out = outputs(&mut a);
        assert_eq!(sent(&out, "BUSY"), [dave_at], "{out:?}");
        // The user accepts: Bob's leg, then Carol's held one, are answered.
        let out = line(&mut a, 10, "accept", ctl(1));
        let accepted = sent(&out, "ACCEPT");
        assert_eq!(accepted, [addr(BOB), addr(CAROL)], "{out:?}");
        let shown = printed(&out);
        assert_eq!(shown[0], ("joined bob".into(), Some(ctl(1))), "{shown:?}");
    }

    #[test]
    fn a_rejected_invitation_is_answered_with_the_call_s_end() {
        let mut a = encrypted();
        let mut start = start_from_bob();
        if let Message::Start { conf, .. } = &mut start {
            *conf = Some(fsm::conference::ConfId(9));
        }
        a.handle_peer(Instant(0), addr(BOB), start, fsm::Sender::Key(BOB_KEY));
        let _ = outputs(&mut a);
        answer(&mut a, 5, verify_bob(), found_with_key(BOB, BOB_KEY));
        let _ = outputs(&mut a);
        let out = line(&mut a, 10, "reject", ctl(1));
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Send {
                    message: Message::Reject { .. },
                    ..
                }
            )),
            "{out:?}"
        );
        assert_eq!(
            printed(&out),
            [("ended bob reason=rejected".into(), Some(ctl(1)))]
        );
        assert!(!a.in_conference());
    }

    #[test]
    fn a_roster_over_an_ordinary_call_makes_it_a_conference() {
        let mut a = encrypted();
        a.handle_peer(
            Instant(0),
            addr(BOB),
            start_from_bob(),
            fsm::Sender::Key(BOB_KEY),
        );
        let _ = outputs(&mut a);
        answer(&mut a, 5, verify_bob(), found_with_key(BOB, BOB_KEY));
        let _ = outputs(&mut a);
        let _ = line(&mut a, 6, "accept", ctl(1));
        a.handle_peer(
            Instant(8),
            addr(BOB),
            Message::Ack { call: CallId(1) },
            fsm::Sender::Key(BOB_KEY),
        );
        let _ = outputs(&mut a);
        assert_eq!(a.state(), State::InCall);
        let id = fsm::conference::ConfId(42);
        let mut members = heapless::Vec::new();
        for (n, k) in [
            ("bob", BOB_KEY),
            ("alice", PublicKey([0xa1; 32])),
            ("carol", CAROL_KEY),
        ] {
            let _ = members.push(fsm::conference::Entry {
                name: name(n),
                key: Some(k),
            });
        }
        let roster = fsm::conference::Roster { id, members };
        a.handle_session_line(
            Instant(9),
            addr(BOB),
            BOB_KEY,
            SessionLine::Roster(roster.clone()),
            false,
        );
        let out = outputs(&mut a);
        assert!(a.in_conference());
        assert_eq!(a.state(), State::Idle, "the call went on as a leg");
        assert!(
            !out.iter().any(|o| matches!(o, Output::StopMedia { .. })),
            "{out:?}"
        );
        // Carol sorts after Alice: Alice dials her, into the same conference.
        assert!(
            out.contains(&Output::Query {
                query: Query::Lookup(name("carol")),
                purpose: Purpose::Dial(name("carol"))
            }),
            "{out:?}"
        );
        // The same roster from a phone that is no member is ignored.
        let mut m = encrypted();
        m.handle_session_line(
            Instant(9),
            addr(BOB),
            BOB_KEY,
            SessionLine::Roster(roster),
            false,
        );
        assert!(outputs(&mut m).is_empty());
        assert!(!m.in_conference());
    }

    #[test]
    fn conferences_are_refused_without_encryption_and_calls_during_one() {
        let mut off = settings();
        off.machine.security = fsm::Security::Off;
        let mut a = agent_with(off);
        let out = line(&mut a, 0, "conf bob carol", ctl(1));
        assert!(
            printed(&out)[0]
                .0
                .contains("a conference needs encrypted calls"),
            "{out:?}"
        );
        let out = line(&mut a, 0, "invite bob", ctl(1));
        assert!(printed(&out)[0].0.starts_with("error"), "{out:?}");
        let (mut a, _, _) = conferring();
        let out = line(&mut a, 10, "call dave", ctl(2));
        assert_eq!(
            printed(&out),
            [(
                "error reason=in a conference: invite NAME adds a member".into(),
                Some(ctl(2))
            )]
        );
        let out = line(&mut a, 10, "conf dave", ctl(2));
        assert!(
            printed(&out)[0].0.contains("already in a conference"),
            "{out:?}"
        );
    }

    #[test]
    fn an_original_phone_is_refused_as_a_member() {
        let mut a = encrypted();
        let _ = line(&mut a, 0, "conf bob carol", ctl(1));
        let original = Ok(Answer::Found(Contact {
            ip: addr(BOB).ip(),
            port: addr(BOB).port(),
            dialect: Some(Dialect::Original),
            key: None,
        }));
        answer(&mut a, 5, Purpose::Dial(name("bob")), original);
        let out = outputs(&mut a);
        assert!(
            start_to(&out, BOB).is_none(),
            "nothing sent to an original phone"
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Send { to, .. } if *to == addr(BOB))),
            "nothing at all sent to an original phone: {out:?}"
        );
        let shown: Vec<String> = printed(&out).into_iter().map(|(l, _)| l).collect();
        assert_eq!(shown[0], "left bob reason=original-phone", "{shown:?}");
        assert!(a.in_conference(), "the conference goes on with carol");
    }

    #[test]
    fn hangup_leaves_the_conference_and_quit_waits_for_the_legs() {
        let (mut a, id, call) = conferring();
        let _ = bob_answers(&mut a, call);
        let out = line(&mut a, 30, "hangup", ctl(1));
        assert!(
            out.iter().any(|o| matches!(o, Output::Send { to, message: Message::Close { .. }, .. } if *to == addr(BOB))),
            "{out:?}"
        );
        assert!(out.contains(&Output::StopMedia {
            peer: Some(addr(BOB))
        }));
        let shown = printed(&out);
        assert_eq!(shown[0], (format!("conference-ended {id}"), Some(ctl(1))));
        assert!(!a.in_conference());
        a.handle_stop(Instant(31));
        let _ = outputs(&mut a);
        assert!(
            !a.is_done(Instant(32), false),
            "bob's CLOSE is not acknowledged yet"
        );
    }

    #[test]
    fn quit_in_a_conference_hangs_every_leg_up_once() {
        let (mut a, _, call) = conferring();
        let _ = bob_answers(&mut a, call);
        let out = line(&mut a, 30, "quit", ctl(1));
        let closes = sent(&out, "CLOSE");
        assert_eq!(closes, [addr(BOB), addr(CAROL)], "{out:?}");
        assert!(
            printed(&out).iter().all(|(l, _)| !l.starts_with("error")),
            "{out:?}"
        );
        assert!(out.contains(&Output::Disconnect));
    }
}
