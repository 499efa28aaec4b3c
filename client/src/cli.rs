//! The command line: `parlo-client [OPTIONS]`, `parlo-client ctl`, `parlo-client devices`,
//! `parlo-client keygen` and `parlo-client id`, with the environment variables a systemd
//! `EnvironmentFile=` sets.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use parlo_audio::DeviceSpec;
use parlo_daemon::port::{self, Role};
use parlo_fsm::messages::MAX_ALLOWED;
use parlo_fsm::{Codec, MAX_ANSWER_FROM, Preference, Security};
use parlo_net::directory::PublicKey;
use parlo_net::peer::Name;

use crate::error::Error;
use crate::output::Format;

/// `--help` text of the daemon.
pub const HELP: &str = "\
parlo-client: the Parlo phone daemon. Registers NAME with the directory server, places and
answers calls over UDP, and carries the audio. Driven by text commands; reports events.

USAGE:
    parlo-client --server ADDR[:PORT] --name NAME [OPTIONS]
    parlo-client ctl [--control PATH] [--json] [COMMAND...]     (see `ctl --help`)
    parlo-client devices
    parlo-client keygen [--identity PATH] [--force]
    parlo-client id [--identity PATH]      (the phone's public key and its fingerprint)

OPTIONS:
    --server ADDR[:PORT]    The directory server: an IP address or a host name, and its
                            TCP port (1024-65535).                  [default port: 10000]
                            IPv6 with a port: [ADDR]:PORT.          env: PARLO_SERVER
    --name NAME             This phone's name: 1 to 32 bytes of printable UTF-8, without
                            whitespace, control characters or '='.  env: PARLO_NAME
    --listen ADDR:PORT      UDP address for calls (port 1024-65535, or 0 for a free port).
                            With a specific ADDR, the connection to the server leaves
                            from ADDR too, so the directory records the address the phone
                            listens on.
                            [default: 0.0.0.0:5001]                 env: PARLO_LISTEN
    --audio DEV             cpal[:DEVICE] (sound card; see `devices`), file:IN.wav[,OUT.wav]
                            (IN, 8 kHz mono 16-bit, played in real time as the microphone;
                            what is received is written to OUT), tone[:HZ], null.
                            [default: cpal]                         env: PARLO_AUDIO
    --codecs LIST           The codecs this phone accepts, most preferred first, comma
                            separated: L16 (lossless, 128 kbit/s), PCMU (G.711 u-law,
                            64 kbit/s). A caller offers them all; a callee answers with
                            its first one the caller offers (L16 if none).
                            [default: L16,PCMU]                     env: PARLO_CODECS
    --control PATH          Also read commands from a Unix socket at PATH (for systemd,
                            where stdin is /dev/null); `ctl` talks to it, `ctl watch`
                            follows its events.                     env: PARLO_CONTROL
    --json                  Print events as JSON lines.             env: PARLO_JSON=1
    --auto-answer           Answer incoming calls at once (intercom), but only from callers
                            verified by key (verified=key); others ring.
                                                                    env: PARLO_AUTO_ANSWER=1
    --answer-from LIST      With --auto-answer, answer only these names (comma separated,
                            up to 16), still verified by key.       env: PARLO_ANSWER_FROM
    --security MODE         Calls with other Parlo phones: required (always encrypted; a
                            phone whose key is not known is not called, a plaintext call
                            is refused), preferred (encrypted when the key is known), off
                            (never encrypted; --auto-answer answers anyone, as the original
                            phones did). [default: required]        env: PARLO_SECURITY
    --original-phones allow|refuse
                            Calls with phones of the original project, which have no
                            encryption: allowed (marked verified=plaintext) or refused.
                            [default: allow]                        env: PARLO_ORIGINAL_PHONES
    --known-peers PATH      Other phones' keys pinned on first contact or by `trust`, one
                            NAME KEY per line: a phone whose key changed is refused
                            (key-changed). [default: known_peers beside --identity]
                                                                    env: PARLO_KNOWN_PEERS
    --messages-from LIST    Take text messages only from these names (comma separated, up
                            to 16), verified by key. [default: any phone verified by key]
                                                                    env: PARLO_MESSAGES_FROM
    --max-clock-skew SECS   How far a caller's clock may be from this phone's: an older
                            call request is refused as a replay. [default: 300]
    --rekey-after SECS      How often an encrypted call changes its keys. [default: 120]
    --answer-timeout SECS   How long a call may ring unanswered, 1-600 s.
                            [default: 7]                            env: PARLO_ANSWER_TIMEOUT
    --log-level LEVEL       Log to stderr: off, error, warn, info, debug, trace.
                            [default: info]                         env: PARLO_LOG_LEVEL
    --identity PATH         This phone's key pair (X25519): made on first start, mode
                            0600, refused if its group or others may read it. Its pins
                            of servers' keys are kept beside it, in known-servers.
                            [default: $STATE_DIRECTORY/identity under systemd, else
                            $XDG_STATE_HOME/parlo/identity, else
                            ~/.local/state/parlo/identity]          env: PARLO_IDENTITY
    --server-key KEY        The directory server's public key (`parlo-server id` prints
                            it): the connection is encrypted to it, and a server without
                            it is refused. Without it, the key the server gives on first
                            contact is pinned in known-servers and required from then on;
                            a server that has none (the original) is spoken to in plain
                            text, with a warning.                   env: PARLO_SERVER_KEY
    -h, --help              Print this help.
    -V, --version           Print the version.
    Flags override the environment. Boolean variables take 1/true/yes or 0/false/no.

