//! Recovery scenarios only a real directory has: torn tails, flipped bits, segments.
//!
//! Each test builds a directory with [`FileStorage`], damages its bytes the way a crash or a
//! failing disk would, and checks that open either cuts a torn tail (and says so) or refuses
//! with an error that names the file and the offset.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{DurableState, Entry, EntryPayload, HardState, LogPosition};
use chorus_storage::wal::{SEGMENT_HEADER_BYTES, SYNC_MARKER_BYTES, segment_file_name};
use chorus_storage::{FileStorage, FileStorageOptions, RecoveryReport, Storage, StorageError};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(vec![index as u8; 20])),
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

fn position(index: u64, term: u64) -> LogPosition {
    LogPosition {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// The options of most tests here: without preallocation, so that a segment file's length is
/// where its records end, which is what the byte-level damage below is placed by. The
/// preallocated segments of the default have tests of their own, at the end.
fn unpreallocated() -> FileStorageOptions {
    FileStorageOptions {
        preallocate: false,
        ..FileStorageOptions::default()
    }
}

fn open(directory: &Path) -> Result<(FileStorage, DurableState, RecoveryReport), StorageError> {
    FileStorage::open(directory, unpreallocated())
}

fn first_segment(directory: &Path) -> PathBuf {
    directory.join(segment_file_name(1))
}

/// Overwrites bytes of a file in place. Unlike `fs::write`, it never truncates the file to
/// zero first, which on ext4 forces a flush of the data and makes a loop of thousands slow.
fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("opens");
    file.seek(SeekFrom::Start(offset)).expect("seeks");
    file.write_all(bytes).expect("writes");
}

fn copy_directory(from: &Path, to: &Path) {
    for item in fs::read_dir(from).expect("lists") {
        let item = item.expect("lists");
        if item.file_type().expect("stat").is_dir() {
            fs::create_dir_all(to.join(item.file_name())).expect("creates");
            copy_directory(&item.path(), &to.join(item.file_name()));
        } else {
            fs::copy(item.path(), to.join(item.file_name())).expect("copies");
        }
    }
}

/// Writes three synced batches (entries 1..=2, 3..=4, 5..=6), returning the segment's length
/// before the last batch (where its record starts) and the durable state before it.
fn three_batches(directory: &Path) -> (u64, DurableState) {
    let (mut storage, _, _) = open(directory).expect("opens");
    storage
        .write(Some(hard_state(1, 0)), &[entry(1, 1), entry(2, 1)])
        .expect("writes");
    storage.sync().expect("syncs");
    storage
        .write(None, &[entry(3, 1), entry(4, 1)])
        .expect("writes");
    storage.sync().expect("syncs");
    let before = storage.durable_state().expect("reads");
    let last_record_start = fs::metadata(first_segment(directory)).expect("stat").len();
    storage
        .write(None, &[entry(5, 1), entry(6, 1)])
        .expect("writes");
    storage.sync().expect("syncs");
    (last_record_start, before)
}

#[test]
fn a_torn_tail_at_every_byte_of_the_last_record_is_cut_and_reported() {
    let original = tempfile::tempdir().expect("a temporary directory");
    let (last_record_start, before) = three_batches(original.path());
    let segment = fs::read(first_segment(original.path())).expect("reads");
    // The last batch's record, without the sync marker that follows it: a crash before the
    // fsync returned can leave any prefix of it.
    let end = segment.len() as u64 - SYNC_MARKER_BYTES;
    let directory = tempfile::tempdir().expect("a temporary directory");
    copy_directory(original.path(), directory.path());
    let path = first_segment(directory.path());
    let hard_state_path = directory.path().join("hardstate");
    let original_hard_state = fs::read(&hard_state_path).expect("reads");
    for cut in last_record_start + 1..end {
        // Each cut starts from the original files (the previous round wrote after its cut).
        overwrite(&hard_state_path, 0, &original_hard_state);
        overwrite(&path, 0, &segment);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(cut))
            .expect("tears");

        let (mut storage, durable, report) = open(directory.path()).expect("recovers");
        assert_eq!(durable, before, "cut at {cut}");
        let torn = report.torn_tail.expect("reported");
        assert_eq!(torn.file, path);
        assert_eq!(torn.offset, last_record_start);
        assert_eq!(torn.bytes_dropped, cut - last_record_start);
        assert_eq!(fs::metadata(&path).expect("stat").len(), last_record_start);

        // The storage writes cleanly after the cut point.
        storage
            .write(Some(hard_state(2, 4)), &[entry(5, 2)])
            .expect("writes");
        storage.sync().expect("syncs");
        drop(storage);
        let (_, durable, report) = open(directory.path()).expect("reopens");
        assert_eq!(report.torn_tail, None);
        assert_eq!(durable.entries.len(), 5);
        assert_eq!(durable.entries[4], entry(5, 2));
        assert_eq!(durable.hard_state, hard_state(2, 4));
    }
}

