//! The showcase's NATS servers: one node or a 3-node JetStream cluster, each
//! a child process with its config and data under the state directory, so a
//! restart of `aegis up` finds its streams and buckets again.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};

use super::credentials::Credentials;
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
}

impl NatsNode {
    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }
}

/// Lays out `count` nodes from `base_port` (clients), `base_port + 2000`
/// (routes) and `base_port + 4000` (monitoring).
pub fn plan(state_dir: &Path, count: usize, base_port: u16) -> Vec<NatsNode> {
    (0..count)
        .map(|i| {
            let i16 = u16::try_from(i).unwrap_or(0);
            NatsNode {
                name: format!("n{}", i + 1),
                client_port: base_port + i16,
                cluster_port: base_port + 2000 + i16,
                monitor_port: base_port + 4000 + i16,
                dir: state_dir.join("nats").join(format!("n{}", i + 1)),
            }
        })
        .collect()
}

/// Writes each node's config file.
///
/// # Errors
/// When a file cannot be written.
pub fn write_configs(nodes: &[NatsNode], creds: &Credentials) -> anyhow::Result<()> {
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
        if nodes.len() > 1 {
            let routes: Vec<String> = nodes
                .iter()
                .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: aegis-showcase\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                node.cluster_port,
                routes.join(", ")
            ));
        }
        std::fs::write(node.config_path(), conf)
            .with_context(|| format!("writing {}", node.config_path().display()))?;
    }
    Ok(())
}

/// The accounts block: the application account `AEGIS` (JetStream on;
/// clients without credentials land in it) and the system account `SYS`,
/// whose user `sys` reads the server's events — the monitor follows the
/// connect/disconnect advisories with it to see crashes at once, and
/// operators' `nats server ...` commands need it.
pub fn accounts(creds: &Credentials) -> String {
    format!(
        "accounts {{\n  AEGIS: {{ jetstream: enabled, users: [ {{ user: \"aegis\", password: \"{app}\" }} ] }}\n  \
         SYS: {{ users: [ {{ user: \"{SYSTEM_USER}\", password: \"{system}\" }} ] }}\n}}\n\
         system_account: SYS\nno_auth_user: \"aegis\"\n",
        app = creds.nats_app_password,
        system = creds.nats_system_password,
    )
}

/// The system account's user in the showcase.
pub const SYSTEM_USER: &str = "sys";

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
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "NATS node {} did not become healthy within {timeout:?}; see its log under {}",
                    node.name,
                    node.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
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
