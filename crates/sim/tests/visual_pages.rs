//! The visual trace's pages, opened in a real browser (headless Chromium): the gallery's
//! staged runs and a failing run render with no script error, draw their lanes, and a failing
//! run opens at its violation with the operations it names highlighted.
//!
//! Chromium is found as `chromium`, `chromium-browser` or `google-chrome` on the PATH (or
//! `CHORUS_CHROMIUM`). Without it the test says so and passes, unless
//! `CHORUS_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs it), when it fails.
//! Screenshots are saved next to the pages, under the test's temporary directory, whose path
//! the test prints.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chorus_raft::InjectedBugs;
use chorus_sim::gallery::Scenario;
use chorus_sim::visual::render_html;
use chorus_sim::{Recording, RunReport, SimConfig};
use common::figure8;

fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CHORUS_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Opens `page` in headless Chromium and returns the `data-*` attributes the page's script
/// set on its body once it drew (empty if it never got there); saves a screenshot beside it.
fn open(browser: &Path, page: &Path) -> BTreeMap<String, String> {
    let url = format!("file://{}", page.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1500,900",
    ];
    let output = Command::new(browser)
        .args(flags)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let shot = page.with_extension("png");
    let status = Command::new(browser)
        .args(flags)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(status.status.success(), "no screenshot of {url}");
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    let Some(start) = dom.find("<body") else {
        return BTreeMap::new();
    };
    let tag = &dom[start..start + dom[start..].find('>').unwrap_or(0)];
    let mut attributes = BTreeMap::new();
    for part in tag.split(" data-").skip(1) {
        if let Some((name, value)) = part.split_once("=\"") {
            let value = value.split('"').next().unwrap_or_default();
            attributes.insert(name.to_string(), value.to_string());
        }
    }
    attributes
}

fn number(attributes: &BTreeMap<String, String>, name: &str) -> u64 {
    attributes
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data-{name} in {attributes:?}"))
}

fn write(dir: &Path, name: &str, title: &str, report: &RunReport) -> PathBuf {
    let trace = report.visual.as_ref().expect("the run kept a visual trace");
    let page = render_html(
        title,
        trace,
        &report.history,
        &report.findings(),
        report.end_time,
    );
    let path = dir.join(format!("{name}.html"));
    std::fs::write(&path, page).expect("the page is written");
    path
}

#[test]
fn pages_render_in_chromium_with_their_lanes_and_violations() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CHORUS_REQUIRE_CHROMIUM").is_err(),
            "CHORUS_REQUIRE_CHROMIUM is set but no Chromium was found"
        );
        eprintln!("skipped: no chromium on the PATH (apt-get install chromium)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("chorus-visual-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    println!("pages and screenshots in {}", dir.display());

    // The gallery's stories render, each with its lanes and no violation.
    for (scenario, node_lanes) in [
        (Scenario::Figure8, 5),
        (Scenario::RaftPartitionedLeader, 5),
        (Scenario::PbSplitBrain, 4),
    ] {
        let report = scenario.run(1).expect("the stage is set");
        assert!(
            report.passed(),
            "{}: {:?}",
            scenario.name(),
            report.violations
        );
        let page = write(&dir, scenario.name(), scenario.lesson(), &report);
        let seen = open(&browser, &page);
        assert_eq!(
            seen.get("rendered").map(String::as_str),
            Some("1"),
            "{}: {seen:?}",
            scenario.name()
        );
        assert!(
            !seen.contains_key("error"),
            "{}: script error {seen:?}",
            scenario.name()
        );
        assert_eq!(
            number(&seen, "node-lanes"),
            node_lanes,
            "{}",
            scenario.name()
        );
        assert!(
            number(&seen, "messages") > 100,
            "{}: {seen:?}",
            scenario.name()
        );
        assert_eq!(number(&seen, "violations"), 0);
    }

    // A failing run: Figure 8 with the current-term commit rule broken. The page opens at the
    // first violation, and names it.
    let mut config = figure8::config(2);
    config.injected_bugs = InjectedBugs {
        commit_without_current_term: true,
        ..InjectedBugs::default()
    };
    let report = chorus_sim::gallery::figure8::run(config, true)
        .expect("the stage is set")
        .report;
    assert!(!report.passed(), "the injected bug went unnoticed");
    let first = report
        .violations
        .iter()
        .map(|v| v.time)
        .min()
        .expect("a violation");
    let page = write(
        &dir,
        "figure-8-broken",
        "Figure 8, commit rule broken",
        &report,
    );
    let seen = open(&browser, &page);
    assert_eq!(
        seen.get("rendered").map(String::as_str),
        Some("1"),
        "{seen:?}"
    );
    assert!(!seen.contains_key("error"), "script error {seen:?}");
    assert_eq!(number(&seen, "violations"), report.violations.len() as u64);
    assert!(
        number(&seen, "t0") <= first && first <= number(&seen, "t1"),
        "the page does not open at the violation (t={first}): {seen:?}"
    );
    let html = std::fs::read_to_string(&page).expect("the page reads back");
    assert!(html.contains(report.violations[0].invariant));

    // A 1000-operation random run with every fault: the page stays small and draws.
    let mut config = SimConfig::new(3);
    config.ops = 1000;
    let report = chorus_sim::run_recorded(
        config,
        Recording {
            trace_log: false,
            visual: true,
        },
    );
    let page = write(&dir, "raft-seed-3", "raft seed 3", &report);
    let size = std::fs::metadata(&page).expect("the page exists").len();
    assert!(
        size < 5_000_000,
        "the page of a 1000-operation run is {size} bytes"
    );
    let seen = open(&browser, &page);
    assert_eq!(
        seen.get("rendered").map(String::as_str),
        Some("1"),
        "{seen:?}"
    );
    assert!(!seen.contains_key("error"), "script error {seen:?}");
    println!(
        "1000-operation page: {size} bytes, {} messages, drawn in {} ms, {} ms after navigation began",
        number(&seen, "messages"),
        number(&seen, "render-ms"),
        number(&seen, "ready-ms")
    );
}
