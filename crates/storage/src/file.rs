//! [`FileStorage`]: the durable storage the runtime uses, in one directory.
//!
//! The directory holds the write-ahead log's segments (format in [`crate::wal`]), the
//! hard-state file (format in `hard_state.rs`: term, vote and commit, replaced atomically) and
//! the `snapshots/` directory (a [`SnapshotStore`], format in [`crate::snapshot`]).
//!
//! Why two places: entries arrive on almost every Ready and are appended, so they go to an
//! append-only log that one `fdatasync` makes durable however many writes it covers (group
//! commit). The commit index also changes on almost every Ready; it rides the same log as a
//! small commit record, costing no extra fsync. Only a term or vote change (an election)
//! replaces the hard-state file, which costs two more fsyncs and a rename, and is rare.
//!
//! Writes are encoded into a buffer in memory and reach the segment file at [`Storage::sync`]
//! (or earlier, without an fsync, once the buffer passes `write_buffer_bytes_max`), so a
//! process that stops without syncing loses them, as a crash would. Within one sync the log is
//! made durable first and the hard-state file replaced after it: that order is what lets a
//! crash keep new entries and lose the hard state, never the reverse (see the crate docs).
//!
//! # Snapshots and compaction
//!
//! The life of a snapshot, as the driver runs it: write it with [`SnapshotStore::create`] (or
//! receive it with [`SnapshotStore::create_partial`]) and finish it, which makes it durable;
//! then [`Storage::compact`]; then [`SnapshotStore::retain`] to delete the snapshots older
//! than the previous one.
//!
//! [`Storage::compact`] appends a *snapshot marker* to the log (index, term, `keep_from`,
//! commit), syncs it, and only then deletes whole segments, oldest first, whose every entry is
//! below `keep_from` — never the current segment. The marker is what lets replay tell a log
//! whose head a compaction deleted from a log that lost segments: replay accepts a first
//! segment whose sequence number is not 1 and whose first entry is above 1, and at the end
//! checks that a snapshot covers the entries before it; otherwise it refuses to open
//! ([`StorageError::Corrupt`]). The marker is also the log's memory of the snapshot: the
//! snapshot file alone could not say where the log was cut, and a marker in the current
//! segment survives every later compaction (each writes a newer one first). A crash in the
//! middle of the deletions leaves a contiguous suffix of segments, which replays the same.
//!
//! # Restart
//!
//! [`FileStorage::open`] replays the log, then picks the newest snapshot file that verifies
//! whole (every block checksum and the trailer are read; a snapshot is read once more when the
//! state machine restores it, a price paid for never starting on damaged state):
//! - If it is at or after the last marker (usually it *is* the marker's), the log is returned
//!   from the marker's `keep_from`. A snapshot newer than the marker (a crash came between
//!   finishing it and compacting) is *adopted*: open writes and syncs its marker first, and the
//!   log is discarded if it does not go on from it (Raft §7).
//! - Newer snapshots that fail verification are reported, by file and offset, in
//!   [`RecoveryReport::damaged_snapshots`], and the restart **falls back** to the older one
//!   only if the log still holds every entry after it: the physical log (what the remaining
//!   segments hold, which can reach below the marker's `keep_from`) must start at or below
//!   `older.index + 1`. Otherwise open refuses with [`StorageError::Corrupt`] naming the
//!   damaged snapshot: starting would silently lose committed state.
//!
//! What the fallback can cover depends on the `keep_from` the driver passes: segments below
//! `keep_from` of the **newest** snapshot are deleted, so with `keep_from = newest.index + 1`
//! a damaged newest snapshot is fatal (the node must be restored from a peer). To keep the
//! fallback possible, pass `keep_from` at or below the **previous** snapshot's index plus one
//! (compaction lags one snapshot behind, as etcd keeps its log `SnapshotCatchUpEntries`
//! behind): disk use is then bounded by two snapshots plus the log written between them.
//!
//! Not guarded: two processes opening one directory at once. The runtime owns its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chorus_core::LogIndex;
use chorus_raft::{DurableState, Entry, HardState, LogPosition, SnapshotMeta};

use crate::janitor::Janitor;
use crate::replay::{Record, Replay, WriteTracker};
use crate::snapshot::{DamagedSnapshot, SnapshotStore};
use crate::wal::{self, SEGMENT_HEADER_BYTES};
use crate::{Storage, StorageError, hard_state};

