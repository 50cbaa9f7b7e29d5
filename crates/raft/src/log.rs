//! The in-memory Raft log: a window over the replicated log, and its cursors.
//!
//! The log holds the entries after `offset`: everything at or below it was compacted into a
//! snapshot (Raft §7). The entry at `offset` itself is gone, but its term is kept, so that the
//! consistency check of the next AppendEntries can succeed there. With no snapshot, `offset` is
//! 0 (term 0). The newest snapshot's place is kept too: compaction never goes above it, and a
//! compacted log usually keeps a tail of entries below it for slightly lagging followers.
//!
//! Besides the entries the log tracks how far the driver has been told about them:
//!
//! - `unsent_from`: the first index not yet handed out in a [`crate::Ready`]. Everything below
//!   it is, once the Readies handed out so far are persisted, exactly what the driver's disk
//!   holds. A truncation lowers it so the next Ready rewrites the changed suffix.
//! - `persisted`: the last index `advance` confirmed durable *and still in this log*. A
//!   truncation lowers it, because the replaced entries were never written.
//! - `commit` and `applied`: the commit index (Raft Figure 2) and the last index handed out for
//!   applying.
//!
//! Invariants: `offset <= snapshot.index <= applied <= commit <= last_index`,
//! `persisted <= last_index`, `offset < unsent_from <= last_index + 1`, indexes contiguous
//! from `offset + 1`, terms non-decreasing, and no entry at or below `commit` is ever truncated
//! (Raft §5.4, State Machine Safety). Reads outside the window answer `None` or nothing; they
//! never panic.

use chorus_core::{LogIndex, Term};

use crate::message::{Entry, EntryPayload, SnapshotMeta};

/// The replicated log of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// `entries[i]` holds index `offset + 1 + i`.
    entries: Vec<Entry>,
    /// The index before the first entry held: compacted, or 0.
    offset: LogIndex,
    /// The term of the entry at `offset` (term 0 at index 0).
    offset_term: Term,
    /// The newest snapshot taken or installed (index 0 if none).
    snapshot: SnapshotMeta,
    commit: LogIndex,
    applied: LogIndex,
    persisted: LogIndex,
    unsent_from: LogIndex,
    /// While a Ready is outstanding: the last index of its entries that can still become
    /// durable and match this log once `advance` is called (lowered by truncations).
    persisting: Option<LogIndex>,
    /// The entries the last compaction dropped, until the driver takes them to free off its
    /// critical path ([`RaftLog::take_compacted`]); the next compaction frees any left here.
    compacted: Vec<Entry>,
}

/// Converts a count of entries to a log index.
fn index_of_len(len: usize) -> LogIndex {
    LogIndex(u64::try_from(len).expect("invariant: the log length fits in u64"))
}

/// Where a snapshot leaves the log after it is installed (Raft §7, InstallSnapshot receiver
/// rules 6 and 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Installed {
    /// The log held the snapshot's last entry with the same term: the entries after it stay.
    SuffixKept,
    /// The log was discarded; it now starts after the snapshot.
    LogReset,
}

