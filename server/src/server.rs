//! The event loop: one thread, one `mio::Poll`, every socket non-blocking.
//!
//! Each iteration waits for events (or the next deadline: a commit of the store, the
//! once-a-second sweep), reads the clock once, then drains every ready source:
//! - the listener: accept until `WouldBlock`; past `--max-clients` a connection gets a
//!   "server full" error and is closed, and so does one past `--max-per-address` from its
//!   source address (so that one host cannot take every slot);
//! - a connection: read into its 1024-byte [`FrameBuffer`], hand every complete request
//!   to parlo-net ([`Request::parse`], [`Session::handle_request`]) and encode the answers
//!   into one shared output buffer, written with one `write` per batch;
//! - signals: SIGTERM/SIGINT stop the loop, SIGHUP logs a status line and reopens the
//!   database.
//!
//! Under systemd (`$NOTIFY_SOCKET`), the service manager is told `READY=1` once the
//! server listens, a status line with the number of registered phones when it changes
//! (at most once a second), and `STOPPING=1` when it stops.
//!
//! Flow control: a connection whose peer does not read its answers gets its unsent bytes
//! parked in its own buffer, is watched for writability, and is not read from again until
//! they are gone, so a slow or hostile reader costs at most one output buffer of memory.
//! The kernel's side is bounded too: small fixed socket buffers, and, since the kernel
//! lets writes grow its last unsent segment beyond the send buffer, a look at the bytes
//! it has not sent yet after every [`NOTSENT_CHECK`] bytes written: past
//! [`NOTSENT_MAX`], the connection waits for writability as if its answers were parked.
//!
//! Fairness: each connection gets a budget per turn of the loop, [`TURN_WORK`] requests'
//! worth of work ([`Request::work`]: a LIST by offset counts the names it walks past) and
//! [`TURN_READ`] bytes read, so one client pipelining requests cannot hold the loop while
//! others wait. A connection that spent its budget with work left (requests in its buffer,
//! or bytes maybe still in its socket) goes on the ready list and is served again in the
//! next turn, after the events of that turn; edge-triggered epoll would not report it
//! again. While the list is not empty the loop polls without waiting.
//!
//! Reading: after a read that returned fewer bytes than asked, the socket is known to be
//! drained, so the loop does not spend a second `read` to see `WouldBlock`; edge-triggered
//! epoll reports any byte that arrives later. (When the peer's FIN was already reported,
//! the loop reads on until it sees end of file.)
//!
//! Encryption: a connection whose first byte is 0 speaks Noise (the phone's first handshake
//! message, [`parlo_net::noise`]); any other speaks the original JSON. The Noise
//! [`Channel`] sits between the socket and the same [`FrameBuffer`]: bytes read go into the
//! channel, which answers the handshake and hands over the decrypted requests; answers are
//! sealed before they are written. Its session is made with the key the phone proved
//! ([`Session::with_key`]) once the handshake is done. Budgets, timeouts and caps are the
//! same for both kinds: they count the connection, not what it speaks.
//!
//! Connections live in a slab (`Vec<Option<Conn>>`) indexed by their token. A slot freed
//! while events are being handled is only reused after the batch, so a stale event of a
//! closed connection can never reach a new one.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use parlo_daemon::notify::Notifier;
use parlo_net::directory::{
    Contact, MAX_RESPONSE, Name, Owner, Page, PublicKey, Reason, Registry, Request, Response,
    Session,
};
use parlo_net::framing::{Frame, FrameBuffer};
use parlo_net::noise::{self, CHANNEL_COST, Channel, NoiseError, SecretKey, fingerprint};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use crate::cli::ServeConfig;
use crate::error::Error;
use crate::limits;
use crate::quota::Quota;
use crate::store::Store;

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// The work one connection gets done per turn of the loop, in requests
/// ([`Request::work`]). Phones send a request or two at a time; only a client pipelining
/// many ever spends it all, and it then waits a turn for everyone else.
const TURN_WORK: u32 = 8;

/// Bytes read from one connection per turn of the loop at most (requests are at most
/// 1024 bytes, white space between them is free of work).
const TURN_READ: usize = 8 * 1024;

/// Output gathered for one connection before it is written: the answers of one turn
/// always fit, so a turn costs a connection one `write`.
const OUT_CAPACITY: usize = TURN_WORK as usize * MAX_RESPONSE;

/// The receive buffer asked for each connection's socket (the kernel doubles it for its
/// bookkeeping): a few requests' worth, since a connection is read at most [`TURN_READ`]
/// a turn and not at all while its answers wait.
const SOCKET_RCVBUF: usize = 4 * 1024;

/// The send buffer asked for each connection's socket (doubled by the kernel too): one
/// turn's answers, [`OUT_CAPACITY`].
const SOCKET_SNDBUF: usize = 4 * 1024;

