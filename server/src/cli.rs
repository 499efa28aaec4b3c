//! The command line: `parlo-server [OPTIONS]`, `parlo-server users [--db PATH] [--watch]`,
//! `parlo-server names [--db PATH]`, `parlo-server release NAME [--db PATH]`,
//! `parlo-server keygen [--identity PATH] [--force]` and `parlo-server id [--identity PATH]`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::error::Error;

/// `--help` text of the daemon.
pub const HELP: &str = "\
parlo-server: the Parlo directory server. Phones register their name on a TCP connection
and look each other up; a registration lives as long as its connection.

USAGE:
    parlo-server [OPTIONS]
    parlo-server users [--db PATH] [--watch]
    parlo-server names [--db PATH]
    parlo-server release NAME [--db PATH]
    parlo-server keygen [--identity PATH] [--force]
    parlo-server id [--identity PATH]

NAMES AND KEYS:
    A phone on an encrypted connection proves a key. The first key to register a name owns
    it, for good (the database keeps the binding across restarts): a REG of that name with
    another key, or on a plain connection (original clients), is refused with \"Error
    Registering\" and a reason. Its own key gets it back at once, even while a stale
    registration of it is held (the old connection is closed). Names no key owns stay
    first come, first served, for plain clients too. `names` lists the bindings;
    `release NAME` frees one (a running server sees it within a second or two).

OPTIONS:
    --listen ADDR:PORT      Address and TCP port to listen on: port 1024-65535, or 0 for a
                            free port.                                  [default: 0.0.0.0:10000]
    --db PATH               SQLite database holding the live directory (read by `users`)
                            and the names bound to keys (`names`, kept across restarts).
                            A mirror: while it cannot be written (locked by another
                            program, disk full, damaged: moved aside) the server serves
                            from memory, logs why, and rewrites it once it can.
                            [default: $STATE_DIRECTORY/directory.db under systemd,
                             else ./parlo-directory.db]
    --identity PATH         The server's key pair (X25519), made on first start, mode
                            0600; refused if its group or others may read it. Phones
                            encrypt to its public key (`parlo-server id` prints it).
                            [default: the file `identity` beside the database:
                             $STATE_DIRECTORY/identity under systemd, else ./identity]
    --max-clients N         Connections held at once; the next ones get an error and are
                            closed. Capped by the open-files limit, and by the memory
                            limit (MemoryMax=) at ~56 KiB a connection.  [default: 16384]
    --max-per-address N     Connections held at once from one source address; the next
                            ones from it get an error and are closed, so that one host
                            cannot fill the server; 0 = no limit.         [default: 64]
    --log-level LEVEL       off, error, warn, info (registrations, disconnections, errors),
                            debug (also every lookup), trace.            [default: info]
    --idle-timeout SECS     Close a connection that sends nothing for SECS seconds, which
                            removes its registration; 0 = never. Original clients are
                            silent between calls: keep 0 for them.       [default: 0]
    --request-timeout SECS  Close a connection that starts a request and does not finish
                            it within SECS seconds; 0 = never.           [default: 10]
    --unregistered-timeout SECS
                            Close a connection that holds no registration for SECS
                            seconds (from its start, or from its DISCONNECT); phones
                            register as soon as they connect. 0 = never.  [default: 30]
    --keepalive SECS        TCP keepalive: probe a peer silent for SECS seconds and drop it
                            (and its registration) when 3 probes 10 s apart go unanswered,
                            e.g. a box that lost power; 0 = off.          [default: 60]
    --names FILE            Bind names to keys for a managed site, at every start: one
                            `NAME KEY` a line (the key as `parlo-client id` prints it),
                            # starts a comment. Over what the database held for those
                            names. A bad line stops the server (exit 2) and says which.
    --require-keys          Register only phones that prove a key: plain REGs (original
                            clients) are refused, saying why. Lookups (GET, LIST) and
                            PING are still answered on plain connections.
    -h, --help              Print this help.
    -V, --version           Print the version.

SIGNALS:
    SIGTERM, SIGINT         Stop: close every connection, clear the directory in the
                            database, exit 0.
    SIGHUP                  Log a status line (connections, registrations, counters) and
                            reopen the database file, rewriting the live directory into it
                            (use after moving, deleting or restoring the file).

