//! H3: every acknowledged `(epoch, lsn)` is in every member of every later active view
//! (PacificA's commit invariant; Kafka's unclean election is the counterexample). Checked
//! whenever a view becomes active, and at the end, against each member's durable log.

use std::collections::BTreeMap;

use chorus_core::NodeId;
use chorus_hybrid::{DataEntry, Epoch, Lsn};

use super::command_hash;

#[derive(Debug, Default)]
pub(crate) struct AcknowledgedEntries {
    entries: BTreeMap<Lsn, (Epoch, u64)>,
    /// Every entry a server applied, by lsn: S4 (the same command at every lsn everywhere).
    applied: BTreeMap<Lsn, u64>,
}

impl AcknowledgedEntries {
    /// A primary acknowledged the write at `entry`.
    pub(crate) fn observe(&mut self, entry: &DataEntry) -> Option<String> {
        let fingerprint = (entry.epoch, command_hash(&entry.command));
        match self.entries.insert(entry.lsn, fingerprint) {
            Some(before) if before != fingerprint => Some(format!(
                "{} was acknowledged as {before:?} and again as {fingerprint:?}",
                entry.lsn
            )),
            _ => None,
        }
    }

    /// A server applied `command` at `lsn` (S4).
    pub(crate) fn observe_apply(
        &mut self,
        node: NodeId,
        lsn: Lsn,
        command: &[u8],
    ) -> Option<String> {
        let hash = command_hash(command);
        match self.applied.insert(lsn, hash) {
            Some(before) if before != hash => {
                Some(format!("{node} applied a different command at {lsn}"))
            }
            _ => None,
        }
    }

    /// `member` of an active view holds `log`: every acknowledged entry must be in it.
    pub(crate) fn check_member(&self, member: NodeId, log: &[DataEntry]) -> Option<String> {
        for (lsn, (epoch, hash)) in &self.entries {
            let index = usize::try_from(lsn.0.saturating_sub(1)).unwrap_or(usize::MAX);
            let held = log.get(index).is_some_and(|entry| {
                entry.epoch == *epoch && command_hash(&entry.command) == *hash
            });
            if !held {
                return Some(format!(
                    "{member} lacks acknowledged ({epoch}, {lsn}) of an active view"
                ));
            }
        }
        None
    }
}
