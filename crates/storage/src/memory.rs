//! [`MemStorage`]: the in-memory twin of [`crate::FileStorage`], for the simulator and tests.
//!
//! A real write-ahead log acknowledges a write when it reaches the page cache and makes it
//! durable only at fsync. A crash keeps every synced record and some prefix of the unsynced
//! ones (recovery cuts a torn tail at a record boundary). `MemStorage` models exactly that,
//! with the same records as the file implementation: writes queue log and commit records and
//! at most one pending hard-state replacement, which comes last (the file implementation
//! replaces the hard-state file only after the log is durable). [`MemStorage::crash`] keeps a
//! random prefix of `[records…, hard state]` — often none of it.
//!
//! Snapshots are held as the bytes of a snapshot file (the format of [`crate::snapshot`]),
//! so the simulator ships and verifies exactly what the runtime does. A snapshot is durable
//! once [`MemStorage::finish_snapshot`] or [`MemStorage::install_snapshot`] returns; one being
//! written lives in the caller's [`SnapshotEncoder`] and a crash simply loses it, as a crash
//! before the rename leaves only a temporary file that the next open removes.
//! [`Storage::compact`] queues a snapshot marker, syncs, and drops the entries below
//! `keep_from` from memory, as the file storage deletes segments. A restart
//! ([`MemStorage::crash`]) adopts a snapshot newer than the last marker, as
//! [`crate::FileStorage::open`] does.
//!
//! A disk can also damage records it had synced (a bit flip, a lost write). A storage made
//! with [`MemStorage::with_damage_window`] keeps the last records made durable apart, as the
//! file storage's last segment, and [`MemStorage::damage_synced`] damages one of them after
//! a crash: as [`crate::FileStorage::open`] does when a sync marker proves the damage was in
//! synced data, the log is cut at the damaged record and the hard state marks the node as
//! repairing ([`HardState::repairing`]).
//!
//! It is pure: no files, no clocks, no global randomness; the crash draws from the caller's
//! seeded [`Prng`].

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;

use bytes::Bytes;
use chorus_core::{LogIndex, Prng};
use chorus_raft::{DurableState, Entry, HardState, LogPosition, SnapshotMeta};

use crate::replay::{Record, Replay, WriteTracker};
use crate::snapshot::{self, SnapshotEncoder, SnapshotReader};
use crate::{Storage, StorageError};

/// A node's disk, in memory.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    durable: Replay,
    /// With a damage window: the durable state before `recent`, what damage to the oldest
    /// record of the window falls back to.
    settled: Option<Replay>,
    /// The last records made durable, oldest first, at most `window` of them: the part of the
    /// log that [`MemStorage::damage_synced`] may damage.
    recent: VecDeque<Record>,
    window: usize,
    unsynced: Vec<Record>,
    unsynced_hard_state: Option<HardState>,
    tracker: WriteTracker,
    /// The finished snapshots: the bytes of their files.
    snapshots: BTreeMap<SnapshotMeta, Bytes>,
}

impl MemStorage {
    /// An empty disk.
    #[must_use]
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// An empty disk whose last `window` durable records (at least 1) may be damaged by
    /// [`MemStorage::damage_synced`]; keeping them apart costs a copy of each record.
    #[must_use]
    pub fn with_damage_window(window: usize) -> MemStorage {
        MemStorage {
            settled: Some(Replay::default()),
            window: window.max(1),
            ..MemStorage::default()
        }
    }

