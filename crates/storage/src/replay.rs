//! The logic both implementations share: how writes become records, and how records rebuild
//! the durable state.
//!
//! [`WriteTracker`] turns one `write` call into records (deciding between a commit record and
//! a hard-state replacement) and rejects writes that do not fit the log; [`Replay`] applies
//! records, in order, to rebuild what a restart reads. Sharing them is what makes
//! [`crate::MemStorage`] a faithful twin of [`crate::FileStorage`].

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{DurableState, Entry, HardState, LogPosition, SnapshotMeta};

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
    /// Everything before this record in segment `sequence` was synced (see [`crate::wal`]).
    /// Only the file storage writes it; replay checks it and changes nothing.
    Synced {
        /// The segment's sequence number.
        sequence: u64,
        /// The marker's own offset in the segment.
        offset: u64,
        /// Where the log ended when the marker was written (its last entry, or the snapshot
        /// if it holds none); `None` in markers written before they said.
        log_end: Option<LogPosition>,
    },
    /// A durable snapshot covers the log up to `snapshot.index`; entries below `keep_from` are
    /// no longer needed. See [`Replay::apply`] for what it does to the log.
    Snapshot {
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// The first index the log keeps, at most `snapshot.index + 1`.
        keep_from: LogIndex,
        /// The commit index when the marker was written (older commit records may be in
        /// segments the compaction deletes).
        commit: LogIndex,
    },
}

/// What one `write` call asks the storage to do.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    /// Write-ahead-log records, in order.
    pub(crate) records: Vec<Record>,
    /// A new hard state to replace the hard-state file with at the next sync.
    pub(crate) hard_state: Option<HardState>,
}

/// The terms of a log, one `(first index, term)` per run of equal terms: what
/// [`WriteTracker`] needs to decide whether a snapshot matches the log, in memory bounded by
/// the number of term changes, not the number of entries.
#[derive(Clone, Debug, Default)]
struct TermRuns(Vec<(LogIndex, Term)>);

impl TermRuns {
    fn of(entries: &[Entry]) -> TermRuns {
        let mut runs = TermRuns::default();
        runs.append(entries);
        runs
    }

    /// Drops the runs at or after `from`.
    fn truncate(&mut self, from: LogIndex) {
        self.0.retain(|&(start, _)| start < from);
    }

    fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            if self.0.last().is_none_or(|&(_, term)| term != entry.term) {
                self.0.push((entry.index, entry.term));
            }
        }
    }

    /// The term at `index`, given that the log holds `index`.
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        let position = self.0.partition_point(|&(start, _)| start <= index);
        position.checked_sub(1).map(|position| self.0[position].1)
    }

    /// Forgets the runs entirely below `first`.
    fn trim(&mut self, first: LogIndex) {
        let position = self.0.partition_point(|&(start, _)| start <= first);
        if position > 1 {
            self.0.drain(..position - 1);
        }
    }
}

/// The writer's memory of what it queued: enough to validate writes, to tell a commit-only
/// change from a term or vote change, and to decide what a compaction does to the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteTracker {
    /// The first index of the log held (or the next index when it is empty).
    first_index: LogIndex,
    last_index: LogIndex,
    runs: TermRuns,
    term: Term,
    vote: Option<NodeId>,
    commit: LogIndex,
    repairing: Option<Term>,
    snapshot: Option<SnapshotMeta>,
}

impl WriteTracker {
    /// A tracker that resumes after `durable` was read back.
    pub(crate) fn resume(durable: &DurableState) -> WriteTracker {
        let snapshot_index = durable
            .snapshot
            .map_or(LogIndex(0), |snapshot| snapshot.index);
        WriteTracker {
            first_index: durable
                .entries
                .first()
                .map_or(LogIndex(snapshot_index.0 + 1), |entry| entry.index),
            last_index: durable
                .entries
                .last()
                .map_or(snapshot_index, |entry| entry.index.max(snapshot_index)),
            runs: TermRuns::of(&durable.entries),
            term: durable.hard_state.term,
            vote: durable.hard_state.vote,
            commit: durable.hard_state.commit,
            repairing: durable.hard_state.repairing,
            snapshot: durable.snapshot,
        }
    }

