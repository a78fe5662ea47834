//! `aegis command SERVICE COMMAND [BODY]`: one command sent through the
//! SDK (`Commands::send`), its worker's progress reports on stderr as they
//! arrive, its result as pretty JSON on stdout. A command the worker
//! failed, one no worker took, and one taken but not done in time end
//! non-zero with a line that says which, as `aegis call` reports an RPC's
//! error (`error [CODE]: …`).
//!
//! A command whose worker went silent (it died, or lost its lead) is
//! offered again after the worker's `ack_wait`, and another worker runs it
//! from the start: its progress starts over. Each report names the worker
//! instance that sent it (shown after it, `on INSTANCE`), and a report
//! from another instance than the run's is said as such a restart, in one
//! line naming both, before it is shown. The same instance may take it
//! again too (its process restarted under the same id, or a `leader_of`
//! worker lost its lead and led again): a report of it that goes back
//! after a silence (a lower percentage, or the run's first report again)
//! is said as a restart on it. From a worker that predates naming
//! itself, a report that goes back (a lower percentage at any time, or
//! the run's first report again after a silence) is said as a restart.
//!
//! Before sending, it looks for the service's command consumer on the
//! commands stream (`SERVICE_commands`, made by its first worker and kept):
//! a service none of whose workers ever consumed commands (a typo, most
//! likely) is refused unsent (`NOT_FOUND`), with the services that have
//! command workers and the one it is likely a slip of. Then it asks the
//! service's instances which commands their workers take (`$SRV.INFO`): a
//! command that none lists, while some list others, is refused unsent,
//! with the names they list (`NOT_FOUND`). A service whose instances list
//! no command (its worker runs in a process without an instance of it, or
//! an older SDK) is sent it all the same. `--unlisted` skips both checks,
//! for a worker yet to start or listed nowhere.

use std::{process::ExitCode, time::Duration};

use aegis_contracts::names;
use aegis_sdk::{
    commands::{CommandError, CommandUpdate},
    rpc::ErrorCode,
    startup::Causes,
};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::cli::ConnectArgs;

/// `aegis command`.
#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// Service name: a service with a command worker (`aegis status
    /// SERVICE` lists its commands; the showcase's services have none).
    pub service: String,
    /// Command name, one the service lists under `commands`.
    pub command: String,
    /// Command payload as JSON (default `{}`; `null` to a command that
    /// takes no argument).
    pub body: Option<String>,
    /// How long the result may take, queuing included, in milliseconds
    /// (1 to 600000). A command no worker took by then never runs.
    #[arg(long, default_value_t = 30_000, value_parser = crate::cli::timeout_ms())]
    pub timeout_ms: u64,
    /// Send the command even when nothing says a worker takes it: no
    /// worker of the service ever consumed commands (one yet to start), or
    /// the service's instances list commands and not this one (a worker
    /// that runs in a process without an instance of the service is listed
    /// nowhere).
    #[arg(long)]
    pub unlisted: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// The exit status of a command interrupted while waiting (Ctrl-C).
const INTERRUPTED: u8 = 130;

