//! The result of `aegis bench scale`: every number measured, the targets of
//! the scale work next to those they bound, printed as a table and written
//! as JSON (what `scripts/plot-scale.py` draws).

use serde::Serialize;

use crate::bench::report::{Report, TableRow};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleResults {
    /// Registered instances.
    pub instances: usize,
    /// Length of the measured window, s.
    pub window_secs: f64,
    /// Live instances whose record expired during the window.
    pub false_expiries: usize,
    /// The first of them.
    pub false_expired_ids: Vec<String>,
    /// Registry deliveries (watch messages + liveness beats) on the whole bus, msgs/s.
    pub bus_registry_msgs_per_s: f64,
    /// Their bytes/s (estimated from the stored record size).
    pub bus_registry_bytes_per_s: f64,
    /// Of which KV watch messages, msgs/s.
    pub bus_watch_msgs_per_s: f64,
    /// Of which liveness beats, msgs/s.
    pub bus_beat_msgs_per_s: f64,
    /// Registry deliveries to one caller process, msgs/s (mean over callers).
    pub caller_registry_msgs_per_s: f64,
    /// Their bytes/s.
    pub caller_registry_bytes_per_s: f64,
    /// Registry deliveries to every other connection (the monitor and the
    /// benchmark's own full watch), msgs/s.
    pub other_registry_msgs_per_s: f64,
    /// CPU of one caller process, % of a core (calls, probes and registry
    /// upkeep; mean over callers).
    pub caller_cpu_pct: f64,
    /// CPU of a process that only keeps the view of a caller's two services
    /// (looked up every second, no calls), % of a core: the registry upkeep.
    pub upkeep_cpu_pct: f64,
    /// Registry deliveries to one such process, msgs/s.
    pub watcher_registry_msgs_per_s: f64,
    /// CPU of the worker processes per instance, % of a core.
    pub instance_cpu_pct: f64,
    /// A new instance visible in a caller's view, ms: p50, p99.
    pub new_visible_ms: (f64, f64),
    /// New instances not seen within 5 s.
    pub new_not_seen: u64,
    /// A SIGKILLed instance no longer shown ACTIVE by the monitor, ms: p50, p99.
    pub crash_monitor_ms: (f64, f64),
    /// Crashes the monitor did not show within 4 s.
    pub crash_monitor_missed: usize,
    /// A SIGKILLed instance's record removed from the registry, ms: p50, p99.
    pub crash_removed_ms: (f64, f64),
    /// `GET /api/instances` at 50 req/s.
    pub list_full_50: LoadResult,
    /// `GET /api/instances/{service}` at 50 req/s.
    pub list_service_50: LoadResult,
    /// `GET /api/instances` at 500 req/s (after the window).
    pub list_full_500: Option<LoadResult>,
    /// `GET /api/instances/{service}` at 500 req/s (after the window).
    pub list_service_500: Option<LoadResult>,
    /// SSE delay from an acknowledged registration to its event, ms: p50, p99.
    pub sse_delay_ms: (f64, f64),
    /// Probe events some client never received.
    pub sse_missed: usize,
    /// Probe events that came before the probe's acknowledgement was noted
    /// (counted as 0 ms).
    pub sse_early: usize,
    /// SSE clients told they lagged.
    pub sse_lagged_clients: usize,
    /// SSE clients whose stream broke.
    pub sse_broken_clients: usize,
    /// SSE probe registrations or deregistrations that failed (timed out).
    pub probe_write_failures: u64,
    /// SDK call latency, µs: p50, p99 (mean over callers).
    pub rpc_sdk_us: [f64; 2],
    /// Raw async-nats request latency at the same time, µs: p50, p99.
    pub rpc_raw_us: [f64; 2],
    /// SDK calls made.
    pub rpc_calls: u64,
    /// SDK calls failed.
    pub rpc_errors: u64,
}

/// Latencies of one fixed-rate load.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadResult {
    /// Requests per second asked for.
    pub rate: f64,
    /// Requests per second answered.
    pub achieved: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests the monitor failed: an HTTP error status, or no answer.
    pub failed: u64,
    /// Requests not sent: the benchmark's own client had its most in
    /// flight (its saturation, not the monitor's failure).
    pub not_sent: u64,
    /// Mean response body size, bytes.
    pub mean_bytes: f64,
}

