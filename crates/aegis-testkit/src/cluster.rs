//! [`NatsCluster`]: N JetStream-enabled `nats-server` nodes routed to each
//! other, for failover tests (kill a node, restart it, watch it rejoin).

use std::time::{Duration, Instant};

use crate::binary::nats_server_binary;
use crate::config::{ClusterConfig, NodeConfig};
use crate::error::TestkitError;
use crate::net::{free_ports, http_get, leads_with_peers_online, meta_leader_name};
use crate::server::{NatsServer, READY_TIMEOUT};
use crate::support::{random_password, temp_dir, unique_suffix, with_port_retries};

/// A JetStream cluster of real `nats-server` nodes named `n1`..`nN`, each
/// with its own ports and store; all are killed and cleaned up on drop.
#[derive(Debug)]
pub struct NatsCluster {
    name: String,
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `nodes` nodes with routes between all of them and a unique
    /// cluster name, and waits until every node is healthy, every pair of
    /// nodes is routed, and the JetStream meta leader sees every node as an
    /// online peer (so a replicated stream can be placed at once).
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`]: a missing or old binary, or a node that
    /// does not become ready within 30 s.
    ///
    /// # Panics
    ///
    /// When `nodes` is zero.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// let client = async_nats::connect(cluster.urls()).await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(nodes: usize) -> Result<Self, TestkitError> {
        assert!(nodes > 0, "a cluster needs at least one node");
        let binary = nats_server_binary()?;
        let system_password = random_password();
        with_port_retries(|| {
            let name = format!("aegis-{}", unique_suffix());
            // Client, monitor and cluster port per node, all chosen at once
            // so no two nodes get the same one.
            let ports = free_ports(3 * nodes)?;
            let cluster_ports: Vec<u16> = ports.chunks(3).map(|p| p[2]).collect();
            let mut started = Vec::with_capacity(nodes);
            for (i, node_ports) in ports.chunks(3).enumerate() {
                let dir = temp_dir()?;
                let config = NodeConfig {
                    server_name: format!("n{}", i + 1),
                    port: node_ports[0],
                    monitor_port: node_ports[1],
                    jetstream: true,
                    store_dir: dir.path().join("store"),
                    system_password: system_password.clone(),
                    accounts: true,
                    app_users: None,
                    cluster: Some(ClusterConfig {
                        name: name.clone(),
                        port: node_ports[2],
                        peer_ports: cluster_ports
                            .iter()
                            .copied()
                            .filter(|&p| p != node_ports[2])
                            .collect(),
                    }),
                };
                let mut node =
                    NatsServer::prepare(binary.clone(), config, Vec::new(), READY_TIMEOUT, dir)?;
                node.spawn()?;
                started.push(node);
            }
            // Start all before waiting: a meta leader needs a quorum.
            let deadline = Instant::now() + READY_TIMEOUT;
            for node in &mut started {
                node.wait_until(deadline)?;
            }
            let mut cluster = Self {
                name: name.clone(),
                nodes: started,
            };
            cluster.wait_meshed(deadline)?;
            Ok(cluster)
        })
    }

    /// The cluster name (unique per cluster).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert!(cluster.name().starts_with("aegis-"));
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL of every node, in node order; `async_nats::connect`
    /// accepts the `Vec` as is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert_eq!(cluster.urls().len(), 3);
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The client URLs of every node but node `index`: where the clients
    /// go that must outlive killing it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// let survivors = cluster.urls_except(0);
    /// assert_eq!(survivors, cluster.urls()[1..]);
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn urls_except(&self, index: usize) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, node)| node.url())
            .collect()
    }

    /// Every node's client URL with the system account's credentials (see
    /// [`NatsServer::system_url`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// let system = async_nats::connect(cluster.system_urls()).await?;
    /// # let _ = system;
    /// # Ok(())
    /// # }
    /// ```
    pub fn system_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::system_url).collect()
    }

    /// All client URLs joined with commas, the form CLI flags and config
    /// files take (`nats -s`, `AEGIS_NATS_URL`). `async_nats::connect` does
    /// not split such a string; give it [`urls`](Self::urls) instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert_eq!(cluster.url(), cluster.urls().join(","));
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i` (0-based; its server name is `n{i+1}`).
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// println!("n1 monitors on {}", cluster.node(0).monitor_port());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i`, mutably (to stop, kill or restart it).
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.node_mut(2).stop();
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// All nodes, in order.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// let names: Vec<&str> = cluster.nodes().iter().map(|n| n.server_name()).collect();
    /// assert_eq!(names, ["n1", "n2", "n3"]);
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Kills node `i` with SIGKILL, as in a crash.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.kill_node(0);
    /// assert!(!cluster.node_mut(0).is_running());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Waits up to `timeout` until no running node has a route to node `i`
    /// any more: after [`kill_node`](Self::kill_node), the moment from
    /// which the others no longer forward to it what its subscriptions
    /// (a stream it led) would have taken. Until then, a publish the dead
    /// node would have answered is sent into the void and times out,
    /// rather than being answered "no responders".
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] when a node still routes to it, or does
    /// not say whether it does, at the end of `timeout`.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.kill_node(2);
    /// cluster.wait_unrouted(2, Duration::from_secs(10))?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn wait_unrouted(&self, i: usize, timeout: Duration) -> Result<(), TestkitError> {
        let gone = self.nodes[i].server_name();
        let deadline = Instant::now() + timeout;
        loop {
            // A node that does not answer may still route to it.
            let still = self
                .nodes
                .iter()
                .filter(|n| n.pid().is_some() && n.server_name() != gone)
                .find_map(|n| match n.route_peers() {
                    Some(peers) if !peers.iter().any(|p| p == gone) => None,
                    Some(_) => Some((n, "its route to it is still open")),
                    None => Some((n, "it did not say which routes it has (/routez)")),
                });
            match still {
                None => return Ok(()),
                Some((node, why)) if Instant::now() >= deadline => {
                    return Err(node.not_ready(format!(
                        "timed out waiting for the route to {gone} to close: {why}"
                    )));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Restarts node `i` on its ports with its store and waits until it has
    /// rejoined (healthy, JetStream current, meta leader known).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Spawn`] or [`TestkitError::NotReady`].
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.kill_node(1);
    /// cluster.restart_node(1)?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn restart_node(&mut self, i: usize) -> Result<(), TestkitError> {
        self.nodes[i].restart()
    }

    /// Waits up to `timeout` until every running node is ready, routed to
    /// the others and seen online by the JetStream meta leader; killed or
    /// stopped nodes are skipped.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] for the first node that is not ready in time.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.kill_node(0);
    /// cluster.wait_ready(Duration::from_secs(10))?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter_mut().filter(|n| n.pid().is_some()) {
            node.wait_until(deadline)?;
        }
        self.wait_meshed(deadline)
    }

    /// Waits until every running node has a route to every other running
    /// node, and the meta leader counts them all online ([`peers_online`]).
    /// A meta leader needs only a quorum, so a cluster can look ready
    /// while two nodes still reach each other only through a third (a route
    /// that failed at start is dialled again after a second): killing that
    /// third node would then cut them apart until the route comes up.
    fn wait_meshed(&mut self, deadline: Instant) -> Result<(), TestkitError> {
        loop {
            let running: Vec<&NatsServer> =
                self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            let meshed = running.iter().all(|node| {
                let Some(peers) = node.route_peers() else {
                    return false;
                };
                running
                    .iter()
                    .filter(|other| other.server_name() != node.server_name())
                    .all(|other| peers.iter().any(|p| p == other.server_name()))
            });
            if meshed && peers_online(&running) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let node = running.first().copied().unwrap_or(&self.nodes[0]);
                return Err(node.not_ready(if meshed {
                    "timed out waiting for the JetStream meta leader to see every node as a \
                     current, online peer"
                        .into()
                } else {
                    "timed out waiting for routes between every pair of nodes".into()
                }));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the running node that leads the JetStream meta group,
    /// as the running nodes' `/jsz` say; `None` while none leads (a
    /// cluster electing one, or without a quorum).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// if let Some(leader) = cluster.meta_leader() {
    ///     cluster.kill_node(leader);
    /// }
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn meta_leader(&self) -> Option<usize> {
        let leader =
            self.nodes
                .iter()
                .filter(|n| n.pid().is_some())
                .find_map(|n| match http_get(n.monitor_port(), "/jsz") {
                    Ok((200, body)) => meta_leader_name(&body),
                    _ => None,
                })?;
        self.nodes.iter().position(|n| n.server_name() == leader)
    }

    /// The number of nodes (running or not).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert_eq!(cluster.len(), 3);
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(1)?;
    /// assert!(!cluster.is_empty());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Whether the JetStream meta leader, one of `running`, sees every other
/// running node online ([`leads_with_peers_online`], read from its `/jsz`).
fn peers_online(running: &[&NatsServer]) -> bool {
    running.iter().any(|node| {
        let peers: Vec<&str> = running
            .iter()
            .map(|other| other.server_name())
            .filter(|name| *name != node.server_name())
            .collect();
        matches!(http_get(node.monitor_port(), "/jsz"),
            Ok((200, body)) if leads_with_peers_online(&body, node.server_name(), &peers))
    })
}
