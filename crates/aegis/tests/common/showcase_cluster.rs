//! The showcase's three NATS nodes as `aegis up` configures them
//! (`up::nats::write_configs`, with the users and route password of
//! `up::credentials::ensure`), each a nats-server child of the test.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aegis::up::{
    credentials::{self, Credentials},
    nats::{self, NatsNode},
};

/// A nats-server child, killed on drop.
pub struct NatsChild(Child);

impl NatsChild {
    /// Starts nats-server with `config`, its stderr (the log) into `log`.
    pub fn start(config: &Path, log: &Path) -> NatsChild {
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(aegis_testkit::nats_server_binary().unwrap())
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        NatsChild(child)
    }
}

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three nodes, running and healthy; stopped on drop.
pub struct ShowcaseCluster {
    /// The credentials the nodes were configured with (`state/credentials`).
    pub creds: Credentials,
    pub nodes: Vec<NatsNode>,
    _servers: Vec<NatsChild>,
}

impl ShowcaseCluster {
    /// Writes the credentials and the nodes' configurations into `state`,
    /// on free ports, starts the nodes and waits until they are healthy.
    pub async fn start(state: &Path) -> ShowcaseCluster {
        let creds = credentials::ensure(state, None, &[]).unwrap();
        let (base, _) = super::free_cluster_ports();
        let nodes = nats::plan(state, 3, base);
        nats::write_configs(&nodes, &creds, None).unwrap();
        let servers: Vec<NatsChild> = nodes
            .iter()
            .map(|n| NatsChild::start(&n.config_path(), &n.log))
            .collect();
        nats::wait_healthy(&nodes, Duration::from_secs(30))
            .await
            .unwrap();
        ShowcaseCluster {
            creds,
            nodes,
            _servers: servers,
        }
    }
}
