//! The showcase's NATS servers: one node or a 3-node JetStream cluster, each
//! a child process with its config and data under the state directory, so a
//! restart of `aegis up` finds its streams and buckets again.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};

use super::{
    credentials::{Credentials, ROUTE_USER},
    tls::{self, TlsFiles},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One NATS node of the showcase.
#[derive(Debug, Clone)]
pub struct NatsNode {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Client port (4222 + i by default).
    pub client_port: u16,
    /// Cluster route port.
    pub cluster_port: u16,
    /// HTTP monitoring port (healthz).
    pub monitor_port: u16,
    /// Its directory (config, JetStream store).
    pub dir: PathBuf,
    /// Its log file (written by the supervisor, appended to across runs).
    pub log: PathBuf,
    /// Where this run's part of the log starts.
    pub log_from: u64,
}

impl NatsNode {
    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`; plain
    /// HTTP on loopback, with or without `--tls`).
    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }
}

/// Distance from a node's client port to its route port.
pub const ROUTE_OFFSET: u16 = 2000;
/// Distance from a node's client port to its monitoring port.
pub const MONITOR_OFFSET: u16 = 4000;

/// Lays out `count` nodes from `base_port` (clients), `base_port + 2000`
/// (routes) and `base_port + 4000` (monitoring).
///
/// Each topology keeps its own data (`nats/single/n1`, `nats/cluster/n1`…):
/// a cluster's R3 streams cannot be loaded by a single node ("replicas > 1
/// not supported in non-clustered mode") nor a single node's R1 streams
/// joined into a cluster, so switching between `aegis up` and
/// `aegis up --single-node` on one state directory switches data sets
/// instead of failing.
///
/// A layout past 65535 ends at 65535 rather than wrapping around (the
/// command line refuses such a base port first).
pub fn plan(state_dir: &Path, count: usize, base_port: u16) -> Vec<NatsNode> {
    let topology = if count == 1 { "single" } else { "cluster" };
    (0..count)
        .map(|i| {
            let i16 = u16::try_from(i).unwrap_or(0);
            let name = format!("n{}", i + 1);
            let log = state_dir.join("logs").join(format!("nats-{name}.log"));
            NatsNode {
                log_from: std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0),
                client_port: base_port.saturating_add(i16),
                cluster_port: base_port.saturating_add(ROUTE_OFFSET + i16),
                monitor_port: base_port.saturating_add(MONITOR_OFFSET + i16),
                dir: state_dir.join("nats").join(topology).join(&name),
                log,
                name,
            }
        })
        .collect()
}

/// The file in the state directory that names the NATS nodes the running
/// showcase started, one a line (`n1`, `n2`, ...; none on an external
/// NATS), so that `aegis chaos` tells a node that does not exist from one
/// that is down. Removed when `aegis up` stops.
pub const NODES_FILE: &str = "nats-nodes";

/// Writes [`NODES_FILE`] in `state_dir`.
///
/// # Errors
/// When the file cannot be written.
pub fn write_nodes(state_dir: &Path, nodes: &[NatsNode]) -> anyhow::Result<()> {
    let path = state_dir.join(NODES_FILE);
    let text: String = nodes.iter().map(|n| format!("{}\n", n.name)).collect();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Removes [`NODES_FILE`] from `state_dir` (nothing to do when absent).
pub fn remove_nodes(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(NODES_FILE));
}

/// The nodes a running showcase wrote in `state_dir` (empty: it runs on
/// an external NATS); `None` when it wrote none.
pub fn read_nodes(state_dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(state_dir.join(NODES_FILE)).ok()?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Writes each node's config file; a cluster's routes authenticate with
/// the route password (see `cluster_block`); with `tls`, client
/// connections and routes require TLS (routes mutual TLS).
///
/// # Errors
/// When a file cannot be written.
pub fn write_configs(
    nodes: &[NatsNode],
    creds: &Credentials,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<()> {
    for node in nodes {
        std::fs::create_dir_all(node.dir.join("jetstream"))?;
        let mut conf = format!(
            "server_name: aegis-{name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{mon}\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
            name = node.name,
            port = node.client_port,
            mon = node.monitor_port,
            store = node.dir.join("jetstream").display(),
        );
        conf.push_str(&accounts(creds));
        if let Some(files) = tls {
            conf.push_str(&tls::server_block(files, false));
            conf.push('\n');
        }
        // Lame-duck mode (SIGUSR2) moves the clients within the server's
        // minimum of 30 s rather than the default two minutes.
        conf.push_str("lame_duck_grace_period: 1s\nlame_duck_duration: 30s\n");
        if nodes.len() > 1 {
            conf.push_str(&cluster_block(node, nodes, creds, tls));
        }
        // Readable by this user only: a node's config holds the users'
        // passwords.
        super::write_anew(&node.config_path(), &conf, 0o600)?;
    }
    Ok(())
}

/// A node's `cluster` block. Routes authenticate: only a server with the
/// route password ([`Credentials::route_password`], user
/// [`ROUTE_USER`]) may route to the node, and every route URL carries it
/// (percent-encoded), as the Helm chart's do. Without it, any process on
/// the machine could start a server that routes to a node and so reads
/// and writes every account past all users' permissions. With `tls`
/// routes are mutual TLS besides.
fn cluster_block(
    node: &NatsNode,
    nodes: &[NatsNode],
    creds: &Credentials,
    tls: Option<&TlsFiles>,
) -> String {
    let secret = url_encode(&creds.route_password);
    let routes: Vec<String> = nodes
        .iter()
        .map(|n| format!("nats://{ROUTE_USER}:{secret}@127.0.0.1:{}", n.cluster_port))
        .collect();
    let route_tls = tls
        .map(|files| format!("  {}\n", tls::server_block(files, true)))
        .unwrap_or_default();
    format!(
        "cluster {{\n  name: aegis-showcase\n  listen: 127.0.0.1:{}\n  \
         authorization {{\n    user: \"{ROUTE_USER}\"\n    password: \"{}\"\n  }}\n  \
         routes: [{}]\n{route_tls}}}\n",
        node.cluster_port,
        creds.route_password,
        routes.join(", ")
    )
}

/// `s` with every byte but the URL's unreserved ones percent-encoded, for
/// the userinfo of a route URL.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The accounts block: the application account `AEGIS` (JetStream on,
/// within [`crate::nats_config::ACCOUNT_LIMITS`]),
/// whose users and their permissions come from [`crate::permissions`] —
/// one per role, and nobody connects without one — and the system account
/// `SYS`, whose user `sys` reads the server's events: the monitor and
/// `aegis status` follow the connect/disconnect advisories with it to see
/// crashes at once and ask the servers for their connections, and
/// `nats server list` needs it. It may do only that
/// ([`crate::permissions::system_grants`]).
pub fn accounts(creds: &Credentials) -> String {
    crate::nats_config::limit_account(&crate::permissions::render_accounts(
        &crate::permissions::render_users(&creds.nats_users),
        &crate::permissions::render_system_users(&creds.nats_system_password),
    ))
}

/// The system account's user in the showcase.
pub use crate::permissions::SYSTEM_USER;

/// Fails with a clear message when a port of the plan is taken.
///
/// # Errors
/// Names the port and what to do.
pub fn check_ports_free(nodes: &[NatsNode], api_port: u16) -> anyhow::Result<()> {
    let mut ports: Vec<u16> = nodes
        .iter()
        .flat_map(|n| [n.client_port, n.cluster_port, n.monitor_port])
        .collect();
    ports.push(api_port);
    for port in ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} is already in use; is another NATS or monitor running? \
                 Use --nats-url to attach to an existing NATS, or --base-port / --api-port to move"
            );
        }
    }
    Ok(())
}

/// Waits until every node reports healthy (JetStream ready) on `/healthz`.
///
/// # Errors
/// When a node is not healthy within `timeout`.
pub async fn wait_healthy(nodes: &[NatsNode], timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for node in nodes {
        loop {
            if http_status(node.monitor_port, "/healthz").await == Some(200) {
                break;
            }
            // A fatal error ends the process, and a stream the server cannot
            // load keeps it unhealthy for good: say so now, not at the
            // timeout.
            let fatal: Vec<String> = log_problems(node)
                .into_iter()
                .filter(|l| l.contains("[FTL]") || l.contains("Error recreating stream"))
                .collect();
            if !fatal.is_empty() {
                let hint = if fatal
                    .iter()
                    .any(|l| l.contains("replicas > 1 not supported"))
                {
                    format!(
                        "\nIts store ({}) holds a cluster's replicated streams, which one node cannot load. \
                         Run `aegis up` without --single-node to use them, or move that directory aside \
                         to start a fresh single-node store.",
                        node.dir.display()
                    )
                } else if fatal.iter().any(|l| l.contains("Error recreating stream")) {
                    format!(
                        "\nMove its store ({}) aside to start fresh.",
                        node.dir.display()
                    )
                } else {
                    String::new()
                };
                bail!(
                    "NATS node {} failed to start:\n  {}{hint}\n(its log is {})",
                    node.name,
                    fatal.join("\n  "),
                    node.log.display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                let why = log_problems(node);
                bail!(
                    "NATS node {} did not become healthy within {timeout:?}{}; its log is {}",
                    node.name,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": it says:\n  {}\n", why.join("\n  "))
                    },
                    node.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The last fatal and error lines of a node's log, and streams it could
/// not load (its own words for why it does not come up), at most five.
fn log_problems(node: &NatsNode) -> Vec<String> {
    let bytes = std::fs::read(&node.log).unwrap_or_default();
    let from = usize::try_from(node.log_from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.contains("[FTL]") || l.contains("[ERR]") || l.contains("Error recreating stream")
        })
        .map(str::to_owned)
        .collect();
    let keep = lines.len().saturating_sub(5);
    lines.drain(..keep);
    lines
}

/// A minimal HTTP/1.0 GET returning the status code (the monitoring port
/// speaks plain HTTP on loopback; no client library needed for one probe).
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node of a cluster takes routes only with the route password,
    /// and routes to the others with it; one node has no cluster block.
    #[test]
    fn a_clusters_routes_carry_and_require_the_route_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut creds = super::super::credentials::ensure(dir.path(), None, &[]).unwrap();
        creds.route_password = "pa ss/@x".to_owned();
        let nodes = plan(dir.path(), 3, 4222);
        write_configs(&nodes, &creds, None).unwrap();
        for node in &nodes {
            let conf = std::fs::read_to_string(node.config_path()).unwrap();
            assert!(
                conf.contains(
                    "authorization {\n    user: \"route\"\n    password: \"pa ss/@x\"\n  }"
                ),
                "{conf}"
            );
            for port in [6222, 6223, 6224] {
                assert!(
                    conf.contains(&format!("nats://route:pa%20ss%2F%40x@127.0.0.1:{port}")),
                    "{conf}"
                );
            }
        }
        let single = plan(dir.path(), 1, 4222);
        write_configs(&single, &creds, None).unwrap();
        let conf = std::fs::read_to_string(single[0].config_path()).unwrap();
        assert!(!conf.contains("cluster"), "{conf}");
    }

    #[test]
    fn the_nodes_are_written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_nodes(dir.path()), None);
        write_nodes(dir.path(), &plan(dir.path(), 3, 4222)).unwrap();
        assert_eq!(
            read_nodes(dir.path()),
            Some(vec!["n1".to_owned(), "n2".to_owned(), "n3".to_owned()])
        );
        write_nodes(dir.path(), &[]).unwrap();
        assert_eq!(read_nodes(dir.path()), Some(Vec::new()), "external NATS");
        remove_nodes(dir.path());
        assert_eq!(read_nodes(dir.path()), None);
    }
}