/// Runs `aegis command`: progress on stderr, the result on stdout; a
/// failed, untaken or late command is printed with its code and exits
/// non-zero; interrupted (`shutdown`), it stops waiting and says the
/// command may still run.
///
/// # Errors
/// An invalid service or command name, a body that is not JSON (both
/// before connecting), or no connection to NATS.
pub async fn run(args: CommandArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    crate::cli::check_service_name(&args.service)?;
    names::validate_command_name(&args.command)?;
    let body: serde_json::Value = match &args.body {
        Some(body) => serde_json::from_str(body)
            .with_context(|| format!("the command payload is not JSON: {body}"))?,
        None => serde_json::json!({}),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let conn = args.nats.connect_as_operator().await?;
    if !args.unlisted
        && let Some(workers) =
            without_command_consumer(&conn, &args.service, LISTING_WAIT.min(timeout)).await
    {
        eprintln!(
            "error [{}]: {}",
            ErrorCode::NotFound,
            no_command_worker(&args.service, workers)
        );
        return Ok(ExitCode::FAILURE);
    }
    if !args.unlisted
        && let Some(known) = unknown_command(&conn, &args, timeout).await
    {
        eprintln!(
            "error [{}]: {} has no command `{}` (it has: {}); it was not sent \
             (a worker outside the service's instances is not listed: --unlisted sends it anyway)",
            ErrorCode::NotFound,
            args.service,
            args.command,
            known.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    let sent = conn
        .commands()
        .send(&args.service, &args.command, &body, timeout)
        .await;
    let mut handle = match sent {
        Ok(handle) => handle,
        Err(e) => return Ok(failed(e, &args)),
    };
    let id = handle.id().to_owned();
    eprintln!("command {id} queued for {}", args.service);
    let bar = Bar::new();
    // Whether a worker reported progress: it took the command.
    let mut taken = false;
    let mut runs = Runs::default();
    // The worker instance that sent the result.
    let mut worker: Option<String> = None;
    let outcome = loop {
        let update = tokio::select! {
            update = handle.next() => update,
            () = shutdown.cancelled() => {
                bar.finish();
                if taken {
                    eprintln!(
                        "stopped waiting: command {id} was taken by a worker (it reported \
                         progress) and runs on to its end, unwatched: its deadline does not stop it"
                    );
                } else {
                    eprintln!(
                        "stopped waiting: command {id} is queued and may still run (its deadline \
                         is {timeout:?} after it was sent)"
                    );
                }
                return Ok(ExitCode::from(INTERRUPTED));
            }
        };
        match update {
            Ok(CommandUpdate::Progress { percent, message }) => {
                taken = true;
                let worker = handle.worker_instance();
                if let Some(line) =
                    runs.report(percent, &message, worker, std::time::Instant::now())
                {
                    bar.println(&line);
                }
                bar.progress(percent, &message, worker);
            }
            Ok(CommandUpdate::Completed(result)) => {
                worker = handle.worker_instance().map(str::to_owned);
                break Ok(result);
            }
            // Kinds of update added later.
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    bar.finish();
    match outcome {
        Ok(result) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            match worker {
                Some(worker) => eprintln!("command {id} completed on {worker}"),
                None => eprintln!("command {id} completed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(failed(e, &args)),
    }
}

/// How long the instances have to say which commands they take, at most.
const LISTING_WAIT: Duration = Duration::from_secs(1);

/// The commands the service's instances list, when they list some but not
/// this one; `None` when it is listed, or nothing tells (no instance
/// answered, none lists any command).
async fn unknown_command(
    conn: &aegis_sdk::Connection,
    args: &CommandArgs,
    timeout: Duration,
) -> Option<Vec<String>> {
    let described = crate::call::describe_service(conn, &args.service, LISTING_WAIT.min(timeout))
        .await
        .ok()?;
    let known: Vec<String> = described.commands.into_iter().map(|c| c.name).collect();
    (!known.is_empty() && !known.contains(&args.command)).then_some(known)
}

/// The services whose command workers have a consumer on the commands
/// stream (`SERVICE_commands`), when `service` has none: no worker of it
/// ever consumed commands. `None` when it has one, or when that cannot be
/// read within `wait` (nothing is claimed then: the command is sent).
async fn without_command_consumer(
    conn: &aegis_sdk::Connection,
    service: &str,
    wait: Duration,
) -> Option<Vec<String>> {
    use futures::StreamExt;
    let services = async {
        let stream = conn
            .jetstream()
            .get_stream_no_info(aegis_contracts::subjects::COMMANDS_STREAM)
            .await
            .ok()?;
        let mut names = stream.consumer_names();
        let mut services = Vec::new();
        while let Some(name) = names.next().await {
            if let Some(service) = name.ok()?.strip_suffix(CONSUMER_SUFFIX) {
                services.push(service.to_owned());
            }
        }
        Some(services)
    };
    let services = tokio::time::timeout(wait, services).await.ok()??;
    (!services.iter().any(|s| s == service)).then_some(services)
}

/// How the commands consumer of a service is named after it (the SDK's
/// `SERVICE_commands`).
const CONSUMER_SUFFIX: &str = "_commands";

/// The error for `service`, no worker of which ever consumed commands,
/// given the services whose workers did (`workers`, in any order).
fn no_command_worker(service: &str, workers: Vec<String>) -> String {
    let mut line = format!(
        "no worker of {service} has ever consumed commands (the commands stream has no \
         consumer {service}{CONSUMER_SUFFIX}), so the command was not sent{}",
        crate::status::names_and_close_one(
            service,
            workers,
            "services with command workers",
            "no service has command workers"
        )
    );
    if !line.ends_with('?') {
        line.push('.');
    }
    line.push_str(" For a worker yet to start, --unlisted queues it anyway");
    line
}

/// Prints a command's error as `error [CODE]: …` and returns the failure.
fn failed(error: CommandError, args: &CommandArgs) -> ExitCode {
    let what = format!("{} of {}", args.command, args.service);
    let (code, line) = command_error(error, &what, args.body.is_none());
    eprintln!("error [{code}]: {line}");
    ExitCode::FAILURE
}

/// A command's error: its code (the worker's own, or what the outcome
/// means: `NOT_TAKEN` when it never ran, `TIMEOUT` when it may have) and
/// the line saying it, with the worker's details and what to do. `what`
/// names the command (`rebuild_book of order-service`); `no_body`: it was
/// sent `{}` because no payload was given.
fn command_error(error: CommandError, what: &str, no_body: bool) -> (String, String) {
    match error {
        CommandError::Failed(wire) => {
            let mut line = format!("{what} failed: {}", wire.message);
            if let Some(details) = &wire.details {
                line.push_str(&format!("\ndetails: {details}"));
            }
            if wire.code == ErrorCode::InvalidRequest && no_body {
                line.push_str(
                    "\nno payload was given, so `{}` was sent: pass the payload the command \
                     takes (`null` to one that takes no argument)",
                );
            }
            (wire.code.to_string(), line)
        }
        e @ CommandError::NotTaken { .. } => (
            "NOT_TAKEN".to_owned(),
            format!(
                "{}. It never ran and will not: send it again once a worker runs",
                Causes(&e)
            ),
        ),
        e @ CommandError::Timeout { .. } => (
            ErrorCode::Timeout.to_string(),
            format!(
                "{}: a worker took it, so it may have run or may still be running; give \
                 --timeout-ms more time, or check its effect before sending it again",
                Causes(&e)
            ),
        ),
        e @ (CommandError::InvalidName(_) | CommandError::Codec(_)) => (
            ErrorCode::InvalidRequest.to_string(),
            Causes(&e).to_string(),
        ),
        e => (
            ErrorCode::ServiceUnavailable.to_string(),
            Causes(&e).to_string(),
        ),
    }
}

/// The least silence after which the run's first report, sent again, is
/// taken for a new run rather than a worker repeating itself: a worker
/// that went silent is replaced only after its `ack_wait` (30 s by
/// default, seconds at the least).
const RESTART_SILENCE: Duration = Duration::from_secs(1);

/// The progress reports of one command, to tell when its run started over
/// on another worker.
#[derive(Debug, Default)]
struct Runs {
    /// The current run's first report.
    first: Option<(f32, String)>,
    /// The last report, and when it came.
    last: Option<(f32, std::time::Instant)>,
    /// The worker instance the current run's reports name, once one does.
    worker: Option<String>,
}

impl Runs {
    /// Takes a report that came at `now` from worker instance `worker`
    /// (`None`: a worker that predates naming itself); returns the line to
    /// print first when it starts the command over: it comes from another
    /// instance than the run's; or it is the run's first report again
    /// after [`RESTART_SILENCE`]; or its percentage went back — after such
    /// a silence when it comes from the run's own instance (which takes a
    /// command again when its process restarts under the same id, or when
    /// it leads again after losing its lead), at any time from a worker
    /// that names no instance. The same instance going back with no
    /// silence before is its handler's own choice.
    fn report(
        &mut self,
        percent: f32,
        message: &str,
        worker: Option<&str>,
        now: std::time::Instant,
    ) -> Option<String> {
        let moved = match (self.worker.as_deref(), worker) {
            (Some(was), Some(now)) if was != now => Some((was.to_owned(), now.to_owned())),
            _ => None,
        };
        // The run's own instance: it takes the command again only after a
        // silence (its ack_wait), so without one, going back is its
        // handler's choice.
        let same_worker = moved.is_none() && self.worker.is_some() && worker.is_some();
        let restarted = moved.is_some()
            || match (&self.first, self.last) {
                (Some((first, first_message)), Some((last, at))) => {
                    let after_silence = now.duration_since(at) >= RESTART_SILENCE;
                    (percent < last && (after_silence || !same_worker))
                        || (percent == *first && message == first_message && after_silence)
                }
                _ => false,
            };
        let line = restarted.then(|| {
            let (last, at) = self.last.unwrap_or((0.0, now));
            if let Some((was, now)) = &moved {
                return format!(
                    "restarted on {now}: the command was taken again by another worker after \
                     {was}, the one running it, went silent (it died or lost its lead, and its \
                     ack_wait ran out); it may have run partly on {was}"
                );
            }
            let how = if percent < last {
                format!("progress went back from {last:.0}% to {percent:.0}%")
            } else {
                format!(
                    "progress started over: its first report ({percent:.0}% {message}) came \
                     again after {:.0}s of silence",
                    now.duration_since(at).as_secs_f64()
                )
            };
            match worker.filter(|_| same_worker) {
                Some(worker) => format!(
                    "restarted on {worker}: {how}: the command was most likely taken again by \
                     {worker} itself after it went silent (its process restarted, or it lost its \
                     lead and led again, and its ack_wait ran out); it may have run partly before"
                ),
                None => format!(
                    "restarted: {how}: the command was most likely taken again by another worker \
                     after the one running it went silent (it died or lost its lead, and its \
                     ack_wait ran out); it may have run partly there"
                ),
            }
        });
        if restarted || self.first.is_none() {
            self.first = Some((percent, message.to_owned()));
        }
        if let Some(worker) = worker {
            self.worker = Some(worker.to_owned());
        }
        self.last = Some((percent, now));
        line
    }
}

/// Where progress reports go: a bar on a terminal, a line each otherwise
/// (a log, a pipe, a test).
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::new(100);
        if bar.is_hidden() {
            return Bar(None);
        }
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Bar(Some(bar))
    }

    /// A report, `on WORKER` when its worker instance is named.
    fn progress(&self, percent: f32, message: &str, worker: Option<&str>) {
        let percent = percent.clamp(0.0, 100.0);
        let message = match worker {
            Some(worker) => format!("{message} (on {worker})"),
            None => message.to_owned(),
        };
        match &self.0 {
            Some(bar) => {
                // Rounded to a whole percent, as drawn.
                bar.set_position(percent.round() as u64);
                bar.set_message(message);
            }
            None => eprintln!("progress {percent:>3.0}% {message}"),
        }
    }

    /// A line of its own, above the bar on a terminal.
    fn println(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_sdk::rpc::WireError;

    #[test]
    fn a_service_without_command_workers_is_said_with_those_that_have_some() {
        assert_eq!(
            no_command_worker(
                "recon-servce",
                vec!["recon-service".into(), "ledger".into(), "ledger".into()]
            ),
            "no worker of recon-servce has ever consumed commands (the commands stream has no \
             consumer recon-servce_commands), so the command was not sent (services with \
             command workers: ledger, recon-service); did you mean recon-service? For a \
             worker yet to start, --unlisted queues it anyway"
        );
        let line = no_command_worker("ledger", Vec::new());
        assert!(line.contains("(no service has command workers)"), "{line}");
        assert!(!line.contains("  "), "{line}");
    }

    #[test]
    fn each_outcome_has_its_code_and_says_whether_it_ran() {
        let failed = CommandError::Failed(
            WireError::not_found("no book").with_details(serde_json::json!({ "account": "A1" })),
        );
        assert_eq!(
            command_error(failed, "rebuild of order-service", false),
            (
                "NOT_FOUND".to_owned(),
                "rebuild of order-service failed: no book\ndetails: {\"account\":\"A1\"}"
                    .to_owned()
            )
        );
        let not_taken = CommandError::NotTaken {
            id: "c1".into(),
            service: "order-service".into(),
            timeout: Duration::from_secs(1),
            worker_known: false,
        };
        let (code, line) = command_error(not_taken, "x", false);
        assert_eq!(code, "NOT_TAKEN");
        assert!(line.contains("never ran"), "{line}");
        let late = CommandError::Timeout {
            id: "c1".into(),
            timeout: Duration::from_secs(1),
        };
        let (code, line) = command_error(late, "x", false);
        assert_eq!(code, "TIMEOUT");
        assert!(line.contains("may have run"), "{line}");
        let refused = CommandError::Failed(WireError::invalid_request("cannot decode"));
        assert!(command_error(refused, "x", true).1.contains("`null`"));
    }

    /// A run that starts over (the devtrial's `10% starting`, 30 s of
    /// silence, `10% starting` again; or a lower percentage) is said once;
    /// reports that go on, or repeat quickly, are not.
    #[test]
    fn progress_that_starts_over_is_said_as_a_restart() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut runs = Runs::default();
        assert_eq!(runs.report(10.0, "starting", None, at(0)), None);
        // The same report again at once, then more progress: one run.
        assert_eq!(runs.report(10.0, "starting", None, t0), None);
        assert_eq!(runs.report(40.0, "half", None, at(0)), None);
        assert_eq!(runs.report(40.0, "half", None, at(5)), None);
        // Back to the start after a silence: said once.
        let line = runs.report(10.0, "starting", None, at(35)).unwrap();
        assert!(line.contains("from 40% to 10%"), "{line}");
        assert!(line.contains("taken again by another worker"), "{line}");
        assert!(line.contains("may have run partly"), "{line}");
        assert_eq!(runs.report(60.0, "writing", None, at(36)), None);
        // The first report again after a silence, with nothing between.
        let mut runs = Runs::default();
        assert_eq!(runs.report(10.0, "starting", None, at(0)), None);
        let line = runs.report(10.0, "starting", None, at(30)).unwrap();
        assert!(
            line.contains("started over: its first report (10% starting) came again after 30s"),
            "{line}"
        );
        assert_eq!(runs.report(100.0, "done", None, at(31)), None);
    }

    /// Reports that name their worker: another instance is a restart at
    /// once, said with both names, whatever the percentages; the same
    /// instance going back with no silence before (a handler's own
    /// choice), or going on after one, is not.
    #[test]
    fn a_report_from_another_worker_is_said_as_a_restart_on_it() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut runs = Runs::default();
        assert_eq!(runs.report(10.0, "starting", Some("desk-a"), at(0)), None);
        assert_eq!(runs.report(5.0, "rescan", Some("desk-a"), at(0)), None);
        assert_eq!(runs.report(20.0, "more", Some("desk-a"), at(30)), None);
        let line = runs.report(40.0, "half", Some("desk-b"), at(31)).unwrap();
        assert!(line.starts_with("restarted on desk-b:"), "{line}");
        assert!(line.contains("may have run partly on desk-a"), "{line}");
        assert!(!line.contains("  "), "{line}");
        assert_eq!(runs.report(60.0, "more", Some("desk-b"), at(32)), None);
        // A report that names no worker is judged as before.
        assert!(runs.report(10.0, "starting", None, at(33)).is_some());
    }

    /// The same instance taking the command again (its process restarted
    /// under a fixed id, or a `leader_of` worker that lost its lead, handed
    /// the command back and led again) runs it from the start: its
    /// progress going back, or its first report again, after a silence is
    /// said as a restart on that instance.
    #[test]
    fn the_same_worker_taking_the_command_again_is_said_as_a_restart() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut runs = Runs::default();
        assert_eq!(runs.report(10.0, "starting", Some("a"), at(0)), None);
        assert_eq!(runs.report(60.0, "half", Some("a"), at(5)), None);
        let line = runs
            .report(10.0, "starting", Some("a"), at(40))
            .expect("a restart on the same instance");
        assert!(line.starts_with("restarted on a:"), "{line}");
        assert!(line.contains("from 60% to 10%"), "{line}");
        assert!(line.contains("may have run partly"), "{line}");
        assert!(!line.contains("  "), "{line}");
        assert_eq!(runs.report(70.0, "more", Some("a"), at(41)), None);
        // Its first report again after a silence, with nothing between.
        let mut runs = Runs::default();
        assert_eq!(runs.report(10.0, "starting", Some("a"), at(0)), None);
        let line = runs.report(10.0, "starting", Some("a"), at(30)).unwrap();
        assert!(line.contains("came again after 30s"), "{line}");
        assert!(!line.contains("  "), "{line}");
    }
}
