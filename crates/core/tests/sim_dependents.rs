//! A tidy check: no crate but the server depends on the simulator (issue 10).
//!
//! The simulator is a test harness for the protocol cores. Tools that check real clusters
//! (`chorus bench --check`, the nemesis in `crates/xtask`, the fuzz targets) need only the
//! client history and the linearizability checker, which live in `chorus-check`; depending on
//! `chorus-sim` for them would tie every such tool to the simulator's internals. The server
//! may, for its `chorus sim` command (`src/cli/sim.rs`) and its tests, and nowhere else in its
//! sources.
//!
//! Examples of a user's own state machine (`examples/`) are not held to it: plugging a state
//! machine into the simulator (`chorus_sim::Workbench`) is what they show.
//!
//! It reads every manifest under `crates/` and `fuzz/` as text: each dependency table
//! (`[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, their `[target.…]` forms
//! and `[dependencies.<name>]` tables), and a dependency named `chorus-sim`, renamed from it
//! (`package = "chorus-sim"`) or pointing at its path.

mod common;

use std::fs;
use std::path::PathBuf;

use common::root_dir;

/// The only package that may depend on the simulator.
const ALLOWED: &str = "chorus-server";

/// The one source file of the server that may use the simulator.
const SERVER_SIM_COMMAND: &str = "cli/sim.rs";

/// The dependency a manifest line declares in a dependency section, and whether it is the
/// simulator.
fn names_the_simulator(key: &str, line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    key == "chorus-sim"
        || compact.contains("package=\"chorus-sim\"")
        || compact.contains("crates/sim\"")
        || compact.contains("\"../sim\"")
}

/// Every line of `manifest` that makes its package depend on the simulator, as
/// `(package, line number, section, line)`. A package's own dev-dependency on itself is fine.
fn simulator_dependencies(manifest: &str) -> Vec<(String, usize, String, String)> {
    let mut package = String::new();
    let mut section = String::new();
    let mut hits = Vec::new();
    for (number, raw) in manifest.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).trim().to_string();
            continue;
        }
        let key = line
            .split(['=', '.'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if section == "package" && key == "name" {
            package = line
                .split('=')
                .nth(1)
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_string();
            continue;
        }
        let table = section.rsplit('.').next().unwrap_or("");
        let in_list = ["dependencies", "dev-dependencies", "build-dependencies"].contains(&table);
        // `[dependencies.chorus-sim]`: the section names the dependency, its lines configure it.
        let named_table = ["dependencies.", "dev-dependencies.", "build-dependencies."]
            .iter()
            .find_map(|prefix| {
                section
                    .split_once(prefix)
                    .map(|(_, name)| name.trim_matches('"'))
            });
        let hit = if let Some(name) = named_table {
            !line.is_empty() && names_the_simulator(name, line)
        } else {
            in_list && !line.is_empty() && names_the_simulator(key, line)
        };
        if hit {
            hits.push((
                package.clone(),
                number + 1,
                section.clone(),
                raw.to_string(),
            ));
        }
    }
    hits.retain(|(package, _, section, _)| {
        package != ALLOWED && !(package == "chorus-sim" && section.contains("dev-dependencies"))
    });
    hits
}

fn manifests() -> Vec<PathBuf> {
    let mut out = vec![root_dir().join("fuzz/Cargo.toml")];
    let crates = fs::read_dir(root_dir().join("crates")).expect("crates/ is readable");
    for entry in crates.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        if manifest.exists() {
            out.push(manifest);
        }
    }
    out.sort();
    assert!(out.len() > 5, "found too few manifests: {out:?}");
    out
}

#[test]
fn no_crate_but_the_server_depends_on_the_simulator() {
    let mut hits = Vec::new();
    for manifest in manifests() {
        let text = fs::read_to_string(&manifest).expect("readable manifest");
        let relative = manifest
            .strip_prefix(root_dir())
            .expect("invariant: found under the root")
            .display()
            .to_string();
        for (package, number, section, line) in simulator_dependencies(&text) {
            hits.push(format!("{relative}:{number}: {package} [{section}] {line}"));
        }
    }
    assert!(
        hits.is_empty(),
        "only {ALLOWED} may depend on chorus-sim; histories and the linearizability checker \
         are in chorus-check:\n{}",
        hits.join("\n")
    );
}

#[test]
fn only_the_sim_command_of_the_server_uses_the_simulator() {
    let mut hits = Vec::new();
    for (relative, text) in common::rust_sources(&root_dir().join("crates/server/src")) {
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("chorus_sim") && relative != SERVER_SIM_COMMAND {
                hits.push(format!(
                    "crates/server/src/{relative}:{}: {line}",
                    number + 1
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "only crates/server/src/{SERVER_SIM_COMMAND} may use chorus_sim:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_check_itself_can_fail() {
    // Proof that the scan bites, in every form a manifest can declare the dependency.
    let manifest = r#"
[package]
name = "chorus-bench"

[dependencies]
chorus-core.workspace = true
chorus-sim.workspace = true
simulator = { package = "chorus-sim", path = "../sim" }

[target.'cfg(unix)'.dev-dependencies]
chorus-sim = { path = "../sim" }

[dependencies.chorus-sim]
workspace = true

[features]
sim = ["chorus-sim/inject-bugs"]
"#;
    let lines: Vec<usize> = simulator_dependencies(manifest)
        .into_iter()
        .map(|(_, number, _, _)| number)
        .collect();
    assert_eq!(lines, vec![7, 8, 11, 14]);

    // The server may, and so may the simulator's own dev-dependencies.
    let server = manifest.replace("chorus-bench", ALLOWED);
    assert!(simulator_dependencies(&server).is_empty());
    let sim =
        "[package]\nname = \"chorus-sim\"\n[dev-dependencies]\nchorus-sim = { path = \".\" }\n";
    assert!(simulator_dependencies(sim).is_empty());
}
