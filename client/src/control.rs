//! The control socket: commands from other programs (`parlo-client ctl`, scripts,
//! systemd units) over a Unix stream socket, one per line, each answered with one line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::command::{Line, Lines, is_answered};
use crate::error::{Error, Exit};
use crate::output::is_error_line;

/// Most control connections held at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Answer bytes a connection may leave unread before it is dropped.
const OUTBOX_LIMIT: usize = 64 * 1024;
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

    /// Queues `line` (newline included) for connection `id` and writes what it can.
    /// Nothing if that connection has closed.
    pub fn send(&mut self, registry: &Registry, id: ConnectionId, line: &str) {
        let Some(conn) = self.connection(id) else {
            return;
        };
        conn.outbox.extend_from_slice(line.as_bytes());
        conn.unanswered = conn.unanswered.saturating_sub(1);
        self.flush(registry, id);
    }

    /// Writes queued answers of connection `id`.
    pub fn flush(&mut self, registry: &Registry, id: ConnectionId) {
        let index = id.index;
        let Some(conn) = self.connection(id) else {
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
        if conn.read_closed && conn.outbox.is_empty() && conn.unanswered == 0 {
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

/// `parlo-client ctl`: sends `command` (or each line of stdin) to the phone at `path` and
/// prints each answer.
pub fn ctl(path: &Path, command: Option<&str>) -> Result<Exit, Error> {
    let control_error = |doing, source| Error::Control {
        path: path.to_owned(),
        doing,
        source,
    };
    let stream = StdUnixStream::connect(path).map_err(|e| control_error("connect to it", e))?;
    stream
        .set_read_timeout(Some(CTL_TIMEOUT))
        .map_err(|e| control_error("configure", e))?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| control_error("configure", e))?;
    let mut reader = BufReader::new(stream);
    let mut exit = Exit::Done;
    let mut ask = |line: &str| -> Result<bool, Error> {
        if line.trim().is_empty() {
            return Ok(true);
        }
        writer
            .write_all(format!("{}\n", line.trim_end()).as_bytes())
            .map_err(|e| control_error("send a command through it", e))?;
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .map_err(|e| control_error("read an answer from it", e))?;
        if n == 0 {
            return Ok(false);
        }
        let answer = answer.trim_end_matches(['\n', '\r']);
        if is_error_line(answer) {
            exit = Exit::Warning;
        }
        // The phone escapes its answers; whatever else answers on that socket is escaped
        // here.
        println!("{}", parlo_fsm::Escaped::text(answer));
        Ok(true)
    };
    match command {
        Some(command) => {
            ask(command)?;
        }
        None => {
            for line in io::stdin().lock().lines() {
                let line = line.map_err(Error::Output)?;
                if !ask(&line)? {
                    break;
                }
            }
        }
    }
    Ok(exit)
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

        control.send(poll.registry(), id, "status state=idle\n");
        let mut answer = String::new();
        BufReader::new(&client)
            .read_line(&mut answer)
            .expect("answer");
        assert_eq!(answer, "status state=idle\n");

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
