//! `aegis up`: the local showcase on one machine.
//!
//! A 3-node NATS cluster (or one node with `--single-node`, or none with
//! `--nats-url`), the streams and buckets (R3 on a cluster), the monitor API on
//! `--api-port`, and the service instances — each a separate child process of
//! this same binary, so killing one is real. It prints where to look, restarts
//! a crashed child after a delay (unless `--no-restart`), and on Ctrl-C /
//! SIGTERM / SIGHUP stops everything in order, removing no data; a killed
//! `aegis up` takes its children with it. A second `aegis up`
//! on the same state directory says so instead of fighting over ports.
//!
//! - [`nats`]: the NATS nodes' configs, ports and health checks.
//! - [`supervisor`]: starting, watching, restarting and stopping children.
//! - [`remote`]: a running showcase's children seen from another process
//!   (`aegis chaos`, `aegis bench chaos`): pids, signals, hold and restart.
//! - [`credentials`]: the monitor's tokens and the NATS users' passwords
//!   (each child connects as its own role's user, see [`crate::permissions`]).
//! - [`admitted`]: the users and environment files of services of your own
//!   run next to the showcase (`--admit-service`).
//!
//! Why one module of over 500 lines: it is the run itself, in the order it
//! happens (state directory, NATS, streams and buckets, the monitor, the
//! children, what it prints, the ordered stop), read top to bottom; the
//! parts that stand alone are the modules above.

pub mod admitted;
pub mod credentials;
pub mod nats;
pub mod ports;
pub mod remote;
pub mod supervisor;
pub mod tls;
pub mod ui;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aegis_sdk::{
    ConnectError, Connection, Secret,
    contracts::{InstanceStatus, ServiceInstance, subjects},
    election::LeaderRecord,
    registry::{RegistryError, RegistryReader},
};
use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::permissions::{MONITOR_USER, OPERATOR_USER, Role, ServiceRole};
use supervisor::{ChildSpec, Kind, Supervisor};

/// Options of `aegis up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Use this existing NATS (comma-separated URLs) and start no server.
    #[arg(long = "nats-url")]
    pub nats_url: Option<String>,
    /// Start one NATS node instead of a 3-node cluster.
    #[arg(long)]
    pub single_node: bool,
    /// Instances per service, e.g. `order=2` or `order=1,risk=0`. A kind not
    /// named keeps its default (order=3, pricing=2, risk=2); `=0` runs none of
    /// it (orders then fail: order-service needs pricing and risk).
    #[arg(long, default_value = "order=3,pricing=2,risk=2", value_parser = parse_instances)]
    pub instances: Instances,
    /// Port of the monitor API (and UI).
    #[arg(long, default_value_t = 8100)]
    pub api_port: u16,
    /// Address the monitor API listens on. The default reaches this machine
    /// only; `0.0.0.0` opens it to the network (put TLS in front).
    #[arg(long, visible_alias = "api-listen", default_value = "127.0.0.1")]
    pub api_bind: std::net::IpAddr,
    /// First NATS client port; nodes use base, base+1, base+2 (routes +2000,
    /// monitoring +4000), so at most 61533.
    #[arg(long, default_value_t = 4222, value_parser = parse_base_port)]
    pub base_port: u16,
    /// Where state lives: NATS data, logs, pids, credentials.
    #[arg(long, default_value = ".aegis")]
    pub state_dir: PathBuf,
    /// Do not restart children that exit.
    #[arg(long)]
    pub no_restart: bool,
    /// Directory of the built UI to serve as it is, never built (it must
    /// hold `index.html`; `aegis up` refuses one that does not). Default:
    /// `ui/out`, built first (npm) when run from a checkout whose export is
    /// missing or older than the UI's sources.
    #[arg(long)]
    pub ui_dir: Option<PathBuf>,
    /// Serve `ui/out` as it is, without building a missing or stale export.
    /// With --ui-dir it changes nothing: that directory is never built.
    #[arg(long)]
    pub no_ui_build: bool,
    /// Require TLS on every NATS connection, clients and routes (mutual TLS
    /// between the nodes), with a CA and certificate made once in
    /// `<state-dir>/tls` (or yours, placed there first).
    #[arg(long, conflicts_with = "nats_url")]
    pub tls: bool,
    /// Admit a service of your own, NAME, next to the showcase (repeat for
    /// more): its NATS gets the user `svc-NAME`, which serves NAME, calls
    /// the public methods of the showcase's services (not their admin
    /// methods, such as risk-service's `update_limits`: those are the
    /// operator's) and every method of the other admitted ones, and
    /// publishes `events.DOMAIN.>` (DOMAIN: NAME without a trailing
    /// `-service`); no buckets, event consumers or feeds. Its connection
    /// settings go to `<state-dir>/admitted/NAME.env`. A run without it
    /// admits nobody.
    #[arg(long = "admit-service", value_name = "NAME", value_parser = parse_admitted, conflicts_with = "nats_url")]
    pub admit_service: Vec<String>,
}

/// An `--admit-service` NAME: see [`crate::permissions::check_admitted_name`].
fn parse_admitted(s: &str) -> Result<String, String> {
    crate::permissions::check_admitted_name(s)?;
    Ok(s.to_owned())
}

/// Instances per service kind, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances(pub BTreeMap<String, usize>);

