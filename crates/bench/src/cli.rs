//! The command line of `chorus bench`: one run against one target, or the comparison.
//!
//! `chorus bench --target chorus --clients 64 --workload write` drives a target and prints the
//! human table (and, if asked, writes the report as JSON and the history in the HISTORY.md
//! format); `chorus bench compare` runs the side-by-side comparison (see
//! [`crate::compare`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::compare::{CompareArgs, compare};
use crate::report::format_table;
use crate::run::{BenchConfig, run};
use crate::schedule::{Pacing, parse_duration};
use crate::target::TargetSpec;
use crate::workload::{MixKind, WorkloadSpec, mix_from};

/// Arguments of `chorus bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `compare` runs the side-by-side comparison instead of one benchmark.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// One benchmark.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `chorus bench`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Chorus, etcd and Redis side by side on this machine; writes docs/benchmarks/.
    Compare(CompareArgs),
}

/// The kind of target on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// A Chorus cluster through the native client (sessions, exactly-once retries).
    Chorus,
    /// Any RESP server (Redis, or Chorus nodes) through plain SET and GET.
    Resp,
    /// An etcd v3 cluster (needs a build with `--features etcd`).
    Etcd,
}

/// Arguments of one benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// What to drive.
    #[arg(long, value_enum, default_value_t = TargetKind::Chorus)]
    pub target: TargetKind,
    /// Addresses (host:port) of the target's nodes; for etcd, client URLs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub endpoints: Vec<String>,
    /// The target's name in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Concurrent clients (requests in flight in total).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests in flight per connection: clients share connections this many to one and
    /// pipeline their requests (RESP) or multiplex them (etcd). 1: a connection per client.
    /// The native Chorus client cannot pipeline; use `--target resp` for Chorus nodes.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Operations: write, read (linearizable) or mixed.
    #[arg(long, value_enum, default_value_t = MixKind::Write)]
    pub workload: MixKind,
    /// For `--workload mixed`: the share of reads.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Measured time (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop: this many operations per second in total, latency counted from each
    /// operation's due time. Without it, a closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seeds the key and operation choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every operation here in the HISTORY.md format (JSON lines), to check the run
    /// for linearizability.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Check the recorded history for linearizability at the end (implies recording it;
    /// the run fails if it is not linearizable).
    #[arg(long)]
    pub check: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn resolve(endpoints: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addresses = Vec::new();
    for endpoint in endpoints {
        let address = endpoint
            .to_socket_addrs()
            .with_context(|| format!("{endpoint:?} is not a host:port address"))?
            .next()
            .with_context(|| format!("{endpoint:?} resolves to no address"))?;
        addresses.push(address);
    }
    Ok(addresses)
}

impl RunArgs {
    /// The run these arguments describe.
    ///
    /// # Errors
    /// When an address, the workload or the rate is invalid.
    pub fn config(&self) -> anyhow::Result<BenchConfig> {
        anyhow::ensure!(!self.endpoints.is_empty(), "give at least one endpoint");
        let target = match self.target {
            TargetKind::Chorus => TargetSpec::Chorus {
                endpoints: resolve(&self.endpoints)?,
            },
            TargetKind::Resp => TargetSpec::Resp {
                endpoints: resolve(&self.endpoints)?,
            },
            TargetKind::Etcd => TargetSpec::Etcd {
                endpoints: self.endpoints.clone(),
            },
        };
        let workload = WorkloadSpec {
            mix: mix_from(self.workload, self.read_ratio)?,
            key_count: self.keys,
            key_size: self.key_size,
            value_size: self.value_size,
            seed: self.seed,
        };
        workload.validate()?;
        let pacing = match self.rate {
            None => Pacing::Closed,
            Some(rate) if rate.is_finite() && rate > 0.0 => Pacing::Open { rate },
            Some(rate) => anyhow::bail!("--rate must be a positive number, not {rate}"),
        };
        crate::run::connection_count(self.clients, self.in_flight)?;
        Ok(BenchConfig {
            label: self
                .label
                .clone()
                .unwrap_or_else(|| target.kind().to_string()),
            target,
            workload,
            clients: self.clients,
            in_flight: self.in_flight,
            pacing,
            warmup: self.warmup,
            duration: self.duration,
            record_history: self.history.is_some() || self.check,
            progress: !self.no_progress,
        })
    }
}