FILES:
    The database, and beside it DB.bindings: a copy of the name bindings in the --names
    format, read only when the database cannot be read at start (locked, damaged). While
    neither can be read, names not bound by --names are not registered at all (the REG
    is refused, saying why), so that no name goes to another key for want of its binding.

EXIT CODES:
    0 stopped on request    1 stopped, but the database could not always be written
    2 critical error (bad option, bad --names file, port in use, database held by another
      parlo-server or its file impossible to create)    3 unknown error (bug)
";

/// `--help` text of `users`.
pub const USERS_HELP: &str = "\
parlo-server users: print the live directory from the database of a running parlo-server:
name, ip, port, dialect, the first characters of the key the phone proved (- for none),
and since when.

USAGE:
    parlo-server users [--db PATH] [--watch]

OPTIONS:
    --db PATH       The server's database.  [default: as for the server]
    --watch         Print again every second until interrupted.
    -h, --help      Print this help.
";

/// `--help` text of `names`.
pub const NAMES_HELP: &str = "\
parlo-server names: print the names bound to keys (name, key, since when) from the database
of a parlo-server, running or not.

USAGE:
    parlo-server names [--db PATH]

OPTIONS:
    --db PATH       The server's database.  [default: as for the server]
    -h, --help      Print this help.
";

/// `--help` text of `release`.
pub const RELEASE_HELP: &str = "\
parlo-server release: free a name bound to a key, so that the next phone to register it
(with any key, or none) gets it. Works on the database of a running server, which sees
the change within a second or two. A phone registered under the name keeps its
registration until its connection ends: stop it first. A name the server's --names file
binds is bound again at the server's next start: remove it from the file too.

USAGE:
    parlo-server release NAME [--db PATH]

OPTIONS:
    --db PATH       The server's database.  [default: as for the server]
    -h, --help      Print this help.

EXIT CODES:
    0 released    1 the name was not bound    2 critical error (no database, locked)
";

/// `--help` text of `keygen`.
pub const KEYGEN_HELP: &str = "\
parlo-server keygen: make the server's key pair (the server also makes one on first start).

USAGE:
    parlo-server keygen [--identity PATH] [--force]

OPTIONS:
    --identity PATH  Where to keep it (mode 0600).  [default: as for the server]
    --force          Replace an existing key pair: phones that pinned the old public key
                     will refuse this server until they are given the new one.
    -h, --help       Print this help.
";

/// `--help` text of `id`.
pub const ID_HELP: &str = "\
parlo-server id: print the server's public key and its fingerprint, to give to phones
(parlo-client --server-key) and to compare with what they report.

USAGE:
    parlo-server id [--identity PATH]

OPTIONS:
    --identity PATH  The server's key pair.  [default: as for the server]
    -h, --help       Print this help.
";

/// The TCP port the server listens on by default, the original's.
pub const DEFAULT_PORT: u16 = 10000;

/// What the daemon needs to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The SQLite database file.
    pub db: PathBuf,
    /// The server's key pair.
    pub identity: PathBuf,
    /// Most connections held at once.
    pub max_clients: usize,
    /// Most connections held at once from one source address; `None`: no limit.
    pub max_per_address: Option<usize>,
    /// Log verbosity.
    pub log_level: LevelFilter,
    /// Close connections silent for this long.
    pub idle_timeout: Option<Duration>,
    /// Close connections whose request stays incomplete for this long.
    pub request_timeout: Option<Duration>,
    /// Close connections that hold no registration for this long.
    pub unregistered_timeout: Option<Duration>,
    /// Idle time before TCP keepalive probes start.
    pub keepalive: Option<Duration>,
    /// `--names FILE`: names bound to keys at every start.
    pub names: Option<PathBuf>,
    /// Plain REGs are refused.
    pub require_keys: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run the directory server.
    Serve(ServeConfig),
    /// Print the live directory from a database.
    Users { db: PathBuf, watch: bool },
    /// Print the names bound to keys.
    Names { db: PathBuf },
    /// Free a name bound to a key.
    Release {
        db: PathBuf,
        name: parlo_net::directory::Name,
    },
    /// Make the server's key pair.
    Keygen { identity: PathBuf, force: bool },
    /// Print the server's public key and fingerprint.
    Id { identity: PathBuf },
    /// Print this text and exit.
    Help(&'static str),
    /// Print the version and exit.
    Version,
}