const SERVICE_KINDS: [&str; 3] = ["order", "pricing", "risk"];

/// Instances of each kind in [`SERVICE_KINDS`] when `--instances` does not
/// name it.
const DEFAULT_INSTANCES: [usize; 3] = [3, 2, 2];

/// How long the showcase's instances have to register, and its monitor to
/// be ready, once started.
const START_WITHIN: Duration = Duration::from_secs(60);

fn parse_instances(s: &str) -> Result<Instances, String> {
    let mut map: BTreeMap<String, usize> = SERVICE_KINDS
        .iter()
        .zip(DEFAULT_INSTANCES)
        .map(|(kind, n)| ((*kind).to_owned(), n))
        .collect();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, n) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not KIND=COUNT (e.g. order=3)"))?;
        if !SERVICE_KINDS.contains(&kind) {
            return Err(format!(
                "unknown service `{kind}` (expected one of {SERVICE_KINDS:?})"
            ));
        }
        let n: usize = n
            .parse()
            .map_err(|_| format!("`{n}` is not a count in `{part}`"))?;
        if n > 20 {
            return Err(format!(
                "{n} instances of {kind} is more than this showcase supports (20)"
            ));
        }
        map.insert(kind.to_owned(), n);
    }
    Ok(Instances(map))
}

/// The highest `--base-port`: its layout's last port (the third node's
/// monitoring port, base + 4000 + 2) is 65535.
const MAX_BASE_PORT: u16 = u16::MAX - nats::MONITOR_OFFSET - 2;

/// A `--base-port` whose whole layout (see [`nats::plan`]) fits below
/// 65536; a larger one would wrap around to port 0 and up.
fn parse_base_port(s: &str) -> Result<u16, String> {
    let port: u16 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a port (1-{MAX_BASE_PORT})"))?;
    if port == 0 {
        return Err("the base port must be at least 1".to_owned());
    }
    if port > MAX_BASE_PORT {
        return Err(format!(
            "{port} is too high: the nodes use base..base+2, their routes base+2000.. and their monitoring base+{}..base+{}, which must stay below 65536; use at most {MAX_BASE_PORT}",
            nats::MONITOR_OFFSET,
            nats::MONITOR_OFFSET + 2
        ));
    }
    Ok(port)
}

