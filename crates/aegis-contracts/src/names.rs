//! Name validation for everything that ends up in a NATS subject or KV key.
//!
//! Service names, instance ids, method, group, command, event domain and
//! action names are all embedded in subjects (`rpc.{service}.{method}`,
//! `events.{domain}.{action}`, ...) and KV keys, so a dot, a wildcard or a
//! space in one of them would silently change routing. Every validator here
//! is a hand-written check of one documented pattern; the error says which
//! rule failed and carries the offending character so callers can match on
//! the variant instead of parsing messages. Versions are semver 2.0.

mod rule;
mod version;

pub use version::{VersionError, validate_version};

use std::fmt;

use rule::{ACTION, COMMAND, DOMAIN, GROUP, INSTANCE, METHOD, SERVICE};

/// What kind of name failed validation; used in [`NameError`] variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A service name, e.g. `order-service`.
    Service,
    /// An instance id, e.g. a Kubernetes pod name.
    Instance,
    /// An RPC method name, e.g. `placeOrder`.
    Method,
    /// A sticky single-active group name.
    Group,
    /// The domain token of an event subject (`events.{domain}.{action}`).
    Domain,
    /// The action token of an event subject (`events.{domain}.{action}`).
    Action,
    /// A command name (`commands.{service}.{command}`).
    Command,
}

impl NameKind {
    /// The regular expression this kind of name must match, for messages and
    /// documentation (validation itself is hand-written).
    pub fn pattern(self) -> &'static str {
        match self {
            Self::Service => "^[a-z][a-z0-9-]{1,62}[a-z0-9]$ without \"--\"",
            Self::Instance => "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$",
            Self::Method | Self::Command => "^[a-zA-Z][a-zA-Z0-9_]*$ (at most 128 characters)",
            Self::Group => "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
            Self::Domain | Self::Action => "^[a-z][a-z0-9_-]{0,63}$",
        }
    }

    /// The words used for this kind in messages, e.g. `"service name"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service name",
            Self::Instance => "instance id",
            Self::Method => "method name",
            Self::Group => "group name",
            Self::Domain => "event domain",
            Self::Action => "event action",
            Self::Command => "command name",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a name (or an event pattern) was rejected.
///
/// Positions are 0-based character (not byte) indexes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("{kind} must not be empty (must match {})", .kind.pattern())]
    Empty {
        /// Which kind of name.
        kind: NameKind,
    },
    /// The name has fewer characters than the rule allows.
    #[error("{kind} must be at least {min} characters (must match {})", .kind.pattern())]
    TooShort {
        /// Which kind of name.
        kind: NameKind,
        /// The minimum length in characters.
        min: usize,
    },
    /// The name has more characters than the rule allows.
    #[error("{kind} must be at most {max} characters (must match {})", .kind.pattern())]
    TooLong {
        /// Which kind of name.
        kind: NameKind,
        /// The maximum length in characters.
        max: usize,
    },
    /// The first character is not allowed there.
    ///
    /// An uppercase letter, where the kind takes only lowercase ones, is
    /// told as such: `service name must be lowercase: 'Q' at position 0`.
    #[error("{}", not_allowed(*.kind, *.ch, None))]
    InvalidStart {
        /// Which kind of name.
        kind: NameKind,
        /// The offending first character.
        ch: char,
    },
    /// The last character is not allowed there.
    #[error("{kind} must not end with {ch:?} (must match {})", .kind.pattern())]
    InvalidEnd {
        /// Which kind of name.
        kind: NameKind,
        /// The offending last character.
        ch: char,
    },
    /// A character is not allowed anywhere in this kind of name.
    ///
    /// An uppercase letter, where the kind takes only lowercase ones, is
    /// told as such: `service name must be lowercase: 'S' at position 5`.
    #[error(
        "{}",
        not_allowed(*.kind, *.ch, Some(*.position))
    )]
    InvalidChar {
        /// Which kind of name.
        kind: NameKind,
        /// The offending character.
        ch: char,
        /// Its 0-based character index.
        position: usize,
    },
    /// The name contains `--`.
    #[error("{kind} must not contain \"--\" (must match {})", .kind.pattern())]
    DoubleHyphen {
        /// Which kind of name.
        kind: NameKind,
    },
    /// An event pattern is structurally wrong (token count, empty token,
    /// misplaced wildcard).
    #[error("invalid event pattern: {reason}")]
    InvalidPattern {
        /// What is wrong with the pattern.
        reason: String,
    },
}