/// The most memory one connection can make the server use, whatever its peer does, in
/// bytes (`--max-clients` is lowered to what the memory limit holds at this much each,
/// [`limits::fit_memory`]):
/// - its slot, the `Conn` (its 1024-byte [`FrameBuffer`], session, timers), and its
///   address's count: ~1.3 KiB;
/// - answers parked for a peer that does not read them: one turn's batch and a goodbye
///   from the sweep, [`MAX_UNSENT`] = 9 KiB (nothing more is read from it meanwhile);
/// - in the kernel, which charges socket buffers to the service's cgroup (v2): the
///   receive queue, twice [`SOCKET_RCVBUF`] (the kernel doubles what is asked, for its
///   bookkeeping) = 8 KiB; the send queue, twice [`SOCKET_SNDBUF`] = 8 KiB, and what
///   writes add to its last unsent segment, which the kernel grows past the send buffer,
///   between two looks at it: [`NOTSENT_MAX`] + [`NOTSENT_CHECK`] + a batch and a
///   goodbye = 17 KiB; pages reserved ahead, and the socket itself (TCP state, inode,
///   file, epoll entry): ~8 KiB.
///
/// - for a Noise connection, its [`Channel`] ([`CHANNEL_COST`]: one frame in, one frame of
///   plaintext, `snow`'s state) and the frames' overhead in the parked answers: ~4.5 KiB.
///
/// That makes ~56 KiB. Measured with 300 connections that pipeline LISTs and never read
/// their answers: 2 to 10 KiB of RSS and 12 to 16 KiB of socket buffers (`ss -tm`) each,
/// depending on the peer's receive buffer. Connections still waiting in the accept queue
/// are not the server's yet.
pub const CONN_WORST_CASE: usize = size_of::<Option<Conn>>()
    + 64
    + CHANNEL_COST
    + MAX_UNSENT
    + 2 * SOCKET_RCVBUF
    + 2 * SOCKET_SNDBUF
    + NOTSENT_MAX
    + NOTSENT_CHECK
    + MAX_UNSENT
    + 2 * 4096;

/// The most bytes of answers a connection holds that its socket did not take: one turn's
/// batch, and the error the sweep sends before closing it, both sealed into Noise frames
/// on an encrypted connection, and a handshake message.
const MAX_UNSENT: usize =
    Channel::sealed_len(OUT_CAPACITY) + Channel::sealed_len(MAX_RESPONSE) + HANDSHAKE_MAX;

/// The longest handshake message the server sends (the second: `e, ee`), framed.
const HANDSHAKE_MAX: usize = noise::LEN_PREFIX + noise::MSG1_LEN;

/// Bytes written to a connection between two looks at how many its kernel socket has not
/// sent yet (a phone's answers are ~100 bytes: one look in dozens of requests).
const NOTSENT_CHECK: usize = 4 * 1024;

/// Bytes the kernel has not sent yet beyond which a connection is not served until its
/// socket is writable again (that is, until the kernel's queue is below two thirds of
/// its send buffer).
const NOTSENT_MAX: usize = 4 * 1024;

/// Pending connections the kernel queues for us (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// Keepalive probes sent, and their spacing, once a peer has been silent for `--keepalive`.
const KEEPALIVE_PROBES: u32 = 3;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How often timeouts are checked and the lines held back by quotas are counted in the log.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The shortest time between two status lines for the service manager.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Lines a second about refused connections, of each kind (the rest are counted).
const REFUSALS_LOGGED: u32 = 1;

/// Warnings a second about refused requests (bad ones, names taken; the rest are
/// counted): enough to see what is wrong, too few to flood the journal.
const REFUSED_REQUESTS_LOGGED: u32 = 10;

/// How the daemon ended, when it ended on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Everything went well.
    Cleanly,
    /// Stopped as asked, but the database could not always be written (see the log).
    WithDatabaseErrors,
}

/// Why a connection was closed (for the log).
#[derive(Debug)]
enum CloseReason {
    PeerClosed,
    Failed(io::Error),
    Timeout(Reason),
    /// Its name was registered again by its key on another connection.
    Displaced(Reason),
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Failed(e) => write!(f, "connection lost: {e}"),
            CloseReason::Timeout(reason) | CloseReason::Displaced(reason) => reason.fmt(f),
            CloseReason::Shutdown => f.write_str("server stopping"),
        }
    }
}

/// What a connection speaks.
#[derive(Debug)]
enum Link {
    /// Nothing read yet.
    Undecided,
    /// The original JSON protocol.
    Json,
    /// Noise (see the module docs).
    Noise(Box<Channel>),
}

/// The server's registry seen by a connection's session: the store, and the server's key
/// for KEY.
struct Keyed<'a> {
    store: &'a mut Store,
    key: &'a PublicKey,
}

impl Registry for Keyed<'_> {
    fn find(&self, name: &Name) -> Option<Contact> {
        self.store.find(name)
    }
    fn insert(&mut self, name: &Name, contact: Contact) {
        self.store.insert(name, contact);
    }
    fn remove(&mut self, name: &Name) {
        self.store.remove(name);
    }
    fn page(&self, after: Option<&Name>, skip: u32, page: &mut Page) -> bool {
        self.store.page(after, skip, page)
    }
    fn owner(&self, name: &Name) -> Owner {
        self.store.owner(name)
    }
    fn bind(&mut self, name: &Name, key: &PublicKey) {
        self.store.bind(name, key);
    }
    fn keys_required(&self) -> bool {
        self.store.keys_required()
    }
    fn server_key(&self) -> Option<PublicKey> {
        Some(*self.key)
    }
}

/// One client connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Unique over the server's life, so that a ready-list entry of a closed connection is
    /// not taken for the one reusing its slot.
    id: u64,
    input: FrameBuffer,
    link: Link,
    session: Session,
    /// Answers the socket did not take yet; empty (and unallocated) nearly always.
    unsent: Vec<u8>,
    /// Whether the socket is registered for writability (only while throttled).
    watching_writable: bool,
    /// The kernel held more than [`NOTSENT_MAX`] bytes not sent yet at the last look:
    /// served again once the socket is writable.
    backed_up: bool,
    /// Bytes written since the last look at the kernel's unsent bytes.
    written_since_check: usize,
    /// The peer sent end of file: close once everything buffered is answered and sent.
    peer_done: bool,
    /// The peer's FIN (or an error) was reported: read until end of file rather than
    /// stopping at a short read.
    read_to_end: bool,
    /// On the ready list (see the module docs).
    ready: bool,
    /// The last turn of the loop this connection was served in.
    served_turn: u64,
    last_input: Instant,
    /// When the request now in the buffer began, if one is incomplete.
    request_began: Option<Instant>,
    /// Since when the connection holds no registration (its start, or its DISCONNECT);
    /// `None` while it holds one.
    unregistered_since: Option<Instant>,
}