/// Runs the showcase until `shutdown` is cancelled.
///
/// # Errors
/// When another `aegis up` holds the state directory, a port is taken, or a
/// child cannot start.
pub async fn run(mut args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Before anything is made or started: names that clash with each other.
    let admitted = crate::permissions::admitted_services(&args.admit_service)
        .map_err(|e| anyhow::anyhow!("--admit-service: {e}"))?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state directory {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    // Before anything in it is written, replaced or deleted.
    check_state_dir(&state_dir)?;
    let _lock = PidLock::acquire(&state_dir.join("up.pid"))?;
    // The tools take `up.pid` with no `nats-url` as "still starting": one a
    // killed `aegis up` left behind must not name its nodes meanwhile.
    credentials::remove_nats_url(&state_dir);
    nats::remove_nodes(&state_dir);
    args.ui_dir = ui::resolve(args.ui_dir.take(), !args.no_ui_build, &shutdown).await?;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the aegis binary")?;
    let mut sup = Supervisor::new(&state_dir, !args.no_restart)?;
    let tls = if args.tls {
        Some(tls::ensure(&state_dir)?)
    } else {
        None
    };
    let creds = credentials::ensure(&state_dir, tls.as_ref().map(|t| t.ca.as_path()), &admitted)?;

    // 1. NATS.
    let (url, replicas, nodes) = match &args.nats_url {
        Some(url) => (url.clone(), 1, Vec::new()),
        None => {
            let count = if args.single_node { 1 } else { 3 };
            let nodes = nats::plan(&state_dir, count, args.base_port);
            nats::check_ports_free(&nodes, args.api_port)?;
            nats::write_configs(&nodes, &creds, tls.as_ref())?;
            let binary = aegis_testkit::nats_server_binary()
                .context("finding nats-server (run `make bootstrap`)")?;
            for node in &nodes {
                sup.start(ChildSpec {
                    name: format!("nats-{}", node.name),
                    kind: Kind::Nats,
                    program: binary.clone(),
                    args: vec!["-c".into(), node.config_path().display().to_string()],
                    env: Vec::new(),
                    unset: not_inherited(true, false),
                })?;
            }
            step(&format!("starting {count} NATS node(s)"));
            if let Err(e) = nats::wait_healthy(&nodes, Duration::from_secs(30)).await {
                sup.stop_all().await;
                return Err(e);
            }
            let urls: Vec<String> = nodes.iter().map(nats::NatsNode::url).collect();
            (urls.join(","), count, nodes)
        }
    };
    // For the operator's tools run beside it (`ConnectArgs`): every node,
    // not only the first; and for `aegis chaos`, which nodes there are.
    credentials::write_nats_url(&state_dir, &url)?;
    nats::write_nodes(&state_dir, &nodes)?;
    let tls_ca = tls.map(|t| t.ca);
    // What runs a service of one's own as its user; an earlier run's
    // files for services not admitted now are removed.
    admitted::write(&state_dir, &admitted, &url, tls_ca.as_deref(), &creds)?;
    let on = Topology {
        url: &url,
        replicas,
        nodes: &nodes,
        tls_ca: tls_ca.as_deref(),
        admitted: &admitted,
    };
    let result = run_on(&args, &state_dir, &exe, &on, &creds, &mut sup, &shutdown).await;
    // Said on a terminal that may be gone (a closed one stops the
    // showcase too): a failed write is no panic, and the stop goes on.
    say("\nstopping the showcase…");
    sup.stop_all().await;
    credentials::remove_nats_url(&state_dir);
    nats::remove_nodes(&state_dir);
    say(&format!(
        "Aegis showcase stopped (data kept in {}).",
        state_dir.display()
    ));
    result
}

/// Refuses a `dir` that holds what `aegis up` would replace or delete
/// without having written it: a `credentials` file that is not of aegis
/// (it is written anew), files in `control/` that are no hold or restart
/// request (the directory is emptied), `admitted/` files that are no
/// environment file of aegis (the ones of services not admitted are
/// deleted). Other files are left alone, and so taken: a missing or empty
/// directory, one an earlier `aegis up` left, and one holding files of the
/// user's own beside (its output redirected into it, as `aegis bench
/// chaos` and the tests do). Nothing found is quoted but by its name: a
/// file may hold a secret.
///
/// # Errors
/// Naming the directory, what in it is not of aegis, and how to go on.
fn check_state_dir(dir: &Path) -> anyhow::Result<()> {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut found = Vec::new();
    if let Some(why) = foreign_credentials(&dir.join("credentials")) {
        found.push(why);
    }
    for name in names(&dir.join("control")) {
        if !(name.starts_with("hold-") || name.starts_with("restart-")) {
            found.push(format!(
                "control/{name}, which aegis does not write (`aegis up` empties control/)"
            ));
        }
    }
    // Only the `.env` files are at stake (the others are left alone); an
    // empty one is what an interrupted write of aegis's own leaves.
    for name in names(&dir.join(admitted::DIR)) {
        if !name.ends_with(".env") {
            continue;
        }
        let path = dir.join(admitted::DIR).join(&name);
        let ours = std::fs::read_to_string(&path).is_ok_and(|text| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .all(is_aegis_setting)
        });
        if !ours {
            found.push(format!(
                "{}/{name}, which is no environment file aegis wrote (`aegis up` deletes the .env files of services it does not admit)",
                admitted::DIR
            ));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    bail!(
        "{} is not an aegis state directory: it holds {}. `aegis up` writes, replaces and \
         deletes files in its state directory, so it leaves this one alone: give another \
         --state-dir (a new or empty directory), or remove {} first if nothing in it is needed",
        dir.display(),
        found.join("; "),
        shell_quoted(&dir.display().to_string())
    )
}

/// Whether `line` is a `NAME=value` setting of aegis (`AEGIS_...`).
fn is_aegis_setting(line: &str) -> bool {
    line.split_once('=').is_some_and(|(name, _)| {
        let name = name.trim();
        name.starts_with("AEGIS_")
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Why the file at `path`, when there is one, is no credentials file of
/// aegis: a line that is not an `AEGIS_...=value` setting (named by its
/// number, never shown), or no setting at all. `None` for an absent or
/// blank file.
fn foreign_credentials(path: &Path) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Some("credentials, which is no text file aegis wrote".to_owned());
    };
    let mut settings = 0;
    let mut comments = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            comments = true;
        } else if is_aegis_setting(line) {
            settings += 1;
        } else {
            return Some(format!(
                "credentials, whose line {} is no AEGIS_NAME=value setting of aegis (`aegis up` writes that file anew)",
                number + 1
            ));
        }
    }
    (settings == 0 && comments).then(|| {
        "credentials, with no AEGIS_NAME=value setting of aegis in it (`aegis up` writes that file anew)"
            .to_owned()
    })
}

/// Waits while `missing` says what the showcase still lacks, until
/// `deadline` (then fails with it); `Ok(false)` when the showcase is
/// stopped meanwhile. Children that fail while starting (e.g. a bucket
/// still being created on the cluster) are restarted like later ones.
async fn starting(
    sup: &mut Supervisor,
    deadline: tokio::time::Instant,
    shutdown: &CancellationToken,
    state_dir: &Path,
    mut missing: impl AsyncFnMut() -> Option<String>,
) -> anyhow::Result<bool> {
    loop {
        let Some(what) = missing().await else {
            return Ok(true);
        };
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{what} within {}; see the logs in {}",
                humantime::format_duration(START_WITHIN),
                state_dir.join("logs").display()
            );
        }
        sup.tick();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// The NATS the showcase runs on.
struct Topology<'a> {
    /// Client URLs, comma-separated.
    url: &'a str,
    /// Replicas of streams and buckets.
    replicas: usize,
    /// Our own nodes; empty on an external NATS.
    nodes: &'a [nats::NatsNode],
    /// The CA clients verify the servers with, when TLS is required.
    tls_ca: Option<&'a Path>,
    /// The services of one's own admitted on it (`--admit-service`).
    admitted: &'a [ServiceRole],
}

