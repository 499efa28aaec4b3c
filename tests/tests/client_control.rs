//! parlo-client end to end: the control socket and `parlo-client ctl`, JSON events, a
//! stdin that is /dev/null or reaches end of file (systemd), the command line.

use std::time::Duration;

use parlo_tests::phone_harness::{
    FRAME_SAMPLES, Phone, connect_call, ctl, free_udp_port, run_client, run_client_with_env,
    write_wav,
};
use parlo_tests::server_harness::{LineClient, Server, TempDir, loopback};

/// CPU time (user + system) of process `pid` so far, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    utime + stime
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_phone_with_stdin_on_dev_null_is_driven_through_its_control_socket() {
    let server = Server::start(&[]);
    let mut bob = Phone::registered("bob", &server);
    let mut alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .stdin_null()
            .control(),
    );

    let status = alice.ctl(&["status"], "");
    assert!(
        status.status.success(),
        "{status:?}\n{}",
        alice.transcript()
    );
    let answer = text(&status.stdout);
    assert!(answer.contains("status"), "ctl status printed {answer:?}");

    let call = alice.ctl(&["--no-wait", "call", "bob"], "");
    assert!(call.status.success(), "{call:?}");
    bob.expect_event("incoming");
    bob.send("accept");
    alice.expect_event("connected");
    bob.expect_event("connected");

    let status = text(&alice.ctl(&["status"], "").stdout);
    assert!(status.contains("bob"), "status during the call: {status:?}");

    let hangup = alice.ctl(&["hangup"], "");
    assert!(hangup.status.success(), "{hangup:?}");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");

    // A command that makes no sense now gets an error answer on the socket too.
    let refused = alice.ctl(&["accept"], "");
    let said = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert!(said.contains("error"), "ctl accept when idle: {refused:?}");
    assert_eq!(refused.status.code(), Some(1), "an error answer: exit 1");

    let quit = alice.ctl(&["quit"], "");
    assert!(quit.status.success(), "{quit:?}");
    assert_eq!(alice.wait().code(), Some(0), "{}", alice.transcript());
}

#[test]
fn ctl_without_a_command_sends_its_stdin_lines() {
    let server = Server::start(&[]);
    let _bob = Phone::registered("bob", &server);
    let alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .stdin_null()
            .control(),
    );
    let out = alice.ctl(&[], "status\nlist\n");
    assert!(out.status.success(), "{out:?}");
    let answer = text(&out.stdout);
    assert!(
        answer.contains("status") && answer.contains("bob"),
        "two answers expected: {answer:?}"
    );
}

#[test]
fn two_control_clients_at_once() {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .stdin_null()
            .control(),
    );
    let path = alice.control_path().to_owned();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || ctl(&path, &["status"], ""))
        })
        .collect();
    for h in handles {
        let out = h.join().expect("ctl thread");
        assert!(
            out.status.success() && text(&out.stdout).contains("status"),
            "{out:?}"
        );
    }
}

#[test]
fn ctl_to_a_socket_nobody_listens_on_fails_clearly() {
    let dir = TempDir::new("ctl");
    let out = ctl(&dir.path().join("nothing.sock"), &["status"], "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains("nothing.sock"),
        "the message names the socket: {said:?}"
    );
}

#[test]
fn a_phone_whose_stdin_ends_keeps_running_without_spinning() {
    let server = Server::start(&[]);
    let mut bob = Phone::registered("bob", &server);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    alice.close_stdin();
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(alice.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(alice.pid()) - before;
    // A clock tick is 10 ms: a busy loop would spend ~100 in a second.
    assert!(spent <= 5, "{spent} ticks of CPU in 1 s with stdin at EOF");
    assert_eq!(alice.exit_status(), None, "{}", alice.transcript());
    // Still a working phone.
    bob.send("call alice");
    alice.expect_event("incoming");
    assert!(alice.ctl(&["accept"], "").status.success());
    bob.expect_event("connected");
}

#[test]
fn an_idle_phone_uses_no_cpu() {
    let server = Server::start(&[]);
    let alice = Phone::registered("alice", &server);
    let before = cpu_ticks(alice.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(alice.pid()) - before;
    assert!(spent <= 3, "{spent} ticks of CPU in 1 s while idle");
}

#[test]
fn json_events_are_one_object_per_line_with_event_peer_and_reason() {
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).json());
    let mut bob = Phone::start_registered(Phone::builder("bob").server(&server).json());
    connect_call(&mut alice, &mut bob);
    alice.send("hangup");
    let ended = alice.expect_ended("hangup");
    assert_eq!(ended.peer(), Some("bob"));
    let ended = bob.expect_ended("remote-hangup");
    assert_eq!(ended.peer(), Some("alice"));
    alice.send("call nobody");
    assert_eq!(alice.expect_ended("unknown-user").peer(), Some("nobody"));
    alice.send("list");
    let users = alice.expect_event("users");
    let listed = users
        .json
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(listed.contains("bob"), "{users}");
    alice.send("status");
    alice.expect_event("status");
    alice.send("accept");
    let error = alice.expect_event("error");
    assert!(error.json.is_some());
    // Every line on stdout is a JSON object with a string "event".
    for phone in [&alice, &bob] {
        for line in phone.stdout_lines() {
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", phone.transcript()));
            assert!(
                value.get("event").and_then(|e| e.as_str()).is_some(),
                "no \"event\" string: {line}"
            );
        }
    }
}

