//! Rendering the `nats-server` config file a node runs with.
//!
//! A config file in the node's temporary directory reads better than a long
//! command line and carries the JetStream limits, which have no flags.

use std::path::PathBuf;

/// Everything that goes into one node's config file.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) server_name: String,
    pub(crate) port: u16,
    pub(crate) monitor_port: u16,
    pub(crate) jetstream: bool,
    pub(crate) store_dir: PathBuf,
    pub(crate) cluster: Option<ClusterConfig>,
    /// Password of the system account's user [`SYSTEM_USER`].
    pub(crate) system_password: String,
    /// Whether the accounts block is written at all.
    pub(crate) accounts: bool,
    /// The application account's `users: [...]` array in place of the
    /// password-less default user; clients without credentials are then
    /// refused.
    pub(crate) app_users: Option<String>,
}

/// The application account every client without credentials lands in.
pub(crate) const APP_ACCOUNT: &str = "AEGIS";
/// The system account (server events, `$SYS` requests).
pub(crate) const SYSTEM_ACCOUNT: &str = "SYS";
/// The system account's user.
pub(crate) const SYSTEM_USER: &str = "sys";

/// The cluster block of a clustered node.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    pub(crate) name: String,
    pub(crate) port: u16,
    /// Cluster ports of the other nodes.
    pub(crate) peer_ports: Vec<u16>,
}

impl NodeConfig {
    /// The config file text.
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n",
            quote(&self.server_name),
            self.port,
            self.monitor_port
        );
        if self.jetstream {
            out.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n",
                quote(&self.store_dir.to_string_lossy())
            ));
        }
        // Two accounts: by default clients without credentials land in the
        // application account (`no_auth_user`), so most tests need none;
        // tests of the permission model put the showcase's users there
        // instead (`app_users`), and then nobody connects without them. A
        // system account lets tests read the connect/disconnect advisories.
        if self.accounts {
            let default_users = format!(
                "[ {{ user: \"aegis\", password: {} }} ]",
                quote(&self.system_password)
            );
            out.push_str(&format!(
                "accounts {{\n  {app}: {{ {js}users: {users} }}\n  {sys}: {{ users: [ {{ user: {su}, password: {pw} }} ] }}\n}}\nsystem_account: {sys}\n",
                app = APP_ACCOUNT,
                sys = SYSTEM_ACCOUNT,
                su = quote(SYSTEM_USER),
                js = if self.jetstream { "jetstream: enabled, " } else { "" },
                pw = quote(&self.system_password),
                users = self.app_users.as_deref().unwrap_or(&default_users),
            ));
            if self.app_users.is_none() {
                out.push_str("no_auth_user: \"aegis\"\n");
            }
        }
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .peer_ports
                .iter()
                .map(|p| format!("    nats://127.0.0.1:{p}"))
                .collect();
            out.push_str(&format!(
                "cluster {{\n  name: {}\n  listen: 127.0.0.1:{}\n  routes: [\n{}\n  ]\n}}\n",
                quote(&cluster.name),
                cluster.port,
                routes.join("\n")
            ));
        }
        out
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_cluster_node() {
        let config = NodeConfig {
            server_name: "n1".into(),
            port: 4222,
            monitor_port: 8222,
            jetstream: true,
            store_dir: "/tmp/x/store".into(),
            system_password: "pw".into(),
            accounts: true,
            app_users: None,
            cluster: Some(ClusterConfig {
                name: "c1".into(),
                port: 6222,
                peer_ports: vec![6223, 6224],
            }),
        };
        let text = config.render();
        assert!(text.contains("listen: 127.0.0.1:4222"));
        assert!(text.contains("http: 127.0.0.1:8222"));
        assert!(text.contains("store_dir: \"/tmp/x/store\""));
        assert!(text.contains("nats://127.0.0.1:6223"));
        assert!(text.contains("listen: 127.0.0.1:6222"));
    }

    #[test]
    fn given_users_replace_the_password_less_default() {
        let config = NodeConfig {
            server_name: "s".into(),
            port: 1,
            monitor_port: 2,
            jetstream: true,
            store_dir: "/tmp/s".into(),
            cluster: None,
            system_password: "pw".into(),
            accounts: true,
            app_users: Some(r#"[ { user: "svc", password: "x" } ]"#.into()),
        };
        let text = config.render();
        assert!(
            text.contains(r#"users: [ { user: "svc", password: "x" } ]"#),
            "{text}"
        );
        assert!(!text.contains("no_auth_user"), "{text}");
    }

    #[test]
    fn no_jetstream_block_when_disabled() {
        let config = NodeConfig {
            server_name: "s".into(),
            port: 1,
            monitor_port: 2,
            jetstream: false,
            store_dir: "/tmp/s".into(),
            cluster: None,
            system_password: "pw".into(),
            accounts: false,
            app_users: None,
        };
        assert!(!config.render().contains("jetstream"));
        assert!(!config.render().contains("accounts"));
    }
}
