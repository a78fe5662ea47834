//! A registry bucket with more replicas than a service asks for is the
//! operator's choice (the showcase and the Helm chart make it R3, a
//! service's default is 1): used as it is, without a warning that reads as
//! the service's misconfiguration. One with fewer replicas than asked is
//! less durable than the service was told, and says so.

mod common;

use aegis_sdk::registry::ensure_registry_bucket;
use common::{Captured, connect_cluster};

const WARNING: &str = "the registry bucket exists with a different replica count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_bucket_with_fewer_replicas_than_asked_warns() {
    let logs = Captured::install(tracing::Level::INFO);
    let cluster = aegis_testkit::NatsCluster::start(3).unwrap();
    let conn = connect_cluster(vec![cluster.node(0).url()], 3).await;
    let js = conn.jetstream();

    // Made with three replicas, then found by a service that asks for one.
    ensure_registry_bucket(js, 3).await.unwrap();
    ensure_registry_bucket(js, 1).await.unwrap();
    assert!(
        !logs.text().contains(WARNING),
        "a bigger bucket than asked warns: {}",
        logs.text()
    );

    // Made again with one, found by a service that asks for three.
    js.delete_key_value(aegis_sdk::contracts::subjects::REGISTRY_BUCKET)
        .await
        .unwrap();
    ensure_registry_bucket(js, 1).await.unwrap();
    ensure_registry_bucket(js, 3).await.unwrap();
    let text = logs.text();
    assert!(text.contains(WARNING), "fewer replicas than asked: {text}");
    assert!(text.contains("existing=1"), "{text}");
}