async fn run_on(
    args: &UpArgs,
    state_dir: &Path,
    exe: &Path,
    on: &Topology<'_>,
    creds: &credentials::Credentials,
    sup: &mut Supervisor,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (url, replicas, nodes) = (on.url, on.replicas, on.nodes);
    // 2. Every stream and bucket (what `aegis init --showcase` creates), once, with the
    //    right replicas, before anything that uses them starts. On our own
    //    servers `aegis up` does it as the operator; on an external NATS with
    //    whatever credentials the environment names (AEGIS_NATS_USER /
    //    _PASSWORD, _CREDS, ...), which the children inherit too.
    let operator = (!nodes.is_empty())
        .then(|| {
            creds
                .nats_password(OPERATOR_USER)
                .map(|p| (OPERATOR_USER.to_owned(), p.to_owned()))
        })
        .flatten();
    let conn = connect(url, replicas, operator, on.tls_ca, shutdown).await?;
    step("creating streams and buckets");
    // A cluster restarted on existing data elects its stream leaders first;
    // until then JetStream requests time out, so retry for a while.
    // The example services it runs need their buckets too.
    let created = crate::init::create_missing_within(
        &conn,
        crate::init::Scope::WithShowcase,
        Duration::from_secs(60),
        |e| {
            tracing::info!(error = %aegis_sdk::startup::error_line(&e), "JetStream not ready yet; retrying");
        },
    );
    // What it changed in place (an upgrade's new settings on buckets an
    // older Aegis made) is said, as `aegis init` says it.
    let changed = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        created = created => created?,
    };
    for changed in changed {
        println!("    {changed}");
    }

    // 3. The monitor.
    let mut common_env = vec![
        ("AEGIS_NATS_URL".to_owned(), url.to_owned()),
        ("AEGIS_NATS_REPLICAS".to_owned(), replicas.to_string()),
        ("AEGIS_LOG".to_owned(), "info".to_owned()),
    ];
    if let Some(ca) = on.tls_ca {
        common_env.push(("AEGIS_NATS_TLS_CA".to_owned(), ca.display().to_string()));
    }
    let mut monitor_env = common_env.clone();
    monitor_env.extend(own_nats_user(nodes, creds, MONITOR_USER));
    monitor_env.push(("AEGIS_ADMIN_TOKEN".into(), creds.admin.clone()));
    monitor_env.push(("AEGIS_VIEWER_TOKEN".into(), creds.viewer.clone()));
    monitor_env.push(("AEGIS_SESSION_SECRET".into(), creds.session_secret.clone()));
    if !nodes.is_empty() {
        // Our own servers: the monitor reads their connection advisories.
        monitor_env.push(("AEGIS_NATS_SYSTEM_USER".into(), nats::SYSTEM_USER.into()));
        monitor_env.push((
            "AEGIS_NATS_SYSTEM_PASSWORD".into(),
            creds.nats_system_password.clone(),
        ));
    }
    monitor_env.push(("AEGIS_API_PORT".into(), args.api_port.to_string()));
    monitor_env.push(("AEGIS_API_BIND".into(), args.api_bind.to_string()));
    let ui_dir = &args.ui_dir;
    if let Some(dir) = ui_dir {
        monitor_env.push(("AEGIS_UI_DIR".into(), dir.display().to_string()));
    }
    step("starting the monitor");
    // Its log is kept across runs: only what this run adds is quoted.
    let monitor_log_from = std::fs::metadata(sup.log_path(MONITOR)).map_or(0, |m| m.len());
    sup.start(ChildSpec {
        name: MONITOR.into(),
        kind: Kind::Monitor,
        program: exe.to_owned(),
        args: vec!["api".into()],
        env: monitor_env,
        unset: not_inherited(!nodes.is_empty(), true),
    })?;

    // 4. The services. An election key written before they start is an
    //    earlier run's (or another fleet's): see `election_holders`.
    let elections_before = elections_sequence(&conn).await;
    let mut expected = 0;
    for (kind, count) in &args.instances.0 {
        for i in 1..=*count {
            let id = format!("{kind}-{i}");
            let mut env = common_env.clone();
            let user = Role::Service(ServiceRole {
                service: format!("{kind}-service"),
                ..Default::default()
            })
            .user_name();
            env.extend(own_nats_user(nodes, creds, &user));
            sup.start(ChildSpec {
                name: id.clone(),
                kind: Kind::Service,
                program: exe.to_owned(),
                args: vec!["service".into(), kind.clone(), "--instance-id".into(), id],
                env,
                unset: not_inherited(!nodes.is_empty(), false),
            })?;
            expected += 1;
        }
    }
    step(&format!("starting {expected} service instance(s)"));
    let deadline = tokio::time::Instant::now() + START_WITHIN;
    // The view's start is bounded by the connection's few seconds, which
    // the cluster can take while every child starts at once (seen under
    // load in tests): start it again until the showcase's own deadline.
    let reader = loop {
        match RegistryReader::start(&conn).await {
            Ok(reader) => break reader,
            Err(e @ RegistryError::NotSynced(_)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "starting the registry view again");
            }
            Err(e) => return Err(e.into()),
        }
    };
    let registered = async || {
        let n = reader.all().len();
        (n < expected).then(|| format!("only {n} of {expected} instances registered"))
    };
    if !starting(sup, deadline, shutdown, state_dir, registered).await? {
        return Ok(());
    }

    // Up means it takes orders: every sticky group has its leader, the
    // holder of its election key (a record's own status may be an earlier
    // run's). On a cluster restarted on its data, the elections bucket's
    // stream elects its own leader first (seconds), and until then nobody
    // can win.
    // Of the services this run starts: a record an earlier run left (its
    // TTL not yet out) names a group nobody here will lead.
    let started: Vec<String> = args
        .instances
        .0
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, _)| format!("{kind}-service"))
        .collect();
    let groups: std::collections::BTreeSet<(String, String)> = reader
        .all()
        .into_iter()
        .filter(|i| started.contains(&i.service_name))
        .filter_map(|i| Some((i.service_name, i.sticky_active_group?)))
        .collect();
    if !groups.is_empty() {
        step("waiting for the sticky groups' leaders");
    }
    let mut holders = BTreeMap::new();
    let led = async || {
        holders = election_holders(&conn, &groups, elections_before).await;
        let all = reader.all();
        let leaderless: Vec<String> = groups
            .iter()
            .filter(|(service, group)| {
                let holder = holders.get(&(service.clone(), group.clone()));
                // A holder that is not registered in the group is not
                // (or no longer) running.
                !all.iter().any(|i| {
                    i.service_name == *service
                        && i.sticky_active_group.as_deref() == Some(group.as_str())
                        && Some(&i.instance_id) == holder
                })
            })
            .map(|(service, group)| format!("{service} (group {group})"))
            .collect();
        (!leaderless.is_empty()).then(|| format!("no leader for {}", leaderless.join(", ")))
    };
    if !starting(sup, deadline, shutdown, state_dir, led).await? {
        return Ok(());
    }

    step("waiting for the monitor");
    let monitor = MonitorWait {
        api: api_base(args),
        log_from: monitor_log_from,
        deadline,
    };
    if !monitor.ready(sup, shutdown).await? {
        return Ok(());
    }
    // Once per state directory, and never into a NATS it did not start
    // (a shared catalogue is its owners'): a definition deleted since is
    // not made again.
    let defined = state_dir.join(DEFINED_MARKER);
    if nodes.is_empty() {
        tracing::debug!("on an external NATS: no service definitions registered");
    } else if !defined.exists() {
        let kinds: Vec<&str> = args
            .instances
            .0
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(kind, _)| kind.as_str())
            .collect();
        if define_services(&monitor.api, &creds.admin, &kinds).await {
            let _ = std::fs::write(&defined, "");
        }
    }
    print_summary(args, state_dir, on, &reader, &holders, ui_dir.is_some());
    sup.supervise(shutdown).await;
    Ok(())
}

