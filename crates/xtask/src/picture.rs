//! The picture of a nemesis run: the page of `chorus_check::visual`, filled in from what the
//! nemesis did (which node was down or paused, which links were cut, when) and what the
//! clients saw, with the checker's findings. Real runs show no messages: the nodes' traffic is
//! not observed, only its effect on the history.

use std::time::Duration;

use chorus_check::history::Operation;
use chorus_check::visual::{Finding, LaneState, VisualTrace, render_html};

use crate::nemesis::Mark;

/// Everything a nemesis run's page shows.
pub struct Run<'a> {
    /// The page's title.
    pub title: String,
    /// The nodes' lane names, node 1 first.
    pub lanes: Vec<String>,
    /// What the nemesis did.
    pub timeline: &'a [Mark],
    /// The nemesis log's lines.
    pub notes: &'a [(Duration, String)],
    /// The history, times in nanoseconds since the start.
    pub history: &'a [Operation],
    /// Keys whose history is not linearizable, with the checker's detail.
    pub violations: &'a [(String, String)],
    /// Acknowledged appends missing at the end.
    pub lost: &'a [Operation],
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn lane_state(state: &'static str) -> Option<LaneState> {
    (state != "down").then_some(LaneState {
        role: state,
        epoch: 0,
        commit: 0,
        snapshot: 0,
    })
}

/// The page of a nemesis run, times in milliseconds since its start.
#[must_use]
pub fn page(run: &Run<'_>) -> String {
    let lanes = run.lanes.len();
    let mut trace = VisualTrace::new(run.lanes.clone(), "");
    trace.set_time_unit("ms");
    for lane in 0..lanes {
        trace.sample(lane, 0, lane_state("running"));
    }
    for mark in run.timeline {
        match mark {
            Mark::Node { at, node, state } => {
                trace.sample(node.saturating_sub(1), ms(*at), lane_state(state));
            }
            Mark::Cut { at, links } => {
                let links: Vec<(usize, usize)> = links
                    .iter()
                    .map(|&(a, b)| (a.saturating_sub(1), b.saturating_sub(1)))
                    .collect();
                trace.sample_cut(ms(*at), &links);
            }
        }
    }
    for (at, line) in run.notes {
        trace.note(ms(*at), line.clone());
    }
    let history: Vec<Operation> = run
        .history
        .iter()
        .map(|op| Operation {
            call: op.call / 1_000_000,
            ret: op.ret.map(|r| r / 1_000_000),
            ..op.clone()
        })
        .collect();
    let end = history
        .iter()
        .map(|op| op.ret.unwrap_or(op.call))
        .chain(run.timeline.iter().map(|m| match m {
            Mark::Node { at, .. } | Mark::Cut { at, .. } => ms(*at),
        }))
        .max()
        .unwrap_or(0);
    let mut findings: Vec<Finding> = run
        .violations
        .iter()
        .map(|(key, detail)| Finding {
            check: "linearizability".to_string(),
            // The checker names no time; the page opens at the key's first operation.
            time: history
                .iter()
                .filter(|op| op.key == *key)
                .map(|op| op.call)
                .min()
                .unwrap_or(0),
            detail: format!("key {key}: {}", detail.lines().next().unwrap_or_default()),
        })
        .collect();
    findings.extend(run.lost.iter().map(|op| Finding {
        check: "lost write".to_string(),
        time: op.ret.unwrap_or(op.call) / 1_000_000,
        detail: format!(
            "key {}: the acknowledged append {:?} of client {} is missing at the end",
            op.key,
            op.value.as_deref().unwrap_or(""),
            op.client
        ),
    }));
    findings.sort_by_key(|f| f.time);
    render_html(&run.title, &trace, &history, &findings, end)
}
