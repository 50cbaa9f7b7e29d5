//! One benchmark run: N clients drive a target for a warm-up and a measured window.
//!
//! Every client is a tokio task with its own connection (or, with `in_flight` > 1, a share of
//! a connection that `in_flight` clients pipeline their requests on), its own operation
//! generator and its own histograms (merged at the end, so the hot path shares nothing but two counters). In a
//! closed loop a client sends its next operation when the last returns; in an open loop the
//! clients take the next due operation from one shared schedule, wait for its due time, and
//! are charged from that time (see [`crate::schedule`]). A closed loop measures the operations
//! that complete inside the window, an open loop those due inside it. With `record_history`,
//! every operation (warm-up included) is kept in the HISTORY.md format, up to
//! [`HISTORY_OPS_MAX`] of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chorus_check::history::{OpKind, OpStatus, Operation, Output};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::report::{LatencySummary, Report, count_error, new_histogram, record};
use crate::schedule::{Pacing, charged_latency, due_offset};
use crate::target::{Connection, TargetSpec};
use crate::workload::{Op, WorkloadSpec};

/// The most operations one run records into its history.
pub const HISTORY_OPS_MAX: usize = 5_000_000;

/// The most concurrent clients one run may have.
pub const CLIENTS_MAX: usize = 10_000;

/// Everything that defines one run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// A name for the target in reports (`chorus-raft`, `redis`, ...).
    pub label: String,
    /// What to drive.
    pub target: TargetSpec,
    /// The operations.
    pub workload: WorkloadSpec,
    /// Concurrent clients: requests in flight in total.
    pub clients: usize,
    /// Clients per connection: each connection carries this many requests at once
    /// (`clients / in_flight` connections; 1: a connection per client).
    pub in_flight: usize,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// How long to run before measuring.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Keep every operation in the HISTORY.md format.
    pub record_history: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// A run's report and, if asked, its history.
#[derive(Debug)]
pub struct Outcome {
    /// The measurements.
    pub report: Report,
    /// Every operation, on one clock in nanoseconds from the start; `None` unless recorded.
    pub history: Option<Vec<Operation>>,
    /// True if the history hit [`HISTORY_OPS_MAX`] and is cut short.
    pub history_truncated: bool,
}

/// What one client measured.
struct ClientResult {
    all: Histogram<u64>,
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    missed: u64,
    history: Vec<Operation>,
}

/// What the clients share.
struct Shared {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    pacing: Pacing,
    /// The next open-loop operation to take.
    next_due: AtomicU64,
    /// Operations finished so far (for the progress bar).
    done: AtomicU64,
    /// Operations recorded into histories so far (bounded by `HISTORY_OPS_MAX`).
    history_len: AtomicU64,
    history_full: AtomicBool,
    record_history: bool,
}

/// Runs one benchmark.
///
/// # Errors
/// When the configuration is invalid or the clients cannot connect. Errors of single
/// operations are counted in the report, not returned.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Outcome> {
    config.workload.validate()?;
    anyhow::ensure!(
        (1..=CLIENTS_MAX).contains(&config.clients),
        "the number of clients must be between 1 and {CLIENTS_MAX}"
    );
    anyhow::ensure!(
        !config.duration.is_zero(),
        "the measured duration must be longer than zero"
    );
    if let Pacing::Open { rate } = config.pacing {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the open-loop rate must be a positive number of operations per second"
        );
    }
    let connection_count = connection_count(config.clients, config.in_flight)?;
    let mut connections = Vec::with_capacity(config.clients);
    for index in 0..connection_count {
        let connection = config
            .target
            .connect_shared(index, config.in_flight)
            .await
            .with_context(|| format!("connection {index} cannot connect to {}", config.label))?;
        for _ in 1..config.in_flight {
            let share = connection
                .share()
                .context("this connection cannot be shared by several clients")?;
            connections.push(share);
        }
        connections.push(connection);
    }

    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let shared = Arc::new(Shared {
        start,
        measure_from,
        end,
        pacing: config.pacing,
        next_due: AtomicU64::new(0),
        done: AtomicU64::new(0),
        history_len: AtomicU64::new(0),
        history_full: AtomicBool::new(false),
        record_history: config.record_history,
    });

    let progress = progress_bar(config, &shared);
    let mut tasks = tokio::task::JoinSet::new();
    for (client, connection) in connections.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let workload = config.workload.clone();
        tasks.spawn(client_loop(client as u64, connection, workload, shared));
    }
    let mut results = Vec::with_capacity(config.clients);
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.context("a benchmark client panicked")??);
    }
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }

    let mut all = new_histogram()?;
    let mut reads = new_histogram()?;
    let mut writes = new_histogram()?;
    let mut errors = 0;
    let mut missed = 0;
    let mut error_kinds = BTreeMap::new();
    let mut history = Vec::new();
    for result in results {
        let _ = all.add(&result.all);
        let _ = reads.add(&result.reads);
        let _ = writes.add(&result.writes);
        errors += result.errors;
        missed += result.missed;
        for (kind, count) in result.error_kinds {
            count_error(&mut error_kinds, &kind, count);
        }
        history.extend(result.history);
    }
    history.sort_by_key(|op| (op.call, op.client));
    let summary = |histogram: &Histogram<u64>| {
        (!histogram.is_empty()).then(|| LatencySummary::from_histogram(histogram))
    };
    let duration_s = config.duration.as_secs_f64();
    let report = Report {
        target: config.label.clone(),
        target_kind: config.target.kind().to_string(),
        workload: config.workload.clone(),
        clients: config.clients,
        in_flight: config.in_flight,
        connections: connection_count,
        round: 0,
        pacing: config.pacing,
        warmup_s: config.warmup.as_secs_f64(),
        duration_s,
        ops: all.len(),
        errors,
        missed,
        ops_per_sec: all.len() as f64 / duration_s,
        latency: LatencySummary::from_histogram(&all),
        reads: summary(&reads),
        writes: summary(&writes),
        error_kinds,
    };
    Ok(Outcome {
        report,
        history: config.record_history.then_some(history),
        history_truncated: shared.history_full.load(Ordering::Relaxed),
    })
}