    /// After a crash, the disk damages one synced record of its damage window (drawn from
    /// `prng`), as a bit flip in the file storage's last segment would: the log is cut before
    /// it, and the hard state marks the node as repairing. Returns how many records were lost,
    /// or `None` if nothing was damaged (no window, nothing in it, or a cut that no snapshot
    /// could cover, which the file storage would refuse to open).
    pub fn damage_synced(&mut self, prng: &mut Prng) -> Option<usize> {
        let settled = self.settled.as_ref()?;
        if self.recent.is_empty() || self.unsynced_records() > 0 {
            return None;
        }
        let newest = self.newest_snapshot();
        let hard_state = self.durable.hard_state();
        // Where the log ended before the damage: the file storage reads it from the sync
        // markers after the damage, which say where the log ended when each was written.
        let log_end = newest
            .map(|snapshot| LogPosition {
                term: snapshot.term,
                index: snapshot.index,
            })
            .max(Some(self.durable.log_end()));
        for kept in prng.index(self.recent.len())..self.recent.len() {
            let mut candidate = settled.clone();
            candidate.replace_hard_state(hard_state);
            candidate.set_log_end_before_damage(self.durable.log_end_before_damage());
            for record in self.recent.iter().take(kept) {
                if candidate.apply(record.clone()).is_err() {
                    return None;
                }
                candidate.trim();
            }
            candidate.start_repair(log_end);
            let adopted = candidate.adopt(newest);
            if let Some(marker) = adopted.clone() {
                if candidate.apply(marker).is_err() {
                    continue;
                }
                candidate.trim();
            }
            if candidate.durable_state(newest).is_err() {
                continue;
            }
            let lost = self.recent.len() - kept;
            self.recent.truncate(kept);
            // The marker a restart writes is a record of the window like any other.
            self.recent.extend(adopted);
            self.durable = candidate;
            self.tracker = WriteTracker::resume(&self.durable());
            return Some(lost);
        }
        None
    }