#[test]
fn a_bad_checksum_in_the_final_record_is_a_torn_tail() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (last_record_start, before) = three_batches(directory.path());
    let path = first_segment(directory.path());
    let mut bytes = fs::read(&path).expect("reads");
    // The fsync of the last batch never returned: no sync marker follows it.
    bytes.truncate(bytes.len() - SYNC_MARKER_BYTES as usize);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).expect("damages");
    let (_, durable, report) = open(directory.path()).expect("recovers");
    assert_eq!(durable, before);
    assert_eq!(
        report.torn_tail.expect("reported").offset,
        last_record_start
    );
}

#[test]
fn a_flipped_bit_in_the_last_synced_record_is_cut_and_the_node_repairs() {
    // Issue 12: the last record was synced (its sync marker follows it), so a flipped bit in
    // it is damage to a record the node may have acknowledged, not a torn write, at every
    // byte. Open cuts it, but first records in the hard state that the node repairs, and
    // reports it, with where the log ended before the damage; the Raft core then starts no
    // election, and votes only as that log would have, until a leader repaired it.
    let original = tempfile::tempdir().expect("a temporary directory");
    let (last_record_start, before) = three_batches(original.path());
    let segment = fs::read(first_segment(original.path())).expect("reads");
    let record_end = segment.len() as u64 - SYNC_MARKER_BYTES;
    let directory = tempfile::tempdir().expect("a temporary directory");
    copy_directory(original.path(), directory.path());
    let path = first_segment(directory.path());
    let hard_state_path = directory.path().join("hardstate");
    let original_hard_state = fs::read(&hard_state_path).expect("reads");
    for byte in last_record_start..record_end {
        // One bit per byte, a different one each time (every bit of every byte would cost
        // thousands of fsyncs for the same code path).
        let bit = byte % 8;
        overwrite(&path, 0, &segment);
        overwrite(&path, byte, &[segment[byte as usize] ^ (1 << bit)]);
        let (_, durable, report) = open(directory.path()).expect("recovers");
        let damage = report.synced_damage.expect("reported");
        assert_eq!(
            (damage.file.as_path(), damage.offset, damage.marker),
            (path.as_path(), last_record_start, record_end),
            "byte {byte} bit {bit}"
        );
        assert_eq!(damage.repairing, Term(1));
        assert_eq!(report.torn_tail, None, "synced damage is not a torn tail");
        assert_eq!(
            durable.entries, before.entries,
            "byte {byte}: cut at the damage"
        );
        assert_eq!(
            durable.hard_state,
            HardState {
                repairing: Some(Term(1)),
                ..before.hard_state
            }
        );
        assert_eq!(
            durable.log_end_before_damage,
            Some(position(6, 1)),
            "byte {byte}: the marker after the damage says where the log ended"
        );
        assert_eq!(fs::metadata(&path).expect("stat").len(), last_record_start);
        assert_eq!(
            fs::read(&damage.saved).expect("the cut bytes were kept"),
            {
                let mut damaged = segment[last_record_start as usize..].to_vec();
                damaged[(byte - last_record_start) as usize] ^= 1 << bit;
                damaged
            },
            "byte {byte}"
        );
        fs::remove_file(&damage.saved).expect("removes");
        // A second open finds nothing more to cut and still knows the node repairs.
        let (_, again, report) = open(directory.path()).expect("reopens");
        assert_eq!((report.synced_damage, report.torn_tail), (None, None));
        assert_eq!(again, durable);
        fs::write(&path, &segment).expect("restores");
        overwrite(&hard_state_path, 0, &original_hard_state);
        fs::OpenOptions::new()
            .write(true)
            .open(&hard_state_path)
            .and_then(|file| file.set_len(original_hard_state.len() as u64))
            .expect("restores");
    }
    // The sync marker itself damaged proves nothing, and loses nothing: it is cut.
    overwrite(
        &path,
        record_end + 12,
        &[segment[record_end as usize + 12] ^ 0x04],
    );
    let (_, durable, report) = open(directory.path()).expect("recovers");
    assert_eq!(durable.entries.len(), 6);
    assert_eq!(report.torn_tail.expect("reported").offset, record_end);
}

