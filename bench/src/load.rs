//! The load threads: each owns a share of the connections and drives them from its own mio
//! event loop, in two phases.
//!
//! 1. Set-up: connect (a bounded batch at a time, so the server's listen backlog never
//!    overflows; refused or failed connects are retried after a pause) and register a name
//!    (lookup mode) or ping (churn mode). Then wait at a barrier shared with every other
//!    thread and the main thread, so that all start the load at the same moment.
//! 2. Load, in a closed loop: each connection has one request outstanding, sends the next
//!    as soon as the answer arrives, and records the latency of answers that complete
//!    after the warm-up and before the end.
//!
//! Nothing is allocated per request: requests are written into a fixed buffer of the
//! connection, replies read into another, latencies counted in a preallocated histogram.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use parlo_net::directory::PublicKey;
use parlo_net::noise::{Channel, SecretKey};

use crate::error::Error;
use crate::histogram::Histogram;
use crate::wire::{self, REQUEST_CAP, Reply, Request};

/// Bytes a connection may have to write at once: a handshake message and a sealed request.
const WRITE_CAP: usize = 2 + 64 + Channel::sealed_len(REQUEST_CAP);

/// What the connections do once set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each connection holds a registration and looks up random registered names.
    Lookup,
    /// Each connection registers its name and disconnects it, over and over.
    Churn,
    /// Each connection is closed and made again, over and over, and asks PING on each new
    /// one: with `noise`, a handshake per connection.
    Connect,
}

/// What a load connection encrypts with.
#[derive(Debug)]
pub struct NoisePlan {
    /// The server's public key.
    pub server: PublicKey,
    /// The load generator's own key pair (one for every connection).
    pub identity: SecretKey,
}

/// Everything the load threads need to know, shared read-only between them.
#[derive(Debug)]
pub struct Plan {
    /// The directory server.
    pub server: SocketAddr,
    /// Local addresses to connect from, in turn (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// What to do.
    pub mode: Mode,
    /// Names are this prefix followed by the connection's index.
    pub prefix: String,
    /// Total connections, over all threads.
    pub connections: u32,
    /// Connections that send requests (those of index below it); the others only hold
    /// their registration (lookup mode) or stay connected (churn mode).
    pub active: u32,
    /// Load threads.
    pub threads: u32,
    /// Load before measuring.
    pub warmup: Duration,
    /// Measured load.
    pub duration: Duration,
    /// Seed of the lookup-target generator.
    pub seed: u64,
    /// Speak Noise to the server (its key), rather than plain JSON.
    pub noise: Option<NoisePlan>,
}

/// How the threads meet: a barrier for the start of the load (threads + the main thread)
/// and a flag a failing thread raises so that the others stop after the barrier.
#[derive(Debug)]
pub struct StartLine {
    barrier: Barrier,
    abort: AtomicBool,
}

impl StartLine {
    /// A start line for `threads` load threads and the main thread.
    pub fn new(threads: u32) -> Self {
        Self {
            barrier: Barrier::new(threads as usize + 1),
            abort: AtomicBool::new(false),
        }
    }

    /// Waits until every thread is set up; returns whether the load should go on.
    pub fn wait(&self, ok: bool) -> bool {
        if !ok {
            self.abort.store(true, Ordering::SeqCst);
        }
        self.barrier.wait();
        !self.abort.load(Ordering::SeqCst)
    }
}

/// Answers that were not the expected ones, by kind.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    /// A lookup of a registered name answered `None` or another name's port; a REG or
    /// DISCONNECT answered with another ack.
    pub wrong_answer: u64,
    /// `{"ack":"Error",...}` replies.
    pub error_reply: u64,
    /// Replies that could not be understood, or longer than the read buffer.
    pub unexpected: u64,
    /// Connections the server closed or reset during the load.
    pub lost: u64,
    /// The first bad reply, as received, for the report.
    pub first: Option<String>,
}

impl Errors {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.wrong_answer + self.error_reply + self.unexpected + self.lost
    }

    /// Adds `other`'s counts; keeps the first example seen.
    pub fn merge(&mut self, other: &Errors) {
        self.wrong_answer += other.wrong_answer;
        self.error_reply += other.error_reply;
        self.unexpected += other.unexpected;
        self.lost += other.lost;
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }

    fn note(&mut self, line: &[u8]) {
        if self.first.is_none() {
            self.first = Some(String::from_utf8_lossy(line).into_owned());
        }
    }
}

