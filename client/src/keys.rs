//! The phone's keys: its identity (a static X25519 key pair, `parlo_daemon::identity`) and
//! the directory servers' public keys it pinned on first contact.
//!
//! The pins live in `known-servers`, beside the identity (in the state directory): one
//! line per server, `HOST:PORT KEY`, the server as `--server` names it. A pin is written
//! when a server gives its key on first contact, and from then on that server must hold
//! it: a server with another key is refused (see `parlo_net::directory::client`). To
//! accept a server's new key on purpose, remove its line (or give `--server-key`).

use std::io;
use std::path::{Path, PathBuf};

use parlo_daemon::identity;
use parlo_net::directory::PublicKey;
use parlo_net::directory::client::ServerKey;
use parlo_net::noise::{SecretKey, fingerprint};

use crate::cli::{PhoneConfig, ServerAddr, known_servers};
use crate::error::Error;
use crate::pins;

/// What the phone encrypts its directory connection with.
#[derive(Debug)]
pub struct Keys {
    /// The phone's key pair.
    pub identity: SecretKey,
    /// The server's key: given, or pinned earlier; `None` before first contact.
    pub server: Option<ServerKey>,
    /// Where pins are kept.
    pub known_servers: PathBuf,
}

impl Keys {
    /// The phone's identity (made now if it has none) and what it knows of `config`'s
    /// server's key. Logs both.
    pub fn load(config: &PhoneConfig) -> Result<Keys, Error> {
        let (secret, made) = identity::load_or_create(&config.identity).map_err(Error::Identity)?;
        let identity = SecretKey::from_bytes(secret);
        if made {
            log::info!("made a new identity at {}", config.identity.display());
        }
        let public = identity.public();
        log::info!(
            "phone key {public} (fingerprint {}), identity {}",
            fingerprint(&public),
            config.identity.display()
        );
        let known_servers = known_servers(&config.identity);
        let server = match config.server_key {
            Some(key) => Some(ServerKey {
                key,
                configured: true,
            }),
            None => pinned(&known_servers, &config.server)
                .map_err(|why| Error::KnownServers {
                    path: known_servers.clone(),
                    why,
                })?
                .map(|key| ServerKey {
                    key,
                    configured: false,
                }),
        };
        match server {
            Some(ServerKey { key, configured }) => log::info!(
                "directory server {} key {key} (fingerprint {}, {})",
                config.server,
                fingerprint(&key),
                if configured { "--server-key" } else { "pinned" }
            ),
            None => log::info!(
                "directory server {}: no key known yet; the one it gives on first contact \
                 will be pinned in {}",
                config.server,
                known_servers.display()
            ),
        }
        Ok(Keys {
            identity,
            server,
            known_servers,
        })
    }
}

/// The key pinned for `server` in `file`, if any. A line that cannot be read is an error
/// only when it is `server`'s.
pub fn pinned(file: &Path, server: &ServerAddr) -> Result<Option<PublicKey>, String> {
    pins::pinned(file, &server.to_string())
}

/// Pins `key` for `server` in `file`, replacing any other line for it.
pub fn pin(file: &Path, server: &ServerAddr, key: &PublicKey) -> io::Result<()> {
    pins::pin(
        file,
        "# Directory servers' keys, pinned on first contact: HOST:PORT KEY\n",
        &server.to_string(),
        key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn server(port: u16) -> ServerAddr {
        ServerAddr {
            host: "127.0.0.9".into(),
            port,
        }
    }

    #[test]
    fn pins_are_kept_per_server_and_replaced() {
        let dir = std::env::temp_dir().join(format!("parlo-pins-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = dir.join("known-servers");
        assert_eq!(pinned(&file, &server(10000)), Ok(None));
        pin(&file, &server(10000), &PublicKey([1; 32])).expect("pinned");
        pin(&file, &server(10001), &PublicKey([2; 32])).expect("pinned");
        assert_eq!(pinned(&file, &server(10000)), Ok(Some(PublicKey([1; 32]))));
        pin(&file, &server(10000), &PublicKey([3; 32])).expect("replaced");
        assert_eq!(pinned(&file, &server(10000)), Ok(Some(PublicKey([3; 32]))));
        assert_eq!(pinned(&file, &server(10001)), Ok(Some(PublicKey([2; 32]))));
        fs::write(&file, "127.0.0.9:10000 nonsense\n").expect("write");
        assert!(pinned(&file, &server(10000)).is_err());
        assert_eq!(pinned(&file, &server(10001)), Ok(None));
        let _ = fs::remove_dir_all(&dir);
    }
}
