//! What the server's log says of a request's path: the matched route's
//! template (`/api/services/{name}`), and for a path no route matches a
//! fixed `<unmatched>`, never the path itself. A token pasted into a URL
//! by mistake (`/api/<token>`) must not reach the log.
//!
//! One test in its own binary: it installs the process's subscriber (the
//! fmt layer the monitor's own log uses, spans included) before anything
//! logs.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use axum::http::Method;
use common::{ADMIN, Harness, VIEWER, req};

fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || SharedWriter(writer.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber in this test binary");
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_no_route_matches_is_logged_as_unmatched_never_as_itself() {
    let logs = log_buffer();
    let h = Harness::start().await;
    // Token-like values, as a user pastes them: one per path shape.
    let pasted = [
        "tok3n-Pasted-By-Mistake-9f8e7d6c5b4a3928",
        "another-Secret-Looking-Value-0123456789ab",
        "third-Secret-Looking-Value-ba9876543210",
    ];
    for (token, path) in [
        (ADMIN, format!("/api/{}", pasted[0])),
        (VIEWER, format!("/api/nope/{}", pasted[1])),
        // No credential: refused before any route runs, still unmatched.
        ("", format!("/api/{}/more", pasted[2])),
    ] {
        let token = (!token.is_empty()).then_some(token);
        let reply = h.call(req(Method::GET, &path, token, None)).await;
        assert!(
            [401, 404].contains(&reply.status.as_u16()),
            "{path}: {}",
            reply.status
        );
    }
    // A matched route is logged by its template.
    h.get("/api/services/no-such-service", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for value in pasted {
        assert!(
            !text.contains(value),
            "the log holds the pasted value {value:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(value))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        text.contains("route=<unmatched>"),
        "no `route=<unmatched>` span in the log:\n{text}"
    );
    assert!(
        text.contains("route=/api/services/{name}"),
        "the matched route's template is logged:\n{text}"
    );
}
