//! The connection to the directory server: register, look names up, list, disconnect.
//!
//! One TCP connection, non-blocking, driven by the phone's loop. It registers as soon as it
//! is up (with the phone's UDP port); when the server cannot be reached or the connection
//! drops, it retries with a growing delay (1 s doubling to 30 s) and registers again.
//! Responses carry no request id: they are matched to requests in order.
//!
//! When the phone listens on a specific address, the connection leaves from that address
//! so that the directory records where the phone really listens.
//!
//! A server given by host name is looked up at each attempt, on a helper thread: a slow
//! or unreachable name server must not hold the loop (and a call's sound) up.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use parlo_net::directory::{MAX_ENCODED_REQUEST, Name, Reply, Request};
use parlo_net::framing::{Frame, FrameBuffer};
use socket2::{Domain, Socket, TcpKeepalive, Type};

use crate::cli::ServerAddr;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long looking the server's host name up may take before the attempt fails (the
/// lookup goes on; the next attempt takes its answer).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before retrying, doubled after each failure...
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Unsent request bytes beyond which the server is considered stuck.
const OUTBOX_LIMIT: usize = 64 * 1024;
/// A request unanswered this long means the server is stuck: the connection is dropped
/// and made again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long without any request, a PING checks that the server still answers
/// (TCP keepalive alone cannot see a server process that hangs).
const PING_IDLE: Duration = Duration::from_secs(60);

/// Why a request was sent: what to do with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Our registration.
    Register,
    /// The call machine asked where this name is.
    Dial(parlo_fsm::Name),
    /// Checking an incoming caller's announced name against its address.
    Verify {
        /// The name announced.
        peer: parlo_fsm::Name,
        /// The address the call came from.
        from: SocketAddr,
    },
    /// A `list` command, gathering pages.
    List {
        /// Who asked.
        origin: crate::phone::Origin,
        /// The offset of this page.
        offset: u32,
        /// The names gathered so far.
        names: Vec<String>,
    },
    /// Our DISCONNECT on quit.
    Disconnect,
    /// Checking that an idle server still answers.
    Ping,
}

/// What the connection reports to the phone.
// A LIST answer holds a page of names (about 1 KB); outcomes are few and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// The server accepted our registration.
    Registered,
    /// The server cannot be reached or went away; a new attempt is scheduled.
    Lost {
        /// What happened.
        reason: String,
        /// When the next attempt is.
        retry_in: Duration,
        /// Whether this is news for the user (the first failure of an outage).
        announce: bool,
    },
    /// The answer to a request (or why there is none: the connection dropped, garbage).
    Answer(Purpose, Result<Reply, String>),
}

/// Wakes the phone's loop (from the lookup thread).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Looks a host name up: the system's resolver, or a stand-in in tests.
type Resolver = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

fn system_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// The answer of a host-name lookup, sent by its thread.
type Lookup = Receiver<io::Result<Vec<SocketAddr>>>;

enum Link {
    /// Not connected; the next attempt is at `retry_at`.
    Waiting { retry_at: Instant },
    /// Looking the server's host name up; the attempt fails at `deadline`.
    Resolving { deadline: Instant },
    /// A connection attempt in progress.
    Connecting {
        stream: TcpStream,
        deadline: Instant,
        addr: SocketAddr,
    },
    /// Connected (registered once the REG is answered).
    Open { stream: TcpStream },
    /// Stopped for good (quitting).
    Stopped,
}

