//! Telling the service manager how the daemon is doing: the `sd_notify(3)` protocol,
//! written out by hand (one datagram on a Unix socket) rather than linking libsystemd.
//!
//! Under systemd with `Type=notify`, `$NOTIFY_SOCKET` names a Unix datagram socket: a
//! path, or with a leading `@` a name in Linux's abstract namespace. Each message is one
//! datagram of `KEY=VALUE` lines: `READY=1` once the daemon serves (systemd waits for it
//! before it counts the unit as started), `STATUS=TEXT` for the line `systemctl status`
//! shows, `STOPPING=1` when the daemon stops. Without the variable (not started by systemd,
//! or `Type=simple`) a [`Notifier`] does nothing.
//!
//! Telling is never worth failing or waiting for: the socket is non-blocking, and a
//! message that cannot be sent is logged at debug level and dropped.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

use parlo_fsm::Escaped;

/// The variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends notifications to the service manager, if the daemon has one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for; one that does nothing without it (or,
    /// logged as a warning, when its socket cannot be used).
    pub fn from_env() -> Notifier {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(value) if !value.is_empty() => Notifier::to(&value).unwrap_or_else(|e| {
                log::warn!(
                    "{NOTIFY_SOCKET}={}: {e}; the service manager will not be told the \
                     daemon's state",
                    value.to_string_lossy()
                );
                Notifier::disabled()
            }),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that does nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier sending to `socket`, written as `$NOTIFY_SOCKET` is: `/path` or
    /// `@abstract-name`.
    pub fn to(socket: &OsStr) -> io::Result<Notifier> {
        let addr = address(socket)?;
        let sender = UnixDatagram::unbound()?;
        sender.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((sender, addr)),
        })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The daemon serves: `READY=1`, with its first status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// The daemon's status line changes.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The daemon stops: `STOPPING=1`, with a last status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        match socket.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => log::trace!("told the service manager {message:?}"),
            Err(e) => log::debug!("cannot tell the service manager {message:?}: {e}"),
        }
    }
}

/// `text` as one line of printable text: a line break would start another assignment
/// (a status from the network could otherwise say `READY=1`, or `MAINPID=`).
fn one_line(text: &str) -> String {
    Escaped::text(text.replace(['\n', '\r'], " ")).to_string()
}

/// The address `$NOTIFY_SOCKET` names.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => abstract_address(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(Path::new(socket)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a socket's path (/...) nor an abstract name (@...)",
        )),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A socket standing in for the service manager's, bound in a fresh directory.
    struct Manager {
        socket: UnixDatagram,
        dir: std::path::PathBuf,
    }

    impl Manager {
        fn new(tag: &str) -> (Manager, std::ffi::OsString) {
            let dir =
                std::env::temp_dir().join(format!("parlo-notify-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let path = dir.join("notify.sock");
            let socket = UnixDatagram::bind(&path).expect("bind");
            (Manager { socket, dir }, path.into_os_string())
        }

        fn received(&self) -> String {
            receive(&self.socket)
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_status_and_stopping_reach_a_path() {
        let (manager, path) = Manager::new("path");
        let notifier = Notifier::to(&path).expect("a path");
        assert!(notifier.is_enabled());
        notifier.ready("registering");
        assert_eq!(manager.received(), "READY=1\nSTATUS=registering");
        notifier.status("registered as door with 10.0.0.1:10000");
        assert_eq!(
            manager.received(),
            "STATUS=registered as door with 10.0.0.1:10000"
        );
        notifier.stopping("stopping");
        assert_eq!(manager.received(), "STOPPING=1\nSTATUS=stopping");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_name_is_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("parlo-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("a name");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind");
        let notifier = Notifier::to(OsStr::new(&format!("@{name}"))).expect("a name");
        notifier.status("up");
        assert_eq!(receive(&manager), "STATUS=up");
    }

    #[test]
    fn a_status_cannot_add_an_assignment() {
        let (manager, path) = Manager::new("inject");
        let notifier = Notifier::to(&path).expect("a path");
        notifier.status("refused: x\nREADY=1\r\nMAINPID=1\u{1b}[2J");
        let got = manager.received();
        assert_eq!(got.lines().count(), 1, "{got:?}");
        assert_eq!(got, "STATUS=refused: x READY=1  MAINPID=1\\u{1b}[2J");
    }

    #[test]
    fn without_a_manager_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::disabled();
        assert!(!notifier.is_enabled());
        notifier.ready("up");
        // A socket nobody listens on: the message is dropped, the daemon goes on.
        let notifier = Notifier::to(OsStr::new("/nonexistent/parlo/notify")).expect("a path");
        notifier.status("up");
        for bad in ["relative/path", "", "vsock:2:1"] {
            assert!(Notifier::to(OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