    /// The durable hard state (what a restart would read), without building the whole
    /// durable state.
    #[must_use]
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state()
    }

    /// Whether anything waits for a sync.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.unsynced_records() > 0
    }

    /// How many records wait for a sync, the pending hard-state replacement included: the
    /// length of the sequence a crash keeps a prefix of.
    #[must_use]
    pub fn unsynced_records(&self) -> usize {
        self.unsynced.len() + usize::from(self.unsynced_hard_state.is_some())
    }

    /// The node lost power: a random prefix of the unsynced records survives (with
    /// probability one half, none of them does). Returns how many records were lost.
    pub fn crash(&mut self, prng: &mut Prng) -> usize {
        let total = self.unsynced_records();
        let kept = if total == 0 || prng.chance(0.5) {
            0
        } else {
            prng.index(total + 1)
        };
        self.crash_keeping(kept)
    }

    /// The node lost power and exactly the first `kept` unsynced records survive (the hard
    /// state, if pending, is the last record). Returns how many records were lost. For tests
    /// that need one particular outcome.
    ///
    /// # Panics
    /// If `kept` is more than [`MemStorage::unsynced_records`].
    pub fn crash_keeping(&mut self, kept: usize) -> usize {
        let total = self.unsynced_records();
        assert!(
            kept <= total,
            "cannot keep {kept} of {total} unsynced records"
        );
        let records = std::mem::take(&mut self.unsynced);
        let hard_state = self.unsynced_hard_state.take();
        let records_kept = kept.min(records.len());
        for record in records.into_iter().take(records_kept) {
            self.apply_durably(record);
        }
        if let Some(hard_state) = hard_state.filter(|_| kept == total) {
            self.durable.replace_hard_state(hard_state);
        }
        // The restart adopts a snapshot newer than the last marker, as a file storage's open
        // does, so that the log written next follows it.
        if let Some(marker) = self.durable.adopt(self.newest_snapshot()) {
            self.apply_durably(marker);
        }
        self.tracker = WriteTracker::resume(&self.durable());
        total - kept
    }

    /// What a restarting node reads back: everything synced (unsynced records are either
    /// synced or lost by a crash first), from the newest snapshot.
    ///
    /// # Panics
    /// Never for a storage used through its methods: its log always goes on from its newest
    /// snapshot or from index 1.
    #[must_use]
    pub fn durable(&self) -> DurableState {
        let mut durable = match self.durable.durable_state(self.newest_snapshot()) {
            Ok(durable) => durable,
            Err(reason) => panic!("invariant: the in-memory log fits its snapshots: {reason}"),
        };
        // The snapshot's configuration is in its header.
        durable.membership = durable.snapshot.and_then(|meta| {
            let reader = self.open_snapshot(meta).ok()?;
            snapshot::membership_from_extra(reader.extra(), "memory")
                .ok()
                .flatten()
        });
        durable
    }

    fn newest_snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshots.keys().next_back().copied()
    }

    fn apply_durably(&mut self, record: Record) {
        if let Some(settled) = &mut self.settled {
            self.recent.push_back(record.clone());
            while self.recent.len() > self.window {
                let oldest = self
                    .recent
                    .pop_front()
                    .expect("invariant: the window is full");
                if let Err(reason) = settled.apply(oldest) {
                    panic!("invariant: a record written fits the durable log: {reason}");
                }
                settled.trim();
            }
        }
        if let Err(reason) = self.durable.apply(record) {
            // The tracker checked every record against the log written before it, and a crash
            // keeps a prefix, so a record always fits what precedes it.
            panic!("invariant: a record written fits the durable log: {reason}");
        }
        self.durable.trim();
    }

    /// Starts writing the snapshot `meta` (its header carries `extra`); write its body into
    /// the encoder, then hand it to [`MemStorage::finish_snapshot`].
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if `extra` exceeds [`snapshot::EXTRA_BYTES_MAX`].
    pub fn create_snapshot(
        meta: SnapshotMeta,
        extra: &[u8],
    ) -> Result<SnapshotEncoder<Vec<u8>>, StorageError> {
        SnapshotEncoder::new(Vec::new(), meta, extra)
            .map_err(|error| StorageError::InvalidWrite(error.to_string()))
    }

    /// Makes the snapshot written into `encoder` durable; returns its file's bytes.
    pub fn finish_snapshot(&mut self, encoder: SnapshotEncoder<Vec<u8>>) -> u64 {
        let meta = encoder.meta();
        let (bytes, file_bytes) = encoder
            .finish()
            .expect("invariant: writing into a vector cannot fail");
        self.snapshots.insert(meta, Bytes::from(bytes));
        file_bytes
    }

    /// Makes durable the snapshot `meta` received whole as the raw bytes of its file (the
    /// chunks of an `InstallSnapshot`, put together), after verifying them.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] if the bytes are not an intact snapshot `meta`; nothing is
    /// stored.
    pub fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        bytes: Bytes,
    ) -> Result<(), StorageError> {
        snapshot::verify_bytes(&bytes, &snapshot::snapshot_file_name(meta), Some(meta))?;
        self.snapshots.insert(meta, bytes);
        Ok(())
    }

    /// The finished snapshots, newest first.
    #[must_use]
    pub fn snapshots(&self) -> Vec<SnapshotMeta> {
        self.snapshots.keys().rev().copied().collect()
    }

    /// The raw bytes of the snapshot `meta`'s file, what a leader ships to a follower.
    #[must_use]
    pub fn snapshot_bytes(&self, meta: SnapshotMeta) -> Option<Bytes> {
        self.snapshots.get(&meta).cloned()
    }

    /// Opens the snapshot `meta` for reading; the reader verifies as it streams.
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if there is no such snapshot, [`StorageError::Corrupt`]
    /// if its header is damaged.
    pub fn open_snapshot(
        &self,
        meta: SnapshotMeta,
    ) -> Result<SnapshotReader<Cursor<Bytes>>, StorageError> {
        let bytes = self.snapshots.get(&meta).cloned().ok_or_else(|| {
            StorageError::InvalidWrite(format!(
                "no snapshot at index {} term {}",
                meta.index, meta.term
            ))
        })?;
        SnapshotReader::new(
            Cursor::new(bytes),
            snapshot::snapshot_file_name(meta),
            Some(meta),
        )
    }

    /// Keeps the `keep` newest snapshots and forgets the older ones; returns the forgotten.
    ///
    /// # Panics
    /// If `keep` is zero.
    pub fn retain_snapshots(&mut self, keep: usize) -> Vec<SnapshotMeta> {
        assert!(keep > 0, "retain must keep the newest snapshot");
        let forgotten: Vec<SnapshotMeta> = self.snapshots().into_iter().skip(keep).collect();
        for meta in &forgotten {
            self.snapshots.remove(meta);
        }
        forgotten
    }

    /// The first index of the log held in memory (the next index if it is empty): where a
    /// compaction left it.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.durable().entries.first().map_or_else(
            || LogIndex(self.newest_snapshot().map_or(0, |meta| meta.index.0) + 1),
            |entry| entry.index,
        )
    }
}

