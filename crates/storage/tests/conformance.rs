//! The storage conformance suite: one set of properties every [`Storage`] keeps, run against
//! [`MemStorage`] and [`FileStorage`] alike, so the simulator's twin cannot drift from the
//! runtime's disk.
//!
//! What the suite asserts about crashes is what the crate docs promise and no more: synced data
//! always survives; of unsynced data, a restart may read any prefix of the records, with the
//! hard state last.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};
use std::io::{Read, Write};

use chorus_raft::{DurableState, Entry, EntryPayload, HardState, SnapshotMeta};
use chorus_storage::{FileStorage, FileStorageOptions, MemStorage, Storage, StorageError};

/// How the suite makes, restarts and crashes one implementation.
trait Harness {
    type S: Storage;
    /// A new, empty storage.
    fn fresh(&mut self) -> Self::S;
    /// The process stops without syncing what it wrote last, and a new one opens the storage.
    fn restart(&mut self, storage: Self::S) -> (Self::S, DurableState);
    /// Syncs, but the power fails after the log is durable and before the hard state that
    /// follows it is replaced; then restarts.
    fn sync_log_then_crash(&mut self, storage: Self::S) -> (Self::S, DurableState);
    /// Writes the snapshot `meta` holding `body` and makes it durable.
    fn take_snapshot(&mut self, storage: &mut Self::S, meta: SnapshotMeta, body: &[u8]);
    /// The body of the snapshot `meta`, read back and verified.
    fn read_snapshot(&mut self, storage: &Self::S, meta: SnapshotMeta) -> Vec<u8>;
}

struct MemHarness {
    prng: Prng,
}

impl Harness for MemHarness {
    type S = MemStorage;

    fn fresh(&mut self) -> MemStorage {
        MemStorage::new()
    }

    fn restart(&mut self, mut storage: MemStorage) -> (MemStorage, DurableState) {
        storage.crash(&mut self.prng);
        let durable = storage.durable();
        (storage, durable)
    }

    fn sync_log_then_crash(&mut self, mut storage: MemStorage) -> (MemStorage, DurableState) {
        let records = storage.unsynced_records();
        storage.crash_keeping(records.saturating_sub(1));
        let durable = storage.durable();
        (storage, durable)
    }

    fn take_snapshot(&mut self, storage: &mut MemStorage, meta: SnapshotMeta, body: &[u8]) {
        let mut encoder = MemStorage::create_snapshot(meta, &[]).expect("creates");
        encoder.write_all(body).expect("writes");
        storage.finish_snapshot(encoder);
    }

    fn read_snapshot(&mut self, storage: &MemStorage, meta: SnapshotMeta) -> Vec<u8> {
        let mut body = Vec::new();
        storage
            .open_snapshot(meta)
            .expect("opens")
            .read_to_end(&mut body)
            .expect("intact");
        body
    }
}

struct FileHarness {
    directory: tempfile::TempDir,
}

impl FileHarness {
    fn new() -> FileHarness {
        FileHarness {
            directory: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn open(&self) -> (FileStorage, DurableState) {
        let (storage, durable, report) =
            FileStorage::open(self.directory.path(), FileStorageOptions::default()).expect("opens");
        assert_eq!(report.torn_tail, None, "a clean stop leaves no torn tail");
        (storage, durable)
    }
}

impl Harness for FileHarness {
    type S = FileStorage;

    fn fresh(&mut self) -> FileStorage {
        self.directory = tempfile::tempdir().expect("a temporary directory");
        self.open().0
    }

    fn restart(&mut self, storage: FileStorage) -> (FileStorage, DurableState) {
        drop(storage);
        self.open()
    }

    fn sync_log_then_crash(&mut self, mut storage: FileStorage) -> (FileStorage, DurableState) {
        // The disk after such a crash: the log synced, the hard-state file as it was before.
        let path = self.directory.path().join("hardstate");
        let before = std::fs::read(&path).ok();
        storage.sync().expect("syncs");
        drop(storage);
        match before {
            Some(bytes) => std::fs::write(&path, bytes).expect("restores the old hard state"),
            None => std::fs::remove_file(&path).expect("removes the new hard state"),
        }
        self.open()
    }

    fn take_snapshot(&mut self, storage: &mut FileStorage, meta: SnapshotMeta, body: &[u8]) {
        let mut writer = storage.snapshots().create(meta).expect("creates");
        writer.write_all(body).expect("writes");
        writer.finish().expect("finishes");
    }

    fn read_snapshot(&mut self, storage: &FileStorage, meta: SnapshotMeta) -> Vec<u8> {
        let mut body = Vec::new();
        storage
            .snapshots()
            .open(meta)
            .expect("opens")
            .read_to_end(&mut body)
            .expect("intact");
        body
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("command {index} of term {term}"))),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
        repairing: None,
    }
}

