//! What a simulator run reports: the client history, the violations found, the
//! linearizability verdict, the trace hash and the counters.
//!
//! The report is the engine's output ([`crate::engine::Sim::run`]), the same for every
//! replication scheme, so it lives below the engine and every host: the engine fills it in,
//! the workload counts into [`RunStats`], and the Raft and primary-backup hosts share it
//! without importing each other. [`history_hash`] fingerprints a history so that two runs can
//! be compared, as the determinism tests and the `trace_hashes` example do.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::checkers::Violation;
use crate::history::Operation;
use crate::linearizability::Verdict;
use crate::user::UserOperation;
use crate::visual::{Finding, VisualTrace};

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Raft messages sent between nodes (before loss).
    pub messages: u64,
    /// Node crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Unsynced disk records lost in crashes.
    pub records_lost: u64,
    /// Crashes after which the disk damaged a synced record, so that the node restarted
    /// repairing its log ([`crate::SimConfig::synced_damage`]).
    pub synced_damages: u64,
    /// Reads a leader served at once from its lease ([`crate::SimConfig::lease_reads`]).
    pub lease_reads: u64,
    /// Distinct terms in which a leader was seen (primary-backup: distinct views in which a
    /// primary acted).
    pub leaders: u64,
    /// Client attempts sent to nodes (first tries and retries).
    pub client_attempts: u64,
    /// Messages to and from the view service (primary-backup only; clients never send any).
    pub view_service_messages: u64,
    /// Failovers (primary-backup only): view changes that made the backup of the previous
    /// view its primary.
    pub failovers: u64,
}

/// Snapshot counters of one Raft run (kept apart from [`RunStats`], so that the counters of
/// schemes without snapshots read as before).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots a node took of its own state machine and compacted its log to.
    pub taken: u64,
    /// Snapshots a follower received from a leader by InstallSnapshot and installed.
    pub installed: u64,
    /// InstallSnapshot chunks leaders sent (before loss).
    pub chunks_sent: u64,
    /// Restarts that restored the state machine from a durable snapshot.
    pub restored: u64,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// The client history, in the HISTORY.md model.
    pub history: Vec<Operation>,
    /// The history of the user's state machine, under [`crate::Machine::User`] (empty
    /// otherwise).
    pub user_history: Vec<UserOperation>,
    /// Every invariant violation, liveness failure and linearizability failure found (a
    /// linearizability check that ran out of budget is not one: see [`RunReport::verdict`]).
    pub violations: Vec<Violation>,
    /// The linearizability verdict over the whole history.
    pub verdict: Verdict,
    /// A hash of every event processed: equal for equal seeds.
    pub trace_hash: u64,
    /// Simulated time at the end.
    pub end_time: u64,
    /// Counters.
    pub stats: RunStats,
    /// Snapshot counters (Raft only; zero for other schemes).
    pub snapshots: SnapshotStats,
    /// Notable events, one line each, if
    /// [`Sim::enable_trace_log`](crate::engine::Sim::enable_trace_log) was called.
    pub trace: Vec<String>,
    /// Primary-backup only: the run ended in the documented dead end where no failover is
    /// possible (the view service is down, or stuck by its rule 6 because the primary and
    /// every holder of its state failed). Its liveness was not asserted; its safety was.
    pub stuck: bool,
    /// What a space-time diagram of the run needs, if
    /// [`Sim::enable_visual`](crate::engine::Sim::enable_visual) was called (see
    /// [`crate::visual::render_html`]).
    pub visual: Option<Box<VisualTrace>>,
}

impl RunReport {
    /// The violations, as the visual trace's page shows them.
    #[must_use]
    pub fn findings(&self) -> Vec<Finding> {
        self.violations
            .iter()
            .map(|v| Finding {
                check: v.invariant.to_string(),
                time: v.time,
                detail: v.detail.clone(),
            })
            .collect()
    }
}

impl RunReport {
    /// Whether the run found nothing wrong and its history could be judged: no violation, and
    /// a linearizability check that did not run out of its budget.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && !self.inconclusive()
    }

    /// Whether the linearizability check ran out of its budget before it could decide (which
    /// is not a violation, and is not counted as one).
    #[must_use]
    pub fn inconclusive(&self) -> bool {
        matches!(self.verdict, Verdict::Inconclusive { .. })
    }

    /// Whether the history was proven linearizable.
    #[must_use]
    pub fn linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable)
    }
}

/// A stable fingerprint of a history, for comparing runs.
#[must_use]
pub fn history_hash(history: &[Operation]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for op in history {
        format!("{op:?}").hash(&mut hasher);
    }
    hasher.finish()
}
