//! The bodies of a definition's create and update as they are sent, read
//! field by field: a mistyped field is kept as the reason it does not fit
//! ([`Field`]) rather than ending the reading, so one 422 names every
//! failing field — mistyped, missing, unknown or against a rule — and a
//! client fixes its body in one go.
//!
//! The rules themselves are the contract's ([`NewServiceDefinition::validate`],
//! [`ServiceDefinitionPatch::validate`]); when some fields could not be
//! read, the ones that were are checked as a patch checks them (the same
//! rules, each field on its own). On top of them the monitor refuses, in
//! `owner` and `description`, the invisible characters that change how
//! text displays ([`invisible`]).

use std::fmt;

use aegis_contracts::{
    FieldError, NewServiceDefinition, ServiceDefinitionPatch, ValidationErrors,
    names::validate_service_name,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};

/// The create body as sent.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateBody {
    #[serde(default)]
    service_name: Field<String>,
    #[serde(default)]
    owner: Field<String>,
    #[serde(default)]
    description: Field<String>,
    #[serde(default)]
    version: Field<String>,
    /// Every other key: each one is refused.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

impl CreateBody {
    const FIELDS: &[&str] = &["service_name", "owner", "description", "version"];

    /// The definition to create.
    ///
    /// # Errors
    /// 422 `VALIDATION_ERROR` naming every failing field.
    pub(crate) fn read(self) -> Result<NewServiceDefinition, ApiError> {
        let mut errors = FieldErrors::new(Self::FIELDS);
        let service_name = errors.required("service_name", self.service_name);
        let owner = errors.required("owner", self.owner);
        let description = errors.required("description", self.description);
        let version = errors.required("version", self.version);
        errors.unknown(self.unknown);
        let new = match (service_name, owner, description, version) {
            (Some(service_name), Some(owner), Some(description), Some(version)) => {
                let new = NewServiceDefinition {
                    service_name,
                    owner,
                    description,
                    version,
                };
                errors.rules(new.validate());
                errors.text("owner", &new.owner);
                errors.text("description", &new.description);
                Some(new)
            }
            (service_name, owner, description, version) => {
                if let Some(name) = service_name {
                    errors.rule("service_name", validate_service_name(&name));
                }
                let read = ServiceDefinitionPatch {
                    owner,
                    description,
                    version,
                    revision: None,
                };
                errors.rules(read.validate());
                errors.patch_text(&read);
                None
            }
        };
        errors.finish(new)
    }
}

/// The update body as sent: any of owner, description and version, and
/// optionally the revision it is conditional on (`null` for none). A
/// field given as `null` is refused rather than read as "unchanged".
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateBody {
    #[serde(default)]
    owner: Field<String>,
    #[serde(default)]
    description: Field<String>,
    #[serde(default)]
    version: Field<String>,
    #[serde(default)]
    revision: Field<Option<u64>>,
    /// Every other key: each one is refused.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

impl UpdateBody {
    const FIELDS: &[&str] = &["owner", "description", "version", "revision"];

    /// The patch to apply.
    ///
    /// # Errors
    /// 422 `VALIDATION_ERROR` naming every failing field; then 400
    /// `EMPTY_UPDATE` when it would change nothing.
    pub(crate) fn read(self) -> Result<ServiceDefinitionPatch, ApiError> {
        let mut errors = FieldErrors::new(Self::FIELDS);
        let patch = ServiceDefinitionPatch {
            owner: errors.optional("owner", self.owner),
            description: errors.optional("description", self.description),
            version: errors.optional("version", self.version),
            revision: errors.optional("revision", self.revision).flatten(),
        };
        errors.unknown(self.unknown);
        errors.rules(patch.validate());
        errors.patch_text(&patch);
        let patch = errors.finish(Some(patch))?;
        if patch.is_empty() {
            return Err(ApiError::new(
                ErrorCode::EmptyUpdate,
                "nothing to update: give at least one of owner, description, version",
            ));
        }
        Ok(patch)
    }
}

/// One field of a body, read on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Field<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// In the body, but not a `T`: why (serde's words, as for any body).
    Invalid(String),
    /// In the body, as a `T`.
    Given(T),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any JSON value reads; whether it is a `T` is this field's answer
        // alone, not the body's.
        let value = Value::deserialize(deserializer)?;
        Ok(match serde_json::from_value(value) {
            Ok(value) => Self::Given(value),
            Err(e) => Self::Invalid(e.to_string()),
        })
    }
}

/// The failing fields of a body, put in the body's field order (unknown
/// fields last) when it is answered.
#[derive(Debug)]
struct FieldErrors {
    fields: &'static [&'static str],
    failed: Vec<FieldError>,
}

