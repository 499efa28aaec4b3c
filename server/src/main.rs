//! parlo-server: the Parlo directory daemon.
//!
//! Phones keep a TCP connection to it, register their name and look each other up
//! (the protocol, its rules and its wire format live in `parlo_net::directory` and
//! `parlo_net::framing`; `docs/protocol.md` describes it). This crate is the shell around them:
//! the event loop and sockets ([`server`]), the store ([`store`]), the command line
//! ([`cli`]), `parlo-server users` ([`users`]), and names bound to keys as text:
//! `--names`, `parlo-server names` and `release` ([`names`]); what it shares with the phone daemon
//! (exit codes, `main`, logging, waiting for events) is `parlo_daemon`'s.
//!
//! Shape, chosen for thousands of boxes on a small machine:
//! - one thread, one `mio` loop, every socket non-blocking; per connection a fixed
//!   1024-byte receive buffer and a protocol session, nothing else unless its peer stops
//!   reading (then its unsent answers are parked until it does);
//! - answers are gathered in one shared buffer and written with one `write` per read;
//! - the live directory is an in-memory map, which answers every lookup, mirrored into
//!   SQLite (WAL, `synchronous=NORMAL`, cached prepared statements, parameters only) in
//!   transactions committed every 10 ms: one commit carries a whole burst of registrations,
//!   so the disk never paces the protocol. The database holds exactly the live directory
//!   (give or take those 10 ms) for `parlo-server users` and anything else that reads it;
//!   presence is cleared at start-up and at shutdown, as in the original. The WAL
//!   checkpoint, the one database step that waits for the disk (fsync), runs once a second
//!   in a small helper thread with its own connection, never in the loop;
//! - dead peers: TCP keepalive (and a matching TCP_USER_TIMEOUT) by default, an optional
//!   idle limit, and a limit on how long a request may stay half-sent.
//!
//! Exit codes are the original's: 0 done, 1 warning, 2 critical error, 3 unknown error.

mod cli;
mod error;
mod limits;
mod names;
mod quota;
mod server;
mod store;
mod users;

use std::process::ExitCode;

use cli::Command;
use error::{Error, Exit};
use parlo_daemon::identity;
use parlo_daemon::logging::{self, Sink};
use parlo_net::directory::PublicKey;
use parlo_net::noise::{SecretKey, fingerprint};
use server::Stopped;

fn run() -> Result<Exit, Error> {
    match cli::parse(std::env::args_os().skip(1))? {
        Command::Help(text) => {
            print!("{text}");
            Ok(Exit::Done)
        }
        Command::Version => {
            println!("parlo-server {}", env!("CARGO_PKG_VERSION"));
            Ok(Exit::Done)
        }
        Command::Users { db, watch } => {
            users::run(&db, watch)?;
            Ok(Exit::Done)
        }
        Command::Names { db } => {
            names::list(&db)?;
            Ok(Exit::Done)
        }
        Command::Release { db, name } => match names::release(&db, &name)? {
            Some(key) => {
                println!("{name} released (it was bound to {key})");
                Ok(Exit::Done)
            }
            None => {
                println!("{name} is not bound to a key: nothing to release");
                Ok(Exit::Warning)
            }
        },
        Command::Keygen { identity, force } => {
            let key = identity::create(&identity, force).map_err(Error::Identity)?;
            print_id(&SecretKey::from_bytes(key).public());
            Ok(Exit::Done)
        }
        Command::Id { identity } => {
            let key = identity::load(&identity).map_err(Error::Identity)?;
            print_id(&SecretKey::from_bytes(key).public());
            Ok(Exit::Done)
        }
        Command::Serve(config) => {
            logging::init(config.log_level, Sink::Gathered);
            match server::serve(&config)? {
                Stopped::Cleanly => Ok(Exit::Done),
                Stopped::WithDatabaseErrors => Ok(Exit::Warning),
            }
        }
    }
}

/// `id`'s and `keygen`'s output: the public key, then its fingerprint.
fn print_id(key: &PublicKey) {
    println!("key {key}");
    println!("fingerprint {}", fingerprint(key));
}

fn main() -> ExitCode {
    parlo_daemon::main("parlo-server", run)
}