/// The name of the snapshot directory inside the storage directory.
pub const SNAPSHOT_DIRECTORY_NAME: &str = "snapshots";

/// Limits of a [`FileStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStorageOptions {
    /// A segment that reaches this size is closed and the next one started (a segment always
    /// takes at least one record, so a single record may exceed it).
    pub segment_bytes_max: u64,
    /// The largest record (`kind` and `payload`) written or accepted on replay. A larger
    /// length read from disk is corruption, so that a damaged length never becomes a huge
    /// allocation. Writes split their entries into records below it.
    pub record_bytes_max: u32,
    /// Writes past this many buffered bytes go to the segment file before the next sync
    /// (without an fsync), bounding the memory held between syncs.
    pub write_buffer_bytes_max: usize,
    /// What open does with damage in synced records of the last segment: cut them and mark
    /// the hard state *repairing*, for a Raft node that repairs its log from its peers
    /// (`true`, the default), or refuse with [`StorageError::Corrupt`] and change nothing,
    /// for a user of the log that cannot repair it.
    pub repair_synced_damage: bool,
    /// Whether each segment's space, up to `segment_bytes_max`, is allocated when the
    /// segment is started (`fallocate`, Linux only; elsewhere, or on a file system that cannot,
    /// segments grow as they are written). An `fdatasync` after writing into allocated space
    /// need not commit a new file size to the file system's journal, which made it about a
    /// third cheaper on the ext4 disk of docs/benchmarks, and cheaper still when several nodes
    /// sync at once. The unwritten rest reads as zeros, which replay takes as the clean end
    /// of the log (see [`crate::wal`]); a closed segment is cut to its records first.
    pub preallocate: bool,
}

impl Default for FileStorageOptions {
    fn default() -> FileStorageOptions {
        FileStorageOptions {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 64 << 20,
            write_buffer_bytes_max: 4 << 20,
            repair_synced_damage: true,
            preallocate: true,
        }
    }
}

/// What [`FileStorage::open`] repaired; the caller logs it as a warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// How many log segments were replayed.
    pub segments_replayed: usize,
    /// The torn tail cut from the last segment, if a crash left one.
    pub torn_tail: Option<TornTail>,
    /// Damage found in synced records of the last segment, if any: they were cut, and the
    /// node repairs them from its peers ([`chorus_raft::HardState::repairing`]). The caller
    /// logs it as an error.
    pub synced_damage: Option<SyncedDamage>,
    /// Whether a half-written `hardstate.tmp` from an interrupted hard-state replacement was
    /// removed (the replacement never took effect).
    pub removed_temporary_hard_state: bool,
    /// How many temporary snapshot files (snapshots a crash interrupted) were removed.
    pub removed_temporary_snapshots: usize,
    /// The snapshot the restart resumes from, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Snapshots newer than [`RecoveryReport::snapshot`] that failed verification, newest
    /// first: the restart fell back past them. Each names its file and the offset of the
    /// damage; the caller logs them as errors.
    pub damaged_snapshots: Vec<DamagedSnapshot>,
    /// Whether open wrote the marker of a snapshot newer than the log's last one (a crash came
    /// between finishing a snapshot and compacting to it).
    pub adopted_snapshot: bool,
}

/// The end of the last segment, cut off because a crash left it half-written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the file was cut: the end of its last good record (or of its header).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
}

/// Records of the last segment that a disk fault damaged after they were synced, cut at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedDamage {
    /// The segment.
    pub file: PathBuf,
    /// Where the bytes cut off (from `offset` to the end) were kept, beside the segment:
    /// `<segment>.damaged-<offset>`, for an operator; nothing reads it back.
    pub saved: PathBuf,
    /// Where the damage starts; the segment was cut here.
    pub offset: u64,
    /// The sync marker after the damage that proves it was in synced bytes.
    pub marker: u64,
    /// How many bytes were dropped (the damaged record and everything after it).
    pub bytes_dropped: u64,
    /// What is wrong at `offset`.
    pub reason: String,
    /// The term the lost records could have been acknowledged in: the node starts no
    /// election, and votes only as its log before the damage would have, until it is
    /// repaired (see [`chorus_raft::HardState::repairing`]).
    pub repairing: chorus_core::Term,
}