/// What one thread measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latency, in nanoseconds, of each lookup (or REG+DISCONNECT pair) completed in the
    /// measured window, errors included: its count is the number completed.
    pub latency: Histogram,
    /// Bad answers in the measured window, and connections lost at any time of the load.
    pub errors: Errors,
    /// Connections re-opened because the server closed them after a DISCONNECT.
    pub reconnects: u64,
}

/// Events taken from one poll.
const EVENTS: usize = 1024;
/// Reply buffer: replies are short lines; an error with a long reason still fits.
const READ_CAP: usize = 1024;
/// Connections a thread has connecting or registering at once, over all threads.
const SETUP_BATCH: u32 = 128;
/// Connect attempts per connection before giving up.
const CONNECT_ATTEMPTS: u32 = 50;
/// Pause before a failed connect is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long the answers still outstanding at the end of the load are waited for.
const DRAIN: Duration = Duration::from_secs(1);
/// Set-up fails when no connection progresses for this long.
const SETUP_STALL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected (not started yet, or waiting to retry).
    Idle,
    /// Connect in progress.
    Connecting,
    /// Noise handshake in progress.
    Handshaking,
    /// Set-up request (REG or PING) sent.
    SettingUp,
    /// Set up, waiting for the load to start.
    Ready,
    /// GET of `target` sent.
    Looking,
    /// REG sent (churn).
    Registering,
    /// DISCONNECT sent (churn).
    Disconnecting,
    /// Closed by the server during the load; no longer used.
    Dead,
}

struct Conn {
    index: u32,
    stream: Option<TcpStream>,
    state: State,
    attempts: u32,
    /// When the request being waited for (lookup) or the pair (churn) began.
    started: Instant,
    /// The name the outstanding GET looks up.
    target: u32,
    /// The last reply was `Disconnected`: a close now is the server's way, not a failure.
    after_disconnect: bool,
    rbuf: [u8; READ_CAP],
    rlen: usize,
    wbuf: [u8; WRITE_CAP],
    wlen: usize,
    woff: usize,
    /// The Noise channel, on an encrypted connection.
    noise: Option<Box<Channel>>,
}

/// What reading a connection found.
enum Inbound {
    /// Zero or more whole lines are in the buffer; the peer is still there.
    Open,
    /// The peer closed or reset the connection.
    Closed,
    /// A line longer than the buffer.
    Overlong,
}

impl Conn {
    fn new(index: u32, now: Instant) -> Self {
        Self {
            index,
            stream: None,
            state: State::Idle,
            attempts: 0,
            started: now,
            target: 0,
            after_disconnect: false,
            rbuf: [0; READ_CAP],
            rlen: 0,
            wbuf: [0; WRITE_CAP],
            wlen: 0,
            woff: 0,
            noise: None,
        }
    }

    /// Queues `request` (sealed on an encrypted connection) and writes as much as the
    /// socket takes now; the rest goes out on the next writable event.
    fn send(&mut self, request: Request<'_>) -> io::Result<()> {
        let mut plain = [0u8; REQUEST_CAP];
        let len = wire::encode(&mut plain, request);
        match self.noise.as_mut() {
            Some(channel) => {
                let mut sealed = [0u8; Channel::sealed_len(REQUEST_CAP)];
                let n = channel
                    .seal(&plain[..len], &mut sealed)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.queue(&sealed[..n]);
            }
            None => self.queue(&plain[..len]),
        }
        self.flush()
    }

