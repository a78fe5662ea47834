//! What the running instances of a service serve, as `aegis status
//! SERVICE` shows it under the table: their methods and commands
//! (`$SRV.INFO`).
//!
//! An instance's methods are fixed when its process starts, so what a
//! service serves changes mostly with its instances (its command workers
//! are listed when they start and unlisted when they stop, which a process
//! may do while it runs). `--watch` redraws every second; asking every
//! instance on each redraw would cost the bus a request and every instance
//! an answer a second, for mostly the same lines. [`Served`] asks once,
//! and again when the set of live instances changes (one started, stopped,
//! died, or restarted under its own id: its record's `started_at` or
//! version changed; a rolling upgrade), after a failed answer
//! ([`RETRY_FAILED`]), or once [`REFRESH`] has passed whatever happened (a
//! command worker started or stopped inside a running process).

use std::{collections::BTreeSet, time::Duration};

use aegis_monitor::fleet::{InstanceView, StatusReason};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// How long the instances of a service have to say what they serve.
const DESCRIBE_WAIT: Duration = Duration::from_secs(1);

/// How long an answer is shown again while the instances stay the same.
pub(super) const REFRESH: Duration = Duration::from_secs(60);

/// How long a failed ask (no instance answered) is shown before asking
/// again while the instances stay the same.
pub(super) const RETRY_FAILED: Duration = Duration::from_secs(5);

/// The last answer of the instances of one service, and when and of which
/// instances it was asked.
#[derive(Debug)]
pub(super) struct Served {
    service: String,
    last: Option<Asked>,
}

/// A live instance as one process: its id, when its process started and
/// its version (a restart under the same id changes the start).
type Process = (String, Option<DateTime<Utc>>, String);

/// One ask: the live instances then, when, whether it was answered, and
/// the lines it gave.
#[derive(Debug)]
struct Asked {
    instances: BTreeSet<Process>,
    at: Instant,
    answered: bool,
    text: String,
}

impl Served {
    /// Nothing asked yet of `service`'s instances.
    pub(super) fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            last: None,
        }
    }

    /// The lines saying what the instances of the service serve: asked
    /// now when [`Served::must_ask`] says so, else the last answer.
    /// `instances` are the service's rows of the table.
    pub(super) async fn lines(
        &mut self,
        conn: &aegis_sdk::Connection,
        instances: &[InstanceView],
    ) -> String {
        let live = live(instances);
        let now = Instant::now();
        if let Some(last) = &self.last
            && !must_ask(last, &live, now)
        {
            return last.text.clone();
        }
        let (text, answered) = ask(conn, &self.service).await;
        self.last = Some(Asked {
            instances: live,
            at: now,
            answered,
            text: text.clone(),
        });
        text
    }
}

/// The instances that may answer, as processes: every row but those shown
/// down (closed connection, no liveness beat).
fn live(instances: &[InstanceView]) -> BTreeSet<Process> {
    instances
        .iter()
        .filter(|v| {
            !matches!(
                v.status_reason,
                Some(StatusReason::Disconnected | StatusReason::Unresponsive)
            )
        })
        .map(|v| {
            (
                v.instance.instance_id.clone(),
                v.instance.started_at,
                v.instance.version.clone(),
            )
        })
        .collect()
}

/// Whether the answer `last` no longer stands for the `live` instances at
/// `now`: they changed, or it is older than [`REFRESH`] ([`RETRY_FAILED`]
/// when none answered).
fn must_ask(last: &Asked, live: &BTreeSet<Process>, now: Instant) -> bool {
    let keep = if last.answered { REFRESH } else { RETRY_FAILED };
    last.instances != *live || now.saturating_duration_since(last.at) >= keep
}

/// Asks the running instances of `service` what they serve: the lines to
/// show, and whether any answered.
async fn ask(conn: &aegis_sdk::Connection, service: &str) -> (String, bool) {
    match crate::call::describe_service(conn, service, DESCRIBE_WAIT).await {
        Ok(described) => (
            format!(
                "\n{}\n(what each takes: aegis call {service} --schema)\n",
                crate::call::summary(&described)
            ),
            true,
        ),
        Err(e) => (
            format!(
                "\nmethods and commands: not known ({})\n",
                aegis_sdk::startup::Causes(&e)
            ),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(ids: &[&str], at: Instant, answered: bool) -> Asked {
        Asked {
            instances: set(ids),
            at,
            answered,
            text: String::new(),
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<Process> {
        ids.iter()
            .map(|s| ((*s).to_owned(), None, "1.0.0".to_owned()))
            .collect()
    }

    /// The same instances keep the answer until it is old; another set,
    /// or a failed ask after a short while, asks again.
    #[test]
    fn asked_again_only_when_the_instances_change_or_the_answer_is_old() {
        let at = Instant::now();
        let last = asked(&["a", "b"], at, true);
        let soon = at + Duration::from_secs(1);
        assert!(!must_ask(&last, &set(&["a", "b"]), soon));
        assert!(must_ask(&last, &set(&["a", "b", "c"]), soon));
        assert!(must_ask(&last, &set(&["a"]), soon));
        assert!(!must_ask(&last, &set(&["a", "b"]), at + REFRESH / 2));
        assert!(must_ask(&last, &set(&["a", "b"]), at + REFRESH));

        // "a" restarted under its own id: another process.
        let mut restarted = set(&["a", "b"]);
        let a = restarted.pop_first().unwrap();
        restarted.insert((a.0, Some(Utc::now()), a.2));
        assert!(must_ask(&last, &restarted, soon));

        let failed = asked(&["a"], at, false);
        assert!(!must_ask(&failed, &set(&["a"]), soon));
        assert!(must_ask(&failed, &set(&["a"]), at + RETRY_FAILED));
    }
}