/// Durable storage in a directory: a segmented write-ahead log and a hard-state file.
///
/// See the crate docs for the crash semantics and [`crate::wal`] for the format.
#[derive(Debug)]
pub struct FileStorage {
    directory: PathBuf,
    options: FileStorageOptions,
    /// The segment being appended to, opened for appending.
    segment: File,
    segment_path: PathBuf,
    segment_sequence: u64,
    /// The segment file's length: header plus the records written to it.
    segment_bytes: u64,
    /// Encoded records not yet written to the segment file.
    pending: Vec<u8>,
    /// Where each record in `pending` ends, so rotation happens at record boundaries.
    pending_record_ends: Vec<usize>,
    /// Bytes were written to the segment file since its last fsync.
    segment_dirty: bool,
    /// A segment was created since the directory's last fsync.
    directory_dirty: bool,
    /// The hard state to replace the hard-state file with at the next sync.
    pending_hard_state: Option<HardState>,
    tracker: WriteTracker,
    /// Every segment on disk, oldest first; the last is the current one.
    segments: Vec<SegmentRange>,
    /// The entries range of each record in `pending`, parallel to `pending_record_ends`.
    pending_ranges: Vec<Option<(LogIndex, LogIndex)>>,
    snapshots: SnapshotStore,
    /// An I/O error happened; the files' state is unknown until a reopen.
    poisoned: bool,
    /// While the hard state says repairing: where the log ended before the damage, if
    /// known, which every replacement of the hard-state file keeps.
    log_end_before_damage: Option<LogPosition>,
    /// Removes the segments a compaction covers, off the driver's thread, if set.
    janitor: Option<Janitor>,
}

/// Which entries one segment's records hold: what compaction needs to know to delete it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentRange {
    sequence: u64,
    /// The lowest and highest index of the entries written in it, if any.
    entries: Option<(LogIndex, LogIndex)>,
}

impl SegmentRange {
    fn note(&mut self, range: Option<(LogIndex, LogIndex)>) {
        if let Some((first, last)) = range {
            self.entries = Some(match self.entries {
                Some((low, high)) => (low.min(first), high.max(last)),
                None => (first, last),
            });
        }
    }
}

/// The entries range of a record.
fn record_range(record: &Record) -> Option<(LogIndex, LogIndex)> {
    match record {
        Record::Entries { from, entries } => entries.last().map(|last| (*from, last.index)),
        Record::Commit(_) | Record::Snapshot { .. } | Record::Synced { .. } => None,
    }
}

/// What reading the directory found.
struct Recovered {
    replay: Replay,
    /// The last segment's sequence number and how far its good records reach, if any.
    last_segment: Option<(u64, wal::SegmentScan)>,
    segments: Vec<SegmentRange>,
}

impl FileStorage {
    /// Opens (or creates) the storage in `directory`, recovers it, and returns it with what a
    /// restart must give [`chorus_raft::RawNode::restart`] and a report of what recovery cut.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] if any file is damaged in a way that could lose committed
    /// entries (see [`crate::wal`] for what is a torn tail and what is corruption), or
    /// [`StorageError::Io`] if the directory or a file cannot be read or written.
    ///
    /// # Panics
    /// If `options.record_bytes_max` is zero.
    pub fn open(
        directory: impl AsRef<Path>,
        options: FileStorageOptions,
    ) -> Result<(FileStorage, DurableState, RecoveryReport), StorageError> {
        let directory = directory.as_ref().to_path_buf();
        assert!(
            options.record_bytes_max > 0,
            "record_bytes_max must be positive"
        );
        fs::create_dir_all(&directory).map_err(StorageError::io("create", &directory))?;

        let mut report = RecoveryReport::default();
        let temporary = directory.join(hard_state::TEMPORARY_FILE_NAME);
        match fs::remove_file(&temporary) {
            Ok(()) => report.removed_temporary_hard_state = true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io("remove", &temporary)(error)),
        }

        let snapshots = SnapshotStore::new(directory.join(SNAPSHOT_DIRECTORY_NAME))?;
        report.removed_temporary_snapshots = snapshots.remove_temporary_files()?;

