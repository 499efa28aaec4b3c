//! The control socket: commands from other programs (`parlo-client ctl`, scripts,
//! systemd units) over a Unix stream socket, one per line, each answered with one line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::command::MAX_COMMAND_LEN;
use crate::error::{Error, Exit};
use crate::output::is_error_line;

/// Most control connections held at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Answer bytes a connection may leave unread before it is dropped.
const OUTBOX_LIMIT: usize = 64 * 1024;

/// One control connection.
#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
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
        if path.exists() {
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
        })
    }

    /// The connection index of `token`, if it is one of ours.
    pub fn index_of(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.first)
            .filter(|&i| i < MAX_CONNECTIONS)
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
                    self.connections[index] = Some(Connection {
                        stream,
                        inbox: Vec::with_capacity(256),
                        outbox: Vec::new(),
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

    /// Reads what connection `index` sent and returns its complete lines (commands); an
    /// over-long line is returned as `Err` (to be answered with an error).
    pub fn read(&mut self, registry: &Registry, index: usize) -> Vec<Result<String, String>> {
        let mut lines = Vec::new();
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return lines;
        };
        let mut buf = [0u8; 1024];
        let mut broken = false;
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.read_closed = true;
                    break;
                }
                Ok(n) => conn.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
            if conn.inbox.len() > 4 * MAX_COMMAND_LEN {
                break;
            }
        }
        while let Some(end) = conn.inbox.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.inbox.drain(..=end).collect();
            lines.push(match String::from_utf8(line) {
                Ok(line) => Ok(line.trim_end_matches(['\n', '\r']).to_owned()),
                Err(_) => Err("command is not valid UTF-8".to_owned()),
            });
        }
        if conn.inbox.len() > MAX_COMMAND_LEN {
            conn.inbox.clear();
            lines.push(Err(format!("command longer than {MAX_COMMAND_LEN} bytes")));
        }
        if conn.read_closed && !conn.inbox.is_empty() {
            // A last command without its newline.
            let line = String::from_utf8_lossy(&conn.inbox).trim_end().to_owned();
            conn.inbox.clear();
            lines.push(Ok(line));
        }
        if broken {
            self.drop_connection(registry, index);
        } else {
            self.settle(registry, index);
        }
        lines
    }

    /// Queues `line` (newline included) for connection `index` and writes what it can.
    pub fn send(&mut self, registry: &Registry, index: usize, line: &str) {
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return;
        };
        conn.outbox.extend_from_slice(line.as_bytes());
        self.flush(registry, index);
    }

    /// Writes queued answers of connection `index`.
    pub fn flush(&mut self, registry: &Registry, index: usize) {
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
        if broken || conn.outbox.len() > OUTBOX_LIMIT {
            self.drop_connection(registry, index);
        } else {
            self.settle(registry, index);
        }
    }

    /// Closes a connection whose peer is gone and whose answers are all out; keeps the
    /// interest in writability matching the unsent answers.
    fn settle(&mut self, registry: &Registry, index: usize) {
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return;
        };
        if conn.read_closed && conn.outbox.is_empty() {
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
    pub fn finish(&mut self, registry: &Registry, index: usize) {
        if let Some(Some(conn)) = self.connections.get_mut(index) {
            conn.read_closed = true;
        }
        self.settle(registry, index);
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
        println!("{answer}");
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
        client.write_all(b"status\ncall bob\r\nhal").expect("write");
        wait_for(&mut poll, Token(16));
        let lines = control.read(poll.registry(), 0);
        assert_eq!(lines, [Ok("status".to_owned()), Ok("call bob".to_owned())]);
        client.write_all(b"f\n").expect("write");
        wait_for(&mut poll, Token(16));
        assert_eq!(control.read(poll.registry(), 0), [Ok("half".to_owned())]);

        control.send(poll.registry(), 0, "status state=idle\n");
        let mut answer = String::new();
        BufReader::new(&client)
            .read_line(&mut answer)
            .expect("answer");
        assert_eq!(answer, "status state=idle\n");

        // A line that never ends is refused once (a complete over-long line is left to
        // the command parser, which refuses it too), and the connection goes on.
        client.write_all(&[b'x'; 3000]).expect("write");
        let mut got = Vec::new();
        while got.is_empty() {
            wait_for(&mut poll, Token(16));
            got.extend(control.read(poll.registry(), 0));
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
        assert_eq!(
            control.read(poll.registry(), 0),
            [Ok("x".to_owned()), Ok("help".to_owned())]
        );
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
