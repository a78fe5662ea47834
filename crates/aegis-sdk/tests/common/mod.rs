//! Helpers shared by the SDK's integration tests: a real nats-server per test
//! and polling for conditions instead of fixed sleeps.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aegis_sdk::{AegisConfig, Connection, rpc::Service};
use aegis_testkit::NatsServer;

/// Starts a fresh JetStream-enabled server for one test.
pub fn server() -> NatsServer {
    NatsServer::start().expect("start nats-server (run `make bootstrap`)")
}

/// Starts a server whose application account has two users, password
/// `pw` both: `op`, who may do anything, and `dev`, with `permissions`
/// (the server config's syntax, e.g. `publish: { deny: ["rpc.a.>"] }`).
/// For what a user is told when the server refuses it something.
pub fn server_with_dev(permissions: &str) -> NatsServer {
    NatsServer::builder()
        .accounts(true)
        .app_users(format!(
            r#"[ {{ user: "op", password: "pw" }},
                 {{ user: "dev", password: "pw", permissions: {{ {permissions} }} }} ]"#
        ))
        .start()
        .expect("start nats-server with the users op and dev")
}

/// Connects the SDK to `nats` as `user` (password `pw`; see
/// [`server_with_dev`]).
pub async fn connect_as(
    nats: &NatsServer,
    user: &str,
) -> Result<Connection, aegis_sdk::ConnectError> {
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.user = Some(user.to_owned());
    config.nats.password = Some(aegis_sdk::Secret::new("pw".to_owned()));
    Connection::connect(config).await
}

/// Connects the SDK to `url` with a short request timeout.
pub async fn connect(url: &str) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(2);
    Connection::connect(config).await.expect("connect")
}

// Not every test binary that includes this module polls.
#[allow(unused_imports)]
pub use aegis_testkit::wait::eventually;

/// Waits until `standby` stands by with `leader` named as the leader: it
/// watches the election key, so it takes over as soon as the key goes.
pub async fn follows(standby: &aegis_sdk::election::Election, leader: &str) {
    let mut roles = standby.roles();
    let what = format!("the standby follows {leader}");
    eventually(Duration::from_secs(10), &what, || {
        let role = roles.borrow_and_update().clone();
        async move {
            role == aegis_sdk::election::Role::Standby {
                leader: Some(leader.into()),
            }
        }
    })
    .await;
}

/// Starts instance `instance` of `service` on `conn`, with one method,
/// `echo`, that answers what it is sent.
pub async fn echo_service(conn: &Connection, service: &str, instance: &str) -> Service {
    conn.service(service, "1.0.0")
        .instance_id(instance)
        .handler("echo", |v: serde_json::Value| async move { Ok(v) })
        .start()
        .await
        .expect("start the echo service")
}

/// Connects the SDK to every URL of a cluster with `replicas` copies of the
/// buckets it creates.
pub async fn connect_cluster(urls: Vec<String>, replicas: usize) -> Connection {
    let mut config = AegisConfig::default();
    config.nats.servers = urls;
    config.nats.replicas = replicas;
    config.nats.request_timeout = Duration::from_secs(2);
    Connection::connect(config)
        .await
        .expect("connect to the cluster")
}

/// Environment variables that turn a test binary into a registered instance
/// (see [`run_child_instance`]).
pub const CHILD_URL: &str = "AEGIS_TEST_CHILD_URL";
const CHILD_SERVICE: &str = "AEGIS_TEST_CHILD_SERVICE";
const CHILD_INSTANCE: &str = "AEGIS_TEST_CHILD_INSTANCE";
const CHILD_HEARTBEAT_MS: &str = "AEGIS_TEST_CHILD_HEARTBEAT_MS";
const CHILD_TTL_MS: &str = "AEGIS_TEST_CHILD_TTL_MS";
const CHILD_GROUP: &str = "AEGIS_TEST_CHILD_GROUP";

/// A real child process running one registered service instance; killed on
/// drop.
pub struct ChildInstance {
    child: std::process::Child,
}

