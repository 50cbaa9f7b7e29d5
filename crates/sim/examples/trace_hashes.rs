//! Prints one line per seed with the hashes of everything a run produced, for Raft and for
//! primary-backup under every fault, so a refactoring can prove it left the simulator's
//! behaviour bit-identical: record the output before, run again after, `diff` the two.
//!
//! `cargo run --release -p chorus-sim --example trace_hashes -- [LAST_SEED]` (default 300):
//! seeds `1..=LAST_SEED` of each protocol. Each line holds the trace hash (every event
//! processed), the history hash, and a hash of the readable trace log, the violations, the
//! verdict, the counters, the end time and the stuck flag.

use std::hash::{DefaultHasher, Hash, Hasher};

use chorus_sim::{FaultProfile, Protocol, SimConfig, history_hash};

fn main() {
    let last_seed: u64 = std::env::args().nth(1).map_or(300, |arg| {
        arg.parse().expect("usage: trace_hashes [LAST_SEED]")
    });
    for protocol in [Protocol::Raft, Protocol::Pb] {
        for seed in 1..=last_seed {
            let mut config = SimConfig::new(seed);
            config.protocol = protocol;
            config.faults = FaultProfile::All;
            let report = chorus_sim::run_traced(config);
            let mut rest = DefaultHasher::new();
            report.trace.hash(&mut rest);
            format!(
                "{:?} {:?} {:?} {} {}",
                report.violations, report.verdict, report.stats, report.end_time, report.stuck
            )
            .hash(&mut rest);
            println!(
                "{protocol} seed={seed} trace={:016x} history={:016x} rest={:016x} passed={}",
                report.trace_hash,
                history_hash(&report.history),
                rest.finish(),
                report.passed()
            );
        }
    }
}