/// The monitor child's name.
const MONITOR: &str = "monitor";

/// The file in the state directory that says the showcase's service
/// definitions were registered (see `define_services`).
const DEFINED_MARKER: &str = "definitions-registered";

/// What the showcase's services are, for their definitions.
const DEFINED: [(&str, &str); 3] = [
    (
        "order",
        "Takes orders and keeps them (sticky single-active: one leader writes)",
    ),
    ("pricing", "Quotes prices for the symbols orders name"),
    ("risk", "Checks each order against the account's limits"),
];

/// Registers the definition of each service kind that runs (through the
/// monitor's API, as an operator would), so the catalogue a user opens
/// lists what runs; one that exists is kept as it is (edited, perhaps).
/// A refusal is a warning: the showcase runs without its catalogue.
/// Whether every one is there now.
async fn define_services(api: &str, admin_token: &str, kinds: &[&str]) -> bool {
    // The monitor is local: no proxy from the environment sees the token.
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
    else {
        return false;
    };
    let mut all = true;
    for (kind, description) in DEFINED.iter().filter(|(k, _)| kinds.contains(k)) {
        let name = format!("{kind}-service");
        let body = serde_json::json!({
            "service_name": name,
            "owner": "trading-team",
            "description": description,
            "version": aegis_trading::VERSION,
        });
        let sent = http
            .post(format!("{api}/api/services"))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await;
        match sent.map(|r| r.status()) {
            Ok(status) if status.is_success() || status == reqwest::StatusCode::CONFLICT => {}
            Ok(status) => {
                all = false;
                tracing::warn!(service = %name, %status, "the monitor refused the service's definition")
            }
            Err(e) => {
                all = false;
                tracing::warn!(service = %name, error = %aegis_sdk::startup::Causes(&e), "cannot register the service's definition")
            }
        }
    }
    all
}

/// What waiting for the monitor needs: where its API answers, where this
/// run's part of its log starts, and until when to wait.
struct MonitorWait {
    api: String,
    log_from: u64,
    deadline: tokio::time::Instant,
}

