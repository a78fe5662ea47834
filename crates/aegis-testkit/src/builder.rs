//! [`NatsServerBuilder`]: options for a single [`NatsServer`] (JetStream on
//! or off, binary, name, extra flags) and the start-with-retry logic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binary::{check_binary, nats_server_binary};
use crate::config::NodeConfig;
use crate::error::TestkitError;
use crate::net::free_ports;
use crate::server::{NatsServer, READY_TIMEOUT};
use crate::support::{random_password, temp_dir, unique_suffix, with_port_retries};

/// Options for a single [`NatsServer`]; get one from [`NatsServer::builder`].
#[derive(Debug, Clone)]
pub struct NatsServerBuilder {
    jetstream: bool,
    accounts: bool,
    app_users: Option<String>,
    binary: Option<PathBuf>,
    server_name: Option<String>,
    extra_args: Vec<String>,
    ready_timeout: Duration,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        Self {
            jetstream: true,
            accounts: true,
            app_users: None,
            binary: None,
            server_name: None,
            extra_args: Vec::new(),
            ready_timeout: READY_TIMEOUT,
        }
    }
}

impl NatsServerBuilder {
    /// Enables JetStream (the default) or runs core NATS only.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder().jetstream(false).start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Configures the application account (where clients without
    /// credentials land) and the system account (the default), or none: a
    /// plain anonymous server, for tests that set their own authentication
    /// with [`extra_args`](Self::extra_args) (nats-server refuses `--auth`
    /// together with accounts).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .accounts(false)
    ///     .extra_args(vec!["--auth".into(), "a-token".into()])
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn accounts(mut self, enabled: bool) -> Self {
        self.accounts = enabled;
        self
    }

    /// Replaces the application account's password-less default user with
    /// these users: the `users: [...]` array of the server config, e.g.
    /// rendered from the role table of `aegis::permissions`, so a test runs
    /// the same users and permissions as the showcase. Clients without
    /// credentials are then refused. Needs [`accounts`](Self::accounts) on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .app_users(r#"[ { user: "app", password: "s3cret" } ]"#.into())
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn app_users(mut self, users: String) -> Self {
        self.app_users = Some(users);
        self
    }

    /// Uses this binary instead of [`nats_server_binary`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .binary("/opt/nats/nats-server".into())
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn binary(mut self, path: PathBuf) -> Self {
        self.binary = Some(path);
        self
    }

    /// Sets `server_name` (default: unique per server, `aegis-<pid>-<n>`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder().server_name("hub".into()).start()?;
    /// assert_eq!(server.server_name(), "hub");
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn server_name(mut self, name: String) -> Self {
        self.server_name = Some(name);
        self
    }

    /// Extra command-line arguments, after `-c <config>` (flags override
    /// the config file), e.g. `["-DV"]` for debug and trace logging.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .extra_args(vec!["-DV".into()])
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn extra_args(mut self, args: Vec<String>) -> Self {
        self.extra_args = args;
        self
    }

    /// How long to wait for `/healthz` (default 30 s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .ready_timeout(Duration::from_secs(60))
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the server on free ports and waits until it is healthy.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryNotFound`], [`TestkitError::TooOld`] or
    /// [`TestkitError::UnknownVersion`] for the binary;
    /// [`TestkitError::Spawn`] or [`TestkitError::NotReady`] for the process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder()
    ///     .server_name("orders".into())
    ///     .extra_args(vec!["-D".into()])
    ///     .start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn start(self) -> Result<NatsServer, TestkitError> {
        let binary = match self.binary {
            Some(path) => {
                check_binary(&path)?;
                path
            }
            None => nats_server_binary()?,
        };
        let name = self
            .server_name
            .unwrap_or_else(|| format!("aegis-{}", unique_suffix()));
        let system_password = random_password();
        with_port_retries(|| {
            let ports = free_ports(2)?;
            let dir = temp_dir()?;
            let config = NodeConfig {
                server_name: name.clone(),
                port: ports[0],
                monitor_port: ports[1],
                jetstream: self.jetstream,
                store_dir: dir.path().join("store"),
                system_password: system_password.clone(),
                accounts: self.accounts,
                app_users: self.app_users.clone(),
                cluster: None,
            };
            let mut server = NatsServer::prepare(
                binary.clone(),
                config,
                self.extra_args.clone(),
                self.ready_timeout,
                dir,
            )?;
            server.spawn()?;
            server.wait_until(Instant::now() + self.ready_timeout)?;
            Ok(server)
        })
    }
}
