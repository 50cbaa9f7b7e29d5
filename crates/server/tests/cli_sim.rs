//! End-to-end tests of `chorus sim`: the summary line, exit codes, replay, and history files
//! that the project's own checker reads back.

use std::fs::File;
use std::io::BufReader;
use std::process::Command;

use chorus_check::history::read_jsonl;
use chorus_check::linearizability::{CheckLimits, Verdict, check};

fn chorus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chorus"))
}

#[test]
fn a_sweep_ends_with_one_summary_line_and_writes_readable_histories() {
    let dir = tempfile::tempdir().unwrap();
    let output = chorus()
        .args([
            "sim",
            "--protocol",
            "raft",
            "--seeds",
            "3..5",
            "--ops",
            "200",
            "--faults",
            "all",
        ])
        .arg("--history-out")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(
            "sim raft: seeds=3 ops=600 violations=0 inconclusive=0 linearizable=3/3 snapshots: taken="
        ) && summary.contains(" installed=")
            && summary.contains(" elapsed="),
        "{summary}"
    );
    assert!(summary.ends_with('s'), "{summary}");
    for seed in 3..=5 {
        let path = dir.path().join(format!("seed-{seed}.jsonl"));
        let history = read_jsonl(BufReader::new(File::open(&path).unwrap())).unwrap();
        assert_eq!(history.len(), 200, "{}", path.display());
        assert_eq!(
            check(&history, CheckLimits::default()),
            Verdict::Linearizable
        );
    }
}

#[test]
fn replay_runs_one_seed_and_prints_its_trace() {
    let output = chorus()
        .args([
            "sim",
            "--replay",
            "7",
            "--ops",
            "100",
            "--faults",
            "crash",
            "--verbose",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("leads"),
        "the trace names leaders: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("sim raft: seed=7 ops=100 violations=0"),
        "{stdout}"
    );
}

#[test]
fn the_same_seed_replays_to_the_same_trace() {
    let run = || {
        let output = chorus()
            .args(["sim", "--replay", "11", "--ops", "150"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(run(), run());
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() {
    let output = chorus().args(["sim", "--seeds", "9..3"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("empty seed range"), "{stderr}");
    let output = chorus()
        .args(["sim", "--faults", "meteor"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown fault profile"));
}

#[test]
fn a_pb_sweep_ends_with_a_summary_line_that_counts_stuck_runs() {
    let output = chorus()
        .args([
            "sim",
            "--protocol",
            "pb",
            "--seeds",
            "1..6",
            "--ops",
            "200",
            "--faults",
            "all",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap();
    assert!(summary.starts_with("sim pb: seeds=6 ops="), "{summary}");
    assert!(
        summary.contains(" violations=0 inconclusive=0 linearizable=6/6 stuck="),
        "{summary}"
    );
    assert!(summary.contains(" failovers="), "{summary}");
}

/// The number after `name=` in a summary line.
fn field(summary: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}=");
    summary
        .split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))?
        .parse()
        .ok()
}

#[test]
fn pb_crashes_one_at_a_time_fail_over_and_many_at_once_reach_the_dead_end() {
    let summary = |faults: &str| {
        let output = chorus()
            .args([
                "sim",
                "--protocol",
                "pb",
                "--seeds",
                "1..6",
                "--ops",
                "200",
                "--faults",
                faults,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{stdout}");
        stdout.lines().last().unwrap().to_string()
    };
    // One crash at a time, each after a backup holds the state: what pb claims to survive.
    let paced = summary("crash");
    assert!(
        paced.contains(" violations=0 inconclusive=0 linearizable=6/6 "),
        "{paced}"
    );
    assert_eq!(field(&paced, "stuck"), Some(0), "{paced}");
    assert!(field(&paced, "failovers").unwrap() > 0, "{paced}");
    // Many servers at once: safe, but mostly stuck.
    let many = summary("crash-many");
    assert!(
        many.contains(" violations=0 inconclusive=0 linearizable=6/6 "),
        "{many}"
    );
    assert!(field(&many, "stuck").unwrap() > 0, "{many}");
}

#[test]
fn a_pb_replay_prints_its_views_and_the_replay_line_names_pb() {
    let output = chorus()
        .args([
            "sim",
            "--protocol",
            "pb",
            "--replay",
            "5",
            "--ops",
            "100",
            "--faults",
            "none",
            "--verbose",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("acts as primary"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("sim pb: seed=5 ops=100 violations=0 linearizable=true stuck=false"),
        "{stdout}"
    );
}
