//! End-to-end checks of the nemesis itself: it needs root, network namespaces and a release
//! build, so these tests are ignored by default and run by hand or by CI's nemesis step:
//!
//! ```sh
//! cargo test -p xtask --test nemesis -- --ignored --test-threads 1
//! ```

use std::process::Command;

fn nemesis(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("nemesis")
        .args(args)
        .output()
        .expect("the xtask binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
#[ignore = "needs root, network namespaces and a release build (about two minutes)"]
fn a_build_that_reads_without_read_index_is_caught() {
    let (ok, text) = nemesis(&[
        "--protocol",
        "raft",
        "--duration",
        "30s",
        "--seed",
        "2",
        "--inject-bug",
        "read-without-read-index",
        "--expect-violations",
    ]);
    assert!(ok, "the nemesis missed the injected bug:\n{text}");
    let summary = text
        .lines()
        .find(|line| line.starts_with("nemesis raft: seed="))
        .expect("a summary line");
    assert!(!summary.contains("violations=0 lost-writes=0"), "{summary}");
}

#[test]
#[ignore = "needs root, network namespaces and a release build (about a minute)"]
fn a_correct_build_passes_a_short_run_and_leaves_nothing_behind() {
    let (ok, text) = nemesis(&["--protocol", "raft", "--duration", "20s", "--seed", "3"]);
    assert!(ok, "{text}");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let pid_free = String::from_utf8_lossy(&namespaces.stdout)
        .lines()
        .all(|line| !line.starts_with("chnem"));
    assert!(pid_free, "namespaces left behind");
}

#[test]
fn unknown_faults_are_refused_before_anything_starts() {
    let (ok, text) = nemesis(&["--faults", "meteor-strike", "--duration", "1s"]);
    assert!(!ok);
    assert!(text.contains("unknown fault"), "{text}");
}