impl Conn {
    /// Whether the connection waits for its peer to read: answers are parked, or the
    /// kernel holds too many not sent yet. It is neither read nor answered meanwhile.
    fn is_throttled(&self) -> bool {
        !self.unsent.is_empty() || self.backed_up
    }
}

/// Counters since start-up, for the SIGHUP status line.
#[derive(Debug, Default)]
struct Stats {
    accepted: u64,
    /// Refused as the server was full.
    refused: u64,
    /// Refused as their address held `--max-per-address` connections already.
    crowded: u64,
    requests: u64,
    errors: u64,
}

/// The address connections are counted under: an IPv4 peer seen through a dual-stack
/// socket is the IPv4 address it is.
fn source(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// The running daemon.
struct Server {
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    store: Store,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots emptied during the current batch of events (see the module docs).
    freed: Vec<usize>,
    /// Connections (slot, id) to serve again in the next turn: their budget ran out with
    /// work left.
    ready: Vec<(usize, u64)>,
    /// The ready list being served in this turn (kept to reuse its allocation).
    backlog: Vec<(usize, u64)>,
    /// Turns of the loop so far.
    turn: u64,
    open: usize,
    max_clients: usize,
    max_per_address: Option<usize>,
    /// Open connections of each source address that has any.
    per_address: HashMap<IpAddr, usize>,
    /// Log lines about connections refused as the server is full...
    full_log: Quota,
    /// ...and as their address has too many.
    crowded_log: Quota,
    /// accept() failed for lack of file descriptors: retry when one is released.
    accept_paused: bool,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    unregistered_timeout: Option<Duration>,
    /// Silence before TCP keepalive probes start; `None` when keepalive is off.
    keepalive: Option<Duration>,
    /// A connection was released while accept() was paused for lack of descriptors.
    retry_accept: bool,
    next_sweep: Instant,
    out: Batch,
    page: Page,
    /// Warnings about refused requests.
    refused_log: Quota,
    stats: Stats,
    now: Instant,
    /// The service manager, told the number of registrations.
    notify: Notifier,
    /// The address listened on, for the service manager's status line.
    local: SocketAddr,
    /// The number of registrations last told, and when the next line may go.
    told: (usize, Instant),
    /// The server's key pair, and its public half.
    identity: SecretKey,
    key: PublicKey,
    /// Answers sealed for an encrypted connection.
    sealed: Box<[u8; Channel::sealed_len(OUT_CAPACITY)]>,
}

/// Binds the listening socket with a long accept queue.
fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    let failed = |source| Error::Listen { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(failed)?;
    socket.set_reuse_address(true).map_err(failed)?;
    if addr.is_ipv6() {
        // [::] also accepts IPv4 clients, as on most systems by default.
        let _ = socket.set_only_v6(false);
    }
    // Fixed, small kernel buffers (see CONN_WORST_CASE): set on the listener, they are
    // every accepted connection's, and the kernel's autotuning, which would let one
    // connection hold megabytes, is off for them.
    socket.set_recv_buffer_size(SOCKET_RCVBUF).map_err(failed)?;
    socket.set_send_buffer_size(SOCKET_SNDBUF).map_err(failed)?;
    socket.bind(&addr.into()).map_err(failed)?;
    socket.listen(BACKLOG).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Runs the directory server until SIGTERM or SIGINT.
pub fn serve(config: &ServeConfig) -> Result<Stopped, Error> {
    let now = Instant::now();
    let max_clients =
        limits::fit_memory(limits::raise_fd_limit(config.max_clients), CONN_WORST_CASE);
    let poll_failed = |doing| move |source| Error::Poll { doing, source };
    let poll = Poll::new().map_err(poll_failed("create the event queue"))?;
    let mut listener = listen(config.listen)?;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(poll_failed("install signal handlers"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(poll_failed("watch the listening socket"))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(poll_failed("watch signals"))?;
    // A bad names file stops the server before anything else happens.
    let assigned = match &config.names {
        Some(path) => crate::names::read(path)?,
        None => Vec::new(),
    };
    let mut store = Store::open(&config.db, now)?;
    store.set_keys_required(config.require_keys);
    store.assign(&assigned);
    if !store.bindings_read() {
        log::error!(
            "the name bindings cannot be read: only names bound by --names are registered \
             until they can be"
        );
    }
    // After the database (whose directory the identity's default shares, and whose
    // errors come first), before the loop: no connection is served without the key.
    let (secret, made) =
        parlo_daemon::identity::load_or_create(&config.identity).map_err(Error::Identity)?;
    let identity = SecretKey::from_bytes(secret);
    let key = identity.public();
    if made {
        log::info!("made a new identity at {}", config.identity.display());
    }
    log::info!(
        "server key {key} (fingerprint {}), identity {}",
        fingerprint(&key),
        config.identity.display()
    );
    let mut server = Server {
        poll,
        listener,
        signals,
        store,
        conns: Vec::new(),
        free: Vec::new(),
        freed: Vec::new(),
        ready: Vec::new(),
        backlog: Vec::new(),
        turn: 0,
        open: 0,
        max_clients,
        max_per_address: config.max_per_address,
        per_address: HashMap::new(),
        full_log: Quota::new(REFUSALS_LOGGED),
        crowded_log: Quota::new(REFUSALS_LOGGED),
        accept_paused: false,
        idle_timeout: config.idle_timeout,
        request_timeout: config.request_timeout,
        unregistered_timeout: config.unregistered_timeout,
        keepalive: config.keepalive,
        retry_accept: false,
        next_sweep: now + SWEEP_EVERY,
        out: Batch {
            bytes: Box::new([0; OUT_CAPACITY]),
            len: 0,
        },
        page: Page::new(),
        refused_log: Quota::new(REFUSED_REQUESTS_LOGGED),
        stats: Stats::default(),
        now,
        notify: Notifier::from_env(),
        local: config.listen,
        told: (0, now),
        identity,
        key,
        sealed: Box::new([0; Channel::sealed_len(OUT_CAPACITY)]),
    };
    let local = server.listener.local_addr().unwrap_or(config.listen);
    log::info!(
        "listening on {local}, database {}, up to {max_clients} clients, {} names bound to \
         keys{}",
        config.db.display(),
        server.store.bindings_len(),
        if config.require_keys {
            ", plain registrations refused (--require-keys)"
        } else {
            ""
        }
    );
    server.local = local;
    server.notify.ready(&server.status_line());
    let result = server.run();
    server.shutdown(result)
}

impl Server {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.ready.is_empty() {
                self.next_deadline()
                    .map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO) // connections with work left: just look for events
            };
            parlo_daemon::wait(&mut self.poll, &mut events, timeout).map_err(|source| {
                Error::Poll {
                    doing: "wait for events",
                    source,
                }
            })?;
            self.now = Instant::now();
            self.store.set_now(self.now);
            self.turn += 1;
            // Last turn's ready list is served after this turn's events; a connection an
            // event serves first goes back on the list by itself if it needs to.
            std::mem::swap(&mut self.backlog, &mut self.ready);
            for &(index, id) in &self.backlog {
                if let Some(Some(conn)) = self.conns.get_mut(index)
                    && conn.id == id
                {
                    conn.ready = false;
                }
            }
            let mut stop = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => stop |= self.handle_signals(),
                    Token(index) => self.handle_conn_event(index, event),
                }
            }
            self.serve_backlog();
            self.free.append(&mut self.freed);
            if self.retry_accept {
                self.accept_all();
            }
            if self.now >= self.next_sweep {
                self.sweep();
            }
            self.store.commit_if_due();
            self.tell_status();
            if stop {
                return Ok(());
            }
        }
    }

    /// The earliest time the loop must wake up without events.
    fn next_deadline(&self) -> Option<Instant> {
        // Always: the sweep also looks for bindings released by another program.
        let sweep = Some(self.next_sweep);
        let status = self.status_due();
        [sweep, self.store.next_deadline(), status]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the service manager is next to be told a changed number of registrations.
    fn status_due(&self) -> Option<Instant> {
        (self.notify.is_enabled() && self.store.len() != self.told.0).then_some(self.told.1)
    }

    /// Tells the service manager the number of registrations, if it changed and the last
    /// line is a second old.
    fn tell_status(&mut self) {
        if self.status_due().is_some_and(|due| due <= self.now) {
            self.notify.status(&self.status_line());
            self.told = (self.store.len(), self.now + STATUS_EVERY);
        }
    }

    fn status_line(&self) -> String {
        match self.store.len() {
            1 => format!("listening on {}, 1 phone registered", self.local),
            n => format!("listening on {}, {n} phones registered", self.local),
        }
    }

    /// Handles pending signals; returns whether to stop.
    fn handle_signals(&mut self) -> bool {
        let mut stop = false;
        for signal in self.signals.pending() {
            match signal {
                SIGTERM | SIGINT => {
                    log::info!(
                        "stopping on {}",
                        if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        }
                    );
                    stop = true;
                }
                SIGHUP => self.reload(),
                _ => {}
            }
        }
        stop
    }

    /// SIGHUP: a status line, then the database file reopened and rewritten.
    fn reload(&mut self) {
        let s = &self.stats;
        log::info!(
            "status: {} connections (max {}) from {} addresses, {} registered, {} names bound \
             to keys{}; since start {} accepted, {} refused as full, {} refused as too many \
             from their address, {} requests, {} errors, {} database write failures",
            self.open,
            self.max_clients,
            self.per_address.len(),
            self.store.len(),
            self.store.bindings_len(),
            if self.store.bindings_read() {
                ""
            } else {
                " (the others unknown: the bindings cannot be read)"
            },
            s.accepted,
            s.refused,
            s.crowded,
            s.requests,
            s.errors,
            self.store.failures()
        );
        match self.store.reopen() {
            Ok(()) => log::info!(
                "database reopened, {} registrations written",
                self.store.len()
            ),
            Err(e) => log::error!(
                "SIGHUP: {e}; the directory is served from memory and the database tried \
                 again every few seconds"
            ),
        }
    }

    fn accept_all(&mut self) {
        self.accept_paused = false;
        self.retry_accept = false;
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE and friends: the pending connection stays queued; try again
                    // when a connection closes or at the next sweep.
                    log::warn!("cannot accept a connection: {e}; retrying shortly");
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.open >= self.max_clients {
            refuse(&mut stream, Reason::ServerFull);
            self.stats.refused += 1;
            if self.full_log.allows() {
                log::warn!("{peer} refused: server full ({} clients)", self.max_clients);
            }
            return;
        }
        let ip = source(peer);
        if let Some(most) = self.max_per_address
            && self.per_address.get(&ip).is_some_and(|&open| open >= most)
        {
            refuse(
                &mut stream,
                Reason::TooManyFromAddress(u32::try_from(most).unwrap_or(u32::MAX)),
            );
            self.stats.crowded += 1;
            if self.crowded_log.allows() {
                log::warn!(
                    "{peer} refused: {ip} holds {most} connections already (--max-per-address)"
                );
            }
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("{peer} cannot disable Nagle: {e}");
        }
        if let Some(idle) = self.keepalive {
            let probes = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_PROBES);
            // Unacknowledged answers to a dead peer give up on the same schedule.
            let give_up = idle + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES;
            let socket = SockRef::from(&stream);
            if let Err(e) = socket
                .set_tcp_keepalive(&probes)
                .and_then(|()| socket.set_tcp_user_timeout(Some(give_up)))
            {
                log::warn!("{peer} cannot enable TCP keepalive: {e}");
            }
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(index), Interest::READABLE)
        {
            log::error!("{peer} cannot watch the connection: {e}");
            self.free.push(index);
            return;
        }
        self.conns[index] = Some(Conn {
            stream,
            peer,
            id: self.stats.accepted,
            input: FrameBuffer::new(),
            link: Link::Undecided,
            session: Session::new(),
            unsent: Vec::new(),
            watching_writable: false,
            backed_up: false,
            written_since_check: 0,
            peer_done: false,
            read_to_end: false,
            ready: false,
            served_turn: 0,
            last_input: self.now,
            request_began: None,
            unregistered_since: Some(self.now),
        });
        self.open += 1;
        *self.per_address.entry(ip).or_insert(0) += 1;
        self.stats.accepted += 1;
        log::debug!("{peer} connected ({} open)", self.open);
    }

    fn handle_conn_event(&mut self, index: usize, event: &Event) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return; // closed earlier in this batch
        };
        conn.read_to_end |= event.is_read_closed() || event.is_error();
        if event.is_writable() {
            // Writable: the kernel's queue is below two thirds of the send buffer.
            conn.backed_up = false;
            if !conn.unsent.is_empty()
                && let Err(e) = send_unsent(conn)
            {
                self.close(index, CloseReason::Failed(e));
                return;
            }
        }
        if !conn.is_throttled() && conn.served_turn != self.turn {
            self.serve_conn(index);
        }
    }

    /// Serves the connections left with work by the last turn, unless an event of this
    /// turn served them already or their peer stopped reading.
    fn serve_backlog(&mut self) {
        let mut backlog = std::mem::take(&mut self.backlog);
        for &(index, id) in &backlog {
            if let Some(Some(conn)) = self.conns.get(index)
                && conn.id == id
                && conn.served_turn != self.turn
                && !conn.is_throttled()
            {
                self.serve_conn(index);
            }
        }
        backlog.clear();
        self.backlog = backlog;
    }

    /// Reads, answers and writes for one connection until it would block, is throttled by
    /// a peer that does not read, ends, or has had its budget for this turn (then it goes
    /// on the ready list).
    fn serve_conn(&mut self, index: usize) {
        let Server {
            conns,
            store,
            out,
            page,
            stats,
            now,
            turn,
            ready,
            refused_log,
            identity,
            key,
            sealed,
            ..
        } = self;
        let mut registry = Keyed { store, key };
        let Some(Some(conn)) = conns.get_mut(index) else {
            return;
        };
        conn.served_turn = *turn;
        let mut work = TURN_WORK;
        let mut read = 0;
        out.len = 0;
        let mut drained = false;
        let mut work_left = false;
        let failure = loop {
            let answered = answer_buffered(
                conn,
                &mut registry,
                page,
                stats,
                out,
                &mut sealed[..],
                refused_log,
                &mut work,
            );
            match answered {
                Ok(Flow::Continue) => {}
                Ok(Flow::Throttled) => break None,
                Ok(Flow::Spent) => {
                    work_left = true;
                    break None;
                }
                Err(e) => break Some(e),
            }
            conn.request_began = if conn.input.is_mid_request() {
                conn.request_began.or(Some(*now))
            } else {
                None
            };
            if conn.peer_done || drained {
                break None;
            }
            if read >= TURN_READ {
                work_left = true; // the socket may hold more
                break None;
            }
            if let Link::Undecided = conn.link {
                match decide(conn, identity, refused_log) {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(e) => break Some(e),
                }
            }
            let read_once = match &mut conn.link {
                Link::Noise(channel) => {
                    match read_noise(&mut conn.stream, channel, &mut conn.input, TURN_READ - read) {
                        Ok(read) => read,
                        Err(NoiseRead::Noise(e)) => {
                            break Some(noise_failed(conn, e, refused_log));
                        }
                    }
                }
                _ => {
                    let spare = conn.input.spare();
                    let asked = spare.len().min(TURN_READ - read);
                    conn.stream.read(&mut spare[..asked]).map(|n| {
                        conn.input.filled(n);
                        (n, n < asked)
                    })
                }
            };
            match read_once {
                Ok((0, _)) => conn.peer_done = true,
                Ok((n, short)) => {
                    conn.last_input = *now;
                    read += n;
                    // Drained (see the module docs): answer what came, then stop.
                    drained = short && !conn.read_to_end;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
            if let Err(e) = flush_handshake(conn) {
                break Some(e);
            }
            if let Link::Noise(channel) = &conn.link
                && channel.is_established()
                && conn.session.key().is_none()
                && let Some(key) = channel.remote_key()
            {
                // The handshake is done: the session knows who is at the other end.
                log::debug!("{} encrypted, key {}", conn.peer, fingerprint(&key));
                conn.session = Session::with_key(key);
            }
        };
        conn.unregistered_since = match conn.session.registered() {
            Some(_) => None,
            None => conn.unregistered_since.or(Some(*now)),
        };
        let displaced = conn.session.poll_displaced();
        let failure = match failure {
            None if out.len > 0 => deliver(conn, out.filled(), &mut sealed[..]).err(),
            other => other,
        };
        if let Some(e) = failure {
            self.close(index, CloseReason::Failed(e));
        } else if conn.is_throttled() {
            // Throttled: served again once the peer takes its answers.
            if let Err(e) = watch_writable(&self.poll, conn, index) {
                self.close(index, CloseReason::Failed(e));
            }
        } else if work_left {
            if !conn.ready {
                conn.ready = true;
                ready.push((index, conn.id));
            }
            if let Err(e) = watch_writable(&self.poll, conn, index) {
                self.close(index, CloseReason::Failed(e));
            }
        } else if conn.peer_done {
            self.close(index, CloseReason::PeerClosed);
        } else if let Err(e) = watch_writable(&self.poll, conn, index) {
            self.close(index, CloseReason::Failed(e));
        }
        if let Some(name) = displaced {
            self.displace(index, &name);
        }
    }

    /// `name` was registered again by its key on the connection in slot `by` (a phone back
    /// from a reboot): any other connection holding it (the phone's stale one, not found
    /// dead yet) loses it without removing the new registration, is told why, and is
    /// closed. A walk over every connection, for an event as rare as a reboot.
    fn displace(&mut self, by: usize, name: &Name) {
        for index in 0..self.conns.len() {
            if index == by {
                continue;
            }
            let Some(Some(conn)) = self.conns.get_mut(index) else {
                continue;
            };
            if conn.session.registered() != Some(name) {
                continue;
            }
            let _ = conn.session.handle_displaced();
            let reason = Reason::Displaced(name.clone());
            let mut buf = [0u8; MAX_RESPONSE];
            if let Ok(len) = Response::Error(reason.clone()).encode(&mut buf) {
                let _ = deliver(conn, &buf[..len], &mut self.sealed[..]);
            }
            log::info!(
                "{} {name:?} registered again by its key from another connection",
                conn.peer
            );
            self.close(index, CloseReason::Displaced(reason));
        }
    }

    /// Closes a connection, removing its registration.
    fn close(&mut self, index: usize, why: CloseReason) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        // Dropping the stream closes the socket, which also removes it from epoll.
        let mut session = conn.session;
        match session.handle_close(&mut self.store) {
            Some(name) => log::info!("{} {name:?} unregistered: {why}", conn.peer),
            None => log::debug!("{} {why}", conn.peer),
        }
        self.open -= 1;
        let ip = source(conn.peer);
        if let Some(open) = self.per_address.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.per_address.remove(&ip);
            }
        }
        self.freed.push(index);
        self.retry_accept |= self.accept_paused;
    }

    /// Once a second: timeouts, and the log lines held back by the quotas.
    fn sweep(&mut self) {
        self.next_sweep = self.now + SWEEP_EVERY;
        let held_back = self.full_log.renew();
        if held_back > 0 {
            log::warn!(
                "{held_back} more connections refused: server full ({} clients)",
                self.max_clients
            );
        }
        let held_back = self.refused_log.renew();
        if held_back > 0 {
            log::warn!(
                "{held_back} more refused requests in the last second, not logged one by one \
                 (at most {REFUSED_REQUESTS_LOGGED} a second are)"
            );
        }
        let held_back = self.crowded_log.renew();
        if held_back > 0 {
            log::warn!(
                "{held_back} more connections refused: too many from their address (at most \
                 {}, --max-per-address)",
                self.max_per_address.unwrap_or_default()
            );
        }
        if self.accept_paused {
            self.retry_accept = true;
        }
        // Bindings another program changed (`parlo-server release`), and the copy of ours.
        self.store.commit();
        self.store.refresh_bindings();
        self.store.save_copy();
        if self.idle_timeout.is_none()
            && self.request_timeout.is_none()
            && self.unregistered_timeout.is_none()
        {
            return;
        }
        for index in 0..self.conns.len() {
            let Some(conn) = &self.conns[index] else {
                continue;
            };
            let reason = if let Some(limit) = self.request_timeout
                && conn
                    .request_began
                    .is_some_and(|began| self.now.duration_since(began) >= limit)
            {
                Reason::RequestTimeout(secs(limit))
            } else if let Some(limit) = self.idle_timeout
                && self.now.duration_since(conn.last_input) >= limit
            {
                Reason::IdleTimeout(secs(limit))
            } else if let Some(limit) = self.unregistered_timeout
                && conn
                    .unregistered_since
                    .is_some_and(|since| self.now.duration_since(since) >= limit)
            {
                Reason::UnregisteredTimeout(secs(limit))
            } else {
                continue;
            };
            if let Some(Some(conn)) = self.conns.get_mut(index) {
                let mut buf = [0u8; MAX_RESPONSE];
                if let Ok(len) = Response::Error(reason.clone()).encode(&mut buf) {
                    let _ = deliver(conn, &buf[..len], &mut self.sealed[..]);
                }
            }
            self.close(index, CloseReason::Timeout(reason));
        }
        self.free.append(&mut self.freed);
    }

    /// Closes everything and finishes the database; maps the loop's result to the outcome.
    fn shutdown(mut self, result: Result<(), Error>) -> Result<Stopped, Error> {
        self.notify.stopping("stopping");
        let _ = self.poll.registry().deregister(&mut self.listener);
        for index in 0..self.conns.len() {
            if self.conns[index].is_some() {
                self.close(index, CloseReason::Shutdown);
            }
        }
        let failures = self.store.failures();
        let closed = self.store.close();
        result?;
        match closed {
            Ok(()) if failures == 0 => {
                log::info!("stopped");
                Ok(Stopped::Cleanly)
            }
            Ok(()) => {
                log::warn!("stopped; {failures} database writes failed during the run");
                Ok(Stopped::WithDatabaseErrors)
            }
            Err(e) => {
                log::error!("stopped, but {e}");
                Ok(Stopped::WithDatabaseErrors)
            }
        }
    }
}

