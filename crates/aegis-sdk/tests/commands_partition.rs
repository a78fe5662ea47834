//! A leader cut off from NATS (its connection silent, not closed: a
//! partition, a half-open TCP connection) cannot tell a lapse of its lease
//! from a takeover: its view of the election keys cannot change. Its
//! `leader_of` worker must not take the silence for a lapse to ride out: a
//! lease after it stopped serving, the 10 s hand-back clock runs, so the
//! command it is running is dropped about 10 s later, not run on beside
//! the successor that took the key and runs the same command again.
//!
//! The leader connects through a small TCP proxy that goes silent both
//! ways without closing its sockets; the standby connects directly.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{
    Connection,
    commands::{Command, CommandWorker, Progress},
    election::LeaseConfig,
    rpc::Service,
};
use common::{connect, eventually, server};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    time::Instant,
};

const SERVICE: &str = "book-service";
/// Far longer than the 10 s a deposed worker lets a running command go on.
const LONG_RUN: Duration = Duration::from_secs(40);
/// How long the server waits for an acknowledgement before it offers the
/// command to the successor.
const ACK_WAIT: Duration = Duration::from_secs(20);

/// A TCP proxy to the nats-server that can go silent: once silenced it
/// forwards nothing more, either way, on any connection, and closes none.
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
}

/// Forwards `from` to `to` until silenced; then holds both open, silent.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut silenced: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            biased;
            () = until_silenced(&mut silenced) => break,
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *silenced.borrow() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Silent: nothing more either way, and neither socket closes.
    std::future::pending::<()>().await;
    drop((from, to));
}

async fn until_silenced(silenced: &mut watch::Receiver<bool>) {
    let _ = silenced.wait_for(|s| *s).await.map(|_| ());
}

/// When an instance's handler started, and when it was dropped unfinished.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    started: Option<Instant>,
    dropped: Option<Instant>,
}

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
) -> (Service, CommandWorker) {
    let service = conn
        .service(SERVICE, "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler_any_role("ping", |_: Value| async move { Ok(json!({"ok": true})) })
        .start()
        .await
        .unwrap();
    let worker = conn
        .commands()
        .worker(SERVICE)
        .leader_of(&service)
        .ack_wait(ACK_WAIT)
        .handler("rebuild_book", move |cmd: Command<Value>, _: Progress| {
            let run = run.clone();
            async move {
                run.lock().unwrap().started = Some(Instant::now());
                let guard = DropGuard(run.clone());
                // A handler that does not check `Leadership::holds`.
                tokio::time::sleep(LONG_RUN).await;
                std::mem::forget(guard);
                Ok(json!({"epoch": cmd.epoch}))
            }
        })
        .start()
        .await
        .unwrap();
    (service, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_nats_hands_its_running_command_back_before_the_successor_runs_it() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "aegis_sdk::election=info,aegis_sdk::commands=debug",
        ))
        .try_init();
    let nats = server();
    let proxy = SilentProxy::start(nats.port()).await;

    // The leader, through the proxy, starts first and leads.
    let leader_conn = connect(&proxy.url()).await;
    let on_leader = Arc::new(Mutex::new(Run::default()));
    let (leader, leader_worker) = start_instance(&leader_conn, "book-1", on_leader.clone()).await;
    let leadership = leader.election().unwrap().leadership();
    eventually(Duration::from_secs(10), "book-1 leads", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    // The standby, connected directly.
    let standby_conn = connect(&nats.url()).await;
    let on_standby = Arc::new(Mutex::new(Run::default()));
    let (standby, standby_worker) =
        start_instance(&standby_conn, "book-2", on_standby.clone()).await;
    let standby_leadership = standby.election().unwrap().leadership();

    let sender = connect(&nats.url()).await;
    let _long = sender
        .commands()
        .send(
            SERVICE,
            "rebuild_book",
            &json!({}),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "book-1 runs the command", || {
        let started = on_leader.lock().unwrap().started.is_some();
        async move { started }
    })
    .await;

    // The partition: book-1's connection goes silent, and stays open.
    proxy.silence();
    let silenced = Instant::now();
    eventually(Duration::from_secs(10), "book-2 takes over", || async {
        standby_leadership.serving_epoch().is_some()
    })
    .await;
    eventually(
        ACK_WAIT + Duration::from_secs(15),
        "book-2 runs the command, redelivered once book-1's acks stop",
        || {
            let started = on_standby.lock().unwrap().started.is_some();
            async move { started }
        },
    )
    .await;
    let standby_started = on_standby.lock().unwrap().started.unwrap();
    let leader_run = *on_leader.lock().unwrap();
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

    // book-1 is cut off: dropped, not stopped (its stop could not reach
    // the server); book-2's worker is dropped rather than waiting out the
    // command it runs.
    drop(leader_worker);
    drop(leader);
    drop(standby_worker);
    standby.shutdown().await.unwrap();
}