    /// Where the log ends once everything planned is written: its last entry, or the
    /// snapshot's place if it holds no entry after it.
    pub(crate) fn log_end(&self) -> LogPosition {
        let entry = (self.last_index >= self.first_index)
            .then(|| self.runs.term_at(self.last_index))
            .flatten()
            .map(|term| LogPosition {
                term,
                index: self.last_index,
            });
        let snapshot = self.snapshot.map(|snapshot| LogPosition {
            term: snapshot.term,
            index: snapshot.index,
        });
        entry.max(snapshot).unwrap_or_default()
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
            self.runs.truncate(first.index);
            self.runs.append(entries);
            if self.first_index > first.index {
                // Only an empty log (first index = next index) gets here: check_entries
                // refused a gap, and a write below the first index is below the commit.
                self.first_index = first.index;
            }
            self.last_index = last.index;
        }
        if let Some(hard_state) = hard_state {
            if hard_state.term != self.term
                || hard_state.vote != self.vote
                || hard_state.repairing != self.repairing
            {
                planned.hard_state = Some(hard_state);
            } else if hard_state.commit != self.commit {
                planned.records.push(Record::Commit(hard_state.commit));
            }
            self.term = hard_state.term;
            self.vote = hard_state.vote;
            self.commit = hard_state.commit;
            self.repairing = hard_state.repairing;
        }
        Ok(planned)
    }

    /// Plans a compaction to `snapshot` keeping the log from `keep_from`, or refuses it
    /// leaving the tracker unchanged.
    pub(crate) fn plan_compact(
        &mut self,
        snapshot: SnapshotMeta,
        keep_from: LogIndex,
    ) -> Result<Record, String> {
        if keep_from.0 == 0 || keep_from.0 > snapshot.index.0.saturating_add(1) {
            return Err(format!(
                "keep_from {keep_from} is outside 1..={} for a snapshot at {}",
                snapshot.index.0.saturating_add(1),
                snapshot.index
            ));
        }
        if let Some(current) = self.snapshot {
            if snapshot.index < current.index
                || (snapshot.index == current.index && snapshot.term != current.term)
            {
                return Err(format!(
                    "the snapshot at {} term {} is older than the one at {} term {}",
                    snapshot.index, snapshot.term, current.index, current.term
                ));
            }
        }
        let commit = self.commit.max(snapshot.index);
        if !log_matches(self.first_index, self.last_index, snapshot, |index| {
            self.runs.term_at(index)
        }) {
            self.runs = TermRuns::default();
            self.first_index = LogIndex(snapshot.index.0 + 1);
            self.last_index = snapshot.index;
        } else if keep_from > self.first_index {
            self.runs.trim(keep_from);
            self.first_index = keep_from.min(LogIndex(self.last_index.0 + 1));
        }
        self.snapshot = Some(snapshot);
        self.commit = commit;
        Ok(Record::Snapshot {
            snapshot,
            keep_from,
            commit,
        })
    }
}