/// Answers a connection that is not admitted with an error saying why; closes it when
/// dropped.
fn refuse(stream: &mut TcpStream, reason: Reason) {
    let mut buf = [0u8; MAX_RESPONSE];
    // Read what the client already sent, so that closing sends a FIN after the error
    // rather than a reset that could destroy it.
    let _ = stream.read(&mut buf);
    if let Ok(len) = Response::Error(reason).encode(&mut buf) {
        // Best effort: a fresh socket's send buffer is empty, and we do not wait.
        let _ = stream.write(&buf[..len]);
    }
}

/// Whether a connection may go on being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The connection waits for its peer to read (see [`Conn::is_throttled`]): stop reading.
    Throttled,
    /// The connection had its work for this turn.
    Spent,
}

/// Answers gathered for one connection, written with one `write`.
#[derive(Debug)]
struct Batch {
    bytes: Box<[u8; OUT_CAPACITY]>,
    len: usize,
}

impl Batch {
    fn filled(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Answers the complete requests in the connection's buffer while `work` lasts (each takes
/// its [`Request::work`] off it; one that needs more than is left still runs, as the
/// turn's last), gathering the answers in `out` and writing them out whenever another
/// answer might not fit. Refused requests are logged as warnings while `refused_log`
/// allows.
#[allow(clippy::too_many_arguments)]
fn answer_buffered(
    conn: &mut Conn,
    store: &mut Keyed<'_>,
    page: &mut Page,
    stats: &mut Stats,
    out: &mut Batch,
    sealed: &mut [u8],
    refused_log: &mut Quota,
    work: &mut u32,
) -> io::Result<Flow> {
    let peer_ip = conn.peer.ip().to_canonical();
    loop {
        if out.len + MAX_RESPONSE > OUT_CAPACITY {
            deliver(conn, out.filled(), sealed)?;
            out.len = 0;
        }
        if conn.is_throttled() {
            return Ok(Flow::Throttled);
        }
        if *work == 0 {
            return Ok(Flow::Spent);
        }
        let Some(frame) = conn.input.next_frame() else {
            return Ok(Flow::Continue);
        };
        stats.requests += 1;
        *work -= 1; // not 0: checked above
        let (request, response) = match frame {
            Frame::Object(bytes) => match Request::parse(bytes) {
                Ok(request) => {
                    // Beyond the one counted already.
                    *work = work.saturating_sub(request.work().saturating_sub(1));
                    // A copy for the log line: the session consumes the request.
                    let logged = request.clone();
                    let response = conn.session.handle_request(request, peer_ip, store, page);
                    (Some(logged), response)
                }
                Err(error) => (None, Response::Error(error.into())),
            },
            Frame::Invalid(error) => (None, Response::Error(error.into())),
        };
        let level = match (&request, &response) {
            (_, Response::Error(_) | Response::NameTaken(_) | Response::OwnedByAnotherKey(_)) => {
                stats.errors += 1;
                // A peer decides how many of these there are: the first few of each
                // second are logged, the rest counted (see the sweep).
                refused_log.allows().then_some(log::Level::Warn)
            }
            (Some(Request::Reg { .. } | Request::Disconnect { .. }), _) => Some(log::Level::Info),
            _ => Some(log::Level::Debug),
        };
        // Every line is escaped on its way out (parlo_daemon::logging): what a request
        // says can neither drive a terminal nor end the line.
        match (level, &request) {
            (Some(level), Some(request @ Request::Reg { .. })) if conn.session.key().is_some() => {
                // A phone that proved its key is known by its fingerprint.
                let key = conn.session.key().map(fingerprint);
                let key = key.map(|k| k.to_string()).unwrap_or_default();
                log::log!(level, "{} {request}: {response} (key {key})", conn.peer);
            }
            (Some(level), Some(request)) => {
                log::log!(level, "{} {request}: {response}", conn.peer);
            }
            (Some(level), None) => log::log!(level, "{} {response}", conn.peer),
            (None, _) => {}
        }
        match response.encode(&mut out.bytes[out.len..]) {
            Ok(len) => out.len += len,
            Err(e) => log::error!("{} answer lost: {e}", conn.peer),
        }
    }
}

/// Looks at a new connection's first byte, without taking it, to see what it speaks.
/// Returns whether to go on reading (`false`: nothing came yet).
fn decide(conn: &mut Conn, identity: &SecretKey, refused_log: &mut Quota) -> io::Result<bool> {
    let mut first = [0u8; 1];
    match conn.stream.peek(&mut first) {
        Ok(0) => conn.link = Link::Json, // end of file: the JSON path reads and ends it
        Ok(_) => match noise::Wire::of_first_byte(first[0]) {
            noise::Wire::Json => conn.link = Link::Json,
            noise::Wire::Noise => {
                let mut ephemeral = [0u8; 32];
                getrandom::fill(&mut ephemeral)
                    .map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
                match Channel::responder(identity, ephemeral) {
                    Ok(channel) => conn.link = Link::Noise(Box::new(channel)),
                    Err(e) => return Err(noise_failed(conn, e, refused_log)),
                }
            }
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// Why reading an encrypted connection failed: the channel (socket errors come back as
/// the inner result).
enum NoiseRead {
    Noise(NoiseError),
}

/// One read of an encrypted connection (at most `most` bytes): socket bytes into the
/// channel, decrypted bytes into `input`. Returns the bytes read from the socket and
/// whether the read was short; the count is not 0 when only decrypted bytes moved.
fn read_noise(
    stream: &mut TcpStream,
    channel: &mut Channel,
    input: &mut FrameBuffer,
    most: usize,
) -> Result<io::Result<(usize, bool)>, NoiseRead> {
    // Plaintext, or a whole frame, waiting from an earlier read goes first.
    if channel.has_input() {
        let n = channel.read(input.spare()).map_err(NoiseRead::Noise)?;
        input.filled(n);
        // Not 0: that would be taken for the end of the stream; not short either.
        return Ok(Ok((n.max(1), false)));
    }
    let spare = channel.spare();
    let asked = spare.len().min(most);
    let n = match stream.read(&mut spare[..asked]) {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    channel.filled(n);
    let plain = channel.read(input.spare()).map_err(NoiseRead::Noise)?;
    input.filled(plain);
    Ok(Ok((n, n < asked)))
}

/// Writes the handshake message the channel has, if any.
fn flush_handshake(conn: &mut Conn) -> io::Result<()> {
    let Link::Noise(channel) = &mut conn.link else {
        return Ok(());
    };
    let Some(message) = channel.poll_transmit() else {
        return Ok(());
    };
    let mut framed = [0u8; HANDSHAKE_MAX];
    let len = message.len().min(HANDSHAKE_MAX);
    framed[..len].copy_from_slice(&message[..len]);
    channel.handle_written(len);
    send(conn, &framed[..len])
}

/// A failed Noise channel: logged (within the quota), and, when the phone's first
/// handshake message did not verify, said to it in plain JSON, which a phone reads as a
/// refusal (so that it can say that the server's key is not the one it expected). The
/// error closes the connection.
fn noise_failed(conn: &mut Conn, error: NoiseError, refused_log: &mut Quota) -> io::Error {
    if refused_log.allows() {
        log::warn!("{} encrypted connection refused: {error}", conn.peer);
    }
    if error == NoiseError::Handshake {
        let mut buf = [0u8; MAX_RESPONSE];
        if let Ok(len) = Response::Error(Reason::NotOurKey).encode(&mut buf) {
            let _ = send(conn, &buf[..len]);
        }
    }
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Writes answers: as they are on a JSON connection, sealed on an encrypted one (where
/// nothing is said before the handshake is done).
fn deliver(conn: &mut Conn, bytes: &[u8], sealed: &mut [u8]) -> io::Result<()> {
    let Link::Noise(channel) = &mut conn.link else {
        return send(conn, bytes);
    };
    if !channel.is_established() {
        return Ok(());
    }
    let len = channel
        .seal(bytes, sealed)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    send(conn, &sealed[..len])
}

fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Writes `bytes` after whatever is already waiting; what the socket does not take waits
/// in `unsent`.
///
/// `unsent` stays within [`MAX_UNSENT`]: a connection with answers waiting is neither read
/// nor answered, so bytes only come after others when the sweep says goodbye, and then
/// the connection is closed.
fn send(conn: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    debug_assert!(conn.unsent.len() + bytes.len() <= MAX_UNSENT);
    if !conn.unsent.is_empty() {
        conn.unsent.extend_from_slice(bytes);
        return send_unsent(conn);
    }
    let mut written = 0;
    while written < bytes.len() {
        match conn.stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.unsent.extend_from_slice(&bytes[written..]);
    check_notsent(conn, written);
    Ok(())
}

/// Looks at the bytes the kernel has not sent yet once [`NOTSENT_CHECK`] bytes were
/// written since the last look; too many make the connection backed up.
fn check_notsent(conn: &mut Conn, written: usize) {
    conn.written_since_check += written;
    if conn.written_since_check < NOTSENT_CHECK {
        return;
    }
    conn.written_since_check = 0;
    /// `SIOCOUTQNSD` (linux/sockios.h): bytes in the send queue not sent yet.
    const SIOCOUTQNSD: u32 = 0x894B;
    let mut notsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, to a local that outlives
    // the call; the descriptor is the connection's own, open while `conn` lives.
    let asked = unsafe {
        libc::ioctl(
            conn.stream.as_raw_fd(),
            SIOCOUTQNSD as _,
            &mut notsent as *mut libc::c_int,
        )
    };
    if asked == 0 && usize::try_from(notsent).is_ok_and(|n| n > NOTSENT_MAX) {
        conn.backed_up = true;
    }
}

/// Writes as much of `unsent` as the socket takes.
fn send_unsent(conn: &mut Conn) -> io::Result<()> {
    let mut written = 0;
    while written < conn.unsent.len() {
        match conn.stream.write(&conn.unsent[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.unsent.drain(..written);
    check_notsent(conn, written);
    if conn.unsent.is_empty() {
        // Give the memory back: a throttled connection is the exception.
        conn.unsent = Vec::new();
    }
    Ok(())
}

/// Watches for writability exactly while the connection is throttled.
fn watch_writable(poll: &Poll, conn: &mut Conn, index: usize) -> io::Result<()> {
    let wanted = conn.is_throttled();
    if wanted != conn.watching_writable {
        let interest = if wanted {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .reregister(&mut conn.stream, Token(index), interest)?;
        conn.watching_writable = wanted;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `MemoryMax=` of the systemd unit, in bytes.
    fn unit_memory_max() -> u64 {
        let unit = include_str!("../../deploy/parlo-server.service");
        let value = unit
            .lines()
            .find_map(|line| line.strip_prefix("MemoryMax="))
            .expect("the unit sets MemoryMax=");
        let (digits, unit) = value.split_at(value.len() - 1);
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            other => panic!("MemoryMax={value}: unit {other:?}"),
        };
        digits.parse::<u64>().expect("a number") * scale
    }

    #[test]
    fn the_worst_case_of_a_connection_is_what_its_docs_add_up() {
        let kib = CONN_WORST_CASE / 1024;
        assert!((52..=58).contains(&kib), "{CONN_WORST_CASE} bytes");
        assert!(
            size_of::<Option<Conn>>() < 1536,
            "{}",
            size_of::<Option<Conn>>()
        );
    }

    #[test]
    fn the_unit_s_memory_limit_holds_the_default_number_of_clients() {
        let Ok(crate::cli::Command::Serve(defaults)) = crate::cli::parse([]) else {
            panic!("no arguments means serve");
        };
        let limit = unit_memory_max();
        let clients = limits::clients_within(limit, CONN_WORST_CASE);
        assert!(
            clients >= defaults.max_clients,
            "MemoryMax={} MiB holds {clients} clients, not {}: make it {} MiB",
            limit >> 20,
            defaults.max_clients,
            limits::memory_for(defaults.max_clients, CONN_WORST_CASE) >> 20
        );
        // And not so much more that the bound means nothing.
        assert!(clients < defaults.max_clients * 5 / 4, "{clients}");
    }
}