/// One printed line.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// What was measured.
    pub metric: String,
    /// The value, formatted.
    pub value: String,
    /// The target from the scale issue, if one bounds it.
    pub target: Option<String>,
    /// Whether it holds (true without a target).
    pub pass: bool,
}

impl TableRow for ScaleRow {
    fn heading() -> (String, usize) {
        (
            format!("{:<46} {:>30} {:>12}  ", "metric", "value", "target"),
            98,
        )
    }

    fn columns(&self) -> String {
        format!(
            "{:<46} {:>30} {:>12}",
            self.metric,
            self.value,
            self.target.as_deref().unwrap_or("")
        )
    }

    fn bounded(&self) -> bool {
        self.target.is_some()
    }

    fn pass(&self) -> bool {
        self.pass
    }
}

/// A whole run: the shared benchmark report, its rows the table above and
/// its `results` the [`ScaleResults`] (what the plot script reads).
pub type ScaleReport = Report<ScaleRow>;

/// Builds the report of a run from its numbers.
///
/// # Errors
/// When the numbers cannot be written as JSON (a float that is not finite
/// is written as `null`, so in practice never).
pub fn scale_report(
    server_version: String,
    started_at: chrono::DateTime<chrono::Utc>,
    parameters: serde_json::Value,
    results: &ScaleResults,
) -> anyhow::Result<ScaleReport> {
    let mut report = Report::new("scale", server_version, parameters);
    report.set_started(started_at);
    report.rows = rows(results);
    report.results = serde_json::to_value(results)?;
    Ok(report)
}

fn row(metric: &str, value: String, target: Option<(&str, bool)>) -> ScaleRow {
    ScaleRow {
        metric: metric.to_owned(),
        value,
        target: target.map(|(t, _)| t.to_owned()),
        pass: target.is_none_or(|(_, ok)| ok),
    }
}

fn pair(p: (f64, f64), unit: &str) -> String {
    format!("{:.1} / {:.1} {unit}", p.0, p.1)
}

fn load(l: &LoadResult) -> String {
    let not_sent = if l.not_sent > 0 {
        format!(
            ", {} not sent: the benchmark's client had {} in flight",
            l.not_sent,
            super::monitor::MAX_IN_FLIGHT
        )
    } else {
        String::new()
    };
    format!(
        "{:.1} / {:.1} ms ({:.0}/s, {} failed{not_sent})",
        l.p50_ms, l.p99_ms, l.achieved, l.failed
    )
}

