//! The node's incarnation counter: a number that is larger on every start of the node.
//!
//! Drivers stamp what they send with it so that others can tell a restarted node from late
//! messages of its previous run: Raft's origin sessions (a re-sent proposal applies once, and
//! proposals of a run that is gone are fenced) and primary-backup's pings (the view service
//! recognises a restart that lost its state). A wall clock cannot serve: it can be stepped
//! back, and milliseconds truncated to fit a field repeat. So the counter is kept in the data
//! directory, in a small file replaced atomically and durably before the node serves.
//!
//! The file is a [`record_file`](crate::record_file) holding the counter (8 bytes, little
//! endian).

use std::path::Path;

use crate::StorageError;
use crate::record_file::{read_record, write_record};

const FILE_NAME: &str = "incarnation";

/// Takes the next incarnation of the node whose data directory is `directory` and records it
/// durably before returning it: one more than the last one recorded, and at least
/// `at_least`. Drivers pass the wall clock in milliseconds as `at_least`, so that a node whose
/// data directory was wiped (a replaced disk) still starts with a larger incarnation than its
/// earlier runs, while a clock stepped back cannot make one repeat. The directory must exist.
///
/// # Errors
/// [`StorageError::Io`] if the file cannot be read or replaced; [`StorageError::Corrupt`] if it
/// is damaged. The node must not guess: an incarnation that repeats would let a late message
/// of an earlier run pass for a current one, and one below an earlier run's would fence every
/// write of the node (the replicated session table keeps the largest incarnation it saw).
/// Deleting the damaged file is sound only while the wall clock is ahead of every earlier
/// run's start; if it is not, the Raft driver notices the larger incarnation in the log, lifts
/// the counter above it and stops, and the next start is sound.
pub fn next_incarnation(directory: &Path, at_least: u64) -> Result<u64, StorageError> {
    let path = directory.join(FILE_NAME);
    let previous = match read_record(directory, FILE_NAME)? {
        None => 0,
        Some(bytes) => {
            let counter: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                StorageError::corrupt(&path, 0, "the incarnation record is not 8 bytes")
            })?;
            u64::from_le_bytes(counter)
        }
    };
    let next = previous
        .checked_add(1)
        .ok_or_else(|| StorageError::corrupt(&path, 0, "the incarnation counter is exhausted"))?
        .max(at_least);
    write_record(directory, FILE_NAME, &next.to_le_bytes())?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_takes_a_larger_incarnation() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let taken: Vec<u64> = (0..5)
            .map(|_| next_incarnation(directory.path(), 0).expect("recorded"))
            .collect();
        assert_eq!(taken, vec![1, 2, 3, 4, 5]);
        // A clock ahead of the counter lifts it; a clock stepped back cannot lower it.
        assert_eq!(
            next_incarnation(directory.path(), 1000).expect("recorded"),
            1000
        );
        assert_eq!(
            next_incarnation(directory.path(), 10).expect("recorded"),
            1001
        );
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let directory = tempfile::tempdir().expect("temporary directory");
        next_incarnation(directory.path(), 0).expect("recorded");
        let path = directory.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("written");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("damaged");
        let error = next_incarnation(directory.path(), 0).expect_err("refused");
        assert!(error.to_string().contains("incarnation"), "{error}");
    }
}
