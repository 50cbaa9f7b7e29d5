//! `chorus sim`: runs simulator seeds on every core, prints failing seeds with the command that
//! replays them, and ends with one summary line.
//!
//! `--protocol raft` simulates Raft; `--protocol pb` primary-backup with a view service (the
//! servers are nodes `1..=--nodes`, the view service node `--nodes + 1`; the nemesis never
//! crashes the view service, whose crash has its own scenario tests). Under `--faults crash`
//! and most seeds of `--faults all`, pb faces the crashes it claims to survive (one server at
//! a time, the next once a backup holds the state again); `--faults crash-many` (and one seed
//! in twenty of `all`) crashes many servers at once. A pb run that ends in the scheme's
//! documented dead end (primary and every holder of its state lost) has its liveness excused,
//! never its safety, and the summary counts those runs as `stuck=K`, and the failovers (the
//! backup promoted to primary) of all runs as `failovers=N`.
//!
//! `--html FILE` (with `--replay` or `--scenario`) and `--html-dir DIR` (on a sweep, for every
//! failing seed) draw runs as space-time diagrams, one self-contained page each
//! (`chorus_sim::visual`); `--scenario NAME` stages one lesson of the gallery
//! (`chorus_sim::gallery`, pictured in docs/gallery/).
//!
//! Raft nodes snapshot and compact in every run, with small thresholds by default
//! (`--snapshot-every`, `--compaction-tail`, `--snapshot-chunk-bytes`), so that every seed
//! compacts many times and lagging followers catch up by InstallSnapshot; the Raft summary
//! counts them as `snapshots: taken=N installed=M`, and the crashes after which the disk
//! damaged a synced record (in the seeds that draw it, `SimConfig::synced_damage`) as
//! `synced-damages=N`.
//!
//! The summary counts `violations=N` (invariants broken, histories proved not linearizable)
//! apart from `inconclusive=M` (seeds whose linearizability check ran out of its budget, so
//! whose history could not be judged). Both make the sweep fail, but only the first is a bug
//! found; inconclusive seeds are listed on their own line.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, bail};
use chorus_check::history::write_jsonl;
use chorus_check::linearizability::Verdict;
use chorus_sim::gallery::Scenario;
use chorus_sim::visual::render_html;
use chorus_sim::{FaultProfile, Recording, RunReport, SimConfig};
use clap::{Args, ValueEnum};

/// The replication scheme to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// State machine replication on Raft.
    Raft,
    /// Primary-backup with a view service.
    Pb,
    /// Primary-backup whose views a Raft group decides.
    Hybrid,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Raft => "raft",
            Protocol::Pb => "pb",
            Protocol::Hybrid => "hybrid",
        }
    }

    fn sim(self) -> chorus_sim::Protocol {
        match self {
            Protocol::Raft => chorus_sim::Protocol::Raft,
            Protocol::Pb => chorus_sim::Protocol::Pb,
            Protocol::Hybrid => chorus_sim::Protocol::Hybrid,
        }
    }
}

/// An inclusive range of seeds, written `A..B` (or a single seed `A`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    first: u64,
    last: u64,
}

impl FromStr for SeedRange {
    type Err = String;

    fn from_str(text: &str) -> Result<SeedRange, String> {
        let parse = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("{part:?} is not a seed (a whole number)"))
        };
        let (first, last) = match text.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b.trim_start_matches('='))?),
            None => (parse(text)?, parse(text)?),
        };
        if first > last {
            return Err(format!(
                "empty seed range {text}: the first seed is after the last"
            ));
        }
        Ok(SeedRange { first, last })
    }
}