COMMANDS (one per line, on stdin and on the control socket; each gets one answer line):
    call NAME    accept    reject    hangup    list    status    quit    help
    msg NAME TEXT      send TEXT (the rest of the line, up to 1,000 bytes) to NAME
    trust NAME [KEY]   pin KEY for NAME, or the new key NAME was refused with
    conf NAME...       start a conference with up to 7 other phones (see CONFERENCES)
    invite NAME        add NAME to the conference, or turn the call into one with NAME
    On the control socket only: watch [text|json] (every event from then on) and
    format text|json (that connection's lines); see `ctl --help`.

EVENTS (stdout, one per line; with --json the same as objects with an \"event\" field):
    registered NAME server=ADDR          unregistered reason=TEXT
    calling PEER    ringing PEER
    incoming PEER from=ADDR verified=V [new=yes] [address=yes|no|unknown] [conf=ID]
    connected PEER dialect=parlo|original codec=L16|PCMU verified=V [new=yes] [code=NNNN-NNNN]
      V: key, unbound, no or unknown (encrypted), or plaintext (address: plaintext only);
      new=yes: the peer's key was pinned just now (on incoming for a caller, on connected
      for a callee)
    ended PEER reason=hangup|remote-hangup|rejected|busy|no-answer|unknown-user|peer-lost|cancelled|lookup-failed|key-changed|insecure
    trusted PEER key=KEY fingerprint=FP
    sending ID to=PEER    delivered ID to=PEER    undelivered ID to=PEER reason=R
      R: unknown-user, unreachable, refused, too-long, rate-limited or queue-full
    message PEER id=ID verified=key|new text=TEXT
    conference ID members=PEER:V:legs=K/N,...    joined PEER    left PEER reason=R
    full PEER    conference-ended ID       (see CONFERENCES)
    users NAME...    status state=... (see STATUS)    help ...    bye    error reason=TEXT

SECURITY:
    Calls between Parlo phones are encrypted end to end (Noise IK: each phone's key is
    its --identity; the caller takes the callee's from the directory). verified= says
    who called: key (the key the directory binds to that name, agreeing with this
    phone's pin), unbound (no key is bound to that name), no (the name is bound to
    another key, or unknown), unknown (the directory could not be asked, and no pin),
    plaintext (no encryption: an original phone). new=yes: first contact, the key is
    pinned now. A pinned name calling or given with another key is refused: ended
    reason=key-changed; `trust NAME` accepts its new key on purpose. code= is the same
    on both phones of a call: read it to each other to rule out a man in the middle.

MESSAGES:
    `msg NAME TEXT` answers `sending ID`, then says `delivered ID` once NAME's phone
    acknowledged it, or `undelivered ID reason=R`. A message travels encrypted, over the
    call's session when in a call with NAME, else over a session made for messages with
    the same keys and checks as a call's; it is sent again after 0.5, 1, 2, 4 and 8 s,
    and is unreachable 15.5 s after the first try. A phone prints each message once,
    from senders verified by key (and listed by --messages-from), at most 10 at once
    and 5 a second from each. Messages print in the order they arrive; the ids of one
    sender grow in the order it sent them. Phones of the original project have none.

CONFERENCES:
    `conf bob carol dave` calls each of them into a conference (3 to 8 phones). Every
    member calls every other one: each pair holds its own encrypted call, each member
    sends its microphone to all and plays the others' sound mixed (never its own). An
    invitation rings as `incoming PEER ... conf=ID`; once it is accepted, the calls of
    the other members are answered by themselves (when verified by key). `invite NAME`
    adds a member, from any member; during a two-party call it makes the call a
    conference without dropping it. `hangup` leaves it; the others carry on.
    `conference ID members=...` is given whenever the members change: for each,
    V is how this phone's call with it is verified (- while it is not connected), and
    legs=K/N the calls it holds of those it should: less than N means some members do
    not hear it. `left PEER reason=R` (R: hung-up, peer-lost, rejected, busy,
    no-answer, unreachable, key-changed, insecure or original-phone) when a member's
    call ends; `full PEER` when inviting PEER would exceed 8 members. A phone in a
    conference answers other calls BUSY. Conferences need encryption (not with
    --security off) and Parlo phones: an original phone cannot be a member (refused
    as original-phone); call it on its own.

STATUS (the answer to `status`, one line; with --json the same fields in an object):
    state             idle, dialing, ringing, in-call, closing, or conference
    peer, peer_addr   the phone of the current or last call, and its UDP address
    dialect, codec    parlo or original; L16 or PCMU (the codec this phone sends)
    verified, code    how the peer of the current call is verified; its short code
    security          required, preferred or off (--security)
    registered        yes, or no with reason=TEXT at the end of the line: why (the name
                      is taken, the server is unreachable) and when the next attempt is
    The counters are those of the current or last call, since it began:
    sent, received    media packets sent to and received from the peer
    played            frames of the peer's sound given to the sound device
    lost              frames missing when their turn to play came (concealed instead)
    late              packets that arrived after their turn to play: dropped
    duplicate         packets that arrived twice: the copy dropped
    discarded         packets far outside the expected sequence (strays, a stream that
                      restarted): dropped
    concealed         frames played as a fade or silence for want of a packet
    underruns         times the sound device found nothing to play
    depth, jitter_ms  frames waiting in the jitter buffer now; the network's estimated
                      jitter (RFC 3550), in milliseconds
    capture_overruns  microphone frames lost because the phone fell behind the device
    playback_overruns received frames lost because the device fell behind the phone
    The phone's own counters, since it started:
    foreign           datagrams ignored as another call's or another address's
    foreign_media     RTP from the peer's address that is not the call's stream (another
                      source or payload type), ignored: someone else sending as the peer
    garbage           datagrams that were neither signalling nor media
    retransmissions   signalling messages sent again for want of an answer
    auth_failures     encrypted datagrams that did not authenticate (damaged, forged, or
                      for another key): dropped, never played
    replays           encrypted datagrams seen before (replayed, or duplicated by the
                      network), and replayed call requests: dropped
    stale             call requests timestamped too far from this phone's clock
    rate_limited      call handshakes dropped for coming too fast
    handshakes        encrypted sessions set up
    rekeys            key changes of the current call's session, both ways (--rekey-after)
    In a conference, sent and received sum up every member's call, and
    conference=ID is followed by each call's own: leg.PEER.state, leg.PEER.verified and
    leg.PEER.sent, received, played, lost, late, duplicate, concealed, foreign_media,
    depth and jitter_ms (with --json: a \"legs\" array).
    Only lost, late, concealed, underruns and the overruns mean the sound suffered; a
    few after a call starts or on a busy LAN are normal.

STDIN:
    When stdin is a terminal, a pipe or a socket and no --control socket is given, the end
    of stdin quits (as `quit`). Otherwise (stdin is /dev/null or a file, or --control is
    given) the end of stdin only stops reading it.

SIGNALS:
    SIGTERM, SIGINT   Hang up any call, DISCONNECT from the server, exit 0.
    SIGHUP            Log a status line.

REGISTRATION:
    A name taken (or any refusal) is logged as a warning, once; it is asked for again after
    5 s, doubling up to 5 min. A lost server is tried again within a second, then at most
    3 s apart for 5 min, then up to 30 s apart. Under systemd (Type=notify) the phone
    reports READY=1 and its registration as the unit's status line ($NOTIFY_SOCKET).

EXIT CODES:
    0 stopped on request    1 stopped, but the audio device reported an error
    2 critical error (bad option, port in use, control socket in use, no such sound card)
    3 unknown error
";

/// `--help` text of `ctl`.
pub const CTL_HELP: &str = "\
parlo-client ctl: send commands to a running parlo-client through its control socket and
print the answers, follow a call to its outcome, or watch the phone's events.

USAGE:
    parlo-client ctl [--control PATH] [--json|--text] [COMMAND...]
    parlo-client ctl [--control PATH] [--json|--text] [--no-wait|--timeout SECS] call NAME
    parlo-client ctl [--control PATH] [--json|--text] [--no-wait|--timeout SECS] msg NAME TEXT
    parlo-client ctl [--control PATH] [--json|--text] watch

    With a COMMAND (e.g. `ctl --control /run/parlo/control status`), sends it and prints
    its answer. Without, sends each line of stdin and prints each answer.

    call NAME follows the call: it prints `calling NAME` (or the error that refused the
    call), `ringing NAME`, and ends at `connected NAME ...` (exit 0) or
    `ended NAME reason=...` (exit 1; reason=rejected, busy, no-answer, unknown-user,
    lookup-failed, ...). The phone's own no-answer timer (its --answer-timeout) ends a
    call that nobody answers. With --no-wait it prints the first answer and exits.

    msg NAME TEXT follows the message: it prints `sending ID to=NAME` (or the error that
    refused it) and ends at `delivered ID` (exit 0) or `undelivered ID reason=...`
    (exit 1; reason=unknown-user, unreachable, refused, rate-limited, ...), within 16 s.

    watch prints the phone's status, then each event as the phone prints it on stdout
    (calling, ringing, incoming, connected, ended, message, conference, joined, left,
    registered, unregistered, error, bye, ...), one per line, for as long as the phone
    runs. The answers to other clients' status, list and help, and the refusals of their
    commands, are not events.

OPTIONS:
    --control PATH    The daemon's --control socket.    env: PARLO_CONTROL
    --json            Lines as JSON objects, as the daemon's --json prints them.
    --text            Lines as text.             [default: the form the daemon prints]
    --no-wait         call, msg: print the first answer, do not wait for the outcome.
    --timeout SECS    call, msg: wait at most SECS (1-86400), then exit 1; the call goes on.
                      [default: 620, longer than any phone's --answer-timeout]
    -h, --help        Print this help.
    Options may come before or after the command: `ctl watch --json` = `ctl --json watch`.

ON THE SOCKET (socat, nc -U): one command per line, each answered with one line, as on
the daemon's stdin, and:
    watch [text|json]    Answered with `status`; then every event, until the connection
                         closes. A watcher that leaves 64 KiB unread is disconnected.
    format text|json     This connection's lines from now on; answered with `status`.

EXIT CODES:
    0 no answer was an error; call: the call connected; watch: the phone stopped (bye)
    1 an answer was an error; call: the call did not connect (the last line says why),
      or no outcome within --timeout; watch: the connection was lost
    2 the daemon cannot be reached, or a bad option
";

/// How long `ctl call` waits for the call's outcome by default: longer than the longest
/// `--answer-timeout`, so that the phone's own no-answer timer ends an unanswered call.
pub const CALL_WAIT: Duration = Duration::from_secs(620);

/// `--help` text of `devices`.
pub const DEVICES_HELP: &str = "\
parlo-client devices: list the sound devices this machine has, one name per line. Give
one to the phone with --audio cpal:NAME (--audio default is cpal:default).

USAGE:
    parlo-client devices

    Without a sound card, --audio file:IN.wav[,OUT.wav], tone[:HZ] and null need none.

OPTIONS:
    -h, --help        Print this help.
";

/// The directory server's default TCP port.
pub const DEFAULT_SERVER_PORT: u16 = 10000;

/// The default UDP address for calls (the original's fixed port).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 5001);

/// Where the directory server is: a host name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// An IP address or a host name, as given.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the daemon needs to run.
#[derive(Debug, Clone)]
pub struct PhoneConfig {
    /// The directory server.
    pub server: ServerAddr,
    /// This phone's name.
    pub name: Name,
    /// UDP address for calls.
    pub listen: SocketAddr,
    /// The audio device.
    pub audio: DeviceSpec,
    /// The codecs accepted, most preferred first.
    pub codecs: Preference,
    /// The control socket, if any.
    pub control: Option<PathBuf>,
    /// Events as JSON lines.
    pub json: bool,
    /// Answer incoming calls at once.
    pub auto_answer: bool,
    /// Ringing limit, in milliseconds.
    pub answer_timeout_ms: u64,
    /// Log verbosity.
    pub log_level: LevelFilter,
    /// The phone's key pair.
    pub identity: PathBuf,
    /// The server's key, if given.
    pub server_key: Option<PublicKey>,
    /// Whether calls with other Parlo phones must be encrypted, may be, or are not.
    pub security: Security,
    /// Whether calls with phones of the original project (plaintext) are allowed.
    pub original_phones: bool,
    /// The callers `--auto-answer` answers (all key-verified ones when empty).
    pub answer_from: heapless::Vec<Name, MAX_ANSWER_FROM>,
    /// Other phones' pinned keys.
    pub known_peers: PathBuf,
    /// How far a caller's clock may be from ours, in milliseconds.
    pub max_clock_skew_ms: u64,
    /// How often an encrypted call changes its keys, in milliseconds.
    pub rekey_after_ms: u64,
    /// Who may send this phone messages (every key-verified phone when empty).
    pub messages_from: heapless::Vec<Name, MAX_ALLOWED>,
}

/// What `parlo-client ctl` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctl {
    /// The phone's control socket.
    pub control: PathBuf,
    /// The command given on the command line, if any (else stdin's lines).
    pub command: Option<String>,
    /// The form of the lines, if chosen (else the phone's).
    pub format: Option<Format>,
    /// How long `call` waits for the call's outcome; `None`: it does not wait.
    pub wait: Option<Duration>,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run the phone.
    Run(Box<PhoneConfig>),
    /// Send commands to a running phone.
    Ctl(Ctl),
    /// List the sound devices.
    Devices,
    /// Make the phone's key pair.
    Keygen {
        /// Where.
        identity: PathBuf,
        /// Replace an existing one.
        force: bool,
    },
    /// Print the phone's public key and fingerprint.
    Id {
        /// The key pair.
        identity: PathBuf,
    },
    /// Print this text and exit.
    Help(&'static str),
    /// Print the version and exit.
    Version,
}

fn usage(text: impl Into<String>) -> Error {
    Error::Usage(text.into())
}

fn from_lexopt(error: lexopt::Error) -> Error {
    usage(error.to_string())
}

/// Where the environment is read from: the process's, or a fixed list in tests.
pub trait Env {
    /// The value of `key`, if set and not empty.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

/// Whether `host` is a plausible host name (RFC 1123 labels).
fn valid_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // A name made only of digits and dots is a mistyped IPv4 address.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Parses `ADDR[:PORT]`: an IPv4 address, `[IPv6]`, a bare IPv6 address or a host name,
/// with an optional port.
pub fn parse_server(text: &str) -> Result<ServerAddr, Error> {
    let what = "--server";
    let invalid = || {
        usage(format!(
            "{what}: the server address is invalid: {text:?} (expected an IP address or a \
             host name, optionally followed by :PORT)"
        ))
    };
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        let port = port::check(what, addr.port(), Role::Connect).map_err(usage)?;
        return Ok(ServerAddr {
            host: addr.ip().to_string(),
            port,
        });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ServerAddr {
            host: ip.to_string(),
            port: DEFAULT_SERVER_PORT,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port::parse(what, port, Role::Connect).map_err(usage)?),
        None => (text, DEFAULT_SERVER_PORT),
    };
    if host.parse::<IpAddr>().is_ok() || !valid_host_name(host) {
        // `::1:10000` and the like: IPv6 with a port needs brackets.
        return Err(invalid());
    }
    Ok(ServerAddr {
        host: host.to_owned(),
        port,
    })
}

fn parse_listen(text: &str) -> Result<SocketAddr, Error> {
    port::listen_addr("--listen", text, DEFAULT_LISTEN.port()).map_err(usage)
}

fn parse_name(text: &str) -> Result<Name, Error> {
    if text.is_empty() {
        return Err(usage("--name: you must give a name"));
    }
    Name::new(text).map_err(|e| usage(format!("--name: {e}")))
}

fn parse_audio(text: &str) -> Result<DeviceSpec, Error> {
    DeviceSpec::parse(text).map_err(|e| usage(format!("--audio: {e}")))
}

fn parse_codecs(text: &str) -> Result<Preference, Error> {
    let mut list = Vec::new();
    for item in text.split(',') {
        let codec = Codec::from_name(item.trim()).ok_or_else(|| {
            usage(format!(
                "--codecs: unknown codec \"{item}\": expected L16 or PCMU, comma separated"
            ))
        })?;
        list.push(codec);
    }
    Preference::new(&list).ok_or_else(|| usage(format!("--codecs: {text} names a codec twice")))
}

fn parse_answer_timeout(text: &str) -> Result<u64, Error> {
    match text.parse::<u64>() {
        Ok(secs) if (1..=600).contains(&secs) => Ok(secs * 1000),
        _ => Err(usage(format!(
            "--answer-timeout: expected a whole number of seconds from 1 to 600, got {text:?}"
        ))),
    }
}

fn parse_log_level(text: &str) -> Result<LevelFilter, Error> {
    text.parse().map_err(|_| {
        usage(format!(
            "--log-level: expected off, error, warn, info, debug or trace, got {text:?}"
        ))
    })
}

fn parse_bool(key: &str, text: &str) -> Result<bool, Error> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(usage(format!(
            "{key}: expected 1, true, yes or 0, false, no, got {text:?}"
        ))),
    }
}

/// The default identity: in systemd's state directory, else in the user's.
pub fn default_identity(env: &dyn Env) -> PathBuf {
    if let Some(dirs) = env.var("STATE_DIRECTORY") {
        // systemd may pass several directories separated by ':'; the first is ours.
        let first = dirs.split(':').next().unwrap_or_default();
        return PathBuf::from(first).join("identity");
    }
    if let Some(state) = env.var("XDG_STATE_HOME") {
        return PathBuf::from(state).join("parlo/identity");
    }
    match env.var("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/parlo/identity"),
        None => PathBuf::from("parlo-identity"),
    }
}

/// The file of the servers' keys pinned on first contact: beside the identity.
pub fn known_servers(identity: &Path) -> PathBuf {
    identity.with_file_name("known-servers")
}

fn parse_server_key(text: &str) -> Result<PublicKey, Error> {
    PublicKey::parse(text.trim()).map_err(|e| usage(format!("--server-key: {e}")))
}

/// `keygen` (`make`) or `id`, with their flags.
fn parse_keys(mut parser: lexopt::Parser, make: bool, env: &dyn Env) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut identity: Option<PathBuf> = None;
    let mut force = false;
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("identity") => identity = Some(parser.value().map_err(from_lexopt)?.into()),
            Long("force") if make => force = true,
            Short('h') | Long("help") => return Ok(Command::Help(HELP)),
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    let identity = identity
        .or_else(|| env.var("PARLO_IDENTITY").map(PathBuf::from))
        .unwrap_or_else(|| default_identity(env));
    Ok(if make {
        Command::Keygen { identity, force }
    } else {
        Command::Id { identity }
    })
}

