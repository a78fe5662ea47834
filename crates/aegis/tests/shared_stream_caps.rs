//! The shared streams' per-message cap, against a real nats-server with
//! the showcase's users: every service publishes into `EVENTS` and
//! `AEGIS_LOG`, which drop their oldest messages when full, so one message
//! of the server's largest payload (1 MiB) took a large share of them (a
//! red-team run pushed every order and risk event out of `EVENTS` with 140
//! such events, and every order-service log line out of `AEGIS_LOG` with
//! 35). The streams now refuse a message above 64 KiB; one of the usual
//! size is taken, and nothing else is evicted.

use std::time::Duration;

use aegis::permissions::{User, render_users, showcase_roles};
use aegis_contracts::subjects::{EVENTS_STREAM, LOG_STREAM};
use aegis_sdk::{AegisConfig, Connection, Secret};
use aegis_testkit::NatsServer;
use async_nats::jetstream;

/// A nats-server with the showcase's users and permissions.
struct Bus {
    server: NatsServer,
    users: Vec<User>,
}

impl Bus {
    fn start() -> Bus {
        let users: Vec<User> = showcase_roles()
            .into_iter()
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
        Bus { server, users }
    }

    fn password(&self, user: &str) -> String {
        self.users
            .iter()
            .find(|u| u.name == user)
            .unwrap_or_else(|| panic!("no user {user}"))
            .password
            .clone()
    }

    async fn sdk(&self, user: &str) -> Connection {
        let mut config = AegisConfig::with_servers(self.server.url());
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(Secret::new(self.password(user)));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
        config.nats.request_timeout = Duration::from_secs(3);
        Connection::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    async fn operator(&self) -> Connection {
        self.sdk("operator").await
    }

    /// A plain JetStream client of `user`, as an attacker holding its
    /// password would use.
    async fn js(&self, user: &str) -> jetstream::Context {
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            self.password(user),
        )
        .custom_inbox_prefix(aegis::permissions::inbox_prefix(user))
        .connect(self.server.url())
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        jetstream::new(client)
    }
}

/// Publishes `size` bytes to `subject` as `js`'s user; what the stream
/// answered.
async fn publish(js: &jetstream::Context, subject: &str, size: usize) -> Result<u64, String> {
    let ack = js
        .publish(subject.to_owned(), vec![b'x'; size].into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

#[tokio::test]
async fn one_large_message_cannot_take_a_share_of_the_shared_streams() {
    let bus = Bus::start();
    let operator = bus.operator().await;
    aegis::init::create_missing(&operator)
        .await
        .expect("the operator creates the streams and buckets");
    let order = bus.js("svc-order-service").await;
    let pricing = bus.js("svc-pricing-service").await;
    publish(&order, "events.order.filled", 500)
        .await
        .expect("an order event of the usual size is taken");
    publish(&order, "aegis.log.order-service.order-1", 300)
        .await
        .expect("a log record of the usual size is taken");

    for subject in ["events.price.flood", "aegis.log.pricing-service.flood"] {
        let answer = publish(&pricing, subject, 1_000_000).await;
        println!("1 MB to {subject}: {answer:?}");
        let refusal = answer.expect_err("a message of 1 MB is refused");
        assert!(refusal.contains("size"), "{refusal}");
        publish(&pricing, subject, 60 * 1024)
            .await
            .expect("one under the cap is taken");
    }
    for name in [EVENTS_STREAM, LOG_STREAM] {
        let mut stream = operator.jetstream().get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.max_message_size, 64 * 1024, "{name}");
        assert_eq!(info.state.messages, 2, "{name}: nothing evicted");
    }
}

/// Streams made before the cap get it from what `aegis up` and `aegis
/// init` run, keeping their messages.
#[tokio::test]
async fn streams_made_without_a_cap_get_it_in_place() {
    let bus = Bus::start();
    let operator = bus.operator().await;
    let js = operator.jetstream();
    for (name, subjects) in [(EVENTS_STREAM, "events.>"), (LOG_STREAM, "aegis.log.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            max_bytes: 32 * 1024 * 1024,
            max_messages: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let order = bus.js("svc-order-service").await;
    publish(&order, "events.order.filled", 500).await.unwrap();
    aegis::init::create_missing(&operator).await.unwrap();
    for name in [EVENTS_STREAM, LOG_STREAM] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.max_message_size, 64 * 1024, "{name}");
    }
    let mut events = js.get_stream(EVENTS_STREAM).await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 1, "kept");
}
