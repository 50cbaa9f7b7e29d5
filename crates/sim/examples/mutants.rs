//! Mutation testing of the simulator: runs the default sweep (Raft, every fault, as `chorus sim
//! --protocol raft --faults all` does) against each deliberate bug the `inject-bugs` feature
//! compiles in, and prints how often the checkers catch each one.
//!
//! `cargo run -p chorus-sim --release --features inject-bugs --example mutants -- --seeds 300`
//!
//! Options: `--seeds N` runs seeds `1..=N` per bug (default 300); `--jobs J` threads (default:
//! every core); `--only NAME` runs one bug. The table gives, per bug, the seeds caught (any
//! violation: an invariant of SCENARIOS.md, a history that is not linearizable, a liveness
//! failure) out of the seeds run, the share, and how many seeds each checker fired in.
//!
//! It exits non-zero if any bug is caught in fewer than [`SHARE_MIN`] of its seeds: a bug the
//! simulator cannot see is a hole in the checkers or in the faults they are shown. The bugs of
//! [`BELOW_THE_BAR`] are still run and printed, marked, but do not fail the gate (issue 15
//! tracks them); one that reaches the bar is reported so that it comes off the list.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use chorus_raft::InjectedBugs;
use chorus_sim::{FaultProfile, SimConfig};

/// The share of seeds each bug must be caught in.
const SHARE_MIN: f64 = 0.10;

/// Bugs known to be caught in fewer than [`SHARE_MIN`] of the default sweep's seeds, each
/// with why and where a test catches it instead. Printed on every run; they do not fail the
/// gate. Every other bug is brought over the bar by the sweep's per-seed draws (batch and
/// snapshot chunk sizes, time-to-live writes, the nemesis's Figure 8, synced damage, leases:
/// `SimConfig::drawn`).
const BELOW_THE_BAR: &[(&str, &str)] = &[(
    "lease_ignores_drift",
    "a lease one to three ticks too long overlaps a new leader's first write only when a \
     follower's randomized timeout is the shortest and every message is fast; the sweep's \
     clients find the new leader later. Caught at the bound, tick by tick, by \
     crates/raft/tests/scenarios/lease.rs (the_injected_lease_bug_serves_a_stale_read_at_the_drift_bound); \
     leases beyond the drift bound are caught by the sweep (crates/sim/tests/scenarios/lease.rs)",
)];

/// One deliberate bug: its name and how a run's configuration switches it on.
struct Mutant {
    name: &'static str,
    inject: fn(&mut SimConfig),
}

/// Every bug the `inject-bugs` feature compiles in, one at a time.
fn mutants() -> Vec<Mutant> {
    fn raft(config: &mut SimConfig, set: fn(&mut InjectedBugs)) {
        set(&mut config.injected_bugs);
    }
    vec![
        Mutant {
            name: "commit_without_current_term",
            inject: |c| raft(c, |b| b.commit_without_current_term = true),
        },
        Mutant {
            name: "read_without_read_index",
            inject: |c| raft(c, |b| b.read_without_read_index = true),
        },
        Mutant {
            name: "read_index_unconfirmed",
            inject: |c| raft(c, |b| b.read_index_unconfirmed = true),
        },
        Mutant {
            name: "ack_before_durable",
            inject: |c| raft(c, |b| b.ack_before_durable = true),
        },
        Mutant {
            name: "install_older_snapshot",
            inject: |c| raft(c, |b| b.install_older_snapshot = true),
        },
        Mutant {
            name: "compact_above_commit",
            inject: |c| raft(c, |b| b.compact_above_commit = true),
        },
        Mutant {
            name: "membership_on_commit",
            inject: |c| raft(c, |b| b.membership_on_commit = true),
        },
        Mutant {
            name: "overlapping_membership_changes",
            inject: |c| raft(c, |b| b.overlapping_membership_changes = true),
        },
        Mutant {
            name: "truncate_without_conflict",
            inject: |c| raft(c, |b| b.truncate_without_conflict = true),
        },
        Mutant {
            name: "repairing_node_votes",
            inject: |c| raft(c, |b| b.repairing_node_votes = true),
        },
        Mutant {
            name: "lease_ignores_drift",
            inject: |c| raft(c, |b| b.lease_ignores_drift = true),
        },
        Mutant {
            name: "kv_restore_drops_expiry",
            inject: |c| c.kv_restore_drops_expiry = true,
        },
        Mutant {
            name: "kv_retry_reexecutes",
            inject: |c| c.kv_retry_reexecutes = true,
        },
    ]
}

