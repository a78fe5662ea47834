//! A leader whose renewals go unanswered for a moment — a loaded machine
//! where the NATS server, or the leader's own process, gets no CPU for a
//! few hundred milliseconds, as when a sticky group's instances all start
//! at once — stops serving when its lease runs out, as it must, but keeps
//! its key while nobody else took it: it renews it again, at the same
//! epoch, as soon as the store answers. Giving the key up instead (waiting
//! out its own record like any standby) hands the group to whichever
//! instance's takeover lands first: a failover nobody caused.
//!
//! Simulated by stopping the server (SIGSTOP) past the leader's serving
//! window: its renewal and the read after it go unanswered, and the
//! renewal commits when the server runs again.

mod common;

use std::time::Duration;

use aegis_sdk::election::{Election, LeaseConfig, Role};
use common::{connect, eventually, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_went_unanswered_renews_its_key_at_the_same_epoch() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "aegis_sdk::election=debug",
        ))
        .try_init();
    let mut nats = server();
    let conn = connect(&nats.url()).await;
    let config = LeaseConfig::default();
    let leader = Election::start(&conn, "order-service", "default", "k1", config)
        .await
        .unwrap();
    let leadership = leader.leadership();
    eventually(Duration::from_secs(10), "k1 leads", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    let epoch = leadership.serving_epoch().unwrap();

    nats.pause();
    eventually(
        Duration::from_secs(10),
        "k1 stops serving when its lease runs out",
        || async { leadership.serving_epoch().is_none() },
    )
    .await;
    // The stall outlasts the leader's serving window by a lease, so its
    // campaign has had every chance to give the key up.
    tokio::time::sleep(config.lease).await;
    nats.resume();

    let mut roles = leader.roles();
    eventually(Duration::from_secs(10), "k1 serves again", || {
        let role = roles.borrow_and_update().clone();
        let serving = leadership.serving_epoch();
        async move { role.is_leader() && serving.is_some() }
    })
    .await;
    assert_eq!(
        leader.role(),
        Role::Leader { epoch },
        "k1 took its own key over as if from another leader"
    );
    assert_eq!(leadership.serving_epoch(), Some(epoch));
}
