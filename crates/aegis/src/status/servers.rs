//! The configured NATS servers that do not answer: `aegis status` says so
//! under its table, as the monitor's banner does, rather than printing
//! the usual table while a node of the cluster is down (its clients have
//! moved to the others, so nothing else in the table shows it).
//!
//! Each server the connection was configured with (`--nats-url`, or the
//! nodes of the showcase in `--state-dir`) is asked for a TCP connection,
//! all at once, each for at most [`ANSWER_WAIT`]. Nothing is sent: a server
//! that accepts is up as far as this line is concerned; whether JetStream
//! has its leaders is the monitor's to show.

use std::time::Duration;

use futures::future::join_all;

/// How long one server has to accept a connection: a live server on a
/// reachable host does so in well under a millisecond; a dead one on this
/// host refuses at once, one behind a dropped route is not waited for.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// The configured servers (`urls`, the connection's, one URL each) that do
/// not accept a connection, each as given (any password redacted); empty
/// when one or none is configured (the connection itself says whether that
/// one answers), or when every one answers.
pub(super) async fn not_answering(urls: &[String]) -> Vec<String> {
    if urls.len() < 2 {
        return Vec::new();
    }
    let checks = urls.iter().map(|url| async move {
        let addr = url.parse::<async_nats::ServerAddr>().ok()?;
        let target = (addr.host().to_owned(), addr.port());
        let connected = tokio::time::timeout(ANSWER_WAIT, tokio::net::TcpStream::connect(target))
            .await
            .is_ok_and(|c| c.is_ok());
        (!connected).then(|| aegis_sdk::config::redact_url(url))
    });
    join_all(checks).await.into_iter().flatten().collect()
}

/// The line under the table for `down`, of `configured` servers.
pub(super) fn line(down: &[String], configured: usize) -> Option<String> {
    let (first, rest) = down.split_first()?;
    let (which, verb) = if rest.is_empty() {
        (first.clone(), "does")
    } else {
        (down.join(", "), "do")
    };
    Some(format!(
        "NATS: {which} {verb} not answer ({} of {configured} servers configured); clients \
         connect to the others, and streams it led elect new leaders (some seconds)\n",
        down.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_servers_down_and_of_how_many() {
        assert_eq!(line(&[], 3), None);
        assert_eq!(
            line(&["nats://127.0.0.1:4224".into()], 3).unwrap(),
            "NATS: nats://127.0.0.1:4224 does not answer (1 of 3 servers configured); clients \
             connect to the others, and streams it led elect new leaders (some seconds)\n"
        );
        let two = line(&["nats://a:1".into(), "nats://b:2".into()], 3).unwrap();
        assert!(
            two.starts_with("NATS: nats://a:1, nats://b:2 do not answer (2 of 3"),
            "{two}"
        );
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_does_not_answer() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (live_url, dead_url) = (
            format!("nats://127.0.0.1:{}", live.local_addr().unwrap().port()),
            format!("nats://127.0.0.1:{}", dead.local_addr().unwrap().port()),
        );
        drop(dead);
        assert_eq!(
            not_answering(&[live_url.clone(), dead_url.clone()]).await,
            [dead_url]
        );
        // One server: the connection says whether it answers.
        assert!(
            not_answering(&["nats://127.0.0.1:1".into()])
                .await
                .is_empty()
        );
        // A password is never printed.
        let secret = format!(
            "nats://op:s3cret@127.0.0.1:{}",
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        );
        let said = not_answering(&[live_url, secret]).await;
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(!said[0].contains("s3cret"), "{said:?}");
    }
}