impl ChildInstance {
    /// Starts this test binary again, running only `entry` (an ignored test
    /// that calls [`run_child_instance`]), as instance `instance` of
    /// `service` connected to `url`.
    pub fn spawn(
        entry: &str,
        url: &str,
        service: &str,
        instance: &str,
        heartbeat: Duration,
        ttl: Duration,
    ) -> ChildInstance {
        Self::spawn_with(entry, url, service, instance, heartbeat, ttl, None)
    }

    /// Like [`spawn`](Self::spawn), as a sticky single-active instance of
    /// `group` (both methods leader-only).
    pub fn spawn_sticky(
        entry: &str,
        url: &str,
        service: &str,
        instance: &str,
        group: &str,
    ) -> ChildInstance {
        Self::spawn_with(
            entry,
            url,
            service,
            instance,
            Duration::from_millis(200),
            Duration::from_secs(2),
            Some(group),
        )
    }

    fn spawn_with(
        entry: &str,
        url: &str,
        service: &str,
        instance: &str,
        heartbeat: Duration,
        ttl: Duration,
        group: Option<&str>,
    ) -> ChildInstance {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = std::process::Command::new(exe);
        if let Some(group) = group {
            command.env(CHILD_GROUP, group);
        }
        let child = command
            .args([
                entry,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, url)
            .env(CHILD_SERVICE, service)
            .env(CHILD_INSTANCE, instance)
            .env(CHILD_HEARTBEAT_MS, heartbeat.as_millis().to_string())
            .env(CHILD_TTL_MS, ttl.as_millis().to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the child instance");
        ChildInstance { child }
    }

    /// SIGKILL, as in a crash: no deregistration, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP, as a hung process or a frozen host: its connection and
    /// subscriptions stay, nothing answers, its record is not refreshed.
    /// Returns once every thread of it is stopped.
    #[allow(dead_code)]
    pub fn freeze(&mut self) {
        aegis_testkit::process::freeze(self.child.id());
    }

    /// SIGCONT: a [`freeze`](Self::freeze)d instance goes on.
    #[allow(dead_code)]
    pub fn thaw(&mut self) {
        aegis_testkit::process::thaw(self.child.id());
    }
}

impl Drop for ChildInstance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a child instance: registers a service whose `echo` and
/// `whoami` answer its own instance id (and `sleep` too, after a while),
/// and runs until killed. Does nothing unless started by
/// [`ChildInstance::spawn`].
pub async fn run_child_instance() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let var = |k: &str| std::env::var(k).expect(k);
    let ms = |k: &str| Duration::from_millis(var(k).parse().expect(k));
    let conn = connect(&url).await;
    let whoami = |ctx: aegis_sdk::rpc::RequestContext, _: serde_json::Value| async move {
        Ok::<_, aegis_sdk::rpc::WireError>(ctx.instance_id.to_string())
    };
    let mut builder = conn
        .service(var(CHILD_SERVICE), "1.0.0")
        .instance_id(var(CHILD_INSTANCE))
        .heartbeat(ms(CHILD_HEARTBEAT_MS))
        .ttl(ms(CHILD_TTL_MS));
    if let Ok(group) = std::env::var(CHILD_GROUP) {
        builder = builder.single_active(group);
    }
    // `sleep` tells `child.sleeping.{instance}` it has the call, then
    // answers its id after `{"ms": N}` milliseconds.
    let told = conn.client().clone();
    let sleep = move |ctx: aegis_sdk::rpc::RequestContext, body: serde_json::Value| {
        let told = told.clone();
        async move {
            let _ = told
                .publish(format!("child.sleeping.{}", ctx.instance_id), "".into())
                .await;
            let _ = told.flush().await;
            let ms = body["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, aegis_sdk::rpc::WireError>(ctx.instance_id.to_string())
        }
    };
    let _service = builder
        .handler_with_context("echo", whoami)
        .handler_with_context("whoami", whoami)
        .handler_with_context("sleep", sleep)
        .start()
        .await
        .expect("child instance starts");
    std::future::pending::<()>().await;
}

/// Rewrites `server`'s configuration as `config` and has it reload
/// (SIGHUP); returns once the reload is logged.
#[allow(dead_code)]
pub fn reload_as(server: &NatsServer, config: &str) {
    let reloads = |log: &str| log.matches("Reloaded server configuration").count();
    let before = reloads(&std::fs::read_to_string(server.log_path()).unwrap_or_default());
    std::fs::write(server.config_path(), config).unwrap();
    let pid = server.pid().expect("the server runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "SIGHUP to nats-server");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reloads(&std::fs::read_to_string(server.log_path()).unwrap_or_default()) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not reload"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes `server` lose the requests its clients send to the subjects of
/// `mappings` (the inside of an account's `mappings: { }` block, each
/// subject mapped under `lost.`), as JetStream loses those sent while a
/// stream has no leader: something listens there, so they are not told
/// "no responders", and never answers. Checks that `probe` goes
/// unanswered; returns the configuration to [`reload_as`] to answer again.
#[allow(dead_code)]
pub async fn lose_requests(server: &NatsServer, mappings: &str, probe: &str) -> String {
    let silent = async_nats::connect(server.url()).await.unwrap();
    let lost = silent.subscribe("lost.>").await.unwrap();
    silent.flush().await.unwrap();
    let base = std::fs::read_to_string(server.config_path()).unwrap();
    let account = "{ jetstream: enabled, ";
    assert!(base.contains(account), "the clients' account: {base}");
    let lossy = base.replacen(
        account,
        &format!("{{ jetstream: enabled, mappings: {{ {mappings} }}, "),
        1,
    );
    tokio::task::block_in_place(|| reload_as(server, &lossy));
    let lookup = silent.request(probe.to_owned(), "".into());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lookup)
            .await
            .is_err(),
        "{probe} goes unanswered"
    );
    // Whoever listens stays until the test ends.
    tokio::spawn(async move {
        let _keep = (silent, lost);
        std::future::pending::<()>().await;
    });
    base
}

/// A ready 3-node cluster, a connection to all of it, and the registry and
/// election buckets made (R3).
pub async fn cluster_with_buckets() -> (aegis_testkit::NatsCluster, Connection) {
    let mut cluster = aegis_testkit::NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let setup = connect_cluster(cluster.urls(), 3).await;
    aegis_sdk::registry::ensure_registry_bucket(setup.jetstream(), 3)
        .await
        .unwrap();
    aegis_sdk::election::ensure_election_bucket(setup.jetstream(), 3)
        .await
        .unwrap();
    (cluster, setup)
}

/// Everything logged in a test binary, as text: [`Captured::install`] sets
/// it as the binary's one tracing subscriber, for every thread.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures every event at `level` and above, from every thread of
    /// the test binary (call once per binary).
    pub fn install(level: tracing::Level) -> Self {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .init();
        captured
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A command that runs this test binary again, only the ignored test
/// `name`, with `marker` set in its environment (so the test knows it is
/// the child) and its output captured.
pub fn child_test(name: &str, marker: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(marker, "1")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    cmd
}

/// A child process, killed (SIGKILL) if the test fails before it exits.
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The child's process id, as `kill` takes it.
    pub fn pid(&self) -> String {
        self.0.as_ref().unwrap().id().to_string()
    }

    /// Waits (off the async runtime) for the child to exit and returns its
    /// output; a child still running after 20 s is killed.
    pub async fn wait_with_output(self) -> std::process::Output {
        tokio::task::spawn_blocking(move || self.wait_with_output_blocking())
            .await
            .unwrap()
    }

    /// [`wait_with_output`](Self::wait_with_output), blocking the thread.
    fn wait_with_output_blocking(mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(20)).is_err() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let output = child.wait_with_output().unwrap();
        let _ = tx.send(());
        output
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