#[test]
fn incoming_says_whether_the_caller_id_is_verified() {
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).json());
    let mut bob = Phone::start_registered(Phone::builder("bob").server(&server).json());
    alice.send("call bob");
    let incoming = bob.expect_event("incoming");
    assert_eq!(
        incoming.field("verified").as_deref(),
        Some("key"),
        "{incoming}"
    );
    assert_eq!(incoming.field("new").as_deref(), Some("true"), "{incoming}");
    assert_eq!(incoming.field("address"), None, "{incoming}");
    alice.send("hangup");
    bob.expect_event("ended");

    // Someone else claims to be alice, in the clear: refused without ringing.
    let forger = parlo_tests::phone_harness::third_party();
    forger
        .send_to(b"START alice call=0badcafe v=2", bob.addr)
        .expect("sending on loopback");
    let ended = bob.expect_event("ended");
    assert_eq!(ended.peer(), Some("alice"));
    assert_eq!(ended.reason().as_deref(), Some("insecure"), "{ended}");
    bob.expect_no_event("incoming", std::time::Duration::from_millis(300));
}

#[test]
fn help_names_every_flag_and_exits_0() {
    let out = run_client(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = text(&out.stdout);
    for flag in [
        "--server",
        "--name",
        "--listen",
        "--audio",
        "--control",
        "--json",
        "--auto-answer",
        "--answer-timeout",
        "--log-level",
        "--codecs",
        "ctl",
    ] {
        assert!(
            help.contains(flag),
            "--help does not explain {flag}:\n{help}"
        );
    }
}

#[test]
fn invalid_settings_are_refused_with_the_originals_rules_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--server", "300.1.2.3", "--name", "x"], "300.1.2.3"),
        (&["--server", "127.0.0.1:80", "--name", "x"], "1024"),
        (&["--server", "127.0.0.1:70000", "--name", "x"], "65535"),
        (&["--server", "127.0.0.1", "--name", ""], "name"),
        (&["--server", "127.0.0.1", "--name", "two words"], "name"),
        (&["--server", "127.0.0.1"], "name"),
        (&["--name", "x"], "server"),
        (
            &[
                "--server",
                "127.0.0.1",
                "--name",
                "x",
                "--listen",
                "127.0.0.1:99",
            ],
            "1024",
        ),
        (
            &["--server", "127.0.0.1", "--name", "x", "--audio", "bogus"],
            "bogus",
        ),
        (
            &[
                "--server",
                "127.0.0.1",
                "--name",
                "x",
                "--answer-timeout",
                "soon",
            ],
            "answer-timeout",
        ),
        (
            &["--server", "127.0.0.1", "--name", "x", "--frobnicate"],
            "frobnicate",
        ),
    ];
    for (args, mentions) in cases {
        let out = run_client(args);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            said.contains(mentions),
            "{args:?}: the message should mention {mentions:?}: {said:?}"
        );
    }
}

/// Runs a phone with `--audio spec` on a free address (no server needed: it is expected
/// to refuse the spec at start).
fn start_with_audio(spec: &str) -> std::process::Output {
    let ip = loopback();
    let listen = format!("{ip}:{}", free_udp_port(ip));
    run_client(&[
        "--server",
        "127.0.0.1",
        "--name",
        "x",
        "--listen",
        &listen,
        "--audio",
        spec,
    ])
}