/// Entries written and synced read back, before and after a restart, with the hard state.
fn append_sync_and_reopen_round_trip(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    assert_eq!(
        storage.durable_state().expect("reads"),
        DurableState::default()
    );
    let mut log = entries(1..=3, 1);
    log.push(Entry {
        term: Term(1),
        index: LogIndex(4),
        payload: EntryPayload::NoOp,
    });
    storage
        .write(Some(hard_state(1, Some(2), 0)), &log)
        .expect("writes");
    storage.sync().expect("syncs");
    let expected = DurableState {
        snapshot: None,
        hard_state: hard_state(1, Some(2), 0),
        entries: log,
        membership: None,
        log_end_before_damage: None,
    };
    assert_eq!(storage.durable_state().expect("reads"), expected);
    let (storage, durable) = harness.restart(storage);
    assert_eq!(durable, expected);
    assert_eq!(storage.durable_state().expect("reads"), expected);
}

/// A write that starts inside the log replaces the conflicting suffix, and the log keeps
/// growing from there after a restart.
fn a_conflicting_suffix_is_truncated(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 0)), &entries(1..=5, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    storage
        .write(Some(hard_state(2, None, 0)), &entries(3..=4, 2))
        .expect("writes");
    storage.sync().expect("syncs");
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=4, 2));
    assert_eq!(storage.durable_state().expect("reads").entries, expected);

    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.entries, expected);
    storage.write(None, &entries(5..=6, 2)).expect("writes");
    storage.sync().expect("syncs");
    expected.extend(entries(5..=6, 2));
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, expected);
}

/// Term and vote changes and commit-only changes all read back, the latest winning.
fn hard_state_and_commit_changes_survive(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, Some(1), 0)), &entries(1..=4, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    storage
        .write(Some(hard_state(1, Some(1), 2)), &[])
        .expect("writes");
    storage.sync().expect("syncs");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.hard_state, hard_state(1, Some(1), 2));

    storage
        .write(Some(hard_state(3, None, 3)), &[])
        .expect("writes");
    storage.sync().expect("syncs");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.hard_state, hard_state(3, None, 3));

    storage
        .write(Some(hard_state(3, Some(2), 3)), &[])
        .expect("writes");
    storage
        .write(Some(hard_state(3, Some(2), 4)), &[])
        .expect("writes");
    storage.sync().expect("syncs");
    assert_eq!(
        storage.durable_state().expect("reads").hard_state,
        hard_state(3, Some(2), 4)
    );
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.hard_state, hard_state(3, Some(2), 4));
}

/// Many writes covered by one sync (group commit) all survive.
fn many_writes_one_sync_survive(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, Some(1), 0)), &[])
        .expect("writes");
    for index in 1..=200_u64 {
        storage
            .write(
                Some(hard_state(1, Some(1), index.saturating_sub(1))),
                &[entry(index, 1)],
            )
            .expect("writes");
    }
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(1..=200, 1));
    assert_eq!(durable.hard_state, hard_state(1, Some(1), 199));
}