/// Writes `batches` synced batches of two entries, then `unsynced` more batches that reach the
/// segment file without an fsync (a write buffer of zero bytes); returns the segment's length
/// after the last sync and the durable state then.
fn synced_then_unsynced(directory: &Path, batches: u64, unsynced: u64) -> (u64, DurableState) {
    let options = FileStorageOptions {
        write_buffer_bytes_max: 0,
        ..unpreallocated()
    };
    let (mut storage, _, _) = FileStorage::open(directory, options).expect("opens");
    for batch in 0..batches {
        let batch_entries = [entry(2 * batch + 1, 1), entry(2 * batch + 2, 1)];
        storage
            .write(Some(hard_state(1, 0)), &batch_entries)
            .expect("writes");
        storage.sync().expect("syncs");
    }
    let synced_end = fs::metadata(first_segment(directory)).expect("stat").len();
    let synced = storage.durable_state().expect("reads");
    for batch in batches..batches + unsynced {
        storage
            .write(None, &[entry(2 * batch + 1, 1), entry(2 * batch + 2, 1)])
            .expect("writes");
    }
    // The process dies without syncing.
    drop(storage);
    (synced_end, synced)
}

#[test]
fn damage_anywhere_in_the_unsynced_tail_is_cut_even_with_later_bytes_after_it() {
    // Issue 12: a power cut can leave garbage or zeros in the middle of the unsynced tail and
    // later pages intact. Nothing after the damage proves it was synced, so it is torn.
    let original = tempfile::tempdir().expect("a temporary directory");
    let (synced_end, synced) = synced_then_unsynced(original.path(), 3, 4);
    let segment = fs::read(first_segment(original.path())).expect("reads");
    assert!(segment.len() as u64 > synced_end + 100);
    let directory = tempfile::tempdir().expect("a temporary directory");
    copy_directory(original.path(), directory.path());
    let path = first_segment(directory.path());
    let hard_state_path = directory.path().join("hardstate");
    let original_hard_state = fs::read(&hard_state_path).expect("reads");
    let mut prng = chorus_core::Prng::new(5);
    for round in 0..200 {
        overwrite(&hard_state_path, 0, &original_hard_state);
        fs::write(&path, &segment).expect("restores");
        let mut bytes = segment.clone();
        let at = prng.range(synced_end, segment.len() as u64 - 1) as usize;
        let length = prng.range(1, 40).min((segment.len() - at) as u64) as usize;
        if round % 2 == 0 {
            bytes[at..at + length].fill(0);
        } else {
            for byte in &mut bytes[at..at + length] {
                *byte = prng.range(0, 256) as u8;
            }
        }
        fs::write(&path, &bytes).expect("damages");
        let (_, durable, report) = open(directory.path()).expect("recovers");
        assert!(
            durable.entries.len() >= synced.entries.len(),
            "round {round}"
        );
        assert_eq!(
            durable.entries[..synced.entries.len()],
            synced.entries[..],
            "round {round}"
        );
        if bytes != segment {
            let torn = report.torn_tail.expect("reported");
            assert!(
                torn.offset >= synced_end && torn.offset <= at as u64,
                "round {round}"
            );
        }
    }
}

#[test]
fn damage_in_synced_data_followed_by_an_unsynced_tail_is_cut_and_repaired() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (synced_end, synced) = synced_then_unsynced(directory.path(), 3, 2);
    let path = first_segment(directory.path());
    // A zeroed range inside the second synced batch.
    let at = SEGMENT_HEADER_BYTES + (synced_end - SEGMENT_HEADER_BYTES) / 2;
    overwrite(&path, at, &[0u8; 16]);
    let (_, durable, report) = open(directory.path()).expect("recovers");
    let damage = report.synced_damage.expect("reported");
    assert!(damage.file == path && damage.offset <= at, "{damage:?}");
    assert!(durable.entries.len() < synced.entries.len());
    assert_eq!(
        durable.entries[..],
        synced.entries[..durable.entries.len()],
        "a prefix survives"
    );
    assert_eq!(durable.hard_state.repairing, Some(synced.hard_state.term));
    // The records after the last marker follow one another from it, and may have been
    // synced by an fsync whose marker was lost: where the log ended counts them.
    assert_eq!(durable.log_end_before_damage, Some(position(10, 1)));
}

