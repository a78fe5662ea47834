//! A sticky single-active service as a plain NATS client sees it, against a
//! real nats-server, with the instances as child processes so the leader's
//! death is a real SIGKILL: no SDK on the calling side, only async-nats
//! requests to `rpc.{service}.{method}` and the services protocol
//! (`$SRV.INFO/STATS`).
//!
//! Only the leader is in the shared subject's queue group, so every plain
//! request reaches it; during the hand-over the caller sees "no responders"
//! (or a timeout) and retries, never a standby's refusal. The role metadata
//! of `$SRV.INFO` follows the election.

mod common;

use std::time::{Duration, Instant};

use aegis_testkit::wait::until_some;
use async_nats::{client::RequestErrorKind, service::NATS_SERVICE_ERROR};
use common::{ChildInstance, eventually, server};
use serde_json::Value;

const SERVICE: &str = "order-service";
const INSTANCES: [&str; 3] = ["order-1", "order-2", "order-3"];
const CALLS: usize = 100;
const KILL_AT: usize = 30;

/// Entry point of the child processes (does nothing when run directly).
#[tokio::test]
#[ignore = "a child instance, started by the tests in this file"]
async fn child_instance() {
    common::run_child_instance().await;
}

async fn plain_client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(url)
        .await
        .expect("plain client connects")
}