/// Synced data always survives a stop without a sync; of what followed, at most a prefix, and
/// never the hard state without the entries written before it.
fn synced_data_survives_unsynced_writes(harness: &mut impl Harness) {
    for _ in 0..20 {
        let mut storage = harness.fresh();
        storage
            .write(Some(hard_state(1, None, 1)), &entries(1..=3, 1))
            .expect("writes");
        storage.sync().expect("syncs");
        storage.write(None, &entries(4..=5, 1)).expect("writes");
        storage.write(None, &entries(6..=6, 2)).expect("writes");
        storage
            .write(Some(hard_state(2, Some(3), 5)), &[])
            .expect("writes");

        let (_, durable) = harness.restart(storage);
        let mut all = entries(1..=5, 1);
        all.extend(entries(6..=6, 2));
        assert!(durable.entries.len() >= 3, "synced entries survive");
        assert_eq!(durable.entries[..], all[..durable.entries.len()]);
        if durable.hard_state.term == Term(2) {
            assert_eq!(
                durable.entries, all,
                "the hard state came after the entries"
            );
            assert_eq!(durable.hard_state, hard_state(2, Some(3), 5));
        } else {
            assert_eq!(durable.hard_state, hard_state(1, None, 1));
        }
    }
}

/// A crash between the log and the hard state keeps the entries and the old hard state: the
/// case the Raft core's restart resumes from in the last entry's term.
fn entries_are_durable_before_the_hard_state(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, Some(1), 2)), &entries(1..=2, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    storage
        .write(Some(hard_state(3, Some(2), 2)), &entries(3..=4, 3))
        .expect("writes");
    let (_, durable) = harness.sync_log_then_crash(storage);
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=4, 3));
    assert_eq!(durable.entries, expected);
    assert_eq!(durable.hard_state, hard_state(1, Some(1), 2));
}

/// A write that leaves a gap, or is not contiguous, is refused and changes nothing.
fn writes_that_do_not_fit_are_refused(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage.write(None, &entries(1..=2, 1)).expect("writes");
    let gap = storage.write(None, &entries(4..=4, 1));
    assert!(matches!(gap, Err(StorageError::InvalidWrite(_))), "{gap:?}");
    let holes = storage.write(None, &[entry(3, 1), entry(5, 1)]);
    assert!(
        matches!(holes, Err(StorageError::InvalidWrite(_))),
        "{holes:?}"
    );
    storage.write(None, &entries(3..=3, 1)).expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(1..=3, 1));
}

/// The commit index read back never passes the log's end.
fn the_commit_index_is_clamped_to_the_log(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 5)), &entries(1..=3, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries.len(), 3);
    assert_eq!(durable.hard_state.commit, LogIndex(3));
}

/// Writes that Raft never makes — a lower term or commit index, or overwriting a committed
/// entry — are refused and change nothing.
fn writes_against_raft_monotonicity_are_refused(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(2, Some(1), 2)), &entries(1..=3, 2))
        .expect("writes");
    for (hard_state, written) in [
        (Some(hard_state(1, None, 2)), Vec::new()),
        (Some(hard_state(2, Some(1), 1)), Vec::new()),
        (None, entries(2..=2, 3)),
    ] {
        let refused = storage.write(hard_state, &written);
        assert!(
            matches!(refused, Err(StorageError::InvalidWrite(_))),
            "{refused:?}"
        );
    }
    storage.write(None, &entries(3..=3, 3)).expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.hard_state, hard_state(2, Some(1), 2));
    assert_eq!(durable.entries.last(), Some(&entry(3, 3)));
}

fn snapshot_meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
    }
}

/// After a snapshot and a compaction keeping a tail, a restart reads the snapshot's place, the
/// log from `keep_from`, and a commit index at least the snapshot's; the log goes on after it.
fn compaction_then_restart_reads_the_snapshot_and_the_tail(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, Some(1), 15)), &entries(1..=20, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let meta = snapshot_meta(15, 1);
    harness.take_snapshot(&mut storage, meta, b"the state at 15");
    storage.compact(meta, LogIndex(11)).expect("compacts");
    let expected = DurableState {
        hard_state: hard_state(1, Some(1), 15),
        snapshot: Some(meta),
        entries: entries(11..=20, 1),
        membership: None,
        log_end_before_damage: None,
    };
    assert_eq!(storage.durable_state().expect("reads"), expected);
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable, expected);
    assert_eq!(harness.read_snapshot(&storage, meta), b"the state at 15");

    storage
        .write(Some(hard_state(2, None, 21)), &entries(21..=22, 2))
        .expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    let mut log = entries(11..=20, 1);
    log.extend(entries(21..=22, 2));
    assert_eq!(durable.entries, log);
    assert_eq!(durable.snapshot, Some(meta));
    assert_eq!(durable.hard_state, hard_state(2, None, 21));
}