/// The default database: in systemd's state directory when there is one.
fn default_db() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several directories separated by ':'; the first is ours.
        Some(dirs) if !dirs.is_empty() => {
            let dirs = dirs.to_string_lossy().into_owned();
            let first = dirs.split(':').next().unwrap_or_default();
            PathBuf::from(first).join("directory.db")
        }
        _ => PathBuf::from("parlo-directory.db"),
    }
}

/// The default identity: the file `identity` beside the database.
fn default_identity(db: &std::path::Path) -> PathBuf {
    db.with_file_name("identity")
}

fn usage(text: impl Into<String>) -> Error {
    Error::Usage(text.into())
}

fn from_lexopt(error: lexopt::Error) -> Error {
    usage(error.to_string())
}

/// The value of `--flag` as text.
fn text(parser: &mut lexopt::Parser, flag: &str) -> Result<String, Error> {
    parlo_daemon::flag_text(parser, flag).map_err(usage)
}

fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Option<Duration>, Error> {
    let value = text(parser, flag)?;
    let secs: u32 = value.parse().map_err(|_| {
        usage(format!(
            "{flag}: expected a whole number of seconds, got {value:?}"
        ))
    })?;
    Ok((secs > 0).then(|| Duration::from_secs(secs.into())))
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut identity: Option<PathBuf> = None;
    let mut config = ServeConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        db: default_db(),
        identity: PathBuf::new(),
        max_clients: 16384,
        // A phone holds one connection, and after a reset maybe a few more until the old
        // ones are found dead (keepalive); 64 leaves room for several phones or tools on
        // one host, while one host holds at most 1/256 of the default 16384 slots.
        max_per_address: Some(64),
        log_level: LevelFilter::Info,
        idle_timeout: None,
        request_timeout: Some(Duration::from_secs(10)),
        unregistered_timeout: Some(Duration::from_secs(30)),
        keepalive: Some(Duration::from_secs(60)),
        names: None,
        require_keys: false,
    };
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("listen") => {
                let value = text(&mut parser, "--listen")?;
                config.listen = parlo_daemon::port::listen_addr("--listen", &value, DEFAULT_PORT)
                    .map_err(usage)?;
            }
            Long("db") => config.db = parser.value().map_err(from_lexopt)?.into(),
            Long("identity") => identity = Some(parser.value().map_err(from_lexopt)?.into()),
            Long("max-clients") => {
                let value = text(&mut parser, "--max-clients")?;
                config.max_clients = match value.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(usage(format!(
                            "--max-clients: expected a number above 0, got {value:?}"
                        )));
                    }
                };
            }
            Long("max-per-address") => {
                let value = text(&mut parser, "--max-per-address")?;
                config.max_per_address = match value.parse::<usize>() {
                    Ok(0) => None,
                    Ok(n) => Some(n),
                    Err(_) => {
                        return Err(usage(format!(
                            "--max-per-address: expected a number (0 for no limit), got \
                             {value:?}"
                        )));
                    }
                };
            }
            Long("log-level") => {
                let value = text(&mut parser, "--log-level")?;
                config.log_level = value.parse().map_err(|_| {
                    usage(format!(
                        "--log-level: expected off, error, warn, info, debug or trace, \
                         got {value:?}"
                    ))
                })?;
            }
            Long("idle-timeout") => config.idle_timeout = seconds(&mut parser, "--idle-timeout")?,
            Long("request-timeout") => {
                config.request_timeout = seconds(&mut parser, "--request-timeout")?;
            }
            Long("unregistered-timeout") => {
                config.unregistered_timeout = seconds(&mut parser, "--unregistered-timeout")?;
            }
            Long("keepalive") => config.keepalive = seconds(&mut parser, "--keepalive")?,
            Long("names") => config.names = Some(parser.value().map_err(from_lexopt)?.into()),
            Long("require-keys") => config.require_keys = true,
            Short('h') | Long("help") => return Ok(Command::Help(HELP)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(word) if word == "users" => return parse_users(parser, config.db),
            Value(word) if word == "names" => return parse_names(parser, config.db),
            Value(word) if word == "release" => return parse_release(parser, config.db),
            Value(word) if word == "keygen" || word == "id" => {
                let identity = identity.unwrap_or_else(|| default_identity(&config.db));
                return parse_keys(parser, word == "keygen", identity);
            }
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    config.identity = identity.unwrap_or_else(|| default_identity(&config.db));
    Ok(Command::Serve(config))
}

