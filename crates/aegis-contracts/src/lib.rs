//! Aegis wire contracts: everything two Aegis processes must agree on, and no
//! I/O.
//!
//! - [`names`] validates service names, instance ids, method, group,
//!   command, event domain and action names, and semver versions.
//! - [`subjects`] spells every NATS subject, KV key, bucket and stream name.
//! - [`events`] parses event subjects (`events.{domain}.{action}`) and the
//!   wildcard patterns subscribers select them with.
//! - [`models`] holds the JSON records: the registry's [`ServiceInstance`],
//!   the [`ServiceDefinition`] with its create and patch bodies, field
//!   [`ValidationErrors`], and the shared RFC 3339 timestamp format.
//! - [`wire`] holds the RPC [`WireError`] with its stable [`ErrorCode`], and
//!   the `Aegis-*` header names.
//! - [`metrics`] holds the [`MetricsSnapshot`] each instance publishes.
//! - [`commands`] holds the command progress protocol's [`CommandReply`].
//! - [`config`] holds the [`EffectiveConfig`](config::EffectiveConfig) an
//!   instance reports on its control subject.
//! - [`control`] holds the operator's drill protocol on
//!   `aegis.control.{service}.{instance}` (force unhealthy, restore, slow).
//! - [`dead_letter`] holds the [`DeadLetter`] record of a message given up
//!   on, read from the `DEAD_LETTER` stream.
//!
//! With the `openapi` feature, the models the monitor API serves derive
//! `utoipa::ToSchema`, so its OpenAPI document describes these types
//! themselves; request bodies carry their validation rules as schema
//! patterns and lengths.
//!
//! Builders in [`subjects`] do not validate; validate names with [`names`]
//! before building subjects from untrusted input.

pub mod commands;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod events;
pub mod log;
pub mod metrics;
pub mod models;
pub mod names;
pub mod subjects;
pub mod trading;
pub mod wire;

pub use commands::CommandReply;
pub use dead_letter::{DeadLetter, DeadLetterReason};
pub use events::{EventPattern, EventSubject};
pub use metrics::{EndpointMetrics, LatencySummary, MetricsSnapshot};
pub use models::{
    FieldError, InstanceStatus, NewServiceDefinition, ParseStatusError, ServiceDefinition,
    ServiceDefinitionPatch, ServiceInstance, ValidationErrors,
};
pub use names::{
    NameError, NameKind, VersionError, validate_command_name, validate_event_action,
    validate_event_domain, validate_group_name, validate_instance_id, validate_method_name,
    validate_service_name, validate_version,
};
pub use wire::{ErrorCode, WireError};
