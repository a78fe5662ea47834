//! Session cookies: the UI's sign-in exchanges a token for an `HttpOnly`,
//! `SameSite=Strict` cookie so the browser (including `EventSource`, which
//! cannot send an `Authorization` header) stays signed in without scripts
//! ever holding the token.
//!
//! The cookie is stateless: `v2.{role}.{hex name}.{expiry}.{fingerprint}.{nonce}.{mac}`
//! signed with HMAC-SHA256. The random nonce makes every sign-in a session
//! of its own, so signing one out leaves the others alone. The fingerprint is the first 8 bytes of the
//! token's digest; a cookie is accepted only while a token with that
//! fingerprint, role and name is still configured, so removing a token
//! revokes its sessions. Replicas sharing `session_secret` accept each
//! other's cookies.
//!
//! Signing out revokes the cookie on the server too, not only in the
//! browser: the signer keeps the digests of signed-out cookies until they
//! would have expired anyway, so a copied cookie is refused after sign-out.
//! The list is in memory, per process: with several replicas behind one
//! load balancer, a signed-out cookie stays valid on the others until it
//! expires (see `docs/security.md`, "The monitor's HTTP side").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Principal, Role,
    tokens::{TokenEntry, TokenSet, hex, unhex},
};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "aegis_session";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks session cookies.
#[derive(Clone)]
pub(crate) struct SessionSigner {
    key: [u8; 32],
    ttl: Duration,
    /// Digests of signed-out cookies and when each would have expired
    /// (Unix seconds); entries are dropped once past it.
    revoked: Arc<Mutex<HashMap<[u8; 32], i64>>>,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SessionSigner {
    /// A signer keyed by `secret`, or by a random key when none is given.
    pub(crate) fn new(secret: Option<&str>, ttl: Duration) -> Self {
        let key = match secret {
            Some(s) => Sha256::digest(format!("aegis-session-v1\0{s}").as_bytes()).into(),
            None => rand::random::<[u8; 32]>(),
        };
        Self {
            key,
            ttl,
            revoked: Arc::default(),
        }
    }

    fn revoked(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC key");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A cookie value for `entry`, valid until `now + ttl`, and its expiry.
    pub(crate) fn issue(&self, entry: &TokenEntry, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires =
            now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(12));
        let payload = format!(
            "v2.{}.{}.{}.{}.{}",
            entry.principal.role.as_str(),
            hex(entry.principal.name.as_bytes()),
            expires.timestamp(),
            hex(&entry.digest[..8]),
            hex(&rand::random::<[u8; 8]>()),
        );
        let mac = hex(&self.mac(&payload));
        (format!("{payload}.{mac}"), expires)
    }

    /// The principal a cookie value stands for, if it is genuine, unexpired,
    /// not signed out, and its token is still configured.
    pub(crate) fn verify(
        &self,
        value: &str,
        tokens: &TokenSet,
        now: DateTime<Utc>,
    ) -> Option<Principal> {
        self.verify_until(value, tokens, now).map(|(p, _)| p)
    }

    /// Signs `value` out: it is refused from now on, here. Only a cookie
    /// that still verifies is remembered, so junk cannot grow the list.
    pub(crate) fn revoke(&self, value: &str, tokens: &TokenSet, now: DateTime<Utc>) -> bool {
        let Some((_, expires)) = self.verify_until(value, tokens, now) else {
            return false;
        };
        let mut revoked = self.revoked();
        revoked.retain(|_, exp| *exp > now.timestamp());
        revoked.insert(Sha256::digest(value.as_bytes()).into(), expires);
        true
    }

    /// As [`verify`](Self::verify), with the cookie's expiry (Unix seconds).
    fn verify_until(
        &self,
        value: &str,
        tokens: &TokenSet,
        now: DateTime<Utc>,
    ) -> Option<(Principal, i64)> {
        let (payload, mac) = value.rsplit_once('.')?;
        let mac = unhex(mac)?;
        if !bool::from(self.mac(payload).ct_eq(&mac)) {
            return None;
        }
        let mut parts = payload.split('.');
        let (Some("v2"), Some(role), Some(name), Some(exp), Some(fp), Some(_nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let role = Role::parse(role)?;
        let name = String::from_utf8(unhex(name)?).ok()?;
        let exp: i64 = exp.parse().ok()?;
        if now.timestamp() >= exp {
            return None;
        }
        let fp = unhex(fp)?;
        if self
            .revoked()
            .contains_key(&<[u8; 32]>::from(Sha256::digest(value.as_bytes())))
        {
            return None;
        }
        tokens
            .entries()
            .iter()
            .find(|e| {
                e.principal.role == role && e.principal.name == name && e.digest[..8] == fp[..]
            })
            .map(|e| (e.principal.clone(), exp))
    }

    /// `Set-Cookie` value that stores `value`; `secure` adds `Secure`.
    pub(crate) fn set_cookie(&self, value: &str, secure: bool) -> String {
        format!(
            "{COOKIE_NAME}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            self.ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` value that removes the cookie.
    pub(crate) fn clear_cookie(&self, secure: bool) -> String {
        format!(
            "{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The session cookie's value in a `Cookie` header, if any.
pub(crate) fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE_NAME && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TokenSet {
        let mut t = TokenSet::default();
        t.add_plain(Role::Viewer, "viewer-token-0123456789")
            .unwrap();
        t.add_plain(Role::Admin, "admin-token-0123456789").unwrap();
        t
    }

    #[test]
    fn issued_cookies_verify_until_expiry() {
        let t = tokens();
        let signer = SessionSigner::new(Some("s"), Duration::from_secs(60));
        let entry = t.verify("viewer-token-0123456789").unwrap().clone();
        let now = Utc::now();
        let (value, expires) = signer.issue(&entry, now);
        assert!(!value.contains("viewer-token"));
        let p = signer.verify(&value, &t, now).unwrap();
        assert_eq!((p.role, p.name.as_str()), (Role::Viewer, "viewer"));
        assert!(signer.verify(&value, &t, expires).is_none(), "expired");
        // Another replica with the same secret accepts it; another secret does not.
        let same = SessionSigner::new(Some("s"), Duration::from_secs(60));
        assert!(same.verify(&value, &t, now).is_some());
        let other = SessionSigner::new(Some("x"), Duration::from_secs(60));
        assert!(other.verify(&value, &t, now).is_none());
    }

    #[test]
    fn tampering_and_revocation_are_rejected() {
        let t = tokens();
        let signer = SessionSigner::new(None, Duration::from_secs(60));
        let entry = t.verify("viewer-token-0123456789").unwrap().clone();
        let now = Utc::now();
        let (value, _) = signer.issue(&entry, now);
        let forged = value.replacen("v2.viewer.", "v2.admin.", 1);
        assert!(signer.verify(&forged, &t, now).is_none());
        assert!(signer.verify("garbage", &t, now).is_none());
        assert!(signer.verify("", &t, now).is_none());
        let mut revoked = TokenSet::default();
        revoked
            .add_plain(Role::Viewer, "a-new-viewer-token-xyz")
            .unwrap();
        assert!(signer.verify(&value, &revoked, now).is_none());
        assert!(
            signer
                .set_cookie(&value, true)
                .contains("HttpOnly; SameSite=Strict; Secure")
        );
        assert!(!signer.set_cookie(&value, false).contains("Secure"));
    }

    #[test]
    fn a_signed_out_cookie_is_refused_and_others_are_not() {
        let t = tokens();
        let signer = SessionSigner::new(Some("s"), Duration::from_secs(60));
        let entry = t.verify("viewer-token-0123456789").unwrap().clone();
        let now = Utc::now();
        // Two sign-ins in the same second are two sessions.
        let (first, _) = signer.issue(&entry, now);
        let (second, _) = signer.issue(&entry, now);
        assert_ne!(first, second);
        assert!(!signer.revoke("junk", &t, now), "junk is not remembered");
        assert!(signer.revoke(&first, &t, now));
        assert!(signer.verify(&first, &t, now).is_none());
        assert!(signer.verify(&second, &t, now).is_some());
        // Expired revocations are dropped on the next sign-out.
        let later = now + chrono::Duration::seconds(120);
        let (third, _) = signer.issue(&entry, later);
        assert!(signer.revoke(&third, &t, later));
        assert_eq!(signer.revoked().len(), 1);
    }

    /// A cookie has one spelling: its MAC (the one field the MAC does not
    /// cover) is accepted only as lower-case hex, so neither an upper-cased
    /// copy nor a `+`-signed one gets past a sign-out, nor is accepted at all.
    #[test]
    fn only_the_issued_spelling_of_a_cookie_is_accepted() {
        let t = tokens();
        let signer = SessionSigner::new(Some("s"), Duration::from_secs(60));
        let entry = t.verify("viewer-token-0123456789").unwrap().clone();
        let now = Utc::now();
        // A cookie whose MAC has a letter, and a byte below 0x10 (its hex
        // pair starts with `0`, which `+` used to stand in for).
        let (value, zero_pair) = (0..1000)
            .find_map(|_| {
                let (value, _) = signer.issue(&entry, now);
                let mac = value.rsplit_once('.').unwrap().1.to_owned();
                let pair = (0..mac.len())
                    .step_by(2)
                    .find(|&i| mac.as_bytes()[i] == b'0')?;
                mac.bytes()
                    .any(|b| b.is_ascii_alphabetic())
                    .then(|| (value.clone(), value.len() - mac.len() + pair))
            })
            .expect("a MAC with a letter and a byte below 0x10");
        let (payload, mac) = value.rsplit_once('.').unwrap();
        let upper = format!("{payload}.{}", mac.to_ascii_uppercase());
        let mut plus = value.clone();
        plus.replace_range(zero_pair..=zero_pair, "+");
        assert!(signer.verify(&value, &t, now).is_some());
        for spelling in [&upper, &plus] {
            assert!(signer.verify(spelling, &t, now).is_none(), "{spelling}");
            assert!(!signer.revoke(spelling, &t, now), "{spelling}");
        }
        assert!(signer.revoke(&value, &t, now));
        for spelling in [&value, &upper, &plus] {
            assert!(signer.verify(spelling, &t, now).is_none(), "{spelling}");
        }
    }

    #[test]
    fn finds_the_cookie_among_others() {
        assert_eq!(cookie_value("a=1; aegis_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("aegis_session="), None);
        assert_eq!(cookie_value("other=1"), None);
    }
}
