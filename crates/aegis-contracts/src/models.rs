//! The JSON models stored in KV and served by the monitor API.
//!
//! - [`ServiceInstance`] (camelCase) is the registry record an instance
//!   writes under `service-instances.{service}.{instance}` on every change
//!   and every few seconds to renew its TTL; readers ignore fields they do
//!   not know.
//! - [`ServiceDefinition`] (snake_case) is the record in `service_definitions`,
//!   created from a [`NewServiceDefinition`] and changed by a
//!   [`ServiceDefinitionPatch`]; the server sets its timestamps.
//! - [`ValidationErrors`] lists every failing field at once, so an API can
//!   report them together.
//! - [`rfc3339`] is the timestamp format shared by all models.

mod definition;
mod instance;
pub mod rfc3339;

pub use definition::{NewServiceDefinition, ServiceDefinition, ServiceDefinitionPatch};
pub use instance::{InstanceStatus, ParseStatusError, ServiceInstance};

use serde::{Deserialize, Serialize};

/// Maximum length of a definition's owner, in characters.
pub const OWNER_MAX_CHARS: usize = 100;
/// Maximum length of a definition's description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 500;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's name as spelled in JSON (e.g. `service_name`, `instanceId`).
    pub field: String,
    /// Why it failed, for humans.
    pub message: String,
}

/// Every field that failed validation, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("validation failed: {}", summary(&self.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The failing fields.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }

    /// Whether `field` is among the failures.
    pub fn has(&self, field: &str) -> bool {
        self.fields().any(|f| f == field)
    }
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors, then turns into `Ok(())` or [`ValidationErrors`].
#[derive(Default)]
pub(crate) struct Collector(Vec<FieldError>);

impl Collector {
    /// Records `result`'s error, if any, against `field`.
    pub(crate) fn check<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) {
        if let Err(e) = result {
            self.0.push(FieldError {
                field: field.to_owned(),
                message: e.to_string(),
            });
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

/// Checks free text: non-blank, at most `max` characters, and no control
/// character but tabs and line breaks (LF, or CRLF as Windows clients
/// send it; a NUL, or an escape sequence that
/// recolours the terminal it is printed on, is not text a person reads).
pub(crate) fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    let len = value.chars().count();
    if len > max {
        return Err(format!("must be 1-{max} characters, got {len}"));
    }
    let mut chars = value.chars().enumerate().peekable();
    while let Some((at, c)) = chars.next() {
        // A line break is LF, or CRLF as clients on Windows send it.
        let line_break = c == '\n' || (c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n'));
        if c.is_control() && c != '\t' && !line_break {
            return Err(format!(
                "must not contain control characters (U+{:04X} at character {}); line breaks and tabs are allowed",
                u32::from(c),
                at + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bounds_count_chars() {
        assert!(check_text("a", 100).is_ok());
        assert!(check_text(&"a".repeat(100), 100).is_ok());
        assert!(check_text(&"a".repeat(101), 100).is_err());
        // 100 two-byte characters are 100 characters.
        assert!(check_text(&"é".repeat(100), 100).is_ok());
        assert!(check_text("", 100).is_err());
        assert!(check_text("  \t", 100).is_err());
        // Text, not control characters: line breaks (LF, CRLF) and tabs only.
        assert!(check_text("two lines\n\tindented", 100).is_ok());
        assert!(check_text("from Windows\r\nsecond line", 100).is_ok());
        assert_eq!(
            check_text("ab\u{0}c", 100),
            Err("must not contain control characters (U+0000 at character 3); line breaks and tabs are allowed".to_owned())
        );
        for bad in ["\u{1b}[31m", "a\r", "\u{7f}", "\u{85}"] {
            assert!(check_text(bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn collector_lists_every_failure() {
        let mut c = Collector::default();
        c.check("a", Ok::<(), String>(()));
        c.check("b", Err::<(), _>("bad"));
        c.check("c", Err::<(), _>("worse"));
        let err = c.finish().unwrap_err();
        assert_eq!(err.fields().collect::<Vec<_>>(), ["b", "c"]);
        assert!(err.has("c") && !err.has("a"));
        assert_eq!(err.to_string(), "validation failed: b: bad; c: worse");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!([
                {"field": "b", "message": "bad"},
                {"field": "c", "message": "worse"}
            ])
        );
        assert_eq!(Collector::default().finish(), Ok(()));
    }
}