/// One plain call, retried only on no-responders and timeouts, within 10 s.
/// Any answer is returned, an error answer included: the caller decides.
async fn call(client: &async_nats::Client, method: &str) -> (async_nats::Message, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retries = 0;
    loop {
        match client
            .request(format!("rpc.{SERVICE}.{method}"), "{}".into())
            .await
        {
            Ok(msg) => return (msg, retries),
            Err(e)
                if matches!(
                    e.kind(),
                    RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
                ) =>
            {
                assert!(
                    Instant::now() < deadline,
                    "no answer within 10 s (last: {e})"
                );
                retries += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("request failed: {e}"),
        }
    }
}

/// `$SRV.{verb}` of one instance.
async fn srv(client: &async_nats::Client, verb: &str, instance: &str) -> Value {
    let msg = client
        .request(format!("$SRV.{verb}.{SERVICE}.{instance}"), "".into())
        .await
        .unwrap_or_else(|e| panic!("$SRV.{verb} of {instance}: {e}"));
    serde_json::from_slice(&msg.payload).unwrap()
}

fn is_error(msg: &async_nats::Message) -> bool {
    msg.headers
        .as_ref()
        .is_some_and(|h| h.get(NATS_SERVICE_ERROR).is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_reach_the_leader_across_a_sigkill() {
    let nats = server();
    let url = nats.url();
    let mut children: Vec<(String, ChildInstance)> = INSTANCES
        .iter()
        .map(|id| {
            let child = ChildInstance::spawn_sticky("child_instance", &url, SERVICE, id, "default");
            ((*id).to_owned(), child)
        })
        .collect();
    let client = plain_client(&url).await;

    // Every instance answers `$SRV`, one of them leads, and the standbys
    // have learned which (a standby knows it lost before it has read the
    // winner's id from the election key).
    let found = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually(
        Duration::from_secs(20),
        "three instances, a leader, and standbys that name it",
        || {
            let client = client.clone();
            let found = found.clone();
            async move {
                let mut roles = Vec::new();
                for id in INSTANCES {
                    match client
                        .request(format!("$SRV.INFO.{SERVICE}.{id}"), "".into())
                        .await
                    {
                        Ok(msg) => {
                            let info: Value = serde_json::from_slice(&msg.payload).unwrap();
                            let meta = &info["metadata"];
                            roles.push((
                                id,
                                meta["role"].as_str().unwrap_or("").to_owned(),
                                meta["leader"].as_str().unwrap_or("").to_owned(),
                            ));
                        }
                        Err(_) => return false,
                    }
                }
                let active: Vec<_> = roles.iter().filter(|(_, r, _)| r == "ACTIVE").collect();
                let [(leader, _, _)] = active[..] else {
                    return false;
                };
                let standbys_know = roles
                    .iter()
                    .filter(|(_, r, _)| r == "STANDBY")
                    .filter(|(_, _, named)| named == leader)
                    .count()
                    == 2;
                if standbys_know {
                    *found.lock().unwrap() = (*leader).to_owned();
                }
                standbys_know
            }
        },
    )
    .await;
    let leader = found.lock().unwrap().clone();

    // The role metadata, as the services protocol shows it.
    let info = srv(&client, "INFO", &leader).await;
    assert_eq!(info["metadata"]["sticky_group"], "default");
    assert_eq!(info["metadata"]["leader"], leader.as_str());
    let first_epoch: u64 = info["metadata"]["epoch"]
        .as_str()
        .expect("the leader shows its epoch")
        .parse()
        .unwrap();
    let standbys: Vec<&str> = INSTANCES.into_iter().filter(|id| *id != leader).collect();
    for id in &standbys {
        let info = srv(&client, "INFO", id).await;
        assert_eq!(info["metadata"]["role"], "STANDBY", "{id}: {info}");
        assert_eq!(info["metadata"]["leader"], leader.as_str(), "{id}: {info}");
        assert!(info["metadata"].get("epoch").is_none(), "{id}: {info}");
        // One endpoint per method, in the same order on every instance.
        let names: Vec<&str> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "whoami", "sleep"], "{id}");
    }

    // 100 plain calls; the leader is SIGKILLed before call 30.
    let mut served_by = Vec::new();
    let mut retried = 0;
    let mut killed_at = None;
    for i in 0..CALLS {
        if i == KILL_AT {
            let (_, child) = children
                .iter_mut()
                .find(|(id, _)| *id == leader)
                .expect("the leader is a child");
            child.kill();
            killed_at = Some(Instant::now());
        }
        let (msg, retries) = call(&client, "echo").await;
        assert!(
            !is_error(&msg),
            "call {i} was answered with an error: {:?}",
            msg.headers
        );
        let by: String = serde_json::from_slice(&msg.payload).unwrap();
        // A leader-only method's reply names the leader unasked, beside
        // its epoch: how a plain client learns who leads.
        let named = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(aegis_sdk::contracts::wire::HEADER_INSTANCE))
            .map(|v| v.as_str().to_owned());
        assert_eq!(named.as_ref(), Some(&by), "call {i}: {:?}", msg.headers);
        retried += retries;
        served_by.push(by);
    }
    let killed_at = killed_at.unwrap();
    eprintln!(
        "100 plain calls, {retried} retries; the {} calls from the kill on took {:?}",
        CALLS - KILL_AT,
        killed_at.elapsed()
    );
    assert!(
        served_by[..KILL_AT].iter().all(|by| *by == leader),
        "before the kill, only the leader served: {served_by:?}"
    );
    let successor = served_by[KILL_AT].clone();
    assert_ne!(successor, leader, "after the kill another instance served");
    assert!(
        served_by[KILL_AT..].iter().all(|by| *by == successor),
        "after the kill, only the new leader served: {served_by:?}"
    );

    // The new leader's metadata flipped to ACTIVE with a newer epoch; the
    // remaining standby names it.
    let info = srv(&client, "INFO", &successor).await;
    assert_eq!(info["metadata"]["role"], "ACTIVE", "{info}");
    assert_eq!(info["metadata"]["leader"], successor.as_str());
    let epoch: u64 = info["metadata"]["epoch"].as_str().unwrap().parse().unwrap();
    assert!(epoch > first_epoch, "epoch {epoch} after {first_epoch}");
    for id in standbys.iter().filter(|id| **id != successor) {
        let info = srv(&client, "INFO", id).await;
        assert_eq!(info["metadata"]["role"], "STANDBY", "{info}");
        assert_eq!(info["metadata"]["leader"], successor.as_str(), "{info}");
    }

    // No survivor counted an error, nor refused a plain call.
    for id in &standbys {
        let stats = srv(&client, "STATS", id).await;
        for e in stats["endpoints"].as_array().unwrap() {
            assert_eq!(e["num_errors"], 0, "{id}: {e}");
            assert_eq!(e["data"]["not_active_refusals"], 0, "{id}: {e}");
        }
    }
    let stats = srv(&client, "STATS", &successor).await;
    let echo = &stats["endpoints"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["num_requests"], (CALLS - KILL_AT) as u64, "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_refuses_direct_calls_without_counting_an_error() {
    let nats = server();
    let url = nats.url();
    let _children: Vec<ChildInstance> = INSTANCES[..2]
        .iter()
        .map(|id| ChildInstance::spawn_sticky("child_instance", &url, SERVICE, id, "default"))
        .collect();
    let client = plain_client(&url).await;
    let (msg, _) = call(&client, "whoami").await;
    let leader: String = serde_json::from_slice(&msg.payload).unwrap();
    let standby = INSTANCES[..2].iter().find(|id| **id != leader).unwrap();
    eventually(Duration::from_secs(10), "the standby answers $SRV", || {
        let client = client.clone();
        async move {
            client
                .request(format!("$SRV.PING.{SERVICE}.{standby}"), "".into())
                .await
                .is_ok()
        }
    })
    .await;

    // The standby names the leader once its election view holds the
    // leader's key, a moment after the election (both started together):
    // until then its refusal names no one.
    let refusals = std::sync::atomic::AtomicU64::new(0);
    let details: Value = until_some(
        Duration::from_secs(10),
        "a refusal that names the leader",
        || async {
            let reply = client
                .request(format!("rpc.{SERVICE}.{standby}.echo"), "{}".into())
                .await
                .unwrap();
            refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let headers = reply.headers.expect("an error reply has headers");
            assert_eq!(
                headers.get("Aegis-Error-Code").map(|v| v.as_str()),
                Some("NOT_ACTIVE")
            );
            let details = headers.get("Aegis-Error-Details")?;
            Some(serde_json::from_str(details.as_str()).unwrap())
        },
    )
    .await;
    assert_eq!(details["leader"], leader.as_str());
    let refusals = refusals.load(std::sync::atomic::Ordering::Relaxed);

    let stats = srv(&client, "STATS", standby).await;
    let echo = &stats["endpoints"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["num_errors"], 0, "{echo}");
    assert_eq!(echo["num_requests"], 0, "{echo}");
    assert_eq!(echo["data"]["not_active_refusals"], refusals, "{echo}");
}