        let mut recovered = recover(&directory, &options)?;
        let mut repairing = None;
        if let Some((sequence, scan)) = &recovered.last_segment {
            if let Some(damage) = &scan.synced_damage {
                if !options.repair_synced_damage {
                    return Err(StorageError::corrupt(
                        directory.join(wal::segment_file_name(*sequence)),
                        scan.good_end,
                        format!(
                            "{}, in synced data: the sync marker at byte {} proves it was \
                             durable",
                            damage.reason, damage.marker
                        ),
                    ));
                }
                // Before anything reads the commit index back (see `start_repair`); made
                // durable below, before the cut.
                repairing = Some(recovered.replay.start_repair(damage.log_end));
            }
        }
        report.segments_replayed = recovered.segments.len();
        let (chosen, damaged) = snapshots.latest_valid()?;
        // Check that the chosen snapshot and the log hold everything before writing anything.
        recovered
            .replay
            .durable_state(chosen)
            .map_err(|reason| refusal(&directory, &recovered, &damaged, reason))?;
        report.snapshot = chosen;
        report.damaged_snapshots = damaged;
        let adopted = recovered.replay.adopt(chosen);
        let (segment, segment_path, segment_sequence, segment_bytes) = match recovered.last_segment
        {
            Some((sequence, scan)) => {
                let path = directory.join(wal::segment_file_name(sequence));
                let mut segment_bytes = scan.good_end;
                // Preallocated zeros after the records are not dropped data.
                let dropped_end = if options.preallocate {
                    scan.data_end
                } else {
                    scan.length
                };
                if let (Some(damage), Some(hard_state)) = (&scan.synced_damage, repairing) {
                    // Keep the bytes to be cut aside, for an operator (a cluster that cannot
                    // repair the node refuses to start it after this), then remember the
                    // repair before cutting: a crash in between finds the same damage again,
                    // and a node must never forget that it lost records.
                    let saved = save_damaged_tail(&directory, &path, scan.good_end, dropped_end)?;
                    hard_state::replace(
                        &directory,
                        &hard_state,
                        recovered.replay.log_end_before_damage(),
                    )?;
                    report.synced_damage = Some(SyncedDamage {
                        saved,
                        file: path.clone(),
                        offset: scan.good_end,
                        marker: damage.marker,
                        bytes_dropped: dropped_end - scan.good_end,
                        reason: damage.reason.clone(),
                        repairing: hard_state.repairing.unwrap_or_default(),
                    });
                }
                if scan.is_torn() && !(scan.zero_tail && options.preallocate) {
                    cut_torn_tail(&path, sequence, scan.good_end)?;
                    if scan.synced_damage.is_none() && !scan.zero_tail {
                        report.torn_tail = Some(TornTail {
                            file: path.clone(),
                            offset: scan.good_end,
                            bytes_dropped: dropped_end - scan.good_end,
                        });
                    }
                    segment_bytes = scan.good_end.max(SEGMENT_HEADER_BYTES);
                }
                let mut segment = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(StorageError::io("open", &path))?;
                segment
                    .seek(SeekFrom::Start(segment_bytes))
                    .map_err(StorageError::io("seek", &path))?;
                if options.preallocate {
                    preallocate(&segment, &path, options.segment_bytes_max)?;
                }
                // A process killed after a write and before its fsync left that write in the
                // page cache, and replay just read it: make it durable (with the names of the
                // segments) before this node can acknowledge any of it, or a later power cut
                // could lose what it acknowledged.
                segment
                    .sync_data()
                    .map_err(StorageError::io("fsync", &path))?;
                hard_state::sync_directory(&directory)?;
                (segment, path, sequence, segment_bytes)
            }
            None => {
                let (segment, path) = create_segment(&directory, 1, &options)?;
                segment
                    .sync_all()
                    .map_err(StorageError::io("fsync", &path))?;
                hard_state::sync_directory(&directory)?;
                recovered.segments.push(SegmentRange {
                    sequence: 1,
                    entries: None,
                });
                (segment, path, 1, SEGMENT_HEADER_BYTES)
            }
        };