/// `keygen` (`make`) or `id`, with their flags.
fn parse_keys(
    mut parser: lexopt::Parser,
    make: bool,
    mut identity: PathBuf,
) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut force = false;
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("identity") => identity = parser.value().map_err(from_lexopt)?.into(),
            Long("force") if make => force = true,
            Short('h') | Long("help") => {
                return Ok(Command::Help(if make { KEYGEN_HELP } else { ID_HELP }));
            }
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    Ok(if make {
        Command::Keygen { identity, force }
    } else {
        Command::Id { identity }
    })
}

fn parse_users(mut parser: lexopt::Parser, mut db: PathBuf) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut watch = false;
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("db") => db = parser.value().map_err(from_lexopt)?.into(),
            Long("watch") => watch = true,
            Short('h') | Long("help") => return Ok(Command::Help(USERS_HELP)),
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    Ok(Command::Users { db, watch })
}

fn parse_names(mut parser: lexopt::Parser, mut db: PathBuf) -> Result<Command, Error> {
    use lexopt::prelude::*;

    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("db") => db = parser.value().map_err(from_lexopt)?.into(),
            Short('h') | Long("help") => return Ok(Command::Help(NAMES_HELP)),
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    Ok(Command::Names { db })
}

fn parse_release(mut parser: lexopt::Parser, mut db: PathBuf) -> Result<Command, Error> {
    use lexopt::prelude::*;

    let mut name = None;
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        match arg {
            Long("db") => db = parser.value().map_err(from_lexopt)?.into(),
            Short('h') | Long("help") => return Ok(Command::Help(RELEASE_HELP)),
            Value(word) if name.is_none() => {
                let word = word.to_string_lossy().into_owned();
                name = Some(parlo_net::directory::Name::new(&word).map_err(|e| {
                    usage(format!(
                        "release: \"{}\" is not a name: {e}",
                        parlo_net::directory::Escaped::text(&word)
                    ))
                })?);
            }
            _ => return Err(from_lexopt(arg.unexpected())),
        }
    }
    let name = name.ok_or_else(|| usage("release: which NAME?"))?;
    Ok(Command::Release { db, name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_words(words: &str) -> Result<Command, Error> {
        parse(words.split_whitespace().map(OsString::from))
    }

    #[test]
    fn defaults() {
        let Ok(Command::Serve(config)) = parse_words("") else {
            panic!("no arguments means serve");
        };
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 10000)));
        assert_eq!(config.max_clients, 16384);
        assert_eq!(config.max_per_address, Some(64));
        assert_eq!(config.idle_timeout, None);
        assert_eq!(config.unregistered_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.keepalive, Some(Duration::from_secs(60)));
    }

    #[test]
    fn every_flag() {
        let Ok(Command::Serve(config)) = parse_words(
            "--listen 127.0.0.5:4000 --db /tmp/x.db --max-clients 7 --log-level debug \
             --idle-timeout 30 --request-timeout 0 --keepalive 0 --max-per-address 3 \
             --unregistered-timeout 0",
        ) else {
            panic!("valid flags");
        };
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 5], 4000)));
        assert_eq!(config.db, PathBuf::from("/tmp/x.db"));
        assert_eq!(config.max_clients, 7);
        assert_eq!(config.max_per_address, Some(3));
        assert_eq!(config.log_level, LevelFilter::Debug);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.request_timeout, None);
        assert_eq!(config.unregistered_timeout, None);
        assert_eq!(config.keepalive, None);
    }

    #[test]
    fn port_0_listens_on_a_free_port() {
        let Ok(Command::Serve(config)) = parse_words("--listen 127.0.0.1:0") else {
            panic!("port 0 is allowed");
        };
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
    }

    #[test]
    fn zero_lifts_the_per_address_limit() {
        let Ok(Command::Serve(config)) = parse_words("--max-per-address 0") else {
            panic!("valid flags");
        };
        assert_eq!(config.max_per_address, None);
    }

    #[test]
    fn users_subcommand_inherits_db() {
        let Ok(Command::Users { db, watch }) = parse_words("--db a.db users --watch") else {
            panic!("users");
        };
        assert_eq!((db, watch), (PathBuf::from("a.db"), true));
        assert!(matches!(
            parse_words("users --db b.db"),
            Ok(Command::Users { watch: false, .. })
        ));
    }

    #[test]
    fn names_flags_and_subcommands() {
        let Ok(Command::Serve(config)) = parse_words("--names site.names --require-keys") else {
            panic!("valid flags");
        };
        assert_eq!(config.names, Some(PathBuf::from("site.names")));
        assert!(config.require_keys);
        assert!(matches!(
            parse_words("--db a.db names"),
            Ok(Command::Names { db }) if db == Path::new("a.db")
        ));
        let Ok(Command::Release { db, name }) = parse_words("release alice --db b.db") else {
            panic!("release");
        };
        assert_eq!((db, name.as_str()), (PathBuf::from("b.db"), "alice"));
        for (words, expected) in [
            ("release", "which NAME"),
            ("release a=b", "not a name"),
            ("release a b", "unexpected"),
        ] {
            let Err(Error::Usage(text)) = parse_words(words) else {
                panic!("{words} must be refused");
            };
            assert!(text.contains(expected), "{words}: {text}");
        }
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        for (words, expected) in [
            ("--listen 10000", "expected ADDR:PORT"),
            (
                "--listen 0.0.0.0:80",
                "--listen: port 80 is below 1024; choose a port from 1024 to 65535, or 0 for a \
                 free port",
            ),
            ("--listen [::]:70000", "port 70000 is above 65535"),
            ("--max-clients 0", "above 0"),
            ("--max-per-address -1", "0 for no limit"),
            ("--log-level loud", "expected off, error"),
            ("--idle-timeout -1", "whole number of seconds"),
            ("--frobnicate", "frobnicate"),
            ("users --bogus", "bogus"),
        ] {
            let Err(Error::Usage(text)) = parse_words(words) else {
                panic!("{words} must be refused");
            };
            assert!(text.contains(expected), "{words}: {text}");
        }
    }

    #[test]
    fn the_identity_lives_beside_the_database() {
        let Ok(Command::Serve(config)) = parse_words("--db /var/lib/parlo/d.db") else {
            panic!("serve");
        };
        assert_eq!(config.identity, PathBuf::from("/var/lib/parlo/identity"));
        let Ok(Command::Serve(config)) = parse_words("--identity /k/id --db a.db") else {
            panic!("serve");
        };
        assert_eq!(config.identity, PathBuf::from("/k/id"));
        assert!(matches!(
            parse_words("--db /s/d.db keygen --force"),
            Ok(Command::Keygen { identity, force: true }) if identity == std::path::Path::new("/s/identity")
        ));
        assert!(matches!(
            parse_words("id --identity /k/id"),
            Ok(Command::Id { identity }) if identity == std::path::Path::new("/k/id")
        ));
        assert!(parse_words("id --force").is_err());
    }

    #[test]
    fn help_mentions_every_flag() {
        for flag in [
            "--listen",
            "--db",
            "--max-clients",
            "--max-per-address",
            "--log-level",
            "--idle-timeout",
            "--request-timeout",
            "--unregistered-timeout",
            "--keepalive",
            "--names",
            "--require-keys",
            "release NAME",
            "--identity",
            "keygen",
            "SIGHUP",
        ] {
            assert!(HELP.contains(flag), "{flag}");
        }
        assert!(matches!(parse_words("--help"), Ok(Command::Help(HELP))));
    }
}
