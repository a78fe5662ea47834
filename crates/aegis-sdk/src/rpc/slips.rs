//! What a call that found nothing to send to says about a likely slip in
//! its names: the registered services with a name close to one the
//! registry holds no record of, and the methods a service's records list.
//! Worked out only on those errors, never on a call that is sent.

use std::time::Duration;

use futures::TryStreamExt;
use tokio::time::Instant;

use aegis_contracts::{ServiceInstance, subjects};

use super::RpcError;
use crate::Connection;

/// How long looking up the registered names may hold up an error that is
/// otherwise told at once.
const NAMES_LIMIT: Duration = Duration::from_millis(500);

/// At most this many names are offered.
const MAX_SIMILAR: usize = 3;

/// The methods `records` list among their endpoints, sorted, each once.
pub(super) fn listed_methods(records: &[ServiceInstance]) -> Vec<String> {
    let mut methods: Vec<String> = records
        .iter()
        .filter_map(|r| r.metadata.get("endpoints")?.as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

/// `err` with, when it is a [`RpcError::NoInstances`] of a service the
/// registry holds no record of, the registered services whose name is
/// close to it (looked up within `deadline` and [`NAMES_LIMIT`]).
pub(super) async fn with_similar(conn: &Connection, err: RpcError, deadline: Instant) -> RpcError {
    match err {
        RpcError::NoInstances {
            service,
            records: 0,
            similar,
        } if similar.is_empty() => {
            let deadline = deadline.min(Instant::now() + NAMES_LIMIT);
            let names = tokio::time::timeout_at(deadline, registered_services(conn))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            let similar = similar_names(&service, &names);
            RpcError::NoInstances {
                service,
                records: 0,
                similar,
            }
        }
        other => other,
    }
}

/// `err` with, when it is a [`RpcError::NoLeader`] of a service the
/// registry bucket holds no key of, the registered services whose name is
/// close to it (looked up within [`NAMES_LIMIT`]: the call's deadline has
/// passed). A service with a key, even one of a stopped instance, is not
/// told as unknown.
pub(super) async fn no_leader_named(conn: &Connection, err: RpcError) -> RpcError {
    match err {
        RpcError::NoLeader {
            service,
            group,
            waited,
            similar: None,
        } => {
            let names = tokio::time::timeout(NAMES_LIMIT, registered_services(conn))
                .await
                .ok()
                .flatten();
            let similar = names
                .filter(|names| !names.contains(&service))
                .map(|names| similar_names(&service, &names));
            RpcError::NoLeader {
                service,
                group,
                waited,
                similar,
            }
        }
        other => other,
    }
}

/// The service names the registry bucket holds keys of (one stream info
/// request with a subjects filter; none if the bucket is missing). Keys
/// whose last entry deleted them count too: a service that stopped a
/// moment ago is still a name worth offering.
async fn registered_services(conn: &Connection) -> Option<Vec<String>> {
    let stream = conn
        .jetstream()
        .get_stream_no_info(format!("KV_{}", subjects::REGISTRY_BUCKET))
        .await
        .ok()?;
    let prefix = format!("$KV.{}.", subjects::REGISTRY_BUCKET);
    let filter = format!("{prefix}{}", subjects::registry_all_filter());
    let mut subjects_seen = stream.info_with_subjects(filter).await.ok()?;
    let mut names = Vec::new();
    while let Some((subject, _)) = subjects_seen.try_next().await.ok()? {
        if let Some((service, _)) = subject
            .strip_prefix(&prefix)
            .and_then(subjects::parse_registry_key)
        {
            names.push(service);
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The names in `known` that `typed` is likely a slip of, closest first:
/// `order-service` for `order`, a name `typed` is the start of, or one
/// within two edits (one for names of four letters or fewer).
pub(super) fn similar_names(typed: &str, known: &[String]) -> Vec<String> {
    let suffixed = format!("{typed}-service");
    let bound = if typed.chars().count() <= 4 { 1 } else { 2 };
    let mut near: Vec<(usize, &String)> = known
        .iter()
        .filter(|k| *k != typed)
        .filter_map(|k| {
            if *k == suffixed || (!typed.is_empty() && k.starts_with(typed)) {
                return Some((0, k));
            }
            let d = distance(typed, k);
            (d <= bound).then_some((d, k))
        })
        .collect();
    near.sort();
    near.into_iter()
        .take(MAX_SIMILAR)
        .map(|(_, k)| k.clone())
        .collect()
}

/// The edit distance of `a` and `b`: insertions, deletions, substitutions
/// and swaps of two neighbours, each one edit (optimal string alignment),
/// as the `aegis` CLI's hints count it.
fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["order-service", "pricing-service", "quote-service"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_slip_is_matched_to_the_names_it_is_close_to() {
        let known = names();
        assert_eq!(similar_names("qoute-service", &known), ["quote-service"]);
        assert_eq!(similar_names("order", &known), ["order-service"]);
        assert_eq!(similar_names("pric", &known), ["pricing-service"]);
        assert_eq!(similar_names("ordr-service", &known), ["order-service"]);
        assert!(similar_names("risk-service", &known).is_empty());
        assert!(similar_names("quote-service", &known).is_empty());
    }

    #[test]
    fn distance_counts_a_swap_as_one_edit() {
        assert_eq!(distance("qoute", "quote"), 1);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
