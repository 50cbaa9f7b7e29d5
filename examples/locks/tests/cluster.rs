//! The lock service on the real runtime: the example's `cluster` mode starts three Raft nodes
//! on 127.0.0.1 in one process, runs concurrent clients and checks their history.

use std::process::Command;

#[test]
fn a_real_raft_cluster_replicates_the_lock_service() {
    // A port range of its own, apart from the cluster tests' and from other runs'.
    let base_port = 21_000 + (std::process::id() % 500) as u16 * 10;
    let output = Command::new(env!("CARGO_BIN_EXE_chorus-example-locks"))
        .args([
            "cluster",
            "--protocol",
            "raft",
            "--clients",
            "3",
            "--ops",
            "40",
        ])
        .args(["--base-port", &base_port.to_string()])
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("120 lock operations by 3 clients, 120 answered"),
        "{stdout}"
    );
    assert!(stdout.contains("passes the lock check"), "{stdout}");
}

#[test]
fn the_runtime_refuses_pb_and_hybrid_for_now_and_says_why() {
    for protocol in ["pb", "hybrid"] {
        let output = Command::new(env!("CARGO_BIN_EXE_chorus-example-locks"))
            .args(["cluster", "--protocol", protocol])
            .output()
            .expect("the example runs");
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("raft only"), "{stderr}");
    }
}