/// How many connections `clients` clients need with `in_flight` requests on each.
///
/// # Errors
/// When `in_flight` is out of range or does not divide `clients` (every connection carries
/// the same number of requests, so that runs with different values compare).
pub fn connection_count(clients: usize, in_flight: usize) -> anyhow::Result<usize> {
    anyhow::ensure!(
        (1..=crate::pipeline::IN_FLIGHT_MAX).contains(&in_flight),
        "requests in flight per connection must be between 1 and {}",
        crate::pipeline::IN_FLIGHT_MAX
    );
    anyhow::ensure!(
        clients % in_flight == 0,
        "{clients} clients cannot share connections {in_flight} to a connection evenly"
    );
    Ok(clients / in_flight)
}

fn progress_bar(
    config: &BenchConfig,
    shared: &Arc<Shared>,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if !config.progress {
        return None;
    }
    let total = (config.warmup + config.duration).as_millis();
    let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    let style =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!(
        "{} {} x{} ({} in flight per connection)",
        config.label,
        config.workload.mix.name(),
        config.clients,
        config.in_flight
    ));
    let ticker_bar = bar.clone();
    let shared = Arc::clone(shared);
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        let mut last = (Instant::now(), 0u64);
        loop {
            interval.tick().await;
            let now = Instant::now();
            let done = shared.done.load(Ordering::Relaxed);
            let elapsed = now.saturating_duration_since(last.0).as_secs_f64();
            if elapsed > 0.0 {
                let rate = (done - last.1) as f64 / elapsed;
                let phase = if now < shared.measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                ticker_bar.set_message(format!("{phase} {rate:.0} ops/s"));
            }
            last = (now, done);
            let position = now.saturating_duration_since(shared.start).as_millis();
            ticker_bar.set_position(u64::try_from(position).unwrap_or(u64::MAX));
        }
    });
    Some((bar, ticker))
}