    /// Adds `bytes` after those not written yet.
    fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.copy_within(self.woff..self.wlen, 0);
        self.wlen -= self.woff;
        self.woff = 0;
        let n = bytes.len().min(WRITE_CAP - self.wlen);
        self.wbuf[self.wlen..self.wlen + n].copy_from_slice(&bytes[..n]);
        self.wlen += n;
    }

    /// The TCP connection is made: on an encrypted one, the handshake starts. Returns
    /// whether requests may go now.
    fn begin(&mut self, plan: &Plan) -> io::Result<bool> {
        let Some(noise) = &plan.noise else {
            return Ok(true);
        };
        let mut ephemeral = [0u8; 32];
        getrandom::fill(&mut ephemeral).map_err(|e| io::Error::other(e.to_string()))?;
        let mut channel = Channel::initiator(&noise.identity, &noise.server, ephemeral)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let hello = channel
            .poll_transmit()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        channel.handle_written(hello.len());
        self.noise = Some(Box::new(channel));
        self.queue(&hello);
        self.state = State::Handshaking;
        self.flush()?;
        Ok(false)
    }

    /// During the handshake: reads the server's message; returns whether it is done.
    fn handshake(&mut self) -> io::Result<bool> {
        self.flush()?;
        match self.fill() {
            Inbound::Open => {}
            _ => return Err(io::ErrorKind::ConnectionReset.into()),
        }
        let Some(channel) = self.noise.as_mut() else {
            return Ok(true);
        };
        if let Some(message) = channel.poll_transmit().map(<[u8]>::to_vec) {
            channel.handle_written(message.len());
            self.queue(&message);
        }
        Ok(self.noise.as_ref().is_some_and(|c| c.is_established()))
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.woff < self.wlen {
            match stream.write(&self.wbuf[self.woff..self.wlen]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.woff += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what has arrived into the reply buffer.
    fn fill(&mut self) -> Inbound {
        if self.noise.is_some() {
            return self.fill_sealed();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Inbound::Closed;
        };
        loop {
            if self.rlen == READ_CAP {
                return Inbound::Overlong;
            }
            let room = READ_CAP - self.rlen;
            match stream.read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => return Inbound::Closed,
                Ok(n) => {
                    self.rlen += n;
                    // A short read emptied the socket's receive queue. On Linux, epoll in
                    // edge-triggered mode (mio's) signals every later arrival of data, so
                    // there is no need for the extra read that would only say WouldBlock:
                    // it would double the read calls of a closed loop.
                    if n < room {
                        return Inbound::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Inbound::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Inbound::Closed,
            }
        }
    }

    /// [`Conn::fill`] on an encrypted connection: through the channel.
    fn fill_sealed(&mut self) -> Inbound {
        let (Some(stream), Some(channel)) = (self.stream.as_mut(), self.noise.as_mut()) else {
            return Inbound::Closed;
        };
        let mut raw = [0u8; 2048];
        loop {
            let n = match stream.read(&mut raw) {
                Ok(0) => return Inbound::Closed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Inbound::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Inbound::Closed,
            };
            let mut rest = &raw[..n];
            loop {
                let taken = channel.handle_received(rest);
                rest = &rest[taken..];
                loop {
                    if self.rlen == READ_CAP {
                        return Inbound::Overlong;
                    }
                    match channel.read(&mut self.rbuf[self.rlen..]) {
                        Ok(0) => break,
                        Ok(got) => self.rlen += got,
                        Err(_) => return Inbound::Closed,
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
            if n < raw.len() {
                return Inbound::Open;
            }
        }
    }

    /// The length of the first whole line in the reply buffer, without its `\n`.
    fn line(&self) -> Option<usize> {
        self.rbuf[..self.rlen].iter().position(|&b| b == b'\n')
    }

    /// Drops the first line (of length `len`) and its `\n` from the reply buffer.
    fn consume(&mut self, len: usize) {
        self.rbuf.copy_within(len + 1..self.rlen, 0);
        self.rlen -= len + 1;
    }

    /// Whether a request of this connection awaits its answer.
    fn waiting(&self) -> bool {
        matches!(
            self.state,
            State::Looking | State::Registering | State::Disconnecting
        )
    }

    fn close(&mut self, state: State) {
        self.stream = None;
        self.state = state;
        self.rlen = 0;
        self.wlen = 0;
        self.woff = 0;
        self.noise = None;
    }
}

/// A small, fast, seeded generator (xorshift64*): which name each lookup asks for.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0), without modulo bias worth speaking of.
    pub fn below(&mut self, bound: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u32
    }
}

/// One load thread: the connections `thread`, `thread + threads`, ... of the plan.
pub fn run_thread(plan: &Plan, thread: u32, start: &StartLine) -> Result<Outcome, Error> {
    let mut worker = match Worker::new(plan, thread) {
        Ok(worker) => worker,
        Err(e) => {
            start.wait(false);
            return Err(e);
        }
    };
    let setup = worker.set_up();
    if !start.wait(setup.is_ok()) {
        return Err(setup.err().unwrap_or(Error::Aborted));
    }
    let now = Instant::now();
    worker.warm_end = now + plan.warmup;
    worker.end = worker.warm_end + plan.duration;
    worker.load(now)?;
    Ok(Outcome {
        latency: worker.latency,
        errors: worker.errors,
        reconnects: worker.reconnects,
    })
}

struct Worker<'p> {
    plan: &'p Plan,
    poll: Poll,
    events: Events,
    /// The (token, writable) pairs of the last poll, so that handlers may borrow `self`.
    ready: Vec<(usize, bool)>,
    conns: Vec<Conn>,
    rng: XorShift,
    latency: Histogram,
    errors: Errors,
    reconnects: u64,
    /// When measuring starts and the load ends (set when the load starts).
    warm_end: Instant,
    end: Instant,
}

impl<'p> Worker<'p> {
    fn new(plan: &'p Plan, thread: u32) -> Result<Self, Error> {
        let now = Instant::now();
        let conns = (thread..plan.connections)
            .step_by(plan.threads as usize)
            .map(|index| Conn::new(index, now))
            .collect();
        Ok(Self {
            plan,
            poll: Poll::new().map_err(|cause| Error::Io {
                doing: "creating the event loop",
                cause,
            })?,
            events: Events::with_capacity(EVENTS),
            ready: Vec::with_capacity(EVENTS),
            conns,
            rng: XorShift::new(
                plan.seed ^ u64::from(thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            latency: Histogram::new(),
            errors: Errors::default(),
            reconnects: 0,
            warm_end: now,
            end: now,
        })
    }

    /// Starts connecting connection `i`.
    fn connect(&mut self, i: usize) -> io::Result<()> {
        let conn = &mut self.conns[i];
        conn.attempts += 1;
        let mut stream = open(self.plan, conn.index)?;
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conn.stream = Some(stream);
        conn.state = State::Connecting;
        Ok(())
    }

    /// Whether the connect of `conn` has finished: `Ok(true)` connected, `Ok(false)` still
    /// in progress, `Err` failed.
    fn connected(conn: &mut Conn) -> io::Result<bool> {
        let Some(stream) = conn.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                // Requests are small and each waits for its answer: never delay them.
                stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_up(&mut self) -> Result<(), Error> {
        let total = self.conns.len();
        let batch = (SETUP_BATCH / self.plan.threads).max(8) as usize;
        let (mut next, mut in_flight, mut ready) = (0, 0, 0);
        let mut retries = std::collections::VecDeque::new();
        let mut progress = Instant::now();
        let setup_request = match self.plan.mode {
            Mode::Lookup => "REG",
            Mode::Churn | Mode::Connect => "PING",
        };
        while ready < total {
            let now = Instant::now();
            while in_flight < batch && next < total {
                in_flight += 1;
                if let Err(cause) = self.connect(next) {
                    self.retry(next, cause, &mut retries)?;
                }
                next += 1;
            }
            while let Some(&(at, i)) = retries.front() {
                if at > now {
                    break;
                }
                retries.pop_front();
                if let Err(cause) = self.connect(i) {
                    self.retry(i, cause, &mut retries)?;
                }
            }
            if now.duration_since(progress) > SETUP_STALL {
                return Err(Error::SetupStalled {
                    waiting: in_flight,
                    seconds: SETUP_STALL.as_secs(),
                });
            }
            let timeout = retries
                .front()
                .map_or(Duration::from_millis(500), |&(at, _)| {
                    at.saturating_duration_since(now)
                });
            self.wait(Some(timeout))?;
            for k in 0..self.ready.len() {
                let (i, _) = self.ready[k];
                match self.setup_event(i, setup_request) {
                    Ok(true) => {
                        ready += 1;
                        in_flight -= 1;
                        progress = Instant::now();
                    }
                    Ok(false) => {}
                    Err(SetupFailure::Retry(cause)) => self.retry(i, cause, &mut retries)?,
                    Err(SetupFailure::Fatal(e)) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Schedules connection `i` to be connected again, or gives up after too many attempts.
    fn retry(
        &mut self,
        i: usize,
        cause: io::Error,
        retries: &mut std::collections::VecDeque<(Instant, usize)>,
    ) -> Result<(), Error> {
        let conn = &mut self.conns[i];
        conn.close(State::Idle);
        if conn.attempts >= CONNECT_ATTEMPTS {
            return Err(Error::Connect {
                server: self.plan.server,
                attempts: conn.attempts,
                cause,
            });
        }
        retries.push_back((Instant::now() + RETRY_PAUSE, i));
        Ok(())
    }

    /// Handles an event of connection `i` during set-up; `Ok(true)` when it became ready.
    fn setup_event(&mut self, i: usize, request: &'static str) -> Result<bool, SetupFailure> {
        let plan = self.plan;
        let conn = &mut self.conns[i];
        if conn.state == State::Connecting {
            if !Self::connected(conn).map_err(SetupFailure::Retry)? {
                return Ok(false);
            }
            if !conn.begin(plan).map_err(SetupFailure::Retry)? {
                return Ok(false);
            }
            conn.state = State::Handshaking;
        }
        if conn.state == State::Handshaking {
            if !conn.handshake().map_err(SetupFailure::Retry)? {
                return Ok(false);
            }
            conn.state = State::SettingUp;
            let first = match plan.mode {
                Mode::Lookup => Request::Reg {
                    prefix: &plan.prefix,
                    index: conn.index,
                    port: wire::port_for(conn.index),
                },
                Mode::Churn | Mode::Connect => Request::Ping,
            };
            conn.send(first).map_err(SetupFailure::Retry)?;
        }
        if conn.state != State::SettingUp {
            // A late event of a connection already set up or closed for a retry.
            return Ok(false);
        }
        conn.flush().map_err(SetupFailure::Retry)?;
        let inbound = conn.fill();
        if let Some(len) = conn.line() {
            let line = &conn.rbuf[..len];
            let expected = match plan.mode {
                Mode::Lookup => Reply::Registered,
                Mode::Churn | Mode::Connect => Reply::Pong,
            };
            return match wire::parse_reply(line) {
                reply if reply == expected => {
                    conn.consume(len);
                    conn.state = State::Ready;
                    Ok(true)
                }
                Reply::RegisterRefused => Err(SetupFailure::Fatal(Error::NameTaken(format!(
                    "{}{}",
                    plan.prefix, conn.index
                )))),
                _ => Err(SetupFailure::Fatal(Error::SetupReply {
                    request,
                    reply: String::from_utf8_lossy(line).into_owned(),
                })),
            };
        }
        match inbound {
            Inbound::Open => Ok(false),
            Inbound::Closed => Err(SetupFailure::Retry(io::ErrorKind::ConnectionReset.into())),
            Inbound::Overlong => Err(SetupFailure::Fatal(Error::SetupReply {
                request,
                reply: String::from_utf8_lossy(&conn.rbuf[..64]).into_owned() + "...",
            })),
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.ready.clear();
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(cause) => {
                return Err(Error::Io {
                    doing: "waiting for events",
                    cause,
                });
            }
        }
        self.ready.extend(
            self.events
                .iter()
                .map(|event| (event.token().0, event.is_writable())),
        );
        Ok(())
    }

    /// The closed loop, from `now` to `self.end`, measuring from `self.warm_end`.
    fn load(&mut self, now: Instant) -> Result<(), Error> {
        for i in 0..self.conns.len() {
            if self.conns[i].index < self.plan.active {
                self.cycle(i, now);
            }
        }
        let mut now = Instant::now();
        while now < self.end {
            self.wait(Some(self.end - now))?;
            for k in 0..self.ready.len() {
                let (i, writable) = self.ready[k];
                self.load_event(i, writable);
            }
            now = Instant::now();
        }
        // Read the answers still on their way, so that closing sends the server a FIN, as a
        // client leaving politely does, rather than a reset for unread data.
        let deadline = now + DRAIN;
        while now < deadline && self.conns.iter().any(Conn::waiting) {
            self.wait(Some(deadline - now))?;
            for k in 0..self.ready.len() {
                let (i, writable) = self.ready[k];
                self.load_event(i, writable);
            }
            now = Instant::now();
        }
        Ok(())
    }

    /// Starts connection `i`'s next operation: a request on it, or (connect mode) a new
    /// connection in its place.
    fn cycle(&mut self, i: usize, now: Instant) {
        if self.plan.mode != Mode::Connect {
            return self.next_request(i, now);
        }
        let conn = &mut self.conns[i];
        conn.close(State::Idle);
        conn.started = now;
        if self.connect(i).is_err() {
            self.errors.lost += 1;
            self.conns[i].close(State::Dead);
        }
    }

    /// Sends connection `i`'s next request: a GET of a random name, a REG, or (connect
    /// mode, on a new connection) a PING.
    fn next_request(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let target = self.rng.below(plan.connections);
        let conn = &mut self.conns[i];
        if plan.mode != Mode::Connect {
            // A connect's time runs from the connect.
            conn.started = now;
        }
        let sent = match plan.mode {
            Mode::Lookup => {
                conn.state = State::Looking;
                conn.target = target;
                conn.send(Request::Get {
                    prefix: &plan.prefix,
                    index: target,
                })
            }
            Mode::Churn => {
                conn.state = State::Registering;
                conn.send(Request::Reg {
                    prefix: &plan.prefix,
                    index: conn.index,
                    port: wire::port_for(conn.index),
                })
            }
            Mode::Connect => {
                conn.state = State::Looking;
                conn.send(Request::Ping)
            }
        };
        if sent.is_err() {
            self.drop_conn(i, now);
        }
    }

    /// Connection `i` failed or was closed by the server at `now`. In churn mode, right
    /// after a DISCONNECT, that is the server's way (the original closed the connection on
    /// DISCONNECT): open another and go on. Otherwise the connection is lost.
    fn drop_conn(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        if now >= self.end {
            // The load is over: whatever happens now is not the server's failure to serve.
            conn.close(State::Dead);
            return;
        }
        if self.plan.mode == Mode::Churn && conn.after_disconnect {
            conn.close(State::Idle);
            conn.after_disconnect = false;
            self.reconnects += 1;
            if self.connect(i).is_ok() {
                return;
            }
        }
        self.errors.lost += 1;
        self.conns[i].close(State::Dead);
    }

    fn load_event(&mut self, i: usize, writable: bool) {
        let plan = self.plan;
        let conn = &mut self.conns[i];
        match conn.state {
            State::Dead | State::Idle | State::Ready | State::SettingUp => return,
            State::Connecting => {
                // A new connection: churn, after the server closed one on DISCONNECT;
                // connect mode, every time.
                let now = Instant::now();
                match Self::connected(conn).and_then(|made| match made {
                    true => conn.begin(plan).map(Some),
                    false => Ok(None),
                }) {
                    Ok(Some(true)) if now < self.end => self.next_request(i, now),
                    Ok(_) => {}
                    Err(_) => self.drop_conn(i, now),
                }
                return;
            }
            State::Handshaking => {
                let now = Instant::now();
                match conn.handshake() {
                    Ok(true) if now < self.end => self.next_request(i, now),
                    Ok(_) => {}
                    Err(_) => self.drop_conn(i, now),
                }
                return;
            }
            State::Looking | State::Registering | State::Disconnecting => {}
        }
        if writable && conn.flush().is_err() {
            return self.drop_conn(i, Instant::now());
        }
        let inbound = conn.fill();
        let now = Instant::now();
        let measured = now >= self.warm_end && now < self.end;
        while let Some(len) = self.conns[i].line() {
            let conn = &mut self.conns[i];
            let reply = wire::parse_reply(&conn.rbuf[..len]);
            let verdict = judge(plan.mode, conn, reply);
            conn.after_disconnect = reply == Reply::Disconnected;
            if measured {
                if !verdict.ok {
                    self.errors.note(&conn.rbuf[..len]);
                    match reply {
                        Reply::Error => self.errors.error_reply += 1,
                        Reply::Unexpected => self.errors.unexpected += 1,
                        _ => self.errors.wrong_answer += 1,
                    }
                }
                if verdict.complete {
                    self.latency
                        .record(now.duration_since(conn.started).as_nanos() as u64);
                }
            }
            conn.consume(len);
            if now >= self.end {
                // Answered, and nothing more to send: the connection can close cleanly.
                conn.state = State::Ready;
                continue;
            }
            if verdict.complete {
                self.cycle(i, now);
                return;
            } else {
                conn.state = State::Disconnecting;
                let sent = conn.send(Request::Disconnect {
                    prefix: &plan.prefix,
                    index: conn.index,
                });
                if sent.is_err() {
                    return self.drop_conn(i, now);
                }
            }
        }
        match inbound {
            Inbound::Open => {}
            Inbound::Overlong => {
                self.errors.unexpected += 1;
                self.errors.note(&self.conns[i].rbuf[..64]);
                self.errors.lost += 1;
                self.conns[i].close(State::Dead);
            }
            Inbound::Closed => self.drop_conn(i, now),
        }
    }
}

enum SetupFailure {
    /// Worth another connect.
    Retry(io::Error),
    /// Stops the run.
    Fatal(Error),
}

/// The verdict on one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    /// It is the expected answer.
    ok: bool,
    /// The lookup, or the REG+DISCONNECT pair, is over; otherwise the DISCONNECT is next.
    complete: bool,
}

fn judge(mode: Mode, conn: &Conn, reply: Reply) -> Verdict {
    let (ok, complete) = match (mode, conn.state) {
        (Mode::Lookup, _) => (
            reply
                == Reply::Found {
                    port: Some(u32::from(wire::port_for(conn.target))),
                },
            true,
        ),
        // A failed REG still gets its DISCONNECT, so that the next pair starts clean.
        (Mode::Churn, State::Registering) => (reply == Reply::Registered, false),
        (Mode::Churn, _) => (reply == Reply::Disconnected, true),
        (Mode::Connect, _) => (reply == Reply::Pong, true),
    };
    Verdict { ok, complete }
}

/// Lets the kernel pick the source port at connect time, unique for the four-tuple only,
/// rather than at bind time, unique for the address (`IP_BIND_ADDRESS_NO_PORT`): with
/// thousands of connections in TIME_WAIT (connect mode), a port search at every bind takes
/// milliseconds of the load generator's CPU. Best effort: older kernels do without.
fn bind_address_no_port(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    /// `IP_BIND_ADDRESS_NO_PORT` (linux/in.h).
    const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;
    let on: libc::c_int = 1;
    // SAFETY: the option takes an int, passed by a pointer to a local that outlives the
    // call, with its size; the descriptor is the socket's own, open while it lives.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Opens a non-blocking connection to the server, from the plan's next source address.
fn open(plan: &Plan, index: u32) -> io::Result<TcpStream> {
    if plan.sources.is_empty() {
        return TcpStream::connect(plan.server);
    }
    let source = plan.sources[index as usize % plan.sources.len()];
    let domain = socket2::Domain::for_address(plan.server);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    bind_address_no_port(&socket);
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&plan.server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_spreads_over_the_range() {
        let (mut a, mut b) = (XorShift::new(7), XorShift::new(7));
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            seen[x as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(XorShift::new(0).below(1), 0);
    }

    #[test]
    fn a_lookup_is_good_only_with_the_target_port() {
        let mut conn = Conn::new(3, Instant::now());
        conn.state = State::Looking;
        conn.target = 42;
        let port = u32::from(wire::port_for(42));
        let good = Verdict {
            ok: true,
            complete: true,
        };
        let bad = Verdict {
            ok: false,
            complete: true,
        };
        let found = |port| Reply::Found { port: Some(port) };
        assert_eq!(judge(Mode::Lookup, &conn, found(port)), good);
        assert_eq!(judge(Mode::Lookup, &conn, found(port + 1)), bad);
        assert_eq!(judge(Mode::Lookup, &conn, Reply::Found { port: None }), bad);
        assert_eq!(judge(Mode::Lookup, &conn, Reply::NotFound), bad);
        assert_eq!(judge(Mode::Lookup, &conn, Reply::Error), bad);
    }

    #[test]
    fn a_churn_pair_is_reg_then_disconnect() {
        let mut conn = Conn::new(3, Instant::now());
        conn.state = State::Registering;
        let verdict = |ok, complete| Verdict { ok, complete };
        assert_eq!(
            judge(Mode::Churn, &conn, Reply::Registered),
            verdict(true, false)
        );
        assert_eq!(
            judge(Mode::Churn, &conn, Reply::RegisterRefused),
            verdict(false, false)
        );
        conn.state = State::Disconnecting;
        assert_eq!(
            judge(Mode::Churn, &conn, Reply::Disconnected),
            verdict(true, true)
        );
        assert_eq!(
            judge(Mode::Churn, &conn, Reply::Error),
            verdict(false, true)
        );
    }

    #[test]
    fn reply_lines_are_cut_at_newlines() {
        let mut conn = Conn::new(0, Instant::now());
        let input = b"{\"ack\":\"PONG\"}\n{\"ip\":\"None\"}\n{\"ack\"";
        conn.rbuf[..input.len()].copy_from_slice(input);
        conn.rlen = input.len();
        let len = conn.line().expect("a whole line");
        assert_eq!(wire::parse_reply(&conn.rbuf[..len]), Reply::Pong);
        conn.consume(len);
        let len = conn.line().expect("a second line");
        assert_eq!(wire::parse_reply(&conn.rbuf[..len]), Reply::NotFound);
        conn.consume(len);
        assert_eq!(conn.line(), None);
        assert_eq!(&conn.rbuf[..conn.rlen], b"{\"ack\"");
    }
}
