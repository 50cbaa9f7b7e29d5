//! Determinism: a run is a pure function of its seed and configuration, which is what makes a
//! failing seed a replayable regression test.

use chorus_sim::{FaultProfile, SimConfig, history_hash};

fn config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.nodes = 5;
    config.ops = 300;
    config.faults = FaultProfile::All;
    config
}

// The same seed replays the same run, event for event: same trace, same history, same
// verdict. Scripted runs (here Figure 8, with a filter and crashes) replay as well.
#[test]
fn the_same_seed_gives_the_same_trace_and_history() {
    for seed in [3, 11] {
        let first = chorus_sim::run(config(seed));
        let second = chorus_sim::run(config(seed));
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(
            history_hash(&first.history),
            history_hash(&second.history),
            "seed {seed}"
        );
        assert_eq!(first.violations, second.violations, "seed {seed}");
        assert_eq!(first.stats, second.stats, "seed {seed}");
        assert_eq!(first.end_time, second.end_time, "seed {seed}");
    }
    let first = crate::common::figure8::run(crate::common::figure8::config(5)).report;
    let second = crate::common::figure8::run(crate::common::figure8::config(5)).report;
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(history_hash(&first.history), history_hash(&second.history));
}

// Different seeds explore different runs: no two of a handful share a trace or a history.
#[test]
fn different_seeds_give_different_traces() {
    let reports: Vec<_> = (1..=5).map(|seed| chorus_sim::run(config(seed))).collect();
    for (i, a) in reports.iter().enumerate() {
        for b in &reports[i + 1..] {
            assert_ne!(
                a.trace_hash, b.trace_hash,
                "seeds {} and {}",
                a.seed, b.seed
            );
            assert_ne!(
                history_hash(&a.history),
                history_hash(&b.history),
                "seeds {} and {}",
                a.seed,
                b.seed
            );
        }
    }
}

// Drawing a run changes nothing it does: with the visual trace (and the text trace) recorded,
// every seed of both schemes keeps its trace hash and its history, and Figure 8 with its
// captions replays the same as without them.
#[test]
fn recording_a_visual_trace_changes_nothing_the_run_does() {
    let recording = chorus_sim::Recording {
        trace_log: true,
        visual: true,
    };
    for protocol in [chorus_sim::Protocol::Raft, chorus_sim::Protocol::Pb] {
        for seed in [4, 9] {
            let mut plain = config(seed);
            plain.protocol = protocol;
            let drawn = chorus_sim::run_recorded(plain.clone(), recording);
            let plain = chorus_sim::run(plain);
            assert_eq!(
                plain.trace_hash, drawn.trace_hash,
                "{protocol:?} seed {seed}"
            );
            assert_eq!(
                history_hash(&plain.history),
                history_hash(&drawn.history),
                "{protocol:?} seed {seed}"
            );
            let trace = drawn.visual.expect("the visual trace was kept");
            assert!(trace.message_count() > 0);
            assert!(plain.visual.is_none());
        }
    }
    let plain = crate::common::figure8::run(crate::common::figure8::config(5)).report;
    let drawn = chorus_sim::gallery::figure8::run(crate::common::figure8::config(5), true)
        .expect("the stage is set")
        .report;
    assert_eq!(plain.trace_hash, drawn.trace_hash);
}