#[test]
fn where_the_log_ended_counts_a_synced_batch_whose_marker_a_power_cut_lost() {
    // The last batch (entries 5 and 6) was synced, and maybe acknowledged, but the marker
    // after it never reached the disk; a bit of the first batch flipped. The last marker left
    // says the log ended at entry 4; the batch after it, read record by record, says 6.
    let directory = tempfile::tempdir().expect("a temporary directory");
    three_batches(directory.path());
    let path = first_segment(directory.path());
    let mut segment = fs::read(&path).expect("reads");
    segment.truncate(segment.len() - SYNC_MARKER_BYTES as usize);
    let flipped = SEGMENT_HEADER_BYTES as usize + 12;
    segment[flipped] ^= 0x01;
    fs::write(&path, &segment).expect("damages");
    let (_, durable, report) = open(directory.path()).expect("recovers");
    assert_eq!(
        report.synced_damage.expect("reported").offset,
        SEGMENT_HEADER_BYTES
    );
    assert!(durable.entries.is_empty());
    assert_eq!(durable.log_end_before_damage, Some(position(6, 1)));
}

/// Writes six synced batches into segments of at most 128 bytes, so that the log spans
/// several; returns the segments in order.
fn batches_in_small_segments(directory: &Path) -> Vec<PathBuf> {
    let options = FileStorageOptions {
        segment_bytes_max: 128,
        ..unpreallocated()
    };
    let (mut storage, _, _) = FileStorage::open(directory, options).expect("opens");
    storage.write(Some(hard_state(1, 0)), &[]).expect("writes");
    for batch in 0..6 {
        storage
            .write(None, &[entry(2 * batch + 1, 1), entry(2 * batch + 2, 1)])
            .expect("writes");
        storage.sync().expect("syncs");
    }
    let mut segments: Vec<PathBuf> = fs::read_dir(directory)
        .expect("lists")
        .map(|item| item.expect("lists").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    segments
}

#[test]
fn a_zero_filled_tail_is_the_clean_end_of_the_log_not_a_torn_tail() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (_, _) = three_batches(directory.path());
    let path = first_segment(directory.path());
    let mut bytes = fs::read(&path).expect("reads");
    let length = bytes.len() as u64;
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    fs::write(&path, &bytes).expect("extends");
    let (_, durable, report) = open(directory.path()).expect("recovers");
    assert_eq!(durable.entries.len(), 6);
    assert_eq!(report.torn_tail, None, "zeros hold nothing to report");
    // Without preallocation the zeros are cut, so the file again ends with its records.
    assert_eq!(fs::metadata(&path).expect("stat").len(), length);
}

#[test]
fn a_flipped_bit_anywhere_in_a_closed_segment_refuses_to_open_naming_file_and_offset() {
    // A segment before the last one was synced whole before the next began: damage in it is
    // never a torn tail, and cutting it would drop every later segment, so open refuses.
    let original = tempfile::tempdir().expect("a temporary directory");
    batches_in_small_segments(original.path());
    let segment = fs::read(first_segment(original.path())).expect("reads");
    // Every bit of the first segment: header, records, length fields and sync markers.
    // A refused open changes nothing, so one directory serves every damaged copy.
    let directory = tempfile::tempdir().expect("a temporary directory");
    copy_directory(original.path(), directory.path());
    let path = first_segment(directory.path());
    for bit in 0..segment.len() * 8 {
        let mut bytes = segment.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        overwrite(&path, (bit / 8) as u64, &bytes[bit / 8..bit / 8 + 1]);

        let error = open(directory.path()).expect_err("refuses");
        let StorageError::Corrupt { file, offset, .. } = &error else {
            panic!("bit {bit}: not corruption: {error}");
        };
        assert_eq!(file, &path, "bit {bit}");
        assert!(*offset <= (bit / 8) as u64, "bit {bit}: offset {offset}");
        let message = error.to_string();
        assert!(message.contains(&segment_file_name(1)), "{message}");
        assert!(message.contains(&format!("offset {offset}")), "{message}");
        // Nothing was cut: the damaged file is left as it was for an operator to inspect.
        assert_eq!(fs::read(&path).expect("reads"), bytes);
        overwrite(&path, (bit / 8) as u64, &segment[bit / 8..bit / 8 + 1]);
    }
}