/// The message of a character `kind` does not take: at the start
/// (`position` `None`) or at `position`. An uppercase letter is told as
/// "must be lowercase" (every kind that refuses one takes its lowercase
/// form there); any other character as not allowed there.
fn not_allowed(kind: NameKind, ch: char, position: Option<usize>) -> String {
    let pattern = kind.pattern();
    match position {
        _ if ch.is_ascii_uppercase() => format!(
            "{kind} must be lowercase: {ch:?} at position {} (must match {pattern})",
            position.unwrap_or(0)
        ),
        None => format!("{kind} must not start with {ch:?} (must match {pattern})"),
        Some(at) => {
            format!("{kind} must not contain {ch:?} (at position {at}; must match {pattern})")
        }
    }
}

/// Checks a service name: `^[a-z][a-z0-9-]{1,62}[a-z0-9]$` without `--`
/// (so 3 to 64 characters).
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_service_name(s: &str) -> Result<(), NameError> {
    SERVICE.check(s)
}

/// Checks an instance id: `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_instance_id(s: &str) -> Result<(), NameError> {
    INSTANCE.check(s)
}

/// Checks an RPC method name: `^[a-zA-Z][a-zA-Z0-9_]*$`, at most 128
/// characters.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_method_name(s: &str) -> Result<(), NameError> {
    METHOD.check(s)
}

/// Checks a sticky single-active group name: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_group_name(s: &str) -> Result<(), NameError> {
    GROUP.check(s)
}

/// Checks an event domain: `^[a-z][a-z0-9_-]{0,63}$`.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_event_domain(s: &str) -> Result<(), NameError> {
    DOMAIN.check(s)
}

/// Checks an event action: `^[a-z][a-z0-9_-]{0,63}$`.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_event_action(s: &str) -> Result<(), NameError> {
    ACTION.check(s)
}

/// Checks a command name; same rule as a method name.
///
/// # Errors
/// Returns the [`NameError`] variant naming the first rule that fails.
#[inline]
pub fn validate_command_name(s: &str) -> Result<(), NameError> {
    COMMAND.check(s)
}

#[cfg(test)]
mod tests {
    use super::NameError as E;
    use super::NameKind::*;
    use super::*;

    type Validator = fn(&str) -> Result<(), NameError>;

    /// Runs `(input, expected)` rows against `f`.
    fn table(f: Validator, rows: &[(&str, Result<(), NameError>)]) {
        for (input, expected) in rows {
            assert_eq!(&f(input), expected, "{input:?}");
        }
    }

    fn ch(kind: NameKind, ch: char, position: usize) -> Result<(), NameError> {
        Err(E::InvalidChar { kind, ch, position })
    }

    #[test]
    fn service_names() {
        let (min, max, over) = ("a".repeat(3), "a".repeat(64), "a".repeat(65));
        table(
            validate_service_name,
            &[
                ("abc", Ok(())),
                (&min, Ok(())),
                (&max, Ok(())),
                ("order-service", Ok(())),
                ("a1b", Ok(())),
                ("a-b-c", Ok(())),
                ("", Err(E::Empty { kind: Service })),
                (
                    "ab",
                    Err(E::TooShort {
                        kind: Service,
                        min: 3,
                    }),
                ),
                (
                    &over,
                    Err(E::TooLong {
                        kind: Service,
                        max: 64,
                    }),
                ),
                ("order--service", Err(E::DoubleHyphen { kind: Service })),
                (
                    "Order",
                    Err(E::InvalidStart {
                        kind: Service,
                        ch: 'O',
                    }),
                ),
                (
                    "1order",
                    Err(E::InvalidStart {
                        kind: Service,
                        ch: '1',
                    }),
                ),
                (
                    "-order",
                    Err(E::InvalidStart {
                        kind: Service,
                        ch: '-',
                    }),
                ),
                (
                    "order-",
                    Err(E::InvalidEnd {
                        kind: Service,
                        ch: '-',
                    }),
                ),
                ("orDer", ch(Service, 'D', 2)),
                ("order.svc", ch(Service, '.', 5)),
                ("order_svc", ch(Service, '_', 5)),
                ("order*", ch(Service, '*', 5)),
                ("ord er", ch(Service, ' ', 3)),
                // Lengths and positions count characters, not bytes.
                ("ordé", ch(Service, 'é', 3)),
            ],
        );
    }

    #[test]
    fn instance_ids() {
        let (max, over) = ("a".repeat(128), "a".repeat(129));
        table(
            validate_instance_id,
            &[
                ("a", Ok(())),
                ("0", Ok(())),
                ("order-7f9c-x2", Ok(())),
                ("Pod_1", Ok(())),
                ("a--", Ok(())),
                (&max, Ok(())),
                ("", Err(E::Empty { kind: Instance })),
                (
                    &over,
                    Err(E::TooLong {
                        kind: Instance,
                        max: 128,
                    }),
                ),
                (
                    "-a",
                    Err(E::InvalidStart {
                        kind: Instance,
                        ch: '-',
                    }),
                ),
                (
                    "_a",
                    Err(E::InvalidStart {
                        kind: Instance,
                        ch: '_',
                    }),
                ),
                ("a.b", ch(Instance, '.', 1)),
                ("a>", ch(Instance, '>', 1)),
            ],
        );
    }