        let mut storage = FileStorage {
            directory,
            options,
            segment,
            segment_path,
            segment_sequence,
            segment_bytes,
            pending: Vec::new(),
            pending_record_ends: Vec::new(),
            segment_dirty: false,
            directory_dirty: false,
            pending_hard_state: None,
            tracker: WriteTracker::default(),
            segments: recovered.segments,
            pending_ranges: Vec::new(),
            snapshots,
            poisoned: false,
            log_end_before_damage: recovered.replay.log_end_before_damage(),
            janitor: None,
        };
        if let Some(marker) = adopted {
            recovered
                .replay
                .apply(marker.clone())
                .map_err(StorageError::InvalidWrite)?;
            storage.push_record(&marker);
            storage.sync_unpoisoned()?;
            report.adopted_snapshot = true;
        }
        let durable = recovered
            .replay
            .durable_state(chosen)
            .map_err(StorageError::InvalidWrite)?;
        storage.tracker = WriteTracker::resume(&durable);
        Ok((storage, durable, report))
    }

    /// The directory the storage lives in.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The segment being appended to.
    #[must_use]
    pub fn current_segment(&self) -> &Path {
        &self.segment_path
    }

    /// The snapshot files: where the driver writes, receives, reads and retains snapshots.
    /// Clone it to use it from another thread.
    #[must_use]
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// From now on, the segments a compaction covers are removed by `janitor`, off the
    /// caller's thread, once the marker that covers them is durable.
    pub fn defer_deletions(&mut self, janitor: Janitor) {
        self.janitor = Some(janitor);
    }

    /// The sequence numbers of the segments on disk, oldest first.
    #[must_use]
    pub fn segment_sequences(&self) -> Vec<u64> {
        self.segments
            .iter()
            .map(|segment| segment.sequence)
            .collect()
    }

    /// Deletes the oldest segments whose every entry is below `keep_from`, never the current
    /// one, oldest first, then syncs the directory.
    fn delete_segments_below(&mut self, keep_from: LogIndex) -> Result<(), StorageError> {
        let mut covered = 0;
        while covered + 1 < self.segments.len() {
            let segment = self.segments[covered];
            if segment.entries.is_some_and(|(_, last)| last >= keep_from) {
                break;
            }
            covered += 1;
        }
        let files: Vec<PathBuf> = self
            .segments
            .drain(..covered)
            .map(|segment| {
                self.directory
                    .join(wal::segment_file_name(segment.sequence))
            })
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        if let Some(janitor) = &self.janitor {
            // The marker that covers them is durable: a restart before the janitor gets to
            // them replays them as it would after a crash just before an inline deletion.
            janitor.delete(&self.directory, files);
            return Ok(());
        }
        for path in &files {
            fs::remove_file(path).map_err(StorageError::io("remove", path))?;
        }
        hard_state::sync_directory(&self.directory)
    }

    /// Encodes the entries as records no larger than `record_bytes_max`. The first record
    /// truncates the log from the first entry; the others continue it.
    fn encode_entries(&mut self, from: LogIndex, entries: &[Entry]) {
        debug_assert_eq!(entries.first().map(|entry| entry.index), Some(from));
        let limit = u64::from(self.options.record_bytes_max);
        let mut start = 0;
        while start < entries.len() {
            let mut bytes = wal::ENTRIES_RECORD_OVERHEAD_BYTES;
            let mut end = start;
            while end < entries.len() {
                let entry_bytes = wal::entry_bytes_bound(&entries[end]);
                if end > start && bytes + entry_bytes > limit {
                    break;
                }
                bytes += entry_bytes;
                end += 1;
            }
            let record_start = self.pending.len();
            wal::encode_entries_record(
                entries[start].index,
                &entries[start..end],
                &mut self.pending,
            );
            self.finish_pending_record(
                record_start,
                Some((entries[start].index, entries[end - 1].index)),
            );
            start = end;
        }
    }

    fn push_record(&mut self, record: &Record) {
        let start = self.pending.len();
        wal::encode_record(record, &mut self.pending);
        self.finish_pending_record(start, record_range(record));
    }

    /// Checks the size of the record just encoded at `start` and remembers where it ends and
    /// which entries it holds.
    fn finish_pending_record(&mut self, start: usize, range: Option<(LogIndex, LogIndex)>) {
        let length = self.pending.len() - start - wal::RECORD_HEADER_BYTES as usize;
        assert!(
            length <= self.options.record_bytes_max as usize,
            "invariant: records are split below record_bytes_max"
        );
        self.pending_record_ends.push(self.pending.len());
        self.pending_ranges.push(range);
    }

    /// Writes the buffered records to the segment files (no fsync), starting the next segment
    /// wherever the current one would pass `segment_bytes_max`.
    fn flush_pending(&mut self) -> Result<(), StorageError> {
        let ends = std::mem::take(&mut self.pending_record_ends);
        let ranges = std::mem::take(&mut self.pending_ranges);
        let mut run_start = 0;
        let mut record_start = 0;
        for (end, range) in ends.into_iter().zip(ranges) {
            let run_bytes = (record_start - run_start) as u64;
            let segment_has_records = self.segment_bytes + run_bytes > SEGMENT_HEADER_BYTES;
            // Room is kept for the sync marker that follows the batch.
            let after = self.segment_bytes + (end - run_start) as u64 + wal::SYNC_MARKER_BYTES;
            if segment_has_records && after > self.options.segment_bytes_max {
                self.write_to_segment(run_start, record_start)?;
                self.rotate()?;
                run_start = record_start;
            }
            record_start = end;
            self.segments
                .last_mut()
                .expect("invariant: the current segment is listed")
                .note(range);
        }
        self.write_to_segment(run_start, record_start)?;
        self.pending.clear();
        Ok(())
    }

    fn write_to_segment(&mut self, start: usize, end: usize) -> Result<(), StorageError> {
        if start == end {
            return Ok(());
        }
        self.segment
            .write_all(&self.pending[start..end])
            .map_err(StorageError::io("write", &self.segment_path))?;
        self.segment_bytes += (end - start) as u64;
        self.segment_dirty = true;
        Ok(())
    }

    /// Closes the current segment durably and starts the next one. The old one is synced
    /// first: replay accepts a torn tail only in the last segment, so every earlier segment
    /// must be whole before anything lands in a later one.
    fn rotate(&mut self) -> Result<(), StorageError> {
        if self.options.preallocate {
            // A closed segment ends with its last record: replay takes zeros as the end of
            // the log only in the last segment.
            self.segment
                .set_len(self.segment_bytes)
                .map_err(StorageError::io("truncate", &self.segment_path))?;
        }
        self.segment
            .sync_data()
            .map_err(StorageError::io("fsync", &self.segment_path))?;
        let sequence = self.segment_sequence + 1;
        let (segment, path) = create_segment(&self.directory, sequence, &self.options)?;
        self.segment = segment;
        self.segment_path = path;
        self.segment_sequence = sequence;
        self.segment_bytes = SEGMENT_HEADER_BYTES;
        self.segment_dirty = true;
        self.directory_dirty = true;
        self.segments.push(SegmentRange {
            sequence,
            entries: None,
        });
        Ok(())
    }

    fn sync_unpoisoned(&mut self) -> Result<(), StorageError> {
        self.flush_pending()?;
        if self.segment_dirty {
            self.segment
                .sync_data()
                .map_err(StorageError::io("fsync", &self.segment_path))?;
            self.segment_dirty = false;
            self.write_sync_marker()?;
        }
        if self.directory_dirty {
            hard_state::sync_directory(&self.directory)?;
            self.directory_dirty = false;
        }
        // Only now that the log is durable may the hard state that follows it be replaced.
        if let Some(hard_state) = self.pending_hard_state.take() {
            if hard_state.repairing.is_none() {
                self.log_end_before_damage = None;
            }
            hard_state::replace(&self.directory, &hard_state, self.log_end_before_damage)?;
        }
        Ok(())
    }

    /// Appends a sync marker to the current segment, right after an fsync made everything
    /// before it durable (see [`crate::wal`]). Not synced itself: it reaches the disk with the
    /// next fsync, or when the kernel writes it back.
    fn write_sync_marker(&mut self) -> Result<(), StorageError> {
        let mut marker = Vec::with_capacity(wal::SYNC_MARKER_BYTES as usize);
        wal::encode_record(
            &Record::Synced {
                sequence: self.segment_sequence,
                offset: self.segment_bytes,
                log_end: Some(self.tracker.log_end()),
            },
            &mut marker,
        );
        self.segment
            .write_all(&marker)
            .map_err(StorageError::io("write", &self.segment_path))?;
        self.segment_bytes += marker.len() as u64;
        Ok(())
    }

    /// Marks the storage poisoned if `result` is an error.
    fn poison_on_error<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