#[test]
fn a_huge_record_length_is_corruption_not_an_allocation() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    batches_in_small_segments(directory.path());
    let path = first_segment(directory.path());
    let mut bytes = fs::read(&path).expect("reads");
    let start = SEGMENT_HEADER_BYTES as usize;
    bytes[start..start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&path, &bytes).expect("damages");
    let error = open(directory.path()).expect_err("refuses");
    assert!(
        matches!(error, StorageError::Corrupt { offset, .. } if offset == SEGMENT_HEADER_BYTES),
        "{error}"
    );
}

#[test]
fn a_flipped_bit_in_the_hard_state_file_refuses_to_open() {
    let original = tempfile::tempdir().expect("a temporary directory");
    three_batches(original.path());
    let hard_state_file = fs::read(original.path().join("hardstate")).expect("reads");
    let directory = tempfile::tempdir().expect("a temporary directory");
    copy_directory(original.path(), directory.path());
    for bit in 0..hard_state_file.len() * 8 {
        let mut bytes = hard_state_file.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        overwrite(&directory.path().join("hardstate"), 0, &bytes);
        let error = open(directory.path()).expect_err("refuses");
        assert!(
            error.to_string().contains("hardstate"),
            "bit {bit}: {error}"
        );
    }
}

#[test]
fn a_leftover_temporary_hard_state_file_is_removed_and_reported() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (_, _) = three_batches(directory.path());
    fs::write(directory.path().join("hardstate.tmp"), b"half").expect("writes");
    let (_, durable, report) = open(directory.path()).expect("recovers");
    assert!(report.removed_temporary_hard_state);
    assert_eq!(durable.hard_state, hard_state(1, 0));
    assert!(!directory.path().join("hardstate.tmp").exists());
}

/// How many log segments the directory holds.
fn count_segments(directory: &Path) -> usize {
    fs::read_dir(directory)
        .expect("lists")
        .filter(|item| {
            item.as_ref()
                .is_ok_and(|item| item.file_name().to_string_lossy().starts_with("wal-"))
        })
        .count()
}

fn small_segments() -> FileStorageOptions {
    FileStorageOptions {
        segment_bytes_max: 300,
        ..unpreallocated()
    }
}

/// Writes 60 entries in 30 synced batches into segments of about 300 bytes.
fn many_segments(directory: &Path) -> Vec<Entry> {
    many_segments_with(directory, small_segments())
}

/// Writes 60 entries in 30 synced batches with these options.
fn many_segments_with(directory: &Path, options: FileStorageOptions) -> Vec<Entry> {
    let (mut storage, _, _) = FileStorage::open(directory, options).expect("opens");
    let mut written = Vec::new();
    for batch in 0..30 {
        let batch_entries = [entry(2 * batch + 1, 1), entry(2 * batch + 2, 1)];
        storage
            .write(Some(hard_state(1, batch)), &batch_entries)
            .expect("writes");
        storage.sync().expect("syncs");
        written.extend(batch_entries);
    }
    written
}

#[test]
fn segments_rotate_and_replay_in_order() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let written = many_segments(directory.path());
    let segments = count_segments(directory.path());
    assert!(segments > 3, "only {segments} segments");
    for sequence in 1..segments as u64 {
        let length = fs::metadata(directory.path().join(segment_file_name(sequence)))
            .expect("stat")
            .len();
        assert!(length <= 300, "segment {sequence} has {length} bytes");
    }

    let (mut storage, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("opens");
    assert_eq!(report.segments_replayed, segments);
    assert_eq!(durable.entries, written);
    assert_eq!(durable.hard_state.commit, LogIndex(29));

    // A truncation recorded in a later segment overrides entries of earlier ones.
    storage
        .write(Some(hard_state(2, 29)), &[entry(40, 2)])
        .expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (_, durable, _) = FileStorage::open(directory.path(), small_segments()).expect("opens");
    assert_eq!(durable.entries.len(), 40);
    assert_eq!(durable.entries[39], entry(40, 2));
    assert_eq!(durable.entries[..39], written[..39]);
    assert_eq!(durable.hard_state, hard_state(2, 29));
}