/// Names the variable in an error about its value.
fn from_env<T>(key: &str, result: Result<T, Error>) -> Result<T, Error> {
    result.map_err(|e| match e {
        Error::Usage(text) => usage(format!("{key} (environment): {text}")),
        other => other,
    })
}

/// The value of `--flag` as text.
fn text(parser: &mut lexopt::Parser, flag: &str) -> Result<String, Error> {
    parlo_daemon::flag_text(parser, flag).map_err(usage)
}

/// Whether `a` and `b` name the same file: the same path, or the same file reached by
/// another path (a link, `./`, `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Parses the arguments after the program name, with `env` for the variables.
pub fn parse(args: impl IntoIterator<Item = OsString>, env: &dyn Env) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut server = None;
    let mut name = None;
    let mut listen = None;
    let mut audio = None;
    let mut codecs = None;
    let mut control: Option<PathBuf> = None;
    let mut json = false;
    let mut auto_answer = false;
    let mut answer_timeout_ms = None;
    let mut log_level = None;
    let mut identity: Option<PathBuf> = None;
    let mut server_key = None;
    let mut security = None;
    let mut original_phones = None;
    let mut answer_from = None;
    let mut known_peers: Option<PathBuf> = None;
    let mut max_clock_skew_ms = None;
    let mut rekey_after_ms = None;
    let mut messages_from = None;
    let mut first = true;
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Value(word) if first && word == "ctl" => return parse_ctl(parser, env),
            Value(word) if first && (word == "keygen" || word == "id") => {
                return parse_keys(parser, word == "keygen", env);
            }
            Long("identity") => identity = Some(parser.value().map_err(from_lexopt)?.into()),
            Long("server-key") => {
                server_key = Some(parse_server_key(&text(&mut parser, "--server-key")?)?);
            }
            Value(word) if first && word == "devices" => {
                return match parser.next().map_err(from_lexopt)? {
                    None => Ok(Command::Devices),
                    Some(Short('h') | Long("help")) => Ok(Command::Help(DEVICES_HELP)),
                    Some(arg) => Err(from_lexopt(arg.unexpected())),
                };
            }
            Long("server") => server = Some(parse_server(&text(&mut parser, "--server")?)?),
            Long("name") => name = Some(parse_name(&text(&mut parser, "--name")?)?),
            Long("listen") => listen = Some(parse_listen(&text(&mut parser, "--listen")?)?),
            Long("audio") => audio = Some(parse_audio(&text(&mut parser, "--audio")?)?),
            Long("codecs") => codecs = Some(parse_codecs(&text(&mut parser, "--codecs")?)?),
            Long("control") => control = Some(parser.value().map_err(from_lexopt)?.into()),
            Long("json") => json = true,
            Long("auto-answer") => auto_answer = true,
            Long("answer-timeout") => {
                answer_timeout_ms = Some(parse_answer_timeout(&text(
                    &mut parser,
                    "--answer-timeout",
                )?)?);
            }
            Long("log-level") => {
                log_level = Some(parse_log_level(&text(&mut parser, "--log-level")?)?);
            }
            Long("security") => {
                security = Some(parse_security(&text(&mut parser, "--security")?)?);
            }
            Long("original-phones") => {
                original_phones = Some(parse_original_phones(&text(
                    &mut parser,
                    "--original-phones",
                )?)?);
            }
            Long("answer-from") => {
                answer_from = Some(parse_names(
                    "--answer-from",
                    &text(&mut parser, "--answer-from")?,
                )?);
            }
            Long("messages-from") => {
                messages_from = Some(parse_names(
                    "--messages-from",
                    &text(&mut parser, "--messages-from")?,
                )?);
            }
            Long("known-peers") => {
                known_peers = Some(parser.value().map_err(from_lexopt)?.into());
            }
            Long("max-clock-skew") => {
                max_clock_skew_ms = Some(parse_seconds(
                    "--max-clock-skew",
                    &text(&mut parser, "--max-clock-skew")?,
                    1,
                    86_400,
                )?);
            }
            Long("rekey-after") => {
                rekey_after_ms = Some(parse_seconds(
                    "--rekey-after",
                    &text(&mut parser, "--rekey-after")?,
                    1,
                    86_400,
                )?);
            }
            Short('h') | Long("help") => return Ok(Command::Help(HELP)),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(from_lexopt(arg.unexpected())),
        }
        first = false;
    }

    let server = match server {
        Some(server) => server,
        None => match env.var("PARLO_SERVER") {
            Some(v) => from_env("PARLO_SERVER", parse_server(&v))?,
            None => {
                return Err(usage(
                    "--server is required (or PARLO_SERVER): the directory server's ADDR[:PORT]",
                ));
            }
        },
    };
    let name = match name {
        Some(name) => name,
        None => match env.var("PARLO_NAME") {
            Some(v) => from_env("PARLO_NAME", parse_name(&v))?,
            None => {
                return Err(usage(
                    "--name is required (or PARLO_NAME): this phone's name",
                ));
            }
        },
    };
    let listen = match listen {
        Some(listen) => listen,
        None => match env.var("PARLO_LISTEN") {
            Some(v) => from_env("PARLO_LISTEN", parse_listen(&v))?,
            None => DEFAULT_LISTEN,
        },
    };
    let audio = match audio {
        Some(audio) => audio,
        None => match env.var("PARLO_AUDIO") {
            Some(v) => from_env("PARLO_AUDIO", parse_audio(&v))?,
            None => DeviceSpec::default(),
        },
    };
    if let DeviceSpec::File { input, output } = &audio {
        if let Err(e) = std::fs::File::open(input) {
            return Err(usage(format!(
                "--audio: cannot open the input WAV file {}: {e}",
                input.display()
            )));
        }
        // Checked now, not at the first call: that call would connect and end at once.
        if let Err(e) = parlo_audio::device::check_input_wav(input) {
            return Err(usage(format!("--audio: {e}")));
        }
        if let Some(output) = output {
            if same_file(input, output) {
                return Err(usage(format!(
                    "--audio: {} would be both the microphone and the recording, and the \
                     recording would overwrite it: give two different files",
                    input.display()
                )));
            }
        }
        // The output file is created at each call; its directory must exist now.
        let dir = output
            .as_deref()
            .and_then(std::path::Path::parent)
            .filter(|dir| !dir.as_os_str().is_empty());
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--audio: the directory of the output WAV file, {}, does not exist",
                    dir.display()
                )));
            }
        }
    }
    let codecs = match codecs {
        Some(codecs) => codecs,
        None => match env.var("PARLO_CODECS") {
            Some(v) => from_env("PARLO_CODECS", parse_codecs(&v))?,
            None => Preference::default(),
        },
    };
    let control = control.or_else(|| env.var("PARLO_CONTROL").map(PathBuf::from));
    let json = json
        || match env.var("PARLO_JSON") {
            Some(v) => parse_bool("PARLO_JSON", &v)?,
            None => false,
        };
    let auto_answer = auto_answer
        || match env.var("PARLO_AUTO_ANSWER") {
            Some(v) => parse_bool("PARLO_AUTO_ANSWER", &v)?,
            None => false,
        };
    let answer_timeout_ms = match answer_timeout_ms {
        Some(ms) => ms,
        None => match env.var("PARLO_ANSWER_TIMEOUT") {
            Some(v) => from_env("PARLO_ANSWER_TIMEOUT", parse_answer_timeout(&v))?,
            None => 7_000,
        },
    };
    let log_level = match log_level {
        Some(level) => level,
        None => match env.var("PARLO_LOG_LEVEL") {
            Some(v) => from_env("PARLO_LOG_LEVEL", parse_log_level(&v))?,
            None => LevelFilter::Info,
        },
    };
    let identity = identity
        .or_else(|| env.var("PARLO_IDENTITY").map(PathBuf::from))
        .unwrap_or_else(|| default_identity(env));
    let server_key = match server_key {
        Some(key) => Some(key),
        None => match env.var("PARLO_SERVER_KEY") {
            Some(v) => Some(from_env("PARLO_SERVER_KEY", parse_server_key(&v))?),
            None => None,
        },
    };
    let security = match security {
        Some(security) => security,
        None => match env.var("PARLO_SECURITY") {
            Some(v) => from_env("PARLO_SECURITY", parse_security(&v))?,
            None => Security::Required,
        },
    };
    let original_phones = match original_phones {
        Some(allowed) => allowed,
        None => match env.var("PARLO_ORIGINAL_PHONES") {
            Some(v) => from_env("PARLO_ORIGINAL_PHONES", parse_original_phones(&v))?,
            None => true,
        },
    };
    let answer_from = match answer_from {
        Some(names) => names,
        None => match env.var("PARLO_ANSWER_FROM") {
            Some(v) => from_env("PARLO_ANSWER_FROM", parse_names("--answer-from", &v))?,
            None => heapless::Vec::new(),
        },
    };
    let messages_from = match messages_from {
        Some(names) => names,
        None => match env.var("PARLO_MESSAGES_FROM") {
            Some(v) => from_env("PARLO_MESSAGES_FROM", parse_names("--messages-from", &v))?,
            None => heapless::Vec::new(),
        },
    };
    let known_peers = known_peers
        .or_else(|| env.var("PARLO_KNOWN_PEERS").map(PathBuf::from))
        .unwrap_or_else(|| default_known_peers(&identity));
    let max_clock_skew_ms = max_clock_skew_ms.unwrap_or(300_000);
    let rekey_after_ms = rekey_after_ms.unwrap_or(120_000);
    Ok(Command::Run(Box::new(PhoneConfig {
        server,
        name,
        listen,
        audio,
        codecs,
        control,
        json,
        auto_answer,
        answer_timeout_ms,
        log_level,
        identity,
        server_key,
        security,
        original_phones,
        answer_from,
        known_peers,
        max_clock_skew_ms,
        rekey_after_ms,
        messages_from,
    })))
}

