//! The storage conformance suite: one set of properties every [`Storage`] keeps, run against
//! [`MemStorage`] and [`FileStorage`] alike, so the simulator's twin cannot drift from the
//! runtime's disk.
//!
//! What the suite asserts about crashes is what the crate docs promise and no more: synced data
//! always survives; of unsynced data, a restart may read any prefix of the records, with the
//! hard state last.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};
use chorus_raft::{DurableState, Entry, EntryPayload, HardState};
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
        }
    };
}

conformance!(mem_storage, MemHarness { prng: Prng::new(7) });
conformance!(file_storage, FileHarness::new());

/// The twin cannot drift: random writes (appends, conflicting suffixes, elections, commits)
/// and syncs leave [`MemStorage`] and [`FileStorage`] with the same durable state after every
/// sync and after every restart, segment rotation and record splitting included.
#[test]
fn mem_storage_and_file_storage_agree_on_random_histories() {
    for seed in 0..3 {
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
        let mut state = LooseHardState {
            term: 0,
            vote: None,
            commit: 0,
        };
        for step in 0..80 {
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