/// Runs `chorus bench` with its arguments.
///
/// # Errors
/// When the arguments are invalid, the target cannot be reached, or an output cannot be
/// written. A run with failed operations is not an error: they are counted in the report.
pub fn main(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchCommand::Compare(compare_args)) = &args.command {
        return compare(compare_args);
    }
    let config = args.run.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(run(&config))?;
    print!("{}", format_table(std::slice::from_ref(&outcome.report)));
    if !outcome.report.error_kinds.is_empty() {
        println!("errors:");
        for (kind, count) in &outcome.report.error_kinds {
            println!("  {count:>8}  {kind}");
        }
    }
    if let Some(path) = &args.run.json {
        let json = serde_json::to_string_pretty(&outcome.report)?;
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(path), Some(history)) = (&args.run.history, &outcome.history) {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        chorus_check::history::write_jsonl(history, file)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if outcome.history_truncated {
            eprintln!(
                "the history holds only the first {} operations",
                crate::run::HISTORY_OPS_MAX
            );
        }
    }
    if let (true, Some(history)) = (args.run.check, &outcome.history) {
        let verdict = chorus_check::linearizability::check(
            history,
            chorus_check::linearizability::CheckLimits::default(),
        );
        match verdict {
            chorus_check::linearizability::Verdict::Linearizable => {
                println!("history: {} operations, linearizable", history.len());
            }
            chorus_check::linearizability::Verdict::Inconclusive { key } => {
                println!("history: the check ran out of steps on key {key:?} (inconclusive)");
            }
            chorus_check::linearizability::Verdict::NotLinearizable { key, detail } => {
                anyhow::bail!("the history is NOT linearizable on key {key:?}: {detail}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Mix;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Bench(BenchArgs),
    }

    fn parse(line: &str) -> Result<BenchArgs, clap::Error> {
        let words = std::iter::once("chorus").chain(line.split_whitespace());
        Cli::try_parse_from(words).map(|cli| match cli.command {
            Top::Bench(args) => args,
        })
    }

    #[test]
    fn defaults_are_a_closed_loop_of_writes_on_the_local_cluster() {
        let args = parse("bench").expect("parses");
        assert!(args.command.is_none());
        let config = args.run.config().expect("a config");
        assert_eq!(config.clients, 16);
        assert_eq!(config.pacing, Pacing::Closed);
        assert_eq!(config.workload.mix, Mix::WriteOnly);
        assert_eq!(config.workload.key_size, 16);
        assert_eq!(config.workload.value_size, 100);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.warmup, Duration::from_secs(2));
        assert_eq!(config.label, "chorus");
        match config.target {
            TargetSpec::Chorus { endpoints } => assert_eq!(endpoints.len(), 3),
            other => panic!("unexpected target {other:?}"),
        }
    }

    #[test]
    fn every_option_parses() {
        let args = parse(
            "bench --target resp --endpoints 127.0.0.1:6379 --clients 4 --workload mixed \
             --read-ratio 0.9 --keys 50 --key-size 8 --value-size 10 --duration 500ms \
             --warmup 0s --rate 2000 --seed 9 --label redis --no-progress --in-flight 2",
        )
        .expect("parses");
        let config = args.run.config().expect("a config");
        assert_eq!(config.label, "redis");
        assert_eq!((config.clients, config.in_flight), (4, 2));
        assert_eq!(config.workload.mix, Mix::Mixed { read_ratio: 0.9 });
        assert_eq!(config.pacing, Pacing::Open { rate: 2000.0 });
        assert_eq!(config.duration, Duration::from_millis(500));
        assert_eq!(config.warmup, Duration::ZERO);
        assert_eq!(config.workload.seed, 9);
        assert!(!config.progress);
        assert_eq!(
            config.target,
            TargetSpec::Resp {
                endpoints: vec!["127.0.0.1:6379".parse().expect("an address")]
            }
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse("bench --duration 10h").is_err());
        assert!(parse("bench --workload sideways").is_err());
        let bad = |line: &str| {
            parse(line)
                .expect("parses")
                .run
                .config()
                .expect_err("refused")
                .to_string()
        };
        assert!(bad("bench --rate 0").contains("--rate"));
        assert!(bad("bench --workload mixed --read-ratio 1.5").contains("read ratio"));
        assert!(bad("bench --keys 1000 --key-size 2").contains("cannot number"));
        assert!(bad("bench --target resp --endpoints nowhere").contains("nowhere"));
        assert!(bad("bench --clients 6 --in-flight 4").contains("evenly"));
    }

    #[test]
    fn compare_is_a_subcommand_with_its_own_defaults() {
        let args =
            parse("bench compare --duration 1s --clients 1,4 --targets redis").expect("parses");
        let Some(BenchCommand::Compare(compare)) = args.command else {
            panic!("not the compare subcommand");
        };
        assert_eq!(compare.duration, Duration::from_secs(1));
        assert_eq!(compare.clients, vec![1, 4]);
        assert_eq!(compare.workloads, vec![Mix::WriteOnly, Mix::ReadOnly]);
        assert_eq!(compare.targets, vec!["redis".to_string()]);
        assert_eq!(compare.rounds, 3);
        assert_eq!(compare.in_flight, vec![1, 4]);
        assert_eq!(compare.busy_load, None);
        assert_eq!(compare.busy_wait, Duration::from_secs(120));
        let gated =
            parse("bench compare --rounds 2 --in-flight 1,8 --busy-load 1.5 --busy-wait 0s")
                .expect("parses");
        let Some(BenchCommand::Compare(gated)) = gated.command else {
            panic!("not the compare subcommand");
        };
        assert_eq!(
            (
                gated.rounds,
                gated.in_flight,
                gated.busy_load,
                gated.busy_wait
            ),
            (2, vec![1, 8], Some(1.5), Duration::ZERO)
        );
        assert_eq!(compare.out, PathBuf::from("docs/benchmarks"));
        // Options of one run do not mix with the subcommand.
        assert!(parse("bench --clients 4 compare").is_err());
    }
}