impl MonitorWait {
    /// Waits until the monitor answers `/ready` with 200: the showcase is
    /// not up while its API is not. `false` when shut down meanwhile.
    ///
    /// # Errors
    /// The monitor exited for good (`--no-restart`), or was not ready by
    /// the deadline; the error names its log and quotes the last error
    /// this run wrote there.
    async fn ready(
        &self,
        sup: &mut Supervisor,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let ready = format!("{}/ready", self.api);
        // What it last answered, for the error when it never is ready.
        let mut last = String::from("nothing (not listening)");
        loop {
            if let Ok(r) = http.get(&ready).send().await {
                if r.status().is_success() {
                    return Ok(true);
                }
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                last = format!("{status} {}", body.chars().take(300).collect::<String>());
            }
            sup.tick();
            if sup.is_down_for_good(MONITOR) {
                return Err(self.failed(sup, "exited and is not restarted (--no-restart)"));
            }
            if tokio::time::Instant::now() > self.deadline {
                return Err(self.failed(
                    sup,
                    &format!(
                        "did not answer {ready} with 200 within {} (it answered {last})",
                        humantime::format_duration(START_WITHIN)
                    ),
                ));
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    fn failed(&self, sup: &Supervisor, what: &str) -> anyhow::Error {
        let log = sup.log_path(MONITOR);
        let said = std::fs::read(&log)
            .ok()
            .and_then(|bytes| {
                let ours = bytes.get(usize::try_from(self.log_from).ok()?..)?;
                last_error(&String::from_utf8_lossy(ours)).map(str::to_owned)
            })
            .map(|line| format!("; it said: {line}"))
            .unwrap_or_default();
        anyhow::anyhow!("the monitor {what}; see {}{said}", log.display())
    }
}

/// The last line of a child's log that reports an error (a refused
/// setting, a lost connection), else its last line.
fn last_error(log: &str) -> Option<&str> {
    let mut lines = log.lines().map(str::trim).filter(|l| !l.is_empty());
    let is_error = |l: &&str| l.to_ascii_lowercase().starts_with("error") || l.contains(" ERROR ");
    lines
        .clone()
        .rev()
        .find(is_error)
        .or_else(|| lines.next_back())
}

/// Where the monitor's API is reached from here: any address reaches it
/// when it listens on all.
fn api_base(args: &UpArgs) -> String {
    let host = if args.api_bind.is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], args.api_port))
    } else {
        std::net::SocketAddr::new(args.api_bind, args.api_port)
    };
    format!("http://{host}")
}

fn step(what: &str) {
    println!("  … {what}");
}

/// The environment that makes a child connect as `user` of our own
/// servers; nothing for an external NATS (the child inherits ours).
/// The credentials in `aegis up`'s own environment that a child must not
/// inherit ([`credentials::not_inherited`]): on the showcase's own
/// servers (`own_nats`) each child gets only what is set for it.
fn not_inherited(own_nats: bool, monitor: bool) -> Vec<String> {
    credentials::not_inherited(
        std::env::vars_os().filter_map(|(var, _)| var.into_string().ok()),
        own_nats,
        monitor,
    )
}

fn own_nats_user(
    nodes: &[nats::NatsNode],
    creds: &credentials::Credentials,
    user: &str,
) -> Vec<(String, String)> {
    if nodes.is_empty() {
        Vec::new()
    } else {
        creds.nats_env(user)
    }
}

