//! Event subjects (`events.{domain}.{action}`) and the patterns subscribers
//! use to select them.
//!
//! [`EventSubject`] is one concrete subject with validated domain and action.
//! [`EventPattern`] is a subscription filter over `{domain}.{action}` with
//! NATS wildcards (`*` for one token, `>` as the last token for the rest); the
//! SDK turns it into a stream filter with
//! [`event_filter`](crate::subjects::event_filter) and into a durable
//! consumer name with [`EventPattern::durable_suffix`].

use std::fmt;
use std::str::FromStr;

use crate::names::{NameError, validate_event_action, validate_event_domain};

/// The first token of every event subject.
const PREFIX: &str = "events";

/// A concrete event subject, `events.{domain}.{action}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventSubject {
    /// The domain, e.g. `order`.
    pub domain: String,
    /// The action, e.g. `created`.
    pub action: String,
}

impl EventSubject {
    /// Builds a subject from a domain and an action, validating both.
    ///
    /// # Errors
    /// Returns the [`NameError`] of the first invalid part.
    pub fn new(domain: impl Into<String>, action: impl Into<String>) -> Result<Self, NameError> {
        let (domain, action) = (domain.into(), action.into());
        validate_event_domain(&domain)?;
        validate_event_action(&action)?;
        Ok(Self { domain, action })
    }

    /// Parses `events.{domain}.{action}`: exactly three tokens, the first
    /// being `events`, the others valid names.
    ///
    /// # Errors
    /// [`NameError::InvalidPattern`] when the shape is wrong, otherwise the
    /// name error of the domain or action.
    pub fn parse(subject: &str) -> Result<Self, NameError> {
        let mut tokens = subject.split('.');
        let (Some(prefix), Some(domain), Some(action), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(NameError::InvalidPattern {
                reason: format!("event subject {subject:?} must be events.{{domain}}.{{action}}"),
            });
        };
        if prefix != PREFIX {
            return Err(NameError::InvalidPattern {
                reason: format!("event subject {subject:?} must start with \"events.\""),
            });
        }
        Self::new(domain, action)
    }

    /// The full subject, `events.{domain}.{action}`.
    pub fn subject(&self) -> String {
        format!("{PREFIX}.{}.{}", self.domain, self.action)
    }
}

impl fmt::Display for EventSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.domain, self.action)
    }
}