fn parse_security(text: &str) -> Result<Security, Error> {
    Security::from_name(&text.to_ascii_lowercase()).ok_or_else(|| {
        usage(format!(
            "--security: expected required, preferred or off, got {text:?}"
        ))
    })
}

fn parse_original_phones(text: &str) -> Result<bool, Error> {
    match text.to_ascii_lowercase().as_str() {
        "allow" | "allowed" | "yes" => Ok(true),
        "refuse" | "refused" | "no" => Ok(false),
        _ => Err(usage(format!(
            "--original-phones: expected allow or refuse, got {text:?}"
        ))),
    }
}

/// A comma-separated list of names for `flag`, at most `N` (the same name twice counts
/// once).
fn parse_names<const N: usize>(flag: &str, text: &str) -> Result<heapless::Vec<Name, N>, Error> {
    let mut names = heapless::Vec::new();
    for item in text.split(',') {
        let name = Name::new(item.trim()).map_err(|e| usage(format!("{flag}: {item:?}: {e}")))?;
        if names.contains(&name) {
            continue;
        }
        names
            .push(name)
            .map_err(|_| usage(format!("{flag}: more than {N} names; list at most {N}")))?;
    }
    Ok(names)
}

/// A whole number of seconds from `min` to `max`, as milliseconds.
fn parse_seconds(flag: &str, text: &str, min: u64, max: u64) -> Result<u64, Error> {
    match text.parse::<u64>() {
        Ok(secs) if (min..=max).contains(&secs) => Ok(secs * 1000),
        _ => Err(usage(format!(
            "{flag}: expected a whole number of seconds from {min} to {max}, got {text:?}"
        ))),
    }
}

