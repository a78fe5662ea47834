//! One client cannot take every connection: the monitor's connection cap
//! (`--max-connections`) is shared, each client address holding at most
//! `--max-connections-per-client` of it; a connection past its client's
//! share is answered 429 and closed, and other clients still get in. Over
//! real sockets from two loopback addresses (127.0.0.1 and 127.0.0.2 are
//! two addresses on Linux), with clients that keep their connections busy
//! — a request every 300 ms, well inside the header-read timeout, so
//! hyper's timer never closes them.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use common::Harness;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

const ONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const THREE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A connection to `addr` from the address `from`.
async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One keep-alive request on `conn`; the answer's status and whole text,
/// or `None` when the connection closed first.
async fn exchange(conn: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: monitor\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, text));
            }
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// What a busy client's connection got on its first request.
#[derive(Debug)]
enum First {
    /// Served: it goes on sending a request every 300 ms until stopped.
    Served,
    /// Answered with this status and text, then closed by the server.
    Refused(u16, String),
}

/// `n` connections from `from`, each asking `GET /health` every 300 ms
/// until `stop`; each reports what its first request got. A connection
/// that waits in the listen backlog reports only once it is answered.
fn busy_clients(
    n: usize,
    from: IpAddr,
    addr: SocketAddr,
    stop: &CancellationToken,
) -> mpsc::UnboundedReceiver<First> {
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..n {
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conn = connect_from(from, addr).await;
            match exchange(&mut conn, "/health").await {
                Some((200, _)) => {
                    let _ = tx.send(First::Served);
                }
                Some((status, text)) => {
                    // Refused: the server closes the connection after it.
                    let mut rest = Vec::new();
                    let closed =
                        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
                            .await
                            .is_ok();
                    assert!(closed, "a refused connection was left open");
                    let _ = tx.send(First::Refused(status, text));
                    return;
                }
                None => panic!("closed without an answer"),
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
                match exchange(&mut conn, "/health").await {
                    Some((200, _)) => {}
                    other => panic!("a busy connection lost its service: {other:?}"),
                }
            }
        });
    }
    rx
}

/// `GET path` on a new connection from `from`, answered within `within`.
async fn probe(from: IpAddr, addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        let mut conn = connect_from(from, addr).await;
        exchange(&mut conn, path).await.map(|(status, _)| status)
    })
    .await
    .ok()
    .flatten()
}

/// The value of the sample `name` (with its labels, as rendered) in
/// `/metrics`, 0 when absent.
async fn sample(h: &Harness, name: &str) -> f64 {
    let text = h.get("/metrics", None).await.body;
    let text = text.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

const PER_CLIENT: &str = "aegis_monitor_http_connection_limit_total{limit=\"per_client\"}";
const TOTAL: &str = "aegis_monitor_http_connection_limit_total{limit=\"max_connections\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_busy_client_cannot_lock_the_others_out() {
    let h = Harness::start_with(|c| {
        c.max_connections = 8;
        c.max_connections_per_client = 4;
        c.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let (addr, stop_server) = h.serve().await;
    let refused_before = sample(&h, PER_CLIENT).await;
    let stop = CancellationToken::new();

    // As many busy connections as the whole cap, from one address: its
    // share is served, the rest refused at once.
    let mut firsts = busy_clients(8, TWO, addr, &stop);
    let (mut served, mut refused) = (0, Vec::new());
    while served + refused.len() < 8 {
        match tokio::time::timeout(Duration::from_secs(10), firsts.recv()).await {
            Ok(Some(First::Served)) => served += 1,
            Ok(Some(First::Refused(status, text))) => refused.push((status, text)),
            _ => break,
        }
    }
    assert_eq!(served, 4, "one address holds its share, no more");
    assert_eq!(refused.len(), 4, "{refused:?}");
    for (status, text) in &refused {
        assert_eq!(*status, 429, "{text}");
        assert!(text.contains("\"code\":\"TOO_MANY_REQUESTS\""), "{text}");
        assert!(text.contains("\"maxConnectionsPerClient\":4"), "{text}");
        assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    }

    // Another address still gets in, at once, while the first keeps its
    // connections busy.
    for _ in 0..3 {
        assert_eq!(
            probe(ONE, addr, "/health", Duration::from_secs(5)).await,
            Some(200),
            "a second client was locked out"
        );
    }

    // The operator can see it.
    assert!(sample(&h, PER_CLIENT).await >= refused_before + 4.0);
    let open = sample(&h, "aegis_monitor_http_connections").await;
    assert!(open >= 4.0, "open connections: {open}");

    // Once the first client's connections close, its share is free again.
    stop.cancel();
    common::eventually(
        aegis_testkit::wait::PATIENCE,
        "the first client's connections closed",
        || async { sample(&h, "aegis_monitor_http_connections").await == 0.0 },
    )
    .await;
    let mut again = busy_clients(4, TWO, addr, &CancellationToken::new());
    for _ in 0..4 {
        let first = tokio::time::timeout(Duration::from_secs(10), again.recv()).await;
        assert!(matches!(first, Ok(Some(First::Served))), "{first:?}");
    }
    stop_server.cancel();
}

/// A trusted proxy speaks for many clients: it is held to the whole cap,
/// not to one client's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_proxy_may_use_the_whole_cap() {
    let h = Harness::start_with(|c| {
        c.max_connections = 8;
        c.max_connections_per_client = 2;
        c.header_read_timeout = Duration::from_secs(2);
        c.trusted_proxies = vec![THREE.into()];
    })
    .await;
    let (addr, stop_server) = h.serve().await;
    let stop = CancellationToken::new();
    let mut firsts = busy_clients(6, THREE, addr, &stop);
    for _ in 0..6 {
        let first = tokio::time::timeout(Duration::from_secs(10), firsts.recv()).await;
        assert!(matches!(first, Ok(Some(First::Served))), "{first:?}");
    }
    stop.cancel();
    stop_server.cancel();
}

/// The whole cap reached by several clients, each within its share: new
/// clients wait in the backlog (as before), and the wait is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_reached_is_counted() {
    let h = Harness::start_with(|c| {
        c.max_connections = 4;
        c.max_connections_per_client = 2;
        c.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let (addr, stop_server) = h.serve().await;
    let before = sample(&h, TOTAL).await;
    let stop = CancellationToken::new();
    for from in [TWO, THREE] {
        let mut firsts = busy_clients(2, from, addr, &stop);
        for _ in 0..2 {
            let first = tokio::time::timeout(Duration::from_secs(10), firsts.recv()).await;
            assert!(matches!(first, Ok(Some(First::Served))), "{first:?}");
        }
    }
    // Every slot is taken: a third client waits (it is not refused).
    assert_eq!(
        probe(ONE, addr, "/health", Duration::from_secs(1)).await,
        None
    );
    assert!(sample(&h, TOTAL).await > before);
    // And is answered once a slot frees.
    stop.cancel();
    assert_eq!(
        probe(ONE, addr, "/health", Duration::from_secs(10)).await,
        Some(200)
    );
    stop_server.cancel();
}