async fn connect(
    url: &str,
    replicas: usize,
    user: Option<(String, String)>,
    tls_ca: Option<&Path>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Connection> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let servers = url.to_owned();
        let user = user.clone();
        let tls_ca = tls_ca.map(Path::to_owned);
        let config = aegis_monitor::NatsArgs::with_servers(servers)
            .load(move |c| {
                c.nats.connect_timeout = Duration::from_secs(1);
                c.nats.replicas = replicas;
                if let Some(ca) = tls_ca {
                    c.nats.tls_ca = Some(ca);
                }
                if let Some((user, password)) = user {
                    c.nats.token = None;
                    c.nats.nkey_seed = None;
                    c.nats.creds_file = None;
                    c.nats.inbox_prefix = Some(crate::permissions::inbox_prefix(&user));
                    c.nats.user = Some(user);
                    c.nats.password = Some(Secret::new(password));
                }
            })
            .context("loading the NATS configuration")?;
        match Connection::connect(config).await {
            Ok(c) => return Ok(c),
            // The same credentials would be refused again, and the same
            // configuration too: say so now.
            Err(e @ (ConnectError::Refused { .. } | ConnectError::Config(_))) => {
                return Err(e.into());
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e)
                    .with_context(|| format!("NATS at {} did not become ready", redacted(url)));
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted while waiting for NATS"),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn print_summary(
    args: &UpArgs,
    state_dir: &Path,
    on: &Topology<'_>,
    reader: &RegistryReader,
    holders: &BTreeMap<(String, String), String>,
    ui: bool,
) {
    let (nodes, api) = (on.nodes, api_base(args));
    // A password the URL may carry is printed nowhere.
    let url = &redacted(on.url);
    println!();
    println!("Aegis showcase is up");
    println!(
        "  NATS        {url}{}",
        if nodes.len() > 1 {
            " (3-node cluster, R3)"
        } else {
            ""
        }
    );
    if !nodes.is_empty() {
        let monitoring: Vec<String> = nodes.iter().map(nats::NatsNode::monitoring_url).collect();
        println!(
            "              monitoring: {} (/varz, /jsz, /healthz)",
            monitoring.join(" ")
        );
    }
    if args.tls {
        println!(
            "              TLS required (routes mutual TLS); CA {}",
            state_dir.join("tls").join("ca.pem").display()
        );
    }
    println!("  API         {api}/api  (OpenAPI: {api}/api/openapi.json, Swagger: {api}/api/docs)");
    if ui {
        println!("  UI          {api}/");
    }
    // On an external NATS (`--nats-url`) the file's NATS users are only
    // those of a NATS `aegis up` starts itself: that server does not know
    // them, and everything connects with the environment's credentials.
    let attached = nodes.is_empty();
    println!(
        "  credentials {} ({}; mode 0600)",
        state_dir.join("credentials").display(),
        if attached {
            "monitor tokens; its NATS users are not this NATS's"
        } else {
            "monitor tokens, NATS users"
        }
    );
    println!("  logs        {}", state_dir.join("logs").display());
    println!();
    println!(
        "  {:<18} {:<12} {:<9} group",
        "service", "instance", "status"
    );
    for i in reader.all() {
        println!(
            "  {:<18} {:<12} {:<9} {}",
            i.service_name,
            i.instance_id,
            shown_status(&i, holders),
            i.sticky_active_group.as_deref().unwrap_or("-")
        );
    }
    println!();
    if attached {
        println!(
            "Try (with the NATS credentials this `aegis up` was given: the same AEGIS_NATS_* variables, or --nats-creds):"
        );
    } else {
        println!(
            "Try (NATS refuses clients without credentials; these find the operator's in the state directory):"
        );
    }
    // The flags that find this showcase when its state directory is not
    // the default one, quoted for a POSIX shell: a state directory may
    // have a space in its name. On our own NATS, `--state-dir` alone: the
    // tools read every node's URL and the operator's credentials there
    // (`credentials::NATS_URL_FILE`). On an external NATS, its URL and no
    // credentials: the environment's are the ones it knows; `chaos` still
    // needs the state directory to find the processes.
    let mut flags = String::new();
    let default_dir = Path::new(".aegis").canonicalize().ok();
    let elsewhere = default_dir.as_deref() != Some(state_dir);
    let dir_flag = format!(
        " --state-dir {}",
        shell_quoted(&state_dir.display().to_string())
    );
    if attached {
        flags.push_str(&format!(" --nats-url {}", shell_quoted(url)));
        if url.contains(aegis_sdk::config::REDACTED) {
            println!(
                "  (put the password back where the URL shows {})",
                aegis_sdk::config::REDACTED
            );
        }
    } else if elsewhere {
        flags.push_str(&dir_flag);
    }
    let mut chaos_flags = flags.clone();
    if elsewhere && attached {
        chaos_flags.push_str(&dir_flag);
    }
    println!("  aegis status --watch{flags}");
    println!(
        "  aegis call order-service create_order --active --idempotent '{{\"symbol\":\"AAPL\",\"side\":\"buy\",\"quantity\":10,\"client_order_id\":\"demo-1\"}}'{flags}"
    );
    println!(
        "  aegis traffic{flags}      # orders at 10/s, a line a second; Ctrl-C checks none acknowledged was lost"
    );
    println!(
        "  aegis chaos kill order-service{chaos_flags}      # kill the ACTIVE order instance, watch a STANDBY take over"
    );
    let yours = admitted::banner(state_dir, on.admitted);
    if !yours.is_empty() {
        println!();
    }
    for line in yours {
        println!("{line}");
    }
    println!("Ctrl-C stops everything.");
}

/// The status of `instance` in the summary: in a sticky group, ACTIVE is
/// the holder of the group's election key (`holders`), as in every view of
/// the fleet; an instance whose record still claims ACTIVE without holding
/// the key is shown DEPOSED (a leader that ended without resigning, or one
/// that lost its lease).
fn shown_status(
    instance: &ServiceInstance,
    holders: &BTreeMap<(String, String), String>,
) -> &'static str {
    let Some(group) = &instance.sticky_active_group else {
        return instance.status.as_str();
    };
    let holder = holders.get(&(instance.service_name.clone(), group.clone()));
    match instance.status {
        _ if holder == Some(&instance.instance_id) => InstanceStatus::Active.as_str(),
        InstanceStatus::Active => "DEPOSED",
        other => other.as_str(),
    }
}

/// The last sequence of the election keys' stream: the revision every key
/// written from now on is above. 0 when it cannot be read (every key then
/// counts).
async fn elections_sequence(conn: &Connection) -> u64 {
    let stream = format!("KV_{}", subjects::ELECTIONS_BUCKET);
    match conn.jetstream().get_stream(&stream).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.last_sequence),
        Err(e) => {
            tracing::debug!(error = %e, "reading the election keys' stream");
            0
        }
    }
}

/// The holder of each group's election key, among keys written after
/// revision `since`: an older write is a leader of an earlier run (killed,
/// or forced to exit, it resigned nothing) until a live campaign
/// replaces it. Groups whose key cannot be read are left out.
async fn election_holders(
    conn: &Connection,
    groups: &std::collections::BTreeSet<(String, String)>,
    since: u64,
) -> BTreeMap<(String, String), String> {
    let mut holders = BTreeMap::new();
    let Ok(store) = conn
        .jetstream()
        .get_key_value(subjects::ELECTIONS_BUCKET)
        .await
    else {
        return holders;
    };
    for (service, group) in groups {
        if let Ok(Some(entry)) = store.entry(subjects::election_key(service, group)).await
            && entry.operation == async_nats::jetstream::kv::Operation::Put
            && entry.revision > since
            && let Ok(record) = serde_json::from_slice::<LeaderRecord>(&entry.value)
        {
            holders.insert((service.clone(), group.clone()), record.instance_id);
        }
    }
    holders
}