/// Where other phones' keys are pinned by default: beside the identity, in `known_peers`.
pub fn default_known_peers(identity: &Path) -> PathBuf {
    identity.with_file_name("known_peers")
}

fn parse_ctl(mut parser: lexopt::Parser, env: &dyn Env) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut control: Option<PathBuf> = None;
    let mut words: Vec<String> = Vec::new();
    let mut format = None;
    let mut no_wait = false;
    let mut timeout = None;
    // Options may come before or after the command's words (`ctl watch --json`).
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("control") => {
                control = Some(parser.value().map_err(from_lexopt)?.into());
            }
            Long("json") => format = Some(Format::Json),
            Long("text") => format = Some(Format::Text),
            Long("no-wait") => no_wait = true,
            Long("timeout") => timeout = Some(parse_wait(&text(&mut parser, "--timeout")?)?),
            Short('h') | Long("help") => return Ok(Command::Help(CTL_HELP)),
            Value(word) => {
                words.push(word.into_string().map_err(|w| {
                    usage(format!("ctl: {} is not valid UTF-8", w.to_string_lossy()))
                })?)
            }
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    let control = control
        .or_else(|| env.var("PARLO_CONTROL").map(PathBuf::from))
        .ok_or_else(|| usage("ctl: --control PATH is required (or PARLO_CONTROL)"))?;
    if no_wait && timeout.is_some() {
        return Err(usage(
            "ctl: --no-wait and --timeout contradict each other: give one",
        ));
    }
    let command = (!words.is_empty()).then(|| words.join(" "));
    let wait = (!no_wait).then(|| timeout.unwrap_or(CALL_WAIT));
    Ok(Command::Ctl(Ctl {
        control,
        command,
        format,
        wait,
    }))
}