impl Storage for FileStorage {
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        // Check sizes before the tracker records anything, so a refused write changes nothing.
        let limit = u64::from(self.options.record_bytes_max);
        for entry in entries {
            let bytes = wal::ENTRIES_RECORD_OVERHEAD_BYTES + wal::entry_bytes_bound(entry);
            if bytes > limit {
                return Err(StorageError::EntryTooLarge {
                    index: entry.index,
                    bytes,
                    max: limit,
                });
            }
        }
        let planned = self
            .tracker
            .plan(hard_state, entries)
            .map_err(StorageError::InvalidWrite)?;
        for record in planned.records {
            match record {
                Record::Entries { from, entries } => self.encode_entries(from, &entries),
                Record::Commit(_) | Record::Snapshot { .. } | Record::Synced { .. } => {
                    self.push_record(&record);
                }
            }
        }
        if let Some(hard_state) = planned.hard_state {
            self.pending_hard_state = Some(hard_state);
        }
        if self.pending.len() >= self.options.write_buffer_bytes_max {
            let result = self.flush_pending();
            self.poison_on_error(result)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let result = self.sync_unpoisoned();
        self.poison_on_error(result)
    }

    /// Reads the directory back (without repairing anything), so it sees exactly what is in
    /// the files: everything synced, plus buffered writes that already went to a segment.
    fn durable_state(&self) -> Result<DurableState, StorageError> {
        let recovered = recover(&self.directory, &self.options)?;
        let (chosen, damaged) = self.snapshots.latest_valid()?;
        recovered
            .replay
            .durable_state(chosen)
            .map_err(|reason| refusal(&self.directory, &recovered, &damaged, reason))
    }

