//! A service name the registry has no record of: a typo, most likely, said
//! as one (with the names the registry has, and the close one), so that
//! `aegis status SERVICE` does not read as an empty fleet and `aegis call`
//! as an outage. A service whose records are all down is no such case: it
//! has records, and reads as the outage it is. Nor is it said that the
//! name never registered: an instance stopped cleanly deletes its record.

use aegis_sdk::{Connection, registry::RegistryReader};

/// The error for `service`, of which the registry has no record, given the
/// services it has records of (`known`, in any order, repeats allowed).
pub(crate) fn unknown_service(service: &str, known: impl IntoIterator<Item = String>) -> String {
    format!(
        "no instance of {service} is registered: the registry holds no record of that name{}",
        names_and_close_one(
            service,
            known,
            "known services",
            "it has no services at all"
        )
    )
}

/// What follows a name `typed` that is none of `names` (any order, repeats
/// allowed): ` (LABEL: a, b); did you mean b?` (the question only when one
/// name is close), or ` (NONE)` when there are no names at all.
pub(crate) fn names_and_close_one(
    typed: &str,
    names: impl IntoIterator<Item = String>,
    label: &str,
    none: &str,
) -> String {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return format!(" ({none})");
    }
    let mut text = format!(" ({label}: {})", names.join(", "));
    if let Some(close) = closest(typed, &names) {
        text.push_str(&format!("; did you mean {close}?"));
    }
    text
}

/// The services the registry has records of, when there are some and
/// none of them is `service`'s; `None` when `service` has a record (or the
/// registry cannot be read: nothing is claimed then).
pub(crate) async fn unknown_to_registry(conn: &Connection, service: &str) -> Option<String> {
    let reader = RegistryReader::start(conn).await.ok()?;
    let all = reader.all();
    if all.iter().any(|i| i.service_name == service) {
        return None;
    }
    Some(unknown_service(
        service,
        all.into_iter().map(|i| i.service_name),
    ))
}

/// The one known name `typed` is likely a slip of: `order` (or `orders`)
/// for `order-service`, or a name within two edits (one for short names).
pub(crate) fn closest<'a>(typed: &str, known: &'a [String]) -> Option<&'a str> {
    let singular = typed.strip_suffix('s').filter(|s| !s.is_empty());
    for stem in std::iter::once(typed).chain(singular) {
        let suffixed = format!("{stem}-service");
        if let Some(k) = known.iter().find(|k| **k == suffixed) {
            return Some(k);
        }
    }
    let prefixed: Vec<&String> = known.iter().filter(|k| k.starts_with(typed)).collect();
    if let [only] = prefixed.as_slice()
        && !typed.is_empty()
    {
        return Some(only);
    }
    let bound = if typed.chars().count() <= 4 { 1 } else { 2 };
    let mut near: Vec<(usize, &String)> = known
        .iter()
        .map(|k| (distance(typed, k), k))
        .filter(|(d, _)| *d <= bound)
        .collect();
    near.sort();
    match near.as_slice() {
        [(d, k), rest @ ..] if rest.first().is_none_or(|(d2, _)| d2 > d) => Some(k),
        _ => None,
    }
}

/// The edit distance of `a` and `b`: insertions, deletions, substitutions
/// and swaps of two neighbours, each one edit (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["order-service", "pricing-service", "risk-service"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_slip_is_matched_to_the_one_name_it_is_close_to() {
        let known = names();
        assert_eq!(closest("order", &known), Some("order-service"));
        assert_eq!(closest("orders", &known), Some("order-service"));
        assert_eq!(closest("s", &known), None);
        assert_eq!(closest("ordr-service", &known), Some("order-service"));
        assert_eq!(closest("pricnig-service", &known), Some("pricing-service"));
        assert_eq!(closest("pric", &known), Some("pricing-service"));
        assert_eq!(closest("ledger", &known), None);
        assert_eq!(closest("x", &known), None);
    }

    #[test]
    fn the_error_lists_the_known_names() {
        assert_eq!(
            unknown_service("ordr-service", names().into_iter().chain(names())),
            "no instance of ordr-service is registered: the registry holds no record of \
             that name (known services: order-service, pricing-service, risk-service); did you \
             mean order-service?"
        );
        assert_eq!(
            unknown_service("ledger", Vec::new()),
            "no instance of ledger is registered: the registry holds no record of that \
             name (it has no services at all)"
        );
    }
}
