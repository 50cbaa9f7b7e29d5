//! The hard-state file: term, vote and commit index, replaced atomically.
//!
//! The term and vote change rarely (elections) but must never be half-written: a vote that
//! reads back wrong could let a node vote twice in one term. So they live in their own small
//! file, replaced whole: write `hardstate.tmp`, fsync it, rename it over `hardstate`, fsync the
//! directory. A crash leaves either the old file or the new one, never a mix; a leftover
//! `hardstate.tmp` is the trace of an interrupted replacement and is removed on open.
//!
//! # Format (41 bytes, integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CHORUSHS` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 8 | term |
//! | 20 | 1 | `1` if a vote follows, `0` if none |
//! | 21 | 8 | vote (node id; `0` when there is no vote) |
//! | 29 | 8 | commit index |
//! | 37 | 4 | CRC-32C of bytes 0..37 |

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::HardState;

use crate::StorageError;
use crate::array;

/// The name of the hard-state file in the storage directory.
pub(crate) const FILE_NAME: &str = "hardstate";
/// The name of the file a replacement is written to before the rename.
pub(crate) const TEMPORARY_FILE_NAME: &str = "hardstate.tmp";

const MAGIC: &[u8; 8] = b"CHORUSHS";
const VERSION: u32 = 1;
const LENGTH: usize = 41;
const CHECKSUMMED: usize = 37;

/// Encodes a hard state in the file format.
pub(crate) fn encode(hard_state: &HardState) -> [u8; LENGTH] {
    let mut bytes = [0u8; LENGTH];
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&hard_state.term.0.to_le_bytes());
    bytes[20] = u8::from(hard_state.vote.is_some());
    let vote = hard_state.vote.map_or(0, |vote| vote.0);
    bytes[21..29].copy_from_slice(&vote.to_le_bytes());
    bytes[29..37].copy_from_slice(&hard_state.commit.0.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[..CHECKSUMMED]);
    bytes[37..41].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Decodes the file's content; `path` names the file in errors.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<HardState, StorageError> {
    if bytes.len() != LENGTH {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("the hard-state file is {} bytes, not {LENGTH}", bytes.len()),
        ));
    }
    if &bytes[0..8] != MAGIC {
        return Err(StorageError::corrupt(
            path,
            0,
            "bad magic: not a Chorus hard-state file",
        ));
    }
    let version = u32::from_le_bytes(array(&bytes[8..12]));
    if version != VERSION {
        return Err(StorageError::corrupt(
            path,
            8,
            format!("unknown hard-state format version {version} (this build reads {VERSION})"),
        ));
    }
    let stored = u32::from_le_bytes(array(&bytes[37..41]));
    let computed = crc32c::crc32c(&bytes[..CHECKSUMMED]);
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            37,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let vote = match bytes[20] {
        0 => None,
        1 => Some(NodeId(u64::from_le_bytes(array(&bytes[21..29])))),
        flag => {
            return Err(StorageError::corrupt(
                path,
                20,
                format!("vote flag is {flag}, not 0 or 1"),
            ));
        }
    };
    Ok(HardState {
        term: Term(u64::from_le_bytes(array(&bytes[12..20]))),
        vote,
        commit: LogIndex(u64::from_le_bytes(array(&bytes[29..37]))),
    })
}

/// Reads the hard-state file of `directory`; a missing file is the empty hard state of a node
/// that never replaced it.
pub(crate) fn read(directory: &Path) -> Result<HardState, StorageError> {
    let path = directory.join(FILE_NAME);
    let length = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HardState::default());
        }
        Err(error) => return Err(StorageError::io("stat", &path)(error)),
    };
    // Check the length before reading, so a damaged (huge) file is not read into memory.
    if length != LENGTH as u64 {
        return Err(StorageError::corrupt(
            &path,
            0,
            format!("the hard-state file is {length} bytes, not {LENGTH}"),
        ));
    }
    let bytes = fs::read(&path).map_err(StorageError::io("read", &path))?;
    decode(&bytes, &path)
}

/// Replaces the hard-state file atomically and durably.
pub(crate) fn replace(directory: &Path, hard_state: &HardState) -> Result<(), StorageError> {
    replace_file(
        directory,
        FILE_NAME,
        TEMPORARY_FILE_NAME,
        &encode(hard_state),
    )
}

/// Replaces `directory/name` with `bytes` atomically and durably: written to `temporary_name`,
/// fsynced, renamed over the old file, and the directory fsynced.
pub(crate) fn replace_file(
    directory: &Path,
    name: &str,
    temporary_name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let temporary = directory.join(temporary_name);
    let path = directory.join(name);
    let mut file = File::create(&temporary).map_err(StorageError::io("create", &temporary))?;
    file.write_all(bytes)
        .map_err(StorageError::io("write", &temporary))?;
    file.sync_all()
        .map_err(StorageError::io("fsync", &temporary))?;
    drop(file);
    fs::rename(&temporary, &path).map_err(StorageError::io("rename", &temporary))?;
    sync_directory(directory)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(StorageError::io("fsync directory", directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_every_flipped_bit_is_detected() {
        let hard_state = HardState {
            term: Term(7),
            vote: Some(NodeId(3)),
            commit: LogIndex(42),
        };
        let bytes = encode(&hard_state);
        assert_eq!(
            decode(&bytes, Path::new("hardstate")).expect("valid"),
            hard_state
        );
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged, Path::new("hardstate")).is_err(),
                "bit {bit}"
            );
        }
    }
}