    #[test]
    fn method_and_command_names() {
        let (max, over) = ("m".repeat(128), "m".repeat(129));
        for (f, kind) in [
            (validate_method_name as Validator, Method),
            (validate_command_name, Command),
        ] {
            table(
                f,
                &[
                    ("p", Ok(())),
                    ("placeOrder", Ok(())),
                    ("get_price2", Ok(())),
                    (&max, Ok(())),
                    ("", Err(E::Empty { kind })),
                    (&over, Err(E::TooLong { kind, max: 128 })),
                    ("2fast", Err(E::InvalidStart { kind, ch: '2' })),
                    ("_x", Err(E::InvalidStart { kind, ch: '_' })),
                    ("place-order", ch(kind, '-', 5)),
                    ("a.b", ch(kind, '.', 1)),
                ],
            );
        }
    }

    #[test]
    fn group_names() {
        let (max, over) = ("g".repeat(64), "g".repeat(65));
        table(
            validate_group_name,
            &[
                ("default", Ok(())),
                ("G1", Ok(())),
                ("0", Ok(())),
                ("a_b-c", Ok(())),
                (&max, Ok(())),
                ("", Err(E::Empty { kind: Group })),
                (
                    &over,
                    Err(E::TooLong {
                        kind: Group,
                        max: 64,
                    }),
                ),
                (
                    "-g",
                    Err(E::InvalidStart {
                        kind: Group,
                        ch: '-',
                    }),
                ),
                ("a>", ch(Group, '>', 1)),
            ],
        );
    }

    #[test]
    fn event_domains_and_actions() {
        let (max, over) = ("d".repeat(64), "d".repeat(65));
        for (f, kind) in [
            (validate_event_domain as Validator, Domain),
            (validate_event_action, Action),
        ] {
            table(
                f,
                &[
                    ("order", Ok(())),
                    ("o", Ok(())),
                    ("order_book", Ok(())),
                    ("price-tick", Ok(())),
                    ("v2", Ok(())),
                    (&max, Ok(())),
                    ("", Err(E::Empty { kind })),
                    (&over, Err(E::TooLong { kind, max: 64 })),
                    ("Order", Err(E::InvalidStart { kind, ch: 'O' })),
                    ("1x", Err(E::InvalidStart { kind, ch: '1' })),
                    ("_x", Err(E::InvalidStart { kind, ch: '_' })),
                    ("cre*ated", ch(kind, '*', 3)),
                    ("orDer", ch(kind, 'D', 2)),
                ],
            );
        }
    }

    #[test]
    fn messages_name_the_rule() {
        let e = validate_service_name("ab").unwrap_err();
        assert!(e.to_string().starts_with("service name"));
        assert!(e.to_string().contains(Service.pattern()));
        assert!(
            validate_instance_id("a.b")
                .unwrap_err()
                .to_string()
                .contains("position 1")
        );
        assert_eq!(Instance.to_string(), "instance id");
        assert_eq!(Domain.to_string(), "event domain");
        assert_eq!(Command.to_string(), "command name");
    }

    /// Tried as a new user would: "must not start with 'Q'" and "must not
    /// contain 'S'" read as if the letter were banned.
    #[test]
    fn an_uppercase_letter_is_told_as_such() {
        let pattern = Service.pattern();
        assert_eq!(
            validate_service_name("Quote-service")
                .unwrap_err()
                .to_string(),
            format!("service name must be lowercase: 'Q' at position 0 (must match {pattern})")
        );
        assert_eq!(
            validate_service_name("quoteService")
                .unwrap_err()
                .to_string(),
            format!("service name must be lowercase: 'S' at position 5 (must match {pattern})")
        );
        assert!(
            validate_event_domain("Quote")
                .unwrap_err()
                .to_string()
                .starts_with("event domain must be lowercase: 'Q' at position 0")
        );
        // Other characters keep their words.
        assert_eq!(
            validate_service_name("quote.service")
                .unwrap_err()
                .to_string(),
            format!("service name must not contain '.' (at position 5; must match {pattern})")
        );
        assert!(
            validate_service_name("1quote")
                .unwrap_err()
                .to_string()
                .starts_with("service name must not start with '1'")
        );
    }
}
