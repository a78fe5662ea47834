//! `streams::publish_deduplicated` against a real nats-server: an id that
//! cannot deduplicate (empty, holding a line break a header cannot carry,
//! or starting with a space the server drops) is refused before anything is sent, instead of panicking or storing a
//! message a retry would store again.

mod common;

use aegis_sdk::streams::publish_deduplicated;
use async_nats::{HeaderMap, jetstream::context::PublishErrorKind};
use common::{connect, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_cannot_deduplicate_is_refused_before_anything_is_sent() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let js = conn.jetstream();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "T".into(),
        subjects: vec!["t.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();

    // The server drops a header value's leading spaces: " x" would be
    // deduplicated against "x" (another message dropped as its copy), and
    // "  " stored as no id at all.
    for id in ["a\r\nb", "a\nb", "a\rb", "", " x", "  "] {
        let err = publish_deduplicated(&conn, "t.a".into(), id, HeaderMap::new(), "x".into())
            .await
            .expect_err(id);
        assert_eq!(err.kind(), PublishErrorKind::Other, "{id:?}: {err:?}");
    }
    let stream = js.get_stream("T").await.unwrap();
    assert_eq!(stream.cached_info().state.messages, 0, "nothing was stored");
}
