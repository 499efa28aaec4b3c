//! The control socket: commands from other programs (`parlo-client ctl`, scripts,
//! systemd units) over a Unix stream socket, one per line, each answered with one line.
//!
//! A connection that says `watch` also receives, from then on, every event the phone
//! prints (the lines [`crate::agent::is_news`] picks), in order, for as long as it stays
//! connected; `format` (or `watch json`) chooses the connection's own form of lines,
//! independent of the phone's `--json`. A connection never holds the phone up: its
//! unsent lines wait in its outbox, and one that leaves more than [`OUTBOX_LIMIT`] bytes
//! unread is closed, with a log line.
//!
//! [`ctl`] is the other end: `parlo-client ctl`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::cli::Ctl;
use crate::command::{Line, Lines, is_answered};
use crate::error::{Error, Exit};
use crate::output::{Event, Format, is_about, is_error_line, is_kind, message_id_of};

/// Most control connections held at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes a connection may leave unread (answers, and events if it watches) before it is
/// dropped.
pub const OUTBOX_LIMIT: usize = 64 * 1024;
/// Commands taken from one connection before its answers are given a chance to go out.
const BATCH: usize = 64;
/// Unsent answer bytes above which a connection's further commands wait.
const PAUSE_ABOVE: usize = 16 * 1024;

/// A control connection, as commands and their answers name it: its slot, and which of
/// the connections that held the slot it is. A slot is reused once its connection closes,
/// and an answer still owed to the old connection (a `list` waiting for the directory)
/// must not reach the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionId {
    index: usize,
    serial: u64,
}

impl ConnectionId {
    /// The `serial`th connection to hold slot `index`, for tests of answer routing.
    #[cfg(test)]
    pub(crate) fn new(index: usize, serial: u64) -> ConnectionId {
        ConnectionId { index, serial }
    }
}

/// One control connection.
#[derive(Debug)]
struct Connection {
    /// Which connection to hold its slot this is (see [`ConnectionId`]).
    serial: u64,
    stream: UnixStream,
    lines: Lines,
    outbox: Vec<u8>,
    /// Commands read and not answered yet (a `list` waits for the directory).
    unanswered: usize,
    /// Reading stopped before the socket was drained (a batch was taken, or answers are
    /// piling up): it resumes when the answers are out, since the readiness event that
    /// announced the data will not come again.
    paused: bool,
    /// The peer closed its side; answers still go out.
    read_closed: bool,
    writable_interest: bool,
    /// Whether it receives every event (`watch`).
    watching: bool,
    /// Its lines' form, if it chose one (`format`, `watch json`); else the phone's.
    format: Option<Format>,
}

impl Connection {
    /// Whether the peer is gone for good: it closed the connection, not just its sending
    /// side (a watcher may half-close and go on reading). Probed by an empty write, which
    /// fails on a connection whose peer has closed.
    fn hung_up(&mut self) -> bool {
        matches!(
            self.stream.write(&[]),
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
        )
    }
}

/// The listening socket and its connections. Connection `i` has token `first + i`.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    listener: UnixListener,
    first: usize,
    connections: Vec<Option<Connection>>,
    /// Connections accepted so far.
    accepted: u64,
}