impl RaftLog {
    /// Rebuilds the log from a durable snapshot and durable entries, all of which count as
    /// persisted. Without a snapshot the entries start at index 1; with one they start at or
    /// below `snapshot.index + 1`, and those below it are a kept tail.
    ///
    /// Returns an error naming the problem if the entries are not contiguous, start at the
    /// wrong place, their terms decrease, or they contradict the snapshot.
    pub(crate) fn restore(
        snapshot: Option<SnapshotMeta>,
        mut entries: Vec<Entry>,
        commit: LogIndex,
    ) -> Result<RaftLog, &'static str> {
        let snapshot = snapshot.unwrap_or_default();
        if (snapshot.index == LogIndex(0)) != (snapshot.term == Term(0)) {
            return Err("the snapshot's index and term disagree on an empty log");
        }
        let first = entries
            .first()
            .map_or(snapshot.index.next(), |entry| entry.index);
        if snapshot.index == LogIndex(0) && first != LogIndex(1) {
            return Err("durable entries are not contiguous from index 1");
        }
        if first == LogIndex(0) || first > snapshot.index.next() {
            return Err("durable entries start after the snapshot's index + 1");
        }
        let mut previous_term = Term(0);
        for (position, entry) in entries.iter().enumerate() {
            let expected = LogIndex(first.0.saturating_add(position as u64));
            if entry.index != expected {
                return Err("durable entries are not contiguous");
            }
            if entry.term == Term(0) {
                return Err("a durable entry has term 0");
            }
            if entry.term < previous_term {
                return Err("durable entry terms decrease");
            }
            if entry.index == snapshot.index && entry.term != snapshot.term {
                return Err("the durable log contradicts the snapshot's last entry");
            }
            if entry.index > snapshot.index && entry.term < snapshot.term {
                return Err("a durable entry after the snapshot has an older term");
            }
            previous_term = entry.term;
        }
        let reaches_snapshot = entries
            .last()
            .is_some_and(|entry| entry.index >= snapshot.index);
        let (offset, offset_term) = if first == snapshot.index.next() || !reaches_snapshot {
            // A tail that does not reach the snapshot adds nothing the snapshot lacks.
            if !reaches_snapshot {
                entries.clear();
            }
            (snapshot.index, snapshot.term)
        } else {
            // A kept tail below the snapshot: its first entry becomes the offset, so that the
            // offset's term is known.
            let first = entries.remove(0);
            (first.index, first.term)
        };
        let last = LogIndex(offset.0 + entries.len() as u64);
        Ok(RaftLog {
            entries,
            offset,
            offset_term,
            snapshot,
            // A hard state may claim a commit beyond the entries that survived; only what is
            // present can be known committed. The snapshot holds committed state.
            commit: commit.min(last).max(snapshot.index),
            applied: snapshot.index,
            persisted: last,
            unsent_from: last.next(),
            persisting: None,
            compacted: Vec::new(),
        })
    }

    /// The position in `entries` of `index`, if the window holds it.
    fn position(&self, index: LogIndex) -> Option<usize> {
        let position = index.0.checked_sub(self.offset.0)?.checked_sub(1)?;
        let position = usize::try_from(position).ok()?;
        (position < self.entries.len()).then_some(position)
    }

    /// The first index the window holds (or would hold next, if it is empty).
    pub(crate) fn first_index(&self) -> LogIndex {
        self.offset.next()
    }

    /// The index before the first entry held: the compaction point.
    pub(crate) fn offset(&self) -> LogIndex {
        self.offset
    }

    /// The newest snapshot taken or installed (index 0 if none).
    pub(crate) fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.offset.0 + self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.offset_term, |entry| entry.term)
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

    /// The term of the entry at `index`: known for the window and for the compaction point,
    /// `None` below it (compacted) or beyond the log.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.position(index)
            .map(|position| self.entries[position].term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.entries.get(self.position(index)?)
    }

    /// Whether a log ending at (`last_term`, `last_index`) is at least as up-to-date as this
    /// one (Raft §5.4.1: compare last terms, then lengths).
    pub(crate) fn is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the run of entries sharing the term of the entry at `index`
    /// (the fast-rollback hint of Raft §5.3), never below the window. An index outside the
    /// window is its own answer.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(position) = self.position(index) else {
            return index;
        };
        let term = self.entries[position].term;
        // Terms never decrease, so the run is contiguous and ends at `position`.
        let start = self.entries[..position].partition_point(|entry| entry.term < term);
        LogIndex(self.offset.0 + start as u64 + 1)
    }

    /// The last index holding an entry of `term`, if the window holds any.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let end = self.entries.partition_point(|entry| entry.term <= term);
        (end > 0 && self.entries[end - 1].term == term)
            .then(|| LogIndex(self.offset.0 + index_of_len(end).0))
    }

    /// Entries from `start`, at most `count_max` of them and `bytes_max` bytes, but at least
    /// one if there is any. Nothing if `start` is outside the window.
    pub(crate) fn entries_from(
        &self,
        start: LogIndex,
        count_max: usize,
        bytes_max: usize,
    ) -> Vec<Entry> {
        let Some(first) = self.position(start) else {
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
    /// Entries at or below the compaction point count as held: they were committed.
    pub(crate) fn find_conflict<'a>(&self, entries: &'a [Entry]) -> Option<&'a Entry> {
        entries
            .iter()
            .filter(|entry| entry.index > self.offset)
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
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        let keep = self
            .position(from)
            .expect("invariant: truncation starts inside the window");
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

    /// Records a snapshot the driver took (and made durable) at `meta`. Returns `false`, and
    /// changes nothing, if it is not newer than the one known or does not match the log.
    pub(crate) fn snapshot_taken(&mut self, meta: SnapshotMeta) -> bool {
        if meta.index <= self.snapshot.index
            || meta.index > self.applied
            || self.term_at(meta.index) != Some(meta.term)
        {
            return false;
        }
        self.snapshot = meta;
        true
    }

    /// The highest index [`RaftLog::compact`] accepts: covered by the snapshot, applied,
    /// committed, and durable here.
    pub(crate) fn compactable(&self) -> LogIndex {
        self.snapshot
            .index
            .min(self.applied)
            .min(self.commit)
            .min(self.persisted)
            .min(self.unsent_from.prev())
    }

    /// Drops the entries up to and including `to`, keeping its term as the offset's. Nothing
    /// happens if `to` is at or below the current offset.
    ///
    /// # Panics
    /// If `to` is above [`RaftLog::compactable`] (unless `unchecked`, for an injected bug).
    pub(crate) fn compact(&mut self, to: LogIndex, unchecked: bool) {
        if !unchecked {
            assert!(
                to <= self.compactable(),
                "invariant: the log is compacted only below a snapshot, applied, committed \
                 and durable index"
            );
        }
        let to = to.min(self.last_index());
        if to <= self.offset {
            return;
        }
        let term = self
            .term_at(to)
            .expect("invariant: a compaction point inside the window has a term");
        let count = usize::try_from(to.0 - self.offset.0)
            .expect("invariant: the window's length fits in usize");
        // Split rather than drain: the kept tail is short and moves, the long compacted
        // prefix stays in its allocation for the driver to free elsewhere.
        let kept = self.entries.split_off(count);
        self.compacted = std::mem::replace(&mut self.entries, kept);
        self.offset = to;
        self.offset_term = term;
        // Only an injected bug moves these; keep the cursor invariants so nothing panics.
        self.unsent_from = self.unsent_from.max(to.next());
        self.persisted = self.persisted.max(to);
    }

    /// Takes the entries the last compaction dropped. Freeing hundreds of thousands of
    /// entries takes a while, so a driver may hand them to another thread.
    pub(crate) fn take_compacted(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.compacted)
    }

    /// Installs a snapshot received from the leader (Raft §7): if the log holds its last entry
    /// with the same term, the entries after it stay; otherwise the whole log is discarded.
    /// Commit and applied move to the snapshot's index (the driver restores the state machine
    /// from it before applying anything later).
    ///
    /// The caller checked that the snapshot is newer than the commit index, unless
    /// `allow_older` (an injected bug) lets it roll the node back.
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta, allow_older: bool) -> Installed {
        assert!(
            self.persisting.is_none(),
            "invariant: a snapshot is installed between Readies"
        );
        if !allow_older {
            assert!(
                meta.index > self.commit,
                "invariant: only a snapshot newer than the commit index is installed"
            );
        }
        let installed = if self.term_at(meta.index) == Some(meta.term) && meta.index > self.offset {
            let count = usize::try_from(meta.index.0 - self.offset.0)
                .expect("invariant: the window's length fits in usize");
            self.entries.drain(..count);
            Installed::SuffixKept
        } else {
            self.entries.clear();
            Installed::LogReset
        };
        self.offset = meta.index;
        self.offset_term = meta.term;
        self.snapshot = meta;
        self.commit = meta.index;
        self.applied = meta.index;
        let last = self.last_index();
        // The snapshot is made durable with the Ready that carries it, before anything that
        // promises it is sent; a kept suffix was durable already, or is still unsent.
        self.persisted = self.persisted.clamp(meta.index, last);
        if installed == Installed::LogReset {
            self.persisted = meta.index;
        }
        self.unsent_from = self.unsent_from.clamp(meta.index.next(), last.next());
        installed
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
        let batch = match self.position(self.unsent_from) {
            Some(from) => self.entries[from..].to_vec(),
            None => Vec::new(),
        };
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
        let mut batch = Vec::new();
        let mut index = self.applied.next();
        if index < self.first_index() {
            // Entries below the window are gone; only an injected bug compacts past
            // `applied`. Skip them (a gap the checkers see) rather than stall or panic.
            index = self.first_index();
            self.applied = index.prev().min(self.commit);
        }
        while index <= self.commit && batch.len() < count_max {
            match self.entry(index) {
                Some(entry) => batch.push(entry.clone()),
                None => break,
            }
            index = index.next();
        }
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
        RaftLog::restore(None, entries, LogIndex(0)).expect("valid test log")
    }

    #[test]
    fn restore_rejects_gaps_and_decreasing_terms() {
        assert!(RaftLog::restore(None, vec![entry(2, 1)], LogIndex(0)).is_err());
        assert!(RaftLog::restore(None, vec![entry(1, 2), entry(2, 1)], LogIndex(0)).is_err());
        assert!(RaftLog::restore(None, vec![entry(1, 0)], LogIndex(0)).is_err());
        let log = RaftLog::restore(None, vec![entry(1, 1)], LogIndex(9)).expect("valid");
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

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
        }
    }

    /// A log of ten entries (terms 1 then 2 from index 6), all committed, applied and durable.
    fn applied_log() -> RaftLog {
        let mut log = log_with_terms(&[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        log.commit_to(LogIndex(10));
        assert_eq!(log.take_committed(100).len(), 10);
        log
    }

    #[test]
    fn compaction_keeps_the_offset_term_and_answers_outside_the_window() {
        let mut log = applied_log();
        assert!(log.snapshot_taken(meta(8, 2)));
        assert_eq!(log.compactable(), LogIndex(8));
        log.compact(LogIndex(6), false);
        assert_eq!(log.first_index(), LogIndex(7));
        assert_eq!(
            log.term_at(LogIndex(6)),
            Some(Term(2)),
            "the offset keeps its term"
        );
        assert_eq!(log.term_at(LogIndex(5)), None, "compacted");
        assert_eq!(log.term_at(LogIndex(0)), None, "compacted");
        assert_eq!(log.entry(LogIndex(6)), None);
        assert_eq!(
            log.entry(LogIndex(7)).map(|entry| entry.term),
            Some(Term(2))
        );
        assert!(log.entries_from(LogIndex(3), 10, 1 << 20).is_empty());
        assert_eq!(log.entries_from(LogIndex(7), 10, 1 << 20).len(), 4);
        assert_eq!(log.first_index_of_term_at(LogIndex(9)), LogIndex(7));
        assert_eq!(log.last_index_of_term(Term(1)), None, "compacted away");
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(10)));
        assert_eq!((log.last_index(), log.last_term()), (LogIndex(10), Term(2)));
        // A compaction at or below the offset changes nothing.
        log.compact(LogIndex(3), false);
        assert_eq!(log.first_index(), LogIndex(7));
        // Compacting everything the snapshot covers leaves the log empty but its end known.
        log.compact(LogIndex(8), false);
        log.compact(LogIndex(8), false);
        assert_eq!(log.first_index(), LogIndex(9));
        assert_eq!(log.term_at(LogIndex(8)), Some(Term(2)));
    }

    #[test]
    #[should_panic(expected = "compacted only below")]
    fn compaction_above_the_snapshot_is_refused() {
        let mut log = applied_log();
        assert!(log.snapshot_taken(meta(5, 1)));
        log.compact(LogIndex(6), false);
    }

    #[test]
    fn compaction_never_passes_commit_applied_or_durable() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.store(&[entry(5, 1), entry(6, 1)]);
        log.commit_to(LogIndex(5));
        assert_eq!(log.take_committed(3).len(), 3);
        assert!(!log.snapshot_taken(meta(4, 1)), "not applied yet");
        assert!(log.snapshot_taken(meta(3, 1)));
        assert_eq!(log.compactable(), LogIndex(3));
        assert_eq!(log.take_committed(10).len(), 2);
        assert!(log.snapshot_taken(meta(5, 1)));
        assert_eq!(log.compactable(), LogIndex(4), "index 5 is not durable yet");
        assert!(!log.snapshot_taken(meta(5, 1)), "not newer");
        assert!(
            !log.snapshot_taken(meta(6, 2)),
            "beyond applied, and the wrong term"
        );
    }

    #[test]
    fn an_installed_snapshot_keeps_a_matching_suffix_or_resets_the_log() {
        let mut log = log_with_terms(&[1, 1, 1, 2, 2, 2]);
        log.commit_to(LogIndex(2));
        assert_eq!(
            log.install_snapshot(meta(4, 2), false),
            Installed::SuffixKept
        );
        assert_eq!(
            (log.first_index(), log.last_index()),
            (LogIndex(5), LogIndex(6))
        );
        assert_eq!((log.commit(), log.applied()), (LogIndex(4), LogIndex(4)));
        assert_eq!(log.snapshot(), meta(4, 2));

        let mut log = log_with_terms(&[1, 1, 1, 2, 2, 2]);
        assert_eq!(log.install_snapshot(meta(5, 3), false), Installed::LogReset);
        assert_eq!(
            (log.first_index(), log.last_index()),
            (LogIndex(6), LogIndex(5))
        );
        assert_eq!(log.last_term(), Term(3));
        assert_eq!(log.persisted(), LogIndex(5));
        assert!(!log.has_unsent());
        assert!(log.begin_persist().is_empty());
        log.finish_persist();

        // Beyond the end of the log.
        let mut log = log_with_terms(&[1]);
        assert_eq!(log.install_snapshot(meta(9, 1), false), Installed::LogReset);
        assert_eq!(log.last_index(), LogIndex(9));
        assert!(log.take_committed(10).is_empty(), "nothing to replay");
    }

    #[test]
    fn restore_from_a_snapshot_keeps_the_tail_and_checks_it() {
        let tail: Vec<Entry> = (4..=9).map(|index| entry(index, 2)).collect();
        let log = RaftLog::restore(Some(meta(6, 2)), tail.clone(), LogIndex(8)).expect("valid");
        assert_eq!(
            log.first_index(),
            LogIndex(5),
            "the first entry is the offset"
        );
        assert_eq!(log.term_at(LogIndex(4)), Some(Term(2)));
        assert_eq!((log.commit(), log.applied()), (LogIndex(8), LogIndex(6)));
        assert_eq!(
            (log.persisted(), log.last_index()),
            (LogIndex(9), LogIndex(9))
        );

        let after: Vec<Entry> = (7..=9).map(|index| entry(index, 2)).collect();
        let log = RaftLog::restore(Some(meta(6, 2)), after, LogIndex(0)).expect("valid");
        assert_eq!(log.first_index(), LogIndex(7));
        assert_eq!(log.commit(), LogIndex(6), "the snapshot is committed");

        let short: Vec<Entry> = (2..=4).map(|index| entry(index, 1)).collect();
        let log = RaftLog::restore(Some(meta(6, 2)), short, LogIndex(0)).expect("valid");
        assert_eq!(
            (log.first_index(), log.last_index()),
            (LogIndex(7), LogIndex(6))
        );

        let gap: Vec<Entry> = (8..=9).map(|index| entry(index, 2)).collect();
        assert!(RaftLog::restore(Some(meta(6, 2)), gap, LogIndex(0)).is_err());
        assert!(RaftLog::restore(Some(meta(6, 3)), tail, LogIndex(0)).is_err());
        assert!(RaftLog::restore(Some(meta(0, 1)), Vec::new(), LogIndex(0)).is_err());
    }
}