#[test]
fn the_same_file_as_microphone_and_recording_is_refused_at_start() {
    let dir = TempDir::new("same-file");
    let file = dir.path().join("same.wav");
    write_wav(&file, &vec![1000; 6 * FRAME_SAMPLES]);
    let before = std::fs::read(&file).expect("written");
    let same = file.display().to_string();
    let other_path = format!("{}/./same.wav", dir.path().display());
    for spec in [
        format!("file:{same},{same}"),
        format!("file:{same},{other_path}"),
    ] {
        let out = start_with_audio(&spec);
        assert_eq!(out.status.code(), Some(2), "{spec}: {out:?}");
        let said = text(&out.stderr);
        assert!(
            said.contains("both the microphone and the recording"),
            "{said:?}"
        );
    }
    assert_eq!(
        std::fs::read(&file).expect("still there"),
        before,
        "untouched"
    );
}

#[test]
fn a_missing_audio_file_is_a_clear_start_up_error() {
    let out = start_with_audio("file:/nonexistent/in.wav");
    assert!(!out.status.success(), "{out:?}");
    let said = text(&out.stderr);
    assert!(said.contains("/nonexistent/in.wav"), "{said:?}");
}

#[test]
fn a_microphone_file_that_is_no_8_khz_mono_wav_is_refused_at_start_with_exit_2() {
    let dir = TempDir::new("bad-wav");
    let notes = dir.path().join("notes.wav");
    std::fs::write(&notes, "not a sound, only words\n").expect("written");
    let cd = dir.path().join("cd.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&cd, spec).expect("a WAV file");
    for _ in 0..2 * 44_100 {
        writer.write_sample(1000i16).expect("a sample");
    }
    writer.finalize().expect("a WAV file");
    let out = dir.path().join("out.wav");
    for (input, found) in [
        (&notes, "is not a WAV file"),
        (&cd, "is 44100 Hz, stereo, 16-bit PCM"),
    ] {
        let spec = format!("file:{},{}", input.display(), out.display());
        let started = std::time::Instant::now();
        let run = start_with_audio(&spec);
        let said = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{spec}: {said}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at start, not at a call"
        );
        let expected = format!("parlo-client: --audio: {} {found}", input.display());
        assert!(said.contains(&expected), "{said}");
        assert!(
            said.contains("Parlo needs a WAV file of 8000 Hz mono 16-bit PCM"),
            "{said}"
        );
        assert!(
            said.contains(&format!("sox {} -r 8000 -c 1 -b 16 ", input.display())),
            "{said}"
        );
        assert!(said.contains("ffmpeg -i "), "{said}");
        assert!(!out.exists(), "nothing recorded");
    }
}

#[test]
fn a_missing_sound_card_is_one_line_of_parlos_without_alsas_own() {
    let dir = TempDir::new("no-card");
    // The system's configuration on a machine without a sound card: the default PCM is on
    // card 0, and there is no card 0. Here card 99, which no machine has (ALSA counts up
    // to 32).
    let config = dir.path().join("asound.conf");
    std::fs::write(
        &config,
        "pcm.!default {\n    type hw\n    card { @func card_inum card 99 }\n}\n",
    )
    .expect("written");
    let config = config.display().to_string();
    for spec in ["cpal", "default"] {
        let ip = loopback();
        let listen = format!("{ip}:{}", free_udp_port(ip));
        let run = run_client_with_env(
            &[
                "--server",
                "127.0.0.1",
                "--name",
                "x",
                "--listen",
                &listen,
                "--audio",
                spec,
            ],
            &[("ALSA_CONFIG_PATH", &config)],
        );
        let said = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{spec}: {said}");
        assert!(
            !said.contains("ALSA lib"),
            "{spec}: ALSA's own lines: {said}"
        );
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 1, "{spec}: one line: {said}");
        assert!(lines[0].starts_with("parlo-client: audio: "), "{said}");
        assert!(lines[0].contains("cannot find card '99'"), "{said}");
    }
}

#[test]
fn a_phone_configured_only_by_environment_variables_works() {
    let server = Server::start(&[]);
    let mut bob = Phone::registered("bob", &server);
    let mut door = Phone::start_registered(
        Phone::builder("door")
            .server(&server)
            .json()
            .auto_answer()
            .stdin_null()
            .control()
            .configured_by_environment(),
    );
    let registered = door.events().into_iter().find(|e| e.kind == "registered");
    assert!(
        registered.as_ref().is_some_and(|e| e.json.is_some()),
        "PARLO_JSON=1 gives JSON events: {registered:?}"
    );
    bob.send("call door");
    bob.expect_event("connected");
    door.expect_event("connected");
    assert!(door.ctl(&["hangup"], "").status.success());
    bob.expect_ended("remote-hangup");
}

