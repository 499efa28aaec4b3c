use std::fmt;
use std::path::{Path, PathBuf};

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
    /// The input file is not a WAV file of 8 kHz mono 16-bit integer PCM.
    WavFormat {
        /// The file.
        path: PathBuf,
        /// What it is, described for a user after "is": "44100 Hz, stereo, 16-bit PCM",
        /// "not a WAV file (...)".
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
            Error::WavFormat { path, found } => {
                let input = shell_word(&path.display().to_string());
                let output = shell_word(&converted_name(path).display().to_string());
                write!(
                    f,
                    "{} is {found}; Parlo needs a WAV file of 8000 Hz mono 16-bit PCM: convert \
                     it with `sox {input} -r 8000 -c 1 -b 16 {output}` or `ffmpeg -i {input} \
                     -ar 8000 -ac 1 -sample_fmt s16 {output}`",
                    path.display()
                )
            }
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

/// Where a converted copy of `path` could go: beside it, `-8k.wav` in place of `.wav`.
fn converted_name(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or(path.as_os_str());
    let mut name = stem.to_owned();
    name.push("-8k.wav");
    path.with_file_name(name)
}

/// `text` as one shell word, to paste: quoted when it holds anything but plain
/// characters.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Thread(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_error(path: &str, found: &str) -> String {
        Error::WavFormat {
            path: PathBuf::from(path),
            found: found.to_owned(),
        }
        .to_string()
    }

    #[test]
    fn a_wrong_wav_says_what_it_is_what_is_needed_and_how_to_convert_it() {
        assert_eq!(
            format_error("sounds/door.wav", "44100 Hz, stereo, 16-bit PCM"),
            "sounds/door.wav is 44100 Hz, stereo, 16-bit PCM; Parlo needs a WAV file of \
             8000 Hz mono 16-bit PCM: convert it with `sox sounds/door.wav -r 8000 -c 1 -b 16 \
             sounds/door-8k.wav` or `ffmpeg -i sounds/door.wav -ar 8000 -ac 1 -sample_fmt s16 \
             sounds/door-8k.wav`"
        );
    }

    #[test]
    fn the_conversion_commands_can_be_pasted_into_a_shell() {
        let said = format_error("my door's bell.wav", "not a WAV file");
        assert!(
            said.contains(
                "`sox 'my door'\\''s bell.wav' -r 8000 -c 1 -b 16 'my door'\\''s bell-8k.wav'`"
            ),
            "{said}"
        );
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("/a/b-c_d.wav"), "/a/b-c_d.wav");
        assert_eq!(shell_word("$HOME.wav"), "'$HOME.wav'");
        assert_eq!(
            converted_name(Path::new("bell")),
            PathBuf::from("bell-8k.wav")
        );
    }
}
