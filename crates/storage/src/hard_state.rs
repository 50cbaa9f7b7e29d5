//! The hard-state file: term, vote and commit index, replaced atomically.
//!
//! The term and vote change rarely (elections) but must never be half-written: a vote that
//! reads back wrong could let a node vote twice in one term. So they live in their own small
//! file, replaced whole: write `hardstate.tmp`, fsync it, rename it over `hardstate`, fsync the
//! directory. A crash leaves either the old file or the new one, never a mix; a leftover
//! `hardstate.tmp` is the trace of an interrupted replacement and is removed on open.
//!
//! # Format (integers little-endian)
//!
//! Version 1, 41 bytes, written whenever the node is not repairing its log:
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
//!
//! Version 2, 49 bytes, written only while the node repairs a log that lost acknowledged
//! entries ([`HardState::repairing`]): bytes 0..37 as in version 1 (with version `2`), then
//!
//! | offset | size | field |
//! |---|---|---|
//! | 37 | 8 | the term the lost entries could have been acknowledged in (never 0) |
//! | 45 | 4 | CRC-32C of bytes 0..45 |
//!
//! Version 3, 65 bytes, written while the node repairs and the storage knows where the log
//! ended before the damage ([`chorus_raft::DurableState::log_end_before_damage`]): bytes
//! 0..45 as in version 2 (with version `3`), then
//!
//! | offset | size | field |
//! |---|---|---|
//! | 45 | 8 | the index of the last entry the log held before the damage |
//! | 53 | 8 | that entry's term |
//! | 61 | 4 | CRC-32C of bytes 0..61 |
//!
//! So a healthy node's file is the same as before repairs existed, and an older build refuses
//! a repairing node's file (an unknown version) rather than letting it vote.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{HardState, LogPosition};

use crate::StorageError;
use crate::array;

/// The name of the hard-state file in the storage directory.
pub(crate) const FILE_NAME: &str = "hardstate";
/// The name of the file a replacement is written to before the rename.
pub(crate) const TEMPORARY_FILE_NAME: &str = "hardstate.tmp";

const MAGIC: &[u8; 8] = b"CHORUSHS";
/// The bytes of a version 1 file, and of its checksummed part.
const LENGTH_V1: usize = 41;
/// The bytes of a version 2 file.
const LENGTH_V2: usize = 49;
/// The bytes of a version 3 file.
const LENGTH_V3: usize = 65;
/// The largest file of any version.
const LENGTH_MAX: usize = LENGTH_V3;

/// Encodes a hard state in the file format: version 1 unless the node is repairing, version 3
/// if it is and `log_end_before_damage` is known (it is ignored when not repairing).
pub(crate) fn encode(
    hard_state: &HardState,
    log_end_before_damage: Option<LogPosition>,
) -> Vec<u8> {
    let log_end_before_damage = log_end_before_damage.filter(|_| hard_state.repairing.is_some());
    let version: u32 = match (hard_state.repairing, log_end_before_damage) {
        (None, _) => 1,
        (Some(_), None) => 2,
        (Some(_), Some(_)) => 3,
    };
    let mut bytes = Vec::with_capacity(LENGTH_MAX);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&hard_state.term.0.to_le_bytes());
    bytes.push(u8::from(hard_state.vote.is_some()));
    let vote = hard_state.vote.map_or(0, |vote| vote.0);
    bytes.extend_from_slice(&vote.to_le_bytes());
    bytes.extend_from_slice(&hard_state.commit.0.to_le_bytes());
    if let Some(repairing) = hard_state.repairing {
        bytes.extend_from_slice(&repairing.0.to_le_bytes());
    }
    if let Some(before) = log_end_before_damage {
        bytes.extend_from_slice(&before.index.0.to_le_bytes());
        bytes.extend_from_slice(&before.term.0.to_le_bytes());
    }
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Decodes the file's content, and where the log ended before a damage if the file says;
/// `path` names the file in errors.
pub(crate) fn decode(
    bytes: &[u8],
    path: &Path,
) -> Result<(HardState, Option<LogPosition>), StorageError> {
    if ![LENGTH_V1, LENGTH_V2, LENGTH_V3].contains(&bytes.len()) {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "the hard-state file is {} bytes, not {LENGTH_V1}, {LENGTH_V2} or {LENGTH_V3}",
                bytes.len()
            ),
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
    let length = match version {
        1 => LENGTH_V1,
        2 => LENGTH_V2,
        3 => LENGTH_V3,
        _ => {
            return Err(StorageError::corrupt(
                path,
                8,
                format!("unknown hard-state format version {version} (this build reads 1 to 3)"),
            ));
        }
    };
    if bytes.len() != length {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "a version {version} hard-state file is {length} bytes, not {}",
                bytes.len()
            ),
        ));
    }
    let checksummed = length - 4;
    let stored = u32::from_le_bytes(array(&bytes[checksummed..length]));
    let computed = crc32c::crc32c(&bytes[..checksummed]);
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            checksummed as u64,
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
    let repairing = if version >= 2 {
        match u64::from_le_bytes(array(&bytes[37..45])) {
            0 => {
                return Err(StorageError::corrupt(
                    path,
                    37,
                    "a repairing hard state names term 0",
                ));
            }
            term => Some(Term(term)),
        }
    } else {
        None
    };
    let log_end_before_damage = (version == 3).then(|| LogPosition {
        index: LogIndex(u64::from_le_bytes(array(&bytes[45..53]))),
        term: Term(u64::from_le_bytes(array(&bytes[53..61]))),
    });
    let hard_state = HardState {
        term: Term(u64::from_le_bytes(array(&bytes[12..20]))),
        vote,
        commit: LogIndex(u64::from_le_bytes(array(&bytes[29..37]))),
        repairing,
    };
    Ok((hard_state, log_end_before_damage))
}