#[test]
fn damage_at_the_end_of_an_earlier_segment_refuses_to_open() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    many_segments(directory.path());
    let path = directory.path().join(segment_file_name(1));
    let bytes = fs::read(&path).expect("reads");
    fs::write(&path, &bytes[..bytes.len() - 1]).expect("tears");
    let error = FileStorage::open(directory.path(), small_segments()).expect_err("refuses");
    assert!(
        matches!(&error, StorageError::Corrupt { file, .. } if *file == path),
        "{error}"
    );
}

#[test]
fn a_missing_segment_refuses_to_open() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    many_segments(directory.path());
    fs::remove_file(directory.path().join(segment_file_name(2))).expect("removes");
    let error = FileStorage::open(directory.path(), small_segments()).expect_err("refuses");
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn a_last_segment_torn_inside_its_header_gets_a_fresh_header() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let written = many_segments(directory.path());
    let segments = count_segments(directory.path());
    let next = directory
        .path()
        .join(segment_file_name(segments as u64 + 1));
    fs::write(&next, b"CHORUS").expect("a torn header");
    let (mut storage, durable, report) =
        FileStorage::open(directory.path(), small_segments()).expect("recovers");
    assert_eq!(durable.entries, written);
    assert_eq!(report.torn_tail.expect("reported").offset, 0);
    storage.write(None, &[entry(61, 1)]).expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (_, durable, _) = FileStorage::open(directory.path(), small_segments()).expect("reopens");
    assert_eq!(durable.entries.len(), 61);
}

#[test]
fn large_batches_split_into_records_below_the_limit() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let options = FileStorageOptions {
        record_bytes_max: 200,
        ..unpreallocated()
    };
    let (mut storage, _, _) = FileStorage::open(directory.path(), options.clone()).expect("opens");
    let batch: Vec<Entry> = (1..=50).map(|index| entry(index, 1)).collect();
    storage.write(None, &batch).expect("writes");
    storage.sync().expect("syncs");

    let too_large = Entry {
        term: Term(1),
        index: LogIndex(51),
        payload: EntryPayload::Command(Bytes::from(vec![0u8; 300])),
    };
    let error = storage.write(None, &[too_large]).expect_err("refuses");
    assert!(
        matches!(error, StorageError::EntryTooLarge { .. }),
        "{error}"
    );
    drop(storage);
    let (_, durable, _) = FileStorage::open(directory.path(), options).expect("reopens");
    assert_eq!(durable.entries, batch);
}

#[test]
fn an_unknown_format_version_refuses_to_open() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    three_batches(directory.path());
    let path = first_segment(directory.path());
    let mut bytes = fs::read(&path).expect("reads");
    // A later format would carry a valid header checksum.
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[0..20]);
    bytes[20..24].copy_from_slice(&checksum.to_le_bytes());
    fs::write(&path, &bytes).expect("damages");
    let error = open(directory.path()).expect_err("refuses");
    assert!(error.to_string().contains("version 2"), "{error}");
}

#[test]
fn a_repairing_node_keeps_the_mark_until_its_core_clears_it() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (last_record_start, _) = three_batches(directory.path());
    let path = first_segment(directory.path());
    let segment = fs::read(&path).expect("reads");
    overwrite(
        &path,
        last_record_start + 10,
        &[segment[last_record_start as usize + 10] ^ 0x10],
    );
    let (mut storage, durable, _) = open(directory.path()).expect("recovers");
    assert_eq!(durable.hard_state.repairing, Some(Term(1)));
    // The core restarts in term 2, still repairing, and receives the lost entries again.
    let repairing = HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(4),
        repairing: Some(Term(1)),
    };
    storage
        .write(Some(repairing), &[entry(5, 1), entry(6, 1)])
        .expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (mut storage, durable, _) = open(directory.path()).expect("reopens");
    assert_eq!(durable.hard_state, repairing);
    assert_eq!(durable.entries.len(), 6);
    assert_eq!(
        durable.log_end_before_damage,
        Some(position(6, 1)),
        "kept with the mark"
    );
    // An entry of term 2 commits: the core ends the repair, and the hard state says so.
    let repaired = HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(7),
        repairing: None,
    };
    storage
        .write(Some(repaired), &[entry(7, 2)])
        .expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (_, durable, _) = open(directory.path()).expect("reopens");
    assert_eq!(durable.hard_state, repaired);
    assert_eq!(durable.log_end_before_damage, None, "dropped with the mark");
    assert_eq!(
        fs::metadata(directory.path().join("hardstate"))
            .expect("stat")
            .len(),
        41,
        "a healthy node writes the first format again"
    );
}

