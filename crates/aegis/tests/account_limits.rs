//! The application account's JetStream limits and the example services'
//! bounded buckets, on the three nodes `aegis up` configures
//! (`up::nats::write_configs`, its users from `up::credentials::ensure`).
//!
//! The red team's F4: a service's credential stored 100 MB of junk under
//! its own keys in seconds (304 MB of account storage at R3), and nothing
//! but the nodes' store bounded it, so one service could fill the store
//! for every service. Now the example services' buckets are bounded (a
//! service writes its own bucket only), and the account has JetStream
//! limits (`nats_config::ACCOUNT_LIMITS`) that what `aegis init --showcase`
//! makes at R3 fits in, with room; a stream whose limits need more is
//! refused at once, and `aegis init` names the limit and the fix.

mod common;

use std::time::Duration;

use aegis::nats_config::ACCOUNT_LIMITS;
use async_nats::jetstream;
use common::showcase_cluster::ShowcaseCluster;

async fn connect(url: &str, user: &str, password: &str) -> jetstream::Context {
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
            .custom_inbox_prefix(aegis::permissions::inbox_prefix(user))
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    jetstream::new(client)
}

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_cannot_fill_the_store_and_init_fits_the_account_at_r3() {
    let state = tempfile::tempdir().unwrap();
    let cluster = ShowcaseCluster::start(state.path()).await;
    let (creds, nodes) = (&cluster.creds, &cluster.nodes);
    let url = nodes[0].url();
    let creds_file = state.path().join("credentials");
    let creds_file = creds_file.to_str().unwrap();

    // Everything `aegis init --showcase` makes fits at R3.
    let (ok, out) = common::run_at(
        &[
            "init",
            "--showcase",
            "--replicas",
            "3",
            "--credentials",
            creds_file,
        ],
        &url,
    )
    .await;
    assert!(ok, "aegis init --showcase --replicas 3 failed:\n{out}");

    let operator = connect(&url, "operator", creds.nats_password("operator").unwrap()).await;
    let account = operator.query_account().await.unwrap();
    assert_eq!(
        account.limits.max_storage,
        Some(ACCOUNT_LIMITS.max_file as i64),
        "the account's file limit is the rendered one"
    );
    assert_eq!(
        account.limits.max_memory,
        Some(ACCOUNT_LIMITS.max_mem as i64)
    );
    assert_eq!(
        account.limits.max_streams,
        Some(ACCOUNT_LIMITS.max_streams as i64)
    );
    assert_eq!(
        account.limits.max_consumers,
        Some(ACCOUNT_LIMITS.max_consumers as i64)
    );
    // What the streams reserve (their max_bytes times their replicas)
    // leaves room for an operator to raise `[streams.*]`.
    let mut reserved = 0i64;
    let mut names = operator.stream_names();
    use futures::StreamExt;
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        let info = operator
            .get_stream(&name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        assert!(info.config.max_bytes > 0, "{name} is unbounded");
        reserved += info.config.max_bytes * 3;
    }
    assert!(
        reserved * 3 / 2 <= ACCOUNT_LIMITS.max_file as i64,
        "{reserved} bytes reserved at R3 of {}",
        ACCOUNT_LIMITS.max_file
    );
    let orders = operator
        .get_stream("KV_orders")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(orders.config.max_bytes, aegis_trading::ORDERS.max_bytes);

    // The red team's flood, under order-service's own keys: 200 values of
    // 1 MiB. At most what its bucket bounds is stored.
    let order = connect(
        &url,
        "svc-order-service",
        creds.nats_password("svc-order-service").unwrap(),
    )
    .await;
    let junk = bytes::Bytes::from(vec![b'x'; MIB]);
    let (mut stored, mut refused) = (0usize, Vec::new());
    for i in 0..200 {
        let ack = order
            .publish(format!("$KV.orders.order.junk{i}"), junk.clone())
            .await
            .unwrap();
        match ack.await {
            Ok(_) => stored += 1,
            Err(e) => refused.push(e.to_string()),
        }
    }
    let held = operator
        .get_stream("KV_orders")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .bytes;
    assert!(
        stored == 0 && held < MIB as u64,
        "order-service stored {stored} MiB of junk in its bucket ({held} bytes)"
    );
    assert!(
        refused[0].contains("message size exceeds maximum allowed"),
        "{}",
        refused[0]
    );

    // A stream whose limits need more than the account has left is
    // refused at once, as JetStream says it.
    let big = operator
        .create_stream(jetstream::stream::Config {
            name: "TOO_BIG".into(),
            subjects: vec!["too.big".into()],
            max_bytes: ACCOUNT_LIMITS.max_file as i64 / 3,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(big.contains("10047"), "{big}");

    // An operator who raises `[streams.events]` past it is told which
    // limit refused and what to do, at once (not after the start-up
    // timeout's retries).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aegis.toml");
    std::fs::write(
        &config,
        format!(
            "[streams.events]\nmax_age = \"7d\"\nmax_bytes = {}\nmax_messages = 1000000\n",
            ACCOUNT_LIMITS.max_file / 3
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (ok, out) = common::run_at(
        &[
            "init",
            "--showcase",
            "--replicas",
            "3",
            "--credentials",
            creds_file,
            "--config",
            config.to_str().unwrap(),
        ],
        &url,
    )
    .await;
    eprintln!("aegis init refused:\n{out}");
    assert!(
        !ok,
        "raising EVENTS past the account's limit passed:\n{out}"
    );
    assert!(
        out.contains("max_file") && out.contains("[streams.*] max_bytes"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}:\n{out}",
        started.elapsed()
    );
}

/// The example services' buckets made before they were bounded (by an
/// older `aegis init`, or a service on a server without users) are bounded
/// in place by `aegis init --showcase`, their keys kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_bounds_the_example_services_buckets_in_place() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    for bucket in aegis_trading::BUCKETS {
        let kv = js
            .create_key_value(jetstream::kv::Config {
                bucket: bucket.bucket.to_owned(),
                history: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        kv.put("kept", "before".into()).await.unwrap();
    }
    let (ok, out) = common::run_at(&["init", "--showcase"], &server.url()).await;
    assert!(ok, "{out}");
    for bucket in aegis_trading::BUCKETS {
        let name = format!("KV_{}", bucket.bucket);
        let info = js
            .get_stream(&name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.max_bytes, bucket.max_bytes, "{name}");
        assert_eq!(
            info.config.max_message_size, bucket.max_value_size,
            "{name}"
        );
        assert!(
            out.contains(&format!("bounded {name}: max value size none")),
            "{out}"
        );
        let kv = js.get_key_value(bucket.bucket).await.unwrap();
        assert_eq!(kv.get("kept").await.unwrap().unwrap(), "before");
    }
}
