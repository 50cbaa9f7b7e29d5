//! The invariant checkers: one file per invariant of SCENARIOS.md (S1–S8), each citing the
//! section of the Raft paper ("In Search of an Understandable Consensus Algorithm", extended
//! version) that it enforces. S7, linearizability, lives in [`crate::linearizability`] and is
//! run over the whole history at the end.
//!
//! The simulator calls the hooks of [`Checkers`] as it drives the nodes: after every event
//! that changed a node, on every persist, commit and apply, on every vote sent, on restarts,
//! and once at the end. A checker never panics; it records a [`Violation`] with the simulated
//! time and enough detail to start debugging, and the run goes on.

mod m_configurations;
mod pb_views;
mod s1_election_safety;
mod s2_log_matching;
mod s3_committed_durability;
mod s4_state_machine_safety;
mod s5_monotonicity;
mod s6_acknowledged_writes;
mod s8_exactly_once;

use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_pb::{PbStatus, View};
use chorus_raft::{Entry, EntryPayload, HardState, RawNode, SnapshotMeta, Status};

pub use s6_acknowledged_writes::AcknowledgedWrite;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant: `S1` … `S8`, `liveness`, or `determinism`.
    pub invariant: &'static str,
    /// Simulated time at which it was seen.
    pub time: u64,
    /// What was seen.
    pub detail: String,
}