/// Reads the hard-state file of `directory` (see [`decode`]); a missing file is the empty
/// hard state of a node that never replaced it.
pub(crate) fn read(directory: &Path) -> Result<(HardState, Option<LogPosition>), StorageError> {
    let path = directory.join(FILE_NAME);
    let length = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((HardState::default(), None));
        }
        Err(error) => return Err(StorageError::io("stat", &path)(error)),
    };
    // Check the length before reading, so a damaged (huge) file is not read into memory.
    if length > LENGTH_MAX as u64 {
        return Err(StorageError::corrupt(
            &path,
            0,
            format!("the hard-state file is {length} bytes, more than {LENGTH_MAX}"),
        ));
    }
    let bytes = fs::read(&path).map_err(StorageError::io("read", &path))?;
    decode(&bytes, &path)
}

/// Replaces the hard-state file atomically and durably (see [`encode`]).
pub(crate) fn replace(
    directory: &Path,
    hard_state: &HardState,
    log_end_before_damage: Option<LogPosition>,
) -> Result<(), StorageError> {
    replace_file(
        directory,
        FILE_NAME,
        TEMPORARY_FILE_NAME,
        &encode(hard_state, log_end_before_damage),
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
        let before = LogPosition {
            term: Term(6),
            index: LogIndex(50),
        };
        for (repairing, log_end_before_damage, expected) in [
            (None, None, LENGTH_V1),
            (Some(Term(6)), None, LENGTH_V2),
            (Some(Term(6)), Some(before), LENGTH_V3),
        ] {
            let hard_state = HardState {
                term: Term(7),
                vote: Some(NodeId(3)),
                commit: LogIndex(42),
                repairing,
            };
            let bytes = encode(&hard_state, log_end_before_damage);
            assert_eq!(bytes.len(), expected);
            assert_eq!(
                decode(&bytes, Path::new("hardstate")).expect("valid"),
                (hard_state, log_end_before_damage)
            );
            for bit in 0..bytes.len() * 8 {
                let mut damaged = bytes.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode(&damaged, Path::new("hardstate")).is_err(),
                    "bit {bit}"
                );
            }
        }
    }

    #[test]
    fn where_the_log_ended_is_not_written_for_a_healthy_node() {
        let hard_state = HardState {
            term: Term(7),
            vote: None,
            commit: LogIndex(42),
            repairing: None,
        };
        let bytes = encode(&hard_state, Some(LogPosition::default()));
        assert_eq!(bytes.len(), LENGTH_V1);
    }

    #[test]
    fn a_healthy_node_writes_the_first_version_byte_for_byte() {
        let bytes = encode(
            &HardState {
                term: Term(2),
                vote: None,
                commit: LogIndex(1),
                repairing: None,
            },
            None,
        );
        assert_eq!(bytes.len(), LENGTH_V1);
        assert_eq!(u32::from_le_bytes(array(&bytes[8..12])), 1);
    }
}
