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
//! It is pure: no files, no clocks, no global randomness; the crash draws from the caller's
//! seeded [`Prng`].

use chorus_core::Prng;
use chorus_raft::{DurableState, Entry, HardState};

use crate::replay::{Record, Replay, WriteTracker};
use crate::{Storage, StorageError};

/// A node's disk, in memory.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    durable: Replay,
    unsynced: Vec<Record>,
    unsynced_hard_state: Option<HardState>,
    tracker: WriteTracker,
}

impl MemStorage {
    /// An empty disk.
    #[must_use]
    pub fn new() -> MemStorage {
        MemStorage::default()
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
        self.tracker = WriteTracker::resume(&self.durable.durable_state());
        total - kept
    }

    /// What a restarting node reads back: everything synced (unsynced records are either
    /// synced or lost by a crash first).
    #[must_use]
    pub fn durable(&self) -> DurableState {
        self.durable.durable_state()
    }

    fn apply_durably(&mut self, record: Record) {
        if let Err(reason) = self.durable.apply(record) {
            // The tracker checked every record against the log written before it, and a crash
            // keeps a prefix, so a record always fits what precedes it.
            panic!("invariant: a record written fits the durable log: {reason}");
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::{LogIndex, Term};
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
}
