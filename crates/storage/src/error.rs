//! [`StorageError`]: everything that can go wrong between the driver and the disk.

use std::path::PathBuf;

use chorus_core::LogIndex;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation on a file or directory.
    #[error("cannot {operation} {}: {source}", .path.display())]
    Io {
        /// What was being done, as a verb phrase ("open", "fsync", "rename").
        operation: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The stored data is damaged in a way recovery must not paper over: committed entries
    /// might be lost. The node must not start on this data; restore it from a peer.
    #[error("corrupt storage in {} at byte offset {offset}: {reason}", .file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where in the file the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The caller asked for a write that does not fit the log written so far. Nothing was
    /// written.
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// One entry is too large to fit in a write-ahead-log record. Nothing was written.
    #[error("entry {index} needs up to {bytes} bytes, above the record limit of {max} bytes")]
    EntryTooLarge {
        /// The entry's index.
        index: LogIndex,
        /// The bytes it could take, encoded.
        bytes: u64,
        /// The largest record allowed.
        max: u64,
    },
    /// An earlier I/O error left the files in an unknown state; reopen the storage to learn
    /// what is durable.
    #[error("storage refuses use after an earlier I/O error; reopen it")]
    Poisoned,
}

impl StorageError {
    /// An [`StorageError::Io`] for `path`.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io {
            operation,
            path,
            source,
        }
    }

    /// A [`StorageError::Corrupt`] in `file` at `offset`.
    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
