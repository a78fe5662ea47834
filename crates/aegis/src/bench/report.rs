//! The result of a benchmark: metrics measured on both sides, their ratio,
//! the target where there is one, printed as a table and written as JSON.

use std::{io::Write, path::Path};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// What a target bounds: the SDK/raw ratio at most, or at least, a value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(tag = "kind", content = "ratio", rename_all = "snake_case")]
pub enum Target {
    /// SDK / raw must be ≤ this (latency).
    AtMost(f64),
    /// SDK / raw must be ≥ this (throughput).
    AtLeast(f64),
}

impl Target {
    fn holds(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(t) => ratio <= t,
            Target::AtLeast(t) => ratio >= t,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t:.2}"),
            Target::AtLeast(t) => format!(">= {t:.2}"),
        }
    }
}

/// One metric measured on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// Baseline value.
    pub raw: f64,
    /// SDK value.
    pub sdk: f64,
    /// `sdk / raw`.
    pub ratio: f64,
    /// The bound the ratio must respect, if any.
    pub target: Option<Target>,
    /// Whether the target holds (true without a target).
    pub pass: bool,
}

/// A benchmark's full result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `rpc`, `rpc --registry`, `events`, ...
    pub benchmark: String,
    /// The exact command line that produced it.
    pub command: String,
    /// nats-server version used.
    pub server_version: String,
    /// When it ran (RFC 3339 UTC).
    pub started_at: String,
    /// Free-form parameters (calls, batch size, concurrency, ...).
    pub parameters: serde_json::Value,
    /// The measurements.
    pub rows: Vec<Row>,
}

impl Report {
    /// An empty report.
    pub fn new(benchmark: &str, server_version: String, parameters: serde_json::Value) -> Self {
        Self {
            benchmark: benchmark.to_owned(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            server_version,
            started_at: aegis_contracts::models::rfc3339::format_utc(&chrono_now()),
            parameters,
            rows: Vec::new(),
        }
    }

    /// Adds one compared metric.
    pub fn add(&mut self, metric: &str, unit: &str, raw: f64, sdk: f64, target: Option<Target>) {
        let ratio = if raw > 0.0 { sdk / raw } else { f64::NAN };
        let pass = target.is_none_or(|t| t.holds(ratio));
        self.rows.push(Row {
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            raw,
            sdk,
            ratio,
            target,
            pass,
        });
    }

    /// Adds p50/p90/p99/p99.9 rows (microseconds) from two histograms in
    /// nanoseconds; `p99_target` bounds the p99 ratio.
    pub fn add_latency(
        &mut self,
        what: &str,
        raw: &Histogram<u64>,
        sdk: &Histogram<u64>,
        p99_target: Option<Target>,
    ) {
        for (label, q) in [
            ("p50", 0.50),
            ("p90", 0.90),
            ("p99", 0.99),
            ("p99.9", 0.999),
        ] {
            let us = |h: &Histogram<u64>| h.value_at_quantile(q) as f64 / 1000.0;
            let target = if label == "p99" { p99_target } else { None };
            self.add(&format!("{what} {label}"), "µs", us(raw), us(sdk), target);
        }
    }

    /// Whether every target holds.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// Prints the comparison table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "aegis bench {} — nats-server {}",
            self.benchmark, self.server_version
        )?;
        writeln!(
            out,
            "{:<34} {:>14} {:>14} {:>8} {:>9}  ",
            "metric", "raw async-nats", "aegis sdk", "sdk/raw", "target"
        )?;
        writeln!(out, "{}", "-".repeat(86))?;
        for r in &self.rows {
            let verdict = match r.target {
                None => "",
                Some(_) if r.pass => "ok",
                Some(_) => "MISSED",
            };
            writeln!(
                out,
                "{:<34} {:>14} {:>14} {:>8.3} {:>9}  {}",
                format!("{} ({})", r.metric, r.unit),
                fmt_num(r.raw),
                fmt_num(r.sdk),
                r.ratio,
                r.target.map(Target::describe).unwrap_or_default(),
                verdict
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{}",
            if self.passed() {
                "all targets met"
            } else {
                "SOME TARGETS MISSED (see MISSED rows)"
            }
        )?;
        Ok(())
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_ratios() {
        let mut r = Report::new("t", "2.15.1".into(), serde_json::json!({}));
        r.add("lat", "µs", 100.0, 104.0, Some(Target::AtMost(1.05)));
        r.add("tput", "ops/s", 1000.0, 850.0, Some(Target::AtLeast(0.90)));
        assert!(r.rows[0].pass);
        assert!(!r.rows[1].pass);
        assert!(!r.passed());
        let mut out = Vec::new();
        r.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("MISSED"));
    }
}
