//! Helpers shared by [`NatsServerBuilder`](crate::NatsServerBuilder) and
//! [`NatsCluster`](crate::NatsCluster): retrying when a chosen port was taken,
//! temporary directories and unique names.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

use crate::error::TestkitError;

/// Attempts when a freshly chosen port turns out to be taken.
pub(crate) const PORT_ATTEMPTS: u32 = 3;

/// Runs `attempt` again (up to three times in all) when it failed because a
/// chosen port was taken in the meantime.
pub(crate) fn with_port_retries<T>(
    mut attempt: impl FnMut() -> Result<T, TestkitError>,
) -> Result<T, TestkitError> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if e.is_port_conflict() && tries < PORT_ATTEMPTS => tries += 1,
            result => return result,
        }
    }
}

/// A fresh temporary directory for one server.
pub(crate) fn temp_dir() -> io::Result<TempDir> {
    tempfile::Builder::new().prefix("aegis-nats-").tempdir()
}

/// `<pid>-<counter>`: unique among all servers and clusters on the machine.
pub(crate) fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A random password (32 hex digits from `/dev/urandom`; a unique suffix if
/// that cannot be read), for the test servers' system account.
pub(crate) fn random_password() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => format!("pw-{}", unique_suffix()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn conflict() -> TestkitError {
        TestkitError::NotReady {
            server_name: "s".into(),
            reason: "the process exited".into(),
            log_tail: "[FTL] listen tcp 127.0.0.1:1: bind: address already in use".into(),
        }
    }

    #[test]
    fn port_conflicts_are_retried_three_times_in_all() {
        let mut calls = 0;
        let result: Result<(), _> = with_port_retries(|| {
            calls += 1;
            Err(conflict())
        });
        assert!(matches!(result, Err(TestkitError::NotReady { .. })));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result = with_port_retries(|| {
            calls += 1;
            if calls < 2 {
                Err(conflict())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.unwrap(), 2);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = with_port_retries(|| {
            calls += 1;
            Err(TestkitError::Io(io::Error::other("disk full")))
        });
        assert!(matches!(result, Err(TestkitError::Io(_))));
        assert_eq!(calls, 1);
    }
}
