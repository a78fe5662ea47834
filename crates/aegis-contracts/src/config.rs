//! The effective configuration an instance runs with, as it answers on its
//! control subject `aegis.control.{service}.{instance}.config` and the
//! monitor serves at `GET /api/instances/{service}/{instance}/config`.
//!
//! Written by the SDK when a service starts, read by the monitor; camelCase
//! JSON, and readers ignore fields they do not know, so an instance of a
//! newer SDK can add some. Secrets never appear: the connection settings
//! are the SDK's redacted view of its configuration.
//!
//! Reading an answer:
//!
//! ```
//! use aegis_contracts::config::EffectiveConfig;
//!
//! let json = r#"{"service":"pricing-service","instanceId":"pricing-1","version":"1.0.0",
//!   "sdkVersion":"0.1.0","singleActive":null,
//!   "registration":{"heartbeatMs":1000,"refreshMs":4000,"ttlMs":15000},
//!   "metricsIntervalMs":2000,"shutdownTimeoutMs":10000,"connection":{"servers":["nats://127.0.0.1:4222"]}}"#;
//! let config: EffectiveConfig = serde_json::from_str(json).unwrap();
//! assert_eq!(config.registration.unwrap().refresh_ms, 4000);
//! ```

use serde::{Deserialize, Serialize};

/// What a running instance is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConfig {
    /// The service name.
    pub service: String,
    /// This instance's id.
    pub instance_id: String,
    /// The service's version.
    pub version: String,
    /// The SDK's version.
    pub sdk_version: String,
    /// The sticky single-active group and lease timing, if any.
    pub single_active: Option<SingleActiveConfig>,
    /// The registry timing, unless the instance does not register.
    pub registration: Option<RegistrationConfig>,
    /// How often a metrics snapshot is published; null when never.
    pub metrics_interval_ms: Option<u64>,
    /// How long a graceful stop may take.
    pub shutdown_timeout_ms: u64,
    /// The connection settings, secrets redacted (the SDK's `AegisConfig`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub connection: serde_json::Value,
}

/// The single-active part of an [`EffectiveConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SingleActiveConfig {
    /// The sticky group.
    pub group: String,
    /// The lease a leader holds.
    pub lease_ms: u64,
    /// How often the leader renews it.
    pub renew_ms: u64,
}

/// The registry part of an [`EffectiveConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RegistrationConfig {
    /// The liveness beat (and health check) interval.
    pub heartbeat_ms: u64,
    /// How often an unchanged record is re-written to renew its TTL.
    #[serde(default)]
    pub refresh_ms: u64,
    /// How long the record lives on the server without a write.
    pub ttl_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let config = EffectiveConfig {
            service: "order-service".into(),
            instance_id: "order-1".into(),
            version: "1.2.0".into(),
            sdk_version: "0.1.0".into(),
            single_active: Some(SingleActiveConfig {
                group: "default".into(),
                lease_ms: 2000,
                renew_ms: 500,
            }),
            registration: None,
            metrics_interval_ms: None,
            shutdown_timeout_ms: 10_000,
            connection: serde_json::json!({"servers": ["nats://n1:4222"]}),
        };
        let mut json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["singleActive"]["leaseMs"], 2000);
        assert!(json["registration"].is_null());
        json["addedLater"] = serde_json::json!(true);
        let back: EffectiveConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }
}
