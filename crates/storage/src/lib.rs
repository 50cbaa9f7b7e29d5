//! Durable storage for the Raft core: what a node must remember across crashes.
//!
//! The Raft core ([`chorus_raft::RawNode`]) hands its driver a hard state and log entries in
//! each Ready, and the driver must make them durable before it sends the Ready's
//! `persisted_messages` (votes and acks promise durable state; Raft Figure 2). This crate is
//! the driver's side of that contract, behind one small trait, [`Storage`]:
//!
//! - [`FileStorage`] keeps a segmented, checksummed write-ahead log and an atomically
//!   replaced hard-state file in a directory; the runtime uses it.
//! - [`MemStorage`] is its in-memory twin with the same crash semantics, pure (no files, no
//!   clocks) so that the deterministic simulator can crash it with a seeded PRNG.
//!
//! # Crash semantics (both implementations)
//!
//! Each [`Storage::write`] queues, in this order:
//! 1. the entries, as one or more *log records* (the stored log is truncated from the first
//!    entry's index, then the entries are appended);
//! 2. if only the commit index changed, a *commit record*;
//! 3. if the term or the vote changed, a *hard-state replacement* (term, vote and commit).
//!
//! Log and commit records go to the write-ahead log in the order written. The hard-state
//! replacement, if any of the writes since the last sync queued one, is done once, by
//! [`Storage::sync`], after the write-ahead log is durable, and holds the latest hard state.
//! So the records of one sync form a sequence `[log and commit records…, hard state]`, and a
//! crash keeps every record synced before plus **a prefix of that sequence**: it can keep
//! new entries yet lose the hard state that followed them (the core's restart resumes in the
//! last entry's term without a vote), but never keeps a hard state without the entries
//! written before it. After a sync returns, everything written before it survives.
//!
//! On restart the commit index is the larger of the hard state's and the last commit
//! record's, clamped to the last log index, and at least the snapshot's index.
//!
//! # Snapshots and compaction
//!
//! A snapshot is a file of its own ([`snapshot`]: versioned header, body in CRC-32C blocks,
//! trailer), durable once its writer finishes (temporary name, fsync, rename, directory
//! fsync); a crash before that leaves nothing but a temporary file that open removes.
//! [`Storage::compact`] then records in the log, durably, that the snapshot covers it, and
//! drops the entries below `keep_from` (whole segments, for [`FileStorage`]). A restart
//! returns the newest intact snapshot in [`DurableState::snapshot`] and the log after the
//! dropped prefix; a damaged snapshot is reported and an older one used only if the log still
//! covers the gap (see [`FileStorage`]). [`MemStorage`] holds snapshots as the same bytes, with
//! the same crash semantics.
//!
//! # Failures
//!
//! Content read from disk is outside input: damage returns [`StorageError::Corrupt`], never a
//! panic. A torn tail (the last write of the last segment cut short by a crash) is cut off and
//! reported in [`RecoveryReport`] (zeros after the last segment's records are not damage but
//! its preallocated space, the log's clean end); damage anywhere else refuses to open, because it may be in
//! committed entries and committed entries are never dropped silently. After an I/O error a
//! [`FileStorage`] refuses further use ([`StorageError::Poisoned`]): once an fsync has failed
//! the kernel may have dropped the dirty pages, so only a reopen tells what is on disk.

mod error;
mod file;
mod hard_state;
mod incarnation;
mod janitor;
mod memory;
pub mod record_file;
mod replay;
pub mod snapshot;
pub mod wal;

use chorus_core::LogIndex;
use chorus_raft::{DurableState, Entry, HardState, SnapshotMeta};

pub use error::StorageError;
pub use file::{FileStorage, FileStorageOptions, RecoveryReport, SyncedDamage, TornTail};
pub use incarnation::next_incarnation;
pub use janitor::{Janitor, lower_thread_priority};
pub use memory::MemStorage;
pub use snapshot::{
    DamagedSnapshot, PartialSnapshot, SnapshotEncoder, SnapshotFile, SnapshotReader, SnapshotStore,
    SnapshotWriter,
};

/// Copies a slice whose length the caller fixed into an array (the fixed-width fields of the
/// on-disk formats).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    array
}

/// The durable state of one Raft node, as its driver sees it.
///
/// See the crate docs for the exact crash semantics every implementation keeps.
pub trait Storage {
    /// Queues `entries` (the stored log is first truncated from `entries[0].index` if it
    /// overlaps) and then `hard_state`, without making them durable.
    ///
    /// `entries` must be contiguous and start at or below the last written index plus one;
    /// `hard_state` is `None` when it did not change. As Raft guarantees, the term and the
    /// commit index never go back and no entry at or below the commit index is overwritten.
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if the write breaks those rules (the storage is
    /// unchanged), [`StorageError::EntryTooLarge`] if one entry cannot fit in a
    /// record, or an I/O error from an implementation that writes early to bound its buffer.
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError>;

    /// Makes everything written so far durable. One call covers every write since the last
    /// one (group commit: many writes, one fsync).
    ///
    /// # Errors
    /// An I/O error; the storage is then poisoned and must be reopened.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// What a restart would read back now if the process stopped without losing anything
    /// that reached the storage medium. Right after a successful [`Storage::sync`] this is
    /// exactly everything written; between a write and a sync it is the synced state plus a
    /// prefix (possibly empty) of the unsynced records. For tests and diagnostics: it may read
    /// the whole log.
    ///
    /// # Errors
    /// An I/O error or [`StorageError::Corrupt`] from an implementation that reads the medium.
    fn durable_state(&self) -> Result<DurableState, StorageError>;

    /// Records durably that `snapshot` holds the log up to its index, and drops the entries
    /// below `keep_from` (at most `snapshot.index + 1`; lower keeps a tail for slightly
    /// lagging followers). Everything written before is synced first: a compaction implies a
    /// [`Storage::sync`].
    ///
    /// The snapshot must already be durable in this storage's snapshot store (a finished
    /// [`SnapshotWriter`] or [`PartialSnapshot`], or [`MemStorage::finish_snapshot`] /
    /// [`MemStorage::install_snapshot`]), so that a crash at any point leaves either the old
    /// log or the snapshot and the new one. If the log does not go on from the snapshot (it
    /// ends before `snapshot.index` or holds another term there, Raft §7), the whole log is
    /// discarded and the next entry written is `snapshot.index + 1`. The commit index becomes
    /// at least `snapshot.index`.
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if the snapshot is not in the store, is older than the
    /// last one compacted to, or `keep_from` is out of range (nothing changes); an I/O error
    /// (the storage is then poisoned).
    fn compact(&mut self, snapshot: SnapshotMeta, keep_from: LogIndex) -> Result<(), StorageError>;
}