/// The phone's directory connection.
pub struct Directory {
    server: ServerAddr,
    bind: Option<IpAddr>,
    name: Name,
    udp_port: u16,
    token: Token,
    link: Link,
    frames: Box<FrameBuffer>,
    /// Requests awaiting their answer, oldest first, with when each was sent.
    pending: VecDeque<(Purpose, Instant)>,
    /// When the last request was sent (or the connection opened).
    last_request: Instant,
    outbox: Vec<u8>,
    writable_interest: bool,
    backoff: Duration,
    registered: bool,
    announced_down: bool,
    wake: Wake,
    resolver: Resolver,
    /// The lookup under way, if any: one at a time, kept across attempts.
    lookup: Option<Lookup>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("server", &self.server)
            .field("registered", &self.registered)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Directory {
    /// A connection to `server` for `name`, whose calls arrive on UDP `listen`. Nothing
    /// happens until [`Directory::handle_timeout`] runs at or after `now`. `wake` wakes
    /// the loop when a host-name lookup has its answer (the loop then runs
    /// [`Directory::handle_timeout`] again).
    pub fn new(
        server: ServerAddr,
        name: Name,
        listen: SocketAddr,
        token: Token,
        now: Instant,
        wake: Wake,
    ) -> Self {
        let bind = (!listen.ip().is_unspecified()).then(|| listen.ip());
        Directory {
            server,
            bind,
            name,
            udp_port: listen.port(),
            token,
            link: Link::Waiting { retry_at: now },
            frames: Box::new(FrameBuffer::new()),
            pending: VecDeque::with_capacity(8),
            last_request: now,
            outbox: Vec::with_capacity(1024),
            writable_interest: false,
            backoff: BACKOFF_INITIAL,
            registered: false,
            announced_down: false,
            wake,
            resolver: system_resolver,
            lookup: None,
        }
    }

    /// Looks host names up with `resolver` instead of the system's.
    #[cfg(test)]
    fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The server, as given.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// Whether requests can be sent now.
    pub fn is_open(&self) -> bool {
        matches!(self.link, Link::Open { .. })
    }

    /// Whether the server holds our registration.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Whether requests await an answer.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When [`Directory::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.link {
            Link::Waiting { retry_at } => Some(*retry_at),
            Link::Resolving { deadline } | Link::Connecting { deadline, .. } => Some(*deadline),
            Link::Open { .. } => Some(match self.pending.front() {
                Some((_, sent)) => *sent + ANSWER_TIMEOUT,
                None => self.last_request + PING_IDLE,
            }),
            Link::Stopped => None,
        }
    }

    /// Starts a connection attempt when one is due, or gives up one that took too long.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        match &self.link {
            Link::Waiting { retry_at } if *retry_at <= now => self.connect(registry, now, out),
            Link::Resolving { deadline } => {
                let deadline = *deadline;
                self.take_lookup(registry, now, deadline, out);
            }
            Link::Connecting { deadline, addr, .. } if *deadline <= now => {
                let reason = format!(
                    "cannot reach the directory server {}: no answer within {} s",
                    self.describe(*addr),
                    CONNECT_TIMEOUT.as_secs()
                );
                self.fail(registry, reason, now, out);
            }
            Link::Open { .. } => match self.pending.front() {
                Some((_, sent)) if *sent + ANSWER_TIMEOUT <= now => {
                    let reason = format!(
                        "the directory server {} did not answer within {} s",
                        self.server,
                        ANSWER_TIMEOUT.as_secs()
                    );
                    self.fail(registry, reason, now, out);
                }
                None if self.last_request + PING_IDLE <= now => {
                    let _ = self.request(registry, &Request::Ping, Purpose::Ping, now, out);
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        if let Ok(ip) = self.server.host.parse::<IpAddr>() {
            return self.connect_to(registry, SocketAddr::new(ip, self.server.port), now, out);
        }
        if self.lookup.is_none() {
            let (answer, lookup) = mpsc::channel();
            let host = self.server.host.clone();
            let port = self.server.port;
            let resolver = self.resolver;
            let wake = Arc::clone(&self.wake);
            let spawned = std::thread::Builder::new()
                .name("parlo-lookup".into())
                .spawn(move || {
                    // The phone may have given up on this lookup: nobody to tell then.
                    let _ = answer.send(resolver(&host, port));
                    wake();
                });
            if let Err(e) = spawned {
                let reason = format!("cannot look the directory server {} up: {e}", self.server);
                return self.fail(registry, reason, now, out);
            }
            self.lookup = Some(lookup);
        }
        log::debug!("looking the directory server {} up", self.server);
        self.link = Link::Resolving {
            deadline: now + LOOKUP_TIMEOUT,
        };
        self.take_lookup(registry, now, now + LOOKUP_TIMEOUT, out);
    }

    /// Connects once the lookup has answered; fails the attempt at `deadline`.
    fn take_lookup(
        &mut self,
        registry: &Registry,
        now: Instant,
        deadline: Instant,
        out: &mut Vec<Outcome>,
    ) {
        let answer = match self.lookup.as_ref().map(Receiver::try_recv) {
            Some(Ok(answer)) => answer,
            Some(Err(TryRecvError::Empty)) => {
                if deadline <= now {
                    let reason = format!(
                        "cannot look the directory server {} up: no answer within {} s",
                        self.server,
                        LOOKUP_TIMEOUT.as_secs()
                    );
                    self.fail(registry, reason, now, out);
                }
                return;
            }
            Some(Err(TryRecvError::Disconnected)) | None => {
                Err(io::Error::other("the lookup ended without an answer"))
            }
        };
        self.lookup = None;
        match answer
            .map_err(|e| e.to_string())
            .and_then(|a| self.pick(&a))
        {
            Ok(addr) => self.connect_to(registry, addr, now, out),
            Err(e) => {
                let reason = format!("cannot resolve the directory server {}: {e}", self.server);
                self.fail(registry, reason, now, out);
            }
        }
    }

    fn connect_to(
        &mut self,
        registry: &Registry,
        addr: SocketAddr,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        match self.open_socket(addr) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    let reason = format!("cannot watch the directory connection: {e}");
                    return self.fail(registry, reason, now, out);
                }
                log::debug!(
                    "connecting to the directory server {} ({addr})",
                    self.server
                );
                self.link = Link::Connecting {
                    stream,
                    deadline: now + CONNECT_TIMEOUT,
                    addr,
                };
            }
            Err(e) => {
                let reason = format!(
                    "cannot reach the directory server {}: {e}",
                    self.describe(addr)
                );
                self.fail(registry, reason, now, out);
            }
        }
    }

    /// The server as given, with the address it resolved to when that says more.
    fn describe(&self, addr: SocketAddr) -> String {
        if addr.ip().to_string() == self.server.host {
            self.server.to_string()
        } else {
            format!("{} ({addr})", self.server)
        }
    }

    /// The address to connect to among those the server's name has: one of the family
    /// of the address we leave from, if we bind one.
    fn pick(&self, addrs: &[SocketAddr]) -> Result<SocketAddr, String> {
        let same_family = |a: &&SocketAddr| self.bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4());
        addrs
            .iter()
            .find(same_family)
            .or(addrs.first())
            .copied()
            .ok_or_else(|| "the name has no address".to_owned())
    }

    fn open_socket(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        // A dead server (power cut, cable pulled) is noticed within about 30 s.
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(15))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        socket.set_tcp_keepalive(&keepalive)?;
        if let Some(ip) = self.bind {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    /// Drops the connection, fails what awaited an answer and schedules a new attempt.
    fn fail(&mut self, registry: &Registry, reason: String, now: Instant, out: &mut Vec<Outcome>) {
        self.close(registry);
        for (purpose, _) in self.pending.drain(..) {
            out.push(Outcome::Answer(purpose, Err(reason.clone())));
        }
        let retry_in = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
        self.registered = false;
        let announce = !self.announced_down;
        self.announced_down = true;
        log::info!("{reason}; retrying in {} s", retry_in.as_secs());
        self.link = Link::Waiting {
            retry_at: now + retry_in,
        };
        out.push(Outcome::Lost {
            reason,
            retry_in,
            announce,
        });
    }

    fn close(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.link, Link::Stopped) {
            Link::Connecting { mut stream, .. } | Link::Open { mut stream } => {
                let _ = registry.deregister(&mut stream);
            }
            Link::Waiting { .. } | Link::Resolving { .. } | Link::Stopped => {}
        }
        self.outbox.clear();
        self.writable_interest = false;
        *self.frames = FrameBuffer::new();
    }

    /// Sends `request`; its answer comes back as [`Outcome::Answer`] with `purpose`.
    /// Gives `purpose` back when the connection is not open.
    pub fn request(
        &mut self,
        registry: &Registry,
        request: &Request,
        purpose: Purpose,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) -> Result<(), Purpose> {
        if !self.is_open() {
            return Err(purpose);
        }
        let mut buf = [0u8; MAX_ENCODED_REQUEST];
        let Ok(len) = request.encode(&mut buf) else {
            // Unreachable: MAX_ENCODED_REQUEST holds every request.
            return Err(purpose);
        };
        log::debug!("directory <- {}", String::from_utf8_lossy(&buf[..len - 1]));
        self.outbox.extend_from_slice(&buf[..len]);
        self.pending.push_back((purpose, now));
        self.last_request = now;
        self.flush(registry, now, out);
        Ok(())
    }

    /// Unregisters (DISCONNECT) if connected, and stops reconnecting.
    pub fn disconnect(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        if self.is_open() {
            let request = Request::Disconnect {
                name: self.name.clone(),
            };
            let _ = self.request(registry, &request, Purpose::Disconnect, now, out);
        } else {
            self.close(registry);
        }
    }

    fn flush(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        let Link::Open { stream } = &mut self.link else {
            return;
        };
        let mut error = None;
        while !self.outbox.is_empty() {
            match stream.write(&self.outbox) {
                Ok(0) => {
                    error = Some("the directory server stopped reading".to_owned());
                    break;
                }
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("lost the directory server {}: {e}", self.server));
                    break;
                }
            }
        }
        if error.is_none() && self.outbox.len() > OUTBOX_LIMIT {
            error = Some("the directory server does not read its requests".to_owned());
        }
        if let Some(reason) = error {
            return self.fail(registry, reason, now, out);
        }
        let want_writable = !self.outbox.is_empty();
        if want_writable != self.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Link::Open { stream } = &mut self.link {
                if registry.reregister(stream, self.token, interest).is_ok() {
                    self.writable_interest = want_writable;
                }
            }
        }
    }

    /// Handles readiness of the connection.
    pub fn handle_ready(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        if let Link::Connecting { stream, addr, .. } = &mut self.link {
            let addr = *addr;
            let failure = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failure {
                let reason = format!(
                    "cannot reach the directory server {}: {e}",
                    self.describe(addr)
                );
                return self.fail(registry, reason, now, out);
            }
            let Link::Connecting { stream, .. } = std::mem::replace(&mut self.link, Link::Stopped)
            else {
                return;
            };
            log::debug!("connected to the directory server {} ({addr})", self.server);
            self.link = Link::Open { stream };
            // The registration stays WRITABLE until the first flush settles the interest.
            self.writable_interest = true;
            let request = Request::Reg {
                name: self.name.clone(),
                port: Some(self.udp_port),
            };
            let _ = self.request(registry, &request, Purpose::Register, now, out);
            return;
        }
        if !self.is_open() {
            return;
        }
        self.flush(registry, now, out);
        self.read(registry, now, out);
    }

    fn read(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        loop {
            let Link::Open { stream } = &mut self.link else {
                return;
            };
            let spare = self.frames.spare();
            let result = stream.read(spare);
            match result {
                Ok(0) => {
                    let reason =
                        format!("the directory server {} closed the connection", self.server);
                    return self.fail(registry, reason, now, out);
                }
                Ok(n) => {
                    self.frames.filled(n);
                    self.take_replies(out);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = format!("lost the directory server {}: {e}", self.server);
                    return self.fail(registry, reason, now, out);
                }
            }
        }
    }

    fn take_replies(&mut self, out: &mut Vec<Outcome>) {
        while let Some(frame) = self.frames.next_frame() {
            let result = match frame {
                Frame::Object(bytes) => {
                    log::debug!("directory -> {}", String::from_utf8_lossy(bytes));
                    Reply::parse(bytes).map_err(|e| e.to_string())
                }
                Frame::Invalid(e) => Err(format!("garbled response: {e}")),
            };
            let Some((purpose, _)) = self.pending.pop_front() else {
                log::warn!("unexpected response from the directory server: {result:?}");
                continue;
            };
            if purpose == Purpose::Register {
                match &result {
                    Ok(Reply::Registered { .. }) => {
                        self.registered = true;
                        self.announced_down = false;
                        self.backoff = BACKOFF_INITIAL;
                        log::info!(
                            "registered as {} with the directory server {}",
                            self.name,
                            self.server
                        );
                        out.push(Outcome::Registered);
                    }
                    other => {
                        let why = match other {
                            Ok(Reply::NameTaken { reason }) if !reason.is_empty() => {
                                format!("the name is taken: {reason}")
                            }
                            Ok(Reply::NameTaken { .. }) => {
                                format!("the name \"{}\" is registered by another phone", self.name)
                            }
                            Ok(Reply::Error { reason }) => format!("refused: {reason}"),
                            Ok(reply) => format!("unexpected answer {reply:?}"),
                            Err(e) => e.clone(),
                        };
                        // Retried like a lost connection: the other registration may be a
                        // stale one of ours that the server has not dropped yet.
                        out.push(Outcome::Answer(Purpose::Register, Err(why)));
                    }
                }
                continue;
            }
            out.push(Outcome::Answer(purpose, result));
        }
    }

    /// A registration refused: close and retry later.
    pub fn handle_refused(
        &mut self,
        registry: &Registry,
        reason: String,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        let reason = format!(
            "the directory server {} refused to register \"{}\": {reason}",
            self.server, self.name
        );
        self.fail(registry, reason, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn name(s: &str) -> Name {
        Name::new(s).expect("test name")
    }

    /// Runs the loop until `done` says so (or fails after 5 s instead of hanging).
    fn drive(
        poll: &mut Poll,
        directory: &mut Directory,
        out: &mut Vec<Outcome>,
        mut done: impl FnMut(&Directory, &[Outcome]) -> bool,
    ) {
        let mut events = Events::with_capacity(8);
        let limit = Instant::now() + Duration::from_secs(5);
        while !done(directory, out) {
            assert!(Instant::now() < limit, "gave up waiting; outcomes: {out:?}");
            let now = Instant::now();
            directory.handle_timeout(poll.registry(), now, out);
            let timeout = directory
                .poll_timeout()
                .map_or(Duration::from_millis(50), |t| {
                    t.saturating_duration_since(now)
                        .min(Duration::from_millis(50))
                });
            poll.poll(&mut events, Some(timeout)).expect("poll");
            if !events.is_empty() {
                directory.handle_ready(poll.registry(), Instant::now(), out);
            }
        }
    }

    /// A directory for `host` (a name for the stand-in resolvers below) at `port`.
    fn directory_for(host: &str, port: u16, resolver: Resolver) -> Directory {
        let server = ServerAddr {
            host: host.into(),
            port,
        };
        let listen: SocketAddr = "127.0.0.205:6001".parse().expect("address");
        Directory::new(
            server,
            name("alice"),
            listen,
            Token(1),
            Instant::now(),
            Arc::new(|| {}),
        )
        .with_resolver(resolver)
    }

    /// Waits (up to 5 s) until `flag` is set; then the host is 127.0.0.204.
    fn resolve_when(flag: &AtomicBool, port: u16) -> io::Result<Vec<SocketAddr>> {
        let limit = Instant::now() + Duration::from_secs(5);
        while !flag.load(Ordering::Acquire) {
            if Instant::now() > limit {
                return Err(io::Error::other("never released"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(vec![SocketAddr::new([127, 0, 0, 204].into(), port)])
    }

    #[test]
    fn a_host_name_is_looked_up_without_holding_the_loop() {
        static RELEASE: AtomicBool = AtomicBool::new(false);
        let server = TcpListener::bind("127.0.0.204:0").expect("bind the fake server");
        let port = server.local_addr().expect("address").port();
        let mut poll = Poll::new().expect("poll");
        let mut directory =
            directory_for("slow.example", port, |_, port| resolve_when(&RELEASE, port));
        let mut out = Vec::new();
        // The attempt starts the lookup and returns at once: the name server is slow.
        directory.handle_timeout(poll.registry(), Instant::now(), &mut out);
        assert!(!directory.is_open() && out.is_empty(), "{out:?}");
        assert!(matches!(directory.link, Link::Resolving { .. }));
        RELEASE.store(true, Ordering::Release);
        drive(&mut poll, &mut directory, &mut out, |d, _| d.is_open());
        server.accept().expect("connected to the address looked up");
    }

    #[test]
    fn a_lookup_that_takes_too_long_fails_the_attempt_and_the_next_takes_its_answer() {
        static RELEASE: AtomicBool = AtomicBool::new(false);
        static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
        let server = TcpListener::bind("127.0.0.204:0").expect("bind the fake server");
        let port = server.local_addr().expect("address").port();
        let mut poll = Poll::new().expect("poll");
        let mut directory = directory_for("stuck.example", port, |_, port| {
            LOOKUPS.fetch_add(1, Ordering::Relaxed);
            resolve_when(&RELEASE, port)
        });
        let mut out = Vec::new();
        let start = Instant::now();
        directory.handle_timeout(poll.registry(), start, &mut out);
        directory.handle_timeout(poll.registry(), start + LOOKUP_TIMEOUT, &mut out);
        assert!(
            matches!(&out[..], [Outcome::Lost { reason, .. }]
                if reason.contains("stuck.example") && reason.contains("no answer within 10 s")),
            "{out:?}"
        );
        // The next attempt waits for the same lookup rather than starting another, and
        // connects with its answer.
        let retry = directory.poll_timeout().expect("a retry is scheduled");
        directory.handle_timeout(poll.registry(), retry, &mut out);
        assert!(matches!(directory.link, Link::Resolving { .. }));
        RELEASE.store(true, Ordering::Release);
        drive(&mut poll, &mut directory, &mut out, |d, _| d.is_open());
        server.accept().expect("connected to the address looked up");
        assert_eq!(LOOKUPS.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn registers_from_the_listen_address_and_notices_the_server_going_away() {
        let server = TcpListener::bind("127.0.0.201:0").expect("bind the fake server");
        let port = server.local_addr().expect("address").port();
        let mut poll = Poll::new().expect("poll");
        let listen: SocketAddr = "127.0.0.202:6001".parse().expect("address");
        let server_addr = ServerAddr {
            host: "127.0.0.201".into(),
            port,
        };
        let mut directory = Directory::new(
            server_addr,
            name("alice"),
            listen,
            Token(1),
            Instant::now(),
            Arc::new(|| {}),
        );
        let mut out = Vec::new();
        // Connect; the fake server accepts and checks where the connection comes from.
        directory.handle_timeout(poll.registry(), Instant::now(), &mut out);
        let (conn, peer) = server.accept().expect("accept");
        assert_eq!(
            peer.ip(),
            listen.ip(),
            "the connection leaves from --listen's address"
        );
        drive(&mut poll, &mut directory, &mut out, |d, _| d.is_open());
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("REG");
        assert_eq!(
            line,
            "{\"command\":\"REG\",\"name\":\"alice\",\"port\":6001}\n"
        );
        (&conn)
            .write_all(b"{\"ack\":\"Registered successfully\"}\n")
            .expect("answer");
        drive(&mut poll, &mut directory, &mut out, |_, o| {
            o.iter().any(|o| matches!(o, Outcome::Registered))
        });
        assert!(directory.is_registered());

        // A lookup, answered in two TCP segments.
        out.clear();
        let request = Request::Get { name: name("bob") };
        let bob = parlo_fsm::Name::new("bob").expect("name");
        directory
            .request(
                poll.registry(),
                &request,
                Purpose::Dial(bob.clone()),
                Instant::now(),
                &mut out,
            )
            .expect("open");
        line.clear();
        reader.read_line(&mut line).expect("GET");
        assert_eq!(line, "{\"command\":\"GET\",\"name\":\"bob\"}\n");
        (&conn).write_all(b"{\"ip\":\"127.0.").expect("answer");
        (&conn).flush().expect("flush");
        std::thread::sleep(Duration::from_millis(20));
        (&conn)
            .write_all(b"0.9\",\"port\":5001}\n")
            .expect("answer");
        drive(&mut poll, &mut directory, &mut out, |_, o| !o.is_empty());
        assert!(matches!(
            &out[..],
            [Outcome::Answer(Purpose::Dial(n), Ok(Reply::Found(c)))]
                if *n == bob && c.port == 5001 && c.ip.to_string() == "127.0.0.9"
        ));

        // The server goes away: a pending request fails, the loss is announced once.
        out.clear();
        directory
            .request(
                poll.registry(),
                &Request::List { offset: 0 },
                Purpose::Disconnect,
                Instant::now(),
                &mut out,
            )
            .expect("open");
        drop(reader);
        drop(conn);
        drop(server);
        drive(&mut poll, &mut directory, &mut out, |_, o| {
            o.iter().any(|o| matches!(o, Outcome::Lost { .. }))
        });
        assert!(matches!(
            &out[0],
            Outcome::Answer(Purpose::Disconnect, Err(_))
        ));
        assert!(matches!(
            &out[1],
            Outcome::Lost { announce: true, retry_in, .. } if *retry_in == BACKOFF_INITIAL
        ));
        assert!(!directory.is_registered() && !directory.is_open());
        // The next attempt finds nobody listening: not announced again, longer delay.
        out.clear();
        drive(&mut poll, &mut directory, &mut out, |_, o| !o.is_empty());
        assert!(matches!(
            &out[0],
            Outcome::Lost { announce: false, retry_in, .. } if *retry_in == BACKOFF_INITIAL * 2
        ));
    }
}
