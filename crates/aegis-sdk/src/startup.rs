//! Starting a process's NATS-side parts while the bus may not be ready yet:
//! [`retry`] runs a start again while its failure may pass by itself (no
//! server answering, JetStream electing its leaders, a bucket still being
//! created), with a growing pause, until a time-out or a shutdown. A
//! failure that needs a fix (refused credentials, a bad setting) ends it at
//! once. `aegis service` and the monitor (`aegis api`) both start this way.

use std::{fmt::Display, future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// The first pause between attempts; doubled per attempt up to
/// [`PAUSE_MAX`].
const PAUSE_START: Duration = Duration::from_millis(200);
const PAUSE_MAX: Duration = Duration::from_secs(2);

/// How a start retried by [`retry`] failed.
#[derive(Debug)]
pub enum StartFailure<E> {
    /// The failure needs a fix: trying again could not help.
    Permanent(E),
    /// Every attempt failed for a reason that may pass, until the time-out.
    TimedOut {
        /// The last attempt's error.
        last: E,
        /// How many attempts were made.
        attempts: u32,
    },
}

/// Runs `start` until it succeeds, fails for a reason `transient` says
/// needs a fix, or `timeout` passes; `Ok(None)` when `shutdown` is
/// cancelled meanwhile. Each retried failure is logged (WARN) with its
/// causes, and a start that needed several attempts says so (INFO).
///
/// The causes are found by walking [`source`](std::error::Error::source)
/// for the SDK's errors ([`ConnectError`](crate::ConnectError),
/// [`ServiceError`](crate::rpc::server::ServiceError), ...),
/// [`std::io::Error`] and any error boxed as
/// `Box<dyn Error + Send + Sync>` or `Box<dyn Error>` (so an error type
/// of your own is logged with its causes once `start` returns it boxed,
/// e.g. `.map_err(Box::<dyn Error + Send + Sync>::from)`); any other
/// error type is logged as its `{:#}` shows it, which for `anyhow` holds
/// the causes.
///
/// ```no_run
/// # async fn demo() {
/// use std::time::Duration;
/// use aegis_sdk::{AegisConfig, Connection, ConnectError, startup::{retry, StartFailure}};
///
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let started = retry(
///     Duration::from_secs(60),
///     &shutdown,
///     || Connection::connect(AegisConfig::with_servers("nats://127.0.0.1:4222")),
///     ConnectError::is_transient,
/// )
/// .await;
/// match started {
///     Ok(Some(conn)) => println!("connected to {}", conn.server_version()),
///     Ok(None) => println!("shut down while waiting"),
///     Err(StartFailure::Permanent(e)) => eprintln!("cannot start: {e}"),
///     Err(StartFailure::TimedOut { last, attempts }) => {
///         eprintln!("not started after {attempts} attempts: {last}")
///     }
/// }
/// # }
/// ```
///
/// # Errors
/// [`StartFailure::Permanent`] at once, or [`StartFailure::TimedOut`]
/// when the next pause would end past `timeout` (a zero `timeout` makes
/// one attempt).
pub async fn retry<T, E, F, Fut>(
    timeout: Duration,
    shutdown: &CancellationToken,
    mut start: F,
    transient: impl Fn(&E) -> bool,
) -> Result<Option<T>, StartFailure<E>>
where
    E: Display + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = crate::clock::deadline(tokio::time::Instant::now(), timeout);
    let mut pause = PAUSE_START;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match start().await {
            Ok(started) => {
                if attempts > 1 {
                    tracing::info!(attempts, "started after waiting for NATS");
                }
                return Ok(Some(started));
            }
            Err(e) => e,
        };
        if !transient(&error) {
            return Err(StartFailure::Permanent(error));
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Err(StartFailure::TimedOut {
                last: error,
                attempts,
            });
        }
        tracing::warn!(error = %failure_line(&error), attempt = attempts,
            "cannot start yet (NATS or JetStream not ready?); retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(PAUSE_MAX);
    }
}

/// `error` and its causes on one line: walked through
/// [`source`](std::error::Error::source) for the error types [`retry`]
/// names, as [`error_line`] shows it otherwise.
fn failure_line<E: Display + 'static>(error: &E) -> String {
    use std::{any::Any, error::Error};
    let any: &dyn Any = error;
    macro_rules! walk {
        ($($known:ty),* $(,)?) => {
            $(
                if let Some(known) = any.downcast_ref::<$known>() {
                    return Causes(known).to_string();
                }
            )*
        };
    }
    walk!(
        crate::ConnectError,
        crate::config::ConfigError,
        crate::rpc::server::ServiceError,
        crate::rpc::RpcError,
        crate::rpc::CodecError,
        crate::registry::RegistryError,
        crate::election::ElectionError,
        crate::discovery::DiscoveryError,
        crate::events::EventError,
        crate::commands::CommandError,
        crate::dead_letter::DeadLetterError,
        crate::feed::FeedBroken,
        crate::kv::MirrorError,
        std::io::Error,
    );
    if let Some(boxed) = any.downcast_ref::<Box<dyn Error + Send + Sync>>() {
        return Causes(boxed.as_ref()).to_string();
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn Error>>() {
        return Causes(boxed.as_ref()).to_string();
    }
    error_line(error)
}

/// An error and its causes on one line, as `{:#}` joins them (`: `), with
/// each cause left out whose text the line already holds: async-nats's
/// connect error repeats its I/O error, which is also its cause, so a line
/// said "Connection refused (os error 111)" twice. [`retry`] logs its
/// failures this way; the `aegis` CLI prints its errors this way too.
///
/// # Examples
///
/// ```
/// use aegis_sdk::startup::error_line;
///
/// let repeated = "cannot connect: IO error: refused: refused";
/// assert_eq!(error_line(&repeated), "cannot connect: IO error: refused");
/// ```
pub fn error_line(error: &impl Display) -> String {
    said_once(format!("{error:#}").split(": "))
}

/// `parts` joined by `: `, each left out whose text the line already
/// holds (the rule of [`error_line`] and [`Causes`]).
fn said_once(parts: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut line = String::new();
    for part in parts {
        let part = part.as_ref();
        if line.contains(part) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(part);
    }
    line
}

/// An error with its causes, for a log line or a message: shown with `{}`,
/// each level once, joined by `: ` as [`error_line`] joins them. The
/// SDK's errors say only their own part and keep the rest as their
/// [`source`](std::error::Error::source), so a bare `{}` of one leaves out
/// why (a registry write's "cannot write … to the registry" without
/// "timed out").
///
/// # Examples
///
/// ```
/// use std::{error::Error, fmt};
/// use aegis_sdk::startup::Causes;
///
/// #[derive(Debug)]
/// struct Write(std::num::ParseIntError);
/// impl fmt::Display for Write {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("cannot write the record")
///     }
/// }
/// impl Error for Write {
///     fn source(&self) -> Option<&(dyn Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let error = Write("x".parse::<u32>().unwrap_err());
/// assert_eq!(error.to_string(), "cannot write the record");
/// assert_eq!(
///     Causes(&error).to_string(),
///     "cannot write the record: invalid digit found in string"
/// );
/// ```
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let levels = std::iter::successors(Some(self.0), |e| e.source());
        f.write_str(&said_once(levels.map(ToString::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_says_each_level_once() {
        let error = crate::registry::RegistryError::Write {
            key: "service-instances.a.b".into(),
            source: "no acknowledgement within 2s".into(),
        };
        assert_eq!(
            error.to_string(),
            "cannot write service-instances.a.b to the registry"
        );
        assert_eq!(
            Causes(&error).to_string(),
            "cannot write service-instances.a.b to the registry: no acknowledgement within 2s"
        );
        let service = crate::rpc::server::ServiceError::Registry(error);
        assert_eq!(
            Causes(&service).to_string(),
            "service registry: cannot write service-instances.a.b to the registry: \
             no acknowledgement within 2s"
        );
    }

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        assert_eq!(
            error_line(
                &"cannot connect to NATS at nats://127.0.0.1:4999: IO error: \
                 Connection refused (os error 111): Connection refused (os error 111)"
            ),
            "cannot connect to NATS at nats://127.0.0.1:4999: IO error: \
             Connection refused (os error 111)"
        );
        assert_eq!(
            error_line(&"creating bucket orders: JetStream not ready: timed out"),
            "creating bucket orders: JetStream not ready: timed out"
        );
    }

    /// What [`retry`] logs while `start` fails with `failure` and then
    /// succeeds.
    async fn logged_while_failing<E: Display + 'static>(failure: impl Fn() -> E) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let started = retry(
            Duration::from_secs(60),
            &shutdown,
            || {
                calls += 1;
                let result = if calls < 2 { Err(failure()) } else { Ok(()) };
                async move { result }
            },
            |_| true,
        )
        .await;
        assert!(matches!(started, Ok(Some(()))));
        String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned()
    }

    /// An error of the SDK's, or any error boxed as `dyn Error`, is
    /// logged with its causes (it says only its own part itself); an
    /// error that says its causes with `{:#}` (anyhow's) still is.
    #[tokio::test(start_paused = true)]
    async fn a_retried_failure_is_logged_with_its_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open the ledger")]
        struct Open(#[source] std::io::Error);

        let registry = || crate::registry::RegistryError::Write {
            key: "service-instances.a.b".into(),
            source: "no acknowledgement within 2s".into(),
        };
        let logged = logged_while_failing(registry).await;
        assert!(
            logged.contains(
                "cannot write service-instances.a.b to the registry: no acknowledgement within 2s"
            ),
            "{logged}"
        );
        let service = || crate::rpc::server::ServiceError::Registry(registry());
        let logged = logged_while_failing(service).await;
        assert!(logged.contains("no acknowledgement within 2s"), "{logged}");

        let boxed = || -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(Open(std::io::Error::other("disk gone")))
        };
        let logged = logged_while_failing(boxed).await;
        assert!(
            logged.contains("cannot open the ledger: disk gone"),
            "{logged}"
        );

        let plain = || "not ready: timed out";
        let logged = logged_while_failing(plain).await;
        assert!(logged.contains("not ready: timed out"), "{logged}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_and_stops_at_what_needs_a_fix() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let started = retry(
            Duration::from_secs(60),
            &shutdown,
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("not ready") } else { Ok(n) } }
            },
            |_| true,
        )
        .await;
        assert!(matches!(started, Ok(Some(3))));

        let failed = retry(
            Duration::from_secs(60),
            &shutdown,
            || async { Err::<(), _>("bad") },
            |_| false,
        )
        .await;
        assert!(matches!(failed, Err(StartFailure::Permanent("bad"))));

        let late = retry(
            Duration::from_secs(1),
            &shutdown,
            || async { Err::<(), _>("down") },
            |_| true,
        )
        .await;
        assert!(
            matches!(
                late,
                Err(StartFailure::TimedOut {
                    last: "down",
                    attempts: 3
                })
            ),
            "{late:?}"
        );

        shutdown.cancel();
        let stopped = retry(
            Duration::from_secs(60),
            &shutdown,
            || async { Err::<(), _>("down") },
            |_| true,
        )
        .await;
        assert!(matches!(stopped, Ok(None)));
    }
}
