//! The result of every benchmark: one [`Report`] with who ran what, where
//! and when, and rows printed as a table with a verdict and written as
//! JSON. A row is one of three kinds:
//! - [`Row`]: a metric measured on both sides (raw async-nats and the SDK),
//!   their ratio and the target the ratio must meet (`bench rpc`,
//!   `bench events`);
//! - [`Measure`]: a single measured value and the bound it must respect,
//!   when there is no raw side to compare with (`bench failover`,
//!   `bench chaos`, whose report is an [`Outcome`]);
//! - `ScaleRow` (in `scale/report.rs`): a formatted value with the scale
//!   target it must meet (`bench scale`, whose typed numbers go in
//!   `results`).

use std::{io::Write, path::Path};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// What a kind of row tells the report: how to print it and whether it
/// meets its bound.
pub trait TableRow: Serialize {
    /// The table's column headings and the width of the rule under them.
    fn heading() -> (String, usize);
    /// A note on the title line for these rows (none by default).
    fn title_note(_rows: &[Self]) -> String
    where
        Self: Sized,
    {
        String::new()
    }
    /// The row's columns, up to and with its target.
    fn columns(&self) -> String;
    /// What follows the verdict (nothing by default).
    fn trailer(&self) -> String {
        String::new()
    }
    /// Whether the row has a target or bound.
    fn bounded(&self) -> bool;
    /// Whether the target or bound holds (true without one).
    fn pass(&self) -> bool;
}

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

impl TableRow for Row {
    fn heading() -> (String, usize) {
        let heading = format!(
            "{:<34} {:>14} {:>14} {:>8} {:>9}  ",
            "metric", "raw async-nats", "aegis sdk", "sdk/raw", "target"
        );
        (heading, 86)
    }

    fn title_note(rows: &[Self]) -> String {
        let runs = rows.iter().map(|r| r.ratios.len()).max().unwrap_or(0);
        if runs > 1 {
            format!(" — median of {runs} runs, sdk/raw spread in brackets")
        } else {
            String::new()
        }
    }

    fn columns(&self) -> String {
        format!(
            "{:<34} {:>14} {:>14} {:>8.3} {:>9}",
            format!("{} ({})", self.metric, self.unit),
            fmt_num(self.raw),
            fmt_num(self.sdk),
            self.ratio,
            self.target.map(Target::describe).unwrap_or_default(),
        )
    }

    fn trailer(&self) -> String {
        self.spread()
            .map(|(lo, hi)| format!("  [{lo:.3}, {hi:.3}]"))
            .unwrap_or_default()
    }

    fn bounded(&self) -> bool {
        self.target.is_some()
    }

    fn pass(&self) -> bool {
        self.pass
    }
}

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
            Bound::AtMost(max) => format!("<= {}", fmt_value(max)),
        }
    }
}

/// One measured value, with no raw side to compare it with.
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

impl TableRow for Measure {
    fn heading() -> (String, usize) {
        (
            format!("{:<46} {:>12} {:>10}  ", "metric", "value", "target"),
            74,
        )
    }

    fn columns(&self) -> String {
        format!(
            "{:<46} {:>12} {:>10}",
            format!("{} ({})", self.metric, self.unit),
            fmt_value(self.value),
            self.target.map(Bound::describe).unwrap_or_default(),
        )
    }

    fn bounded(&self) -> bool {
        self.target.is_some()
    }

    fn pass(&self) -> bool {
        self.pass
    }
}

/// A row's verdict column: empty without a target, else `ok` or `MISSED`.
pub(crate) fn verdict(bounded: bool, pass: bool) -> &'static str {
    match (bounded, pass) {
        (false, _) => "",
        (true, true) => "ok",
        (true, false) => "MISSED",
    }
}

/// The line under a table: whether its targets are met, or that it judged
/// none (`--only`, a calibration run).
pub(crate) fn summary(passed: bool, judged: bool) -> &'static str {
    match (judged, passed) {
        (false, _) => "no target judged in this run",
        (true, true) => "all targets met",
        (true, false) => "SOME TARGETS MISSED (see MISSED rows)",
    }
}

/// Writes a report as pretty JSON to `path`.
pub(crate) fn write_json(report: &impl Serialize, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The report of a benchmark that measures single values (failover, chaos).
pub type Outcome = Report<Measure>;

/// A benchmark's full result; `R` is the kind of its rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report<R = Row> {
    /// `rpc`, `rpc --registry`, `events`, `failover --sticky`, `chaos`, ...
    pub benchmark: String,
    /// The exact command line that produced it.
    pub command: String,
    /// nats-server version used.
    pub server_version: String,
    /// When it ran (RFC 3339 UTC).
    pub started_at: String,
    /// Free-form parameters (calls, batch size, concurrency, rounds, ...).
    pub parameters: serde_json::Value,
    /// The measurements.
    pub rows: Vec<R>,
    /// The benchmark's detailed numbers (per-kill samples, counts, ...),
    /// when the rows do not say everything.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub results: serde_json::Value,
}