impl FromStr for EventSubject {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A subscription pattern over `{domain}.{action}` (without the `events.`
/// prefix).
///
/// Each token is a valid domain/action name, `*` (any one token) or `>`
/// (the rest; only as the last token). A pattern has two tokens, or is `>`
/// alone; `order.>` is accepted and means the same as `order.*` since event
/// subjects have exactly one action token. Patterns that could match nothing
/// (`a.b.c`, `a.b.>`) are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventPattern(String);

impl EventPattern {
    /// Parses a pattern; a leading `events.` is accepted and stripped.
    ///
    /// # Errors
    /// [`NameError::InvalidPattern`] for structural problems (empty or too
    /// many tokens, misplaced `>`, a wildcard inside a token); otherwise the
    /// name error of an invalid domain or action token.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let body = s.strip_prefix("events.").unwrap_or(s);
        let invalid = |reason: String| NameError::InvalidPattern { reason };
        if body.is_empty() {
            return Err(invalid(format!("{s:?} is empty")));
        }
        let tokens: Vec<&str> = body.split('.').collect();
        if tokens.len() > 2 {
            return Err(invalid(format!(
                "{s:?} has {} tokens; expected {{domain}}.{{action}}",
                tokens.len()
            )));
        }
        let last = tokens.len() - 1;
        for (i, token) in tokens.iter().enumerate() {
            match *token {
                "" => return Err(invalid(format!("{s:?} has an empty token"))),
                "*" => {}
                ">" if i == last => {}
                ">" => {
                    return Err(invalid(format!(
                        "{s:?}: \">\" is only allowed as the last token"
                    )));
                }
                t if t.contains(['*', '>']) => {
                    return Err(invalid(format!(
                        "{s:?}: wildcards must be whole tokens, found {t:?}"
                    )));
                }
                t if i == 0 => validate_event_domain(t)?,
                t => validate_event_action(t)?,
            }
        }
        if tokens.len() == 1 && tokens[0] != ">" {
            return Err(invalid(format!(
                "{s:?} has one token; expected {{domain}}.{{action}} or \">\""
            )));
        }
        Ok(Self(body.to_owned()))
    }

    /// The pattern without the `events.` prefix, e.g. `order.*`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `subject` is selected by this pattern (same semantics as the
    /// NATS subject filter `events.{pattern}`).
    pub fn matches(&self, subject: &EventSubject) -> bool {
        let mut tokens = self.0.split('.');
        let parts = [subject.domain.as_str(), subject.action.as_str()];
        for part in parts {
            match tokens.next() {
                Some(">") => return true,
                Some("*") => {}
                Some(t) if t == part => {}
                _ => return false,
            }
        }
        tokens.next().is_none()
    }

    /// A token safe inside a JetStream consumer name: `.` becomes `_`, `*`
    /// becomes `any`, `>` becomes `all` (e.g. `order.*` → `order_any`).
    ///
    /// The mapping is not injective (`any.created` and `*.created` both give
    /// `any_created`); callers that subscribe such look-alike patterns in
    /// one service should pick explicit durable names.
    pub fn durable_suffix(&self) -> String {
        self.0
            .split('.')
            .map(|t| match t {
                "*" => "any",
                ">" => "all",
                t => t,
            })
            .collect::<Vec<_>>()
            .join("_")
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventPattern {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NameKind;

    fn subj(s: &str) -> EventSubject {
        EventSubject::parse(s).unwrap()
    }

    #[test]
    fn subject_round_trip() {
        let s = subj("events.order.created");
        assert_eq!(s.domain, "order");
        assert_eq!(s.action, "created");
        assert_eq!(s.subject(), "events.order.created");
        assert_eq!(s.to_string(), "events.order.created");
        assert_eq!(
            "events.price-tick.updated_v2"
                .parse::<EventSubject>()
                .unwrap()
                .action,
            "updated_v2"
        );
        assert_eq!(
            EventSubject::new("order", "filled").unwrap(),
            subj("events.order.filled")
        );
    }

    #[test]
    fn subject_rejections() {
        for bad in [
            "",
            "events",
            "events.order",
            "events.order.created.x",
            "evts.order.created",
            "events..created",
            ".order.created",
        ] {
            let err = EventSubject::parse(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    NameError::InvalidPattern { .. } | NameError::Empty { .. }
                ),
                "{bad:?}: {err:?}"
            );
        }
        assert!(matches!(
            EventSubject::parse("events.Order.created"),
            Err(NameError::InvalidStart {
                kind: NameKind::Domain,
                ch: 'O'
            })
        ));
        assert!(matches!(
            EventSubject::parse("events.order.*"),
            Err(NameError::InvalidStart {
                kind: NameKind::Action,
                ch: '*'
            })
        ));
        assert!(matches!(
            EventSubject::parse("events.order."),
            Err(NameError::Empty {
                kind: NameKind::Action
            })
        ));
    }

    #[test]
    fn valid_patterns() {
        for ok in [
            "order.created",
            "order.*",
            "*.created",
            "*.*",
            "order.>",
            ">",
            "*.>",
        ] {
            let p = EventPattern::parse(ok).unwrap();
            assert_eq!(p.as_str(), ok);
            assert_eq!(p.to_string(), ok);
        }
        let p: EventPattern = "events.order.*".parse().unwrap();
        assert_eq!(p.as_str(), "order.*");
        assert_eq!(EventPattern::parse("events.>").unwrap().as_str(), ">");
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "",
            "events.",
            "order",
            "order..x",
            ".x",
            "x.",
            ">.created",
            "order.cre*ated",
            "or>der.x",
            "a.b.c",
            "a.b.>",
            "**.x",
        ] {
            assert!(
                matches!(
                    EventPattern::parse(bad),
                    Err(NameError::InvalidPattern { .. })
                ),
                "{bad:?} -> {:?}",
                EventPattern::parse(bad)
            );
        }
        assert_eq!(
            EventPattern::parse("Order.created"),
            Err(NameError::InvalidStart {
                kind: NameKind::Domain,
                ch: 'O'
            })
        );
        assert!(matches!(
            EventPattern::parse("order.Created"),
            Err(NameError::InvalidStart {
                kind: NameKind::Action,
                ch: 'C'
            })
        ));
        assert!(matches!(
            EventPattern::parse("order.a b"),
            Err(NameError::InvalidChar {
                kind: NameKind::Action,
                ch: ' ',
                position: 1
            })
        ));
    }

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("order.created", "events.order.created", true),
            ("order.created", "events.order.filled", false),
            ("order.created", "events.orders.created", false),
            ("order.*", "events.order.created", true),
            ("order.*", "events.order.filled", true),
            ("order.*", "events.price.created", false),
            ("*.created", "events.order.created", true),
            ("*.created", "events.price.created", true),
            ("*.created", "events.order.filled", false),
            ("*.*", "events.any.thing", true),
            ("order.>", "events.order.created", true),
            ("order.>", "events.price.created", false),
            ("*.>", "events.price.tick", true),
            (">", "events.order.created", true),
            (">", "events.x.y", true),
        ];
        for (pattern, subject, expected) in table {
            let p = EventPattern::parse(pattern).unwrap();
            assert_eq!(
                p.matches(&subj(subject)),
                *expected,
                "{pattern} vs {subject}"
            );
        }
    }

    #[test]
    fn durable_suffixes() {
        let cases = [
            ("order.created", "order_created"),
            ("order.*", "order_any"),
            ("*.created", "any_created"),
            ("*.*", "any_any"),
            ("order.>", "order_all"),
            (">", "all"),
        ];
        for (pattern, suffix) in cases {
            let s = EventPattern::parse(pattern).unwrap().durable_suffix();
            assert_eq!(s, suffix);
            assert!(!s.contains(['.', '*', '>', ' ']));
        }
    }
}
