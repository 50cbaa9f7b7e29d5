//! The in-memory Raft log and its three cursors: commit, applied and persisted.
//!
//! The log holds every entry from index 1 (there is no snapshot or compaction yet). Besides the
//! entries it tracks how far the driver has been told about them:
//!
//! - `unsent_from`: the first index not yet handed out in a [`crate::Ready`]. Everything below
//!   it is, once the Readies handed out so far are persisted, exactly what the driver's disk
//!   holds. A truncation lowers it so the next Ready rewrites the changed suffix.
//! - `persisted`: the last index `advance` confirmed durable *and still in this log*. A
//!   truncation lowers it, because the replaced entries were never written.
//! - `commit` and `applied`: the commit index (Raft Figure 2) and the last index handed out for
//!   applying.
//!
//! Invariants: `applied <= commit <= last_index`, `persisted <= last_index`,
//! `unsent_from <= last_index + 1`, indexes contiguous from 1, terms non-decreasing, and no
//! entry at or below `commit` is ever truncated (Raft §5.4, State Machine Safety).

use chorus_core::{LogIndex, Term};

use crate::message::{Entry, EntryPayload};

/// The replicated log of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// `entries[i]` holds index `i + 1`.
    entries: Vec<Entry>,
    commit: LogIndex,
    applied: LogIndex,
    persisted: LogIndex,
    unsent_from: LogIndex,
    /// While a Ready is outstanding: the last index of its entries that can still become
    /// durable and match this log once `advance` is called (lowered by truncations).
    persisting: Option<LogIndex>,
}

/// Converts a log index to a position in `entries`, or `None` for index 0.
fn position(index: LogIndex) -> Option<usize> {
    let index = usize::try_from(index.0).ok()?;
    index.checked_sub(1)
}

/// Converts a count of entries to a log index.
fn index_of_len(len: usize) -> LogIndex {
    LogIndex(u64::try_from(len).expect("invariant: the log length fits in u64"))
}