impl FieldErrors {
    fn new(fields: &'static [&'static str]) -> Self {
        Self {
            fields,
            failed: Vec::new(),
        }
    }

    fn fail(&mut self, field: &str, message: impl fmt::Display) {
        self.failed.push(FieldError {
            field: field.to_owned(),
            message: message.to_string(),
        });
    }

    /// The value of a field the body must have.
    fn required<T>(&mut self, name: &str, field: Field<T>) -> Option<T> {
        if let Field::Absent = field {
            self.fail(name, "is required");
        }
        self.optional(name, field)
    }

    /// The value of a field the body may leave out.
    fn optional<T>(&mut self, name: &str, field: Field<T>) -> Option<T> {
        match field {
            Field::Absent => None,
            Field::Invalid(why) => {
                self.fail(name, why);
                None
            }
            Field::Given(value) => Some(value),
        }
    }

    /// Every key of `unknown` is a field the body does not have.
    fn unknown(&mut self, unknown: Map<String, Value>) {
        let known = self.fields.join(", ");
        for key in unknown.keys() {
            self.fail(key, format_args!("unknown field; the fields are {known}"));
        }
    }

    /// A rule's verdict on one field.
    fn rule<E: fmt::Display>(&mut self, field: &str, result: Result<(), E>) {
        if let Err(e) = result {
            self.fail(field, e);
        }
    }

    /// The monitor's own rule for free text ([`invisible`]), for a field
    /// the contract's rules passed (one reason per field).
    fn text(&mut self, field: &str, value: &str) {
        if self.failed.iter().any(|f| f.field == field) {
            return;
        }
        if let Some((at, c)) = invisible(value) {
            self.fail(
                field,
                format_args!(
                    "must not contain bidi control or zero-width characters (U+{:04X} at character {at}); they make text display other than it reads",
                    u32::from(c)
                ),
            );
        }
    }

    /// [`Self::text`] for the free-text fields a patch gives.
    fn patch_text(&mut self, patch: &ServiceDefinitionPatch) {
        if let Some(owner) = &patch.owner {
            self.text("owner", owner);
        }
        if let Some(description) = &patch.description {
            self.text("description", description);
        }
    }

    /// The rules' verdicts, as the contract lists them.
    fn rules(&mut self, result: Result<(), ValidationErrors>) {
        if let Err(errors) = result {
            self.failed.extend(errors.0);
        }
    }

    /// `read` when no field failed (and it was read); else 422 naming
    /// every failing field.
    fn finish<T>(mut self, read: Option<T>) -> Result<T, ApiError> {
        match read {
            Some(read) if self.failed.is_empty() => Ok(read),
            _ => {
                let fields = self.fields;
                let position = |f: &FieldError| {
                    fields
                        .iter()
                        .position(|known| *known == f.field)
                        .unwrap_or(fields.len())
                };
                self.failed.sort_by_key(position);
                Err(ApiError::validation(&ValidationErrors(self.failed)))
            }
        }
    }
}

/// The first character of `value` that is a bidi control (U+202A–U+202E,
/// U+2066–U+2069, U+200E, U+200F) or a zero-width space (U+200B, U+2060,
/// U+FEFF), with its position (from 1). Control characters are the
/// contract's to refuse; these are format characters, which display as
/// nothing but can reverse or hide what the UI and the audit history show
/// (`"\u{202e}evil"` reads as `"live"`). The zero-width joiner and
/// non-joiner (U+200D, U+200C) are text: emoji sequences and Persian or
/// Indic words are written with them.
pub(crate) fn invisible(value: &str) -> Option<(usize, char)> {
    value
        .chars()
        .enumerate()
        .find(|(_, c)| {
            matches!(
                c,
                '\u{202A}'..='\u{202E}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200E}'
                    | '\u{200F}'
                    | '\u{200B}'
                    | '\u{2060}'
                    | '\u{FEFF}'
            )
        })
        .map(|(at, c)| (at + 1, c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn failing(e: ApiError) -> Vec<String> {
        assert_eq!(e.code(), ErrorCode::ValidationError);
        e.failing_fields()
    }

    fn create(body: Value) -> Result<NewServiceDefinition, ApiError> {
        serde_json::from_value::<CreateBody>(body).unwrap().read()
    }

    fn update(body: Value) -> Result<ServiceDefinitionPatch, ApiError> {
        serde_json::from_value::<UpdateBody>(body).unwrap().read()
    }

    #[test]
    fn a_create_names_every_failing_field_in_field_order() {
        let ok = json!({"service_name": "order-service", "owner": "o", "description": "d", "version": "1.0.0"});
        assert_eq!(create(ok).unwrap().service_name, "order-service");
        let e = create(json!({"zz": 1, "version": 7, "owner": "", "service_name": "X"}));
        assert_eq!(
            failing(e.unwrap_err()),
            ["service_name", "owner", "description", "version", "zz"]
        );
        // Every field read, rules broken: the contract's own check.
        let e = create(
            json!({"service_name": "ab", "owner": " ", "description": "d", "version": "1.0"}),
        );
        assert_eq!(
            failing(e.unwrap_err()),
            ["service_name", "owner", "version"]
        );
        assert_eq!(
            failing(create(json!({"owner": null})).unwrap_err()),
            ["service_name", "owner", "description", "version"]
        );
    }

    #[test]
    fn an_update_names_every_failing_field_then_refuses_an_empty_one() {
        let p = update(json!({"owner": "o", "revision": 3})).unwrap();
        assert_eq!((p.owner.as_deref(), p.revision), (Some("o"), Some(3)));
        assert_eq!(
            update(json!({"owner": "o", "revision": null}))
                .unwrap()
                .revision,
            None
        );
        let e = update(json!({"owner": 5, "version": "1.0", "revision": -1, "created_at": "x"}));
        assert_eq!(
            failing(e.unwrap_err()),
            ["owner", "version", "revision", "created_at"]
        );
        assert_eq!(
            failing(update(json!({"owner": null})).unwrap_err()),
            ["owner"]
        );
        // Invisible formatting characters, in a patch as in a create; a
        // field the contract already refused is named once.
        let e = update(json!({"owner": "a\u{202e}b", "description": "\u{0}\u{200b}"}));
        let fields = e.unwrap_err().details()["fields"].clone();
        assert_eq!(fields[0]["field"], "owner");
        assert!(
            fields[0]["message"]
                .as_str()
                .unwrap()
                .contains("U+202E at character 2")
        );
        assert_eq!(fields[1]["field"], "description");
        assert!(
            fields[1]["message"]
                .as_str()
                .unwrap()
                .contains("control characters")
        );
        assert_eq!(fields.as_array().unwrap().len(), 2);
        for empty in [json!({}), json!({"revision": 3})] {
            assert_eq!(update(empty).unwrap_err().code(), ErrorCode::EmptyUpdate);
        }
    }
}
