//! A tidy check: the protocol cores, the state machines and the simulator stay pure
//! (DESIGN.md: "Pure crates never depend on tokio, `std::net`, `std::fs`, clocks or
//! hash-ordered maps"), so that the simulator's runs are deterministic and replayable.
//!
//! It reads the crates' manifests and sources as text. A hit names the file and line.

mod common;

use std::fs;
use std::path::PathBuf;

/// The crates that must stay pure.
const PURE_CRATES: [&str; 8] = ["core", "raft", "kv", "check", "sim", "resp", "pb", "hybrid"];

/// Dependencies a pure crate may not have.
const FORBIDDEN_DEPENDENCIES: [&str; 6] = [
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "chrono",
    "getrandom",
];

/// Source text a pure crate may not contain (outside comments).
const FORBIDDEN_SOURCE: [&str; 9] = [
    "std::time",
    "std::fs",
    "std::net",
    "std::thread",
    "std::env",
    "thread_rng",
    "SystemTime",
    "Instant::now",
    "HashSet",
];

/// Files allowed to use a `HashMap` because they only look keys up and never iterate.
const HASH_MAP_LOOKUP_ONLY: [&str; 1] = ["check/src/linearizability.rs"];

fn crates_dir() -> PathBuf {
    common::root_dir().join("crates")
}

#[test]
fn pure_crates_have_no_io_or_clock_dependencies() {
    let mut hits = Vec::new();
    for name in PURE_CRATES {
        let manifest = fs::read_to_string(crates_dir().join(name).join("Cargo.toml")).unwrap();
        for line in manifest.lines() {
            let dependency = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            if FORBIDDEN_DEPENDENCIES.contains(&dependency) {
                hits.push(format!("crates/{name}/Cargo.toml: {line}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "pure crates depend on I/O or clocks:\n{}",
        hits.join("\n")
    );
}

/// Chorus crates that do I/O, which no pure crate may depend on. (The simulator may depend on
/// `chorus-storage` for its pure in-memory twin, `MemStorage`; the file storage is never
/// constructed there, and the source scan below keeps `std::fs` out of the simulator itself.)
const IMPURE_CHORUS_CRATES: [&str; 2] = ["chorus-server", "chorus-client"];

#[test]
fn dependencies_point_from_the_runtime_to_the_pure_cores_never_back() {
    let mut hits = Vec::new();
    for name in PURE_CRATES {
        let manifest = fs::read_to_string(crates_dir().join(name).join("Cargo.toml")).unwrap();
        for line in manifest.lines() {
            let dependency = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            let storage_outside_sim = dependency == "chorus-storage" && name != "sim";
            if IMPURE_CHORUS_CRATES.contains(&dependency) || storage_outside_sim {
                hits.push(format!("crates/{name}/Cargo.toml: {line}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "a pure crate depends on a runtime crate:\n{}",
        hits.join("\n")
    );
}

#[test]
fn pure_crates_use_no_clock_io_threads_or_hash_order() {
    let mut hits = Vec::new();
    for name in PURE_CRATES {
        let files = common::rust_sources(&crates_dir().join(name).join("src"));
        assert!(!files.is_empty(), "no sources found for crates/{name}");
        for (relative, text) in files {
            let relative = format!("{name}/src/{relative}");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let mut forbidden: Vec<&str> = FORBIDDEN_SOURCE.to_vec();
                if !HASH_MAP_LOOKUP_ONLY.contains(&relative.as_str()) {
                    forbidden.push("HashMap");
                }
                for word in forbidden {
                    if code.contains(word) {
                        hits.push(format!("crates/{relative}:{}: {word}", number + 1));
                    }
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "pure crates must stay deterministic:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_check_itself_can_fail() {
    // Proof that the scan bites: a line using a clock is caught, a comment mentioning one is not.
    let code = "let now = std::time::Instant::now(); // std::fs in a comment";
    let uncommented = code.split("//").next().unwrap();
    assert!(
        FORBIDDEN_SOURCE
            .iter()
            .any(|word| uncommented.contains(word))
    );
    assert!(!uncommented.contains("std::fs"));
}