/// A snapshot beyond the log's end (a follower installing a leader's snapshot) discards the
/// whole log; the commit index becomes the snapshot's and the log goes on from it.
fn a_snapshot_past_the_log_discards_it(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, Some(1), 2)), &entries(1..=5, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let meta = snapshot_meta(50, 3);
    harness.take_snapshot(&mut storage, meta, b"from the leader");
    storage.compact(meta, LogIndex(51)).expect("compacts");
    let durable = storage.durable_state().expect("reads");
    assert_eq!(durable.entries, Vec::new());
    assert_eq!(durable.hard_state.commit, LogIndex(50));
    storage
        .write(Some(hard_state(3, None, 50)), &entries(51..=52, 3))
        .expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.snapshot, Some(meta));
    assert_eq!(durable.entries, entries(51..=52, 3));
    assert_eq!(durable.hard_state, hard_state(3, None, 50));
}

/// A log holding another term at the snapshot's index conflicts with it and is discarded
/// (Raft §7), even where it is longer than the snapshot.
fn a_log_conflicting_with_the_snapshot_is_discarded(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 3)), &entries(1..=10, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let meta = snapshot_meta(8, 2);
    harness.take_snapshot(&mut storage, meta, b"term 2");
    storage.compact(meta, LogIndex(5)).expect("compacts");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.entries, Vec::new());
    assert_eq!(durable.hard_state.commit, LogIndex(8));
    storage.write(None, &entries(9..=9, 2)).expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(9..=9, 2));
}

/// A crash after a snapshot is durable but before the compaction: the restart resumes from
/// the snapshot anyway, keeps the log that goes on from it, and the log written next replays.
fn a_snapshot_without_its_compaction_is_adopted_on_restart(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 6)), &entries(1..=8, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let meta = snapshot_meta(6, 1);
    harness.take_snapshot(&mut storage, meta, b"six");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.snapshot, Some(meta));
    assert_eq!(durable.entries, entries(1..=8, 1));
    storage.write(None, &entries(9..=9, 1)).expect("writes");
    storage.sync().expect("syncs");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(1..=9, 1));

    // A snapshot past the log, never compacted to: the log is discarded on restart.
    let beyond = snapshot_meta(30, 4);
    harness.take_snapshot(&mut storage, beyond, b"thirty");
    let (mut storage, durable) = harness.restart(storage);
    assert_eq!(durable.snapshot, Some(beyond));
    assert_eq!(durable.entries, Vec::new());
    assert_eq!(durable.hard_state.commit, LogIndex(30));
    storage.write(None, &entries(31..=31, 4)).expect("writes");
    storage.sync().expect("syncs");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(31..=31, 4));
}

/// Compactions that cannot be right are refused and change nothing: to a snapshot that is not
/// durable, older than the last one, or keeping the log from past the snapshot.
fn compactions_that_do_not_fit_are_refused(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 10)), &entries(1..=10, 1))
        .expect("writes");
    storage.sync().expect("syncs");
    let missing = storage.compact(snapshot_meta(5, 1), LogIndex(6));
    assert!(
        matches!(missing, Err(StorageError::InvalidWrite(_))),
        "{missing:?}"
    );
    harness.take_snapshot(&mut storage, snapshot_meta(5, 1), b"five");
    harness.take_snapshot(&mut storage, snapshot_meta(8, 1), b"eight");
    let past = storage.compact(snapshot_meta(5, 1), LogIndex(7));
    assert!(
        matches!(past, Err(StorageError::InvalidWrite(_))),
        "{past:?}"
    );
    storage
        .compact(snapshot_meta(8, 1), LogIndex(9))
        .expect("compacts");
    let older = storage.compact(snapshot_meta(5, 1), LogIndex(6));
    assert!(
        matches!(older, Err(StorageError::InvalidWrite(_))),
        "{older:?}"
    );
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.snapshot, Some(snapshot_meta(8, 1)));
    assert_eq!(durable.entries, entries(9..=10, 1));
}