async fn client_loop(
    client: u64,
    mut connection: Connection,
    workload: WorkloadSpec,
    shared: Arc<Shared>,
) -> anyhow::Result<ClientResult> {
    let mut generator = workload.generator(client);
    let mut result = ClientResult {
        all: new_histogram()?,
        reads: new_histogram()?,
        writes: new_histogram()?,
        errors: 0,
        error_kinds: BTreeMap::new(),
        missed: 0,
        history: Vec::new(),
    };
    // An open loop that fell behind stops sending this long after the window closes.
    let grace = shared.end + Duration::from_secs(5);
    loop {
        let (due, measured) = match shared.pacing {
            Pacing::Closed => {
                let now = Instant::now();
                if now >= shared.end {
                    break;
                }
                (now, true)
            }
            Pacing::Open { rate } => {
                let index = shared.next_due.fetch_add(1, Ordering::Relaxed);
                let due = shared.start + due_offset(index, rate);
                if due >= shared.end {
                    break;
                }
                if Instant::now() >= grace {
                    // Everything still due counts as missed, and nobody sends it.
                    if due >= shared.measure_from {
                        result.missed += 1;
                    }
                    continue;
                }
                tokio::time::sleep_until(due).await;
                (due, due >= shared.measure_from)
            }
        };
        let op = generator.next_op();
        let sent = Instant::now();
        let outcome = connection.execute(&op).await;
        let answered = Instant::now();
        shared.done.fetch_add(1, Ordering::Relaxed);
        // A closed loop counts what completed inside the window (an unbiased throughput);
        // an open loop counts what was due inside it.
        let measured = match shared.pacing {
            Pacing::Closed => answered >= shared.measure_from && answered <= shared.end,
            Pacing::Open { .. } => measured,
        };
        let latency = charged_latency(
            due.saturating_duration_since(shared.start),
            answered.saturating_duration_since(shared.start),
        );
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if measured {
            match &outcome {
                Ok(_) => {
                    record(&mut result.all, nanos);
                    if op.is_read() {
                        record(&mut result.reads, nanos);
                    } else {
                        record(&mut result.writes, nanos);
                    }
                }
                Err(error) => {
                    result.errors += 1;
                    count_error(&mut result.error_kinds, &error.message, 1);
                }
            }
        }
        if shared.record_history && take_history_slot(&shared) {
            let since = |at: Instant| {
                u64::try_from(at.saturating_duration_since(shared.start).as_nanos())
                    .unwrap_or(u64::MAX)
            };
            result.history.push(history_entry(
                client,
                &op,
                &outcome,
                since(sent),
                since(answered),
            ));
        }
    }
    Ok(result)
}

fn take_history_slot(shared: &Shared) -> bool {
    if shared.history_full.load(Ordering::Relaxed) {
        return false;
    }
    let taken = shared.history_len.fetch_add(1, Ordering::Relaxed);
    if taken >= HISTORY_OPS_MAX as u64 {
        shared.history_full.store(true, Ordering::Relaxed);
        return false;
    }
    true
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One operation in the HISTORY.md format.
fn history_entry(
    client: u64,
    op: &Op,
    outcome: &Result<Option<Bytes>, crate::target::OpError>,
    call: u64,
    ret: u64,
) -> Operation {
    let (kind, key, value) = match op {
        Op::Get { key } => (OpKind::Get, text(key), None),
        Op::Put { key, value } => (OpKind::Put, text(key), Some(text(value))),
    };
    let (status, output) = match outcome {
        Ok(read) if op.is_read() => (OpStatus::Ok, Output::Value(read.as_ref().map(text))),
        Ok(_) => (OpStatus::Ok, Output::None),
        Err(error) if error.maybe_applied => (OpStatus::Unknown, Output::None),
        Err(_) => (OpStatus::Fail, Output::None),
    };
    Operation {
        client,
        kind,
        key,
        value,
        from: None,
        call,
        ret: Some(ret.max(call)),
        status,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::OpError;

    #[test]
    fn clients_share_connections_evenly() {
        assert_eq!(connection_count(64, 1).expect("even"), 64);
        assert_eq!(connection_count(64, 4).expect("even"), 16);
        assert_eq!(connection_count(4, 4).expect("even"), 1);
        assert!(connection_count(1, 4).is_err());
        assert!(connection_count(6, 4).is_err());
        assert!(connection_count(4, 0).is_err());
    }

    #[test]
    fn history_entries_follow_the_format() {
        let get = Op::Get {
            key: Bytes::from_static(b"k1"),
        };
        let put = Op::Put {
            key: Bytes::from_static(b"k1"),
            value: Bytes::from_static(b"v"),
        };
        let read = history_entry(3, &get, &Ok(Some(Bytes::from_static(b"v"))), 10, 20);
        assert_eq!(read.kind, OpKind::Get);
        assert_eq!(read.status, OpStatus::Ok);
        assert_eq!(read.output, Output::Value(Some("v".into())));
        let absent = history_entry(3, &get, &Ok(None), 10, 20);
        assert_eq!(absent.output, Output::Value(None));
        let write = history_entry(3, &put, &Ok(None), 30, 40);
        assert_eq!(write.value.as_deref(), Some("v"));
        assert_eq!(write.output, Output::None);
        let lost = OpError {
            maybe_applied: true,
            message: "lost".into(),
        };
        let unknown = history_entry(3, &put, &Err(lost), 50, 60);
        assert_eq!(unknown.status, OpStatus::Unknown);
        let refused = OpError {
            maybe_applied: false,
            message: "busy".into(),
        };
        let failed = history_entry(3, &put, &Err(refused), 70, 80);
        assert_eq!(failed.status, OpStatus::Fail);
        let history = vec![read, absent_at(absent), write, unknown, failed];
        chorus_check::history::validate(&history).expect("a valid history");
    }

    fn absent_at(mut op: Operation) -> Operation {
        op.call = 21;
        op.ret = Some(25);
        op
    }
}
