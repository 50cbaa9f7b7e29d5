//! What a leader knows about one follower's log, and how it paces replication to it.
//!
//! A follower is in one of two states, as in etcd/raft:
//!
//! - **Probe**: the leader does not know where the follower's log matches its own. It sends one
//!   AppendEntries at a time (at `next_index`) and waits for the answer, moving `next_index`
//!   back with the fast-rollback hint of each rejection (Raft §5.3).
//! - **Replicate**: the follower matched; the leader streams entries optimistically, advancing
//!   `next_index` as it sends, with at most `inflight_max` messages carrying entries in flight.
//! - **Snapshot**: the entries the follower needs next were compacted away; the leader sends
//!   its snapshot in chunks, one in flight at a time, from the offset the follower reports,
//!   then probes again after the snapshot's last index (Raft §7, etcd's `StateSnapshot`).
//!
//! Invariants: `match_index < next_index`, and `match_index` never decreases within a term (a
//! follower acknowledges only durable entries, and an honest follower never truncates below what
//! it acknowledged to the current leader).

use std::collections::VecDeque;

use chorus_core::LogIndex;

use crate::message::SnapshotMeta;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// One message at a time until the follower's log matches.
    Probe,
    /// A pipeline of messages.
    Replicate,
    /// A snapshot is being sent; no AppendEntries carry entries meanwhile.
    Snapshot,
}

/// A snapshot on its way to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    /// The snapshot sent.
    pub(crate) meta: SnapshotMeta,
    /// Where the next chunk starts: what the follower last reported holding.
    pub(crate) next_offset: u64,
    /// A chunk was asked of the driver (or sent) and not yet answered.
    pub(crate) requested: bool,
    /// The follower answered since the last heartbeat.
    progressed: bool,
}

/// The leader's view of one follower (Raft Figure 2, "volatile state on leaders").
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be replicated (durably) on the follower.
    pub(crate) match_index: LogIndex,
    /// The index of the next entry to send.
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In Probe: a probe is in flight, so no other is sent until it is answered.
    probe_sent: bool,
    /// In Replicate: the last index carried by each message in flight, oldest first.
    inflight: VecDeque<LogIndex>,
    /// The follower sent a message of the current term since the last CheckQuorum.
    pub(crate) recent_active: bool,
    /// The highest ReadIndex round the follower has answered in the current term.
    pub(crate) read_round_acked: u64,
    /// In Replicate: send an empty AppendEntries at `next_index - 1` soon, to find out whether
    /// the messages in flight arrived (see [`Progress::on_heartbeat`]).
    pub(crate) empty_append_due: bool,
    /// `match_index` moved since the last heartbeat.
    progressed: bool,
    /// The highest commit index the follower learns from the messages sent to it, if they
    /// arrive: each AppendEntries teaches `min(leader_commit, last index it covers)`.
    commit_told: LogIndex,
    /// The last log index holding a command this follower forwarded in the current term.
    pub(crate) forwarded_last: LogIndex,
    /// In Snapshot: the snapshot being sent.
    pub(crate) snapshot: Option<SnapshotSend>,
}

