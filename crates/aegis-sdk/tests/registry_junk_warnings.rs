//! Junk in the registry does not multiply into every watcher's log.
//!
//! A service may write any number of records under its own registry keys;
//! every process that watches the registry (every service with discovery,
//! the monitor, `aegis status`) used to log one WARN per unreadable record
//! or per record whose names disagree with its key: in a red-team run ~700
//! junk writes gave ~950 lines in each watcher's log. These warnings are
//! now logged at most once per 10 s per process, with a count of the ones
//! in between; so is a rollup seen on the registry (which removes keys
//! without telling any watcher).

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::registry::RegistryReader;
use common::{connect, eventually, server};

/// Every log line, for the test to count.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(needle))
            .count()
    }
}

#[tokio::test]
async fn junk_records_and_rollups_warn_once_per_interval_with_a_count() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.expect("registry reader");
    let kv = conn
        .jetstream()
        .get_key_value("service_registry")
        .await
        .unwrap();

    const JUNK: usize = 100;
    for i in 0..JUNK {
        kv.put(
            format!("service-instances.pricing-service.junk{i}"),
            "not a record".into(),
        )
        .await
        .unwrap();
        kv.put(
            format!("service-instances.pricing-service.odd{i}"),
            r#"{"serviceName":"order-service","instanceId":"order-9","version":"1.0.0","status":"ACTIVE","lastHeartbeat":"2026-01-01T00:00:00Z","stickyActiveGroup":null,"metadata":{}}"#.into(),
        )
        .await
        .unwrap();
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    for i in 0..JUNK {
        conn.jetstream()
            .publish_with_headers(
                format!("$KV.service_registry.service-instances.pricing-service.junk{i}"),
                headers.clone(),
                "still not a record".into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A real record after the junk: once the reader has it, it has seen
    // every junk record before it.
    let _service = common::echo_service(&conn, "pricing-service", "pricing-1").await;
    eventually(
        Duration::from_secs(10),
        "the reader sees the real record",
        || async { reader.get("pricing-service", "pricing-1").is_some() },
    )
    .await;
    assert!(reader.get("order-service", "order-9").is_none());
    let record = kv
        .get("service-instances.pricing-service.pricing-1")
        .await
        .unwrap()
        .unwrap();
    println!("a real registry record: {} bytes", record.len());

    let unreadable = lines.count("ignoring an unreadable registry record");
    let disagreeing = lines.count("whose names disagree with its key");
    let rollups = lines.count("a rollup was sent to this key");
    println!("{unreadable} unreadable, {disagreeing} disagreeing, {rollups} rollup warnings");
    assert_eq!(unreadable, 1, "{} junk records", 2 * JUNK);
    assert_eq!(
        disagreeing, 1,
        "{JUNK} records that disagree with their keys"
    );
    assert_eq!(rollups, 1, "{JUNK} rollups");
}
