//! Snapshot files and compaction on a real directory: damage, crashes, fallback, disk use.
//!
//! Each test builds snapshots and a log with [`FileStorage`] and [`SnapshotStore`], damages
//! or interrupts them the way a crash or a failing disk would, and checks that reading either
//! succeeds with exactly what was written or fails naming the file and the offset — and that a
//! restart never starts on silently lost state.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};
use chorus_raft::{Entry, EntryPayload, HardState, SnapshotMeta};
use chorus_storage::snapshot::{
    BLOCK_BYTES, BLOCK_HEADER_BYTES, HEADER_FIXED_BYTES, corruption, snapshot_file_name,
};
use chorus_storage::wal::segment_file_name;
use chorus_storage::{
    FileStorage, FileStorageOptions, MemStorage, SnapshotStore, Storage, StorageError,
};

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(vec![index as u8; 40])),
    }
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: Some(NodeId(1)),
        commit: LogIndex(commit),
        repairing: None,
    }
}

/// A body that spans several blocks and ends inside one.
fn body(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 31 % 253) as u8).collect()
}

fn write_snapshot(store: &SnapshotStore, meta: SnapshotMeta, body: &[u8]) -> PathBuf {
    let mut writer = store.create(meta).expect("creates");
    // Odd-sized writes, so blocks are cut inside the caller's writes.
    for chunk in body.chunks(7_777) {
        writer.write_all(chunk).expect("writes");
    }
    writer.finish().expect("finishes").path
}

fn read_all(store: &SnapshotStore, meta: SnapshotMeta) -> Result<Vec<u8>, StorageError> {
    let mut reader = store.open(meta)?;
    let mut read = Vec::new();
    match reader.read_to_end(&mut read) {
        Ok(_) => Ok(read),
        Err(error) => Err(match corruption(&error) {
            Some(StorageError::Corrupt {
                file,
                offset,
                reason,
            }) => StorageError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            _ => panic!("a read error that is not corruption: {error}"),
        }),
    }
}

/// Asserts `result` is corruption of `path` at an offset at or before `at_most`, and that the
/// message names the file and the offset.
fn assert_corrupt(result: Result<impl std::fmt::Debug, StorageError>, path: &Path, at_most: u64) {
    let error = result.expect_err("damage is detected");
    let StorageError::Corrupt { file, offset, .. } = &error else {
        panic!("not corruption: {error}");
    };
    assert_eq!(file, path, "{error}");
    assert!(
        *offset <= at_most,
        "offset {offset} after {at_most}: {error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(
            &path
                .file_name()
                .expect("named")
                .to_string_lossy()
                .to_string()
        ),
        "{message}"
    );
    assert!(message.contains(&format!("offset {offset}")), "{message}");
}

#[test]
fn a_snapshot_streams_back_whole_and_lists_newest_first() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let written = body(3 * BLOCK_BYTES as usize + 1234);
    write_snapshot(&store, meta(10, 1), b"older");
    let mut writer = store
        .create_with_extra(meta(20, 2), b"membership")
        .expect("creates");
    writer.write_all(&written).expect("writes");
    let file = writer.finish().expect("finishes");
    assert_eq!(
        file.file_bytes,
        fs::metadata(&file.path).expect("stat").len()
    );
    assert_eq!(store.list().expect("lists"), vec![meta(20, 2), meta(10, 1)]);
    assert_eq!(
        store.latest_valid().expect("reads"),
        (Some(meta(20, 2)), Vec::new())
    );
    let mut reader = store.open(meta(20, 2)).expect("opens");
    assert_eq!(reader.meta(), meta(20, 2));
    assert_eq!(reader.extra(), b"membership");
    let mut read = Vec::new();
    reader.read_to_end(&mut read).expect("intact");
    assert_eq!(read, written);
    assert_eq!(
        store.verify(meta(20, 2)).expect("intact"),
        written.len() as u64
    );
}

