//! The commands of a sticky single-active service run on its leader:
//! a worker started with `leader_of` pulls only while its instance leads,
//! stops when it is deposed and pulls again when it leads again, against a
//! real nats-server.

mod common;
mod sticky;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    commands::{Command, CommandError, CommandWorker, Progress},
    election::Election,
    rpc::Service,
};
use common::{connect, eventually, server};
use serde_json::{Value, json};
use sticky::{SERVICE, leader_worker, sticky_service};

/// One instance of the sticky service, with a command worker that says
/// which instance ran each command.
struct Instance {
    id: &'static str,
    service: Option<Service>,
    worker: CommandWorker,
    conn: Connection,
}

impl Instance {
    async fn start(url: &str, id: &'static str) -> Self {
        let conn = connect(url).await;
        let service = sticky_service(&conn, id).await;
        let worker = leader_worker(&conn, &service, |worker| {
            worker.handler(
                "rebuild_book",
                move |cmd: Command<Value>, _: Progress| async move {
                    Ok(json!({"by": id, "epoch": cmd.epoch}))
                },
            )
        })
        .await;
        Instance {
            id,
            service: Some(service),
            worker,
            conn,
        }
    }

    fn election(&self) -> &Election {
        self.service.as_ref().and_then(Service::election).unwrap()
    }

    fn leads(&self) -> bool {
        self.service
            .as_ref()
            .and_then(Service::election)
            .is_some_and(|e| e.role().is_leader())
    }

    fn epoch(&self) -> Option<u64> {
        match self.service.as_ref()?.election()?.role() {
            aegis_sdk::election::Role::Leader { epoch } => Some(epoch),
            aegis_sdk::election::Role::Standby { .. } => None,
        }
    }
}

/// Sends `n` commands one after the other; returns who ran each, with the
/// epoch it ran under.
async fn run_commands(conn: &Connection, n: usize) -> Vec<(String, Option<u64>)> {
    let mut ran = Vec::new();
    for i in 0..n {
        let result: Value = conn
            .commands()
            .send(
                SERVICE,
                "rebuild_book",
                &json!({"n": i}),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
            .result()
            .await
            .unwrap();
        ran.push((
            result["by"].as_str().unwrap_or_default().to_owned(),
            result["epoch"].as_u64(),
        ));
    }
    ran
}

/// Sends six commands and asserts that each ran on `instance`, under the
/// epoch it leads at now.
async fn all_run_on(sender: &Connection, instance: &Instance, what: &str) {
    let epoch = instance.epoch();
    let ran = run_commands(sender, 6).await;
    assert_eq!(
        ran,
        vec![(instance.id.to_owned(), epoch); 6],
        "every command runs on {}, {what}",
        instance.id
    );
}

/// Starts two instances, and a sender; returns them once one leads, with
/// which: (instances, sender, the leader's index, the other's).
async fn two_instances(url: &str) -> (Vec<Instance>, Connection, usize, usize) {
    let instances = vec![
        Instance::start(url, "book-1").await,
        Instance::start(url, "book-2").await,
    ];
    let sender = connect(url).await;
    eventually(Duration::from_secs(10), "one leader", || {
        let n = instances.iter().filter(|i| i.leads()).count();
        async move { n == 1 }
    })
    .await;
    let first = instances.iter().position(Instance::leads).unwrap();
    (instances, sender, first, 1 - first)
}

/// Stops each instance's worker, then its service if it still runs.
async fn stop(instances: Vec<Instance>) {
    for instance in instances {
        instance.worker.shutdown().await;
        if let Some(service) = instance.service {
            service.shutdown().await.unwrap();
        }
        drop(instance.conn);
    }
}

/// Waits until `instances[i]` leads, and no other does.
async fn wait_for_leader(instances: &[Instance], i: usize, what: &str) {
    eventually(Duration::from_secs(10), what, || {
        let leads: Vec<bool> = instances.iter().map(Instance::leads).collect();
        async move { leads.iter().enumerate().all(|(j, l)| *l == (i == j)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_on_the_leader_and_follow_it_when_it_changes() {
    let nats = server();
    let (mut instances, sender, first, second) = two_instances(&nats.url()).await;

    // Every command runs on the leader, under its epoch.
    all_run_on(&sender, &instances[first], "the leader").await;

    // The leader stalls (its renewals stop) and the standby takes over:
    // the next commands run there, although the deposed instance's service
    // and worker still run.
    instances[first].election().pause_renewals(true);
    wait_for_leader(&instances, second, "the standby takes over").await;
    all_run_on(&sender, &instances[second], "the new leader").await;

    // The deposed instance recovers and stands by; the new leader stops
    // gracefully (its worker left running): the first instance leads again
    // and its worker takes the commands again.
    instances[first].election().pause_renewals(false);
    instances[second]
        .service
        .take()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    wait_for_leader(&instances, first, "the first instance leads again").await;
    all_run_on(&sender, &instances[first], "the leader again").await;

    stop(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dropped_as_in_a_crash_takes_no_more_commands() {
    let nats = server();
    let (mut instances, sender, first, second) = two_instances(&nats.url()).await;
    // The leader's service is dropped without a stop (its lease lapses, as
    // after a crash); its worker is left running.
    drop(instances[first].service.take());
    wait_for_leader(&instances, second, "the standby takes over").await;
    all_run_on(&sender, &instances[second], "the new leader").await;
    stop(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_commands_wait_and_are_reported_not_taken() {
    let nats = server();
    let mut only = Instance::start(&nats.url(), "book-1").await;
    let sender = connect(&nats.url()).await;
    eventually(Duration::from_secs(10), "the instance leads", || {
        let leads = only.leads();
        async move { leads }
    })
    .await;
    // The only instance stops leading (graceful stop of its service); its
    // worker keeps running but takes nothing.
    only.service.take().unwrap().shutdown().await.unwrap();
    let err = sender
        .commands()
        .send(SERVICE, "rebuild_book", &json!({}), Duration::from_secs(1))
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::NotTaken { .. }),
        "no leader took it: {err:?}"
    );
    only.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_follow_a_service_that_has_no_leader() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let service = common::echo_service(&conn, SERVICE, "book-1").await;
    let err = conn
        .commands()
        .worker(SERVICE)
        .leader_of(&service)
        .handler(
            "rebuild_book",
            |_: Command<Value>, _: Progress| async move { Ok(json!({})) },
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CommandError::InvalidOptions(why) if why.contains("single_active")),
        "{err}"
    );
    service.shutdown().await.unwrap();
}
