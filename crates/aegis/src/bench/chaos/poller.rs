//! What an operator sees, checked against what is true: the monitor's
//! `GET /api/instances` polled every 20 ms, each answer compared at once
//! with the live processes (pid files and `/proc`) and the holder of the
//! order service's election key.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::load::Holder;
use crate::{bench::lock, up::remote::Remote};

/// One answer of the API, judged.
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    /// When the answer arrived.
    pub(crate) at: Instant,
    /// Instances shown up (ACTIVE or STANDBY).
    pub(crate) up: HashSet<String>,
    /// Some sticky group showed two or more ACTIVE instances.
    pub(crate) two_active: bool,
    /// How the view differed from the truth (empty: it was true).
    pub(crate) mismatches: Vec<String>,
}

/// The truth the poller compares with, besides the processes.
#[derive(Debug, Default)]
pub(crate) struct Truth {
    /// Instances stopped with SIGSTOP: alive, yet serving nothing.
    pub(crate) frozen: HashSet<String>,
}

/// One instance as the API lists it (the fields the check needs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    service_name: String,
    instance_id: String,
    status: String,
    #[serde(default)]
    sticky_active_group: Option<String>,
}

/// What the poller needs to run.
pub(crate) struct Poller {
    /// The instances `aegis up` runs (`order-1`, ...).
    pub(crate) expected: Vec<String>,
    /// The showcase's children (which of them run).
    pub(crate) children: Remote,
    /// `http://127.0.0.1:PORT`.
    pub(crate) api: String,
    /// The viewer token.
    pub(crate) token: String,
    /// The election key's holder, kept current by the election watch.
    pub(crate) holder: Arc<Mutex<Option<Holder>>>,
    /// Frozen instances.
    pub(crate) truth: Arc<Mutex<Truth>>,
    /// Every poll, in order.
    pub(crate) polls: Arc<Mutex<Vec<Poll>>>,
}

impl Poller {
    /// Polls every `every` until `stop`.
    pub(crate) async fn run(self, every: Duration, stop: CancellationToken) {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %aegis_sdk::startup::Causes(&e), "cannot build the HTTP client");
                return;
            }
        };
        let url = format!("{}/api/instances", self.api);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let answer = http.get(&url).bearer_auth(&self.token).send().await;
            let listed = match answer {
                Ok(r) if r.status().is_success() => {
                    r.json::<Vec<Listed>>().await.map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            let poll = self.judge(listed);
            lock(&self.polls).push(poll);
        }
    }

    fn judge(&self, listed: Result<Vec<Listed>, String>) -> Poll {
        let at = Instant::now();
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                return Poll {
                    at,
                    up: HashSet::new(),
                    two_active: false,
                    mismatches: vec![format!("API unreachable: {e}")],
                };
            }
        };
        let frozen = lock(&self.truth).frozen.clone();
        let holder = lock(&self.holder).clone();
        let alive = |id: &str| self.children.alive(id) && !frozen.contains(id);
        judge(&listed, &self.expected, alive, holder.as_ref(), &frozen, at)
    }
}

/// Compares one listing with the truth.
fn judge(
    listed: &[Listed],
    expected: &[String],
    alive: impl Fn(&str) -> bool,
    holder: Option<&Holder>,
    frozen: &HashSet<String>,
    at: Instant,
) -> Poll {
    let shows_up = |s: &str| s == "ACTIVE" || s == "STANDBY";
    let up: HashSet<String> = listed
        .iter()
        .filter(|l| shows_up(&l.status))
        .map(|l| l.instance_id.clone())
        .collect();
    let mut actives: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for l in listed.iter().filter(|l| l.status == "ACTIVE") {
        if let Some(group) = &l.sticky_active_group {
            actives
                .entry((l.service_name.clone(), group.clone()))
                .or_default()
                .push(l.instance_id.clone());
        }
    }
    let two_active = actives.values().any(|ids| ids.len() > 1);
    let mut mismatches = Vec::new();
    for id in expected {
        let is_alive = alive(id);
        let shown = up.contains(id);
        if frozen.contains(id) {
            // A stopped process may still be listed, but never as leader.
            if listed
                .iter()
                .any(|l| &l.instance_id == id && l.status == "ACTIVE")
            {
                mismatches.push(format!("{id} is stopped but shown ACTIVE"));
            }
        } else if is_alive && !shown {
            mismatches.push(format!("{id} runs but is not shown up"));
        } else if !is_alive && shown {
            mismatches.push(format!("{id} is gone but shown up"));
        }
    }
    // The order service's one ACTIVE must be the election key's holder,
    // when that holder runs.
    let key = (
        aegis_contracts::trading::ORDER_SERVICE.to_owned(),
        aegis_contracts::trading::ORDER_GROUP.to_owned(),
    );
    let shown_active = actives.get(&key).cloned().unwrap_or_default();
    let true_active: Vec<String> = holder
        .filter(|h| alive(&h.instance_id))
        .map(|h| vec![h.instance_id.clone()])
        .unwrap_or_default();
    if shown_active != true_active {
        mismatches.push(format!(
            "order-service ACTIVE shown {shown_active:?}, election key held by {true_active:?}"
        ));
    }
    Poll {
        at,
        up,
        two_active,
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, status: &str, group: Option<&str>) -> Listed {
        Listed {
            service_name: if group.is_some() {
                "order-service"
            } else {
                "pricing-service"
            }
            .into(),
            instance_id: id.into(),
            status: status.into(),
            sticky_active_group: group.map(str::to_owned),
        }
    }

    #[test]
    fn two_leaders_and_stale_views_are_caught() {
        let expected = vec![
            "order-1".to_owned(),
            "order-2".to_owned(),
            "pricing-1".to_owned(),
        ];
        let holder = Holder {
            instance_id: "order-2".into(),
            epoch: 7,
        };
        let none = HashSet::new();
        let now = Instant::now();
        let view = [
            listed("order-1", "STANDBY", Some("default")),
            listed("order-2", "ACTIVE", Some("default")),
            listed("pricing-1", "ACTIVE", None),
        ];
        let p = judge(&view, &expected, |_| true, Some(&holder), &none, now);
        assert!(!p.two_active);
        assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);

        let view = [
            listed("order-1", "ACTIVE", Some("default")),
            listed("order-2", "ACTIVE", Some("default")),
            listed("pricing-1", "ACTIVE", None),
        ];
        let p = judge(&view, &expected, |_| true, Some(&holder), &none, now);
        assert!(p.two_active);
        assert_eq!(p.mismatches.len(), 1);

        // order-2 died: still shown up is a lie; no ACTIVE is the truth.
        let view = [
            listed("order-1", "STANDBY", Some("default")),
            listed("order-2", "UNHEALTHY", Some("default")),
            listed("pricing-1", "ACTIVE", None),
        ];
        let p = judge(
            &view,
            &expected,
            |id| id != "order-2",
            Some(&holder),
            &none,
            now,
        );
        assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
        let stale = [
            listed("order-1", "STANDBY", Some("default")),
            listed("order-2", "ACTIVE", Some("default")),
            listed("pricing-1", "ACTIVE", None),
        ];
        let p = judge(
            &stale,
            &expected,
            |id| id != "order-2",
            Some(&holder),
            &none,
            now,
        );
        assert_eq!(p.mismatches.len(), 2, "{:?}", p.mismatches);
        // A running instance missing from the list.
        let p = judge(
            &view[..2],
            &expected,
            |id| id != "order-2",
            Some(&holder),
            &none,
            now,
        );
        assert_eq!(
            p.mismatches,
            vec!["pricing-1 runs but is not shown up".to_owned()]
        );
    }
}