#[test]
fn a_torn_snapshot_is_detected_at_every_cut_naming_file_and_offset() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let path = write_snapshot(&store, meta(5, 1), &body(2 * BLOCK_BYTES as usize + 100));
    let whole = fs::read(&path).expect("reads");
    let block = BLOCK_BYTES as usize + BLOCK_HEADER_BYTES as usize;
    let header = HEADER_FIXED_BYTES as usize + 4;
    // Every cut in the header, around each block boundary and in the trailer, and a stride.
    let mut cuts: Vec<usize> = (0..header + 16).collect();
    for boundary in [header + block, header + 2 * block, whole.len() - 24] {
        cuts.extend(boundary - 10..boundary + 10);
    }
    cuts.extend((0..whole.len()).step_by(4_099));
    cuts.extend(whole.len() - 30..whole.len());
    for cut in cuts {
        fs::write(&path, &whole[..cut]).expect("tears");
        assert_corrupt(store.verify(meta(5, 1)), &path, cut as u64);
        assert_corrupt(read_all(&store, meta(5, 1)), &path, cut as u64);
    }
    // Bytes after the trailer are damage too.
    let mut longer = whole.clone();
    longer.push(0);
    fs::write(&path, &longer).expect("extends");
    assert_corrupt(store.verify(meta(5, 1)), &path, whole.len() as u64);
}

#[test]
fn a_flipped_bit_in_the_header_or_the_body_is_detected_naming_file_and_offset() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let path = write_snapshot(&store, meta(5, 1), &body(2 * BLOCK_BYTES as usize + 100));
    let whole = fs::read(&path).expect("reads");
    let header = HEADER_FIXED_BYTES as usize + 4;
    let block = BLOCK_BYTES as u64 + BLOCK_HEADER_BYTES;
    // Every bit of the header, of the first block's header, of the trailer, and a stride of
    // the body's bits.
    let mut bits: Vec<usize> = (0..(header + 8) * 8).collect();
    bits.extend((whole.len() - 24) * 8..whole.len() * 8);
    bits.extend((header * 8..whole.len() * 8).step_by(10_007));
    for bit in bits {
        let mut damaged = whole.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        fs::write(&path, &damaged).expect("damages");
        let byte = (bit / 8) as u64;
        assert_corrupt(read_all(&store, meta(5, 1)), &path, byte);
        // The body's damage is reported at the start of its block, never earlier.
        if let Err(StorageError::Corrupt { offset, .. }) = store.verify(meta(5, 1)) {
            if byte >= header as u64 {
                assert!(offset + block >= byte, "bit {bit}: offset {offset}");
            }
        } else {
            panic!("bit {bit}: not detected by verify");
        }
    }
}

#[test]
fn a_snapshot_under_another_name_is_refused() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let path = write_snapshot(&store, meta(5, 1), b"five");
    let renamed = store.path(meta(6, 1));
    fs::rename(&path, &renamed).expect("renames");
    assert_corrupt(store.verify(meta(6, 1)), &renamed, 12);
}

#[test]
fn random_damage_never_panics_and_is_always_detected() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let path = write_snapshot(&store, meta(9, 2), &body(BLOCK_BYTES as usize + 5_000));
    let whole = fs::read(&path).expect("reads");
    let mut prng = Prng::new(11);
    for round in 0..300 {
        let mut damaged = whole.clone();
        match prng.index(4) {
            0 => {
                for _ in 0..prng.range(1, 9) {
                    let at = prng.index(damaged.len());
                    damaged[at] = prng.range(0, 256) as u8;
                }
            }
            1 => damaged.truncate(prng.index(damaged.len())),
            2 => {
                let at = prng.index(damaged.len());
                let length = prng.index(damaged.len() - at) + 1;
                damaged[at..at + length].fill(0);
            }
            _ => {
                let at = prng.index(damaged.len());
                for byte in &mut damaged[at..] {
                    *byte = prng.range(0, 256) as u8;
                }
            }
        }
        if damaged == whole {
            continue;
        }
        fs::write(&path, &damaged).expect("damages");
        let verified = store.verify(meta(9, 2));
        assert!(
            matches!(verified, Err(StorageError::Corrupt { .. })),
            "round {round}: {verified:?}"
        );
        assert!(read_all(&store, meta(9, 2)).is_err(), "round {round}");
    }
}

