//! The primary-backup forms of S1, S4, S5 and S6 (SCENARIOS.md section A and the pb crate's
//! rules), for the simulation of `chorus_pb`. They replace the Raft checkers that speak of
//! terms and logs; S7 (linearizability) and S8 (exactly-once, fed every apply) are shared.
//!
//! - **S1, one primary per view.** Every view number names one view: any two replicas (or the
//!   view service) that know view V agree on its primary and backup, and a replica acts as
//!   primary only of a view that names it.
//! - **S4, one sequence of operations.** The operations primaries acknowledge form the
//!   official sequence (an operation is its command and, under passive replication, the
//!   effect its execution gave): every primary acknowledges, at each index, the operation the
//!   sequence has there. A primary executes an operation before its backup holds it, so what
//!   it executed is its own until acknowledged, like a backup's applies; these join the
//!   sequence when the replica becomes the acting primary without a new state transfer, and
//!   must agree with it too. A state transfer carries the sender's own operations up to its
//!   index to the receiver. (A backup may apply an operation that its primary, replaced
//!   before it heard the acknowledgement, aborts; if that backup is not promoted, its state
//!   is discarded by the next state transfer, and the client, told the outcome is unknown,
//!   retries.)
//! - **S5, views never go backwards.** Within one incarnation a replica's view number never
//!   decreases, and its applied index never decreases except when it installs a state
//!   transfer of a newer view (the new primary's state may be shorter than what a former
//!   backup applied: the primary had not yet applied an operation the backup acknowledged;
//!   S4 checks that the operation comes back the same at that index).
//! - **S6, acknowledged writes survive.** At the end, every write a client was told succeeded
//!   is among the operations the final primary has applied.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId};
use chorus_kv::Command;
use chorus_pb::{PbStatus, View, ViewNumber};

use super::AcknowledgedWrite;

