//! What every example service answers besides its own business — `echo`,
//! `health` and `simulate_work`, used by demos and benchmarks — and
//! [`Counters`], the service-specific numbers that travel in the instance's
//! published metrics snapshots.

use schemars::JsonSchema;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_contracts::models::ValidationErrors;
use aegis_sdk::{metrics::InstanceMetrics, rpc::WireError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest `simulate_work` may sleep.
pub const MAX_SIMULATED_WORK: Duration = Duration::from_secs(60);

/// `simulate_work` request: sleep `ms` milliseconds, then fail with
/// `INTERNAL` if `fail` is set. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateWork {
    /// How long to sleep, in milliseconds (at most 60 000).
    #[serde(default)]
    pub ms: u64,
    /// Answer `INTERNAL` after sleeping.
    #[serde(default)]
    pub fail: bool,
}

/// `simulate_work` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkDone {
    /// How long it slept, in milliseconds.
    pub slept_ms: u64,
    /// The instance that did the work.
    pub instance_id: String,
}

/// `health` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Always `healthy`: an instance that can answer is healthy.
    pub status: String,
    /// The service name.
    pub service: String,
    /// The instance that answered.
    pub instance_id: String,
    /// The service version.
    pub version: String,
    /// Seconds since the instance started.
    pub uptime_secs: f64,
}

/// An `INVALID_REQUEST` error listing the failing fields in its details as
/// `{"fields": [{"field", "message"}]}`, the shape the monitor API uses too.
pub(crate) fn invalid(errors: ValidationErrors) -> WireError {
    let details = serde_json::json!({ "fields": errors.0 });
    WireError::invalid_request(errors.to_string()).with_details(details)
}

/// `echo`: answers the request unchanged — the cheapest round trip, which is
/// what latency benchmarks want to measure.
pub(crate) async fn echo(body: Value) -> Result<Value, WireError> {
    Ok(body)
}

/// Who answers the common endpoints. The instance id is chosen before the
/// service starts (`start` functions take it from the options or generate
/// one), so these handlers need no request context — which lets a
/// single-active service register them with `handler_any_role`, for
/// standbys to answer too.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    service: &'static str,
    instance_id: Arc<str>,
    started: Instant,
}

impl Identity {
    /// `instance_id` of `service`, starting now.
    pub(crate) fn new(service: &'static str, instance_id: &str) -> Self {
        Self {
            service,
            instance_id: Arc::from(instance_id),
            started: Instant::now(),
        }
    }
}

/// `health`: an instance that can run this handler is, by definition, up;
/// the reply says which one answered and for how long it has been running.
pub(crate) fn health(
    id: Identity,
) -> impl Fn(Option<Value>) -> futures::future::Ready<Result<Health, WireError>> + Send + Sync + 'static
{
    move |_: Option<Value>| {
        futures::future::ready(Ok(Health {
            status: "healthy".to_owned(),
            service: id.service.to_owned(),
            instance_id: id.instance_id.to_string(),
            version: crate::VERSION.to_owned(),
            uptime_secs: id.started.elapsed().as_secs_f64(),
        }))
    }
}

/// `simulate_work`: a handler whose cost and outcome the caller chooses, to
/// drive load tests and failure demos without touching real business logic.
pub(crate) fn simulate_work(
    id: Identity,
) -> impl Fn(SimulateWork) -> BoxFuture<'static, Result<WorkDone, WireError>> + Send + Sync + 'static
{
    move |req: SimulateWork| {
        let instance_id = id.instance_id.clone();
        Box::pin(async move {
            let sleep = Duration::from_millis(req.ms);
            // Refused up front: a request must not pin a handler for hours.
            if sleep > MAX_SIMULATED_WORK {
                return Err(WireError::invalid_request(format!(
                    "ms must be at most {}",
                    MAX_SIMULATED_WORK.as_millis()
                )));
            }
            tokio::time::sleep(sleep).await;
            if req.fail {
                return Err(WireError::internal("simulated failure (fail=true)"));
            }
            Ok(WorkDone {
                slept_ms: req.ms,
                instance_id: instance_id.to_string(),
            })
        })
    }
}

/// Service-specific counters (`orders_created`, `prices_served`, ...) that
/// end up in the instance's metrics snapshots.
///
/// Handlers are built before the service starts, but the SDK creates the
/// instance's [`InstanceMetrics`] only in `start()`. Counters therefore
/// buffer what is counted until [`attach`](Self::attach) hands them the
/// instance's metrics, and forward from then on. One mutex covers both
/// states, so nothing counted during the hand-over is lost or counted twice.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    state: Mutex<CountersState>,
}

#[derive(Debug, Default)]
struct CountersState {
    pending: BTreeMap<String, f64>,
    metrics: Option<Arc<InstanceMetrics>>,
}

impl Counters {
    /// Counters that publish `names` as 0 until they are first counted, so
    /// dashboards show them from the start.
    pub(crate) fn new(names: &[&str]) -> Self {
        let pending = names.iter().map(|n| ((*n).to_owned(), 0.0)).collect();
        Self {
            state: Mutex::new(CountersState {
                pending,
                metrics: None,
            }),
        }
    }

    /// Adds `delta` to the counter `name`.
    pub(crate) fn add(&self, name: &str, delta: f64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.metrics {
            Some(metrics) => metrics.add_custom(name, delta),
            None => *state.pending.entry(name.to_owned()).or_insert(0.0) += delta,
        }
    }

    /// Starts forwarding to the started service's metrics, after moving
    /// what was counted so far into them.
    pub(crate) fn attach(&self, metrics: Arc<InstanceMetrics>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (name, value) in std::mem::take(&mut state.pending) {
            metrics.add_custom(&name, value);
        }
        state.metrics = Some(metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_what_was_counted_before_attach() {
        let counters = Counters::new(&["served", "idle"]);
        counters.add("served", 2.0);
        let metrics = Arc::new(InstanceMetrics::new("pricing-service", "p1"));
        counters.attach(metrics.clone());
        counters.add("served", 1.0);
        let custom = metrics.snapshot().custom;
        assert_eq!(custom["served"], 3.0);
        assert_eq!(custom["idle"], 0.0);
    }
}