fn rows(r: &ScaleResults) -> Vec<ScaleRow> {
    let mut rows = vec![
        row("instances registered", r.instances.to_string(), None),
        row(
            "false expiries",
            r.false_expiries.to_string(),
            Some(("0", r.false_expiries == 0)),
        ),
        row(
            "registry deliveries, bus (msgs/s)",
            format!(
                "{:.0} ({:.0} watch + {:.0} beats)",
                r.bus_registry_msgs_per_s, r.bus_watch_msgs_per_s, r.bus_beat_msgs_per_s
            ),
            None,
        ),
        row(
            "registry bytes, bus (est., KB/s)",
            format!("{:.0}", r.bus_registry_bytes_per_s / 1e3),
            None,
        ),
        row(
            "registry deliveries per caller (msgs/s)",
            format!("{:.1}", r.caller_registry_msgs_per_s),
            None,
        ),
        row(
            "registry bytes per caller (est., KB/s)",
            format!("{:.1}", r.caller_registry_bytes_per_s / 1e3),
            None,
        ),
        row(
            "registry deliveries, monitor + rest (msgs/s)",
            format!("{:.0}", r.other_registry_msgs_per_s),
            None,
        ),
        row(
            "CPU per caller process, all its work (% core)",
            format!("{:.2}", r.caller_cpu_pct),
            None,
        ),
        row(
            "CPU of a caller's registry upkeep (% core)",
            format!(
                "{:.3} ({:.1} msgs/s)",
                r.upkeep_cpu_pct, r.watcher_registry_msgs_per_s
            ),
            Some(("< 1", r.upkeep_cpu_pct < 1.0)),
        ),
        row(
            "CPU per instance (% core)",
            format!("{:.3}", r.instance_cpu_pct),
            None,
        ),
        row(
            "new instance visible p50 / p99",
            pair(r.new_visible_ms, "ms"),
            Some((
                "p99 <= 100",
                r.new_visible_ms.1 <= 100.0 && r.new_not_seen == 0,
            )),
        ),
        row(
            "crash shown by monitor p50 / p99",
            format!(
                "{} ({} missed)",
                pair(r.crash_monitor_ms, "ms"),
                r.crash_monitor_missed
            ),
            Some((
                "p99 <= 1000",
                r.crash_monitor_ms.1 <= 1000.0 && r.crash_monitor_missed == 0,
            )),
        ),
        row(
            "crash removed from registry p50 / p99",
            pair(r.crash_removed_ms, "ms"),
            None,
        ),
        row(
            "GET /api/instances @50/s p50 / p99",
            load(&r.list_full_50),
            Some(("p99 <= 50", r.list_full_50.p99_ms <= 50.0)),
        ),
        row(
            "GET /api/instances/{svc} @50/s p50 / p99",
            load(&r.list_service_50),
            Some(("p99 <= 10", r.list_service_50.p99_ms <= 10.0)),
        ),
    ];
    if let Some(l) = &r.list_full_500 {
        rows.push(row("GET /api/instances @500/s p50 / p99", load(l), None));
    }
    if let Some(l) = &r.list_service_500 {
        rows.push(row(
            "GET /api/instances/{svc} @500/s p50 / p99",
            load(l),
            None,
        ));
    }
    rows.extend([
        row(
            "SSE delay p50 / p99 (20 clients)",
            format!(
                "{} ({} missed, {} before the ack, {} probe writes failed)",
                pair(r.sse_delay_ms, "ms"),
                r.sse_missed,
                r.sse_early,
                r.probe_write_failures
            ),
            Some(("p99 <= 250", r.sse_delay_ms.1 <= 250.0)),
        ),
        row(
            "SSE clients lagged / broken",
            format!("{} / {}", r.sse_lagged_clients, r.sse_broken_clients),
            Some(("0", r.sse_lagged_clients == 0 && r.sse_broken_clients == 0)),
        ),
        row(
            "RPC sdk p50 / p99",
            format!("{:.0} / {:.0} µs", r.rpc_sdk_us[0], r.rpc_sdk_us[1]),
            None,
        ),
        row(
            "RPC raw async-nats p50 / p99",
            format!("{:.0} / {:.0} µs", r.rpc_raw_us[0], r.rpc_raw_us[1]),
            None,
        ),
        row(
            "RPC p99 sdk / raw",
            format!("{:.3}", r.rpc_sdk_us[1] / r.rpc_raw_us[1]),
            Some(("<= 1.05", r.rpc_sdk_us[1] / r.rpc_raw_us[1] <= 1.05)),
        ),
        row(
            "RPC calls / errors",
            format!("{} / {}", r.rpc_calls, r.rpc_errors),
            Some(("0 errors", r.rpc_errors == 0)),
        ),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(failed: u64, not_sent: u64) -> LoadResult {
        LoadResult {
            rate: 500.0,
            achieved: 480.0,
            p50_ms: 1.25,
            p99_ms: 9.5,
            failed,
            not_sent,
            mean_bytes: 1000.0,
        }
    }

    /// The scale trial read "72 failed" at 500 requests a second on a
    /// loaded host, of which most were the benchmark's own client holding
    /// 64 requests: an operator would have suspected the monitor.
    #[test]
    fn requests_not_sent_are_not_counted_as_the_monitors_failures() {
        assert_eq!(load(&at(0, 0)), "1.2 / 9.5 ms (480/s, 0 failed)");
        assert_eq!(
            load(&at(17, 72)),
            "1.2 / 9.5 ms (480/s, 17 failed, 72 not sent: the benchmark's client had 64 in flight)"
        );
    }
}
