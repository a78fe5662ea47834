//! A leader cut off from NATS (its connection silent, not closed: a
//! partition, a half-open TCP connection) cannot tell a lapse of its lease
//! from a takeover: its view of the election keys cannot change. Its
//! `leader_of` worker must not take the silence for a lapse to ride out: a
//! lease after it stopped serving, the 10 s hand-back clock runs, so the
//! command it is running is dropped about 10 s later, not run on beside
//! the successor that took the key and runs the same command again.
//!
//! Its hand-back must not reopen the command on the server either: the
//! successor may hold the command's current delivery by then, and the
//! server applies an acknowledgement of an older delivery to it. Bytes the
//! cut-off leader sent while silent arrive when the partition heals; a
//! successor with a free slot must not be given the command it is running
//! a second time.
//!
//! The leader connects through a small TCP proxy that goes silent both
//! ways without closing its sockets (what either side sends waits, as in
//! TCP, and arrives if it heals); the standby connects directly. The
//! leader's client pings rarely (`ping_interval` 2 min, as a user may set
//! it), so its connection stays open through the partition: the SDK's
//! default ping would give it up after some 6 s, and the hand-back would
//! then run on a connection known to be lost, the easier case.

mod common;
mod sticky;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{
    AegisConfig, Connection,
    commands::{Command, CommandHandle, CommandWorker, Progress},
    election::{Leadership, LeaseConfig},
    rpc::Service,
};
use aegis_testkit::NatsServer;
use common::{connect, eventually, server};
use serde_json::{Value, json};
use sticky::{SERVICE, leader_worker, sticky_service};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    time::Instant,
};

/// Far longer than the 10 s a deposed worker lets a running command go on.
const LONG_RUN: Duration = Duration::from_secs(40);
/// How long the server waits for an acknowledgement before it offers the
/// command to the successor.
const ACK_WAIT: Duration = Duration::from_secs(20);

/// A TCP proxy to the nats-server that can go silent: once silenced it
/// forwards nothing more, either way, on any connection, and closes none.
/// What is sent meanwhile waits (unread, or read and held), and is
/// forwarded once [`heal`](Self::heal)ed, as TCP retransmits it after a
/// partition.
struct SilentProxy {
    addr: SocketAddr,
    silence: watch::Sender<bool>,
}

impl SilentProxy {
    async fn start(server_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (silence, silenced) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", server_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = upstream.into_split();
                tokio::spawn(pump(client_read, server_write, silenced.clone()));
                tokio::spawn(pump(server_read, client_write, silenced.clone()));
            }
        });
        Self { addr, silence }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn silence(&self) {
        self.silence.send_replace(true);
    }

    /// Ends the silence: what waited is forwarded, then the rest.
    fn heal(&self) {
        self.silence.send_replace(false);
    }
}