/// A stable fingerprint of an entry's payload.
#[must_use]
pub fn payload_hash(payload: &EntryPayload) -> u64 {
    let mut hasher = DefaultHasher::new();
    match payload {
        EntryPayload::NoOp => 0u8.hash(&mut hasher),
        EntryPayload::Command(command) => {
            1u8.hash(&mut hasher);
            command.hash(&mut hasher);
        }
        EntryPayload::Membership(membership) => {
            2u8.hash(&mut hasher);
            membership.hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// A stable fingerprint of a state machine's snapshot image, for comparing states at
/// snapshot points ([`Checkers::observe_state`]).
#[must_use]
pub fn state_hash(image: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    image.hash(&mut hasher);
    hasher.finish()
}

/// What a checker sees of one applied entry.
#[derive(Clone, Debug)]
pub struct Applied<'a> {
    /// The node that applied it.
    pub node: NodeId,
    /// The entry.
    pub entry: &'a Entry,
    /// What the state machine answered (`None` for a no-op or an entry without a command).
    pub output: Option<&'a Bytes>,
}

/// What a live node holds of the committed log at the end of a run: the snapshot its log was
/// compacted to (index 0 if none) and the entries it still holds, up to its commit index
/// (they may begin below the snapshot's index: compaction keeps a tail).
#[derive(Clone, Debug)]
pub struct FinalLog {
    /// The node.
    pub node: NodeId,
    /// Its newest snapshot.
    pub snapshot: SnapshotMeta,
    /// The entries it holds, in order, up to its commit index.
    pub entries: Vec<Entry>,
}

/// Every checker, and the violations they found.
#[derive(Debug, Default)]
pub struct Checkers {
    s1: s1_election_safety::ElectionSafety,
    s2: s2_log_matching::LogMatching,
    s3: s3_committed_durability::CommittedDurability,
    s4: s4_state_machine_safety::StateMachineSafety,
    s5: s5_monotonicity::Monotonicity,
    s6: s6_acknowledged_writes::AcknowledgedWrites,
    s8: s8_exactly_once::ExactlyOnce,
    configurations: m_configurations::Configurations,
    pb: pb_views::PbViews,
    violations: Vec<Violation>,
}

/// How many violations are kept; past this a run is broken enough.
const VIOLATIONS_MAX: usize = 64;

impl Checkers {
    /// Fresh checkers.
    #[must_use]
    pub fn new() -> Checkers {
        Checkers::default()
    }

    fn record(&mut self, time: u64, found: Vec<(&'static str, String)>) {
        for (invariant, detail) in found {
            if self.violations.len() < VIOLATIONS_MAX {
                self.violations.push(Violation {
                    invariant,
                    time,
                    detail,
                });
            }
        }
    }

    /// The violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a violation found outside the checkers (liveness, determinism).
    pub fn report(&mut self, invariant: &'static str, time: u64, detail: String) {
        self.record(time, vec![(invariant, detail)]);
    }

    /// A node's status after an event touched it.
    pub fn observe_status(&mut self, time: u64, status: &Status, raft: &RawNode) {
        let mut found = Vec::new();
        if let Some(v) = self.s1.observe(status) {
            found.push(("S1", v));
        }
        if let Some(v) = self.s5.observe(status) {
            found.push(("S5", v));
        }
        if let Some(v) = self.s3.observe_leader(status, raft) {
            found.push(("S3", v));
        }
        self.record(time, found);
    }

    /// A Raft node's status and configuration after an event touched it: S1 across
    /// configurations, M1 (one change at a time) and M2 (in force on append).
    pub fn observe_configuration(&mut self, time: u64, status: &Status, raft: &RawNode) {
        let found = self.configurations.observe(status, raft);
        self.record(time, found);
    }

    /// A node is about to persist `entries`; `prev_term` is the term of the entry before them
    /// (if the node still knows it) and `commit` the node's commit index.
    pub fn observe_persist(
        &mut self,
        time: u64,
        node: NodeId,
        commit: LogIndex,
        prev_term: Option<Term>,
        entries: &[Entry],
    ) {
        let mut found = Vec::new();
        if let Some(v) = self.s2.observe(node, prev_term, entries) {
            found.push(("S2", v));
        }
        if let Some(v) = self.s3.observe_persist(node, commit, entries) {
            found.push(("S3", v));
        }
        self.record(time, found);
    }

    /// A node applied an entry.
    pub fn observe_apply(&mut self, time: u64, applied: &Applied<'_>) {
        let mut found = Vec::new();
        if let Some(v) = self.s3.observe_commit(applied.node, applied.entry) {
            found.push(("S3", v));
        }
        if let Some(v) = self.s4.observe(applied.node, applied.entry) {
            found.push(("S4", v));
        }
        if let Some(v) = self.s8.observe(applied) {
            found.push(("S8", v));
        }
        self.s6.observe_apply(applied.entry);
        self.record(time, found);
    }

    /// A node's state machine stands at `index` and its image hashes to `state` (see
    /// [`state_hash`]): it just took a snapshot there (`moved` false), or it was just restored
    /// from a snapshot at `index`, installed from a leader or read back at a restart (`moved`
    /// true: what it applies next follows `index`). `what` names the event for a report (S4).
    pub fn observe_state(
        &mut self,
        time: u64,
        node: NodeId,
        index: LogIndex,
        state: u64,
        moved: bool,
        what: &str,
    ) {
        if let Some(v) = self.s4.observe_state(node, index, state, moved, what) {
            self.record(time, vec![("S4", v)]);
        }
    }

    /// A node sent a granted (real) vote.
    pub fn observe_vote(&mut self, time: u64, node: NodeId, term: Term, candidate: NodeId) {
        self.configurations.observe_vote(node, term, candidate);
        if let Some(v) = self.s5.observe_vote(node, term, candidate) {
            self.record(time, vec![("S5", v)]);
        }
    }

    /// A node crashed; its volatile state is gone.
    pub fn observe_crash(&mut self, node: NodeId) {
        self.s4.observe_crash(node);
        self.s5.observe_crash(node);
    }

    /// A node restarted from `durable`, the hard state its disk kept.
    pub fn observe_restart(&mut self, time: u64, status: &Status, durable: HardState) {
        if let Some(v) = self.s5.observe_restart(status, durable) {
            self.record(time, vec![("S5", v)]);
        }
    }

    /// A client was told its write succeeded.
    pub fn observe_acknowledged(&mut self, write: AcknowledgedWrite) {
        self.s6.observe(write);
    }

    /// The run ended and the cluster converged: check what must hold of the final state.
    /// `logs` has what each live node holds of the log up to its commit index.
    pub fn finish(&mut self, time: u64, logs: &[FinalLog], final_commit: LogIndex) {
        let mut found = Vec::new();
        found.extend(self.s3.finish(logs).into_iter().map(|v| ("S3", v)));
        found.extend(
            self.s6
                .finish(logs, final_commit)
                .into_iter()
                .map(|v| ("S6", v)),
        );
        self.record(time, found);
    }

    /// Every write a client was told succeeded so far.
    #[must_use]
    pub fn acknowledged_writes(&self) -> &std::collections::BTreeSet<AcknowledgedWrite> {
        self.s6.acknowledged()
    }

    /// A replica of a scheme without a Raft log (the hybrid) applied `command` (the
    /// key-value command itself) at `index` and answered `output` (S8).
    pub fn observe_replicated_apply(
        &mut self,
        time: u64,
        node: NodeId,
        index: LogIndex,
        command: &[u8],
        output: &Bytes,
    ) {
        if let Some(v) = self
            .s8
            .observe_command(node, index, Some(Ok(command)), Some(output))
        {
            self.record(time, vec![("S8", v)]);
        }
    }

    // ---- primary-backup --------------------------------------------------------------

    /// A primary-backup replica's status after an event touched it (S1, S5; S4 and S8 for
    /// what it applied as a backup, if it now starts acting as primary).
    pub fn observe_pb_status(&mut self, time: u64, status: &PbStatus) {
        let (mut found, joined) = self.pb.observe_status(status);
        for (index, apply) in joined {
            if let Some(v) = self.s8.observe_command(
                status.id,
                index,
                Some(Ok(&apply.command)),
                Some(&apply.output),
            ) {
                found.push(("S8", v));
            }
        }
        self.record(time, found);
    }

    /// The view service's current view (S1).
    pub fn observe_pb_view(&mut self, time: u64, view: View) {
        if let Some(v) = self.pb.observe_view("the view service", view) {
            self.record(time, vec![("S1", v)]);
        }
    }

    /// A primary-backup replica applied the key-value `command` at `index` (executed it, or
    /// applied its `effect`), its output was `output`; `acting` says whether the apply joins
    /// the official sequence at once (S4, S8). Under passive replication nothing does: a
    /// primary's execution joins when acknowledged ([`Checkers::observe_pb_commit`]).
    pub fn observe_pb_apply(
        &mut self,
        time: u64,
        node: NodeId,
        index: LogIndex,
        apply: (&Bytes, &Bytes, &Bytes),
        acting: bool,
    ) {
        let (command, output, effect) = apply;
        let apply = pb_views::PbApply {
            command: command.clone(),
            output: output.clone(),
            effect: effect.clone(),
        };
        match self.pb.observe_apply(node, index, &apply, acting) {
            Err(v) => self.record(time, vec![("S4", v)]),
            Ok(false) => {}
            Ok(true) => {
                if let Some(v) =
                    self.s8
                        .observe_command(node, index, Some(Ok(command)), Some(output))
                {
                    self.record(time, vec![("S8", v)]);
                }
            }
        }
    }

    /// A primary acknowledged the operation at `index` to its client (the backup holds it):
    /// what it executed there joins the official sequence (S4, S8).
    pub fn observe_pb_commit(&mut self, time: u64, node: NodeId, index: LogIndex) {
        match self.pb.observe_commit(node, index) {
            Err(v) => self.record(time, vec![("S4", v)]),
            Ok(None) => {}
            Ok(Some(apply)) => {
                if let Some(v) = self.s8.observe_command(
                    node,
                    index,
                    Some(Ok(&apply.command)),
                    Some(&apply.output),
                ) {
                    self.record(time, vec![("S8", v)]);
                }
            }
        }
    }

    /// A primary sent its state up to `index` to `to` in `view`: the operations it holds
    /// there go with the state.
    pub fn observe_pb_transfer(
        &mut self,
        from: NodeId,
        to: NodeId,
        view: chorus_pb::ViewNumber,
        index: LogIndex,
    ) {
        self.pb.observe_transfer(from, to, view, index);
    }

    /// A primary-backup replica installed a state transfer of `view` (if it knows one)
    /// ending at `index`.
    pub fn observe_pb_restore(
        &mut self,
        node: NodeId,
        view: Option<chorus_pb::ViewNumber>,
        index: LogIndex,
    ) {
        self.pb.observe_restore(node, view, index);
    }

    /// A primary-backup replica crashed (it comes back new and empty).
    pub fn observe_pb_crash(&mut self, node: NodeId) {
        self.pb.observe_crash(node);
    }

    /// The primary-backup run ended: every acknowledged write must be among the operations
    /// up to `final_applied`, what the final primary (or, in a stuck run, the furthest
    /// surviving holder of the state) applied; `None` if no server holds the state any more,
    /// and then nothing can be checked of the final state.
    pub fn finish_pb(&mut self, time: u64, final_applied: Option<LogIndex>) {
        let Some(final_applied) = final_applied else {
            return;
        };
        let found = self
            .pb
            .finish(self.s6.acknowledged(), final_applied)
            .into_iter()
            .map(|v| ("S6", v))
            .collect();
        self.record(time, found);
    }
}
