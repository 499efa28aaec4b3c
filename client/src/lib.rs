//! parlo-client: the Parlo phone daemon, as a library (the binary is a thin `main`
//! around [`phone::Phone`]; tests drive the media path in-process).
//!
//! Registers its name with the directory server, places and answers calls peer to peer
//! over UDP, and carries the audio (`docs/architecture.md` shows how). The call protocol is
//! parlo-fsm's machine and the wire formats are parlo-net's; this crate is the shell
//! around them: the user agent that makes the phone's decisions without I/O
//! ([`agent`]), the event loop and sockets ([`phone`]), the directory connection
//! ([`directory`]), the media path ([`media`]), commands ([`command`], [`stdin`],
//! [`control`]), events ([`output`]) and the command line ([`cli`]).
//!
//! Exit codes are the original's: 0 done, 1 warning, 2 critical error, 3 unknown error.

pub mod agent;
pub mod alloc_count;
pub mod cli;
pub mod command;
pub mod control;
pub mod crypto;
pub mod directory;
pub mod error;
pub mod keys;
pub mod mail;
pub mod media;
pub mod output;
pub mod phone;
pub mod pins;
pub mod random;
pub mod stdin;
