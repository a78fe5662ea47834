//! A signed-out session cookie stays signed out however its MAC is spelled
//! (security review, session 36, finding 5): the MAC used to be read with
//! a parser that took upper-case hex and a `+` sign, while sign-out
//! remembered the cookie's exact text, so an upper-cased copy of a
//! signed-out cookie was accepted again.

mod common;

use axum::http::{Method, Request, header};
use common::{Harness, VIEWER, req};
use serde_json::json;

fn with_cookie(method: Method, path: &str, cookie: &str) -> Request<axum::body::Body> {
    let mut r = req(method, path, None, None);
    r.headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    r
}

/// `aegis_session=…` with its last field (the MAC) upper-cased.
fn upper_mac(cookie: &str) -> String {
    let (rest, mac) = cookie.rsplit_once('.').expect("a MAC field");
    let upper = format!("{rest}.{}", mac.to_ascii_uppercase());
    assert_ne!(upper, cookie, "the MAC has letters to upper-case");
    upper
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_cookie_is_refused_in_every_spelling() {
    let h = Harness::start().await;
    let cookie = loop {
        let reply = h
            .call(req(
                Method::POST,
                "/api/session",
                None,
                Some(json!({ "token": VIEWER })),
            ))
            .await;
        reply.expect(200, None);
        let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        // A MAC of digits only (about one in 2^40) has no upper case.
        let mac = cookie.rsplit_once('.').unwrap().1;
        if mac.bytes().any(|b| b.is_ascii_alphabetic()) {
            break cookie;
        }
    };
    h.call(with_cookie(Method::GET, "/api/services", &cookie))
        .await
        .expect(200, None);

    h.call(with_cookie(Method::DELETE, "/api/session", &cookie))
        .await
        .expect(204, None);

    h.call(with_cookie(Method::GET, "/api/services", &cookie))
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.call(with_cookie(
        Method::GET,
        "/api/services",
        &upper_mac(&cookie),
    ))
    .await
    .expect(401, Some("UNAUTHORIZED"));
}