/// Unsynced writes before a compaction are synced by it: the compaction implies a sync.
fn a_compaction_syncs_what_was_written_before_it(harness: &mut impl Harness) {
    let mut storage = harness.fresh();
    storage
        .write(Some(hard_state(1, None, 4)), &entries(1..=6, 1))
        .expect("writes");
    harness.take_snapshot(&mut storage, snapshot_meta(4, 1), b"four");
    storage
        .compact(snapshot_meta(4, 1), LogIndex(3))
        .expect("compacts");
    let (_, durable) = harness.restart(storage);
    assert_eq!(durable.entries, entries(3..=6, 1));
    assert_eq!(durable.hard_state, hard_state(1, None, 4));
}

macro_rules! conformance {
    ($module:ident, $harness:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn append_sync_and_reopen_round_trip() {
                super::append_sync_and_reopen_round_trip(&mut $harness);
            }
            #[test]
            fn a_conflicting_suffix_is_truncated() {
                super::a_conflicting_suffix_is_truncated(&mut $harness);
            }
            #[test]
            fn hard_state_and_commit_changes_survive() {
                super::hard_state_and_commit_changes_survive(&mut $harness);
            }
            #[test]
            fn many_writes_one_sync_survive() {
                super::many_writes_one_sync_survive(&mut $harness);
            }
            #[test]
            fn synced_data_survives_unsynced_writes() {
                super::synced_data_survives_unsynced_writes(&mut $harness);
            }
            #[test]
            fn entries_are_durable_before_the_hard_state() {
                super::entries_are_durable_before_the_hard_state(&mut $harness);
            }
            #[test]
            fn writes_that_do_not_fit_are_refused() {
                super::writes_that_do_not_fit_are_refused(&mut $harness);
            }
            #[test]
            fn writes_against_raft_monotonicity_are_refused() {
                super::writes_against_raft_monotonicity_are_refused(&mut $harness);
            }
            #[test]
            fn the_commit_index_is_clamped_to_the_log() {
                super::the_commit_index_is_clamped_to_the_log(&mut $harness);
            }
            #[test]
            fn compaction_then_restart_reads_the_snapshot_and_the_tail() {
                super::compaction_then_restart_reads_the_snapshot_and_the_tail(&mut $harness);
            }
            #[test]
            fn a_snapshot_past_the_log_discards_it() {
                super::a_snapshot_past_the_log_discards_it(&mut $harness);
            }
            #[test]
            fn a_log_conflicting_with_the_snapshot_is_discarded() {
                super::a_log_conflicting_with_the_snapshot_is_discarded(&mut $harness);
            }
            #[test]
            fn a_snapshot_without_its_compaction_is_adopted_on_restart() {
                super::a_snapshot_without_its_compaction_is_adopted_on_restart(&mut $harness);
            }
            #[test]
            fn compactions_that_do_not_fit_are_refused() {
                super::compactions_that_do_not_fit_are_refused(&mut $harness);
            }
            #[test]
            fn a_compaction_syncs_what_was_written_before_it() {
                super::a_compaction_syncs_what_was_written_before_it(&mut $harness);
            }
        }
    };
}

conformance!(mem_storage, MemHarness { prng: Prng::new(7) });
conformance!(file_storage, FileHarness::new());