    fn compact(&mut self, snapshot: SnapshotMeta, keep_from: LogIndex) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let path = self.snapshots.path(snapshot);
        if !path.is_file() {
            return Err(StorageError::InvalidWrite(format!(
                "no durable snapshot file {} to compact to",
                path.display()
            )));
        }
        let marker = self
            .tracker
            .plan_compact(snapshot, keep_from)
            .map_err(StorageError::InvalidWrite)?;
        self.push_record(&marker);
        // The marker must be durable before any segment it covers is deleted.
        let result = self
            .sync_unpoisoned()
            .and_then(|()| self.delete_segments_below(keep_from));
        self.poison_on_error(result)
    }
}

/// The error that refuses a restart whose snapshot and log do not hold every committed entry:
/// it names the newest damaged snapshot if there is one (the cause), or the first segment.
fn refusal(
    directory: &Path,
    recovered: &Recovered,
    damaged: &[DamagedSnapshot],
    reason: String,
) -> StorageError {
    match damaged.first() {
        Some(newest) => StorageError::corrupt(
            &newest.file,
            newest.offset,
            format!(
                "{}; the restart cannot fall back to an older snapshot: {reason}",
                newest.reason
            ),
        ),
        None => {
            let first = recovered
                .segments
                .first()
                .map_or(1, |segment| segment.sequence);
            StorageError::corrupt(
                directory.join(wal::segment_file_name(first)),
                SEGMENT_HEADER_BYTES,
                reason,
            )
        }
    }
}

/// Reads the hard-state file and replays every segment, changing nothing on disk.
fn recover(directory: &Path, options: &FileStorageOptions) -> Result<Recovered, StorageError> {
    let (hard_state, log_end_before_damage) = hard_state::read(directory)?;
    let segments = list_segments(directory)?;
    let mut replay = Replay::new(hard_state, log_end_before_damage);
    let mut last_segment = None;
    let mut ranges = Vec::with_capacity(segments.len());
    for (position, &sequence) in segments.iter().enumerate() {
        let path = directory.join(wal::segment_file_name(sequence));
        let is_last = position + 1 == segments.len();
        let mut range = SegmentRange {
            sequence,
            entries: None,
        };
        let scan = wal::scan_segment(
            &path,
            sequence,
            is_last,
            options.record_bytes_max,
            |record, _offset| {
                range.note(record_range(&record));
                replay.apply(record)
            },
        )?;
        ranges.push(range);
        last_segment = Some((sequence, scan));
    }
    Ok(Recovered {
        replay,
        last_segment,
        segments: ranges,
    })
}

