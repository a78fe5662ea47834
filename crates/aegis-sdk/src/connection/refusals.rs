//! The permission violations the server reports on a connection's clients
//! (`-ERR 'Permissions Violation for Publish to "..."'`), kept so that an
//! operation that failed for want of a permission can say so: the server
//! answers a refused publish with nothing, so a request, a JetStream
//! publish or a registry write times out, and a refused subscription
//! fails nothing at all.

use std::{collections::VecDeque, sync::Mutex, time::Instant};

/// How many refusals are kept (the newest).
const KEPT: usize = 32;

/// The newest permission violations, each with when it was heard.
#[derive(Default)]
pub(crate) struct Refusals(Mutex<VecDeque<(Instant, String)>>);

impl Refusals {
    /// Keeps `text`, a server's permission violation, heard now.
    pub(super) fn record(&self, text: String) {
        let Ok(mut kept) = self.0.lock() else { return };
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((Instant::now(), text));
    }

    /// The newest refusal heard.
    pub(super) fn last(&self) -> Option<String> {
        self.0.lock().ok()?.back().map(|(_, text)| text.clone())
    }

    /// The newest refusal heard at or after `since` whose subject `refused`
    /// accepts.
    pub(crate) fn naming(&self, since: Instant, refused: impl Fn(&str) -> bool) -> Option<String> {
        let kept = self.0.lock().ok()?;
        kept.iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .find(|(_, text)| subject_of(text).is_some_and(&refused))
            .map(|(_, text)| text.clone())
    }
}

/// An operation that failed because the server refused this user its
/// subject: the server's words, and what to grant.
#[derive(Debug, thiserror::Error)]
#[error("NATS refused this user ({violation}): grant the user that permission")]
pub(crate) struct Refused {
    /// The server's text, e.g. `Permissions Violation for Publish to "..."`.
    pub(crate) violation: String,
}

/// The subject a permission violation names: the first quoted text after
/// ` to ` (`Permissions Violation for Subscription to "rpc.a.>" using
/// queue "rpc.a"` names `rpc.a.>`).
fn subject_of(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once(" to \"")?;
    rest.split_once('"').map(|(subject, _)| subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_found_by_its_subject_and_time() {
        let refusals = Refusals::default();
        let before = Instant::now();
        refusals.record(
            r#"Permissions Violation for Subscription to "rpc.fx-service.fx-1.convert" using queue "rpc.fx-service.fx-1""#
                .to_owned(),
        );
        refusals.record(r#"Permissions Violation for Publish to "$KV.r.k""#.to_owned());
        let sub = refusals.naming(before, |s| s.starts_with("rpc.fx-service."));
        assert!(sub.is_some_and(|t| t.contains("Subscription")));
        assert!(refusals.naming(before, |s| s == "$KV.r.k").is_some());
        assert!(
            refusals.naming(before, |s| s == "rpc.fx-service").is_none(),
            "the queue is not the subject"
        );
        assert!(
            refusals
                .naming(Instant::now(), |s| s == "$KV.r.k")
                .is_none(),
            "heard before"
        );
        assert_eq!(
            refusals.last().as_deref(),
            Some(r#"Permissions Violation for Publish to "$KV.r.k""#)
        );
    }

    #[test]
    fn only_the_newest_are_kept() {
        let refusals = Refusals::default();
        let before = Instant::now();
        for i in 0..KEPT + 5 {
            refusals.record(format!(r#"Permissions Violation for Publish to "s.{i}""#));
        }
        assert!(refusals.naming(before, |s| s == "s.0").is_none());
        assert!(
            refusals
                .naming(before, |s| s == format!("s.{}", KEPT + 4))
                .is_some()
        );
    }
}
