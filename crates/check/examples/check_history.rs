//! Checks history files of the HISTORY.md format and prints, per file, the verdict, the number
//! of operations and how long the linearizability check took: the benchmark of the checker
//! (docs/checker.md reports its figures).
//!
//! `cargo run --release -p chorus-check --example check_history -- FILE...`; the environment
//! variable `CHORUS_CHECK_STEPS` replaces the default step budget per key.

use std::fs::File;
use std::io::BufReader;
use std::time::Instant;

use chorus_check::history::read_jsonl;
use chorus_check::linearizability::{CheckLimits, Verdict, check};

fn main() {
    let mut limits = CheckLimits::default();
    if let Some(steps) = std::env::var("CHORUS_CHECK_STEPS")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        limits.steps_max = steps;
    }
    let mut failed = false;
    let mut total = 0.0;
    for path in std::env::args().skip(1) {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("{path}: {error}");
                failed = true;
                continue;
            }
        };
        let ops = match read_jsonl(BufReader::new(file)) {
            Ok(ops) => ops,
            Err(error) => {
                eprintln!("{path}: {error}");
                failed = true;
                continue;
            }
        };
        let started = Instant::now();
        let verdict = check(&ops, limits);
        let elapsed = started.elapsed().as_secs_f64();
        total += elapsed;
        let verdict = match verdict {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::NotLinearizable { key, .. } => format!("NOT linearizable (key {key})"),
            Verdict::Inconclusive { key } => format!("inconclusive (key {key})"),
        };
        println!("{path}: ops={} {verdict} check={elapsed:.3}s", ops.len());
    }
    println!("total check time {total:.3}s");
    if failed {
        std::process::exit(1);
    }
}
