//! S6, every acknowledged write is present at the end (Raft §5.4 and §8: a leader answers a
//! client only once the command is committed, and committed entries are durable).
//!
//! The simulator reports each write a client was told succeeded. When the run has ended and
//! the cluster has converged, every one of them must appear in the committed log. A write that
//! was acknowledged and then lost, by a node that acked before its log was durable or by a
//! leader that overwrote a committed entry, fails here.

use std::collections::BTreeSet;

use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId};
use chorus_kv::{ClientId, Command};
use chorus_raft::{Entry, EntryPayload};

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

    /// Every write a client was told succeeded.
    pub(super) fn acknowledged(&self) -> &BTreeSet<AcknowledgedWrite> {
        &self.acknowledged
    }

    pub(super) fn finish(&self, logs: &[(NodeId, Vec<Entry>)], commit: LogIndex) -> Vec<String> {
        let Some((_, longest)) = logs.iter().max_by_key(|(_, log)| log.len()) else {
            return vec!["no live node at the end of the run".to_string()];
        };
        let committed: BTreeSet<AcknowledgedWrite> = longest
            .iter()
            .take_while(|entry| entry.index <= commit)
            .filter_map(|entry| session_request(entry).map(|(_, write)| write))
            .collect();
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