/// Whether a log holding `first..=last` (terms from `term_at`) goes on from `snapshot`
/// (Raft §7): it holds the snapshot's last entry with the snapshot's term, or it starts after
/// it (an earlier compaction to the same snapshot dropped that entry). Otherwise the log is
/// discarded: it is shorter than the snapshot or conflicts with it.
fn log_matches(
    first: LogIndex,
    last: LogIndex,
    snapshot: SnapshotMeta,
    term_at: impl Fn(LogIndex) -> Option<Term>,
) -> bool {
    if last < snapshot.index {
        return false;
    }
    first > snapshot.index || term_at(snapshot.index) == Some(snapshot.term)
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
///
/// The log it holds is *physical*: what the records still on the medium say, which after a
/// compaction may reach below the marker's `keep_from` (a file storage deletes whole segments
/// only). [`Replay::durable_state`] cuts it at `keep_from`, unless it must fall back to an
/// older snapshot, which those entries may still cover.
#[derive(Clone, Debug, Default)]
pub(crate) struct Replay {
    /// The log, contiguous from `start`.
    entries: Vec<Entry>,
    /// The index of `entries[0]` (or the next index when `entries` is empty); `None` until the
    /// first entries record or snapshot marker.
    start: Option<LogIndex>,
    /// The hard state of the last hard-state replacement.
    hard_state: HardState,
    /// The largest commit index of a commit record or snapshot marker, if any.
    commit: Option<LogIndex>,
    /// The last snapshot marker: the snapshot and its `keep_from`.
    marker: Option<(SnapshotMeta, LogIndex)>,
    /// While `hard_state.repairing`: where the log ended before the damage, if known.
    log_end_before_damage: Option<LogPosition>,
}

impl Replay {
    /// A replay starting from the hard-state file's content.
    pub(crate) fn new(hard_state: HardState, log_end_before_damage: Option<LogPosition>) -> Replay {
        Replay {
            hard_state,
            log_end_before_damage: log_end_before_damage.filter(|_| hard_state.repairing.is_some()),
            ..Replay::default()
        }
    }

    /// While repairing: where the log ended before the damage, if known.
    pub(crate) fn log_end_before_damage(&self) -> Option<LogPosition> {
        self.log_end_before_damage
    }

    /// Sets where the log ended before the damage, kept only while repairing (as the
    /// hard-state file keeps it).
    pub(crate) fn set_log_end_before_damage(&mut self, log_end: Option<LogPosition>) {
        self.log_end_before_damage = log_end.filter(|_| self.hard_state.repairing.is_some());
    }

    /// Where the physical log ends: its last entry, or the last marker's snapshot if that is
    /// later.
    pub(crate) fn log_end(&self) -> LogPosition {
        let entry = self.entries.last().map(|entry| LogPosition {
            term: entry.term,
            index: entry.index,
        });
        let snapshot = self.marker.map(|(snapshot, _)| LogPosition {
            term: snapshot.term,
            index: snapshot.index,
        });
        entry.max(snapshot).unwrap_or_default()
    }

    /// The first index of the physical log (or the next index if it is empty); 1 for a log
    /// that never had an entry.
    pub(crate) fn first_index(&self) -> LogIndex {
        self.start.unwrap_or(LogIndex(1))
    }

    fn next_index(&self) -> LogIndex {
        LogIndex(self.first_index().0 + self.entries.len() as u64)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|entry| entry.term)
    }

    /// Applies one write-ahead-log record, or says why it does not fit the log before it.
    ///
    /// The first entries record may start anywhere (earlier segments may have been deleted by
    /// a compaction); whether a snapshot covers the entries before it is decided at the end,
    /// by [`Replay::durable_state`], because the marker that covers them comes later in the
    /// log than the entries it covers.
    pub(crate) fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entries { from, entries } => {
                if entries.first().map(|entry| entry.index) != Some(from) {
                    return Err(format!(
                        "an entries record says it starts at {from} but its first entry does not"
                    ));
                }
                if from.0 == 0 {
                    return Err("an entries record at index 0; the log starts at 1".to_owned());
                }
                let mut start = *self.start.get_or_insert(from);
                if from < start {
                    // The entries between `from` and `start` were in segments a compaction
                    // deleted; this record replaces them, so the physical log now starts here.
                    self.entries.clear();
                    self.start = Some(from);
                    start = from;
                }
                check_entries(LogIndex(self.next_index().0 - 1), &entries)?;
                let keep = usize::try_from(from.0 - start.0)
                    .expect("invariant: checked to be at most the log's length");
                self.entries.truncate(keep);
                self.entries.extend(entries);
            }
            Record::Commit(commit) => self.raise_commit(commit),
            Record::Synced { .. } => {}
            Record::Snapshot {
                snapshot,
                keep_from,
                commit,
            } => {
                if keep_from.0 == 0 || keep_from.0 > snapshot.index.0.saturating_add(1) {
                    return Err(format!(
                        "a snapshot marker at {} keeps the log from {keep_from}",
                        snapshot.index
                    ));
                }
                if let Some((current, _)) = self.marker {
                    if snapshot.index < current.index {
                        // After a restart that fell back past a damaged snapshot, the node
                        // may compact to a snapshot older than the log's last marker. The
                        // newer marker still bounds the log; this one only raises the commit.
                        self.raise_commit(commit);
                        return Ok(());
                    }
                }
                // Before any entries record (`start` unknown) there is nothing to discard: the
                // log before the marker is empty or was in segments a compaction deleted, and
                // the entries after it say where the log goes on.
                let last = LogIndex(self.next_index().0 - 1);
                let matches = self.start.is_none()
                    || log_matches(self.first_index(), last, snapshot, |index| {
                        self.term_at(index)
                    });
                if !matches {
                    self.entries.clear();
                    self.start = Some(LogIndex(snapshot.index.0 + 1));
                }
                let keep_from = self
                    .marker
                    .map_or(keep_from, |(_, earlier)| earlier.max(keep_from));
                self.marker = Some((snapshot, keep_from));
                self.raise_commit(commit.max(snapshot.index));
            }
        }
        Ok(())
    }

    fn raise_commit(&mut self, commit: LogIndex) {
        self.commit = Some(self.commit.map_or(commit, |current| current.max(commit)));
    }

    /// Drops the entries below the last marker's `keep_from` from memory (the in-memory twin
    /// does it at once; a file storage's segments keep them until deleted).
    pub(crate) fn trim(&mut self) {
        let (Some((_, keep_from)), Some(first)) = (self.marker, self.start) else {
            return;
        };
        if keep_from > first {
            let drop = usize::try_from(keep_from.0 - first.0)
                .map_or(self.entries.len(), |drop| drop.min(self.entries.len()));
            self.entries.drain(..drop);
            self.start = Some(LogIndex(first.0 + drop as u64));
        }
    }

    /// The marker a restart from `snapshot` must write before anything else, if the log does
    /// not already record it: when the snapshot is newer than the last marker (it was taken
    /// or installed, but the compaction that follows did not happen before the crash). Without
    /// it, entries written after the snapshot would follow a log that may end before it.
    pub(crate) fn adopt(&self, snapshot: Option<SnapshotMeta>) -> Option<Record> {
        let snapshot = snapshot?;
        if self
            .marker
            .is_some_and(|(marked, _)| marked.index >= snapshot.index)
        {
            return None;
        }
        let logical_first = self.marker.map_or(self.first_index(), |(_, keep_from)| {
            keep_from.max(self.first_index())
        });
        Some(Record::Snapshot {
            snapshot,
            keep_from: logical_first
                .min(LogIndex(snapshot.index.0 + 1))
                .max(LogIndex(1)),
            commit: self
                .hard_state
                .commit
                .max(self.commit.unwrap_or_default())
                .max(snapshot.index),
        })
    }

    /// The hard state of the last hard-state replacement.
    pub(crate) fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Replaces the hard state, as a hard-state file replacement does.
    pub(crate) fn replace_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
        if hard_state.repairing.is_none() {
            self.log_end_before_damage = None;
        }
    }

    /// Marks the durable state as repairing lost acknowledged records (see
    /// [`HardState::repairing`]), once the records after the damage were left out of the
    /// replay: the entries that could have been acknowledged were at most of the hard state's
    /// term or of the last surviving entry's (a crash may keep entries and lose the
    /// hard-state write that followed them). Returns the hard state to make durable before
    /// the damaged records are cut.
    ///
    /// `log_end` is where the log ended before the damage (the caller read it from what
    /// survives of the damaged records), if known; with this replay's own end it becomes
    /// [`DurableState::log_end_before_damage`]. A node already repairing keeps the later of
    /// the two ends, and an unknown end stays unknown.
    ///
    /// The hard state's commit index is dropped: it counted entries of the log as it was
    /// written last, and the surviving records may end in an older suffix that a lost record
    /// truncated and replaced (with committed entries). The commit records and snapshot
    /// markers that survive speak of the surviving log, and the snapshot is committed, so the
    /// commit index comes back from them alone, lower; the leader tells the rest.
    pub(crate) fn start_repair(&mut self, log_end: Option<LogPosition>) -> HardState {
        let last_term = self.entries.last().map_or(Term(0), |entry| entry.term);
        let marked_term = self.marker.map_or(Term(0), |(snapshot, _)| snapshot.term);
        let term = self.hard_state.term.max(last_term).max(marked_term);
        let log_end = log_end.map(|end| end.max(self.log_end()));
        self.log_end_before_damage = match self.hard_state.repairing {
            None => log_end,
            Some(_) => self
                .log_end_before_damage
                .zip(log_end)
                .map(|(a, b)| a.max(b)),
        };
        self.hard_state.repairing = Some(self.hard_state.repairing.map_or(term, |r| r.max(term)));
        self.hard_state.commit = LogIndex(0);
        self.hard_state
    }

    /// What a restart reads when `snapshot` is the newest intact snapshot (`None`: there is
    /// none), or why the log and that snapshot together do not hold every committed entry.
    ///
    /// - The snapshot is at or after the last marker's (the usual case; a newer one was
    ///   taken or installed but the compaction that follows it had not happened yet): the log
    ///   is cut at the marker's `keep_from`, and discarded whole if it does not go on from the
    ///   snapshot (Raft §7: shorter than it, or conflicting at its index).
    /// - The snapshot is older than the marker (the marker's snapshot is damaged or gone):
    ///   a fallback, possible only if the physical log still starts at or below
    ///   `snapshot.index + 1` and agrees with it.
    /// - No snapshot: the log must start at index 1.
    ///
    /// The commit index is the largest of the hard state's, the commit records' and the
    /// markers', and at least the snapshot's, clamped to the log (or the snapshot).
    pub(crate) fn durable_state(
        &self,
        snapshot: Option<SnapshotMeta>,
    ) -> Result<DurableState, String> {
        let physical_first = self.first_index();
        let marker = self.marker;
        let mut first = physical_first;
        let mut entries: &[Entry] = &self.entries;
        if let (Some(chosen), Some((marked, keep_from))) = (snapshot, marker) {
            if chosen.index >= marked.index && keep_from > first {
                let drop = usize::try_from(keep_from.0 - first.0)
                    .map_or(entries.len(), |drop| drop.min(entries.len()));
                entries = &entries[drop..];
                first = LogIndex(first.0 + drop as u64);
            }
        }
        let last = LogIndex(first.0 + entries.len() as u64 - 1);
        match snapshot {
            None => {
                if first.0 > 1 {
                    return Err(match marker {
                        Some((marked, _)) => format!(
                            "the log was compacted up to the snapshot at index {} (it starts at \
                             {first}), and no intact snapshot file holds the entries before it",
                            marked.index
                        ),
                        None => format!(
                            "the log starts at index {first} and no snapshot covers the entries \
                             before it"
                        ),
                    });
                }
            }
            Some(chosen) => {
                if first.0 > chosen.index.0 + 1 {
                    return Err(format!(
                        "the log starts at index {first}, after the snapshot at index {}: \
                         entries {}..{} are in no intact snapshot and no log segment",
                        chosen.index,
                        chosen.index.0 + 1,
                        first.0 - 1
                    ));
                }
                let newest = marker.is_none_or(|(marked, _)| chosen.index >= marked.index);
                let term_at = |index: LogIndex| {
                    let offset = usize::try_from(index.0.checked_sub(first.0)?).ok()?;
                    entries.get(offset).map(|entry| entry.term)
                };
                if !log_matches(first, last, chosen, term_at) {
                    let conflicts = last >= chosen.index;
                    if !newest && conflicts {
                        return Err(format!(
                            "the snapshot at index {} term {} disagrees with the log's entry \
                             at that index",
                            chosen.index, chosen.term
                        ));
                    }
                    if !newest {
                        return Err(format!(
                            "the log ends at {last}, before the snapshot at index {}",
                            chosen.index
                        ));
                    }
                    entries = &[];
                    first = LogIndex(chosen.index.0 + 1);
                }
            }
        }
        let snapshot_index = snapshot.map_or(0, |snapshot| snapshot.index.0);
        let last_index = (first.0 + entries.len() as u64 - 1).max(snapshot_index);
        let commit = self
            .hard_state
            .commit
            .max(self.commit.unwrap_or_default())
            .0
            .min(last_index)
            .max(snapshot_index);
        Ok(DurableState {
            hard_state: HardState {
                commit: LogIndex(commit),
                ..self.hard_state
            },
            snapshot,
            entries: entries.to_vec(),
            // Read from the snapshot's header by the storage that holds it.
            membership: None,
            log_end_before_damage: self
                .log_end_before_damage
                .filter(|_| self.hard_state.repairing.is_some()),
        })
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
            repairing: None,
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
        let mut replay = Replay::new(
            HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(5),
                repairing: None,
            },
            None,
        );
        replay
            .apply(Record::Entries {
                from: LogIndex(1),
                entries: vec![entry(1, 1), entry(2, 1)],
            })
            .expect("fits");
        assert_eq!(
            replay.durable_state(None).expect("fits").hard_state.commit,
            LogIndex(2)
        );
    }
}
