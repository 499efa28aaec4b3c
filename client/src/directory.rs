//! The connection to the directory server: the socket around the sans-IO client
//! [`parlo_net::directory::client::Client`].
//!
//! Every protocol decision is the client's: registering, matching answers to requests,
//! the timeouts, the reconnection delay, the idle PING, walking LIST's pages, what a server
//! that did not say it is Parlo's may be sent. This shell opens the non-blocking TCP
//! connection when the client asks for one, reads and writes its bytes, feeds the client
//! and carries out what it asks, and words its events for the phone with the server's
//! address.
//!
//! When the phone listens on a specific address, the connection leaves from that address
//! so that the directory records where the phone really listens.
//!
//! What a supervisor sees of the registration is said here too, once per change: a
//! refusal (the name taken) is logged as a warning, the server going away at info level,
//! each retry that fails the same way only at debug level; `status` gets where the
//! registration stands ([`Directory::registration`]); and the service manager, when there
//! is one, gets `READY=1` once the phone runs and a `STATUS=` line at every change and
//! retry (`registered as door with ...`, `not registered: ...; retrying in 5 s`).
//!
//! A server given by host name is looked up at each attempt, on a thread of its own: a
//! slow or unreachable name server must not hold the loop (and a call's sound) up. The
//! client gives the lookup
//! [`LOOKUP_TIMEOUT_MS`](parlo_net::directory::client::LOOKUP_TIMEOUT_MS); a lookup still
//! under way when an attempt is given up is kept, and the next attempt takes its answer.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use parlo_daemon::notify::Notifier;
use parlo_fsm as fsm;
use parlo_net::directory::client::{
    Answer, Client, Event, Failure, Link, Loss, Query, Security, ServerKey,
};
use parlo_net::directory::{Name, ServerKind};
use parlo_net::noise::fingerprint;
use socket2::{Domain, Socket, TcpKeepalive, Type};

use crate::cli::ServerAddr;
use crate::keys::{self, Keys};
use crate::output::Registration;

/// Bytes read from the connection at a time.
const READ_BUF: usize = 4096;

/// Why the phone asked the directory: what to do with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The call machine asked where this name is.
    Dial(parlo_fsm::Name),
    /// Checking an incoming caller's announced name against its address.
    Verify {
        /// The name announced.
        peer: parlo_fsm::Name,
    },
    /// A `list` command.
    List {
        /// Who asked.
        origin: crate::agent::Origin,
    },
    /// Where to send messages to this name, with which key.
    Message(parlo_fsm::Name),
    /// Checking the name a phone that opened a session for messages gave: that name,
    /// its address and the key it proved.
    VerifySender(Box<(parlo_fsm::Name, std::net::SocketAddr, parlo_fsm::PublicKey)>),
}

/// What the connection reports to the phone.
#[derive(Debug)]
pub enum Outcome {
    /// The server accepted our registration.
    Registered,
    /// The server cannot be reached or went away; a new attempt is scheduled.
    Lost {
        /// What happened, naming the server.
        reason: String,
        /// When the next attempt is (zero when there is none: the phone is quitting).
        retry_in: Duration,
        /// Whether this is news for the user (the first failure of an outage).
        announce: bool,
    },
    /// The answer to a request, or why there is none.
    Answer(Purpose, Result<Answer, String>),
}

/// 32 bytes from the operating system for a handshake's ephemeral key; `None` if the
/// source fails (on Linux it does not once it has worked, and the phone checked it at
/// start): the attempt then fails rather than use guessable bytes.
fn ephemeral() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok().map(|()| bytes)
}

/// Wakes the phone's loop (from the lookup thread).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// A delay in words, to follow "retrying" or "next attempt": `within a second`, `in 5 s`,
/// `in 5 min` (whole minutes from 2 min on).
pub fn delay_words(delay: Duration) -> String {
    match delay.as_secs() {
        0 => "within a second".to_owned(),
        secs if secs >= 120 && secs % 60 == 0 => format!("in {} min", secs / 60),
        secs => format!("in {secs} s"),
    }
}

