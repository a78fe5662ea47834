//! The metrics snapshot every instance publishes on
//! `aegis.metrics.{service}.{instance}` (stream `AEGIS_METRICS`).
//!
//! A snapshot covers one publishing interval: per-endpoint counts, rates and
//! latency percentiles (from histograms, never averages alone), plus queue
//! depth, in-flight work and free-form custom gauges. The JSON is camelCase;
//! readers ignore unknown fields and default missing ones, so monitors keep
//! working across versions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::models::rfc3339;

/// One instance's metrics for one publishing interval.
// Readers default the fields an older publisher may omit; every snapshot
// the monitor serves has them all, so its OpenAPI schema requires them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// The publishing service.
    pub service_name: String,
    /// The publishing instance.
    pub instance_id: String,
    /// When the snapshot was taken (RFC 3339 UTC).
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Seconds since the instance started.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub uptime_secs: f64,
    /// Length of the interval the rates cover, in seconds.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub interval_secs: f64,
    /// Per-endpoint figures.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub endpoints: Vec<EndpointMetrics>,
    /// Messages the instance received and has not started handling, now.
    /// The Rust SDK counts the commands a leader-only command worker took
    /// while its leader's lease has lapsed, waiting for the lease; its
    /// event subscriptions and command workers pull only for free
    /// handlers, so nothing else waits in the instance (messages waiting
    /// on the server are not counted). Not a copy of `in_flight`: a
    /// message is in one or the other.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub queue_depth: u64,
    /// Requests being handled right now (the Rust SDK: RPC requests whose
    /// handler started and has not answered).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub in_flight: u64,
    /// Service-defined gauges.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub custom: BTreeMap<String, f64>,
}

/// Figures for one endpoint (RPC method, event handler or command).
// Every field reads as its default when absent: said per field rather than
// on the struct, which would also print the defaults into the OpenAPI
// schema. Served snapshots have every field, so the schema requires them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EndpointMetrics {
    /// The endpoint name, e.g. a method name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub name: String,
    /// Requests handled since start.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub requests: u64,
    /// Successful requests since start.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub successes: u64,
    /// Failed requests since start.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub errors: u64,
    /// Requests per second over the interval.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub request_rate: f64,
    /// Errors per second over the interval.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error_rate: f64,
    /// Latency percentiles over the interval, in milliseconds.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub latency_ms: LatencySummary,
}

/// Latency percentiles in milliseconds.
// Per-field defaults, as in `EndpointMetrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencySummary {
    /// Median.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p50: f64,
    /// 90th percentile.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p90: f64,
    /// 99th percentile.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub p99: f64,
    /// Largest observed.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub max: f64,
    /// Arithmetic mean.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            service_name: "pricing".into(),
            instance_id: "p-1".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 1).unwrap(),
            uptime_secs: 12.5,
            interval_secs: 5.0,
            endpoints: vec![EndpointMetrics {
                name: "getPrice".into(),
                requests: 10,
                successes: 9,
                errors: 1,
                request_rate: 2.0,
                error_rate: 0.2,
                latency_ms: LatencySummary {
                    p50: 1.0,
                    p90: 2.0,
                    p99: 3.5,
                    max: 4.0,
                    mean: 1.25,
                },
            }],
            queue_depth: 3,
            in_flight: 1,
            custom: BTreeMap::from([("spread".to_owned(), 0.5)]),
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(snapshot()).unwrap();
        assert_eq!(
            v,
            json!({
                "serviceName": "pricing",
                "instanceId": "p-1",
                "timestamp": "2026-11-27T00:00:01.000Z",
                "uptimeSecs": 12.5,
                "intervalSecs": 5.0,
                "endpoints": [{
                    "name": "getPrice",
                    "requests": 10,
                    "successes": 9,
                    "errors": 1,
                    "requestRate": 2.0,
                    "errorRate": 0.2,
                    "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": 3.5, "max": 4.0, "mean": 1.25}
                }],
                "queueDepth": 3,
                "inFlight": 1,
                "custom": {"spread": 0.5}
            })
        );
        assert_eq!(
            serde_json::from_value::<MetricsSnapshot>(v).unwrap(),
            snapshot()
        );
    }

    #[test]
    fn tolerant_reader() {
        let v = json!({
            "serviceName": "pricing",
            "instanceId": "p-1",
            "timestamp": "2026-11-27T00:00:01Z",
            "endpoints": [{"name": "x", "requests": 1, "newField": true}],
            "newTopLevel": 1
        });
        let s: MetricsSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(s.endpoints[0].requests, 1);
        assert_eq!(s.endpoints[0].latency_ms, LatencySummary::default());
        assert!(s.custom.is_empty());
        assert_eq!(s.queue_depth, 0);
    }
}