/// Forwards `from` to `to`; while silenced, forwards nothing and holds
/// both open, and goes on once healed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut silenced: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        until_healed(&mut silenced).await;
        let read = tokio::select! {
            biased;
            () = until_silenced(&mut silenced) => continue,
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read just as it went silent: held until it heals.
        until_healed(&mut silenced).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn until_silenced(silenced: &mut watch::Receiver<bool>) {
    let _ = silenced.wait_for(|s| *s).await.map(|_| ());
}

/// Waits while silenced; for ever once the proxy is gone (its sockets stay
/// open, silent).
async fn until_healed(silenced: &mut watch::Receiver<bool>) {
    if silenced.wait_for(|s| !*s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// When an instance's handler started (last), how many times, and when it
/// was dropped unfinished.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    started: Option<Instant>,
    starts: u32,
    dropped: Option<Instant>,
}

/// A worker's options.
#[derive(Debug, Clone, Copy)]
struct Options {
    ack_wait: Duration,
    concurrency: usize,
}

/// As in production: one command at a time.
const ONE_AT_A_TIME: Options = Options {
    ack_wait: ACK_WAIT,
    concurrency: 1,
};

/// Records the drop of a handler that did not finish.
struct DropGuard(Arc<Mutex<Run>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap().dropped = Some(Instant::now());
    }
}

async fn start_instance(
    conn: &Connection,
    id: &str,
    run: Arc<Mutex<Run>>,
    options: Options,
) -> (Service, CommandWorker) {
    let service = sticky_service(conn, id).await;
    let worker = leader_worker(conn, &service, |worker| {
        worker
            .ack_wait(options.ack_wait)
            .concurrency(options.concurrency)
            .handler("rebuild_book", move |cmd: Command<Value>, _: Progress| {
                let run = run.clone();
                async move {
                    {
                        let mut run = run.lock().unwrap();
                        run.started = Some(Instant::now());
                        run.starts += 1;
                    }
                    let guard = DropGuard(run.clone());
                    // A handler that does not check `Leadership::holds`.
                    tokio::time::sleep(LONG_RUN).await;
                    std::mem::forget(guard);
                    Ok(json!({"epoch": cmd.epoch}))
                }
            })
    })
    .await;
    (service, worker)
}

/// Waits until `run` says its handler started.
async fn started(run: &Arc<Mutex<Run>>, within: Duration, what: &str) {
    eventually(within, what, || {
        let started = run.lock().unwrap().started.is_some();
        async move { started }
    })
    .await;
}

/// The two instances of the sticky service: the leader, connected through
/// the proxy, started first; the standby, connected directly; and the long
/// command, which the leader runs.
struct TwoInstances {
    proxy: SilentProxy,
    leader_conn: Connection,
    on_leader: Arc<Mutex<Run>>,
    leader: Service,
    leader_worker: CommandWorker,
    on_standby: Arc<Mutex<Run>>,
    standby: Service,
    standby_worker: CommandWorker,
    standby_leadership: Leadership,
    _standby_conn: Connection,
    _sender: Connection,
    _long: CommandHandle,
}

impl TwoInstances {
    async fn start(nats: &NatsServer, options: Options) -> Self {
        let proxy = SilentProxy::start(nats.port()).await;
        let mut config = AegisConfig::with_servers(proxy.url());
        config.nats.request_timeout = Duration::from_secs(2);
        config.nats.ping_interval = Duration::from_secs(120);
        let leader_conn = Connection::connect(config).await.expect("connect");
        let on_leader = Arc::new(Mutex::new(Run::default()));
        let (leader, leader_worker) =
            start_instance(&leader_conn, "book-1", on_leader.clone(), options).await;
        let leadership = leader.election().unwrap().leadership();
        eventually(Duration::from_secs(10), "book-1 leads", || async {
            leadership.serving_epoch().is_some()
        })
        .await;
        let standby_conn = connect(&nats.url()).await;
        let on_standby = Arc::new(Mutex::new(Run::default()));
        let (standby, standby_worker) =
            start_instance(&standby_conn, "book-2", on_standby.clone(), options).await;
        let standby_leadership = standby.election().unwrap().leadership();

        let sender = connect(&nats.url()).await;
        let long = sender
            .commands()
            .send(
                SERVICE,
                "rebuild_book",
                &json!({}),
                Duration::from_secs(120),
            )
            .await
            .unwrap();
        started(
            &on_leader,
            Duration::from_secs(10),
            "book-1 runs the command",
        )
        .await;
        Self {
            proxy,
            leader_conn,
            on_leader,
            leader,
            leader_worker,
            on_standby,
            standby,
            standby_worker,
            standby_leadership,
            _standby_conn: standby_conn,
            _sender: sender,
            _long: long,
        }
    }

    /// The partition: book-1's connection goes silent, and stays open.
    /// Returns when book-2 took over and runs the command, redelivered
    /// once book-1's acks stopped (within `ack_wait` and a margin), with
    /// when the silence began.
    async fn cut_off_the_leader(&self, ack_wait: Duration) -> Instant {
        self.proxy.silence();
        let silenced = Instant::now();
        let standby = &self.standby_leadership;
        eventually(Duration::from_secs(10), "book-2 takes over", || async {
            standby.serving_epoch().is_some()
        })
        .await;
        started(
            &self.on_standby,
            ack_wait + Duration::from_secs(15),
            "book-2 runs the command, redelivered once book-1's acks stop",
        )
        .await;
        silenced
    }

    /// book-1 is cut off: dropped, not stopped (its stop could not reach
    /// the server); book-2's worker is dropped rather than waiting out the
    /// command it runs.
    async fn end(self) {
        drop(self.leader_worker);
        drop(self.leader);
        drop(self.standby_worker);
        self.standby.shutdown().await.unwrap();
    }
}

/// Logs what `filter` lets through to the test's output.
fn trace(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_nats_hands_its_running_command_back_before_the_successor_runs_it() {
    trace("aegis_sdk::election=info,aegis_sdk::commands=debug");
    let nats = server();
    let two = TwoInstances::start(&nats, ONE_AT_A_TIME).await;
    let silenced = two.cut_off_the_leader(ACK_WAIT).await;

    let standby_started = two.on_standby.lock().unwrap().started.unwrap();
    let leader_run = *two.on_leader.lock().unwrap();
    // The documented bound: a lease after the leader stopped serving (which
    // is within a lease of the silence), the 10 s hand-back clock.
    let bound = LeaseConfig::default().lease * 2 + Duration::from_secs(10) + Duration::from_secs(2);
    let dropped = leader_run.dropped.unwrap_or_else(|| {
        panic!(
            "book-1 still runs the command {:?} after the partition, beside book-2, which started it {:?} after the partition",
            silenced.elapsed(),
            standby_started - silenced
        )
    });
    assert!(
        dropped - silenced <= bound,
        "book-1 ran the command {:?} on after the partition (at most {bound:?})",
        dropped - silenced
    );
    assert!(
        dropped <= standby_started,
        "book-1 dropped the command {:?} after book-2 started it",
        dropped - standby_started
    );
    two.end().await;
}

/// A short `ack_wait`, so the successor gets the command soon.
const SHORT_ACK_WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_partition_heals_does_not_hand_the_successor_its_command_a_second_time() {
    trace("aegis_sdk::election=info,aegis_sdk::commands=debug,aegis_sdk::pull=debug");
    let nats = server();
    // Two commands at once on each, so the successor has a free slot when
    // the partition heals.
    let options = Options {
        ack_wait: SHORT_ACK_WAIT,
        concurrency: 2,
    };
    let two = TwoInstances::start(&nats, options).await;
    two.cut_off_the_leader(SHORT_ACK_WAIT).await;
    let on_leader = &two.on_leader;
    eventually(
        Duration::from_secs(20),
        "book-1 drops the command's handler, its lapse in doubt",
        || {
            let dropped = on_leader.lock().unwrap().dropped.is_some();
            async move { dropped }
        },
    )
    .await;

    // The partition heals: what book-1 sent meanwhile reaches the server,
    // before the answer to this round trip.
    two.proxy.heal();
    tokio::time::timeout(Duration::from_secs(10), two.leader_conn.client().flush())
        .await
        .expect("book-1's connection works again")
        .expect("book-1's connection works again");
    // The server would hand a reopened command at once to book-2's free
    // slot, whose pull waits: a short window shows it does not.
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        let starts = two.on_standby.lock().unwrap().starts;
        assert_eq!(
            starts, 1,
            "book-2 started the command it is running again, as book-1's partition healed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(two.on_leader.lock().unwrap().starts, 1);
    two.end().await;
}