/// Writes `text` to `path` as a file made anew with `mode`: one an older
/// version left (readable by others, say) is removed first, so its mode
/// does not carry over. The showcase's secrets go out this way (0600).
///
/// # Errors
/// When the file cannot be removed, made or written, naming it.
pub(crate) fn write_anew(path: &std::path::Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// `text` as one word for a POSIX shell: as it is when nothing in it needs
/// quoting, else in single quotes. (A path with a NUL byte cannot exist, so
/// the quoting cannot fail in practice; such a text is shown as it is.)
fn shell_quoted(text: &str) -> std::borrow::Cow<'_, str> {
    shlex::try_quote(text).unwrap_or(std::borrow::Cow::Borrowed(text))
}

/// A pid file that keeps two `aegis up` from sharing one state directory.
/// One left behind by an `aegis up` that did not stop cleanly is taken
/// over: its pid counts only while it is the process the file was written
/// for ([`supervisor::check_pid`]), so a pid reused since is never taken
/// for a running `aegis up`, nor offered to `kill`.
struct PidLock(PathBuf);

impl PidLock {
    fn acquire(path: &Path) -> anyhow::Result<PidLock> {
        let dir = || {
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        match supervisor::check_pid(path) {
            supervisor::PidFile::Live(pid) if pid != std::process::id() as i32 => bail!(
                "aegis up is already running (pid {pid}) with state in {}; stop it with Ctrl-C or `kill {pid}` first",
                dir()
            ),
            supervisor::PidFile::Reused { pid, program } => say(&format!(
                "{} is stale (left by an aegis up that did not stop cleanly): pid {pid} is now another process ({program}); taking the state directory over",
                path.display()
            )),
            _ => {}
        }
        supervisor::write_pid(path, std::process::id())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock(path.to_owned()))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        supervisor::remove_pid(&self.0);
    }
}

/// Prints `line` to standard output, whatever becomes of the write.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// `urls` (comma-separated) with the password each may carry redacted.
pub(crate) fn redacted(urls: &str) -> String {
    let shown: Vec<String> = urls.split(',').map(aegis_sdk::config::redact_url).collect();
    shown.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_paths_are_one_shell_word() {
        assert_eq!(shell_quoted("/tmp/aegis/.aegis"), "/tmp/aegis/.aegis");
        assert_eq!(
            shell_quoted("/home/ops/my state/credentials"),
            "'/home/ops/my state/credentials'"
        );
        // Whatever the quoting, a shell reads each back as it was.
        for path in ["/tmp/it's", "/tmp/$HOME `x` \"y\"", "/tmp/a\\b c"] {
            let echoed = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", shell_quoted(path))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&echoed.stdout), path);
        }
    }

    #[test]
    fn a_childs_last_error_is_quoted_not_its_last_line() {
        let log = "2026-12-01T21:05:38Z  INFO connected\nerror: invalid value '0' for '--max-connections'\n\nFor more information, try '--help'.\n";
        assert_eq!(
            last_error(log),
            Some("error: invalid value '0' for '--max-connections'")
        );
        let log = "2026-12-01T21:05:38Z ERROR starting the monitor: no buckets\nbye\n";
        assert_eq!(
            last_error(log),
            Some("2026-12-01T21:05:38Z ERROR starting the monitor: no buckets")
        );
        assert_eq!(last_error("only\nnoise\n"), Some("noise"));
        assert_eq!(last_error(""), None);
    }

    #[test]
    fn kinds_not_named_keep_their_default_counts() {
        let counts = |s: &str| {
            let i = parse_instances(s).unwrap();
            SERVICE_KINDS.map(|k| i.0.get(k).copied())
        };
        assert_eq!(counts("order=2"), [Some(2), Some(2), Some(2)]);
        assert_eq!(counts("risk=0"), [Some(3), Some(2), Some(0)]);
        assert_eq!(
            counts("order=1,pricing=1,risk=1"),
            [Some(1), Some(1), Some(1)]
        );
        assert_eq!(counts(""), [Some(3), Some(2), Some(2)]);
    }

    /// `aegis up`'s flags alone, as the command line gives them.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn a_base_port_whose_layout_passes_65535_is_refused() {
        use clap::Parser;
        let parse = |port: &str| Flags::try_parse_from(["up", "--base-port", port]);
        assert_eq!(parse("4222").unwrap().up.base_port, 4222);
        assert_eq!(parse("61533").unwrap().up.base_port, 61533);
        for port in ["61534", "65534", "0"] {
            let err = parse(port).unwrap_err().to_string();
            assert!(err.contains("--base-port"), "{port}: {err}");
            assert!(
                err.contains("61533") || err.contains("at least 1"),
                "{port}: {err}"
            );
        }
    }

    #[test]
    fn instances_parse() {
        let i = parse_instances("order=3,pricing=2,risk=2").unwrap();
        assert_eq!(i.0.values().sum::<usize>(), 7);
        assert!(parse_instances("order=x").is_err());
        assert!(parse_instances("trading=1").is_err());
        assert!(parse_instances("order").is_err());
        assert!(parse_instances("order=99").is_err());
    }
}