#[test]
fn commands_from_a_regular_file_on_stdin_are_read_and_the_phone_stays() {
    let server = Server::start(&[]);
    let dir = TempDir::new("stdin");
    let commands = dir.path().join("commands");
    std::fs::write(&commands, "status\nhelp\n").expect("writable");
    let mut alice = Phone::builder("alice")
        .server(&server)
        .stdin_file(&commands)
        .control()
        .start();
    // Read at once, perhaps before the registration.
    alice.expect_event("status");
    alice.expect_event("help");
    alice.skip_unread();
    assert!(alice.ctl(&["status"], "").status.success());
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(alice.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(alice.pid()) - before;
    assert!(
        spent <= 5,
        "{spent} ticks of CPU in 1 s after the file ended"
    );
    assert_eq!(alice.exit_status(), None, "{}", alice.transcript());
}

#[test]
fn with_stdin_on_dev_null_the_phone_idles_without_spinning() {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(
        Phone::builder("alice")
            .server(&server)
            .stdin_null()
            .control(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(alice.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(alice.pid()) - before;
    assert!(
        spent <= 5,
        "{spent} ticks of CPU in 1 s with stdin on /dev/null"
    );
}

#[test]
fn a_udp_port_in_use_is_a_critical_error_exit_2() {
    let server = Server::start(&[]);
    let alice = Phone::registered("alice", &server);
    let mut again = Phone::builder("alice2")
        .server(&server)
        .ip(alice.addr.ip())
        .port(alice.addr.port())
        .start();
    let status = again.wait();
    assert_eq!(status.code(), Some(2), "{}", again.transcript());
    let said = again.stderr_lines().join("\n");
    assert!(
        said.contains(&alice.addr.to_string()),
        "the message names the address: {said}"
    );
}

#[test]
fn a_control_socket_in_use_is_a_critical_error_exit_2() {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    let path = alice.control_path().display().to_string();
    let mut again = Phone::builder("alice2")
        .server(&server)
        .arg("--control")
        .arg(path.clone())
        .start();
    let status = again.wait();
    assert_eq!(status.code(), Some(2), "{}", again.transcript());
    // The first phone's socket still works.
    assert!(alice.ctl(&["status"], "").status.success());
}

#[test]
fn a_file_at_the_control_path_is_left_alone_and_the_phone_refuses_to_start() {
    let server = Server::start(&[]);
    let dir = TempDir::new("control-file");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "precious\n").expect("a file");
    let mut phone = Phone::builder("alice")
        .server(&server)
        .arg("--control")
        .arg(path.display().to_string())
        .start();
    let status = phone.wait();
    assert_eq!(status.code(), Some(2), "{}", phone.transcript());
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        "precious\n"
    );
    let said = phone.stderr_lines().join("\n");
    assert!(said.contains("not a socket"), "{said}");
}

#[test]
fn sigint_exits_0_and_sighup_logs_a_status_line() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    alice.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !alice
        .stderr_lines()
        .iter()
        .any(|l| l.contains("status") || l.contains("state="))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no status line logged on SIGHUP\n{}",
            alice.transcript()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(alice.exit_status(), None);
    alice.signal("INT");
    assert_eq!(alice.wait().code(), Some(0), "{}", alice.transcript());
}

#[test]
fn devices_help_prints_and_exits_0() {
    let out = run_client(&["devices", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("parlo-client devices"), "{said}");
    assert!(said.contains("--audio cpal:NAME"), "{said}");
}

#[test]
fn version_prints_and_exits_0() {
    let out = run_client(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{out:?}"
    );
}

#[test]
fn list_gathers_every_page_of_a_large_directory() {
    let server = Server::start(&[]);
    // A hundred phones, from a hundred addresses (one address holds at most 64).
    let _others: Vec<LineClient> = (0..100)
        .map(|i| {
            let mut client = LineClient::new(server.connect_from(loopback()));
            let reply = client.ask(&format!(r#"{{"command":"REG","name":"user{i:03}"}}"#));
            assert!(reply.contains("Registered successfully"), "{reply}");
            client
        })
        .collect();
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).json());
    let users = alice.ask("list", "users");
    let names: Vec<String> = users
        .json
        .as_ref()
        .and_then(|v| v.get("users"))
        .and_then(|u| u.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names.len(), 101, "{users}");
    for i in 0..100 {
        assert!(names.contains(&format!("user{i:03}")), "user{i:03} missing");
    }
    assert!(names.contains(&"alice".to_owned()));
}

#[test]
fn a_server_given_by_host_name_is_resolved() {
    // localhost is 127.0.0.1; the kernel picks a free port there.
    let server = Server::start(&["--listen", "127.0.0.1:0"]);
    let mut alice = Phone::builder("alice")
        .server_text(&format!("localhost:{}", server.addr.port()))
        .start();
    alice.expect_event("registered");
}

#[test]
fn the_server_port_defaults_to_10000_as_the_originals() {
    // Nothing listens on port 10000 of a fresh address: the phone says it cannot reach
    // 10000 there, and keeps trying.
    let ip = loopback();
    let mut alice = Phone::builder("alice").server_text(&ip.to_string()).start();
    let said = alice.expect_event("unregistered");
    assert!(said.line.contains(&format!("{ip}:10000")), "{said}");
    assert_eq!(alice.exit_status(), None);
}

/// Connects to a phone's control socket, writes `bytes` and reads answer lines until
/// `expected` lines came or 3 s passed; with `half_close`, shuts the writing side down
/// right after writing, as `nc -N` or `socat` do at the end of their input.
fn control_exchange(phone: &Phone, bytes: &[u8], expected: usize, half_close: bool) -> String {
    use std::io::{Read, Write};
    let mut socket =
        std::os::unix::net::UnixStream::connect(phone.control_path()).expect("the socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    socket.write_all(bytes).expect("write");
    if half_close {
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut answers = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline
        && answers.iter().filter(|&&b| b == b'\n').count() < expected
    {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answers.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&answers).into_owned()
}

#[test]
fn garbage_on_stdin_and_on_the_control_socket_gets_errors_not_a_crash() {
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    // A line far too long, control characters, a NUL (invalid UTF-8: a test below).
    alice.send_raw(&vec![b'x'; 100_000]);
    alice.send_raw(b"\n");
    alice.expect_event("error");
    alice.send_raw(b"status\0\x07\n");
    alice.send_raw(b"\x1b[A\x1b[B\n");
    alice.expect_event("error");
    assert_eq!(alice.status().field("state").as_deref(), Some("idle"));

    // Longer than a command may be (but not a burst: see below), invalid UTF-8, a command.
    let mut garbage = vec![b'y'; 2_000];
    garbage.extend_from_slice(b"\n\xff\xfe\nstatus\n");
    let answers = control_exchange(&alice, &garbage, 3, false);
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines.len(), 3, "{answers:?}");
    assert!(
        lines[0].starts_with("error") && lines[1].starts_with("error"),
        "{answers:?}"
    );
    assert!(lines[2].starts_with("status state=idle"), "{answers:?}");
    assert_eq!(alice.exit_status(), None, "{}", alice.transcript());
}

#[test]
fn invalid_utf8_on_stdin_is_refused() {
    let server = Server::start(&[]);
    let mut alice = Phone::registered("alice", &server);
    alice.send_raw(b"call \xff\xfe\n");
    alice.expect_event("error");
    alice.expect_no_event("calling", Duration::from_millis(200));
}

#[test]
fn answers_reach_a_control_client_that_half_closes_after_its_commands() {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    let answers = control_exchange(&alice, b"status\nlist\n", 2, true);
    assert_eq!(answers.lines().count(), 2, "{answers:?}");
}

#[test]
fn a_burst_of_commands_on_the_control_socket_is_all_answered() {
    let server = Server::start(&[]);
    let alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    let answers = control_exchange(&alice, "status\n".repeat(1000).as_bytes(), 1000, false);
    assert_eq!(answers.lines().count(), 1000, "answers to 1000 commands");
}

#[test]
fn an_answer_owed_to_a_closed_control_connection_does_not_reach_the_next_one() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let server = Server::start(&[]);
    let mut alice = Phone::start_registered(Phone::builder("alice").server(&server).control());
    // With the directory stopped, a `list` waits for its answer.
    server.signal("STOP");
    let mut first = UnixStream::connect(alice.control_path()).expect("the socket");
    first.write_all(b"list\nstatus\n").expect("write");
    drop(first);
    // The phone read both; answering `status` to a closed socket fails, and the
    // connection is gone while the `list` is still owed to it.
    alice.expect_event("status");
    // A new connection takes the free slot.
    let mut second = UnixStream::connect(alice.control_path()).expect("the socket");
    second
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    second.write_all(b"status\n").expect("write");
    alice.expect_event("status");
    server.signal("CONT");
    alice.expect_event("users");
    second.write_all(b"status\n").expect("write");
    alice.expect_event("status");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut answers = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline
        && answers.iter().filter(|&&b| b == b'\n').count() < 2
    {
        match second.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answers.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    let answers = String::from_utf8_lossy(&answers);
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines.len(), 2, "{answers}");
    assert!(
        lines.iter().all(|l| l.starts_with("status ")),
        "the second connection got an answer meant for the first: {answers}"
    );
}
