//! The simulated disk: what a node wrote, and what of it survives a crash.
//!
//! A real write-ahead log acknowledges a write when it reaches the page cache and makes it
//! durable only at fsync. A crash keeps every synced record and some prefix of the unsynced
//! ones (a torn tail is cut at a record boundary by recovery). [`SimDisk`] models exactly that:
//! writes go to an unsynced queue of records, [`SimDisk::sync`] makes them durable, and
//! [`SimDisk::crash`] keeps a random prefix of the unsynced queue — often none of it.
//!
//! Within one persist the entries are written before the hard state, as a log-structured store
//! would order them; so a crash can keep new entries yet lose the hard state that followed them,
//! a case the Raft core's restart handles.

use chorus_core::{LogIndex, Prng};
use chorus_raft::{DurableState, Entry, HardState};

/// One record of the simulated write-ahead log.
#[derive(Clone, Debug)]
enum Record {
    /// Drop every entry at or after `from`, then append these entries.
    Entries { from: LogIndex, entries: Vec<Entry> },
    /// Replace the hard state (atomically, like a rename).
    HardState(HardState),
}

/// A node's disk in the simulator.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    durable: DurableState,
    unsynced: Vec<Record>,
}

impl SimDisk {
    /// An empty disk.
    #[must_use]
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Writes `entries` (truncating the log from the first one's index) and then `hard_state`,
    /// without making them durable.
    pub fn write(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.unsynced.push(Record::Entries {
                from: first.index,
                entries: entries.to_vec(),
            });
        }
        if let Some(hard_state) = hard_state {
            self.unsynced.push(Record::HardState(hard_state));
        }
    }

    /// Whether anything waits for a sync.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) {
        let records = std::mem::take(&mut self.unsynced);
        for record in records {
            apply_record(&mut self.durable, record);
        }
    }

    /// The node lost power: a random prefix of the unsynced records survives (with probability
    /// one half, none of them does). Returns how many records were lost.
    pub fn crash(&mut self, rng: &mut Prng) -> usize {
        let total = self.unsynced.len();
        let kept = if total == 0 || rng.chance(0.5) {
            0
        } else {
            rng.index(total + 1)
        };
        let records: Vec<Record> = self.unsynced.drain(..).take(kept).collect();
        for record in records {
            apply_record(&mut self.durable, record);
        }
        total - kept
    }

    /// What a restarting node reads back.
    #[must_use]
    pub fn durable(&self) -> &DurableState {
        &self.durable
    }
}

fn apply_record(durable: &mut DurableState, record: Record) {
    match record {
        Record::Entries { from, entries } => {
            let keep =
                usize::try_from(from.0.saturating_sub(1)).expect("invariant: index fits usize");
            assert!(
                keep <= durable.entries.len(),
                "invariant: log writes are contiguous"
            );
            durable.entries.truncate(keep);
            durable.entries.extend(entries);
        }
        Record::HardState(hard_state) => durable.hard_state = hard_state,
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
    fn sync_makes_writes_durable_and_truncates_conflicts() {
        let mut disk = SimDisk::new();
        disk.write(None, &[entry(1, 1), entry(2, 1), entry(3, 1)]);
        disk.sync();
        disk.write(
            Some(HardState {
                term: Term(2),
                vote: None,
                commit: LogIndex(1),
            }),
            &[entry(2, 2)],
        );
        disk.sync();
        let terms: Vec<u64> = disk.durable().entries.iter().map(|e| e.term.0).collect();
        assert_eq!(terms, vec![1, 2]);
        assert_eq!(disk.durable().hard_state.term, Term(2));
    }

    #[test]
    fn crash_keeps_synced_state_and_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut rng = Prng::new(seed);
            let mut disk = SimDisk::new();
            disk.write(None, &[entry(1, 1)]);
            disk.sync();
            disk.write(None, &[entry(2, 1)]);
            disk.write(None, &[entry(3, 1)]);
            disk.crash(&mut rng);
            let len = disk.durable().entries.len();
            assert!((1..=3).contains(&len));
            assert!(!disk.is_dirty());
        }
    }
}