// Preallocated segments (the default): the tests above place damage by the file's length,
// which preallocation makes the segment's size instead, so these place it by where the
// records ended before the space was allocated.

fn preallocated_segments(segment_bytes_max: u64) -> FileStorageOptions {
    FileStorageOptions {
        segment_bytes_max,
        preallocate: true,
        ..FileStorageOptions::default()
    }
}

#[test]
fn a_preallocated_segment_reopens_at_its_last_record_and_writes_on_from_there() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let options = preallocated_segments(1 << 20);
    let (mut storage, _, _) = FileStorage::open(directory.path(), options.clone()).expect("opens");
    storage
        .write(Some(hard_state(1, 0)), &[entry(1, 1), entry(2, 1)])
        .expect("writes");
    storage.sync().expect("syncs");
    let path = first_segment(directory.path());
    if cfg!(target_os = "linux") {
        assert_eq!(fs::metadata(&path).expect("stat").len(), 1 << 20);
    }
    drop(storage);

    for round in 1..=3u64 {
        let (mut storage, durable, report) =
            FileStorage::open(directory.path(), options.clone()).expect("reopens");
        assert_eq!(report.torn_tail, None, "round {round}");
        assert_eq!(report.synced_damage, None, "round {round}");
        assert_eq!(durable.entries.len() as u64, 2 * round, "round {round}");
        // The next batch goes right after the last record, not after the zeros.
        storage
            .write(None, &[entry(2 * round + 1, 1), entry(2 * round + 2, 1)])
            .expect("writes");
        storage.sync().expect("syncs");
        assert_eq!(
            storage.durable_state().expect("reads").entries.len() as u64,
            2 * round + 2
        );
    }
    // A reopen without preallocation reads the same log and cuts the zeros silently.
    let (_, durable, report) = open(directory.path()).expect("reopens");
    assert_eq!((durable.entries.len(), report.torn_tail), (8, None));
}

#[test]
fn a_torn_record_before_the_preallocated_zeros_is_cut_and_reported() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    // Written without preallocation, so the file's length says where the records end; the
    // reopen below allocates the rest of the segment after them.
    let (_, before) = three_batches(directory.path());
    let path = first_segment(directory.path());
    let records_end = fs::metadata(&path).expect("stat").len();
    let options = preallocated_segments(1 << 20);
    drop(FileStorage::open(directory.path(), options.clone()).expect("opens"));
    if cfg!(target_os = "linux") {
        assert_eq!(fs::metadata(&path).expect("stat").len(), 1 << 20);
    }
    // A crash in the middle of the next write: a record header announcing 200 bytes, and 11
    // of them, with the allocated zeros after.
    let mut torn = Vec::new();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    overwrite(&path, records_end, &torn);

    let (mut storage, durable, report) =
        FileStorage::open(directory.path(), options.clone()).expect("recovers");
    let torn = report.torn_tail.expect("reported");
    assert_eq!(torn.offset, records_end);
    assert_eq!(
        torn.bytes_dropped, 19,
        "the torn bytes, not the zeros after them"
    );
    assert_eq!(durable.entries.len(), 6);
    assert_eq!(durable.entries[..4], before.entries[..]);
    storage
        .write(Some(hard_state(2, 6)), &[entry(7, 2)])
        .expect("writes");
    storage.sync().expect("syncs");
    drop(storage);
    let (_, durable, report) = FileStorage::open(directory.path(), options).expect("reopens");
    assert_eq!(report.torn_tail, None);
    assert_eq!(durable.entries.len(), 7);
    assert_eq!(durable.entries[6], entry(7, 2));
}

#[test]
fn a_preallocated_segment_is_cut_to_its_records_when_the_next_one_starts() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let options = preallocated_segments(300);
    let written = many_segments_with(directory.path(), options.clone());
    let segments = count_segments(directory.path()) as u64;
    assert!(segments > 3, "only {segments} segments");
    for sequence in 1..segments {
        // Allocated, it would be 300 bytes long; its records end before (the next batch
        // would have passed 300).
        let length = fs::metadata(directory.path().join(segment_file_name(sequence)))
            .expect("stat")
            .len();
        assert!(length < 300, "segment {sequence} has {length} bytes");
    }
    // Zeros after the records of a closed segment would be damage, refused here.
    let (_, durable, report) = FileStorage::open(directory.path(), options).expect("reopens");
    assert_eq!(report.torn_tail, None);
    assert_eq!(durable.entries, written);
}
