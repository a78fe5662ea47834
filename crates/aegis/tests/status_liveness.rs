//! `aegis status` (one-shot) after a SIGKILL, against real instances on a
//! nats-server running the showcase's users, with the credentials file
//! `aegis up` writes: a dead process is never shown ACTIVE. With the NATS
//! system user of that file its closed connection says it is down; without
//! one, its stopped liveness beats do. A killed leader is said to be down,
//! not "deposed" (which is for a live instance that lost its lead).

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aegis::permissions::render_users;
use aegis_testkit::NatsServer;
use common::{AEGIS, CREDENTIAL_VARS, Proc, output};
use nix::sys::signal::Signal;

/// A nats-server with the showcase's users, the buckets and streams
/// created by `aegis init`, and the credentials file `aegis up` writes
/// (`with_system`), plus a copy without the system user (`without_system`).
struct Bus {
    server: NatsServer,
    creds: aegis::up::credentials::Credentials,
    with_system: PathBuf,
    without_system: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let creds = aegis::up::credentials::ensure(&state, None, &[]).unwrap();
        let server = NatsServer::builder()
            .app_users(render_users(&creds.nats_users))
            .start()
            .expect("start nats-server (run `make bootstrap`)");
        // The testkit's system account has its own password: the file
        // names that one, as `aegis up`'s names the one of its servers.
        let with_system = state.join("credentials");
        let text = std::fs::read_to_string(&with_system).unwrap();
        let (_, system_password) = server.system_credentials();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("AEGIS_NATS_SYSTEM_PASSWORD=") {
                    format!("AEGIS_NATS_SYSTEM_PASSWORD={system_password}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&with_system, &text).unwrap();
        let other = dir.path().join("no-system");
        std::fs::create_dir(&other).unwrap();
        let without_system = other.join("credentials");
        let stripped: String = text
            .lines()
            .filter(|l| !l.starts_with("AEGIS_NATS_SYSTEM_"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&without_system, stripped).unwrap();
        let bus = Bus {
            server,
            creds,
            with_system,
            without_system,
            _dir: dir,
        };
        // The order service's bucket too: its user may not create it.
        let (ok, out) = bus.aegis(&["init", "--showcase"], &bus.with_system);
        assert!(ok, "aegis init: {out}");
        bus
    }

    /// Runs `aegis ARGS --nats-url … --credentials FILE` with none of the
    /// environment that would name other credentials; success and output.
    fn aegis(&self, args: &[&str], credentials: &Path) -> (bool, String) {
        let mut cmd = self.command(args);
        cmd.arg("--credentials").arg(credentials);
        output(cmd)
    }

    /// `aegis ARGS --nats-url …` with none of the environment that would
    /// name other credentials.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(AEGIS);
        cmd.args(args)
            .arg("--nats-url")
            .arg(self.server.url())
            .env("NO_COLOR", "1");
        for var in CREDENTIAL_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// One `aegis status` with `credentials`: the table and how long it took.
    fn status(&self, credentials: &Path) -> (String, Duration) {
        let started = Instant::now();
        let (ok, out) = self.aegis(&["status"], credentials);
        assert!(ok, "aegis status: {out}");
        (out, started.elapsed())
    }

    /// Starts instance `id` of `kind` (`pricing`, `order`) as its service's user.
    fn instance(&self, kind: &str, id: &str) -> Proc {
        let user = format!("svc-{kind}-service");
        let env = self.creds.nats_env(&user);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let url = self.server.url();
        Proc::spawn_with_env(
            &["service", kind, "--instance-id", id, "--nats-url", &url],
            &env,
        )
    }

    /// Polls `aegis status` until `done` holds for its table; returns it.
    fn status_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (table, _) = self.status(&self.with_system);
            if done(&table) {
                return table;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{table}");
        }
    }
}

/// The table's row of `instance`.
fn row<'a>(table: &'a str, instance: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(instance))
        .unwrap_or_else(|| panic!("no row for {instance}:\n{table}"))
}

/// The STATUS column of `instance`'s row.
fn status_of<'a>(table: &'a str, instance: &str) -> &'a str {
    row(table, instance).split_whitespace().nth(2).unwrap_or("")
}

fn kill(proc: &mut Proc) {
    proc.signal(Signal::SIGKILL);
    proc.exit_within(Duration::from_secs(10));
}

