//! The monitor creates `AEGIS_METRICS` and `AEGIS_LOG` bounded by the
//! `streams.metrics` and `streams.log` limits of its NATS configuration.

mod common;

use std::time::Duration;

use aegis_sdk::StreamsConfig;
use common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_log_streams_are_bounded_by_the_configuration() {
    let h = Harness::start_with(|c| {
        c.nats.streams.log.max_bytes = 2 * 1024 * 1024;
        c.nats.streams.log.max_age = Duration::from_secs(600);
    })
    .await;
    let conn = h.connect().await;
    let defaults = StreamsConfig::default();
    let mut metrics = conn.jetstream().get_stream("AEGIS_METRICS").await.unwrap();
    let metrics = metrics.info().await.unwrap().config.clone();
    assert_eq!(metrics.max_bytes, defaults.metrics.max_bytes as i64);
    assert_eq!(metrics.max_messages, defaults.metrics.max_messages as i64);
    assert_eq!(metrics.max_age, Duration::from_secs(3600));
    let mut log = conn.jetstream().get_stream("AEGIS_LOG").await.unwrap();
    let log = log.info().await.unwrap().config.clone();
    assert_eq!(log.max_bytes, 2 * 1024 * 1024);
    assert_eq!(log.max_messages, defaults.log.max_messages as i64);
    assert_eq!(log.max_age, Duration::from_secs(600));
    assert_eq!(log.max_messages_per_subject, 10_000);
}
