use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in parlo-audio.
#[derive(Debug)]
pub enum Error {
    /// The device spec names no known kind of device.
    UnknownDevice {
        /// The spec as given.
        spec: String,
    },
    /// The device spec has a known kind but a malformed argument.
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A WAV file could not be opened, read, created, written or finalized.
    Wav {
        /// The file.
        path: PathBuf,
        /// What was being done: "open", "read", "create", "write", "finalize".
        action: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The input WAV file is not 8 kHz mono 16-bit integer PCM.
    WavFormat {
        /// The file.
        path: PathBuf,
        /// Its actual format, described for a user.
        found: String,
    },
    /// The device thread could not be started.
    Thread(std::io::Error),
    /// The device thread panicked.
    ThreadPanicked,
    /// No sound device has the requested name.
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The names that exist (may be empty).
        available: Vec<String>,
    },
    /// The sound system has no default device for this direction.
    NoDefaultDevice {
        /// "input" or "output".
        direction: &'static str,
    },
    /// The sound system refused an operation on a device.
    Sound {
        /// What was being done, e.g. "open the input stream of \"default\"".
        action: String,
        /// The sound system's message.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownDevice { spec } => write!(
                f,
                "unknown audio device {spec:?}: expected cpal[:DEVICE], file:IN.wav[,OUT.wav], \
                 tone[:HZ] or null"
            ),
            Error::BadSpec { spec, reason } => write!(f, "bad audio device {spec:?}: {reason}"),
            Error::Wav {
                path,
                action,
                message,
            } => write!(f, "cannot {action} WAV file {}: {message}", path.display()),
            Error::WavFormat { path, found } => write!(
                f,
                "WAV file {} is {found}; Parlo needs 8000 Hz mono 16-bit PCM \
                 (convert it, e.g. `sox IN -r 8000 -c 1 -b 16 OUT.wav`)",
                path.display()
            ),
            Error::Thread(e) => write!(f, "cannot start the audio thread: {e}"),
            Error::ThreadPanicked => write!(f, "the audio thread panicked"),
            Error::NoSuchDevice { name, available } => {
                write!(f, "no sound device named {name:?}")?;
                if available.is_empty() {
                    write!(f, " (no sound devices found)")
                } else {
                    write!(f, "; available: {}", available.join(", "))
                }
            }
            Error::NoDefaultDevice { direction } => write!(
                f,
                "no default sound {direction} device (is there a sound card, or an ALSA \
                 default PCM?); `parlo-client devices` lists the devices"
            ),
            Error::Sound { action, message } => write!(f, "cannot {action}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Thread(e) => Some(e),
            _ => None,
        }
    }
}