#[test]
fn a_killed_load_balanced_instance_is_never_shown_active() {
    let bus = Bus::start();
    let _one = bus.instance("pricing", "pricing-1");
    let mut two = bus.instance("pricing", "pricing-2");
    bus.status_until("both pricing instances ACTIVE", |t| {
        t.lines().filter(|l| l.contains(" ACTIVE ")).count() == 2
    });
    kill(&mut two);

    // The system user comes from the credentials file: the closed
    // connection says the process is down.
    let (table, took) = bus.status(&bus.with_system);
    eprintln!("with the file's system user ({took:?}):\n{table}");
    assert_eq!(status_of(&table, "pricing-1"), "ACTIVE", "{table}");
    assert_eq!(status_of(&table, "pricing-2"), "UNHEALTHY", "{table}");
    assert!(
        row(&table, "pricing-2").contains("down: connection closed"),
        "{table}"
    );

    // The file named by AEGIS_CREDENTIALS is read the same way.
    let mut cmd = bus.command(&["status"]);
    cmd.env("AEGIS_CREDENTIALS", &bus.with_system);
    let (ok, table) = output(cmd);
    assert!(ok, "{table}");
    assert!(
        row(&table, "pricing-2").contains("down: connection closed"),
        "{table}"
    );

    // No system user: the beats that stopped say it, within a bounded wait.
    let (table, took) = bus.status(&bus.without_system);
    eprintln!("without a system user ({took:?}):\n{table}");
    assert_eq!(status_of(&table, "pricing-1"), "ACTIVE", "{table}");
    assert_eq!(status_of(&table, "pricing-2"), "UNHEALTHY", "{table}");
    assert!(
        row(&table, "pricing-2").contains("unresponsive: no liveness beat"),
        "{table}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_killed_leader_is_down_not_deposed() {
    let bus = Bus::start();
    let mut procs = [
        ("order-1", bus.instance("order", "order-1")),
        ("order-2", bus.instance("order", "order-2")),
    ];
    let table = bus.status_until("one order leader and one standby", |t| {
        t.contains("leader of default") && t.contains("standby in default")
    });
    let leader = if row(&table, "order-1").contains("leader of default") {
        0
    } else {
        1
    };
    let (dead, survivor) = (procs[leader].0, procs[1 - leader].0);
    kill(&mut procs[leader].1);
    // Once the survivor holds the key, the dead one's record (which still
    // claims ACTIVE) was what used to be called "deposed".
    bus.status_until("the standby taking over", |t| {
        row(t, survivor).contains("leader of default")
    });

    for (credentials, down) in [
        (&bus.without_system, "unresponsive: no liveness beat"),
        (&bus.with_system, "down: connection closed"),
    ] {
        let (table, took) = bus.status(credentials);
        eprintln!("{} ({took:?}):\n{table}", credentials.display());
        let line = row(&table, dead);
        assert_eq!(status_of(&table, dead), "UNHEALTHY", "{table}");
        assert!(line.contains("former leader of default (epoch "), "{table}");
        assert!(line.contains(down), "{table}");
        assert!(!line.contains("deposed"), "{table}");
        assert_eq!(status_of(&table, survivor), "ACTIVE", "{table}");
    }
}

/// A credentials file whose system user this server refuses (another
/// showcase's file, left in the working directory) does not stop `aegis
/// status`: when its operator was the one connected, the refusal is said
/// and the table judged by beats; when other credentials were given, its
/// system user is not sent to this server at all.
#[test]
fn a_system_user_that_does_not_work_here_is_left_out() {
    let bus = Bus::start();
    let _one = bus.instance("pricing", "pricing-1");
    // Its process takes a while to register on a loaded machine.
    bus.status_until("pricing-1 listed", |t| {
        t.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("pricing-1"))
    });
    let text = std::fs::read_to_string(&bus.with_system).unwrap();
    let foreign: String = text
        .lines()
        .map(|l| {
            if l.starts_with("AEGIS_NATS_SYSTEM_PASSWORD=") {
                "AEGIS_NATS_SYSTEM_PASSWORD=from-another-showcase\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let file = bus.with_system.with_file_name("foreign-credentials");
    std::fs::write(&file, foreign).unwrap();

    let (ok, out) = bus.aegis(&["status"], &file);
    assert!(ok, "{out}");
    assert!(out.contains("does not work here"), "{out}");
    assert!(!out.contains("from-another-showcase"), "{out}");
    assert!(row(&out, "pricing-1").contains("pricing-1"), "{out}");

    let mut cmd = bus.command(&["status"]);
    cmd.arg("--credentials").arg(&file);
    for (key, value) in bus.creds.nats_env("monitor") {
        cmd.env(key, value);
    }
    let (ok, out) = output(cmd);
    assert!(ok, "{out}");
    assert!(!out.contains("does not work here"), "{out}");
    assert!(row(&out, "pricing-1").contains("pricing-1"), "{out}");
}

/// A record written by a clock that runs ahead is no sign of life now: a
/// dead instance whose record says it beat 5 s in the future is still
/// shown unresponsive once its beats are not heard.
#[test]
fn a_dead_instance_whose_clock_ran_ahead_is_not_shown_active() {
    let bus = Bus::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let user = "svc-pricing-service";
        let mut config = aegis_sdk::AegisConfig::with_servers(bus.server.url());
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(aegis_sdk::Secret::new(
            bus.creds.nats_password(user).unwrap(),
        ));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
        let conn = aegis_sdk::Connection::connect(config).await.unwrap();
        let mut record = aegis_sdk::contracts::ServiceInstance::new(
            "pricing-service",
            "ghost-1",
            "1.0.0",
            chrono::Utc::now() + chrono::Duration::seconds(5),
        );
        record.metadata.insert("heartbeatMs".into(), 1000.into());
        let store = conn
            .jetstream()
            .get_key_value(aegis_sdk::contracts::subjects::REGISTRY_BUCKET)
            .await
            .unwrap();
        store
            .put(
                "service-instances.pricing-service.ghost-1",
                serde_json::to_vec(&record).unwrap().into(),
            )
            .await
            .unwrap();
    });
    let (table, _) = bus.status(&bus.without_system);
    assert_eq!(status_of(&table, "ghost-1"), "UNHEALTHY", "{table}");
}
