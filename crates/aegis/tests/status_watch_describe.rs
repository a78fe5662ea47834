//! `aegis status SERVICE --watch` against a real nats-server and real
//! instances: what the instances serve (`$SRV.INFO`) changes only with
//! the instances, so it is asked once, and again when the set of instances
//! changes (one restarted under its own id included), not on every redraw
//! (a second apart, each asking every instance of the service).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_testkit::NatsServer;
use common::{Proc, free_port};

/// The line `status --watch` ends every redraw with.
const REDRAWN: &str = "(refreshing every second";

/// `aegis service echo` as the instance `id`, once it has started.
fn echo(url: &str, id: &str) -> Proc {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut service = Proc::spawn(&[
        "service",
        "echo",
        "--nats-url",
        url,
        "--health-listen",
        &addr,
        "--instance-id",
        id,
    ]);
    service.wait_for("started", Duration::from_secs(20));
    service
}

#[test]
fn status_watch_asks_what_a_service_serves_once_per_set_of_instances() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let mut first = echo(&url, "echo-1");

    // A plain subscriber counts the describe requests on the bus.
    let asked = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use futures::StreamExt;
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let mut requests = client.subscribe("$SRV.INFO.>").await.unwrap();
        client.flush().await.unwrap();
        let asked = asked.clone();
        tokio::spawn(async move {
            let _client = client;
            while requests.next().await.is_some() {
                asked.fetch_add(1, Ordering::SeqCst);
            }
        });
    });

    let mut status = Proc::spawn(&["status", "echo-service", "--watch", "--nats-url", &url]);
    for _ in 0..4 {
        status.wait_for(REDRAWN, Duration::from_secs(20));
    }
    let out = status.output();
    assert_eq!(
        out.matches("methods: echo").count(),
        4,
        "every redraw says what it serves:\n{out}"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked once in four redraws:\n{out}"
    );

    // Another instance: the set changed, so it is asked again, once.
    let _second = echo(&url, "echo-2");
    status.wait_for("echo-2", Duration::from_secs(20));
    for _ in 0..3 {
        status.wait_for(REDRAWN, Duration::from_secs(20));
    }
    let out = status.output();
    assert_eq!(asked.load(Ordering::SeqCst), 2, "{out}");

    // echo-1 killed and started again under its own id (as `aegis up`
    // and `--instance-id` name them): a new process, which may serve other
    // methods, so it is asked again, once, before the 60 s refresh.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _restarted = echo(&url, "echo-1");
    for _ in 0..3 {
        status.wait_for(REDRAWN, Duration::from_secs(20));
    }
    let out = status.output();
    assert_eq!(asked.load(Ordering::SeqCst), 3, "{out}");
}