/// Violations found: the invariant and what was seen.
type Found = Vec<(&'static str, String)>;

/// One applied operation.
#[derive(Clone, Debug)]
pub(super) struct PbApply {
    /// The key-value command.
    pub(super) command: Bytes,
    /// The state machine's answer.
    pub(super) output: Bytes,
    /// The effect the primary's execution gave (empty for an active apply).
    pub(super) effect: Bytes,
}

impl PbApply {
    /// The operation's identity: the command and the effect (under passive replication a
    /// command with two different effects at one index is two different operations).
    fn hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.command.hash(&mut hasher);
        self.effect.hash(&mut hasher);
        hasher.finish()
    }

    fn write(&self) -> Option<AcknowledgedWrite> {
        match Command::decode(&self.command) {
            Ok(Command::Request { client, seq, .. }) => Some(AcknowledgedWrite { client, seq }),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct PbViews {
    /// Every view seen, by number.
    views: BTreeMap<ViewNumber, View>,
    /// Each live replica's latest (view number, view whose state it installed, applied index).
    last: BTreeMap<NodeId, (ViewNumber, Option<ViewNumber>, LogIndex)>,
    /// The official sequence: each index's command (a hash) and the session request it
    /// carries.
    official: BTreeMap<LogIndex, (u64, Option<AcknowledgedWrite>)>,
    /// What each replica applied while not acting as primary, since its last state transfer.
    local: BTreeMap<NodeId, BTreeMap<LogIndex, PbApply>>,
    /// The replicas acting as primary at their last observation.
    acting: BTreeSet<NodeId>,
    /// State transfers sent, by (receiver, view, last index): the sender's own operations up
    /// to that index, which the receiver holds once it installs the transfer.
    carried: BTreeMap<(NodeId, ViewNumber, LogIndex), BTreeMap<LogIndex, PbApply>>,
}

impl PbViews {
    /// S1 for a view anyone reported.
    pub(super) fn observe_view(&mut self, who: &str, view: View) -> Option<String> {
        if view.number == ViewNumber(0) {
            return None;
        }
        let known = *self.views.entry(view.number).or_insert(view);
        (known != view).then(|| {
            format!(
                "two views numbered {}: {known:?} and {view:?} (seen by {who})",
                view.number
            )
        })
    }

    /// S1 and S5 for a replica's status; S4 when it starts acting as primary. Returns the
    /// violations and the operations that joined the official sequence (for S8).
    pub(super) fn observe_status(
        &mut self,
        status: &PbStatus,
    ) -> (Found, Vec<(LogIndex, PbApply)>) {
        let mut found = Vec::new();
        let mut joined = Vec::new();
        let id = status.id;
        if let Some(v) = self.observe_view(&id.to_string(), status.view) {
            found.push(("S1", v));
        }
        if status.acting_primary && status.view.primary != Some(id) {
            found.push((
                "S1",
                format!(
                    "{id} acts as primary of {:?}, which does not name it",
                    status.view
                ),
            ));
        }
        if let Some(&(number, installed, applied)) = self.last.get(&id) {
            if status.view.number < number {
                found.push((
                    "S5",
                    format!(
                        "{id} went from view {number} back to {}",
                        status.view.number
                    ),
                ));
            } else if status.ready_in_view == installed && status.applied < applied {
                found.push((
                    "S5",
                    format!(
                        "{id} applied went from {applied} back to {} without a new state transfer",
                        status.applied
                    ),
                ));
            }
        }
        self.last.insert(
            id,
            (status.view.number, status.ready_in_view, status.applied),
        );
        if status.acting_primary {
            if self.acting.insert(id) {
                // Promoted with what it applied as a backup: that joins the sequence.
                let local = self.local.remove(&id).unwrap_or_default();
                for (index, apply) in local {
                    if let Some(v) = self.make_official(id, index, &apply) {
                        found.push(("S4", v));
                    } else {
                        joined.push((index, apply));
                    }
                }
            }
        } else {
            self.acting.remove(&id);
        }
        (found, joined)
    }

    /// A replica lost its state: its next incarnation starts from view 0.
    pub(super) fn observe_crash(&mut self, node: NodeId) {
        self.last.remove(&node);
        self.local.remove(&node);
        self.acting.remove(&node);
        self.carried.retain(|&(to, _, _), _| to != node);
    }

    /// A replica installed a state transfer of `view` ending at `index`: what it applied
    /// before is replaced by the operations the state carries that are not official yet.
    pub(super) fn observe_restore(
        &mut self,
        node: NodeId,
        view: Option<ViewNumber>,
        index: LogIndex,
    ) {
        let carried = view
            .and_then(|view| self.carried.remove(&(node, view, index)))
            .unwrap_or_default();
        self.carried.retain(|&(to, _, _), _| to != node);
        self.local.insert(node, carried);
    }

    /// `from` sent its state up to `index` to `to` in `view`.
    pub(super) fn observe_transfer(
        &mut self,
        from: NodeId,
        to: NodeId,
        view: ViewNumber,
        index: LogIndex,
    ) {
        let held: BTreeMap<LogIndex, PbApply> = self
            .local
            .get(&from)
            .map(|local| {
                local
                    .range(..=index)
                    .map(|(&i, apply)| (i, apply.clone()))
                    .collect()
            })
            .unwrap_or_default();
        self.carried.insert((to, view, index), held);
    }

    /// The primary `node` acknowledged the operation at `index`: what it executed there joins
    /// the official sequence. Returns an S4 violation, or the operation if it joined now.
    pub(super) fn observe_commit(
        &mut self,
        node: NodeId,
        index: LogIndex,
    ) -> Result<Option<PbApply>, String> {
        let Some(apply) = self
            .local
            .get_mut(&node)
            .and_then(|local| local.remove(&index))
        else {
            return Ok(None);
        };
        match self.make_official(node, index, &apply) {
            Some(v) => Err(v),
            None => Ok(Some(apply)),
        }
    }

    /// One apply; `acting` says whether the replica acts as primary. Returns an S4 violation,
    /// or whether the operation joined the official sequence now (for S8).
    pub(super) fn observe_apply(
        &mut self,
        node: NodeId,
        index: LogIndex,
        apply: &PbApply,
        acting: bool,
    ) -> Result<bool, String> {
        if acting {
            return match self.make_official(node, index, apply) {
                Some(v) => Err(v),
                None => Ok(true),
            };
        }
        self.local
            .entry(node)
            .or_default()
            .insert(index, apply.clone());
        Ok(false)
    }

    fn make_official(&mut self, node: NodeId, index: LogIndex, apply: &PbApply) -> Option<String> {
        let hash = apply.hash();
        let (known, _) = *self
            .official
            .entry(index)
            .or_insert_with(|| (hash, apply.write()));
        (known != hash).then(|| {
            format!("{node} applied a different operation at {index} than an earlier primary")
        })
    }

    /// S6: the acknowledged writes missing from the operations up to `final_applied`.
    pub(super) fn finish(
        &self,
        acknowledged: &BTreeSet<AcknowledgedWrite>,
        final_applied: LogIndex,
    ) -> Vec<String> {
        let present: BTreeSet<AcknowledgedWrite> = self
            .official
            .range(..=final_applied)
            .filter_map(|(_, (_, write))| *write)
            .collect();
        acknowledged
            .difference(&present)
            .map(|write| {
                format!(
                    "acknowledged write seq {} of client {} is not among the {} operations the final primary applied",
                    write.seq, write.client.0, final_applied.0
                )
            })
            .collect()
    }
}