impl<R: TableRow> Report<R> {
    /// An empty report.
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

    /// Sets when the run started (for a report built after the run).
    pub fn set_started(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.started_at = aegis_contracts::models::rfc3339::format_utc(&at);
    }

    /// Whether every target holds.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(TableRow::pass)
    }

    /// Prints the table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "aegis bench {} — nats-server {}{}",
            self.benchmark,
            self.server_version,
            R::title_note(&self.rows)
        )?;
        let (heading, width) = R::heading();
        writeln!(out, "{heading}")?;
        writeln!(out, "{}", "-".repeat(width))?;
        for r in &self.rows {
            let verdict = verdict(r.bounded(), r.pass());
            writeln!(out, "{}  {}{}", r.columns(), verdict, r.trailer())?;
        }
        writeln!(out)?;
        let judged = self.rows.iter().any(TableRow::bounded);
        writeln!(out, "{}", summary(self.passed(), judged))
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_json(self, path)
    }

    /// Prints the table and writes the JSON file when asked.
    ///
    /// # Errors
    /// When stdout or the file cannot be written.
    pub fn finish(&self, json: Option<&Path>) -> anyhow::Result<()> {
        self.print(&mut std::io::stdout().lock())?;
        if let Some(path) = json {
            self.write_json(path)?;
            println!("results written to {}", path.display());
        }
        Ok(())
    }
}

impl Outcome {
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
}

impl Report<Row> {
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

    /// Adds one compared metric measured in rounds that alternate the
    /// sides: `raw[i]` and `sdk[i]` were measured in round `i`, close in
    /// time. The row shows each side's mean; its ratio is the median of
    /// the rounds' own ratios, so a stall of the machine during one round
    /// of one side moves it no more than any other round.
    pub fn add_paired(
        &mut self,
        metric: &str,
        unit: &str,
        raw: &[f64],
        sdk: &[f64],
        target: Option<Target>,
    ) {
        let pairs: Vec<f64> = raw
            .iter()
            .zip(sdk)
            .filter(|(r, _)| **r > 0.0)
            .map(|(r, s)| s / r)
            .collect();
        let ratio = median(pairs);
        let pass = target.is_none_or(|t| t.holds(ratio));
        self.rows.push(Row {
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            raw: mean(raw),
            sdk: mean(sdk),
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
}

/// The median (the mean of the middle two for an even count).
/// The mean of per-round rates; 0 for a side that did not run.
pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

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

/// A single measured value: whole numbers and large values without
/// decimals.
fn fmt_value(v: f64) -> String {
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
    fn paired_rounds_take_the_median_of_their_own_ratios() {
        let mut r: Report = Report::new("t", "2.15.1".into(), serde_json::json!({}));
        // Round 2's raw side stalled: the ratio of the means would say
        // 1.31; the rounds say 0.9 three times out of four.
        let raw = [100.0, 100.0, 50.0, 100.0];
        let sdk = [90.0, 90.0, 95.0, 90.0];
        r.add_paired("tput", "ops/s", &raw, &sdk, Some(Target::AtLeast(0.95)));
        let row = &r.rows[0];
        assert!((row.ratio - 0.9).abs() < 1e-9, "{}", row.ratio);
        assert!(!row.pass);
        assert!((row.raw - 87.5).abs() < 1e-9 && (row.sdk - 91.25).abs() < 1e-9);
        // A side that did not run (`--only`) has no ratio.
        r.add_paired("alone", "ops/s", &[], &sdk, None);
        assert!(r.rows[1].ratio.is_nan() && r.rows[1].pass);
    }

    #[test]
    fn targets_and_ratios() {
        let mut r: Report = Report::new("t", "2.15.1".into(), serde_json::json!({}));
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

    #[test]
    fn bounds_and_percentiles() {
        let mut o = Outcome::new("t", "2.15.1".into(), serde_json::json!({}));
        o.add("failed calls", "calls", 0.0, Some(Bound::AtMost(0.0)));
        o.add("p99", "ms", 501.0, Some(Bound::AtMost(500.0)));
        o.add("rounds", "rounds", 20.0, None);
        assert!(o.rows[0].pass);
        assert!(!o.rows[1].pass);
        assert!(!o.passed());
        let mut out = Vec::new();
        o.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("p99 (ms)"), "{text}");
        assert!(text.contains("MISSED"), "{text}");
        assert!(!serde_json::to_string(&o).unwrap().contains("results"));
        o.results = serde_json::json!({"kills": 20});
        assert!(
            serde_json::to_string(&o)
                .unwrap()
                .contains("\"results\":{\"kills\":20}")
        );

        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), Some(10.0));
        assert_eq!(percentile(&s, 0.99), Some(20.0));
        assert_eq!(percentile(&s, 1.0), Some(20.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn run(tput_sdk: f64, p99_sdk: f64) -> Report {
        let mut r: Report = Report::new("t", "2.15.1".into(), serde_json::json!({"calls": 10}));
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
