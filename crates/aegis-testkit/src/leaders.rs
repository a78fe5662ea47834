//! Which node leads a JetStream stream, and moving that leadership: a test
//! that kills a node first makes it lead (or not lead) the stream it is
//! about, so the kill costs that stream its leader (or does not).
//!
//! Each works on a plain client connected to the cluster, asks the
//! JetStream API, and panics with what it waited for once its bound
//! ([`PATIENCE`] for a move) passes, like [`crate::wait`].

use std::{future::Future, time::Duration};

use crate::wait::{PATIENCE, until_some};

/// The server name (`n1`..) of the node leading `stream`; `None` when the
/// stream cannot be looked up or has no leader right now.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// let leader = aegis_testkit::leaders::stream_leader(&client, "KV_service_registry").await;
/// println!("led by {leader:?}");
/// # }
/// ```
pub async fn stream_leader(client: &async_nats::Client, stream: &str) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(stream).await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// Moves the leadership of `stream` to the node named `node`, and waits
/// until that node leads it.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// aegis_testkit::leaders::lead_on(&client, "KV_risk_limits", "n2").await;
/// # }
/// ```
///
/// # Panics
/// When `node` does not lead `stream` within [`PATIENCE`].
pub async fn lead_on(client: &async_nats::Client, stream: &str, node: &str) {
    let leads = || async { stream_leader(client, stream).await.as_deref() == Some(node) };
    let what = format!("{stream} led by {node}");
    step_down_until(client, stream_step_down(stream), Some(node), &what, leads).await;
}

/// Asks the leader of `stream` to step down, and returns as soon as it has,
/// without waiting for a successor: what a NATS node in lame duck mode
/// does to the streams it leads. For some milliseconds after, nobody takes
/// writes for the stream; a test writes into that window.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// aegis_testkit::leaders::step_down(&client, "KV_service_elections").await;
/// // Write now: the stream is between leaders.
/// # }
/// ```
///
/// # Panics
/// When the request is not answered, or the leader did not step down.
pub async fn step_down(client: &async_nats::Client, stream: &str) {
    let answer = client
        .request(stream_step_down(stream), "".into())
        .await
        .unwrap_or_else(|e| panic!("the step-down of {stream} is not answered: {e}"));
    let body: serde_json::Value = serde_json::from_slice(&answer.payload)
        .unwrap_or_else(|e| panic!("the step-down of {stream} answered no JSON: {e}"));
    assert_eq!(
        body["success"], true,
        "the leader of {stream} stepped down: {body}"
    );
}

/// The worst case of a node loss for `stream`: makes node `index` of
/// `cluster`, which must lead the JetStream meta group, lead `stream` too,
/// then SIGKILLs it. No write to the stream lands until it elects a new
/// leader, and no consumer can be made until the meta group has one.
///
/// ```no_run
/// # async fn demo(mut cluster: aegis_testkit::NatsCluster, client: async_nats::Client) {
/// let doomed = cluster.meta_leader().expect("a meta leader");
/// aegis_testkit::leaders::kill_leading_node(&mut cluster, &client, "EVENTS", doomed).await;
/// # }
/// ```
///
/// # Panics
/// When the node does not lead `stream` within [`PATIENCE`], or no longer
/// leads the meta group once it does.
pub async fn kill_leading_node(
    cluster: &mut crate::NatsCluster,
    client: &async_nats::Client,
    stream: &str,
    index: usize,
) {
    let node = cluster.nodes()[index].server_name().to_owned();
    lead_on(client, stream, &node).await;
    assert_eq!(cluster.meta_leader(), Some(index), "the meta group moved");
    eprintln!("killing {node}: it leads {stream} and the JetStream meta group");
    cluster.kill_node(index);
}

/// Moves the leadership of `stream` off the node named `node` (if it leads
/// it), and waits until another node leads it.
///
/// # Panics
/// When no other node leads `stream` within [`PATIENCE`].
pub async fn lead_elsewhere(client: &async_nats::Client, stream: &str, node: &str) {
    let leads = || async {
        stream_leader(client, stream)
            .await
            .is_some_and(|leader| leader != node)
    };
    let what = format!("{stream} led by a node other than {node}");
    step_down_until(client, stream_step_down(stream), None, &what, leads).await;
}

fn stream_step_down(stream: &str) -> String {
    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
}

/// Sends the step-down request `subject` (in favour of `preferred`, if
/// given) until `leads` holds. It is sent again only after the cluster had
/// time to elect (half a second): sent at once, it would depose the
/// leader it just elected.
async fn step_down_until<L, Fut>(
    client: &async_nats::Client,
    subject: String,
    preferred: Option<&str>,
    what: &str,
    leads: L,
) where
    L: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let body = match preferred {
        Some(name) => serde_json::json!({ "placement": { "preferred": name } }).to_string(),
        None => String::new(),
    };
    let asked = std::cell::Cell::new(None::<tokio::time::Instant>);
    let (asked, subject, body, leads) = (&asked, &subject, &body, &leads);
    until_some(PATIENCE, what, || async move {
        if leads().await {
            return Some(());
        }
        if asked
            .get()
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(500))
        {
            asked.set(Some(tokio::time::Instant::now()));
            // Refused while an election runs: sent again next time.
            let _ = client.request(subject.clone(), body.clone().into()).await;
        }
        None
    })
    .await;
}
