//! The faults, each injected and then recovered from: the victim is held
//! down through the supervisor's control files while the views settle, then
//! released, and the next fault waits for the full fleet and a true view.

use std::{
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use futures::StreamExt;
use nix::sys::signal::Signal;
use rand::seq::IndexedRandom;
use serde::Serialize;
use tokio::time::Instant;

use crate::{bench::lock, up::remote::LAME_DUCK_EXIT};

use super::{
    load::{Holder, Shared},
    poller::{Poll, Truth},
    showcase::{NODES, Showcase},
};

/// One fault of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of a random service instance.
    KillInstance,
    /// SIGKILL of the order service's leader.
    KillLeader,
    /// SIGTERM of the order service's leader (it resigns).
    TermLeader,
    /// SIGSTOP of the leader past its lease, then SIGCONT: the zombie must
    /// not write.
    StopLeader,
    /// SIGKILL of NATS node N (1-based).
    KillNats(usize),
    /// Planned restart of the NATS node leading the election bucket's
    /// stream: lame duck mode (SIGUSR2, what `nats-server --signal ldm` and
    /// the Helm chart's preStop send), then a start once it exited.
    RestartNats,
}

impl Fault {
    /// Every fault, in the order a full run injects them.
    pub fn all() -> Vec<Fault> {
        let mut all = vec![
            Fault::KillInstance,
            Fault::KillLeader,
            Fault::TermLeader,
            Fault::StopLeader,
        ];
        all.extend((1..=NODES).map(Fault::KillNats));
        all.push(Fault::RestartNats);
        all
    }

    /// Whether the victim's process dies, so its crash must be seen.
    pub(crate) fn kills_a_service(self) -> bool {
        matches!(
            self,
            Fault::KillInstance | Fault::KillLeader | Fault::TermLeader
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillInstance => f.write_str("kill-instance"),
            Fault::KillLeader => f.write_str("kill-leader"),
            Fault::TermLeader => f.write_str("term-leader"),
            Fault::StopLeader => f.write_str("stop-leader"),
            Fault::KillNats(n) => write!(f, "kill-nats-{n}"),
            Fault::RestartNats => f.write_str("restart-nats"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(n) = s.strip_prefix("kill-nats-") {
            return match n.parse::<usize>() {
                Ok(n) if (1..=NODES).contains(&n) => Ok(Fault::KillNats(n)),
                _ => Err(format!("`{s}`: the node is 1, 2 or 3")),
            };
        }
        Fault::all()
            .into_iter()
            .find(|f| f.to_string() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault `{s}` (expected kill-instance, kill-leader, term-leader, \
                     stop-leader, kill-nats-1..3 or restart-nats)"
                )
            })
    }
}

/// What happened during one fault.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Injected {
    /// The fault's name (with the round when there are several).
    pub(crate) name: String,
    /// The process hit (`order-2`, `nats-n1`).
    pub(crate) victim: String,
    /// For a NATS node: the stream leaders it held when hit.
    pub(crate) stream_leaders: Vec<String>,
    #[serde(skip)]
    pub(crate) fault: Option<Fault>,
    /// When the signal was sent.
    #[serde(skip)]
    pub(crate) injected: Option<Instant>,
    /// When the views were given time to settle (the victim still down).
    #[serde(skip)]
    pub(crate) settled: Option<Instant>,
    /// When the full fleet was back and the view true.
    #[serde(skip)]
    pub(crate) recovered: Option<Instant>,
    /// Milliseconds from the signal to the full fleet being back.
    pub(crate) recovery_ms: f64,
}

/// What the faults act on.
pub(crate) struct Bench<'a> {
    pub(crate) showcase: &'a mut Showcase,
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) shared: Shared,
    pub(crate) truth: Arc<Mutex<Truth>>,
    pub(crate) polls: Arc<Mutex<Vec<Poll>>>,
    pub(crate) expected: Vec<String>,
    pub(crate) http: reqwest::Client,
    /// How long a service fault is left to settle.
    pub(crate) settle: Duration,
    /// How long a NATS node stays down.
    pub(crate) nats_down: Duration,
    /// How long the leader stays stopped after a standby took over.
    pub(crate) stop_past_takeover: Duration,
}

