//! The permission violations the server reports on a connection's clients
//! (`-ERR 'Permissions Violation for Publish to "..."'`), kept so that an
//! operation that failed for want of a permission can say so: the server
//! answers a refused publish with nothing, so a request, a JetStream
//! publish or a registry write times out, and a refused subscription
//! fails nothing at all.

use std::{collections::VecDeque, sync::Mutex, time::Instant};

/// How many refusals are kept (the newest).
const KEPT: usize = 32;

/// What the server refused: a permission violation of a publish and one of
/// a subscription may name the same subject (a service's user may hear
/// `rpc.{service}.>` and not call it), and only the one asked about counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusing {
    /// `Permissions Violation for Publish to "..."`.
    Publish,
    /// `Permissions Violation for Subscription to "..."` (also what the
    /// server says of a subscription a permission reload revokes).
    Subscription,
}

/// The newest permission violations, each with when it was heard.
#[derive(Default)]
pub(crate) struct Refusals {
    kept: Mutex<VecDeque<(Instant, String)>>,
    /// Woken on each refusal kept, for [`Refusals::heard`].
    news: tokio::sync::Notify,
}

impl Refusals {
    /// Keeps `text`, a server's permission violation, heard now.
    pub(super) fn record(&self, text: String) {
        {
            let Ok(mut kept) = self.kept.lock() else {
                return;
            };
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back((Instant::now(), text));
        }
        self.news.notify_waiters();
    }

    /// The newest refusal heard.
    pub(super) fn last(&self) -> Option<String> {
        self.kept.lock().ok()?.back().map(|(_, text)| text.clone())
    }

    /// The newest refusal of a `refusing` heard at or after `since` whose
    /// subject `refused` accepts.
    pub(crate) fn naming(
        &self,
        since: Instant,
        refusing: Refusing,
        refused: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let kept = self.kept.lock().ok()?;
        kept.iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .find(|(_, text)| subject_of(text, refusing).is_some_and(&refused))
            .map(|(_, text)| text.clone())
    }

    /// Waits for the refusal [`naming`](Self::naming) would find, and
    /// returns it. The refusals come in the client's event order: one
    /// heard means those the server sent before it are kept too.
    pub(crate) async fn heard(
        &self,
        since: Instant,
        refusing: Refusing,
        refused: impl Fn(&str) -> bool,
    ) -> String {
        loop {
            // Listening before looking: a refusal kept in between wakes it.
            let news = self.news.notified();
            tokio::pin!(news);
            news.as_mut().enable();
            if let Some(text) = self.naming(since, refusing, &refused) {
                return text;
            }
            news.await;
        }
    }

    /// Runs `op` unless the server refuses this user, meanwhile, a subject
    /// of a `refusing` that `refused` accepts: the refusal, once heard,
    /// ends it. The server answers a refused publish or request with
    /// nothing, so `op` would wait for its own timeout. A refusal heard by
    /// the time `op` ends wins over its outcome.
    pub(crate) async fn unless_refused<T>(
        &self,
        refusing: Refusing,
        refused: impl Fn(&str) -> bool,
        op: impl std::future::Future<Output = T>,
    ) -> Result<T, Refused> {
        let asked = Instant::now();
        tokio::select! {
            biased;
            violation = self.heard(asked, refusing, refused) => Err(Refused { violation }),
            done = op => Ok(done),
        }
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

/// The server's words when `error`, or one of its causes, is a [`Refused`].
pub(crate) fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.violation.clone());
        }
        cause = e.source();
    }
    None
}

/// The subject a permission violation of a `refusing` names: the quoted
/// text after `for Publish to` or `for Subscription to`
/// (`Permissions Violation for Subscription to "rpc.a.>" using queue
/// "rpc.a"` names `rpc.a.>`); none for a violation of the other kind.
fn subject_of(text: &str, refusing: Refusing) -> Option<&str> {
    let marker = match refusing {
        Refusing::Publish => "for Publish to \"",
        Refusing::Subscription => "for Subscription to \"",
    };
    let (_, rest) = text.split_once(marker)?;
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
        refusals
            .record(r#"Permissions Violation for Publish to "rpc.fx-service.convert""#.to_owned());
        let sub = refusals.naming(before, Refusing::Subscription, |s| {
            s.starts_with("rpc.fx-service.")
        });
        assert!(
            sub.is_some_and(|t| t.contains("Subscription")),
            "not the publish"
        );
        assert!(
            refusals
                .naming(before, Refusing::Publish, |s| s == "$KV.r.k")
                .is_some()
        );
        assert!(
            refusals
                .naming(before, Refusing::Subscription, |s| s == "$KV.r.k")
                .is_none(),
            "a publish is not a subscription"
        );
        assert!(
            refusals
                .naming(before, Refusing::Subscription, |s| s == "rpc.fx-service")
                .is_none(),
            "the queue is not the subject"
        );
        assert!(
            refusals
                .naming(Instant::now(), Refusing::Publish, |s| s == "$KV.r.k")
                .is_none(),
            "heard before"
        );
        assert_eq!(
            refusals.last().as_deref(),
            Some(r#"Permissions Violation for Publish to "rpc.fx-service.convert""#)
        );
    }

    #[test]
    fn only_the_newest_are_kept() {
        let refusals = Refusals::default();
        let before = Instant::now();
        for i in 0..KEPT + 5 {
            refusals.record(format!(r#"Permissions Violation for Publish to "s.{i}""#));
        }
        assert!(
            refusals
                .naming(before, Refusing::Publish, |s| s == "s.0")
                .is_none()
        );
        assert!(
            refusals
                .naming(before, Refusing::Publish, |s| s
                    == format!("s.{}", KEPT + 4))
                .is_some()
        );
    }

    #[tokio::test]
    async fn heard_waits_for_the_refusal_and_finds_one_kept_before() {
        let refusals = std::sync::Arc::new(Refusals::default());
        let before = Instant::now();
        let ping = |s: &str| s == "$SRV.PING.a.1";
        let waiting = tokio::spawn({
            let refusals = refusals.clone();
            async move { refusals.heard(before, Refusing::Publish, ping).await }
        });
        tokio::task::yield_now().await;
        refusals.record(r#"Permissions Violation for Subscription to "$SRV.PING.a.1""#.to_owned());
        refusals.record(r#"Permissions Violation for Publish to "$SRV.PING.a.1""#.to_owned());
        let text = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert!(text.contains("Publish"), "{text}");
        // Kept already: no wait.
        let again = refusals.heard(before, Refusing::Publish, ping);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), again)
                .await
                .is_ok()
        );
    }
}
