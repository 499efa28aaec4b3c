//! parlo-server end to end under a service manager: `READY=1` once it listens, a status
//! line with the number of registered phones, `STOPPING=1` when it stops.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parlo_tests::server_harness::{
    LineClient, PATIENCE, TempDir, die_with_parent, loopback, server_binary, signal, wait_exit,
};

/// The next notification on `socket`, failing the test after [`PATIENCE`].
fn next(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_service_manager_is_told_ready_the_registrations_and_stopping() {
    let dir = TempDir::new("server-notify");
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).expect("bind the notify socket");
    let mut command = Command::new(server_binary());
    die_with_parent(&mut command);
    let mut server = command
        .args(["--listen", &format!("{}:0", loopback()), "--db"])
        .arg(dir.path().join("directory.db"))
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("parlo-server starts");

    let ready = next(&manager);
    let status = ready
        .strip_prefix("READY=1\nSTATUS=listening on ")
        .unwrap_or_else(|| panic!("{ready:?}"));
    let addr = status
        .strip_suffix(", 0 phones registered")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("{ready:?}"));

    let started = Instant::now();
    let stream = std::net::TcpStream::connect(addr).expect("the server accepts");
    let mut door = LineClient::new(stream);
    let answer = door.ask(r#"{"command":"REG","name":"door","port":5001}"#);
    assert!(answer.contains("Registered"), "{answer}");
    assert_eq!(
        next(&manager),
        format!("STATUS=listening on {addr}, 1 phone registered")
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    signal(server.id(), "TERM");
    assert_eq!(next(&manager), "STOPPING=1\nSTATUS=stopping");
    let status = wait_exit(&mut server, PATIENCE).expect("the server stops");
    assert_eq!(status.code(), Some(0));
}
