//! parlo-client: the Parlo phone daemon.
//!
//! Registers its name with the directory server, places and answers calls peer to peer
//! over UDP, and carries the audio (DESIGN.md §2, §4, §6, §7). The call protocol is
//! parlo-fsm's machine and the wire formats are parlo-net's; this crate is the shell
//! around them: the event loop and sockets ([`phone`]), the directory connection
//! ([`directory`]), the media path ([`media`]), commands ([`command`], [`stdin`],
//! [`control`]), events ([`output`]) and the command line ([`cli`]).
//!
//! Exit codes are the original's: 0 done, 1 warning, 2 critical error, 3 unknown error.

mod alloc_count;
mod cli;
mod command;
mod control;
mod convert;
mod directory;
mod error;
mod media;
mod output;
mod phone;
mod stdin;

use std::process::ExitCode;

use cli::Command;
use error::{Error, Exit};
use simplelog::{ConfigBuilder, WriteLogger};

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

fn init_logging(level: log::LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .build();
    // Only fails when a logger is already installed, which would then be used instead.
    let _ = WriteLogger::init(level, config, std::io::stderr());
}

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
        Command::Ctl { control, command } => control::ctl(&control, command.as_deref()),
        Command::Run(config) => {
            init_logging(config.log_level);
            phone::Phone::new(*config)?.run()
        }
    }
}

fn main() -> ExitCode {
    let outcome = std::panic::catch_unwind(run);
    let exit = match outcome {
        Ok(Ok(exit)) => exit,
        Ok(Err(error)) => {
            eprintln!("parlo-client: {error}");
            error.exit()
        }
        // The panic message is already on stderr (default hook).
        Err(_) => Exit::Unknown,
    };
    ExitCode::from(exit as u8)
}