/// Arguments of `chorus sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// The replication scheme.
    #[arg(long, value_enum, default_value = "raft")]
    protocol: Protocol,
    /// Seeds to run, inclusive: `1..2000` runs 2000 seeds.
    #[arg(long, default_value = "1..100")]
    seeds: SeedRange,
    /// Nodes in the cluster (for pb: servers; the view service is one more node).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Client operations per seed.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Concurrent clients per seed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Keys the clients share (few keys, many conflicts).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    keys: u64,
    /// Faults injected during the safety phase: none, network, crash, crash-many or all
    /// (for pb, `crash` is one server at a time and `crash-many` many at once; `all` is
    /// network faults with the crashes of `crash`, and of `crash-many` in one seed in 20).
    #[arg(long, default_value = "all")]
    faults: FaultProfile,
    /// Write each seed's client history to `DIR/seed-<N>.jsonl` (docs/history.md format).
    #[arg(long, value_name = "DIR")]
    history_out: Option<PathBuf>,
    /// Run one seed and print its event trace and findings.
    #[arg(long, value_name = "SEED", conflicts_with = "seeds")]
    replay: Option<u64>,
    /// Print every seed's result, and with --replay the event trace.
    #[arg(long)]
    verbose: bool,
    /// Run every seed twice and fail if the two runs differ (same seed, same trace hash).
    #[arg(long)]
    check_determinism: bool,
    /// Hybrid, and Raft with read leases: each node's clock drifts by up to this many parts
    /// per million (a Raft stale-read hunt slows the cut-off leader's clock and speeds the
    /// others' by this much). The nodes' stated bound is 50000; beyond it leases are unsafe
    /// and the checkers say so.
    #[arg(long, value_name = "PPM", default_value_t = 50_000)]
    clock_drift: u64,
    /// Raft: leaders serve reads from a lease (`true`) or always with a ReadIndex round
    /// (`false`); default: drawn per seed, leases in a quarter of them.
    #[arg(long, value_name = "BOOL")]
    lease_reads: Option<bool>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// With --replay or --scenario: write the run's space-time diagram to this self-contained
    /// HTML page (open it in any browser; it fetches nothing).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// On a sweep: write the space-time diagram of every failing seed to
    /// `DIR/<protocol>-seed-<N>.html`.
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    html_dir: Option<PathBuf>,
    /// Run one staged scenario of the gallery instead of random seeds (`--scenario list` names
    /// them); its seed is --replay's, or 1. Usually with --html.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Raft: each node snapshots its state machine and compacts its log once this many
    /// entries were applied since its last snapshot.
    #[arg(long, value_name = "ENTRIES", default_value_t = SimConfig::new(0).snapshot_every_entries,
          value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: u64,
    /// Raft: entries kept below a snapshot when the log is compacted (a follower further
    /// behind catches up by InstallSnapshot).
    #[arg(long, value_name = "ENTRIES", default_value_t = SimConfig::new(0).compaction_tail_entries)]
    compaction_tail: u64,
    /// Raft: bytes of snapshot in one InstallSnapshot chunk (default: drawn per seed, 64,
    /// 512 or 1 MiB).
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=chorus_raft::SNAPSHOT_CHUNK_BYTES_LIMIT as u64))]
    snapshot_chunk_bytes: Option<u64>,
}

impl SimArgs {
    fn config(&self, seed: u64) -> SimConfig {
        let mut config = SimConfig::new(seed);
        config.protocol = self.protocol.sim();
        config.nodes = self.nodes as usize;
        config.ops = self.ops;
        config.clients = self.clients as usize;
        config.keys = self.keys as usize;
        config.faults = self.faults;
        config.snapshot_every_entries = self.snapshot_every;
        config.compaction_tail_entries = self.compaction_tail;
        config.snapshot_chunk_bytes = self
            .snapshot_chunk_bytes
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        config.clock_drift_ppm = self.clock_drift;
        config.lease_reads = self.lease_reads;
        config
    }

    fn replay_command(&self, seed: u64) -> String {
        let snapshots = if self.protocol == Protocol::Raft {
            let chunks = self
                .snapshot_chunk_bytes
                .map(|bytes| format!(" --snapshot-chunk-bytes {bytes}"))
                .unwrap_or_default();
            let lease = self
                .lease_reads
                .map(|lease| format!(" --lease-reads {lease}"))
                .unwrap_or_default();
            format!(
                " --snapshot-every {} --compaction-tail {}{chunks}{lease} --clock-drift {}",
                self.snapshot_every, self.compaction_tail, self.clock_drift
            )
        } else {
            String::new()
        };
        format!(
            "chorus sim --protocol {} --replay {seed} --nodes {} --ops {} --clients {} --keys {} --faults {}{snapshots} --verbose",
            self.protocol.name(),
            self.nodes,
            self.ops,
            self.clients,
            self.keys,
            self.faults
        )
    }
}

/// What one seed came to.
struct Outcome {
    report: RunReport,
    nondeterministic: bool,
}

fn run_seed(args: &SimArgs, seed: u64) -> Outcome {
    let report = chorus_sim::run(args.config(seed));
    let nondeterministic = args.check_determinism && {
        let again = chorus_sim::run(args.config(seed));
        again.trace_hash != report.trace_hash
    };
    Outcome {
        report,
        nondeterministic,
    }
}