impl Bench<'_> {
    /// Injects `fault`, lets it settle, recovers and waits for the fleet.
    ///
    /// # Errors
    /// When the victim cannot be found or the fleet does not come back.
    pub(crate) async fn inject(&mut self, fault: Fault, name: String) -> anyhow::Result<Injected> {
        let leader = || {
            lock(&self.shared.holder)
                .clone()
                .context("the order service has no leader to hit")
        };
        let mut stream_leaders = Vec::new();
        let (victim, signal) = match fault {
            Fault::KillInstance => {
                let victim = self
                    .expected
                    .choose(&mut rand::rng())
                    .context("no instances")?
                    .clone();
                (victim, Signal::SIGKILL)
            }
            Fault::KillLeader => (leader()?.instance_id, Signal::SIGKILL),
            Fault::TermLeader => (leader()?.instance_id, Signal::SIGTERM),
            Fault::StopLeader => (leader()?.instance_id, Signal::SIGSTOP),
            Fault::KillNats(n) => {
                stream_leaders = self.leaders_on(n).await;
                (format!("nats-n{n}"), Signal::SIGKILL)
            }
            Fault::RestartNats => {
                let n = self.elections_leader_node().await.unwrap_or(1);
                stream_leaders = self.leaders_on(n).await;
                (format!("nats-n{n}"), Signal::SIGUSR2)
            }
        };
        if signal == Signal::SIGSTOP {
            lock(&self.truth).frozen.insert(victim.clone());
        } else {
            self.showcase.remote().hold(&victim)?;
        }
        let injected = Instant::now();
        let pid = self.showcase.remote().signal(&victim, signal)?;
        tracing::info!(%fault, %victim, ?stream_leaders, "fault injected");

        match fault {
            Fault::StopLeader => {
                let old = leader_of(&self.shared);
                let taken = self
                    .wait_takeover(old.as_ref(), Duration::from_secs(20))
                    .await;
                tokio::time::sleep(self.stop_past_takeover).await;
                self.showcase.remote().signal(&victim, Signal::SIGCONT)?;
                lock(&self.truth).frozen.remove(&victim);
                taken?;
                tokio::time::sleep(self.settle).await;
            }
            Fault::KillNats(_) => tokio::time::sleep(self.nats_down).await,
            Fault::RestartNats => {
                self.showcase
                    .remote()
                    .wait_gone(&victim, pid, LAME_DUCK_EXIT)
                    .await
                    .context("after lame duck mode")?;
            }
            _ => tokio::time::sleep(self.settle).await,
        }
        let settled = Instant::now();
        if signal != Signal::SIGSTOP {
            self.showcase.remote().release(&victim)?;
        }
        self.wait_fleet(Duration::from_secs(120)).await?;
        let recovered = Instant::now();
        Ok(Injected {
            name,
            victim,
            stream_leaders,
            fault: Some(fault),
            injected: Some(injected),
            settled: Some(settled),
            recovered: Some(recovered),
            recovery_ms: ms(recovered - injected),
        })
    }

    /// Waits until a holder other than `old` holds the election key.
    async fn wait_takeover(&self, old: Option<&Holder>, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let now = leader_of(&self.shared);
            if now.is_some() && now.as_ref() != old {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no standby took over within {within:?} of the leader's SIGSTOP");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every process runs, every NATS node is healthy, the
    /// order service has a leader and the API's view is true.
    ///
    /// # Errors
    /// When that does not happen `within`, or `aegis up` exited.
    pub(crate) async fn wait_fleet(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut why = String::new();
        while Instant::now() < deadline {
            self.showcase.check_running()?;
            match self.fleet_problem().await {
                None => return Ok(()),
                Some(p) => why = p,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the showcase did not recover within {within:?}: {why} (logs in {})",
            self.showcase.log_dir().display()
        )
    }

    async fn fleet_problem(&self) -> Option<String> {
        for n in 1..=NODES {
            let url = format!(
                "http://127.0.0.1:{}/healthz",
                self.showcase.nats_monitor_port(n)
            );
            let ok = self
                .http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ok {
                return Some(format!("NATS node {n} is not healthy"));
            }
        }
        if let Some(gone) = self
            .expected
            .iter()
            .find(|id| !self.showcase.remote().alive(id))
        {
            return Some(format!("{gone} does not run"));
        }
        if leader_of(&self.shared).is_none() {
            return Some("the order service has no leader".into());
        }
        let polls = lock(&self.polls);
        let Some(last) = polls.last() else {
            return Some("the API has not been polled yet".into());
        };
        if let Some(missing) = self.expected.iter().find(|id| !last.up.contains(*id)) {
            return Some(format!("{missing} is not shown up"));
        }
        last.mismatches.first().cloned()
    }

    /// The streams whose leader is NATS node `n` (server `aegis-n{n}`).
    async fn leaders_on(&self, n: usize) -> Vec<String> {
        let server = format!("aegis-n{n}");
        let mut led: Vec<String> = self
            .stream_leaders()
            .await
            .into_iter()
            .filter(|(_, leader)| *leader == server)
            .map(|(stream, _)| stream)
            .collect();
        led.sort();
        led
    }

    /// The node leading the election bucket's stream.
    async fn elections_leader_node(&self) -> Option<usize> {
        let stream = format!("KV_{}", aegis_contracts::subjects::ELECTIONS_BUCKET);
        let (_, leader) = self
            .stream_leaders()
            .await
            .into_iter()
            .find(|(s, _)| *s == stream)?;
        leader.strip_prefix("aegis-n")?.parse().ok()
    }

    /// (stream, leader server) for every stream, from JetStream stream info.
    async fn stream_leaders(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let names: Vec<String> = match tokio::time::timeout(
            Duration::from_secs(5),
            self.js.stream_names().collect::<Vec<_>>(),
        )
        .await
        {
            Ok(names) => names.into_iter().flatten().collect(),
            Err(_) => return out,
        };
        for name in names {
            // get_stream fetches the stream's info, cluster leader included.
            let leader = tokio::time::timeout(Duration::from_secs(2), async {
                let stream = self.js.get_stream(&name).await.ok()?;
                stream.cached_info().cluster.as_ref()?.leader.clone()
            })
            .await;
            if let Ok(Some(leader)) = leader {
                out.push((name, leader));
            }
        }
        out
    }
}

fn leader_of(shared: &Shared) -> Option<Holder> {
    lock(&shared.holder).clone()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print() {
        for f in Fault::all() {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(f));
        }
        assert_eq!("kill-nats-2".parse::<Fault>(), Ok(Fault::KillNats(2)));
        assert!("kill-nats-4".parse::<Fault>().is_err());
        assert!("kill-everything".parse::<Fault>().is_err());
        assert_eq!(Fault::all().len(), 8);
    }
}