/// Where the registration stands, as the client's events told it.
#[derive(Debug)]
enum Standing {
    /// The first attempt is under way.
    Starting,
    /// Registered.
    Registered,
    /// Not registered: why (naming the server), and when the next attempt is.
    Down { reason: String, retry_at: Instant },
    /// The phone is stopping: no more attempts.
    Stopping,
}

/// Looks a host name up: the system's resolver, or a stand-in in tests.
type Resolver = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

fn system_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// The answer of a host-name lookup, sent by its thread.
type Lookup = Receiver<io::Result<Vec<SocketAddr>>>;

/// The socket, as far as the shell has got with it.
enum Conn {
    /// None: the client waits, or the attempt was given up.
    None,
    /// Waiting for the lookup thread's answer.
    Resolving,
    /// The TCP connection is being made.
    Connecting { stream: TcpStream, addr: SocketAddr },
    /// Connected.
    Open { stream: TcpStream },
}

/// The phone's directory connection.
pub struct Directory {
    server: ServerAddr,
    name: Name,
    bind: Option<IpAddr>,
    token: Token,
    /// The client's time 0.
    epoch: Instant,
    client: Client<Purpose>,
    conn: Conn,
    writable_interest: bool,
    wake: Wake,
    resolver: Resolver,
    /// The lookup under way, if any: one at a time, kept across attempts.
    lookup: Option<Lookup>,
    standing: Standing,
    /// The service manager, told how the registration stands.
    notify: Notifier,
    /// Where a server's key learned on first contact is pinned.
    known_servers: std::path::PathBuf,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("server", &self.server)
            .field("client", &self.client)
            .finish()
    }
}

