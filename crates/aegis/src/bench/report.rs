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
    /// With `--runs N` (N > 1): each run's ratio, in run order; `ratio`
    /// is then their median and the target is judged on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<f64>,
}

impl Row {
    /// The lowest and highest ratio over the runs, when there were several.
    pub fn spread(&self) -> Option<(f64, f64)> {
        let min = self.ratios.iter().copied().reduce(f64::min)?;
        let max = self.ratios.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
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
            ratios: Vec::new(),
        });
    }

    /// One report from several runs of the same benchmark: each row's raw,
    /// SDK and ratio are the medians over the runs, each run's ratio is
    /// kept, and targets are judged on the median ratio (one noisy run
    /// neither passes nor fails it). `parameters.runs` says how many.
    ///
    /// # Errors
    /// When there is no run, or the runs measured different rows.
    pub fn median_of(runs: Vec<Report>) -> anyhow::Result<Report> {
        let first = runs.first().context("no run to take the median of")?;
        for run in &runs {
            let names = |r: &Report| r.rows.iter().map(|x| x.metric.clone()).collect::<Vec<_>>();
            anyhow::ensure!(
                names(run) == names(first),
                "the runs measured different rows: {:?} and {:?}",
                names(first),
                names(run)
            );
        }
        let mut out = first.clone();
        if let Some(map) = out.parameters.as_object_mut() {
            map.insert("runs".into(), runs.len().into());
        }
        for (i, row) in out.rows.iter_mut().enumerate() {
            let column = |f: fn(&Row) -> f64| median(runs.iter().map(|r| f(&r.rows[i])).collect());
            row.raw = column(|r| r.raw);
            row.sdk = column(|r| r.sdk);
            row.ratios = runs.iter().map(|r| r.rows[i].ratio).collect();
            row.ratio = median(row.ratios.clone());
            row.pass = row.target.is_none_or(|t| t.holds(row.ratio));
        }
        Ok(out)
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
        let runs = self.rows.iter().map(|r| r.ratios.len()).max().unwrap_or(0);
        writeln!(out)?;
        writeln!(
            out,
            "aegis bench {} — nats-server {}{}",
            self.benchmark,
            self.server_version,
            if runs > 1 {
                format!(" — median of {runs} runs, sdk/raw spread in brackets")
            } else {
                String::new()
            }
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
            let spread = r
                .spread()
                .map(|(lo, hi)| format!("  [{lo:.3}, {hi:.3}]"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:<34} {:>14} {:>14} {:>8.3} {:>9}  {}{}",
                format!("{} ({})", r.metric, r.unit),
                fmt_num(r.raw),
                fmt_num(r.sdk),
                r.ratio,
                r.target.map(Target::describe).unwrap_or_default(),
                verdict,
                spread
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

/// The median (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
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

    fn run(tput_sdk: f64, p99_sdk: f64) -> Report {
        let mut r = Report::new("t", "2.15.1".into(), serde_json::json!({"calls": 10}));
        r.add("p99", "µs", 100.0, p99_sdk, Some(Target::AtMost(1.05)));
        r.add(
            "tput",
            "ops/s",
            1000.0,
            tput_sdk,
            Some(Target::AtLeast(0.90)),
        );
        r
    }

    #[test]
    fn the_median_of_runs_judges_the_target_and_keeps_the_spread() {
        // One bad run among three neither fails the median ...
        let r = Report::median_of(vec![
            run(950.0, 101.0),
            run(700.0, 130.0),
            run(920.0, 103.0),
        ])
        .unwrap();
        assert_eq!(r.parameters["runs"], 3);
        assert_eq!(r.parameters["calls"], 10);
        assert!((r.rows[1].ratio - 0.92).abs() < 1e-9, "{:?}", r.rows[1]);
        assert_eq!(r.rows[1].sdk, 920.0);
        assert_eq!(r.rows[1].ratios, vec![0.95, 0.7, 0.92]);
        assert_eq!(r.rows[1].spread(), Some((0.7, 0.95)));
        assert!(r.passed(), "{:?}", r.rows);
        // ... and one good run among bad ones does not pass it; an even
        // count takes the mean of the middle two.
        let r = Report::median_of(vec![
            run(850.0, 101.0),
            run(950.0, 101.0),
            run(860.0, 101.0),
            run(880.0, 101.0),
        ])
        .unwrap();
        assert!((r.rows[1].ratio - 0.87).abs() < 1e-9, "{:?}", r.rows[1]);
        assert!(!r.passed());
        let mut out = Vec::new();
        r.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("median of 4 runs"), "{text}");
        assert!(text.contains("[0.850, 0.950]"), "{text}");
        // A single run prints and serializes as before.
        let single = run(950.0, 101.0);
        assert!(single.rows[0].spread().is_none());
        assert!(!serde_json::to_string(&single).unwrap().contains("ratios"));
    }

    #[test]
    fn runs_that_measured_different_rows_are_refused() {
        let mut other = run(900.0, 100.0);
        other.rows.pop();
        let e = Report::median_of(vec![run(900.0, 100.0), other]).unwrap_err();
        assert!(e.to_string().contains("different rows"), "{e}");
        assert!(Report::median_of(Vec::new()).is_err());
    }
}
