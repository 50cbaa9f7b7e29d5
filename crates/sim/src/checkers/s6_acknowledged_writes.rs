//! S6, every acknowledged write is present at the end (Raft §5.4 and §8: a leader answers a
//! client only once the command is committed, and committed entries are durable).
//!
//! The simulator reports each write a client was told succeeded. When the run has ended and
//! the cluster has converged, every one of them must appear in the committed log. A write that
//! was acknowledged and then lost, by a node that acked before its log was durable or by a
//! leader that overwrote a committed entry, fails here.
//!
//! Compaction-aware: the longest final log may have compacted its prefix into a snapshot. For
//! the indexes its snapshot covers, the checker uses what was applied there (S3 and S4 check
//! that every node applied the same entry at each index, and the same state at each snapshot
//! point); above the snapshot, the entries the log still holds.

use std::collections::{BTreeMap, BTreeSet};

use chorus_core::LogIndex;
use chorus_core::envelope::Envelope;
use chorus_kv::{ClientId, Command};
use chorus_raft::{Entry, EntryPayload};

use super::FinalLog;

/// A write a client saw succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AcknowledgedWrite {
    /// The client's session.
    pub client: ClientId,
    /// The request's sequence number in that session.
    pub seq: u64,
}

#[derive(Debug, Default)]
pub(super) struct AcknowledgedWrites {
    acknowledged: BTreeSet<AcknowledgedWrite>,
    /// The session request applied at each index, as first applied by any node.
    applied: BTreeMap<LogIndex, AcknowledgedWrite>,
    /// The highest index any node applied.
    applied_max: LogIndex,
}

/// The session request an entry carries, if it carries one.
pub(super) fn session_request(entry: &Entry) -> Option<(Command, AcknowledgedWrite)> {
    let EntryPayload::Command(bytes) = &entry.payload else {
        return None;
    };
    let envelope = Envelope::decode(bytes).ok()?;
    let command = Command::decode(&envelope.command).ok()?;
    match command {
        Command::Request { client, seq, .. } => Some((command, AcknowledgedWrite { client, seq })),
        _ => None,
    }
}

impl AcknowledgedWrites {
    pub(super) fn observe(&mut self, write: AcknowledgedWrite) {
        self.acknowledged.insert(write);
    }

    /// A node applied `entry`.
    pub(super) fn observe_apply(&mut self, entry: &Entry) {
        if entry.index > self.applied_max {
            self.applied_max = entry.index;
            if let Some((_, write)) = session_request(entry) {
                self.applied.insert(entry.index, write);
            }
        }
    }

    /// Every write a client was told succeeded.
    pub(super) fn acknowledged(&self) -> &BTreeSet<AcknowledgedWrite> {
        &self.acknowledged
    }

    pub(super) fn finish(&self, logs: &[FinalLog], commit: LogIndex) -> Vec<String> {
        let coverage = |log: &FinalLog| {
            log.entries
                .last()
                .map_or(log.snapshot.index, |e| e.index.max(log.snapshot.index))
        };
        let Some(longest) = logs.iter().max_by_key(|log| coverage(log)) else {
            return vec!["no live node at the end of the run".to_string()];
        };
        let compacted = self
            .applied
            .range(..=longest.snapshot.index)
            .map(|(_, &write)| write);
        let held = longest
            .entries
            .iter()
            .filter(|entry| entry.index > longest.snapshot.index && entry.index <= commit)
            .filter_map(|entry| session_request(entry).map(|(_, write)| write));
        let committed: BTreeSet<AcknowledgedWrite> = compacted.chain(held).collect();
        self.acknowledged
            .difference(&committed)
            .map(|write| {
                format!(
                    "acknowledged write seq {} of client {} is not in the committed log",
                    write.seq, write.client.0
                )
            })
            .collect()
    }
}
