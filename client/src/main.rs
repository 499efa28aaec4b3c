//! parlo-client: the Parlo phone daemon (see the library's documentation).
//!
//! Exit codes are the original's: 0 done, 1 warning, 2 critical error, 3 unknown error.

use std::process::ExitCode;

use parlo_client::cli::{self, Command};
use parlo_client::error::{Error, Exit};
use parlo_client::{control, phone};
use parlo_daemon::identity;
use parlo_daemon::logging::{self, Sink};
use parlo_net::directory::PublicKey;
use parlo_net::noise::{SecretKey, fingerprint};

fn run() -> Result<Exit, Error> {
    match cli::parse(std::env::args_os().skip(1), &cli::ProcessEnv)? {
        Command::Help(text) => {
            print!("{text}");
            Ok(Exit::Done)
        }
        Command::Version => {
            println!("parlo-client {}", env!("CARGO_PKG_VERSION"));
            Ok(Exit::Done)
        }
        Command::Devices => {
            let devices = parlo_audio::devices().map_err(Error::Audio)?;
            if devices.is_empty() {
                println!("no sound device found (use --audio file:..., tone or null)");
            }
            for device in devices {
                println!("{device}");
            }
            Ok(Exit::Done)
        }
        Command::Ctl(request) => control::ctl(&request),
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
        Command::Run(config) => {
            // Direct: the phone's helper threads log too, and its loop is mostly asleep.
            logging::init(config.log_level, Sink::Direct);
            phone::Phone::new(*config)?.run()
        }
    }
}

/// `id`'s and `keygen`'s output: the public key, then its fingerprint.
fn print_id(key: &PublicKey) {
    println!("key {key}");
    println!("fingerprint {}", fingerprint(key));
}

fn main() -> ExitCode {
    parlo_daemon::main("parlo-client", run)
}