#[test]
fn a_crash_before_the_rename_leaves_a_temporary_file_that_is_ignored_and_removed() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (mut storage, _, _) =
        FileStorage::open(directory.path(), FileStorageOptions::default()).expect("opens");
    storage
        .write(
            Some(hard_state(1, 3)),
            &(1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>(),
        )
        .expect("writes");
    storage.sync().expect("syncs");
    let store = storage.snapshots().clone();
    let mut writer = store.create(meta(3, 1)).expect("creates");
    writer.write_all(&body(100_000)).expect("writes");
    // The process dies: nothing runs the writer's cleanup.
    std::mem::forget(writer);
    let mut partial = store.create_partial(meta(3, 1)).expect("creates");
    partial.write_at(0, b"CHORUSSN").expect("writes");
    std::mem::forget(partial);
    drop(storage);

    let temporaries = |directory: &Path| {
        fs::read_dir(directory)
            .expect("lists")
            .filter(|item| {
                item.as_ref()
                    .is_ok_and(|item| item.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .count()
    };
    assert_eq!(temporaries(store.directory()), 2);
    assert_eq!(store.list().expect("lists"), Vec::new());
    let (_, durable, report) =
        FileStorage::open(directory.path(), FileStorageOptions::default()).expect("opens");
    assert_eq!(report.removed_temporary_snapshots, 2);
    assert_eq!(durable.snapshot, None);
    assert_eq!(durable.entries.len(), 3);
    assert_eq!(temporaries(store.directory()), 0);

    // An abandoned writer removes its own temporary file.
    let writer = store.create(meta(3, 1)).expect("creates");
    writer.abort();
    assert_eq!(temporaries(store.directory()), 0);
}

#[test]
fn a_snapshot_received_in_chunks_is_verified_before_it_is_renamed() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let leader = SnapshotStore::new(directory.path().join("leader")).expect("opens");
    let follower = SnapshotStore::new(directory.path().join("follower")).expect("opens");
    let written = body(150_000);
    let path = write_snapshot(&leader, meta(40, 3), &written);
    let file = fs::read(&path).expect("reads");

    let mut partial = follower.create_partial(meta(40, 3)).expect("creates");
    let chunk = 10_000;
    let mut offset = 0;
    while offset < file.len() {
        let end = (offset + chunk).min(file.len());
        assert_eq!(
            partial
                .write_at(offset as u64, &file[offset..end])
                .expect("writes"),
            end as u64
        );
        // A duplicated chunk and a resend from an earlier offset change nothing.
        partial
            .write_at(offset as u64, &file[offset..end])
            .expect("writes");
        if offset >= chunk {
            partial
                .write_at((offset - chunk) as u64, &file[offset - chunk..end])
                .expect("writes");
        }
        offset = end;
    }
    let hole = partial.write_at(file.len() as u64 + 1, b"x");
    assert!(
        matches!(hole, Err(StorageError::InvalidWrite(_))),
        "{hole:?}"
    );
    assert_eq!(partial.received_bytes(), file.len() as u64);
    partial.finish().expect("verifies and renames");
    assert_eq!(read_all(&follower, meta(40, 3)).expect("intact"), written);

    // A damaged chunk fails the verification; nothing is renamed, nothing is left behind.
    let mut partial = follower.create_partial(meta(41, 3)).expect("creates");
    let mut damaged = file.clone();
    damaged[70_000] ^= 0x10;
    partial.write_at(0, &damaged).expect("writes");
    let error = partial.finish().expect_err("refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    // Bytes of another snapshot are refused by the header check.
    let mut partial = follower.create_partial(meta(41, 3)).expect("creates");
    partial.write_at(0, &file).expect("writes");
    let error = partial.finish().expect_err("refused");
    assert!(error.to_string().contains("i40"), "{error}");
    // A truncated transfer is refused.
    let mut partial = follower.create_partial(meta(40, 3)).expect("creates");
    partial
        .write_at(0, &file[..file.len() - 1])
        .expect("writes");
    assert!(partial.finish().is_err());
    assert_eq!(follower.list().expect("lists"), vec![meta(40, 3)]);
    assert_eq!(
        fs::read_dir(follower.directory()).expect("lists").count(),
        1
    );
}

#[test]
fn retain_keeps_the_newest_and_the_previous() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    for index in [10, 20, 30, 40] {
        write_snapshot(&store, meta(index, 1), b"state");
    }
    assert_eq!(
        store.retain(2).expect("retains"),
        vec![meta(10, 1), meta(20, 1)]
    );
    assert_eq!(store.list().expect("lists"), vec![meta(40, 1), meta(30, 1)]);
}

fn small_segments() -> FileStorageOptions {
    FileStorageOptions {
        segment_bytes_max: 600,
        ..FileStorageOptions::default()
    }
}

fn segments(directory: &Path) -> Vec<u64> {
    let mut sequences: Vec<u64> = fs::read_dir(directory)
        .expect("lists")
        .filter_map(|item| {
            let name = item.expect("lists").file_name();
            chorus_storage::wal::parse_segment_file_name(name.to_str()?)
        })
        .collect();
    sequences.sort_unstable();
    sequences
}

/// Writes entries `from..=to` of term 1 in batches of 5, committing each.
fn write_range(storage: &mut FileStorage, from: u64, to: u64) {
    let mut index = from;
    while index <= to {
        let end = (index + 4).min(to);
        let batch: Vec<Entry> = (index..=end).map(|i| entry(i, 1)).collect();
        storage
            .write(Some(hard_state(1, end)), &batch)
            .expect("writes");
        storage.sync().expect("syncs");
        index = end + 1;
    }
}

#[test]
fn compaction_deletes_covered_segments_and_a_restart_reads_from_keep_from() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (mut storage, _, _) = FileStorage::open(directory.path(), small_segments()).expect("opens");
    write_range(&mut storage, 1, 200);
    let before = segments(directory.path());
    assert!(before.len() > 10, "{before:?}");
    write_snapshot(storage.snapshots(), meta(150, 1), b"state at 150");
    storage
        .compact(meta(150, 1), LogIndex(141))
        .expect("compacts");
    let after = segments(directory.path());
    assert!(after.len() < before.len() / 2, "{before:?} -> {after:?}");
    assert_eq!(after, storage.segment_sequences());
    let current = before.last().expect("a segment");
    assert!(after.contains(current), "the current segment is kept");
    drop(storage);

    let (_, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert_eq!(report.snapshot, Some(meta(150, 1)));
    assert_eq!(report.segments_replayed, after.len());
    assert_eq!(durable.snapshot, Some(meta(150, 1)));
    assert_eq!(
        durable.entries.first().map(|e| e.index),
        Some(LogIndex(141))
    );
    assert_eq!(durable.entries.last().map(|e| e.index), Some(LogIndex(200)));
    assert_eq!(durable.hard_state.commit, LogIndex(200));
}

#[test]
fn a_crash_in_the_middle_of_the_deletions_replays_the_same() {
    let original = tempfile::tempdir().expect("a temporary directory");
    let (mut storage, _, _) = FileStorage::open(original.path(), small_segments()).expect("opens");
    write_range(&mut storage, 1, 120);
    write_snapshot(storage.snapshots(), meta(100, 1), b"state at 100");
    let before = segments(original.path());
    // The directory as it was before the compaction, to rebuild each intermediate state.
    let saved = tempfile::tempdir().expect("a temporary directory");
    for sequence in &before {
        fs::copy(
            original.path().join(segment_file_name(*sequence)),
            saved.path().join(segment_file_name(*sequence)),
        )
        .expect("copies");
    }
    storage
        .compact(meta(100, 1), LogIndex(101))
        .expect("compacts");
    let expected = storage.durable_state().expect("reads");
    let after = segments(original.path());
    drop(storage);
    // The marker may have started a new segment; the deleted ones are the oldest of before.
    let deleted = before
        .iter()
        .filter(|sequence| !after.contains(sequence))
        .count();
    assert_eq!(before[deleted..].first(), after.first());
    assert!(deleted > 2);
    for kept_deleted in 0..deleted {
        // The segments still present: the first `kept_deleted` deletions happened.
        for sequence in &before[kept_deleted..deleted] {
            fs::copy(
                saved.path().join(segment_file_name(*sequence)),
                original.path().join(segment_file_name(*sequence)),
            )
            .expect("restores");
        }
        let (_, durable, _) =
            FileStorage::open(original.path(), small_segments()).expect("reopens");
        assert_eq!(durable, expected, "after {kept_deleted} deletions");
        for sequence in &before[kept_deleted..deleted] {
            let _ = fs::remove_file(original.path().join(segment_file_name(*sequence)));
        }
    }
}

#[test]
fn disk_use_stays_bounded_over_many_compactions() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (mut storage, _, _) = FileStorage::open(directory.path(), small_segments()).expect("opens");
    let mut largest = 0;
    let mut previous: Option<SnapshotMeta> = None;
    for round in 0..40_u64 {
        let from = round * 50 + 1;
        write_range(&mut storage, from, from + 49);
        let newest = meta(from + 49, 1);
        write_snapshot(storage.snapshots(), newest, &body(10_000));
        // Compaction lags one snapshot behind, so a damaged newest can fall back.
        let keep_from = previous.map_or(LogIndex(1), |previous| LogIndex(previous.index.0 + 1));
        storage.compact(newest, keep_from).expect("compacts");
        storage.snapshots().retain(2).expect("retains");
        previous = Some(newest);
        let bytes = directory_bytes(directory.path());
        largest = largest.max(bytes);
        if round >= 3 {
            assert!(bytes < 40_000, "round {round}: {bytes} bytes");
        }
    }
    let (_, durable, _) = FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert_eq!(durable.snapshot, Some(meta(2000, 1)));
    assert!(durable.entries.len() <= 100, "{}", durable.entries.len());
    assert!(segments(directory.path()).len() < 20);
    assert!(largest < 40_000, "{largest}");
}

fn directory_bytes(directory: &Path) -> u64 {
    fs::read_dir(directory)
        .expect("lists")
        .map(|item| {
            let item = item.expect("lists");
            let metadata = item.metadata().expect("stat");
            if metadata.is_dir() {
                directory_bytes(&item.path())
            } else {
                metadata.len()
            }
        })
        .sum()
}

/// Two snapshots (100 and 200) and a log of 1..=250 compacted to 200 keeping `keep_from`.
fn two_snapshots(directory: &Path, keep_from: u64) -> (PathBuf, PathBuf) {
    let (mut storage, _, _) = FileStorage::open(directory, small_segments()).expect("opens");
    write_range(&mut storage, 1, 250);
    let older = write_snapshot(storage.snapshots(), meta(100, 1), b"state at 100");
    storage
        .compact(meta(100, 1), LogIndex(1))
        .expect("compacts");
    let newest = write_snapshot(storage.snapshots(), meta(200, 1), &body(100_000));
    storage
        .compact(meta(200, 1), LogIndex(keep_from))
        .expect("compacts");
    (older, newest)
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_when_the_log_covers_the_gap() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (_, newest) = two_snapshots(directory.path(), 101);
    let mut bytes = fs::read(&newest).expect("reads");
    bytes[60_000] ^= 0x01;
    fs::write(&newest, &bytes).expect("damages");

    let (mut storage, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("falls back");
    assert_eq!(report.snapshot, Some(meta(100, 1)));
    assert_eq!(durable.snapshot, Some(meta(100, 1)));
    let damaged = &report.damaged_snapshots;
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].meta, meta(200, 1));
    assert_eq!(damaged[0].file, newest);
    assert!(damaged[0].offset <= 60_000 && damaged[0].offset + 70_000 > 60_000);
    // Every entry after the older snapshot is still there.
    let first = durable.entries.first().expect("a log").index;
    assert!(first <= LogIndex(101), "{first}");
    assert_eq!(durable.entries.last().expect("a log").index, LogIndex(250));
    assert_eq!(durable.hard_state.commit, LogIndex(250));

    // The node replays from the older snapshot and may snapshot again before it passes the
    // damaged one: that compaction's marker is older than the log's last one.
    write_snapshot(storage.snapshots(), meta(150, 1), b"state at 150");
    storage
        .compact(meta(150, 1), LogIndex(101))
        .expect("compacts");
    drop(storage);
    let (mut storage, durable, _) =
        FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert_eq!(durable.snapshot, Some(meta(150, 1)));
    assert!(durable.entries.first().expect("a log").index <= LogIndex(151));
    assert_eq!(durable.entries.last().expect("a log").index, LogIndex(250));

    // The node goes on: a new snapshot past the damaged one, and the log follows it.
    write_range(&mut storage, 251, 260);
    write_snapshot(storage.snapshots(), meta(255, 1), b"state at 255");
    storage
        .compact(meta(255, 1), LogIndex(101))
        .expect("compacts");
    drop(storage);
    let (_, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert_eq!(durable.snapshot, Some(meta(255, 1)));
    assert_eq!(report.damaged_snapshots, Vec::new());
}

#[test]
fn a_damaged_newest_snapshot_refuses_to_start_when_the_log_does_not_cover_the_gap() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (_, newest) = two_snapshots(directory.path(), 201);
    let mut bytes = fs::read(&newest).expect("reads");
    bytes[60_000] ^= 0x01;
    fs::write(&newest, &bytes).expect("damages");

    let error = FileStorage::open(directory.path(), small_segments()).expect_err("refuses");
    let StorageError::Corrupt { file, offset, .. } = &error else {
        panic!("not corruption: {error}");
    };
    assert_eq!(file, &newest);
    assert!(*offset <= 60_000);
    let message = error.to_string();
    assert!(
        message.contains(&snapshot_file_name(meta(200, 1))),
        "{message}"
    );
    assert!(message.contains("cannot fall back"), "{message}");

    // Without any snapshot left, the compacted log alone refuses too.
    fs::remove_file(&newest).expect("removes");
    fs::remove_file(
        directory
            .path()
            .join("snapshots")
            .join(snapshot_file_name(meta(100, 1))),
    )
    .expect("removes");
    let error = FileStorage::open(directory.path(), small_segments()).expect_err("refuses");
    assert!(error.to_string().contains("compacted"), "{error}");
}

