//! The node's incarnation counter: a number that is larger on every start of the node.
//!
//! Drivers stamp what they send with it so that others can tell a restarted node from late
//! messages of its previous run: Raft's origin sessions (a re-sent proposal applies once, and
//! proposals of a run that is gone are fenced) and primary-backup's pings (the view service
//! recognises a restart that lost its state). A wall clock cannot serve: it can be stepped
//! back, and milliseconds truncated to fit a field repeat. So the counter is kept in the data
//! directory, in a small file replaced atomically and durably before the node serves.
//!
//! Layout (16 bytes): the counter (8 bytes, little endian), a magic number (4 bytes), and a
//! CRC-32C of the first 12 bytes (4 bytes, little endian).

use std::fs;
use std::path::Path;

use crate::StorageError;
use crate::hard_state::replace_file;

const FILE_NAME: &str = "incarnation";
const TEMPORARY_FILE_NAME: &str = "incarnation.tmp";
const MAGIC: u32 = 0x4348_494e;
const LENGTH: usize = 16;

fn encode(incarnation: u64) -> [u8; LENGTH] {
    let mut bytes = [0u8; LENGTH];
    bytes[..8].copy_from_slice(&incarnation.to_le_bytes());
    bytes[8..12].copy_from_slice(&MAGIC.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[..12]);
    bytes[12..].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8], path: &Path) -> Result<u64, StorageError> {
    let corrupt = |reason: &str| StorageError::corrupt(path, 0, reason.to_string());
    if bytes.len() != LENGTH {
        return Err(corrupt("the incarnation file has the wrong length"));
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[12..16]);
    if crc32c::crc32c(&bytes[..12]) != u32::from_le_bytes(word) {
        return Err(corrupt("the incarnation file fails its checksum"));
    }
    word.copy_from_slice(&bytes[8..12]);
    if u32::from_le_bytes(word) != MAGIC {
        return Err(corrupt("the incarnation file has the wrong magic number"));
    }
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(counter))
}

/// Takes the next incarnation of the node whose data directory is `directory` (1 on the first
/// start) and records it durably before returning it. The directory must exist.
///
/// # Errors
/// [`StorageError::Io`] if the file cannot be read or replaced; [`StorageError::Corrupt`] if it
/// is damaged (the node must not guess: an incarnation that repeats would let a late message
/// of an earlier run pass for a current one; delete the file only if every earlier run's
/// messages are surely gone, for example after the whole cluster stopped).
pub fn next_incarnation(directory: &Path) -> Result<u64, StorageError> {
    let path = directory.join(FILE_NAME);
    let previous = match fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(StorageError::io("read", &path)(error)),
    };
    let next = previous.checked_add(1).ok_or_else(|| {
        StorageError::corrupt(&path, 0, "the incarnation counter is exhausted".to_string())
    })?;
    replace_file(directory, FILE_NAME, TEMPORARY_FILE_NAME, &encode(next))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_takes_a_larger_incarnation() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let taken: Vec<u64> = (0..5)
            .map(|_| next_incarnation(directory.path()).expect("recorded"))
            .collect();
        assert_eq!(taken, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let directory = tempfile::tempdir().expect("temporary directory");
        next_incarnation(directory.path()).expect("recorded");
        let path = directory.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("written");
        bytes[0] ^= 1;
        fs::write(&path, &bytes).expect("damaged");
        let error = next_incarnation(directory.path()).expect_err("refused");
        assert!(error.to_string().contains("incarnation"), "{error}");
        for bit in 0..LENGTH * 8 {
            let mut damaged = encode(7);
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged, &path).is_err(), "bit {bit}");
        }
    }
}