/// The sequence numbers of the directory's segments, in order; they must be contiguous.
fn list_segments(directory: &Path) -> Result<Vec<u64>, StorageError> {
    let mut sequences = Vec::new();
    let listing = fs::read_dir(directory).map_err(StorageError::io("list", directory))?;
    for item in listing {
        let item = item.map_err(StorageError::io("list", directory))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(sequence) = wal::parse_segment_file_name(name) {
            sequences.push(sequence);
        } else if name.starts_with("wal-") && name.ends_with(".log") {
            return Err(StorageError::corrupt(
                item.path(),
                0,
                "a log segment whose name is not wal-<20 digits>.log",
            ));
        }
    }
    sequences.sort_unstable();
    for pair in sequences.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(StorageError::corrupt(
                directory.join(wal::segment_file_name(pair[0] + 1)),
                0,
                format!(
                    "log segment {} is missing between segments {} and {}",
                    pair[0] + 1,
                    pair[0],
                    pair[1]
                ),
            ));
        }
    }
    Ok(sequences)
}

/// Creates a segment holding only its header (not yet synced), its space allocated if the
/// options say so; the file's position is right after the header.
fn create_segment(
    directory: &Path,
    sequence: u64,
    options: &FileStorageOptions,
) -> Result<(File, PathBuf), StorageError> {
    let path = directory.join(wal::segment_file_name(sequence));
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(StorageError::io("create", &path))?;
    file.write_all(&wal::encode_segment_header(sequence))
        .map_err(StorageError::io("write", &path))?;
    if options.preallocate {
        preallocate(&file, &path, options.segment_bytes_max)?;
    }
    Ok((file, path))
}

/// Allocates the segment's space up to `bytes` (the file's length grows to it, the new bytes
/// reading as zeros; its position does not move). Does nothing where the platform or the
/// file system cannot, or where the file is already that long; a failed allocation is
/// logged, and the segment grows as it is written.
fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<(), StorageError> {
    let length = file
        .metadata()
        .map_err(StorageError::io("stat", path))?
        .len();
    if length >= bytes {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use nix::errno::Errno;
        use nix::fcntl::{FallocateFlags, fallocate};
        let (Ok(offset), Ok(extra)) = (i64::try_from(length), i64::try_from(bytes - length)) else {
            return Ok(());
        };
        match fallocate(file, FallocateFlags::empty(), offset, extra) {
            Ok(()) | Err(Errno::EOPNOTSUPP) => {}
            // A full disk, or a file system that cannot: the segment grows as it is written
            // instead, as it would without preallocation. Writes themselves still fail on a
            // full disk; opening must not, or a node could not start to compact.
            Err(error) => {
                tracing::warn!(%error, file = %path.display(), "cannot preallocate a log segment; it grows as it is written");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    Ok(())
}

/// Copies the bytes of `segment` from `from` to `to` (where its bytes that are not zero end)
/// into `<segment>.damaged-<from>` in `directory`, durably; returns that file.
fn save_damaged_tail(
    directory: &Path,
    segment: &Path,
    from: u64,
    to: u64,
) -> Result<PathBuf, StorageError> {
    use std::io::Read;
    let name = segment.file_name().map_or_else(
        || "segment".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let saved = directory.join(format!("{name}.damaged-{from}"));
    let mut source = File::open(segment).map_err(StorageError::io("open", segment))?;
    source
        .seek(SeekFrom::Start(from))
        .map_err(StorageError::io("seek", segment))?;
    let mut target = File::create(&saved).map_err(StorageError::io("create", &saved))?;
    std::io::copy(
        &mut (&mut source).take(to.saturating_sub(from)),
        &mut target,
    )
    .map_err(StorageError::io("copy", &saved))?;
    target
        .sync_all()
        .map_err(StorageError::io("fsync", &saved))?;
    hard_state::sync_directory(directory)?;
    Ok(saved)
}

/// Cuts the last segment at `good_end` durably; a segment torn inside its header gets a fresh
/// header.
fn cut_torn_tail(path: &Path, sequence: u64, good_end: u64) -> Result<(), StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StorageError::io("open", path))?;
    if good_end < SEGMENT_HEADER_BYTES {
        file.set_len(0)
            .map_err(StorageError::io("truncate", path))?;
        file.write_all(&wal::encode_segment_header(sequence))
            .map_err(StorageError::io("write", path))?;
    } else {
        file.set_len(good_end)
            .map_err(StorageError::io("truncate", path))?;
    }
    file.sync_all().map_err(StorageError::io("fsync", path))
}