#[test]
fn a_log_whose_head_is_missing_without_a_snapshot_refuses_to_start() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (mut storage, _, _) = FileStorage::open(directory.path(), small_segments()).expect("opens");
    write_range(&mut storage, 1, 100);
    drop(storage);
    fs::remove_file(directory.path().join(segment_file_name(1))).expect("removes");
    let error = FileStorage::open(directory.path(), small_segments()).expect_err("refuses");
    assert!(
        matches!(&error, StorageError::Corrupt { file, .. } if *file == directory.path().join(segment_file_name(2))),
        "{error}"
    );
    assert!(error.to_string().contains("no snapshot covers"), "{error}");
}

#[test]
fn a_snapshot_installed_in_chunks_then_a_crash_before_compaction_restarts_from_it() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let leader = tempfile::tempdir().expect("a temporary directory");
    let leader_store = SnapshotStore::new(leader.path()).expect("opens");
    let path = write_snapshot(&leader_store, meta(500, 4), &body(80_000));
    let file = fs::read(&path).expect("reads");

    let (mut storage, _, _) = FileStorage::open(directory.path(), small_segments()).expect("opens");
    write_range(&mut storage, 1, 50);
    let mut partial = storage
        .snapshots()
        .create_partial(meta(500, 4))
        .expect("creates");
    for (number, chunk) in file.chunks(16_384).enumerate() {
        partial
            .write_at((number * 16_384) as u64, chunk)
            .expect("writes");
    }
    partial.finish().expect("installs");
    drop(storage);

    let (mut storage, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert!(report.adopted_snapshot);
    assert_eq!(durable.snapshot, Some(meta(500, 4)));
    assert_eq!(durable.entries, Vec::new());
    assert_eq!(durable.hard_state.commit, LogIndex(500));
    storage
        .write(Some(hard_state(4, 500)), &[entry(501, 4)])
        .expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (_, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert!(!report.adopted_snapshot);
    assert_eq!(durable.entries, vec![entry(501, 4)]);
}

#[test]
fn the_in_memory_twin_ships_the_same_bytes_a_file_store_reads() {
    let mut memory = MemStorage::new();
    let written = body(100_000);
    let mut encoder = MemStorage::create_snapshot(meta(7, 1), b"extra").expect("creates");
    encoder.write_all(&written).expect("writes");
    memory.finish_snapshot(encoder);
    let bytes = memory.snapshot_bytes(meta(7, 1)).expect("held");

    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = SnapshotStore::new(directory.path()).expect("opens");
    let mut partial = store.create_partial(meta(7, 1)).expect("creates");
    partial.write_at(0, &bytes).expect("writes");
    partial.finish().expect("verifies");
    assert_eq!(read_all(&store, meta(7, 1)).expect("intact"), written);

    let mut other = MemStorage::new();
    let mut damaged = bytes.to_vec();
    damaged[50_000] ^= 0x80;
    assert!(
        other
            .install_snapshot(meta(7, 1), Bytes::from(damaged))
            .is_err()
    );
    other.install_snapshot(meta(7, 1), bytes).expect("installs");
    assert_eq!(other.snapshots(), vec![meta(7, 1)]);
}