/// What the command line asked for.
struct Args {
    seeds: u64,
    jobs: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 300,
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
        only: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--seeds" => args.seeds = value()?.parse().map_err(|_| "--seeds takes a number")?,
            "--jobs" => args.jobs = value()?.parse().map_err(|_| "--jobs takes a number")?,
            "--only" => args.only = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other:?}: expected --seeds N, --jobs J, --only NAME"
                ));
            }
        }
    }
    if args.seeds == 0 || args.jobs == 0 {
        return Err("--seeds and --jobs must be at least 1".to_string());
    }
    Ok(args)
}

/// What the sweep of one bug found.
#[derive(Default)]
struct Tally {
    caught: u64,
    run: u64,
    inconclusive: u64,
    /// Seeds each checker fired in.
    checkers: BTreeMap<&'static str, u64>,
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("mutants: {error}");
            std::process::exit(2);
        }
    };
    let mutants: Vec<Mutant> = mutants()
        .into_iter()
        .filter(|m| args.only.as_deref().is_none_or(|only| only == m.name))
        .collect();
    if mutants.is_empty() {
        eprintln!("mutants: no bug named {:?}", args.only.unwrap_or_default());
        std::process::exit(2);
    }
    let started = Instant::now();
    let seeds = args.seeds;
    let total = mutants.len() * seeds as usize;
    let next = AtomicUsize::new(0);
    let mut tallies: Vec<Tally> = mutants.iter().map(|_| Tally::default()).collect();
    let (sender, receiver) = mpsc::sync_channel(args.jobs * 2);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            let (sender, next, mutants) = (sender.clone(), &next, &mutants);
            scope.spawn(move || {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= total {
                        break;
                    }
                    let (bug, seed) = (job / seeds as usize, job as u64 % seeds + 1);
                    let mut config = SimConfig::new(seed);
                    config.faults = FaultProfile::All;
                    config.stop_at_first_violation = true;
                    (mutants[bug].inject)(&mut config);
                    let report = chorus_sim::run(config);
                    let fired: std::collections::BTreeSet<&'static str> =
                        report.violations.iter().map(|v| v.invariant).collect();
                    if sender.send((bug, fired, report.inconclusive())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (bug, fired, inconclusive) in receiver {
            let tally = &mut tallies[bug];
            tally.run += 1;
            tally.caught += u64::from(!fired.is_empty());
            tally.inconclusive += u64::from(inconclusive);
            for checker in fired {
                *tally.checkers.entry(checker).or_default() += 1;
            }
        }
    });

    println!(
        "mutants: the default sweep (raft, --faults all), seeds 1..={seeds} per bug, {} jobs",
        args.jobs
    );
    println!(
        "{:<32} {:>13} {:>7}  checkers (seeds each fired in)",
        "bug", "caught/run", "share"
    );
    let mut failed = Vec::new();
    for (mutant, tally) in mutants.iter().zip(&tallies) {
        let share = tally.caught as f64 / tally.run.max(1) as f64;
        let checkers: Vec<String> = tally
            .checkers
            .iter()
            .map(|(name, seeds)| format!("{name}:{seeds}"))
            .collect();
        let below = BELOW_THE_BAR.iter().find(|(name, _)| *name == mutant.name);
        let mark = match (share >= SHARE_MIN, below) {
            (true, None) => "",
            (true, Some(_)) => "  [reaches the bar: take it off BELOW_THE_BAR]",
            (false, Some(_)) => "  [below the bar]",
            (false, None) => {
                failed.push(mutant.name);
                "  [BELOW THE BAR]"
            }
        };
        let inconclusive = if tally.inconclusive > 0 {
            format!(" inconclusive:{}", tally.inconclusive)
        } else {
            String::new()
        };
        println!(
            "{:<32} {:>13} {:>6.1}%  {}{inconclusive}{mark}",
            mutant.name,
            format!("{}/{}", tally.caught, tally.run),
            share * 100.0,
            if checkers.is_empty() {
                "-".to_string()
            } else {
                checkers.join(" ")
            },
        );
    }
    for (name, why) in BELOW_THE_BAR {
        println!("below the bar: {name}: {why}");
    }
    println!(
        "mutants: {} bugs x {seeds} seeds in {:.1}s",
        mutants.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!(
            "mutants: FAILED: caught in fewer than {:.0}% of seeds: {}",
            SHARE_MIN * 100.0,
            failed.join(", ")
        );
        std::process::exit(1);
    }
}
