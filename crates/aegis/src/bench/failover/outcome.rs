//! The result of a failover benchmark: single measured values (there is no
//! raw side to compare with), each with an optional bound, printed as a
//! table and written as JSON together with the benchmark's detailed numbers.

use std::{io::Write, path::Path};

use anyhow::Context;
use serde::Serialize;

/// A bound on one measured value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Bound {
    /// The value must be ≤ this.
    AtMost(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtMost(max) => value <= max,
        }
    }

    fn describe(self) -> String {
        match self {
            Bound::AtMost(max) => format!("<= {}", fmt_num(max)),
        }
    }
}

/// One measured value.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// What was measured.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// The value.
    pub value: f64,
    /// The bound it must respect, if any.
    pub target: Option<Bound>,
    /// Whether the bound holds (true without one).
    pub pass: bool,
}

/// A failover benchmark's full result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `failover --stateless` or `failover --sticky`.
    pub benchmark: String,
    /// The exact command line that produced it.
    pub command: String,
    /// nats-server version used.
    pub server_version: String,
    /// When it ran (RFC 3339 UTC).
    pub started_at: String,
    /// Parameters (instances, rates, rounds, ...).
    pub parameters: serde_json::Value,
    /// The table's rows.
    pub rows: Vec<Measure>,
    /// The benchmark's detailed numbers (per-kill samples, counts, ...).
    pub results: serde_json::Value,
}

impl Outcome {
    /// An empty outcome.
    pub fn new(benchmark: &str, server_version: String, parameters: serde_json::Value) -> Self {
        Self {
            benchmark: benchmark.to_owned(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            server_version,
            started_at: aegis_contracts::models::rfc3339::format_utc(&chrono::Utc::now()),
            parameters,
            rows: Vec::new(),
            results: serde_json::Value::Null,
        }
    }

    /// Sets when the run started (the outcome is built after it ends).
    pub fn set_started(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.started_at = aegis_contracts::models::rfc3339::format_utc(&at);
    }

    /// Adds one measured value.
    pub fn add(&mut self, metric: &str, unit: &str, value: f64, target: Option<Bound>) {
        let pass = target.is_none_or(|t| t.holds(value));
        self.rows.push(Measure {
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            value,
            target,
            pass,
        });
    }

    /// Whether every bound holds.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// Prints the table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "aegis bench {} — nats-server {}",
            self.benchmark, self.server_version
        )?;
        writeln!(out, "{:<46} {:>12} {:>10}  ", "metric", "value", "target")?;
        writeln!(out, "{}", "-".repeat(74))?;
        for r in &self.rows {
            let verdict = match r.target {
                None => "",
                Some(_) if r.pass => "ok",
                Some(_) => "MISSED",
            };
            writeln!(
                out,
                "{:<46} {:>12} {:>10}  {}",
                format!("{} ({})", r.metric, r.unit),
                fmt_num(r.value),
                r.target.map(Bound::describe).unwrap_or_default(),
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

    /// Prints the table and writes the JSON file when asked.
    ///
    /// # Errors
    /// When stdout or the file cannot be written.
    pub fn finish(&self, json: Option<&Path>) -> anyhow::Result<()> {
        self.print(&mut std::io::stdout().lock())?;
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(self)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!("results written to {}", path.display());
        }
        Ok(())
    }
}

fn fmt_num(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Nearest-rank percentile of `samples` (any order); `None` when empty.
/// With 20 samples p99 is the maximum, which is what we want to bound.
pub(crate) fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_percentiles() {
        let mut o = Outcome::new("t", "2.15.1".into(), serde_json::json!({}));
        o.add("failed calls", "calls", 0.0, Some(Bound::AtMost(0.0)));
        o.add("p99", "ms", 501.0, Some(Bound::AtMost(500.0)));
        assert!(o.rows[0].pass);
        assert!(!o.rows[1].pass);
        assert!(!o.passed());
        let mut out = Vec::new();
        o.print(&mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("MISSED"));

        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), Some(10.0));
        assert_eq!(percentile(&s, 0.99), Some(20.0));
        assert_eq!(percentile(&s, 1.0), Some(20.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