impl RaftLog {
    /// Rebuilds the log from durable entries, all of which count as persisted.
    ///
    /// Returns an error naming the problem if the entries are not contiguous from index 1 or
    /// their terms decrease.
    pub(crate) fn restore(entries: Vec<Entry>, commit: LogIndex) -> Result<RaftLog, &'static str> {
        let mut previous_term = Term(0);
        for (position, entry) in entries.iter().enumerate() {
            if entry.index != index_of_len(position + 1) {
                return Err("durable entries are not contiguous from index 1");
            }
            if entry.term == Term(0) {
                return Err("a durable entry has term 0");
            }
            if entry.term < previous_term {
                return Err("durable entry terms decrease");
            }
            previous_term = entry.term;
        }
        let last = index_of_len(entries.len());
        Ok(RaftLog {
            entries,
            // A hard state may claim a commit beyond the entries that survived; only what is
            // present can be known committed.
            commit: commit.min(last),
            applied: LogIndex(0),
            persisted: last,
            unsent_from: last.next(),
            persisting: None,
        })
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        index_of_len(self.entries.len())
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |entry| entry.term)
    }

    pub(crate) fn commit(&self) -> LogIndex {
        self.commit
    }

    pub(crate) fn applied(&self) -> LogIndex {
        self.applied
    }

    pub(crate) fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`: term 0 for index 0, `None` beyond the log.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        match position(index) {
            None => Some(Term(0)),
            Some(position) => self.entries.get(position).map(|entry| entry.term),
        }
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.entries.get(position(index)?)
    }

    /// Whether a log ending at (`last_term`, `last_index`) is at least as up-to-date as this
    /// one (Raft §5.4.1: compare last terms, then lengths).
    pub(crate) fn is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the run of entries sharing the term of the entry at `index`
    /// (the fast-rollback hint of Raft §5.3). `index` must be in the log.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let position = position(index).expect("invariant: hint asked for an index in the log");
        let term = self.entries[position].term;
        // Terms never decrease, so the run is contiguous and ends at `position`.
        let start = self.entries[..position].partition_point(|entry| entry.term < term);
        index_of_len(start + 1)
    }

    /// The last index holding an entry of `term`, if any.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let end = self.entries.partition_point(|entry| entry.term <= term);
        (end > 0 && self.entries[end - 1].term == term).then(|| index_of_len(end))
    }

    /// Entries from `start`, at most `count_max` of them and `bytes_max` bytes, but at least
    /// one if there is any.
    pub(crate) fn entries_from(
        &self,
        start: LogIndex,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<Entry> {
        let Some(first) = position(start) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for entry in self.entries.iter().skip(first).take(count_max) {
            bytes = bytes.saturating_add(entry.size_bytes());
            if !batch.is_empty() && bytes > bytes_max {
                break;
            }
            batch.push(entry.clone());
        }
        batch
    }

    /// Appends a new entry of `term` at the end (leaders only) and returns its index.
    pub(crate) fn append(&mut self, term: Term, payload: EntryPayload) -> LogIndex {
        assert!(
            term >= self.last_term(),
            "a leader appends only entries of its own term"
        );
        let index = self.last_index().next();
        self.entries.push(Entry {
            term,
            index,
            payload,
        });
        index
    }

    /// The first entry of `entries` that this log does not hold with the same term, if any.
    pub(crate) fn find_conflict<'a>(&self, entries: &'a [Entry]) -> Option<&'a Entry> {
        entries
            .iter()
            .find(|entry| self.term_at(entry.index) != Some(entry.term))
    }

    /// Stores `entries` (contiguous, validated, starting at or before `last_index + 1`): keeps
    /// those already present with the same term, truncates the suffix at the first conflict
    /// and appends the rest (Raft Figure 2, AppendEntries receiver steps 3 and 4).
    pub(crate) fn store(&mut self, entries: &[Entry]) {
        let Some(conflict) = self.find_conflict(entries) else {
            return;
        };
        let from = conflict.index;
        assert!(
            from > self.commit,
            "invariant: a committed entry is never truncated (Raft §5.4)"
        );
        assert!(
            from <= self.last_index().next(),
            "invariant: entries are contiguous"
        );
        if from <= self.last_index() {
            self.truncate_from(from);
        }
        let skip = entries
            .iter()
            .position(|entry| entry.index == from)
            .expect("invariant: the conflicting entry is in the batch");
        self.entries.extend(entries[skip..].iter().cloned());
    }

    /// Drops every entry from `from` on.
    fn truncate_from(&mut self, from: LogIndex) {
        let keep = position(from).expect("invariant: index 0 is never truncated");
        self.entries.truncate(keep);
        let kept = from.prev();
        // The replaced entries were never durable in their new form.
        self.persisted = self.persisted.min(kept);
        self.unsent_from = self.unsent_from.min(from);
        if let Some(persisting) = self.persisting.as_mut() {
            *persisting = (*persisting).min(kept);
        }
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.last_index(),
            "invariant: commit stays within the log"
        );
        if index > self.commit {
            self.commit = index;
        }
    }

    /// Whether entries wait to be handed out for persisting.
    pub(crate) fn has_unsent(&self) -> bool {
        self.unsent_from <= self.last_index()
    }

    /// Whether committed entries wait to be handed out for applying.
    pub(crate) fn has_unapplied(&self) -> bool {
        self.commit > self.applied
    }

    /// Hands out the entries not yet given to the driver and remembers how far they reach,
    /// for [`RaftLog::finish_persist`].
    pub(crate) fn begin_persist(&mut self) -> Vec<Entry> {
        assert!(self.persisting.is_none(), "invariant: one Ready at a time");
        let from = position(self.unsent_from).expect("invariant: unsent_from is at least 1");
        let batch = self
            .entries
            .get(from..)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default();
        self.unsent_from = self.last_index().next();
        self.persisting = Some(batch.last().map_or(LogIndex(0), |entry| entry.index));
        batch
    }

    /// The driver made the last handed-out entries durable.
    pub(crate) fn finish_persist(&mut self) {
        let persisting = self
            .persisting
            .take()
            .expect("invariant: finish_persist follows begin_persist");
        // Everything below `unsent_from` at hand-out time is on disk now, and a truncation
        // since then lowered `persisting` to what still matches this log.
        self.persisted = self.persisted.max(persisting);
        assert!(self.persisted <= self.last_index());
    }

    /// Hands out at most `count_max` committed entries for applying, in order.
    pub(crate) fn take_committed(&mut self, count_max: usize) -> Vec<Entry> {
        let from = position(self.applied.next()).expect("invariant: applied + 1 is at least 1");
        let to = position(self.commit.next()).expect("invariant: commit + 1 is at least 1");
        let to = to.min(from.saturating_add(count_max));
        let batch = self
            .entries
            .get(from..to)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default();
        if let Some(last) = batch.last() {
            self.applied = last.index;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::NoOp,
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(position, &term)| entry(position as u64 + 1, term))
            .collect();
        RaftLog::restore(entries, LogIndex(0)).expect("valid test log")
    }

    #[test]
    fn restore_rejects_gaps_and_decreasing_terms() {
        assert!(RaftLog::restore(vec![entry(2, 1)], LogIndex(0)).is_err());
        assert!(RaftLog::restore(vec![entry(1, 2), entry(2, 1)], LogIndex(0)).is_err());
        assert!(RaftLog::restore(vec![entry(1, 0)], LogIndex(0)).is_err());
        let log = RaftLog::restore(vec![entry(1, 1)], LogIndex(9)).expect("valid");
        assert_eq!(log.commit(), LogIndex(1), "commit is clamped to the log");
    }

    #[test]
    fn term_queries_find_runs() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(7)), None);
        assert_eq!(log.first_index_of_term_at(LogIndex(5)), LogIndex(3));
        assert_eq!(log.first_index_of_term_at(LogIndex(1)), LogIndex(1));
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(3)), None);
        assert_eq!(log.last_index_of_term(Term(4)), Some(LogIndex(6)));
    }

    #[test]
    fn store_skips_matching_entries_and_truncates_at_the_first_conflict() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.store(&[entry(2, 1), entry(3, 2)]);
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(
            log.persisted(),
            LogIndex(2),
            "the replaced entry is not durable"
        );
        assert_eq!(log.begin_persist(), vec![entry(3, 2)]);
        log.finish_persist();
        assert_eq!(log.persisted(), LogIndex(3));
    }

    #[test]
    fn truncation_while_persisting_limits_what_becomes_persisted() {
        let mut log = log_with_terms(&[]);
        log.store(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        assert_eq!(log.begin_persist().len(), 3);
        log.store(&[entry(2, 2)]);
        log.finish_persist();
        assert_eq!(log.persisted(), LogIndex(1));
        assert_eq!(log.begin_persist(), vec![entry(2, 2)]);
        log.finish_persist();
        assert_eq!(log.persisted(), LogIndex(2));
    }

    #[test]
    fn entries_from_respects_bounds_but_sends_at_least_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(LogIndex(2), 2, 1 << 20).len(), 2);
        assert_eq!(log.entries_from(LogIndex(2), 10, 1).len(), 1);
        assert_eq!(log.entries_from(LogIndex(5), 10, 1).len(), 0);
    }
}
