//! `chorus-example-locks`: runs the lock service example.
//!
//! `sim` replicates it in the deterministic simulator under a chosen scheme and fault profile,
//! seed after seed, and prints what each run found (the simulator's checkers and the lock
//! service's own check, [`chorus_example_locks::check_history`]).

use std::process::ExitCode;

use chorus_example_locks::{Bug, LockBench, Output, Reply};
use chorus_sim::{FaultProfile, Machine, Protocol, SimConfig, UserMachine};
use clap::{Parser, Subcommand};

/// The lock service with fencing tokens, replicated by Chorus.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Replicate the lock service in the simulator, with faults, and check every run.
    Sim {
        /// The replication scheme: raft, pb or hybrid.
        #[arg(long, default_value = "raft")]
        protocol: Protocol,
        /// The faults: none, network, crash, crash-many or all.
        #[arg(long, default_value = "all")]
        faults: FaultProfile,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds to run, from `--seed` on.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Lock operations per run.
        #[arg(long, default_value_t = 500)]
        ops: usize,
        /// Switch on the deliberate bug (a restore forgets free locks' tokens), to see the
        /// checks catch it.
        #[arg(long)]
        bug: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Mode::Sim {
            protocol,
            faults,
            seed,
            seeds,
            ops,
            bug,
        } => simulate(protocol, faults, seed..seed.saturating_add(seeds), ops, bug),
    }
}

fn simulate(
    protocol: Protocol,
    faults: FaultProfile,
    seeds: std::ops::Range<u64>,
    ops: usize,
    bug: bool,
) -> ExitCode {
    let bench = UserMachine::new(LockBench {
        bug: bug.then_some(Bug::RestoreForgetsFreeLocks),
        ..LockBench::default()
    });
    let mut failed = 0;
    for seed in seeds {
        let mut config = SimConfig::new(seed);
        config.protocol = protocol;
        config.faults = faults;
        config.ops = ops;
        config.machine = Machine::User(bench.clone());
        let report = chorus_sim::run(config);
        let outputs: Vec<Output> = report
            .user_history
            .iter()
            .filter_map(|op| op.output.as_deref().and_then(Output::decode))
            .collect();
        let granted = outputs
            .iter()
            .filter(|o| matches!(o.reply, Reply::Granted { .. }))
            .count();
        let top_token = outputs
            .iter()
            .filter_map(|o| match o.reply {
                Reply::Granted { token, .. } => Some(token),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        println!(
            "{protocol} seed {seed}: {} lock operations, {} answered ({granted} grants, highest \
             token {top_token}); {} crashes, {} partitions; {}",
            report.user_history.len(),
            outputs.len(),
            report.stats.crashes,
            report.stats.partitions,
            if report.violations.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} violations", report.violations.len())
            }
        );
        if let Some(first) = report.violations.first() {
            failed += 1;
            println!("  [{}] {}", first.invariant, first.detail);
        }
    }
    if failed == 0 {
        println!("every run passed the simulator's checkers and the lock service's check");
        ExitCode::SUCCESS
    } else {
        println!("{failed} runs found violations");
        ExitCode::FAILURE
    }
}
