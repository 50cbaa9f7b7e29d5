//! Small files that hold one checksummed record, replaced atomically and durably.
//!
//! Some state is tiny and must survive a crash exactly: a node's incarnation counter, the
//! primary-backup view service's current view. Each lives in a file of its own that is never
//! edited in place: a new version is written to a temporary name, fsynced, renamed over the
//! old one, and the directory fsynced, so after a crash the file holds either the old record or
//! the new one, never a mix. A damaged file is reported by name, never guessed around.
//!
//! Layout: a magic number (4 bytes), the payload length (4 bytes, little endian), a CRC-32C of
//! the payload (4 bytes, little endian), then the payload.

use std::fs;
use std::path::Path;

use crate::StorageError;
use crate::hard_state::replace_file;

const MAGIC: [u8; 4] = *b"CHRF";
const HEADER_BYTES: usize = 12;
/// The largest payload a record file holds; anything larger is refused as damage.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

fn temporary_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Replaces `directory/name` with a record holding `payload`, atomically and durably.
///
/// # Errors
/// [`StorageError::InvalidWrite`] if the payload exceeds [`RECORD_BYTES_MAX`];
/// [`StorageError::Io`] if the file cannot be written, synced or renamed.
pub fn write_record(directory: &Path, name: &str, payload: &[u8]) -> Result<(), StorageError> {
    if payload.len() > RECORD_BYTES_MAX {
        return Err(StorageError::InvalidWrite(format!(
            "a record of {} bytes exceeds the limit of {RECORD_BYTES_MAX}",
            payload.len()
        )));
    }
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    replace_file(directory, name, &temporary_name(name), &bytes)
}

/// Reads the record in `directory/name`; `None` if there is no such file.
///
/// # Errors
/// [`StorageError::Corrupt`] naming the file if it is damaged (wrong magic, length or
/// checksum); [`StorageError::Io`] if it cannot be read.
pub fn read_record(directory: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let path = directory.join(name);
    let length = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("stat", &path)(error)),
    };
    // Check the length before reading, so a damaged (huge) file is not read into memory.
    if length > (HEADER_BYTES + RECORD_BYTES_MAX) as u64 || length < HEADER_BYTES as u64 {
        return Err(StorageError::corrupt(
            &path,
            0,
            format!("a record file of {length} bytes"),
        ));
    }
    let bytes = fs::read(&path).map_err(StorageError::io("read", &path))?;
    if bytes[..4] != MAGIC {
        return Err(StorageError::corrupt(&path, 0, "not a record file"));
    }
    let word = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(word)
    };
    let payload = &bytes[HEADER_BYTES..];
    if word(4) as usize != payload.len() {
        return Err(StorageError::corrupt(
            &path,
            4,
            "the record's length does not match the file",
        ));
    }
    if word(8) != crc32c::crc32c(payload) {
        return Err(StorageError::corrupt(
            &path,
            8,
            "the record fails its checksum",
        ));
    }
    Ok(Some(payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_replaced_whole() {
        let directory = tempfile::tempdir().expect("temporary directory");
        assert_eq!(read_record(directory.path(), "view").expect("read"), None);
        write_record(directory.path(), "view", b"first").expect("written");
        write_record(directory.path(), "view", b"second, longer").expect("written");
        assert_eq!(
            read_record(directory.path(), "view").expect("read"),
            Some(b"second, longer".to_vec())
        );
        assert!(!directory.path().join("view.tmp").exists());
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused_by_name() {
        let directory = tempfile::tempdir().expect("temporary directory");
        write_record(directory.path(), "view", b"payload").expect("written");
        let path = directory.path().join("view");
        let good = fs::read(&path).expect("written");
        for bit in 0..good.len() * 8 {
            let mut damaged = good.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, &damaged).expect("damaged");
            let error = read_record(directory.path(), "view").expect_err("refused");
            assert!(error.to_string().contains("view"), "bit {bit}: {error}");
        }
        for length in 0..good.len() {
            fs::write(&path, &good[..length]).expect("truncated");
            assert!(
                read_record(directory.path(), "view").is_err(),
                "length {length}"
            );
        }
        let too_large = vec![0u8; RECORD_BYTES_MAX + 1];
        assert!(write_record(directory.path(), "view", &too_large).is_err());
    }
}