/// The twin cannot drift: random writes (appends, conflicting suffixes, elections, commits),
/// syncs, snapshots and compactions leave [`MemStorage`] and [`FileStorage`] with the same durable state after every
/// sync and after every restart, segment rotation and record splitting included.
#[test]
fn mem_storage_and_file_storage_agree_on_random_histories() {
    for seed in 0..6 {
        let mut prng = Prng::new(seed);
        let directory = tempfile::tempdir().expect("a temporary directory");
        let options = FileStorageOptions {
            segment_bytes_max: 512,
            record_bytes_max: 256,
            ..FileStorageOptions::default()
        };
        let (mut file, _, _) = FileStorage::open(directory.path(), options.clone()).expect("opens");
        let mut memory = MemStorage::new();
        let mut last_index = 0;
        // The term of each index written (index 0 unused), and the last snapshot's index.
        let mut terms = vec![0u64];
        let mut snapshot_index = 0;
        let mut state = LooseHardState {
            term: 0,
            vote: None,
            commit: 0,
        };
        for step in 0..150 {
            let mut written = Vec::new();
            if prng.chance(0.7) {
                // Append, or overwrite a suffix in a newer term.
                // Raft never overwrites a committed entry.
                let from = if last_index > state.commit && prng.chance(0.2) {
                    prng.range(state.commit + 1, last_index + 1)
                } else {
                    last_index + 1
                };
                if from <= last_index {
                    state.term += 1;
                }
                let count = prng.range(1, 6);
                written = entries(from..=from + count - 1, state.term.max(1));
                last_index = from + count - 1;
                terms.truncate(from as usize);
                terms.extend(std::iter::repeat_n(state.term.max(1), count as usize));
            }
            let hard_state = match prng.index(4) {
                0 => {
                    state.term += 1;
                    state.vote = Some(prng.range(1, 4));
                    Some(state)
                }
                1 | 2 => {
                    state.commit = prng.range(state.commit, last_index + 1);
                    Some(state)
                }
                _ => None,
            };
            let hard_state = hard_state.map(|state| HardState {
                term: Term(state.term),
                vote: state.vote.map(NodeId),
                commit: LogIndex(state.commit),
                repairing: None,
            });
            file.write(hard_state, &written).expect("writes");
            memory.write(hard_state, &written).expect("writes");
            if prng.chance(0.4) {
                file.sync().expect("syncs");
                memory.sync().expect("syncs");
                assert_eq!(
                    file.durable_state().expect("reads"),
                    memory.durable(),
                    "seed {seed} step {step}"
                );
            }
            if state.commit > snapshot_index && prng.chance(0.1) {
                // Snapshot at an index up to the commit, and compact keeping a random tail.
                let index = prng.range(snapshot_index + 1, state.commit + 1);
                let term = terms[index as usize];
                let meta = snapshot_meta(index, term);
                let body = format!("state at {index}").into_bytes();
                let mut writer = file.snapshots().create(meta).expect("creates");
                writer.write_all(&body).expect("writes");
                writer.finish().expect("finishes");
                let mut encoder = MemStorage::create_snapshot(meta, &[]).expect("creates");
                encoder.write_all(&body).expect("writes");
                memory.finish_snapshot(encoder);
                let keep_from = prng.range(1, index + 2);
                file.compact(meta, LogIndex(keep_from)).expect("compacts");
                memory.compact(meta, LogIndex(keep_from)).expect("compacts");
                file.snapshots().retain(2).expect("retains");
                memory.retain_snapshots(2);
                snapshot_index = index;
                assert_eq!(
                    file.durable_state().expect("reads"),
                    memory.durable(),
                    "seed {seed} step {step}: after compacting to {index} keeping {keep_from}"
                );
            }
            if prng.chance(0.05) {
                file.sync().expect("syncs");
                memory.sync().expect("syncs");
                drop(file);
                let (reopened, durable, report) =
                    FileStorage::open(directory.path(), options.clone()).expect("reopens");
                assert_eq!(report.torn_tail, None);
                assert_eq!(durable, memory.durable(), "seed {seed} step {step}");
                file = reopened;
            }
        }
    }
}

/// A loose hard state for the random histories, before it becomes a [`HardState`].
#[derive(Clone, Copy)]
struct LooseHardState {
    term: u64,
    vote: Option<u64>,
    commit: u64,
}