fn write_history(dir: &Path, report: &RunReport) -> anyhow::Result<()> {
    let path = dir.join(format!("seed-{}.jsonl", report.seed));
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    write_jsonl(&report.history, BufWriter::new(file))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn describe_failure(args: &SimArgs, outcome: &Outcome) -> String {
    let report = &outcome.report;
    let label = if report.violations.is_empty() && !outcome.nondeterministic {
        "INCONCLUSIVE"
    } else {
        "FAIL"
    };
    let mut text = format!("{label} seed={}:", report.seed);
    for violation in &report.violations {
        let _ = write!(
            text,
            "\n  {} at t={}: {}",
            violation.invariant, violation.time, violation.detail
        );
    }
    if let Verdict::Inconclusive { key } = &report.verdict {
        let _ = write!(
            text,
            "\n  S7 inconclusive: key {key}: the linearizability check ran out of its budget \
             (not a violation: the history could not be judged)"
        );
    }
    if outcome.nondeterministic {
        text.push_str("\n  determinism: a second run of the same seed produced a different trace");
    }
    let _ = write!(text, "\n  replay: {}", args.replay_command(report.seed));
    text
}

/// The one-seed summary's `linearizable=` value: `true`, `false`, or `inconclusive` when the
/// check ran out of its budget.
fn verdict_word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Linearizable => "true",
        Verdict::NotLinearizable { .. } => "false",
        Verdict::Inconclusive { .. } => "inconclusive",
    }
}

