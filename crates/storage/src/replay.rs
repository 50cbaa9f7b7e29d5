//! The logic both implementations share: how writes become records, and how records rebuild
//! the durable state.
//!
//! [`WriteTracker`] turns one `write` call into records (deciding between a commit record and
//! a hard-state replacement) and rejects writes that do not fit the log; [`Replay`] applies
//! records, in order, to rebuild what a restart reads. Sharing them is what makes
//! [`crate::MemStorage`] a faithful twin of [`crate::FileStorage`].

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{DurableState, Entry, HardState};

/// One record of the write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// Drop every entry at or after `from`, then append `entries` (contiguous from `from`).
    Entries {
        /// The index of the first entry; the log is truncated from here.
        from: LogIndex,
        /// The entries, never empty.
        entries: Vec<Entry>,
    },
    /// The commit index moved while the term and vote stayed.
    Commit(LogIndex),
}

/// What one `write` call asks the storage to do.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    /// Write-ahead-log records, in order.
    pub(crate) records: Vec<Record>,
    /// A new hard state to replace the hard-state file with at the next sync.
    pub(crate) hard_state: Option<HardState>,
}

/// The writer's memory of what it queued: enough to validate writes and to tell a
/// commit-only change from a term or vote change.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteTracker {
    last_index: LogIndex,
    term: Term,
    vote: Option<NodeId>,
    commit: LogIndex,
}

impl WriteTracker {
    /// A tracker that resumes after `durable` was read back.
    pub(crate) fn resume(durable: &DurableState) -> WriteTracker {
        WriteTracker {
            last_index: durable
                .entries
                .last()
                .map_or(LogIndex(0), |entry| entry.index),
            term: durable.hard_state.term,
            vote: durable.hard_state.vote,
            commit: durable.hard_state.commit,
        }
    }

    /// Plans one write, or refuses it leaving the tracker unchanged.
    pub(crate) fn plan(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<Planned, String> {
        check_entries(self.last_index, entries)?;
        // Raft never truncates a committed entry (§5.4) and never lowers its term or commit
        // index. The storage relies on it: the commit index read back is the larger of two
        // sources, so a lowered one could not be represented.
        if let Some(first) = entries.first().filter(|first| first.index <= self.commit) {
            return Err(format!(
                "entries from {} would overwrite committed entries (commit is {})",
                first.index, self.commit
            ));
        }
        if let Some(hard_state) = hard_state {
            if hard_state.term < self.term {
                return Err(format!(
                    "the term goes back from {} to {}",
                    self.term, hard_state.term
                ));
            }
            if hard_state.commit < self.commit {
                return Err(format!(
                    "the commit index goes back from {} to {}",
                    self.commit, hard_state.commit
                ));
            }
        }
        let mut planned = Planned::default();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            planned.records.push(Record::Entries {
                from: first.index,
                entries: entries.to_vec(),
            });
            self.last_index = last.index;
        }
        if let Some(hard_state) = hard_state {
            if hard_state.term != self.term || hard_state.vote != self.vote {
                planned.hard_state = Some(hard_state);
            } else if hard_state.commit != self.commit {
                planned.records.push(Record::Commit(hard_state.commit));
            }
            self.term = hard_state.term;
            self.vote = hard_state.vote;
            self.commit = hard_state.commit;
        }
        Ok(planned)
    }
}

/// Checks that `entries` are contiguous and can follow a log whose last index is
/// `last_index` (possibly truncating it).
pub(crate) fn check_entries(last_index: LogIndex, entries: &[Entry]) -> Result<(), String> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index.0 == 0 {
        return Err("entries start at index 0; the log starts at 1".to_owned());
    }
    if first.index.0 > last_index.0.saturating_add(1) {
        return Err(format!(
            "entries start at index {} but the log ends at {}: a gap",
            first.index, last_index
        ));
    }
    for pair in entries.windows(2) {
        if pair[1].index.0 != pair[0].index.0.wrapping_add(1) {
            return Err(format!(
                "entries are not contiguous: {} follows {}",
                pair[1].index, pair[0].index
            ));
        }
    }
    Ok(())
}

/// The durable state rebuilt from records, in the order they were made durable.
#[derive(Clone, Debug, Default)]
pub(crate) struct Replay {
    /// The log, contiguous from index 1.
    pub(crate) entries: Vec<Entry>,
    /// The hard state of the last hard-state replacement.
    pub(crate) hard_state: HardState,
    /// The last commit record, if any.
    pub(crate) commit: Option<LogIndex>,
}

impl Replay {
    /// A replay starting from the hard-state file's content.
    pub(crate) fn new(hard_state: HardState) -> Replay {
        Replay {
            entries: Vec::new(),
            hard_state,
            commit: None,
        }
    }

    /// Applies one write-ahead-log record, or says why it does not fit the log before it.
    pub(crate) fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entries { from, entries } => {
                if entries.first().map(|entry| entry.index) != Some(from) {
                    return Err(format!(
                        "an entries record says it starts at {from} but its first entry does not"
                    ));
                }
                let last_index = LogIndex(self.entries.len() as u64);
                check_entries(last_index, &entries)?;
                let keep = usize::try_from(from.0 - 1)
                    .expect("invariant: checked to be at most the log's length");
                self.entries.truncate(keep);
                self.entries.extend(entries);
            }
            Record::Commit(commit) => self.commit = Some(commit),
        }
        Ok(())
    }

    /// Replaces the hard state, as a hard-state file replacement does.
    pub(crate) fn replace_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// What a restart reads: the commit index is the larger of the hard state's and the last
    /// commit record's, clamped to the log.
    pub(crate) fn durable_state(&self) -> DurableState {
        let last_index = self.entries.last().map_or(0, |entry| entry.index.0);
        let commit = self
            .hard_state
            .commit
            .max(self.commit.unwrap_or_default())
            .0
            .min(last_index);
        DurableState {
            hard_state: HardState {
                commit: LogIndex(commit),
                ..self.hard_state
            },
            snapshot: None,
            entries: self.entries.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_raft::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::NoOp,
        }
    }

    #[test]
    fn commit_only_changes_become_commit_records_and_term_changes_replace_the_file() {
        let mut tracker = WriteTracker::default();
        let hard_state = HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(0),
        };
        let planned = tracker
            .plan(Some(hard_state), &[entry(1, 1)])
            .expect("fits");
        assert_eq!(planned.records.len(), 1);
        assert_eq!(planned.hard_state, Some(hard_state));

        let commit_only = HardState {
            commit: LogIndex(1),
            ..hard_state
        };
        let planned = tracker.plan(Some(commit_only), &[]).expect("fits");
        assert_eq!(planned.records, vec![Record::Commit(LogIndex(1))]);
        assert_eq!(planned.hard_state, None);
    }

    #[test]
    fn a_gap_is_refused_and_leaves_the_tracker_unchanged() {
        let mut tracker = WriteTracker::default();
        assert!(tracker.plan(None, &[entry(2, 1)]).is_err());
        assert!(tracker.plan(None, &[entry(1, 1), entry(3, 1)]).is_err());
        assert!(tracker.plan(None, &[entry(1, 1)]).is_ok());
    }

    #[test]
    fn commit_is_clamped_to_the_log() {
        let mut replay = Replay::new(HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(5),
        });
        replay
            .apply(Record::Entries {
                from: LogIndex(1),
                entries: vec![entry(1, 1), entry(2, 1)],
            })
            .expect("fits");
        assert_eq!(replay.durable_state().hard_state.commit, LogIndex(2));
    }
}
