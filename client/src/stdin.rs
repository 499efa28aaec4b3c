//! Commands from stdin: registered with the loop when stdin can be polled (a terminal, a
//! pipe, a socket), else read by a blocking thread that hands lines over and wakes the
//! loop (`/dev/null` and regular files, which epoll refuses).

use std::io::{self, Read};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};

use crate::command::{Line, Lines};

const STDIN_FD: RawFd = 0;

/// What stdin gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One line, without its terminator (or why it is not a command).
    Line(Line),
    /// The end of stdin.
    End,
}

/// The phone's stdin.
#[derive(Debug)]
pub enum Stdin {
    /// Registered with the loop; made non-blocking (its flags are restored at the end).
    Polled {
        /// Cuts what is read into lines.
        lines: Lines,
        /// The file status flags before we set `O_NONBLOCK`.
        saved_flags: libc::c_int,
    },
    /// Read by a thread.
    Thread {
        /// What the thread read; `None` is the end.
        chunks: Receiver<Option<Vec<u8>>>,
        /// Cuts it into lines.
        lines: Lines,
    },
    /// Ended.
    Closed,
}

impl Stdin {
    /// Sets stdin up; `waker` wakes the loop when the thread has a line.
    pub fn open(registry: &Registry, token: Token, waker: Arc<Waker>) -> Stdin {
        // SAFETY: F_GETFL on fd 0 only reads its flags; an invalid fd returns -1.
        let flags = unsafe { libc::fcntl(STDIN_FD, libc::F_GETFL) };
        if flags >= 0
            && registry
                .register(&mut SourceFd(&STDIN_FD), token, Interest::READABLE)
                .is_ok()
        {
            // SAFETY: F_SETFL on fd 0 with its own flags plus O_NONBLOCK.
            let set = unsafe { libc::fcntl(STDIN_FD, libc::F_SETFL, flags | libc::O_NONBLOCK) };
            if set >= 0 {
                log::debug!("stdin is polled");
                return Stdin::Polled {
                    lines: Lines::default(),
                    saved_flags: flags,
                };
            }
            let _ = registry.deregister(&mut SourceFd(&STDIN_FD));
        }
        log::debug!("stdin cannot be polled: reading it on a thread");
        let (sender, chunks) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("parlo-stdin".into())
            .spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    let message = match io::stdin().lock().read(&mut buf) {
                        Ok(0) => None,
                        Ok(n) => Some(buf[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => None,
                    };
                    let end = message.is_none();
                    if sender.send(message).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                    if end {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => Stdin::Thread {
                chunks,
                lines: Lines::default(),
            },
            Err(e) => {
                log::warn!("cannot start the stdin reader: {e}; stdin is ignored");
                Stdin::Closed
            }
        }
    }

    /// Whether stdin is registered with the loop (a terminal, a pipe or a socket).
    pub fn is_polled(&self) -> bool {
        matches!(self, Stdin::Polled { .. })
    }

    /// Takes what stdin has now: call on its readiness (polled) or on a wake (thread).
    pub fn read(&mut self, registry: &Registry) -> Vec<Input> {
        let mut inputs = Vec::new();
        match self {
            Stdin::Polled { lines, .. } => {
                let mut buf = [0u8; 1024];
                let mut ended = false;
                let mut cut = Vec::new();
                loop {
                    match io::stdin().lock().read(&mut buf) {
                        Ok(0) => {
                            ended = true;
                            break;
                        }
                        Ok(n) => lines.push(&buf[..n], &mut cut),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::warn!("stdin: {e}; no longer read");
                            ended = true;
                            break;
                        }
                    }
                }
                if ended {
                    lines.finish(&mut cut);
                }
                inputs.extend(cut.into_iter().map(Input::Line));
                if ended {
                    inputs.push(Input::End);
                    self.close(registry);
                }
            }
            Stdin::Thread { chunks, lines } => {
                let mut cut = Vec::new();
                let ended = loop {
                    match chunks.try_recv() {
                        Ok(Some(chunk)) => lines.push(&chunk, &mut cut),
                        Ok(None) | Err(TryRecvError::Disconnected) => {
                            lines.finish(&mut cut);
                            break true;
                        }
                        Err(TryRecvError::Empty) => break false,
                    }
                };
                inputs.extend(cut.into_iter().map(Input::Line));
                if ended {
                    inputs.push(Input::End);
                    *self = Stdin::Closed;
                }
            }
            Stdin::Closed => {}
        }
        inputs
    }

    /// Stops reading stdin and gives it back its flags.
    pub fn close(&mut self, registry: &Registry) {
        if let Stdin::Polled { saved_flags, .. } = self {
            let _ = registry.deregister(&mut SourceFd(&STDIN_FD));
            // SAFETY: F_SETFL on fd 0 with the flags it had when we started.
            unsafe { libc::fcntl(STDIN_FD, libc::F_SETFL, *saved_flags) };
        }
        *self = Stdin::Closed;
    }
}