impl Directory {
    /// A connection to `server` for `name`, whose calls arrive on UDP `listen`. Nothing
    /// happens until [`Directory::handle_timeout`] runs at or after `now`. `seed` seeds
    /// the random delay of a reconnection (from the operating system: it must differ
    /// from phone to phone). `wake` wakes the loop when a host-name lookup has its answer
    /// (the loop then runs [`Directory::handle_timeout`] again). `notify` is told how the
    /// registration stands. `keys` encrypt the connection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: ServerAddr,
        name: Name,
        listen: SocketAddr,
        token: Token,
        seed: u64,
        now: Instant,
        wake: Wake,
        notify: Notifier,
        keys: Keys,
    ) -> Self {
        let bind = (!listen.ip().is_unspecified()).then(|| listen.ip());
        let security = Security {
            identity: keys.identity,
            server: keys.server,
            entropy: Box::new(ephemeral),
        };
        Directory {
            server,
            client: Client::new(name.clone(), listen.port(), seed, fsm::Instant(0))
                .with_security(security),
            known_servers: keys.known_servers,
            name,
            bind,
            token,
            epoch: now,
            conn: Conn::None,
            writable_interest: false,
            wake,
            resolver: system_resolver,
            lookup: None,
            standing: Standing::Starting,
            notify,
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
        self.client.is_connected()
    }

    /// Whether the server holds our registration.
    pub fn is_registered(&self) -> bool {
        self.client.is_registered()
    }

    /// Whether requests await an answer.
    pub fn has_pending(&self) -> bool {
        self.client.has_pending()
    }

    /// Whether the server holds our registration at `now`, and if not why and when the
    /// next attempt is.
    pub fn registration(&self, now: Instant) -> Registration {
        if self.client.is_registered() {
            return Registration::Registered;
        }
        let reason = match &self.standing {
            Standing::Starting | Standing::Registered => {
                format!("registering with the directory server {}", self.server)
            }
            Standing::Down { reason, retry_at } => match retry_at.checked_duration_since(now) {
                Some(left) if !left.is_zero() => {
                    format!("{reason}; next attempt {}", delay_words(left))
                }
                _ => format!("{reason}; trying again now"),
            },
            Standing::Stopping => "the phone is stopping".to_owned(),
        };
        Registration::Unregistered { reason }
    }

    /// The phone runs: the service manager is told it is ready.
    pub fn ready(&self) {
        self.notify.ready(&format!(
            "registering as {} with {}",
            self.name, self.server
        ));
    }

    /// The client's clock at `now`.
    fn ms(&self, now: Instant) -> fsm::Instant {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        fsm::Instant(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// When [`Directory::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client
            .poll_timeout()
            .map(|at| self.epoch + Duration::from_millis(at.0))
    }

    /// Does what is due: a connection attempt, a lookup's answer, the client's timers.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        self.client.handle_timeout(self.ms(now));
        self.run(registry, now, out);
        if let Conn::Resolving = self.conn {
            self.take_lookup(registry, now);
            self.run(registry, now, out);
        }
    }

    /// Handles readiness of the connection.
    pub fn handle_ready(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        let ms = self.ms(now);
        match &mut self.conn {
            Conn::Connecting { stream, addr } => {
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
                    let why = self.attempt_error(addr, &e);
                    self.client.handle_failed(ms, why);
                } else if let Conn::Connecting { stream, .. } =
                    std::mem::replace(&mut self.conn, Conn::None)
                {
                    log::debug!("connected to the directory server {} ({addr})", self.server);
                    self.conn = Conn::Open { stream };
                    // Registered READABLE | WRITABLE: the first flush settles the interest.
                    self.writable_interest = true;
                    self.client.handle_connected(ms);
                }
            }
            Conn::Open { .. } => {
                self.flush(registry, now);
                self.read(now);
            }
            Conn::None | Conn::Resolving => {}
        }
        self.run(registry, now, out);
    }

    /// Asks the directory `query`; the answer comes back as [`Outcome::Answer`] with
    /// `purpose`. When the connection is not open, gives `purpose` back with why, in the
    /// words of an answer's failure.
    pub fn request(
        &mut self,
        registry: &Registry,
        query: Query,
        purpose: Purpose,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) -> Result<(), (Purpose, String)> {
        if !self.client.is_connected() {
            return Err((purpose, self.describe(&Failure::NotConnected)));
        }
        self.client.handle_query(self.ms(now), query, purpose);
        self.run(registry, now, out);
        Ok(())
    }

    /// Unregisters (DISCONNECT) if connected, and stops reconnecting.
    pub fn disconnect(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        self.notify.stopping("stopping");
        self.client.handle_quit(self.ms(now));
        self.run(registry, now, out);
    }

    // ---- carrying the client's outputs out ----

    /// Carries out what the client asks until it asks nothing more: connection changes,
    /// bytes to write, events for the phone.
    fn run(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Outcome>) {
        loop {
            while let Some(link) = self.client.poll_link() {
                match link {
                    Link::Connect => self.connect(registry, now),
                    Link::Close => self.close(registry),
                }
            }
            // A failed write is one more input, whose Close is carried out above.
            if !self.flush(registry, now) {
                break;
            }
        }
        while let Some(event) = self.client.poll_event() {
            self.report(event, out);
        }
    }

    fn report(&mut self, event: Event<Purpose>, out: &mut Vec<Outcome>) {
        match event {
            Event::Registered { server } => {
                let kind = match (server, self.client.is_encrypted()) {
                    (ServerKind::Parlo, true) => String::new(),
                    (ServerKind::Parlo, false) => " (not encrypted)".to_owned(),
                    (ServerKind::Original, _) => {
                        " (not a Parlo server: no PING, no list, not encrypted)".to_owned()
                    }
                };
                if let Some(ServerKey { key, .. }) = self.client.server_key()
                    && self.client.is_encrypted()
                {
                    log::debug!(
                        "encrypted to the directory server {}, key fingerprint {}",
                        self.server,
                        fingerprint(&key)
                    );
                }
                log::info!(
                    "registered as {} with the directory server {}{kind}",
                    self.name,
                    self.server
                );
                self.standing = Standing::Registered;
                self.notify.status(&format!(
                    "registered as {} with {}{kind}",
                    self.name, self.server
                ));
                out.push(Outcome::Registered);
            }
            Event::Lost {
                reason,
                retry,
                announce,
            } => {
                let refused = matches!(reason, Loss::Refused(_));
                let reason = format!("the directory server {} {reason}", self.server);
                let retry_in = Duration::from_millis(retry.map_or(0, |r| r.after_ms));
                match retry {
                    Some(next) => {
                        let said = format!("{reason}; retrying {}", delay_words(retry_in));
                        // Once per change: a retry failing as the one before is no news.
                        match (announce, refused) {
                            (false, _) => log::debug!("{said}"),
                            (true, true) => log::warn!("{said}"),
                            (true, false) => log::info!("{said}"),
                        }
                        self.notify.status(&format!("not registered: {said}"));
                        self.standing = Standing::Down {
                            reason: reason.clone(),
                            retry_at: self.epoch + Duration::from_millis(next.at.0),
                        };
                    }
                    None => {
                        log::info!("{reason}");
                        self.standing = Standing::Stopping;
                    }
                }
                out.push(Outcome::Lost {
                    reason,
                    retry_in,
                    announce,
                });
            }
            Event::Answer { tag, result } => {
                let result = result.map_err(|failure| self.describe(&failure));
                out.push(Outcome::Answer(tag, result));
            }
            Event::Disconnected(Ok(())) => {
                log::info!("unregistered from the directory server {}", self.server);
                self.standing = Standing::Stopping;
            }
            Event::Disconnected(Err(failure)) => {
                log::warn!("DISCONNECT: {}", self.describe(&failure));
            }
            Event::ServerKeyLearned(key) => {
                let path = self.known_servers.display();
                match keys::pin(&self.known_servers, &self.server, &key) {
                    Ok(()) => log::info!(
                        "pinned the directory server {}'s key {key} (fingerprint {}) in {path}",
                        self.server,
                        fingerprint(&key)
                    ),
                    Err(e) => log::warn!(
                        "cannot pin the directory server {}'s key {key} in {path}: {e}; it is \
                         required until the phone stops, and asked again at the next start",
                        self.server
                    ),
                }
            }
            Event::Unencrypted(said) => {
                log::warn!(
                    "the directory server {} speaks no encryption (asked for its key, it \
                     answered: {said}): registering in plain text, which anyone on the \
                     network can read; give --server-key to refuse such a server",
                    self.server
                );
            }
        }
    }

    /// A failure in the phone's words, naming the server where it helps.
    fn describe(&self, failure: &Failure) -> String {
        match failure {
            Failure::NotConnected => {
                format!("not connected to the directory server {}", self.server)
            }
            Failure::Lost(loss) => format!("the directory server {} {loss}", self.server),
            other => other.to_string(),
        }
    }

    /// Starts the attempt the client asked for: at once for an address, after the lookup
    /// for a host name.
    fn connect(&mut self, registry: &Registry, now: Instant) {
        if let Ok(ip) = self.server.host.parse::<IpAddr>() {
            return self.connect_to(registry, SocketAddr::new(ip, self.server.port), now);
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
                let why = format!("cannot start looking its name up: {e}");
                return self.client.handle_failed(self.ms(now), why);
            }
            self.lookup = Some(lookup);
        }
        log::debug!("looking the directory server {} up", self.server);
        self.conn = Conn::Resolving;
        self.take_lookup(registry, now);
    }

    /// Connects once the lookup has answered (the client gives up the attempt if that
    /// takes too long).
    fn take_lookup(&mut self, registry: &Registry, now: Instant) {
        let answer = match self.lookup.as_ref().map(Receiver::try_recv) {
            Some(Ok(answer)) => answer,
            Some(Err(TryRecvError::Empty)) => return,
            Some(Err(TryRecvError::Disconnected)) | None => {
                Err(io::Error::other("the lookup ended without an answer"))
            }
        };
        self.lookup = None;
        self.conn = Conn::None;
        match answer
            .map_err(|e| e.to_string())
            .and_then(|a| self.pick(&a))
        {
            Ok(addr) => self.connect_to(registry, addr, now),
            Err(e) => {
                let why = format!("its name cannot be resolved: {e}");
                self.client.handle_failed(self.ms(now), why);
            }
        }
    }

    fn connect_to(&mut self, registry: &Registry, addr: SocketAddr, now: Instant) {
        let ms = self.ms(now);
        let mut stream = match self.open_socket(addr) {
            Ok(stream) => stream,
            Err(e) => {
                let why = self.attempt_error(addr, &e);
                return self.client.handle_failed(ms, why);
            }
        };
        if let Err(e) = registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self
                .client
                .handle_failed(ms, format!("cannot watch the connection: {e}"));
        }
        log::debug!(
            "connecting to the directory server {} ({addr})",
            self.server
        );
        self.conn = Conn::Connecting { stream, addr };
        self.client.handle_connecting(ms);
    }

    /// Why an attempt on `addr` failed, with the address when the server was given by
    /// name.
    fn attempt_error(&self, addr: SocketAddr, error: &io::Error) -> String {
        if addr.ip().to_string() == self.server.host {
            error.to_string()
        } else {
            format!("{error} ({addr})")
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

    fn close(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.conn, Conn::None) {
            Conn::Connecting { mut stream, .. } | Conn::Open { mut stream } => {
                let _ = registry.deregister(&mut stream);
            }
            Conn::None | Conn::Resolving => {}
        }
        self.writable_interest = false;
    }

    /// Writes what the client has to send, as far as the socket takes it, and watches
    /// for writability while bytes remain. Returns whether it fed the client a failure.
    fn flush(&mut self, registry: &Registry, now: Instant) -> bool {
        let ms = self.ms(now);
        let Conn::Open { stream } = &mut self.conn else {
            return false;
        };
        let mut failure = None;
        while let Some(bytes) = self.client.poll_transmit() {
            let written = stream.write(bytes);
            match written {
                Ok(0) => {
                    failure = Some("the connection takes no more bytes".to_owned());
                    break;
                }
                Ok(n) => {
                    if self.client.speaks_noise() {
                        log::trace!("directory <- {n} bytes, encrypted");
                    } else {
                        log::debug!(
                            "directory <- {}",
                            String::from_utf8_lossy(&bytes[..n]).trim_end()
                        );
                    }
                    self.client.handle_written(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failure {
            self.client.handle_failed(ms, why);
            return true;
        }
        let want_writable = self.client.poll_transmit().is_some();
        if want_writable != self.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(stream, self.token, interest).is_ok() {
                self.writable_interest = want_writable;
            }
        }
        false
    }

    /// Reads until the socket has nothing more, feeding the client.
    fn read(&mut self, now: Instant) {
        let ms = self.ms(now);
        let mut buf = [0u8; READ_BUF];
        while self.client.is_connected() {
            let Conn::Open { stream } = &mut self.conn else {
                return;
            };
            match stream.read(&mut buf) {
                Ok(0) => return self.client.handle_closed(ms),
                Ok(n) => {
                    if self.client.speaks_noise() {
                        log::trace!("directory -> {n} bytes, encrypted");
                    } else {
                        log::debug!(
                            "directory -> {}",
                            String::from_utf8_lossy(&buf[..n]).trim_end()
                        );
                    }
                    self.client.handle_received(ms, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.client.handle_failed(ms, e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use parlo_net::directory::client::LOOKUP_TIMEOUT_MS;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn name(s: &str) -> Name {
        Name::new(s).expect("test name")
    }

    /// A phone's keys that know no key for the server: it asks for one first.
    fn keys() -> Keys {
        Keys {
            identity: parlo_net::noise::SecretKey::from_bytes([7; 32]),
            server: None,
            known_servers: std::env::temp_dir().join("parlo-directory-tests-known-servers"),
        }
    }

    /// Plays a server that knows no KEY (the original, or an older Parlo): the phone
    /// asks, is told no, and goes on in plain text.
    fn knows_no_key(reader: &mut BufReader<std::net::TcpStream>, conn: &std::net::TcpStream) {
        let mut line = String::new();
        reader.read_line(&mut line).expect("KEY");
        assert_eq!(line, "{\"command\":\"KEY\",\"name\":\"server key\"}\n");
        let mut conn = conn;
        conn.write_all(b"{\"ack\":\"Error\",\"reason\":\"unknown command \\\"KEY\\\"\"}\n")
            .expect("answer");
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

    /// Runs the loop for 200 ms: the phone reads what the fake server said and answers.
    fn settle(poll: &mut Poll, directory: &mut Directory, out: &mut Vec<Outcome>) {
        let until = Instant::now() + Duration::from_millis(200);
        drive(poll, directory, out, |_, _| Instant::now() >= until);
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
            7,
            Instant::now(),
            Arc::new(|| {}),
            Notifier::disabled(),
            keys(),
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
        assert!(matches!(directory.conn, Conn::Resolving));
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
        let start = directory.epoch;
        directory.handle_timeout(poll.registry(), start, &mut out);
        let lookup_limit = Duration::from_millis(LOOKUP_TIMEOUT_MS);
        directory.handle_timeout(poll.registry(), start + lookup_limit, &mut out);
        assert!(
            matches!(&out[..], [Outcome::Lost { reason, .. }]
                if reason.contains("stuck.example") && reason.contains("no answer within 10 s")),
            "{out:?}"
        );
        // The next attempt waits for the same lookup rather than starting another, and
        // connects with its answer.
        let retry = directory.poll_timeout().expect("a retry is scheduled");
        directory.handle_timeout(poll.registry(), retry, &mut out);
        assert!(matches!(directory.conn, Conn::Resolving));
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
            7,
            Instant::now(),
            Arc::new(|| {}),
            Notifier::disabled(),
            keys(),
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
        knows_no_key(&mut reader, &conn);
        settle(&mut poll, &mut directory, &mut out);
        let mut line = String::new();
        reader.read_line(&mut line).expect("REG");
        assert_eq!(
            line,
            "{\"command\":\"REG\",\"name\":\"alice\",\"port\":6001}\n"
        );
        (&conn)
            .write_all(b"{\"ack\":\"Registered successfully\",\"server\":\"parlo\"}\n")
            .expect("answer");
        drive(&mut poll, &mut directory, &mut out, |_, o| {
            o.iter().any(|o| matches!(o, Outcome::Registered))
        });
        assert!(directory.is_registered());

        // A lookup, answered in two TCP segments.
        out.clear();
        let bob = parlo_fsm::Name::new("bob").expect("name");
        directory
            .request(
                poll.registry(),
                Query::Lookup(bob.clone()),
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
            .write_all(b"0.9\",\"port\":5001,\"dialect\":\"parlo\"}\n")
            .expect("answer");
        drive(&mut poll, &mut directory, &mut out, |_, o| !o.is_empty());
        assert!(matches!(
            &out[..],
            [Outcome::Answer(Purpose::Dial(n), Ok(Answer::Found(c)))]
                if *n == bob && c.port == 5001 && c.ip.to_string() == "127.0.0.9"
        ));

        // The server goes away: a pending request fails, the loss is announced once.
        out.clear();
        directory
            .request(
                poll.registry(),
                Query::Lookup(bob.clone()),
                Purpose::Dial(bob.clone()),
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
        assert!(
            matches!(&out[0], Outcome::Answer(Purpose::Dial(_), Err(why))
                if why.contains("127.0.0.201")),
            "{out:?}"
        );
        // A lost registration is tried again at once (within a second, at random).
        assert!(matches!(
            &out[1],
            Outcome::Lost { announce: true, retry_in, .. } if *retry_in < Duration::from_secs(1)
        ));
        assert!(!directory.is_registered() && !directory.is_open());
        // The next attempt finds nobody listening: not announced again, then 1 s.
        out.clear();
        drive(&mut poll, &mut directory, &mut out, |_, o| !o.is_empty());
        assert!(matches!(
            &out[0],
            Outcome::Lost { announce: false, retry_in, .. } if *retry_in == Duration::from_secs(1)
        ));
    }
    #[test]
    fn a_refusal_is_told_to_status_and_to_the_service_manager() {
        use std::os::unix::net::UnixDatagram;
        let server = TcpListener::bind("127.0.0.206:0").expect("bind the fake server");
        let port = server.local_addr().expect("address").port();
        let dir = std::env::temp_dir().join(format!("parlo-directory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let manager = UnixDatagram::bind(dir.join("notify.sock")).expect("bind");
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        let told = || {
            let mut buf = [0u8; 1024];
            let n = manager.recv(&mut buf).expect("a notification");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let notify = Notifier::to(dir.join("notify.sock").as_os_str()).expect("a path");
        let mut poll = Poll::new().expect("poll");
        let server_addr = ServerAddr {
            host: "127.0.0.206".into(),
            port,
        };
        let mut directory = Directory::new(
            server_addr,
            name("door"),
            "127.0.0.207:6001".parse().expect("address"),
            Token(1),
            7,
            Instant::now(),
            Arc::new(|| {}),
            notify,
            keys(),
        );
        let at = format!("127.0.0.206:{port}");
        directory.ready();
        assert_eq!(
            told(),
            format!("READY=1\nSTATUS=registering as door with {at}")
        );
        assert_eq!(
            directory.registration(Instant::now()),
            Registration::Unregistered {
                reason: format!("registering with the directory server {at}")
            }
        );

        let mut out = Vec::new();
        directory.handle_timeout(poll.registry(), Instant::now(), &mut out);
        let (conn, _) = server.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        drive(&mut poll, &mut directory, &mut out, |d, _| d.is_open());
        let mut line = String::new();
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        knows_no_key(&mut reader, &conn);
        settle(&mut poll, &mut directory, &mut out);
        reader.read_line(&mut line).expect("REG");
        (&conn)
            .write_all(b"{\"ack\":\"Error Registering\",\"reason\":\"\\\"door\\\" is already registered\"}\n")
            .expect("answer");
        drive(&mut poll, &mut directory, &mut out, |_, o| {
            o.iter().any(|o| matches!(o, Outcome::Lost { .. }))
        });
        let refused = format!(
            "the directory server {at} refused our registration: the name is taken (\"door\" is \
             already registered)"
        );
        assert_eq!(
            told(),
            format!("STATUS=not registered: {refused}; retrying in 5 s")
        );
        let now = Instant::now();
        let Registration::Unregistered { reason } = directory.registration(now) else {
            panic!("refused, not registered");
        };
        assert!(
            reason.starts_with(&format!("{refused}; next attempt in ")),
            "{reason}"
        );
        let later = directory.registration(now + Duration::from_secs(6));
        assert_eq!(
            later,
            Registration::Unregistered {
                reason: format!("{refused}; trying again now")
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn delays_in_words() {
        let words = |ms| delay_words(Duration::from_millis(ms));
        assert_eq!(words(0), "within a second");
        assert_eq!(words(999), "within a second");
        assert_eq!(words(1_000), "in 1 s");
        assert_eq!(words(80_000), "in 80 s");
        assert_eq!(words(160_000), "in 160 s");
        assert_eq!(words(120_000), "in 2 min");
        assert_eq!(words(300_000), "in 5 min");
    }
}