/// Writes the space-time diagram of `report` to `path`.
fn write_html(path: &Path, title: &str, report: &RunReport) -> anyhow::Result<()> {
    let Some(trace) = &report.visual else {
        bail!("the run kept no visual trace");
    };
    let page = render_html(
        title,
        trace,
        &report.history,
        &report.findings(),
        report.end_time,
    );
    std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs a staged scenario of the gallery and prints what it found.
fn scenario(args: &SimArgs, name: &str) -> anyhow::Result<bool> {
    let names = || {
        Scenario::ALL
            .iter()
            .map(|s| format!("  {:<26}{}", s.name(), s.lesson()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if name == "list" {
        println!("{}", names());
        return Ok(true);
    }
    let Some(scenario) = Scenario::named(name) else {
        bail!("no scenario {name:?}; the gallery has:\n{}", names());
    };
    let seed = args.replay.unwrap_or(1);
    let report = scenario
        .run(seed)
        .map_err(|error| anyhow::anyhow!("scenario {name}, seed {seed}: {error}"))?;
    if let Some(path) = &args.html {
        let title = format!("Chorus — {} (seed {seed}): {}", name, scenario.lesson());
        write_html(path, &title, &report)?;
        eprintln!("wrote {}", path.display());
    }
    for violation in &report.violations {
        println!(
            "  {} at t={}: {}",
            violation.invariant, violation.time, violation.detail
        );
    }
    println!(
        "scenario {name}: seed={seed} ops={} violations={} linearizable={} stuck={} end_time={} messages={}",
        report.history.len(),
        report.violations.len(),
        verdict_word(&report.verdict),
        report.stuck,
        report.end_time,
        report.stats.messages,
    );
    Ok(report.passed())
}

fn replay(args: &SimArgs, seed: u64) -> anyhow::Result<bool> {
    let recording = Recording {
        trace_log: args.verbose,
        visual: args.html.is_some(),
    };
    let report = chorus_sim::run_recorded(args.config(seed), recording);
    if let Some(path) = &args.html {
        let title = format!(
            "Chorus — {} seed {seed}, faults {}",
            args.protocol.name(),
            args.faults
        );
        write_html(path, &title, &report)?;
        eprintln!("wrote {}", path.display());
    }
    for line in &report.trace {
        println!("{line}");
    }
    if let Some(dir) = &args.history_out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_history(dir, &report)?;
    }
    let outcome = Outcome {
        report,
        nondeterministic: false,
    };
    let passed = outcome.report.passed();
    if !passed {
        println!("{}", describe_failure(args, &outcome));
    }
    let stats = outcome.report.stats;
    let stuck = match args.protocol {
        Protocol::Pb => format!(
            " stuck={} failovers={}",
            outcome.report.stuck, outcome.report.stats.failovers
        ),
        Protocol::Raft => {
            let snapshots = outcome.report.snapshots;
            format!(
                " snapshots: taken={} installed={} synced-damages={}",
                snapshots.taken, snapshots.installed, stats.synced_damages
            )
        }
        Protocol::Hybrid => String::new(),
    };
    println!(
        "sim {}: seed={seed} ops={} violations={} linearizable={}{stuck} end_time={} events={} messages={} crashes={} partitions={} leaders={} trace={:016x}",
        args.protocol.name(),
        outcome.report.history.len(),
        outcome.report.violations.len(),
        verdict_word(&outcome.report.verdict),
        outcome.report.end_time,
        stats.events,
        stats.messages,
        stats.crashes,
        stats.partitions,
        stats.leaders,
        outcome.report.trace_hash,
    );
    Ok(passed)
}

/// Runs `chorus sim`. Returns whether every seed passed.
///
/// # Errors
/// When a history file cannot be written.
pub fn run(args: &SimArgs) -> anyhow::Result<bool> {
    if let Some(name) = &args.scenario {
        return scenario(args, name);
    }
    if let Some(seed) = args.replay {
        return replay(args, seed);
    }
    if args.html.is_some() {
        bail!(
            "--html draws one run: give --replay SEED or --scenario NAME (a sweep takes --html-dir)"
        );
    }
    if let Some(dir) = &args.html_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Some(dir) = &args.history_out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let SeedRange { first, last } = args.seeds;
    let total = last - first + 1;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    if jobs > 256 {
        bail!("--jobs {jobs} is more threads than is useful");
    }
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let (sender, receiver) = mpsc::sync_channel::<Outcome>(jobs * 2);
    let mut ops = 0usize;
    let mut violations = 0usize;
    let mut inconclusive = 0u64;
    let mut linearizable = 0u64;
    let mut stuck = 0u64;
    let mut failovers = 0u64;
    let mut snapshots_taken = 0u64;
    let mut synced_damages = 0u64;
    let mut lease_reads = 0u64;
    let mut snapshots_installed = 0u64;
    let mut failed = Vec::new();
    // Seeds whose only finding is a linearizability check out of budget.
    let mut undecided = Vec::new();
    let mut done = 0u64;
    let mut write_error = None;
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > last {
                        break;
                    }
                    if sender.send(run_seed(args, seed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let step = (total / 20).max(1);
        for outcome in receiver {
            done += 1;
            let report = &outcome.report;
            ops += report.history.len();
            violations += report.violations.len() + usize::from(outcome.nondeterministic);
            linearizable += u64::from(report.linearizable());
            inconclusive += u64::from(report.inconclusive());
            stuck += u64::from(report.stuck);
            failovers += report.stats.failovers;
            snapshots_taken += report.snapshots.taken;
            synced_damages += report.stats.synced_damages;
            lease_reads += report.stats.lease_reads;
            snapshots_installed += report.snapshots.installed;
            if let Some(dir) = &args.history_out {
                if let Err(error) = write_history(dir, report) {
                    write_error.get_or_insert(error);
                }
            }
            if !report.passed() || outcome.nondeterministic {
                println!("{}", describe_failure(args, &outcome));
                if report.violations.is_empty() && !outcome.nondeterministic {
                    undecided.push(report.seed);
                } else {
                    failed.push(report.seed);
                }
                if let Some(dir) = &args.html_dir {
                    // The seed replays exactly; run it again, drawing it this time.
                    let recording = Recording {
                        trace_log: false,
                        visual: true,
                    };
                    let drawn = chorus_sim::run_recorded(args.config(report.seed), recording);
                    let path = dir.join(format!(
                        "{}-seed-{}.html",
                        args.protocol.name(),
                        report.seed
                    ));
                    let title = format!(
                        "Chorus — {} seed {}, faults {}",
                        args.protocol.name(),
                        report.seed,
                        args.faults
                    );
                    match write_html(&path, &title, &drawn) {
                        Ok(()) => println!("  drawn: {}", path.display()),
                        Err(error) => {
                            write_error.get_or_insert(error);
                        }
                    }
                }
            } else if args.verbose {
                let failovers = if args.protocol == Protocol::Pb {
                    format!(" failovers={}", report.stats.failovers)
                } else {
                    format!(
                        " snapshots={}/{}",
                        report.snapshots.taken, report.snapshots.installed
                    )
                };
                println!(
                    "ok seed={} ops={}{} end_time={} crashes={} partitions={} leaders={}{failovers}",
                    report.seed,
                    report.history.len(),
                    if report.stuck { " stuck" } else { "" },
                    report.end_time,
                    report.stats.crashes,
                    report.stats.partitions,
                    report.stats.leaders
                );
            }
            if done % step == 0 && done < total {
                eprintln!(
                    "progress: {done}/{total} seeds, {violations} violations, {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    if let Some(error) = write_error {
        return Err(error);
    }
    // Only pb runs can end stuck or fail over; only Raft runs snapshot.
    let stuck = match args.protocol {
        Protocol::Pb => format!(" stuck={stuck} failovers={failovers}"),
        Protocol::Raft => {
            format!(
                " snapshots: taken={snapshots_taken} installed={snapshots_installed} \
                 synced-damages={synced_damages} lease-reads={lease_reads}"
            )
        }
        Protocol::Hybrid => String::new(),
    };
    println!(
        "sim {}: seeds={total} ops={ops} violations={violations} inconclusive={inconclusive} linearizable={linearizable}/{total}{stuck} elapsed={:.1}s",
        args.protocol.name(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        failed.sort_unstable();
        println!("failing seeds: {failed:?}");
    }
    if !undecided.is_empty() {
        undecided.sort_unstable();
        println!("inconclusive seeds: {undecided:?}");
    }
    // A history that could not be judged is not a pass either.
    Ok(failed.is_empty() && undecided.is_empty())
}
