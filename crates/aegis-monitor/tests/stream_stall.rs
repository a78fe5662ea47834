//! A live-stream client that stops reading is cut off: once the monitor
//! has handed the connection an event it cannot write (the client's and
//! the server's socket buffers full) for the stall timeout, it closes the
//! connection, freeing its slot and buffers. A client on a quiet stream,
//! with nothing to write, is not cut off however long it waits, and a
//! client that reads goes on receiving beside a stalled one. Over real
//! sockets, with a real nats-server feeding metrics snapshots.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use aegis_contracts::{MetricsSnapshot, subjects::metrics_subject};
use common::{Harness, VIEWER, new_def};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Opens `/api/stream?topics=...` on a socket with a small receive
/// buffer, reads the answer's head and stops there.
async fn stalled_client(addr: SocketAddr, topics: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    conn.write_all(
        format!(
            "GET /api/stream?topics={topics} HTTP/1.1\r\nHost: monitor\r\n\
             Authorization: Bearer {VIEWER}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 512];
    let n = conn.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    conn
}

/// Whether the server closed `conn` within `within` (reading what it
/// still holds meanwhile): end of stream or a reset.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads `body` until `wanted` has gone by (keeping only a short tail).
async fn read_until(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    wanted: &[u8],
) {
    let mut tail = Vec::new();
    while let Some(chunk) = body.next().await {
        tail.extend_from_slice(&chunk.unwrap());
        if tail.windows(wanted.len()).any(|w| w == wanted) {
            return;
        }
        tail.drain(..tail.len().saturating_sub(wanted.len()));
    }
    panic!(
        "the stream ended before {:?}",
        String::from_utf8_lossy(wanted)
    );
}

fn snapshot(instance: &str, depth: u64, padding: &BTreeMap<String, f64>) -> Vec<u8> {
    serde_json::to_vec(&MetricsSnapshot {
        service_name: "busy-service".into(),
        instance_id: instance.into(),
        timestamp: chrono::Utc::now(),
        queue_depth: depth,
        custom: padding.clone(),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_cut_off_and_the_others_go_on() {
    let h = Harness::start_with(|c| c.stream_stall_timeout = Duration::from_secs(2)).await;
    let (addr, stop) = h.serve().await;

    let mut stalled = stalled_client(addr, "metrics").await;
    // On a quiet topic: nothing to write, so never stalled.
    let mut quiet = stalled_client(addr, "definition").await;
    let reader = reqwest::Client::new()
        .get(format!("http://{addr}/api/stream?topics=metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    let mut reader = reader.bytes_stream();
    read_until(&mut reader, b"event: hello").await;

    // About 30 KB a snapshot, 12 MB in all: more than the kernel's socket
    // buffers (4 MB at most here) and hyper's hold for the stalled client.
    let padding: BTreeMap<String, f64> = (0..1000)
        .map(|k| (format!("padding_metric_{k:04}"), k as f64))
        .collect();
    let conn = h.connect().await;
    let client = conn.client().clone();
    // The reader keeps reading all along, however long the quiet spells
    // in between, until the marker's snapshot.
    let reading = tokio::spawn(async move {
        read_until(&mut reader, b"\"instanceId\":\"marker\"").await;
    });
    for i in 0..400u64 {
        client
            .publish(
                metrics_subject("busy-service", "busy-1"),
                snapshot("busy-1", i, &padding).into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    // Reading nothing for longer than the stall timeout (reading would
    // unblock the server), then: cut off, not left open.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)).await,
        "a client that reads nothing kept its stream"
    );

    // The reader was not held up: the next snapshot reaches it.
    conn.jetstream()
        .publish(
            metrics_subject("busy-service", "marker"),
            snapshot("marker", 1, &BTreeMap::new()).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reading client got the marker")
        .unwrap();

    // The quiet client, idle for longer than the stall timeout, is still
    // served: a definition written now reaches it.
    let created = h
        .admin(
            axum::http::Method::POST,
            "/api/services",
            Some(new_def("stall-check")),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = quiet.read(&mut buf).await.unwrap();
            assert!(n > 0, "the quiet client was closed");
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("stall-check") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "{}", String::from_utf8_lossy(&seen));
    stop.cancel();
}