impl Progress {
    /// A follower whose log the leader knows nothing about yet; probing starts at `next_index`.
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        assert!(next_index >= LogIndex(1));
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_round_acked: 0,
            empty_append_due: false,
            progressed: false,
            commit_told: LogIndex(0),
            forwarded_last: LogIndex(0),
            snapshot: None,
        }
    }

    /// The leader sent an AppendEntries that covers the log up to `covered` (its last entry,
    /// or its `prev_log_index` if empty) and carries `leader_commit`.
    pub(crate) fn on_commit_sent(&mut self, covered: LogIndex, leader_commit: LogIndex) {
        self.commit_told = self.commit_told.max(covered.min(leader_commit));
    }

    /// Whether the follower holds a committed command it forwarded without being told it is
    /// committed: it acknowledged the entry after the messages carrying the commit index
    /// went out (it was the second to acknowledge). Its client would wait for the next
    /// heartbeat. Only forwarded commands count: telling a follower of a commit costs it a
    /// commit-only fsync, which otherwise rides with its next entries.
    pub(crate) fn commit_unknown(&self, commit: LogIndex) -> bool {
        self.match_index.min(commit).min(self.forwarded_last) > self.commit_told
    }

    /// Whether the leader may send an AppendEntries carrying entries (or an empty probe) now.
    pub(crate) fn can_send(&self, last_index: LogIndex, inflight_max: usize) -> bool {
        match self.state {
            // An empty probe is still useful when the match point is unknown.
            ReplicationState::Probe => {
                !self.probe_sent
                    && (self.next_index <= last_index || self.next_index.prev() > self.match_index)
            }
            ReplicationState::Replicate => {
                self.inflight.len() < inflight_max && self.next_index <= last_index
            }
            ReplicationState::Snapshot => false,
        }
    }

    /// The leader sent entries up to `last_sent` (equal to `next_index - 1` for an empty probe).
    pub(crate) fn on_sent(&mut self, last_sent: LogIndex) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot => {}
            ReplicationState::Replicate => {
                assert!(
                    last_sent >= self.next_index,
                    "a pipelined message carries entries"
                );
                self.next_index = last_sent.next();
                self.inflight.push_back(last_sent);
            }
        }
    }

    /// The follower acknowledged entries up to `match_index`. Returns whether it moved
    /// forward; a stale or duplicated acknowledgement changes nothing.
    pub(crate) fn on_success(&mut self, match_index: LogIndex) -> bool {
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.empty_append_due = false;
        self.progressed = true;
        match self.state {
            ReplicationState::Probe | ReplicationState::Snapshot => {
                // The match point is found: stream from right after it. (In Snapshot, the
                // follower caught up some other way, or matched a heartbeat past the
                // compaction point.)
                self.snapshot = None;
                self.state = ReplicationState::Replicate;
                self.probe_sent = false;
                self.next_index = match_index.next();
                self.inflight.clear();
            }
            ReplicationState::Replicate => {
                self.next_index = self.next_index.max(match_index.next());
                while self
                    .inflight
                    .front()
                    .is_some_and(|&last| last <= match_index)
                {
                    self.inflight.pop_front();
                }
            }
        }
        true
    }

    /// The leader is about to send heartbeats.
    ///
    /// In Probe, a probe still unanswered was probably lost: allow another. In Replicate, a
    /// follower that is behind, has messages in flight, and acknowledged nothing new for a
    /// whole heartbeat interval may have lost them, which would stall the pipeline for good:
    /// ask for an empty AppendEntries at `next_index - 1`, which either succeeds (they all
    /// arrived) or is rejected (back to Probe). Checking once per heartbeat, rather than on
    /// every answer that brings no news, bounds these checks to one per follower per
    /// heartbeat interval; re-arming on every such answer made each check's own answer arm
    /// the next one, a storm that grew with the load (found by the core benchmark).
    pub(crate) fn on_heartbeat(&mut self, last_index: LogIndex) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = false,
            ReplicationState::Snapshot => {
                if let Some(send) = self.snapshot.as_mut() {
                    // A chunk unanswered for a whole interval was probably lost: ask again
                    // from the offset the follower last reported.
                    if send.requested && !send.progressed {
                        send.requested = false;
                    }
                    send.progressed = false;
                }
            }
            ReplicationState::Replicate => {
                if !self.progressed && self.match_index < last_index && !self.inflight.is_empty() {
                    self.empty_append_due = true;
                }
            }
        }
        self.progressed = false;
    }

    /// Frees the oldest pipeline slot when the pipeline is full, so that a lost message cannot
    /// block replication to this follower for good.
    pub(crate) fn free_one_if_full(&mut self, inflight_max: usize) {
        if self.inflight.len() >= inflight_max {
            self.inflight.pop_front();
        }
    }

    /// The follower rejected an AppendEntries; probe again from `next_index`, which the caller
    /// derived from the rejection's hint and clamped above `match_index`.
    pub(crate) fn on_rejection(&mut self, next_index: LogIndex) {
        assert!(next_index > self.match_index);
        // The refused message taught nothing; assume no more than the matched prefix.
        self.commit_told = self.commit_told.min(self.match_index);
        self.become_probe(next_index);
    }

    /// Starts sending `meta` to this follower, from its first byte.
    pub(crate) fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ReplicationState::Snapshot;
        self.probe_sent = false;
        self.inflight.clear();
        self.empty_append_due = false;
        self.snapshot = Some(SnapshotSend {
            meta,
            next_offset: 0,
            requested: false,
            progressed: false,
        });
    }

    /// The chunk the driver should read next for this follower, if one is due now.
    pub(crate) fn chunk_due(&self) -> Option<(SnapshotMeta, u64)> {
        let send = self.snapshot.as_ref()?;
        (self.state == ReplicationState::Snapshot && !send.requested)
            .then_some((send.meta, send.next_offset))
    }

    /// The follower reported holding `next_offset` bytes of the snapshot being sent.
    pub(crate) fn on_snapshot_progress(&mut self, next_offset: u64) {
        if let Some(send) = self.snapshot.as_mut() {
            send.next_offset = next_offset;
            send.requested = false;
            send.progressed = true;
        }
    }

    /// The follower's state now covers `index` (it installed the snapshot ending there, or
    /// had committed past it): probe from right after it.
    pub(crate) fn on_snapshot_installed(&mut self, index: LogIndex) {
        self.match_index = self.match_index.max(index);
        self.progressed = true;
        self.snapshot = None;
        self.become_probe(self.match_index.next());
    }

    fn become_probe(&mut self, next_index: LogIndex) {
        self.snapshot = None;
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.empty_append_due = false;
        self.next_index = next_index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_message_then_replicate_pipelines() {
        let mut progress = Progress::new(LogIndex(5));
        assert!(progress.can_send(LogIndex(5), 2));
        progress.on_sent(LogIndex(5));
        assert!(!progress.can_send(LogIndex(5), 2), "one probe at a time");
        assert!(progress.on_success(LogIndex(5)));
        assert_eq!(progress.state, ReplicationState::Replicate);
        assert_eq!(progress.next_index, LogIndex(6));
        progress.on_sent(LogIndex(6));
        progress.on_sent(LogIndex(7));
        assert!(!progress.can_send(LogIndex(9), 2), "the pipeline is full");
        assert!(progress.on_success(LogIndex(6)));
        assert!(progress.can_send(LogIndex(9), 2));
        assert!(
            !progress.on_success(LogIndex(6)),
            "a duplicate changes nothing"
        );
        assert!(
            !progress.empty_append_due,
            "an answer without news does not trigger a check by itself"
        );
        progress.on_heartbeat(LogIndex(9));
        assert!(!progress.empty_append_due, "it progressed in this interval");
        progress.on_heartbeat(LogIndex(9));
        assert!(
            progress.empty_append_due,
            "a lagging follower silent for a whole interval is checked on"
        );
        assert_eq!(progress.match_index, LogIndex(6));
    }

    #[test]
    fn rejection_returns_to_probing() {
        let mut progress = Progress::new(LogIndex(3));
        progress.on_sent(LogIndex(3));
        progress.on_rejection(LogIndex(2));
        assert_eq!(progress.state, ReplicationState::Probe);
        assert_eq!(progress.next_index, LogIndex(2));
        assert!(progress.can_send(LogIndex(3), 4));
    }
}