impl Storage for MemStorage {
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        let planned = self
            .tracker
            .plan(hard_state, entries)
            .map_err(StorageError::InvalidWrite)?;
        self.unsynced.extend(planned.records);
        if let Some(hard_state) = planned.hard_state {
            self.unsynced_hard_state = Some(hard_state);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        for record in std::mem::take(&mut self.unsynced) {
            self.apply_durably(record);
        }
        if let Some(hard_state) = self.unsynced_hard_state.take() {
            self.durable.replace_hard_state(hard_state);
        }
        Ok(())
    }

    fn durable_state(&self) -> Result<DurableState, StorageError> {
        Ok(self.durable())
    }

    fn compact(&mut self, snapshot: SnapshotMeta, keep_from: LogIndex) -> Result<(), StorageError> {
        if !self.snapshots.contains_key(&snapshot) {
            return Err(StorageError::InvalidWrite(format!(
                "no durable snapshot at index {} term {} to compact to",
                snapshot.index, snapshot.term
            )));
        }
        let marker = self
            .tracker
            .plan_compact(snapshot, keep_from)
            .map_err(StorageError::InvalidWrite)?;
        self.unsynced.push(marker);
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::Term;
    use chorus_raft::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::NoOp,
        }
    }

    #[test]
    fn crash_keeps_synced_state_and_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut prng = Prng::new(seed);
            let mut storage = MemStorage::new();
            storage.write(None, &[entry(1, 1)]).expect("fits");
            storage.sync().expect("memory cannot fail");
            storage.write(None, &[entry(2, 1)]).expect("fits");
            storage.write(None, &[entry(3, 1)]).expect("fits");
            storage.crash(&mut prng);
            let length = storage.durable().entries.len();
            assert!((1..=3).contains(&length));
            assert!(!storage.is_dirty());
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
        }
    }

    #[test]
    fn a_snapshot_is_durable_only_once_finished() {
        use std::io::Write;
        let mut prng = Prng::new(3);
        let mut storage = MemStorage::new();
        storage
            .write(None, &[entry(1, 1), entry(2, 1)])
            .expect("fits");
        storage.sync().expect("memory cannot fail");
        let mut encoder = MemStorage::create_snapshot(meta(2, 1), &[]).expect("creates");
        encoder.write_all(b"half of a state").expect("writes");
        // The node crashes while the snapshot is being written: the encoder is lost with it.
        drop(encoder);
        storage.crash(&mut prng);
        assert_eq!(storage.snapshots(), Vec::new());
        assert_eq!(storage.durable().snapshot, None);
        assert!(storage.compact(meta(2, 1), LogIndex(3)).is_err());

        let mut encoder = MemStorage::create_snapshot(meta(2, 1), &[]).expect("creates");
        encoder.write_all(b"a whole state").expect("writes");
        storage.finish_snapshot(encoder);
        storage.crash(&mut prng);
        assert_eq!(storage.durable().snapshot, Some(meta(2, 1)));
    }

    #[test]
    fn compaction_bounds_the_entries_held_in_memory() {
        use std::io::Write;
        let mut storage = MemStorage::new();
        for round in 0..50_u64 {
            let first = round * 20 + 1;
            let batch: Vec<Entry> = (first..first + 20).map(|index| entry(index, 1)).collect();
            let commit = HardState {
                term: Term(1),
                vote: None,
                commit: LogIndex(first + 19),
                repairing: None,
            };
            storage.write(Some(commit), &batch).expect("fits");
            let snapshot = meta(first + 19, 1);
            let mut encoder = MemStorage::create_snapshot(snapshot, &[]).expect("creates");
            encoder.write_all(b"state").expect("writes");
            storage.finish_snapshot(encoder);
            storage
                .compact(snapshot, LogIndex(first + 10))
                .expect("compacts");
            storage.retain_snapshots(2);
            assert_eq!(storage.durable().entries.len(), 10, "round {round}");
            assert_eq!(storage.first_index(), LogIndex(first + 10));
        }
        assert_eq!(storage.snapshots(), vec![meta(1000, 1), meta(980, 1)]);
    }
}