impl Control {
    /// Creates the socket at `path` (replacing a stale one, refusing one a running phone
    /// answers on), readable and writable by owner and group.
    pub fn bind(
        path: &Path,
        registry: &Registry,
        listener_token: Token,
        first: usize,
    ) -> Result<Control, Error> {
        let control_error = |doing, source| Error::Control {
            path: path.to_owned(),
            doing,
            source,
        };
        // Only a socket nobody answers is ours to replace: anything else at the path (a
        // file, a directory, a link) is someone's data, and a live socket a running phone's.
        if let Ok(found) = std::fs::symlink_metadata(path) {
            if !found.file_type().is_socket() {
                return Err(Error::ControlNotSocket(path.to_owned()));
            }
            if StdUnixStream::connect(path).is_ok() {
                return Err(Error::ControlInUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|e| control_error("remove the stale socket", e))?;
        }
        let mut listener = UnixListener::bind(path).map_err(|e| control_error("create it", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| control_error("set its permissions", e))?;
        registry
            .register(&mut listener, listener_token, Interest::READABLE)
            .map_err(|e| control_error("watch it", e))?;
        let mut connections = Vec::with_capacity(MAX_CONNECTIONS);
        connections.resize_with(MAX_CONNECTIONS, || None);
        Ok(Control {
            path: path.to_owned(),
            listener,
            first,
            connections,
            accepted: 0,
        })
    }

    /// The connection of `token`, if it is one of ours and open.
    pub fn id_of(&self, token: Token) -> Option<ConnectionId> {
        let index = token.0.checked_sub(self.first)?;
        let conn = self.connections.get(index)?.as_ref()?;
        Some(ConnectionId {
            index,
            serial: conn.serial,
        })
    }

    /// Connection `id`, if it is still open (its slot not taken over by another).
    fn connection(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections
            .get_mut(id.index)?
            .as_mut()
            .filter(|conn| conn.serial == id.serial)
    }

    /// Accepts every waiting connection.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(index) = self.connections.iter().position(Option::is_none) else {
                        log::warn!(
                            "control socket: {MAX_CONNECTIONS} connections already; one refused"
                        );
                        continue;
                    };
                    let token = Token(self.first + index);
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        log::warn!("control socket: cannot watch a connection: {e}");
                        continue;
                    }
                    self.accepted += 1;
                    self.connections[index] = Some(Connection {
                        serial: self.accepted,
                        stream,
                        lines: Lines::default(),
                        outbox: Vec::new(),
                        unanswered: 0,
                        paused: false,
                        read_closed: false,
                        writable_interest: false,
                        watching: false,
                        format: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what connection `id` sent and returns its complete lines (commands), at
    /// most a batch at a time: call again while [`Control::wants_to_read`] says so. Lines
    /// that are not commands (invalid UTF-8, too long) come as `Err`, to be answered with
    /// an error.
    pub fn read(&mut self, registry: &Registry, id: ConnectionId) -> Vec<Line> {
        let mut lines = Vec::new();
        let Some(conn) = self.connection(id) else {
            return lines;
        };
        let mut buf = [0u8; 1024];
        let mut broken = false;
        conn.paused = false;
        loop {
            if lines.len() >= BATCH || conn.outbox.len() > PAUSE_ABOVE {
                conn.paused = true;
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.read_closed = true;
                    conn.lines.finish(&mut lines);
                    broken = conn.watching && conn.hung_up();
                    break;
                }
                Ok(n) => conn.lines.push(&buf[..n], &mut lines),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        conn.unanswered += lines.iter().filter(|l| is_answered(l)).count();
        if broken {
            self.drop_connection(registry, id.index);
        } else {
            self.settle(registry, id.index);
        }
        lines
    }

    /// Whether connection `id` has commands waiting to be read now (its reading was
    /// paused and its answers have gone out).
    pub fn wants_to_read(&mut self, id: ConnectionId) -> bool {
        self.connection(id).is_some_and(|conn| {
            conn.paused && !conn.read_closed && conn.outbox.len() <= PAUSE_ABOVE
        })
    }

    /// Sets connection `id` up: it starts watching, or takes `format` for its lines.
    pub fn configure(
        &mut self,
        registry: &Registry,
        id: ConnectionId,
        watch: bool,
        format: Option<Format>,
    ) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        conn.watching |= watch;
        conn.format = format.or(conn.format);
        // `echo watch | socat ...`: the peer may have closed its side already.
        if conn.watching && conn.read_closed && conn.hung_up() {
            self.drop_connection(registry, id.index);
        }
    }

    /// Sends `event` to the connection it answers (`answer`), if that is still open, and
    /// when it is `news` to every watching connection; each gets it once, in its format
    /// (`phone`'s if it chose none), and as much as can be written now.
    pub fn deliver(
        &mut self,
        registry: &Registry,
        event: &Event,
        answer: Option<ConnectionId>,
        news: bool,
        phone: Format,
    ) {
        let mut text = None;
        let mut json = None;
        for index in 0..self.connections.len() {
            let Some(conn) = self.connections[index].as_mut() else {
                continue;
            };
            let answers = answer.is_some_and(|a| a.index == index && a.serial == conn.serial);
            let watched = news && conn.watching;
            if !answers && !watched {
                continue;
            }
            let line = match conn.format.unwrap_or(phone) {
                Format::Text => text.get_or_insert_with(|| event.line(false)),
                Format::Json => json.get_or_insert_with(|| event.line(true)),
            };
            conn.outbox.extend_from_slice(line.as_bytes());
            if answers {
                conn.unanswered = conn.unanswered.saturating_sub(1);
            }
            self.flush_slot(registry, index);
        }
    }

    /// Writes queued lines of connection `id`.
    pub fn flush(&mut self, registry: &Registry, id: ConnectionId) {
        if self.connection(id).is_some() {
            self.flush_slot(registry, id.index);
        }
    }

    fn flush_slot(&mut self, registry: &Registry, index: usize) {
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return;
        };
        let mut broken = false;
        while !conn.outbox.is_empty() {
            match conn.stream.write(&conn.outbox) {
                Ok(0) => {
                    broken = true;
                    break;
                }
                Ok(n) => {
                    conn.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if conn.outbox.len() > OUTBOX_LIMIT {
            let what = if conn.watching { "watching" } else { "control" };
            log::warn!(
                "control socket: a {what} connection left more than {} KiB unread; it is \
                 closed so that it cannot hold the phone up",
                OUTBOX_LIMIT / 1024
            );
        }
        if broken || conn.outbox.len() > OUTBOX_LIMIT {
            self.drop_connection(registry, index);
        } else {
            self.settle(registry, index);
        }
    }

    /// Closes a connection whose peer has finished sending once every command it sent is
    /// answered and the answers are out; keeps the interest in writability matching the
    /// unsent answers.
    fn settle(&mut self, registry: &Registry, index: usize) {
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return;
        };
        if conn.read_closed && conn.outbox.is_empty() && conn.unanswered == 0 && !conn.watching {
            return self.drop_connection(registry, index);
        }
        let want = !conn.outbox.is_empty();
        if want != conn.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(self.first + index);
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_ok()
            {
                conn.writable_interest = want;
            }
        }
    }

    fn drop_connection(&mut self, registry: &Registry, index: usize) {
        if let Some(Some(mut conn)) = self.connections.get_mut(index).map(Option::take) {
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Closes a connection once its answers are out (after `quit`).
    pub fn finish(&mut self, registry: &Registry, id: ConnectionId) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        conn.read_closed = true;
        conn.unanswered = 0;
        self.settle(registry, id.index);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long `ctl` waits for an answer (a `list` may wait for the directory server).
const CTL_TIMEOUT: Duration = Duration::from_secs(15);

/// `parlo-client ctl`: sends the command (or each line of stdin) to the phone and prints
/// the answers; `call` follows its call to the outcome unless told not to wait, `watch`
/// prints events until the phone stops. See `ctl --help`.
pub fn ctl(request: &Ctl) -> Result<Exit, Error> {
    let mut session = Session::open(&request.control)?;
    let Some(command) = request.command.as_deref() else {
        return session.stdin_lines(request.format);
    };
    let words: Vec<&str> = command.split_whitespace().collect();
    let verb = words.first().map(|w| w.to_ascii_lowercase());
    match (verb.as_deref(), &words[..], request.wait) {
        (Some("watch"), [_], _) => session.watch(request.format),
        (Some("watch"), _, _) => session.watch_as_asked(command),
        (Some("call"), [_, name], Some(wait)) => session.call(name, request.format, wait),
        (Some("msg" | "message"), [_, _, _, ..], Some(wait)) => {
            session.msg(command, request.format, wait)
        }
        _ => session.one(command, request.format),
    }
}

/// What a read from the phone gave.
#[derive(Debug)]
enum Heard {
    /// A line, without its newline.
    Line(String),
    /// The phone closed the connection.
    End,
    /// Nothing within the time allowed.
    TimedOut,
}

/// One `ctl` connection to the phone.
struct Session {
    path: PathBuf,
    writer: StdUnixStream,
    reader: BufReader<StdUnixStream>,
}

impl Session {
    fn open(path: &Path) -> Result<Session, Error> {
        let control_error = |doing, source| Error::Control {
            path: path.to_owned(),
            doing,
            source,
        };
        let stream = StdUnixStream::connect(path).map_err(|e| control_error("connect to it", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| control_error("configure", e))?;
        Ok(Session {
            path: path.to_owned(),
            writer,
            reader: BufReader::new(stream),
        })
    }

    fn error(&self, doing: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Control {
            path: self.path.clone(),
            doing,
            source,
        }
    }

    /// Sends `lines` (each ending in a newline) in one write, so that the phone reads
    /// them together and nothing happens between them.
    fn send(&mut self, lines: &str) -> Result<(), Error> {
        self.writer
            .write_all(lines.as_bytes())
            .map_err(|e| Error::Control {
                path: self.path.clone(),
                doing: "send a command through it",
                source: e,
            })
    }

    /// The next line, waiting at most `patience` (`None`: as long as it takes).
    fn read(&mut self, patience: Option<Duration>) -> Result<Heard, Error> {
        // A zero timeout would mean none: the least is a millisecond.
        let patience = patience.map(|p| p.max(Duration::from_millis(1)));
        self.reader
            .get_ref()
            .set_read_timeout(patience)
            .map_err(self.error("configure"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(Heard::End),
            Ok(_) => Ok(Heard::Line(line.trim_end_matches(['\n', '\r']).to_owned())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Heard::TimedOut)
            }
            Err(e) => Err(self.error("read an answer from it")(e)),
        }
    }

    /// The answer to a command just sent: a line, or an error when the phone is gone or
    /// silent.
    fn answer(&mut self) -> Result<Option<String>, Error> {
        match self.read(Some(CTL_TIMEOUT))? {
            Heard::Line(line) => Ok(Some(line)),
            Heard::End => Ok(None),
            Heard::TimedOut => Err(self.error("read an answer from it")(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", CTL_TIMEOUT.as_secs()),
            ))),
        }
    }

    /// Sets the connection's format, if one was chosen. Its answer (a `status`) is not
    /// printed; `false` if it was an error (printed then).
    fn choose(&mut self, format: Option<Format>) -> Result<bool, Error> {
        let Some(format) = format else {
            return Ok(true);
        };
        self.send(&format!("format {}\n", format.name()))?;
        match self.answer()? {
            Some(line) if is_error_line(&line) => {
                print(&line)?;
                Ok(false)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// One command, one answer.
    fn one(&mut self, command: &str, format: Option<Format>) -> Result<Exit, Error> {
        if !self.choose(format)? {
            return Ok(Exit::Warning);
        }
        self.send(&format!("{}\n", command.trim_end()))?;
        match self.answer()? {
            Some(line) => {
                print(&line)?;
                Ok(if is_error_line(&line) {
                    Exit::Warning
                } else {
                    Exit::Done
                })
            }
            None => Ok(Exit::Done),
        }
    }

    /// Each line of stdin, one answer each.
    fn stdin_lines(&mut self, format: Option<Format>) -> Result<Exit, Error> {
        let mut exit = Exit::Done;
        if !self.choose(format)? {
            exit = Exit::Warning;
        }
        for line in io::stdin().lock().lines() {
            let line = line.map_err(Error::Output)?;
            if line.trim().is_empty() {
                continue;
            }
            let verb = line.split_whitespace().next().unwrap_or_default();
            if verb.eq_ignore_ascii_case("watch") {
                // Its events would be taken for the answers to the lines that follow.
                eprintln!(
                    "parlo-client ctl: watch gives no single answer: run `parlo-client ctl \
                     watch` on its own"
                );
                exit = Exit::Warning;
                continue;
            }
            self.send(&format!("{}\n", line.trim_end()))?;
            let Some(answer) = self.answer()? else {
                break;
            };
            if is_error_line(&answer) {
                exit = Exit::Warning;
            }
            print(&answer)?;
        }
        Ok(exit)
    }

    /// `watch`: every line until the phone closes the connection.
    fn watch(&mut self, format: Option<Format>) -> Result<Exit, Error> {
        let command = match format {
            Some(format) => format!("watch {}", format.name()),
            None => "watch".to_owned(),
        };
        self.watch_as_asked(&command)
    }

    fn watch_as_asked(&mut self, command: &str) -> Result<Exit, Error> {
        self.send(&format!("{}\n", command.trim_end()))?;
        let mut first = true;
        let mut last_was_bye = false;
        // Without a time limit: the end is the phone closing the connection, or the
        // reader of ctl's output going away (`ctl watch | while read ...; break; done`
        // must not leave ctl waiting for an event that may be hours away).
        loop {
            if self.reader.buffer().is_empty() && !self.wait_for_line_or_reader_gone() {
                return Ok(Exit::Done);
            }
            let Heard::Line(line) = self.read(None)? else {
                break;
            };
            match print(&line) {
                Ok(()) => {}
                // The reader went away (`ctl watch | head`): nothing left to do.
                Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Ok(Exit::Done);
                }
                Err(e) => return Err(e),
            }
            if first && is_error_line(&line) {
                // Refused (a bad format, a phone stopping): no watching.
                return Ok(Exit::Warning);
            }
            first = false;
            last_was_bye = is_kind(&line, "bye");
        }
        if last_was_bye {
            return Ok(Exit::Done);
        }
        eprintln!(
            "parlo-client ctl: {}: the phone closed the connection",
            self.path.display()
        );
        Ok(Exit::Warning)
    }

    /// Waits until the phone sends something (or closes), and says so; `false` when
    /// stdout's reader is gone first (a closed pipe, a hung-up terminal).
    fn wait_for_line_or_reader_gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fds = [
            libc::pollfd {
                fd: self.reader.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // No events asked: POLLERR (the pipe's reader closed it) and POLLHUP come
            // anyway; a regular file reports neither.
            libc::pollfd {
                fd: libc::STDOUT_FILENO,
                events: 0,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Poll unusable: let the read find out.
                return true;
            }
            if fds[1].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return false;
            }
            if fds[0].revents != 0 {
                return true;
            }
        }
    }

    /// `call NAME`, followed to its outcome: watching from just before the call, on the
    /// same connection, so that none of the call's events can be missed.
    fn call(&mut self, name: &str, format: Option<Format>, wait: Duration) -> Result<Exit, Error> {
        let deadline = std::time::Instant::now() + wait;
        let watch = match format {
            Some(format) => format!("watch {}", format.name()),
            None => "watch".to_owned(),
        };
        self.send(&format!("{watch}\ncall {name}\n"))?;
        // The answer to `watch`: the status the watching starts from, or a refusal.
        match self.answer()? {
            Some(line) if is_error_line(&line) => {
                print(&line)?;
                return Ok(Exit::Warning);
            }
            Some(_) => {}
            None => return Ok(self.closed_before(name)),
        }
        let mut follow = Follow::new(name);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match self.read(Some(left))? {
                Heard::Line(line) => line,
                Heard::End => return Ok(self.closed_before(name)),
                Heard::TimedOut => {
                    eprintln!(
                        "parlo-client ctl: no outcome of the call to {} within {} s; the \
                         call goes on (`ctl status` shows it, `ctl hangup` ends it)",
                        parlo_fsm::Escaped::text(name),
                        wait.as_secs()
                    );
                    return Ok(Exit::Warning);
                }
            };
            match follow.step(&line) {
                Step::Skip => {}
                Step::Show => print(&line)?,
                Step::Outcome(exit) => {
                    print(&line)?;
                    return Ok(exit);
                }
            }
        }
    }

    /// `msg NAME TEXT`, followed from `sending ID` to `delivered ID` or `undelivered ID`.
    fn msg(
        &mut self,
        command: &str,
        format: Option<Format>,
        wait: Duration,
    ) -> Result<Exit, Error> {
        let deadline = std::time::Instant::now() + wait;
        let watch = match format {
            Some(format) => format!("watch {}", format.name()),
            None => "watch".to_owned(),
        };
        self.send(&format!("{watch}\n{}\n", command.trim_end()))?;
        match self.answer()? {
            Some(line) if is_error_line(&line) => {
                print(&line)?;
                return Ok(Exit::Warning);
            }
            Some(_) => {}
            None => return Ok(Exit::Warning),
        }
        let mut id: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match self.read(Some(left))? {
                Heard::Line(line) => line,
                Heard::End => return Ok(Exit::Warning),
                Heard::TimedOut => {
                    eprintln!(
                        "parlo-client ctl: no outcome of the message within {} s",
                        wait.as_secs()
                    );
                    return Ok(Exit::Warning);
                }
            };
            let Some(ours) = &id else {
                // Our command's answer comes first: `sending ID`, or its refusal.
                if let Some(sent) = message_id_of(&line, "sending") {
                    print(&line)?;
                    id = Some(sent);
                } else if is_error_line(&line) {
                    print(&line)?;
                    return Ok(Exit::Warning);
                }
                continue;
            };
            if message_id_of(&line, "delivered").as_ref() == Some(ours) {
                print(&line)?;
                return Ok(Exit::Done);
            }
            if message_id_of(&line, "undelivered").as_ref() == Some(ours) || is_kind(&line, "bye") {
                print(&line)?;
                return Ok(Exit::Warning);
            }
        }
    }

    fn closed_before(&self, name: &str) -> Exit {
        eprintln!(
            "parlo-client ctl: {}: the phone closed the connection before the outcome of the \
             call to {}",
            self.path.display(),
            parlo_fsm::Escaped::text(name)
        );
        Exit::Warning
    }
}

/// Prints a line from the phone. The phone escapes its lines; whatever else answers on
/// that socket is escaped here.
fn print(line: &str) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", parlo_fsm::Escaped::text(line))
        .and_then(|()| stdout.flush())
        .map_err(Error::Output)
}

/// What `ctl call` makes of a line it watches.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not about the call.
    Skip,
    /// About the call: printed.
    Show,
    /// The call's outcome: printed, and the exit code.
    Outcome(Exit),
}

/// `ctl call`'s view of its call, from the lines of a connection that watches from just
/// before the `call` command. The command's answer comes first among the lines about the
/// call: `calling NAME`, or the `error` that refused it. Then the call's events, up to
/// `connected NAME` (exit 0) or `ended NAME` (exit 1).
#[derive(Debug)]
struct Follow {
    peer: String,
    begun: bool,
}

impl Follow {
    fn new(peer: &str) -> Follow {
        Follow {
            peer: peer.to_owned(),
            begun: false,
        }
    }

    fn step(&mut self, line: &str) -> Step {
        let about = |kind| is_about(line, kind, &self.peer);
        if is_kind(line, "bye") {
            // The phone stops (after `ended`, if the call had begun).
            return Step::Outcome(Exit::Warning);
        }
        if !self.begun {
            if about("calling") {
                self.begun = true;
                return Step::Show;
            }
            // Watchers get no refusal of another client's command: an error now is the
            // refusal of ours, or a failure that refuses it.
            if is_error_line(line) {
                return Step::Outcome(Exit::Warning);
            }
            return Step::Skip;
        }
        if about("connected") {
            Step::Outcome(Exit::Done)
        } else if about("ended") {
            Step::Outcome(Exit::Warning)
        } else if about("ringing") || is_error_line(line) {
            Step::Show
        } else {
            Step::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    fn socket_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("parlo-control-{}-{tag}.sock", std::process::id()))
    }

    /// Polls until `token` is ready (or fails after 5 s instead of hanging).
    fn wait_for(poll: &mut Poll, token: Token) {
        let mut events = Events::with_capacity(8);
        let limit = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            assert!(
                std::time::Instant::now() < limit,
                "{token:?} never became ready"
            );
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            if events.iter().any(|e| e.token() == token) {
                return;
            }
        }
    }

    #[test]
    fn lines_in_answers_out() {
        let path = socket_path("lines");
        let mut poll = Poll::new().expect("poll");
        let mut control = Control::bind(&path, poll.registry(), Token(5), 16).expect("bind");
        let mut client = StdUnixStream::connect(&path).expect("connect");
        wait_for(&mut poll, Token(5));
        control.accept(poll.registry());
        let id = control.id_of(Token(16)).expect("the first connection");
        assert_eq!(control.id_of(Token(17)), None, "no second connection");
        client.write_all(b"status\ncall bob\r\nhal").expect("write");
        wait_for(&mut poll, Token(16));
        let lines = control.read(poll.registry(), id);
        assert_eq!(lines, [Ok("status".to_owned()), Ok("call bob".to_owned())]);
        client.write_all(b"f\n").expect("write");
        wait_for(&mut poll, Token(16));
        assert_eq!(control.read(poll.registry(), id), [Ok("half".to_owned())]);

        control.deliver(poll.registry(), &Event::Bye, Some(id), false, Format::Text);
        let mut answer = String::new();
        BufReader::new(&client)
            .read_line(&mut answer)
            .expect("answer");
        assert_eq!(answer, "bye\n");

        // A line that never ends is refused once, the rest of it up to its newline is
        // skipped (it is no command), and the connection goes on.
        client.write_all(&[b'x'; 3000]).expect("write");
        let mut got = Vec::new();
        while got.is_empty() {
            wait_for(&mut poll, Token(16));
            got.extend(control.read(poll.registry(), id));
        }
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("longer than")),
            "{got:?}"
        );
        client
            .write_all(
                b"x
help
",
            )
            .expect("write");
        wait_for(&mut poll, Token(16));
        assert_eq!(control.read(poll.registry(), id), [Ok("help".to_owned())]);
        drop(control);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    /// A control socket with `n` connections accepted, their ids and client ends.
    fn with_clients(tag: &str, n: usize) -> (Poll, Control, Vec<ConnectionId>, Vec<StdUnixStream>) {
        let path = socket_path(tag);
        let mut poll = Poll::new().expect("poll");
        let mut control = Control::bind(&path, poll.registry(), Token(5), 16).expect("bind");
        let clients: Vec<StdUnixStream> = (0..n)
            .map(|_| StdUnixStream::connect(&path).expect("connect"))
            .collect();
        wait_for(&mut poll, Token(5));
        control.accept(poll.registry());
        let ids = (0..n)
            .map(|i| control.id_of(Token(16 + i)).expect("accepted"))
            .collect();
        for client in &clients {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        (poll, control, ids, clients)
    }

    fn calling() -> Event {
        Event::Calling { peer: "bob".into() }
    }

    /// Everything `client` can read within 100 ms.
    fn drain(client: &mut StdUnixStream) -> String {
        client
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn watchers_get_news_each_in_its_own_format_and_answers_go_to_their_origin_only() {
        let (poll, mut control, ids, mut clients) = with_clients("watch", 3);
        let r = poll.registry();
        control.configure(r, ids[0], true, None);
        control.configure(r, ids[1], true, Some(Format::Json));
        // Connection 2 does not watch: it gets only its answers.
        control.deliver(r, &calling(), None, true, Format::Text);
        control.deliver(r, &Event::Help, Some(ids[2]), false, Format::Text);
        // An answer to a watcher is sent to it once; news that answers 2 reaches all.
        control.deliver(r, &Event::Bye, Some(ids[0]), true, Format::Text);
        control.deliver(r, &Event::Help, Some(ids[0]), false, Format::Text);
        assert_eq!(
            drain(&mut clients[0]),
            format!("calling bob\nbye\n{}", Event::Help.line(false))
        );
        assert_eq!(
            drain(&mut clients[1]),
            "{\"event\":\"calling\",\"peer\":\"bob\"}\n{\"event\":\"bye\"}\n"
        );
        assert_eq!(drain(&mut clients[2]), Event::Help.line(false));
        // `format` alone changes the form, not what is received.
        control.configure(r, ids[2], false, Some(Format::Json));
        control.deliver(r, &calling(), None, true, Format::Text);
        assert_eq!(drain(&mut clients[2]), "");
        control.deliver(r, &Event::Bye, Some(ids[2]), true, Format::Text);
        assert_eq!(drain(&mut clients[2]), "{\"event\":\"bye\"}\n");
    }

    #[test]
    fn a_watcher_that_half_closes_keeps_watching_and_one_that_hangs_up_is_dropped() {
        let (mut poll, mut control, ids, mut clients) = with_clients("half", 2);
        for (id, client) in ids.iter().zip(&mut clients) {
            client.write_all(b"watch\n").expect("write");
            wait_for(&mut poll, Token(16 + id.index));
            assert_eq!(control.read(poll.registry(), *id), [Ok("watch".to_owned())]);
            control.configure(poll.registry(), *id, true, None);
            control.deliver(
                poll.registry(),
                &Event::Help,
                Some(*id),
                false,
                Format::Text,
            );
        }
        clients[0]
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        wait_for(&mut poll, Token(16));
        assert!(control.read(poll.registry(), ids[0]).is_empty());
        control.deliver(poll.registry(), &calling(), None, true, Format::Text);
        assert!(drain(&mut clients[0]).ends_with("calling bob\n"));
        assert!(control.id_of(Token(16)).is_some(), "still watching");
        // Gone for good: dropped as soon as that is seen, not at the next event.
        let gone = clients.remove(1);
        drop(gone);
        wait_for(&mut poll, Token(17));
        assert!(control.read(poll.registry(), ids[1]).is_empty());
        assert_eq!(control.id_of(Token(17)), None, "dropped");
    }

    #[test]
    fn a_watcher_that_does_not_read_is_dropped_and_holds_nothing_up() {
        let (poll, mut control, ids, _clients) = with_clients("unread", 2);
        control.configure(poll.registry(), ids[0], true, None);
        let mut sent = 0;
        // Far more than the socket's buffer and the outbox hold: never blocks.
        while control.id_of(Token(16)).is_some() {
            control.deliver(poll.registry(), &calling(), None, true, Format::Text);
            sent += 1;
            assert!(sent < 1_000_000, "the unread watcher was never dropped");
        }
        assert!(
            control.id_of(Token(17)).is_some(),
            "the other connection stays"
        );
    }

    // ---- ctl call ----

    fn follow(lines: &[&str]) -> Vec<Step> {
        let mut follow = Follow::new("bob");
        lines.iter().map(|line| follow.step(line)).collect()
    }

    #[test]
    fn ctl_call_follows_its_call_to_the_outcome() {
        use Step::{Outcome, Show, Skip};
        assert_eq!(
            follow(&[
                "ended bob reason=busy",
                "incoming carol from=127.0.0.3:5001 verified=plaintext address=yes",
                "calling bob",
                "registered alice server=127.0.0.1:10000",
                "ringing bob",
                "connected bob dialect=parlo codec=L16 verified=plaintext",
            ]),
            [Skip, Skip, Show, Skip, Show, Outcome(Exit::Done)]
        );
        assert_eq!(
            follow(&["calling bob", "ended bob reason=unknown-user"]),
            [Show, Outcome(Exit::Warning)]
        );
        assert_eq!(
            follow(&["error reason=already in a call: hang up first"]),
            [Outcome(Exit::Warning)]
        );
        assert_eq!(
            follow(&[
                "calling bob",
                "error reason=cannot look bob up: the server went away",
                "ended bob reason=lookup-failed"
            ]),
            [Show, Show, Outcome(Exit::Warning)]
        );
        assert_eq!(
            follow(&["calling bob", "bye"]),
            [Show, Outcome(Exit::Warning)]
        );
        // JSON lines, as `--json` gives them.
        assert_eq!(
            follow(&[
                r#"{"event":"calling","peer":"bob"}"#,
                r#"{"event":"connected","peer":"bob","dialect":"parlo","codec":"L16"}"#,
            ]),
            [Show, Outcome(Exit::Done)]
        );
        assert_eq!(
            follow(&[r#"{"event":"calling","peer":"bobby"}"#]),
            [Skip],
            "another peer"
        );
    }

    #[test]
    fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
        let path = socket_path("stale");
        let poll = Poll::new().expect("poll");
        let first = Control::bind(&path, poll.registry(), Token(5), 16).expect("bind");
        assert!(matches!(
            Control::bind(&path, poll.registry(), Token(6), 32),
            Err(Error::ControlInUse(_))
        ));
        drop(first);
        // A socket file left behind by a crash: nobody answers on it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        assert!(path.exists());
        let again = Control::bind(&path, poll.registry(), Token(5), 16).expect("rebind");
        drop(again);
    }
}
