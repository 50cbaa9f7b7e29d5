//! What one benchmark run measured, as a table for people and JSON for tools.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant digits, so every
//! percentile is within 0.1% of the true value) and reported in microseconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::schedule::Pacing;
use crate::workload::WorkloadSpec;

/// The longest latency a histogram holds (longer ones are recorded as this): 10 minutes.
pub const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// A latency histogram in nanoseconds, from 1 ns to [`LATENCY_NS_MAX`], 3 significant digits.
///
/// # Errors
/// Only if hdrhistogram refused these constant bounds.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
}

/// Records `nanos` into `histogram`, clamped to its range.
pub fn record(histogram: &mut Histogram<u64>, nanos: u64) {
    let value = nanos.clamp(1, LATENCY_NS_MAX);
    let _ = histogram.record(value);
}

/// Latency percentiles of a set of operations, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Operations measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of nanoseconds.
    #[must_use]
    pub fn from_histogram(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |nanos: u64| nanos as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            mean_us: histogram.mean() / 1000.0,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

/// The result of one benchmark run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// What was driven, as the user named it (`chorus-raft`, `etcd`, `redis`, ...).
    pub target: String,
    /// The kind of target (`chorus`, `resp`, `etcd`).
    pub target_kind: String,
    /// The workload.
    pub workload: WorkloadSpec,
    /// Concurrent clients (requests in flight in total).
    pub clients: usize,
    /// Requests in flight per connection (clients sharing one connection).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// Connections: `clients / in_flight`.
    #[serde(default)]
    pub connections: usize,
    /// The round of a comparison this run belongs to, from 0 (0 outside a comparison).
    #[serde(default)]
    pub round: u64,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// Seconds of warm-up, not measured.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Operations that succeeded in the measured window.
    pub ops: u64,
    /// Operations that ended in an error in the measured window.
    pub errors: u64,
    /// Open loop only: operations due in the window that no client could send before the run
    /// ended (the target fell that far behind).
    pub missed: u64,
    /// Successful operations per second of the measured window.
    pub ops_per_sec: f64,
    /// Latency of every successful operation.
    pub latency: LatencySummary,
    /// Latency of the reads alone (when there were any).
    pub reads: Option<LatencySummary>,
    /// Latency of the writes alone (when there were any).
    pub writes: Option<LatencySummary>,
    /// Errors by message (the first few dozen kinds).
    pub error_kinds: BTreeMap<String, u64>,
}

fn one() -> usize {
    1
}

/// The most distinct error messages a report keeps; the rest count as `other`.
pub const ERROR_KINDS_MAX: usize = 32;

/// Counts `count` errors with `message` into `kinds`, keeping at most [`ERROR_KINDS_MAX`]
/// kinds.
pub fn count_error(kinds: &mut BTreeMap<String, u64>, message: &str, count: u64) {
    let mut message: String = message.chars().take(120).collect();
    if !kinds.contains_key(&message) && kinds.len() >= ERROR_KINDS_MAX {
        message = "other".to_string();
    }
    *kinds.entry(message).or_insert(0) += count;
}

fn format_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

/// The human table of a set of runs: one row per run.
#[must_use]
pub fn format_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<11} {:>7} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "target",
        "workload",
        "clients",
        "in-flight",
        "ops/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "ops",
        "errors"
    );
    for report in reports {
        let l = &report.latency;
        let _ = writeln!(
            out,
            "{:<14} {:<11} {:>7} {:>9} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            report.target,
            report.workload.mix.name(),
            report.clients,
            report.in_flight,
            report.ops_per_sec,
            format_us(l.p50_us),
            format_us(l.p90_us),
            format_us(l.p99_us),
            format_us(l.p999_us),
            format_us(l.max_us),
            report.ops,
            report.errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Mix;

    fn report(histogram: &Histogram<u64>) -> Report {
        Report {
            target: "fake".into(),
            target_kind: "resp".into(),
            workload: WorkloadSpec {
                mix: Mix::WriteOnly,
                key_count: 10,
                key_size: 16,
                value_size: 100,
                seed: 1,
            },
            clients: 4,
            in_flight: 1,
            connections: 4,
            round: 0,
            pacing: Pacing::Closed,
            warmup_s: 1.0,
            duration_s: 2.0,
            ops: histogram.len(),
            errors: 0,
            missed: 0,
            ops_per_sec: histogram.len() as f64 / 2.0,
            latency: LatencySummary::from_histogram(histogram),
            reads: None,
            writes: Some(LatencySummary::from_histogram(histogram)),
            error_kinds: BTreeMap::new(),
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = new_histogram().expect("a histogram");
        // 1..=1000 microseconds, once each.
        for us in 1..=1000u64 {
            record(&mut histogram, us * 1000);
        }
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 1000);
        let near = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.002;
        assert!(near(summary.p50_us, 500.0), "{summary:?}");
        assert!(near(summary.p90_us, 900.0), "{summary:?}");
        assert!(near(summary.p99_us, 990.0), "{summary:?}");
        assert!(near(summary.p999_us, 999.0), "{summary:?}");
        assert!(near(summary.max_us, 1000.0), "{summary:?}");
        assert!(near(summary.mean_us, 500.5), "{summary:?}");
    }

    #[test]
    fn an_empty_histogram_summarizes_to_zeros() {
        let summary = LatencySummary::from_histogram(&new_histogram().expect("a histogram"));
        assert_eq!(summary, LatencySummary::default());
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut histogram = new_histogram().expect("a histogram");
        record(&mut histogram, 0);
        record(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
    }

    #[test]
    fn the_table_has_a_header_and_a_row_per_run() {
        let mut histogram = new_histogram().expect("a histogram");
        record(&mut histogram, 1_500_000);
        record(&mut histogram, 250_000);
        let table = format_table(&[report(&histogram), report(&histogram)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        for column in ["ops/s", "p50", "p90", "p99", "p99.9", "max"] {
            assert!(lines[0].contains(column), "{}", lines[0]);
        }
        assert!(lines[1].starts_with("fake"), "{}", lines[1]);
        assert!(lines[1].contains("1.50ms"), "{}", lines[1]);
        assert!(lines[1].contains("write"), "{}", lines[1]);
    }

    #[test]
    fn reports_round_trip_through_json() {
        let mut histogram = new_histogram().expect("a histogram");
        record(&mut histogram, 42_000);
        let report = report(&histogram);
        let json = serde_json::to_string(&report).expect("encodes");
        assert!(json.contains("\"p99_us\""), "{json}");
        assert!(json.contains("\"ops_per_sec\""), "{json}");
        let back: Report = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, report);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut kinds = BTreeMap::new();
        for i in 0..100 {
            count_error(&mut kinds, &format!("error {i}"), 1);
        }
        count_error(&mut kinds, "error 0", 1);
        assert_eq!(kinds.len(), ERROR_KINDS_MAX + 1);
        assert_eq!(kinds["error 0"], 2);
        assert_eq!(kinds["other"], 100 - ERROR_KINDS_MAX as u64);
    }
}
