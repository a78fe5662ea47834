//! A nats-server with the showcase's users and permissions (the users
//! `aegis up` renders, from `aegis::permissions`), each with a random
//! password: the tests that check who may do what on the bus connect as
//! those users through the SDK, a plain JetStream client or a [`Probe`].

use std::time::Duration;

use aegis::permissions::{Role, User, render_users, showcase_roles};
use aegis_sdk::{AegisConfig, Connection, Secret};
use aegis_testkit::NatsServer;
use async_nats::jetstream;

use super::Probe;

/// A nats-server with the showcase's users and permissions.
pub struct ShowcaseBus {
    pub server: NatsServer,
    users: Vec<User>,
}

impl ShowcaseBus {
    /// Starts the server with the showcase's roles.
    pub fn start() -> ShowcaseBus {
        Self::start_with([])
    }

    /// Starts the server with the showcase's roles and `extra` (e.g. an
    /// admitted service).
    pub fn start_with(extra: impl IntoIterator<Item = Role>) -> ShowcaseBus {
        let users: Vec<User> = showcase_roles()
            .into_iter()
            .chain(extra)
            .map(|role| User {
                name: role.user_name(),
                password: format!("pw-{}-{}", role.user_name(), nuid::next()),
                role,
            })
            .collect();
        let server = NatsServer::builder()
            .app_users(render_users(&users))
            .start()
            .expect("start nats-server with the showcase's users");
        ShowcaseBus { server, users }
    }

    /// `user`'s password.
    pub fn password(&self, user: &str) -> &str {
        &self
            .users
            .iter()
            .find(|u| u.name == user)
            .unwrap_or_else(|| panic!("no user {user}"))
            .password
    }

    /// The SDK configuration of `user`: its credentials and inbox prefix,
    /// and a 3 s request timeout.
    pub fn config(&self, user: &str) -> AegisConfig {
        let mut config = AegisConfig::with_servers(self.server.url());
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(Secret::new(self.password(user)));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
        config.nats.request_timeout = Duration::from_secs(3);
        config
    }

    /// An SDK connection as `user`.
    pub async fn sdk(&self, user: &str) -> Connection {
        Connection::connect(self.config(user))
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// An SDK connection as the operator.
    pub async fn operator(&self) -> Connection {
        self.sdk("operator").await
    }

    /// The operator, with the streams and buckets created as `aegis up`
    /// creates them.
    pub async fn operator_with_streams(&self) -> Connection {
        let conn = self.operator().await;
        aegis::init::create_missing(&conn)
            .await
            .expect("the operator creates the streams and buckets");
        conn
    }

    /// A plain JetStream client of `user`, as an attacker holding its
    /// password would use.
    pub async fn js(&self, user: &str) -> jetstream::Context {
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            self.password(user).to_owned(),
        )
        .custom_inbox_prefix(aegis::permissions::inbox_prefix(user))
        .connect(self.server.url())
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        jetstream::new(client)
    }

    /// A plain client of `user` whose server errors arrive on a channel.
    pub async fn probe(&self, user: &str) -> Probe {
        Probe::connect(&self.server.url(), user, self.password(user)).await
    }

    /// Server log lines that report a permission violation.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.server.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}