fn parse_wait(text: &str) -> Result<Duration, Error> {
    match text.parse::<u64>() {
        Ok(secs) if (1..=86_400).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(usage(format!(
            "--timeout: expected a whole number of seconds from 1 to 86400, got {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Env for FakeEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|v| (*v).to_owned())
        }
    }

    fn no_env() -> FakeEnv {
        FakeEnv(HashMap::new())
    }

    fn parse_words(words: &str, env: &FakeEnv) -> Result<Command, Error> {
        parse(words.split_whitespace().map(OsString::from), env)
    }

    fn config(words: &str, env: &FakeEnv) -> PhoneConfig {
        match parse_words(words, env) {
            Ok(Command::Run(config)) => *config,
            other => panic!("{words}: expected a phone config, got {other:?}"),
        }
    }

    fn usage_error(words: &str, env: &FakeEnv) -> String {
        match parse_words(words, env) {
            Err(Error::Usage(text)) => text,
            other => panic!("{words}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config("--server 127.0.0.1 --name alice", &no_env());
        assert_eq!(
            c.server,
            ServerAddr {
                host: "127.0.0.1".into(),
                port: 10000
            }
        );
        assert_eq!(c.name.as_str(), "alice");
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.audio, DeviceSpec::Cpal { device: None });
        assert_eq!(c.control, None);
        assert!(!c.json && !c.auto_answer);
        assert_eq!(c.answer_timeout_ms, 7_000);
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.codecs.to_string(), "L16,PCMU");
    }

    #[test]
    fn codecs_in_preference_order() {
        let c = config("--server 127.0.0.1 --name a --codecs pcmu,L16", &no_env());
        assert_eq!(c.codecs.to_string(), "PCMU,L16");
        let c = config("--server 127.0.0.1 --name a --codecs PCMU", &no_env());
        assert_eq!(c.codecs.to_string(), "PCMU");
        let env = FakeEnv(HashMap::from([("PARLO_CODECS", "PCMU")]));
        assert_eq!(
            config("--server 127.0.0.1 --name a", &env)
                .codecs
                .to_string(),
            "PCMU"
        );
        assert!(
            usage_error("--server 127.0.0.1 --name a --codecs OPUS", &no_env())
                .contains("unknown codec \"OPUS\"")
        );
        assert!(
            usage_error("--server 127.0.0.1 --name a --codecs L16,,PCMU", &no_env())
                .contains("unknown codec")
        );
        assert!(
            usage_error("--server 127.0.0.1 --name a --codecs L16,L16", &no_env())
                .contains("twice")
        );
    }

    #[test]
    fn every_flag() {
        let c = config(
            "--server 127.0.0.1:4000 --name bob --listen 127.0.0.3:6000 --audio null \
             --control /tmp/x.sock --json --auto-answer --answer-timeout 12 --log-level debug",
            &no_env(),
        );
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.listen, "127.0.0.3:6000".parse().expect("address"));
        assert_eq!(c.audio, DeviceSpec::Null);
        assert_eq!(c.control, Some(PathBuf::from("/tmp/x.sock")));
        assert!(c.json && c.auto_answer);
        assert_eq!(c.answer_timeout_ms, 12_000);
        assert_eq!(c.log_level, LevelFilter::Debug);
    }

    #[test]
    fn server_addresses() {
        for (text, host, port) in [
            ("10.0.0.1", "10.0.0.1", 10000),
            ("10.0.0.1:2000", "10.0.0.1", 2000),
            ("::1", "::1", 10000),
            ("[::1]:2000", "::1", 2000),
            ("directory.local", "directory.local", 10000),
            ("dir-1.example.org:12000", "dir-1.example.org", 12000),
        ] {
            assert_eq!(
                parse_server(text).ok(),
                Some(ServerAddr {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        }
        for bad in [
            "",
            "300.1.1.1",
            "1.2.3",
            "a..b",
            "-x",
            "a b",
            "h:0",
            "host:",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_originals_rules_and_messages() {
        assert!(
            usage_error("--server 999.1.1.1 --name a", &no_env())
                .contains("the server address is invalid")
        );
        assert!(
            usage_error("--server 127.0.0.1:80 --name a", &no_env())
                .contains("choose a port from 1024 to 65535")
        );
        assert!(
            usage_error("--server 127.0.0.1:70000 --name a", &no_env())
                .contains("choose a port from 1024 to 65535")
        );
        assert!(
            usage_error("--server 127.0.0.1 --name a --listen 0.0.0.0:53", &no_env())
                .contains("choose a port from 1024 to 65535")
        );
        assert!(
            usage_error("--server 127.0.0.1", &no_env())
                .contains("--name is required (or PARLO_NAME)")
        );
        assert!(
            parse(
                ["--server", "127.0.0.1", "--name", ""].map(OsString::from),
                &no_env()
            )
            .is_err()
        );
        assert!(usage_error("--server 127.0.0.1 --name a\u{200b}b", &no_env()).contains("--name"));
        assert!(usage_error("--name a", &no_env()).contains("--server is required"));
        assert!(
            usage_error("--server 127.0.0.1 --name a --answer-timeout 0", &no_env())
                .contains("1 to 600")
        );
        assert!(
            usage_error("--server 127.0.0.1 --name a --audio alsa", &no_env()).contains("--audio")
        );
        assert!(
            usage_error(
                "--server 127.0.0.1 --name a --audio file:/nonexistent/in.wav",
                &no_env()
            )
            .contains("cannot open the input WAV file")
        );
        let input = TempWav::new("out-dir");
        let words = format!(
            "--server 127.0.0.1 --name a --audio file:{},/nonexistent/out.wav",
            input.0.display()
        );
        assert!(usage_error(&words, &no_env()).contains("does not exist"));
        assert!(usage_error("--server 127.0.0.1 --name a --bogus", &no_env()).contains("bogus"));
    }

    /// A WAV file of Parlo's format, removed on drop.
    struct TempWav(PathBuf);

    impl TempWav {
        fn new(tag: &str) -> TempWav {
            let path = std::env::temp_dir()
                .join(format!("parlo-cli-test-{tag}-{}.wav", std::process::id()));
            let spec = parlo_audio::device::wav_spec();
            let writer = hound::WavWriter::create(&path, spec).expect("a temporary WAV file");
            writer.finalize().expect("a temporary WAV file");
            TempWav(path)
        }
    }

    impl Drop for TempWav {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_microphone_file_must_be_a_wav_file_of_parlos_format() {
        let good = TempWav::new("good");
        let c = config(
            &format!(
                "--server 127.0.0.1 --name a --audio file:{}",
                good.0.display()
            ),
            &no_env(),
        );
        assert!(matches!(c.audio, DeviceSpec::File { .. }));
        // This test's own executable: a file, but no WAV.
        let not_wav = std::env::current_exe().expect("some existing file");
        let said = usage_error(
            &format!(
                "--server 127.0.0.1 --name a --audio file:{}",
                not_wav.display()
            ),
            &no_env(),
        );
        assert!(said.starts_with("--audio: "), "{said}");
        assert!(said.contains("is not a WAV file"), "{said}");
        assert!(said.contains("sox "), "{said}");
    }

    #[test]
    fn every_port_is_refused_in_the_same_words() {
        let server = "port 80 is below 1024; choose a port from 1024 to 65535 (see --help)";
        let listen = "port 80 is below 1024; choose a port from 1024 to 65535, or 0 for a \
                      free port (see --help)";
        for (words, said) in [
            (
                "--server 127.0.0.1:80 --name a",
                format!("--server: {server}"),
            ),
            ("--server [::1]:80 --name a", format!("--server: {server}")),
            (
                "--server directory.local:80 --name a",
                format!("--server: {server}"),
            ),
            (
                "--server 127.0.0.1 --name a --listen 0.0.0.0:80",
                format!("--listen: {listen}"),
            ),
        ] {
            assert_eq!(
                parse_words(words, &no_env())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(said),
                "{words}"
            );
        }
        let env = FakeEnv(HashMap::from([("PARLO_LISTEN", "0.0.0.0:80")]));
        assert_eq!(
            usage_error("--server 127.0.0.1 --name a", &env),
            "PARLO_LISTEN (environment): --listen: port 80 is below 1024; choose a port from \
             1024 to 65535, or 0 for a free port"
        );
    }

    #[test]
    fn a_phone_may_listen_on_a_free_port_the_system_picks() {
        let c = config(
            "--server 127.0.0.1 --name a --listen 127.0.0.1:0",
            &no_env(),
        );
        assert_eq!(c.listen, "127.0.0.1:0".parse().expect("address"));
        assert!(usage_error("--server 127.0.0.1:0 --name a", &no_env()).contains("port 0"));
    }

    #[test]
    fn environment_fills_in_and_flags_override() {
        let env = FakeEnv(HashMap::from([
            ("PARLO_SERVER", "127.0.0.9:11000"),
            ("PARLO_NAME", "door"),
            ("PARLO_LISTEN", "127.0.0.9:5002"),
            ("PARLO_AUDIO", "tone:1000"),
            ("PARLO_CONTROL", "/run/parlo/control"),
            ("PARLO_JSON", "yes"),
            ("PARLO_AUTO_ANSWER", "1"),
            ("PARLO_ANSWER_TIMEOUT", "20"),
            ("PARLO_LOG_LEVEL", "warn"),
        ]));
        let c = config("", &env);
        assert_eq!(c.server.port, 11000);
        assert_eq!(c.name.as_str(), "door");
        assert_eq!(c.listen.port(), 5002);
        assert_eq!(c.audio, DeviceSpec::Tone { hz: 1000 });
        assert_eq!(c.control, Some(PathBuf::from("/run/parlo/control")));
        assert!(c.json && c.auto_answer);
        assert_eq!(c.answer_timeout_ms, 20_000);
        assert_eq!(c.log_level, LevelFilter::Warn);
        let c = config("--name hall --audio null", &env);
        assert_eq!(c.name.as_str(), "hall");
        assert_eq!(c.audio, DeviceSpec::Null);

        let bad = FakeEnv(HashMap::from([
            ("PARLO_SERVER", "127.0.0.1"),
            ("PARLO_NAME", "x"),
            ("PARLO_JSON", "maybe"),
        ]));
        assert!(usage_error("", &bad).contains("PARLO_JSON"));
        let bad = FakeEnv(HashMap::from([("PARLO_SERVER", "127.0.0.1:1")]));
        assert!(usage_error("--name x", &bad).contains("PARLO_SERVER (environment)"));
    }

    fn ctl(words: &str) -> Ctl {
        match parse_words(words, &no_env()) {
            Ok(Command::Ctl(ctl)) => ctl,
            other => panic!("{words}: expected ctl, got {other:?}"),
        }
    }

    #[test]
    fn ctl_options_come_before_or_after_the_command() {
        let plain = ctl("ctl --control /tmp/c call bob");
        assert_eq!(
            plain,
            Ctl {
                control: PathBuf::from("/tmp/c"),
                command: Some("call bob".into()),
                format: None,
                wait: Some(CALL_WAIT),
            }
        );
        assert_eq!(ctl("ctl --control /tmp/c").command, None);
        for words in [
            "ctl --control /tmp/c --json watch",
            "ctl --control /tmp/c watch --json",
            "ctl watch --control /tmp/c --json",
        ] {
            let c = ctl(words);
            assert_eq!(c.command.as_deref(), Some("watch"), "{words}");
            assert_eq!(c.format, Some(Format::Json), "{words}");
            assert_eq!(c.control, Path::new("/tmp/c"), "{words}");
        }
        assert_eq!(
            ctl("ctl --control c --text status").format,
            Some(Format::Text)
        );
        for words in [
            "ctl --control c --no-wait call bob",
            "ctl --control c call --no-wait bob",
        ] {
            let c = ctl(words);
            assert_eq!(
                (c.command.as_deref(), c.wait),
                (Some("call bob"), None),
                "{words}"
            );
        }
        let c = ctl("ctl --control c call bob --timeout 30");
        assert_eq!(c.wait, Some(Duration::from_secs(30)));
        assert!(
            usage_error("ctl --control c --no-wait --timeout 3 call bob", &no_env())
                .contains("contradict")
        );
        assert!(
            usage_error("ctl --control c --timeout 0 call bob", &no_env()).contains("1 to 86400")
        );
        assert!(matches!(
            parse_words("ctl call bob --help", &no_env()),
            Ok(Command::Help(CTL_HELP))
        ));
    }

    #[test]
    fn subcommands() {
        assert!(matches!(
            parse_words("ctl --control /tmp/c call bob", &no_env()),
            Ok(Command::Ctl(Ctl { control, command: Some(c), .. }))
                if control == Path::new("/tmp/c") && c == "call bob"
        ));
        assert!(usage_error("ctl status", &no_env()).contains("--control"));
        assert!(matches!(
            parse_words("devices", &no_env()),
            Ok(Command::Devices)
        ));
        for help in ["devices --help", "devices -h"] {
            assert!(matches!(
                parse_words(help, &no_env()),
                Ok(Command::Help(DEVICES_HELP))
            ));
        }
        assert!(usage_error("devices now", &no_env()).contains("now"));
        assert!(matches!(
            parse_words("--help", &no_env()),
            Ok(Command::Help(HELP))
        ));
        assert!(matches!(
            parse_words("ctl --help", &no_env()),
            Ok(Command::Help(CTL_HELP))
        ));
    }

    #[test]
    fn help_explains_every_field_of_status() {
        use crate::output::{Event, Registration, Status};
        let status = Event::Status(Box::new(Status {
            state: "in-call",
            peer: Some("bob".into()),
            peer_addr: Some(SocketAddr::from(([127, 0, 0, 1], 5001))),
            dialect: Some("parlo"),
            registration: Registration::Unregistered {
                reason: "the name is taken".into(),
            },
            ..Status::default()
        }));
        let text = status.text();
        let keys: Vec<&str> = text
            .split(' ')
            .filter_map(|field| field.split_once('=').map(|(key, _)| key))
            .collect();
        assert!(keys.len() > 15, "{text}");
        let section = &HELP[HELP.find("STATUS").expect("a STATUS section")..];
        for key in keys {
            // The key as a word of the section: `key`, `key,` or `key=`.
            let explained = section.split([' ', '\n']).any(|word| {
                word.trim_end_matches([',', '=']) == key || word.starts_with(&format!("{key}="))
            });
            assert!(explained, "status field {key} is not explained in --help");
        }
    }

    #[test]
    fn help_mentions_every_flag_and_variable() {
        for word in [
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
            "PARLO_SERVER",
            "PARLO_NAME",
            "PARLO_LISTEN",
            "PARLO_AUDIO",
            "PARLO_CONTROL",
            "PARLO_JSON",
            "PARLO_AUTO_ANSWER",
            "PARLO_ANSWER_TIMEOUT",
            "PARLO_LOG_LEVEL",
            "PARLO_CODECS",
            "--security",
            "--original-phones",
            "--answer-from",
            "--known-peers",
            "--max-clock-skew",
            "--rekey-after",
            "PARLO_SECURITY",
            "PARLO_ORIGINAL_PHONES",
            "PARLO_ANSWER_FROM",
            "PARLO_KNOWN_PEERS",
            "--messages-from",
            "PARLO_MESSAGES_FROM",
        ] {
            assert!(HELP.contains(word), "{word}");
        }
    }

    mod keys {
        use super::*;

        #[test]
        fn the_identity_lives_in_the_state_directory() {
            let words = "--server 127.0.0.1 --name alice";
            let systemd = FakeEnv(HashMap::from([
                ("STATE_DIRECTORY", "/var/lib/parlo-client:/other"),
                ("HOME", "/home/a"),
            ]));
            assert_eq!(
                config(words, &systemd).identity,
                PathBuf::from("/var/lib/parlo-client/identity")
            );
            let xdg = FakeEnv(HashMap::from([
                ("XDG_STATE_HOME", "/home/a/state"),
                ("HOME", "/home/a"),
            ]));
            assert_eq!(
                config(words, &xdg).identity,
                PathBuf::from("/home/a/state/parlo/identity")
            );
            let home = FakeEnv(HashMap::from([("HOME", "/home/a")]));
            assert_eq!(
                config(words, &home).identity,
                PathBuf::from("/home/a/.local/state/parlo/identity")
            );
            assert_eq!(
                known_servers(&config(words, &home).identity),
                PathBuf::from("/home/a/.local/state/parlo/known-servers")
            );
            let given = FakeEnv(HashMap::from([("PARLO_IDENTITY", "/etc/parlo/key")]));
            assert_eq!(
                config(words, &given).identity,
                PathBuf::from("/etc/parlo/key")
            );
            let flag = config(&format!("{words} --identity /x/id"), &given);
            assert_eq!(flag.identity, PathBuf::from("/x/id"));
        }

        #[test]
        fn the_server_key_is_a_44_character_key_by_flag_or_environment() {
            let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
            let words = "--server 127.0.0.1 --name alice";
            assert_eq!(config(words, &no_env()).server_key, None);
            let c = config(&format!("{words} --server-key {key}"), &no_env());
            assert_eq!(c.server_key, Some(PublicKey([0; 32])));
            let env = FakeEnv(HashMap::from([("PARLO_SERVER_KEY", key)]));
            assert_eq!(config(words, &env).server_key, Some(PublicKey([0; 32])));
            let error = usage_error(&format!("{words} --server-key nope"), &no_env());
            assert!(error.starts_with("--server-key: "), "{error}");
            let bad = FakeEnv(HashMap::from([("PARLO_SERVER_KEY", "nope")]));
            let error = usage_error(words, &bad);
            assert!(
                error.starts_with("PARLO_SERVER_KEY (environment)"),
                "{error}"
            );
        }

        #[test]
        fn keygen_and_id_take_the_identity_like_the_phone() {
            let home = FakeEnv(HashMap::from([("HOME", "/home/a")]));
            assert!(matches!(
                parse_words("keygen --force", &home),
                Ok(Command::Keygen { identity, force: true })
                    if identity == Path::new("/home/a/.local/state/parlo/identity")
            ));
            assert!(matches!(
                parse_words("id --identity /x/id", &home),
                Ok(Command::Id { identity }) if identity == Path::new("/x/id")
            ));
            assert!(parse_words("id --force", &home).is_err());
        }
    }
}
