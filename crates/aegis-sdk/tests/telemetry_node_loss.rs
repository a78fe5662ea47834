//! The NATS node leading `AEGIS_LOG` dies: its followers wait 4-9 s
//! before electing a new leader, and the stream takes no message
//! meanwhile. A lifecycle event an instance emits in that window (an
//! `elected`, as when the kill made it the leader) is stored once the
//! stream has a leader again — once, however often it was sent — whether
//! or not the instance saw the stream store anything before.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    contracts::{
        log::{LogKind, LogLevel, LogRecord},
        subjects::{LOG_STREAM, LOG_SUBJECTS, log_subject},
    },
    streams::{bounded, ensure_stream},
    telemetry::Telemetry,
};
use aegis_testkit::{
    NatsCluster,
    leaders::{lead_elsewhere, stream_leader},
    wait::{PATIENCE, until_some},
};
use async_nats::jetstream::stream::{self, DirectGetErrorKind, DiscardPolicy, RetentionPolicy};
use common::connect_cluster;

/// `AEGIS_LOG` as the monitor and `aegis up` create it (R3).
fn log_stream(limits: &aegis_sdk::StreamLimits) -> stream::Config {
    bounded(
        stream::Config {
            name: LOG_STREAM.to_owned(),
            subjects: vec![LOG_SUBJECTS.to_owned()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_messages_per_subject: 10_000,
            num_replicas: 3,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        },
        limits,
    )
}

/// The records stored under `subject`, oldest first, read from any
/// replica (direct gets need no leader); `None` when a replica did not
/// answer.
async fn stored(log: &stream::Stream, subject: &str) -> Option<Vec<LogRecord>> {
    let mut records = Vec::new();
    for sequence in 1.. {
        match log.direct_get(sequence).await {
            Ok(message) if message.subject.as_str() == subject => {
                records.push(serde_json::from_slice(&message.payload).ok()?);
            }
            Ok(_) => {}
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(_) => return None,
        }
    }
    Some(records)
}

/// How many of `records` are of `kind`.
fn count(records: &[LogRecord], kind: LogKind) -> usize {
    records.iter().filter(|r| r.kind == kind).count()
}

/// A 3-node cluster with `AEGIS_LOG`, led by a node that does not lead
/// the meta group (a kill costs the stream its leader and nothing else),
/// and the instance's and the reader's connections to the other two.
struct Fixture {
    cluster: NatsCluster,
    /// The node leading `AEGIS_LOG`, and its name.
    doomed: (usize, String),
    instance: aegis_sdk::Connection,
    /// `AEGIS_LOG`, read through the nodes that survive.
    log: stream::Stream,
    _reader: aegis_sdk::Connection,
}

impl Fixture {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "aegis_sdk::telemetry=debug",
            ))
            .with_test_writer()
            .try_init();
        let mut cluster = NatsCluster::start(3).unwrap();
        cluster.wait_ready(Duration::from_secs(30)).unwrap();
        let setup = connect_cluster(cluster.urls(), 3).await;
        ensure_stream(setup.jetstream(), log_stream(&setup.config().streams.log))
            .await
            .unwrap();
        let meta = cluster.meta_leader().expect("a meta leader");
        let meta_name = cluster.node(meta).server_name().to_owned();
        lead_elsewhere(setup.client(), LOG_STREAM, &meta_name).await;
        let leader = stream_leader(setup.client(), LOG_STREAM)
            .await
            .expect("AEGIS_LOG has a leader");
        let doomed = cluster
            .nodes()
            .iter()
            .position(|n| n.server_name() == leader)
            .expect("the leader is a node of the cluster");
        let survivors = cluster.urls_except(doomed);
        let instance = connect_cluster(survivors.clone(), 3).await;
        let reader = connect_cluster(survivors, 3).await;
        let log = reader.jetstream().get_stream(LOG_STREAM).await.unwrap();
        Self {
            cluster,
            doomed: (doomed, leader),
            instance,
            log,
            _reader: reader,
        }
    }

    /// SIGKILLs the node leading `AEGIS_LOG`; when it died.
    fn kill_the_log_leader(&mut self) -> Instant {
        let (index, name) = &self.doomed;
        eprintln!("killing {name}: it leads {LOG_STREAM}, not the meta group");
        self.cluster.kill_node(*index);
        Instant::now()
    }

    /// Waits until a record of `kind` is stored under `subject`; the
    /// records stored then.
    async fn stored_once_there(&self, subject: &str, kind: LogKind) -> Vec<LogRecord> {
        let what = format!("a {kind:?} event stored");
        until_some(PATIENCE, &what, || async {
            stored(&self.log, subject)
                .await
                .filter(|r| count(r, kind.clone()) > 0)
        })
        .await
    }
}

fn event(kind: LogKind, message: &str) -> LogRecord {
    LogRecord::new(chrono::Utc::now(), LogLevel::Info, kind, message)
}

/// The kinds of `records`, oldest first.
fn kinds(records: &[LogRecord]) -> Vec<LogKind> {
    records.iter().map(|r| r.kind.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_emitted_while_the_log_stream_elects_its_leader_is_stored_once() {
    let mut fixture = Fixture::start().await;
    let subject = log_subject("order-service", "order-1");
    let telemetry = Telemetry::new(&fixture.instance, "order-service", "order-1");
    telemetry.event(event(LogKind::Registered, "registered"));
    fixture
        .stored_once_there(&subject, LogKind::Registered)
        .await;

    let killed = fixture.kill_the_log_leader();
    telemetry.event(event(LogKind::Elected, "elected ACTIVE leader").with_field("epoch", 4789));
    fixture.stored_once_there(&subject, LogKind::Elected).await;
    eprintln!(
        "the elected event was stored {:?} after the kill",
        killed.elapsed()
    );

    // A later event is stored after every copy of the earlier ones (one
    // connection, in order): once it is, no copy is still on its way.
    telemetry.event(event(LogKind::Deregistered, "deregistered"));
    let records = fixture
        .stored_once_there(&subject, LogKind::Deregistered)
        .await;
    assert_eq!(
        kinds(&records),
        [LogKind::Registered, LogKind::Elected, LogKind::Deregistered],
        "each event stored once, in order"
    );
    assert_eq!(telemetry.dropped(), 0);
}

/// An instance that starts while the stream has no leader has never seen
/// it store anything: its sender finds out from JetStream that a stream
/// captures the subject, rather than taking the silence for "no stream".
#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_waits_for_the_stream_it_has_not_seen_yet() {
    let mut fixture = Fixture::start().await;
    let killed = fixture.kill_the_log_leader();
    let subject = log_subject("pricing-service", "pricing-1");
    let telemetry = Telemetry::new(&fixture.instance, "pricing-service", "pricing-1");
    telemetry.event(event(LogKind::Registered, "registered"));
    telemetry.event(event(LogKind::StatusChanged, "ACTIVE"));
    fixture
        .stored_once_there(&subject, LogKind::StatusChanged)
        .await;
    eprintln!(
        "the first events of a new instance were stored {:?} after the kill",
        killed.elapsed()
    );
    telemetry.event(event(LogKind::Deregistered, "deregistered"));
    let records = fixture
        .stored_once_there(&subject, LogKind::Deregistered)
        .await;
    assert_eq!(
        kinds(&records),
        [
            LogKind::Registered,
            LogKind::StatusChanged,
            LogKind::Deregistered
        ],
        "each event stored once, in order"
    );
}
