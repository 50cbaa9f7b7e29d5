//! Snapshot files: a state machine's state at one log index, streamed to disk and checked as
//! it is read back.
//!
//! A snapshot replaces the log below its index, so losing or misreading one loses committed
//! state. Three properties follow, after etcd's `snap` package and hashicorp/raft's
//! `FileSnapshotStore`:
//!
//! - **Atomic and durable.** A snapshot is written to a temporary name, fsynced, renamed to its
//!   final name and the directory fsynced ([`SnapshotWriter::finish`]). A file under a final
//!   name is therefore whole as far as the writer knows; a crash leaves at most a temporary
//!   file, which [`SnapshotStore::remove_temporary_files`] removes on open.
//! - **Streamed.** A state machine may be larger than memory comfortably holds twice, so
//!   neither the writer nor the reader ever holds more than one block (64 KiB by default).
//! - **Checked where it is damaged.** The body is framed in blocks, each with its own CRC-32C,
//!   so a reader reports the exact offset of a damaged block, and a trailer, so a truncated
//!   file is told from a whole one. The reader verifies as it streams; damage is an
//!   [`std::io::Error`] of kind `InvalidData` wrapping a [`StorageError::Corrupt`] that names
//!   the file and the offset.
//!
//! The file's raw bytes are also the wire format of `InstallSnapshot`: a leader ships the file
//! as it is, in chunks, and the follower writes them at their offsets
//! ([`PartialSnapshot::write_at`]) and verifies the whole file with the same reader before it
//! renames it into place ([`PartialSnapshot::finish`]).
//!
//! # Files
//!
//! In the snapshot directory (`<data dir>/snapshots/` for a [`crate::FileStorage`]):
//! - `snap-<index>-<term>.snap`, index and term in 20 zero-padded decimal digits, so that
//!   names sort by index: a finished snapshot.
//! - `snap-<index>-<term>.<n>.tmp`: a snapshot being written locally or received from a
//!   leader (`n` tells concurrent writers apart). Never read; removed on open.
//!
//! # Format (integers little-endian)
//!
//! Header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CHORUSSN` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 8 | the snapshot's last included index (must match the file name) |
//! | 20 | 8 | the term of that entry (must match the file name) |
//! | 28 | 4 | `block_bytes`: the largest block of this file, `1..=`[`BLOCK_BYTES_LIMIT`] |
//! | 32 | 4 | `extra_bytes`: the length of `extra`, at most [`EXTRA_BYTES_MAX`] |
//! | 36 | `extra_bytes` | `extra`: opaque bytes for later fields (e.g. the membership) |
//! | 36 + `extra_bytes` | 4 | CRC-32C of every header byte before it |
//!
//! Then the body, as blocks, one after another:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `length`: the block's data bytes, `1..=block_bytes` |
//! | 4 | 4 | CRC-32C of the block's number (8 bytes, counting from 0) followed by its data |
//! | 8 | `length` | data |
//!
//! The block number inside the checksum makes a reordered or repeated block a mismatch. Then
//! the trailer (24 bytes), and nothing after it:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `0`, the length that marks the trailer |
//! | 4 | 8 | the number of blocks |
//! | 12 | 8 | the body's bytes (the sum of the blocks' lengths) |
//! | 20 | 4 | CRC-32C of the trailer's bytes 0..20 |
//!
//! A file that ends before its trailer is torn (a crash before the rename, or a disk that lost
//! the tail): the reader reports the offset where it ends. Lengths are bounded before anything
//! is allocated, so damaged lengths are errors, never huge allocations.
//!
//! # Retention
//!
//! [`SnapshotStore::retain`] keeps the newest snapshots and deletes the older ones; call it
//! only after the newest is durable ([`SnapshotWriter::finish`] returned), so that a crash
//! always leaves at least one whole snapshot. Keeping two lets a node whose newest snapshot
//! turns out damaged fall back to the previous one (see [`crate::FileStorage`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_core::{LogIndex, Term};
use chorus_raft::{Membership, SnapshotMeta};

use crate::StorageError;
use crate::array;
use crate::hard_state::sync_directory;
use crate::janitor::Janitor;

/// The format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// The block size a writer uses.
pub const BLOCK_BYTES: u32 = 64 * 1024;
/// The largest `block_bytes` a reader accepts from a header.
pub const BLOCK_BYTES_LIMIT: u32 = 4 << 20;
/// The largest `extra` a header may carry.
pub const EXTRA_BYTES_MAX: u32 = 1 << 20;
/// The bytes of the header's fixed part, before `extra`.
pub const HEADER_FIXED_BYTES: u64 = 36;
/// The bytes of a block header (`length` and checksum).
pub const BLOCK_HEADER_BYTES: u64 = 8;
/// The bytes of the trailer.
pub const TRAILER_BYTES: u64 = 24;

const MAGIC: &[u8; 8] = b"CHORUSSN";
const FINAL_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Tells apart the temporary files of writers running at once in one process.
static TEMPORARY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The header `extra` that stores a snapshot's configuration (the cluster membership as of
/// its index): the [postcard] encoding of the [`Membership`].
#[must_use]
pub fn membership_extra(membership: &Membership) -> Vec<u8> {
    postcard::to_allocvec(membership).expect("invariant: a membership always encodes")
}

/// The configuration a snapshot header's `extra` stores: `None` for an empty `extra` (a
/// snapshot written before configurations were stored).
///
/// # Errors
/// [`StorageError::Corrupt`] naming `file` if the bytes do not decode to a valid
/// configuration.
pub fn membership_from_extra(extra: &[u8], file: &str) -> Result<Option<Membership>, StorageError> {
    if extra.is_empty() {
        return Ok(None);
    }
    match postcard::from_bytes::<Membership>(extra) {
        Ok(membership) if membership.is_valid() => Ok(Some(membership)),
        _ => Err(StorageError::Corrupt {
            file: file.into(),
            offset: HEADER_FIXED_BYTES,
            reason: "the header's configuration does not decode".to_string(),
        }),
    }
}

/// The file name of the finished snapshot `meta`.
#[must_use]
pub fn snapshot_file_name(meta: SnapshotMeta) -> String {
    format!(
        "snap-{:020}-{:020}{FINAL_SUFFIX}",
        meta.index.0, meta.term.0
    )
}

/// The snapshot a finished snapshot's file name stands for, or `None` if the name is not one.
#[must_use]
pub fn parse_snapshot_file_name(name: &str) -> Option<SnapshotMeta> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(FINAL_SUFFIX)?;
    let (index, term) = digits.split_once('-')?;
    let number = |digits: &str| {
        (digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    Some(SnapshotMeta {
        index: LogIndex(number(index)?),
        term: Term(number(term)?),
    })
}

/// The header of a snapshot `meta` with `extra`, written with blocks of `block_bytes`.
fn encode_header(meta: SnapshotMeta, block_bytes: u32, extra: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_FIXED_BYTES as usize + extra.len() + 4);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&meta.index.0.to_le_bytes());
    header.extend_from_slice(&meta.term.0.to_le_bytes());
    header.extend_from_slice(&block_bytes.to_le_bytes());
    let extra_bytes = u32::try_from(extra.len()).expect("invariant: checked by the caller");
    header.extend_from_slice(&extra_bytes.to_le_bytes());
    header.extend_from_slice(extra);
    let checksum = crc32c::crc32c(&header);
    header.extend_from_slice(&checksum.to_le_bytes());
    header
}

/// The checksum of block `number` holding `data`.
fn block_checksum(number: u64, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&number.to_le_bytes()), data)
}

/// Encodes a snapshot into any writer: the header at creation, the body in blocks as it is
/// written, the trailer at [`SnapshotEncoder::finish`]. Holds at most one block in memory.
///
/// [`SnapshotWriter`] uses it over a file; [`crate::MemStorage`] over a vector.
#[derive(Debug)]
pub struct SnapshotEncoder<W: Write> {
    inner: W,
    meta: SnapshotMeta,
    block: Vec<u8>,
    block_bytes: usize,
    blocks: u64,
    body_bytes: u64,
    file_bytes: u64,
}

impl<W: Write> SnapshotEncoder<W> {
    /// Starts a snapshot `meta` carrying `extra` in its header, and writes the header.
    ///
    /// # Errors
    /// `InvalidInput` if `extra` exceeds [`EXTRA_BYTES_MAX`], or the writer's error.
    pub fn new(mut inner: W, meta: SnapshotMeta, extra: &[u8]) -> io::Result<SnapshotEncoder<W>> {
        if extra.len() > EXTRA_BYTES_MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a snapshot's extra of {} bytes exceeds {EXTRA_BYTES_MAX}",
                    extra.len()
                ),
            ));
        }
        let header = encode_header(meta, BLOCK_BYTES, extra);
        inner.write_all(&header)?;
        Ok(SnapshotEncoder {
            inner,
            meta,
            block: Vec::with_capacity(BLOCK_BYTES as usize),
            block_bytes: BLOCK_BYTES as usize,
            blocks: 0,
            body_bytes: 0,
            file_bytes: header.len() as u64,
        })
    }

    /// The snapshot being written.
    #[must_use]
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The body bytes written so far.
    #[must_use]
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    fn emit_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let length = u32::try_from(self.block.len()).expect("invariant: a block is bounded");
        let mut header = [0u8; BLOCK_HEADER_BYTES as usize];
        header[0..4].copy_from_slice(&length.to_le_bytes());
        header[4..8].copy_from_slice(&block_checksum(self.blocks, &self.block).to_le_bytes());
        self.inner.write_all(&header)?;
        self.inner.write_all(&self.block)?;
        self.blocks += 1;
        self.file_bytes += BLOCK_HEADER_BYTES + u64::from(length);
        self.block.clear();
        Ok(())
    }

    /// Writes the last block and the trailer, flushes, and returns the writer and the file's
    /// total bytes.
    ///
    /// # Errors
    /// The writer's error.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.emit_block()?;
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        trailer[4..12].copy_from_slice(&self.blocks.to_le_bytes());
        trailer[12..20].copy_from_slice(&self.body_bytes.to_le_bytes());
        let checksum = crc32c::crc32c(&trailer[0..20]);
        trailer[20..24].copy_from_slice(&checksum.to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        Ok((self.inner, self.file_bytes + TRAILER_BYTES))
    }
}

impl<W: Write> Write for SnapshotEncoder<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.block_bytes - self.block.len();
        let taken = room.min(bytes.len());
        self.block.extend_from_slice(&bytes[..taken]);
        self.body_bytes += taken as u64;
        if self.block.len() == self.block_bytes {
            self.emit_block()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial block stays buffered: blocks are only cut at `block_bytes` or at the end,
        // so the file's layout does not depend on when the caller flushes.
        self.inner.flush()
    }
}

/// Reads a snapshot's body, verifying every block as it streams, and the trailer at the end.
///
/// [`Read::read`] returns `Ok(0)` only once the trailer has been verified and nothing follows
/// it, so a caller that reads to the end has read an intact snapshot. Damage is an
/// [`io::Error`] of kind `InvalidData` whose inner error is a [`StorageError::Corrupt`] naming
/// the file and the offset (see [`corruption`]); once damaged, every later read fails too.
#[derive(Debug)]
pub struct SnapshotReader<R: Read> {
    inner: R,
    file: PathBuf,
    meta: SnapshotMeta,
    extra: Vec<u8>,
    block_bytes: u32,
    /// The file offset of the next byte `inner` yields.
    offset: u64,
    block: Vec<u8>,
    /// How much of `block` the caller has read.
    position: usize,
    blocks: u64,
    body_bytes: u64,
    finished: bool,
    failed: Option<(u64, String)>,
}

/// The [`StorageError`] inside an error returned by [`SnapshotReader`], if it is corruption.
#[must_use]
pub fn corruption(error: &io::Error) -> Option<&StorageError> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StorageError>())
}

/// Reads until `buffer` is full or the reader ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header of the snapshot in `inner`; `file` names it in errors.
    /// `expected`, if given, is the snapshot the caller expects (from the file name).
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] if the header is damaged, torn, of another version or of
    /// another snapshot; [`StorageError::Io`] if reading fails.
    pub fn new(
        mut inner: R,
        file: impl Into<PathBuf>,
        expected: Option<SnapshotMeta>,
    ) -> Result<SnapshotReader<R>, StorageError> {
        let file = file.into();
        let corrupt = |offset: u64, reason: String| StorageError::corrupt(&file, offset, reason);
        let mut fixed = [0u8; HEADER_FIXED_BYTES as usize];
        let read = read_full(&mut inner, &mut fixed).map_err(StorageError::io("read", &file))?;
        if read < fixed.len() {
            return Err(corrupt(
                read as u64,
                format!("the file ends at byte {read}, inside the snapshot header"),
            ));
        }
        if &fixed[0..8] != MAGIC {
            return Err(corrupt(0, "bad magic: not a Chorus snapshot".to_owned()));
        }
        let extra_bytes = u32::from_le_bytes(array(&fixed[32..36]));
        if extra_bytes > EXTRA_BYTES_MAX {
            return Err(corrupt(
                32,
                format!("a header extra of {extra_bytes} bytes, above {EXTRA_BYTES_MAX}"),
            ));
        }
        let mut rest = vec![0u8; extra_bytes as usize + 4];
        let read = read_full(&mut inner, &mut rest).map_err(StorageError::io("read", &file))?;
        if read < rest.len() {
            // Either the file is torn inside the header or `extra_bytes` is damaged; the
            // field is where the two stop agreeing.
            let end = HEADER_FIXED_BYTES + read as u64;
            return Err(corrupt(
                32,
                format!(
                    "the header's extra of {extra_bytes} bytes runs past the end of the file at                      byte {end}"
                ),
            ));
        }
        let checksum_at = rest.len() - 4;
        let stored = u32::from_le_bytes(array(&rest[checksum_at..]));
        let computed = crc32c::crc32c_append(crc32c::crc32c(&fixed), &rest[..checksum_at]);
        if stored != computed {
            return Err(corrupt(
                0,
                format!(
                    "snapshot header checksum mismatch (bytes 0..{})",
                    HEADER_FIXED_BYTES + rest.len() as u64
                ),
            ));
        }
        let version = u32::from_le_bytes(array(&fixed[8..12]));
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(corrupt(
                8,
                format!(
                    "unknown snapshot format version {version} (this build reads \
                     {SNAPSHOT_FORMAT_VERSION})"
                ),
            ));
        }
        let meta = SnapshotMeta {
            index: LogIndex(u64::from_le_bytes(array(&fixed[12..20]))),
            term: Term(u64::from_le_bytes(array(&fixed[20..28]))),
        };
        if let Some(expected) = expected.filter(|&expected| expected != meta) {
            return Err(corrupt(
                12,
                format!(
                    "the header holds the snapshot at {} of term {}, the name says {} of term {}",
                    meta.index, meta.term, expected.index, expected.term
                ),
            ));
        }
        let block_bytes = u32::from_le_bytes(array(&fixed[28..32]));
        if block_bytes == 0 || block_bytes > BLOCK_BYTES_LIMIT {
            return Err(corrupt(
                28,
                format!("a block size of {block_bytes} bytes, outside 1..={BLOCK_BYTES_LIMIT}"),
            ));
        }
        rest.truncate(checksum_at);
        Ok(SnapshotReader {
            inner,
            file,
            meta,
            extra: rest,
            block_bytes,
            offset: HEADER_FIXED_BYTES + u64::from(extra_bytes) + 4,
            block: Vec::new(),
            position: 0,
            blocks: 0,
            body_bytes: 0,
            finished: false,
            failed: None,
        })
    }

    /// The snapshot's index and term, from its header.
    #[must_use]
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The header's opaque extra bytes.
    #[must_use]
    pub fn extra(&self) -> &[u8] {
        &self.extra
    }

    /// The file this reader reads.
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reads the whole body, discarding it, and returns its bytes.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the file and offset of the first damage, or
    /// [`StorageError::Io`].
    pub fn verify_to_end(mut self) -> Result<u64, StorageError> {
        let mut sink = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut sink) {
                Ok(0) => return Ok(self.body_bytes),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(match self.failed.take() {
                        Some((offset, reason)) => StorageError::corrupt(&self.file, offset, reason),
                        None => StorageError::io("read", &self.file)(error),
                    });
                }
            }
        }
    }

    fn fail(&mut self, offset: u64, reason: String) -> io::Error {
        self.failed = Some((offset, reason.clone()));
        io::Error::new(
            io::ErrorKind::InvalidData,
            StorageError::corrupt(&self.file, offset, reason),
        )
    }

    /// Reads and checks the next block, or the trailer.
    fn next_block(&mut self) -> io::Result<()> {
        let start = self.offset;
        let mut header = [0u8; BLOCK_HEADER_BYTES as usize];
        let read = read_full(&mut self.inner, &mut header)?;
        self.offset += read as u64;
        if read < header.len() {
            return Err(self.fail(
                start,
                format!(
                    "the file ends at byte {} without its trailer: torn or truncated",
                    self.offset
                ),
            ));
        }
        let length = u32::from_le_bytes(array(&header[0..4]));
        if length == 0 {
            return self.trailer(start, &header);
        }
        if length > self.block_bytes {
            return Err(self.fail(
                start,
                format!(
                    "block {} claims {length} bytes, above the file's block size of {}",
                    self.blocks, self.block_bytes
                ),
            ));
        }
        self.block.clear();
        self.block.resize(length as usize, 0);
        self.position = 0;
        let read = read_full(&mut self.inner, &mut self.block)?;
        self.offset += read as u64;
        if read < self.block.len() {
            self.block.clear();
            return Err(self.fail(
                start,
                format!(
                    "the file ends at byte {} inside block {}: torn or truncated",
                    self.offset, self.blocks
                ),
            ));
        }
        let stored = u32::from_le_bytes(array(&header[4..8]));
        if block_checksum(self.blocks, &self.block) != stored {
            self.block.clear();
            return Err(self.fail(start, format!("block {} checksum mismatch", self.blocks)));
        }
        self.blocks += 1;
        self.body_bytes += u64::from(length);
        Ok(())
    }

    /// Checks the trailer whose first 8 bytes are `first`, and that nothing follows it.
    fn trailer(&mut self, start: u64, first: &[u8]) -> io::Result<()> {
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        trailer[..first.len()].copy_from_slice(first);
        let read = read_full(&mut self.inner, &mut trailer[first.len()..])?;
        self.offset += read as u64;
        if first.len() + read < trailer.len() {
            return Err(self.fail(
                start,
                format!(
                    "the file ends at byte {} inside its trailer: torn or truncated",
                    self.offset
                ),
            ));
        }
        if crc32c::crc32c(&trailer[0..20]) != u32::from_le_bytes(array(&trailer[20..24])) {
            return Err(self.fail(start, "trailer checksum mismatch".to_owned()));
        }
        let blocks = u64::from_le_bytes(array(&trailer[4..12]));
        let body_bytes = u64::from_le_bytes(array(&trailer[12..20]));
        if (blocks, body_bytes) != (self.blocks, self.body_bytes) {
            return Err(self.fail(
                start,
                format!(
                    "the trailer counts {blocks} blocks of {body_bytes} bytes, the file holds \
                     {} blocks of {} bytes",
                    self.blocks, self.body_bytes
                ),
            ));
        }
        let mut after = [0u8; 1];
        if read_full(&mut self.inner, &mut after)? > 0 {
            return Err(self.fail(self.offset, "bytes after the trailer".to_owned()));
        }
        self.finished = true;
        Ok(())
    }
}

impl<R: Read> Read for SnapshotReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if let Some((offset, reason)) = self.failed.clone() {
            return Err(self.fail(offset, reason));
        }
        while self.position == self.block.len() {
            if self.finished || buffer.is_empty() {
                return Ok(0);
            }
            self.next_block()?;
        }
        let taken = buffer.len().min(self.block.len() - self.position);
        buffer[..taken].copy_from_slice(&self.block[self.position..self.position + taken]);
        self.position += taken;
        Ok(taken)
    }
}

/// A snapshot in the store that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedSnapshot {
    /// The snapshot its file name stands for.
    pub meta: SnapshotMeta,
    /// The file.
    pub file: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// A finished, durable snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its index and term.
    pub meta: SnapshotMeta,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes, header and framing included.
    pub file_bytes: u64,
}

/// The snapshot files of one node, in one directory. Cheap to clone; clones may be used from
/// other threads (a snapshot is written off the driver's thread).
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    directory: PathBuf,
}

impl SnapshotStore {
    /// The store in `directory`, created if missing. Changes nothing else; call
    /// [`SnapshotStore::remove_temporary_files`] once at startup.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be created.
    pub fn new(directory: impl Into<PathBuf>) -> Result<SnapshotStore, StorageError> {
        let directory = directory.into();
        fs::create_dir_all(&directory).map_err(StorageError::io("create", &directory))?;
        Ok(SnapshotStore { directory })
    }

    /// The directory.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Where the finished snapshot `meta` lives (whether or not it exists).
    #[must_use]
    pub fn path(&self, meta: SnapshotMeta) -> PathBuf {
        self.directory.join(snapshot_file_name(meta))
    }

    /// Removes the temporary files of writers a crash interrupted; returns how many. Call it
    /// only when no writer is running (at startup).
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be listed or a file removed.
    pub fn remove_temporary_files(&self) -> Result<usize, StorageError> {
        let mut removed = 0;
        for (name, path) in self.names()? {
            if name.starts_with("snap-") && name.ends_with(TEMPORARY_SUFFIX) {
                fs::remove_file(&path).map_err(StorageError::io("remove", &path))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_directory(&self.directory)?;
        }
        Ok(removed)
    }

    fn names(&self) -> Result<Vec<(String, PathBuf)>, StorageError> {
        let listing =
            fs::read_dir(&self.directory).map_err(StorageError::io("list", &self.directory))?;
        let mut names = Vec::new();
        for item in listing {
            let item = item.map_err(StorageError::io("list", &self.directory))?;
            if let Some(name) = item.file_name().to_str() {
                names.push((name.to_owned(), item.path()));
            }
        }
        Ok(names)
    }

    /// The finished snapshots, newest first (by index, then term). Not verified.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be listed.
    pub fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        let mut metas: Vec<SnapshotMeta> = self
            .names()?
            .iter()
            .filter_map(|(name, _)| parse_snapshot_file_name(name))
            .collect();
        metas.sort_unstable_by(|a, b| b.cmp(a));
        Ok(metas)
    }

    /// Starts writing the snapshot `meta` under a temporary name.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the temporary file cannot be created.
    pub fn create(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, StorageError> {
        self.create_with_extra(meta, &[])
    }

    /// Starts writing the snapshot `meta` whose header carries `extra`.
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if `extra` exceeds [`EXTRA_BYTES_MAX`];
    /// [`StorageError::Io`] if the temporary file cannot be created or written.
    pub fn create_with_extra(
        &self,
        meta: SnapshotMeta,
        extra: &[u8],
    ) -> Result<SnapshotWriter, StorageError> {
        if extra.len() > EXTRA_BYTES_MAX as usize {
            return Err(StorageError::InvalidWrite(format!(
                "a snapshot's extra of {} bytes exceeds {EXTRA_BYTES_MAX}",
                extra.len()
            )));
        }
        let (file, temporary) = self.create_temporary(meta)?;
        let mut writer = SnapshotWriter {
            encoder: None,
            temporary: temporary.clone(),
            store: self.clone(),
            meta,
        };
        let encoder = SnapshotEncoder::new(BufWriter::with_capacity(1 << 16, file), meta, extra)
            .map_err(StorageError::io("write", &temporary))?;
        writer.encoder = Some(encoder);
        Ok(writer)
    }

    /// Starts receiving the raw bytes of the snapshot file `meta` in chunks (a follower's
    /// side of `InstallSnapshot`).
    ///
    /// # Errors
    /// [`StorageError::Io`] if the temporary file cannot be created.
    pub fn create_partial(&self, meta: SnapshotMeta) -> Result<PartialSnapshot, StorageError> {
        let (file, temporary) = self.create_temporary(meta)?;
        Ok(PartialSnapshot {
            file: Some(file),
            temporary,
            store: self.clone(),
            meta,
            received_bytes: 0,
        })
    }

    fn create_temporary(&self, meta: SnapshotMeta) -> Result<(File, PathBuf), StorageError> {
        let number = TEMPORARY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "snap-{:020}-{:020}.{number}{TEMPORARY_SUFFIX}",
            meta.index.0, meta.term.0
        );
        let path = self.directory.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StorageError::io("create", &path))?;
        Ok((file, path))
    }

    /// Opens the finished snapshot `meta` for reading; the reader verifies as it streams.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the file cannot be opened (missing included), or
    /// [`StorageError::Corrupt`] if its header is damaged.
    pub fn open(
        &self,
        meta: SnapshotMeta,
    ) -> Result<SnapshotReader<BufReader<File>>, StorageError> {
        let path = self.path(meta);
        open_reader(&path, Some(meta))
    }

    /// Reads the whole snapshot `meta`, checking every block and the trailer; returns the
    /// body's bytes.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the file and offset of the damage, or
    /// [`StorageError::Io`].
    pub fn verify(&self, meta: SnapshotMeta) -> Result<u64, StorageError> {
        self.open(meta)?.verify_to_end()
    }

    /// The size of the finished snapshot `meta`'s file.
    ///
    /// # Errors
    /// [`StorageError::Io`] if it cannot be read.
    pub fn file_bytes(&self, meta: SnapshotMeta) -> Result<u64, StorageError> {
        let path = self.path(meta);
        Ok(fs::metadata(&path)
            .map_err(StorageError::io("stat", &path))?
            .len())
    }

    /// The newest snapshot that verifies whole, and the newer ones that did not.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory or a file cannot be read (damage is not an
    /// error here: it is reported in the list).
    pub fn latest_valid(
        &self,
    ) -> Result<(Option<SnapshotMeta>, Vec<DamagedSnapshot>), StorageError> {
        let mut damaged = Vec::new();
        for meta in self.list()? {
            match self.verify(meta) {
                Ok(_) => return Ok((Some(meta), damaged)),
                Err(StorageError::Corrupt {
                    file,
                    offset,
                    reason,
                }) => damaged.push(DamagedSnapshot {
                    meta,
                    file,
                    offset,
                    reason,
                }),
                Err(error) => return Err(error),
            }
        }
        Ok((None, damaged))
    }

    /// Keeps the `keep` newest finished snapshots and deletes the older ones, oldest first;
    /// returns the deleted ones. Call it only after the newest is durable.
    ///
    /// # Errors
    /// [`StorageError::Io`] if a file cannot be deleted or the directory synced.
    ///
    /// # Panics
    /// If `keep` is zero: the newest snapshot is never deleted.
    pub fn retain(&self, keep: usize) -> Result<Vec<SnapshotMeta>, StorageError> {
        assert!(keep > 0, "retain must keep the newest snapshot");
        let metas = self.list()?;
        let mut deleted = Vec::new();
        for &meta in metas.iter().skip(keep).rev() {
            let path = self.path(meta);
            fs::remove_file(&path).map_err(StorageError::io("remove", &path))?;
            deleted.push(meta);
        }
        if !deleted.is_empty() {
            sync_directory(&self.directory)?;
        }
        Ok(deleted)
    }

    /// As [`SnapshotStore::retain`], but the files are removed by `janitor`, off the caller's
    /// thread (removing a large file takes the file system a while). Returns the snapshots
    /// whose removal was handed over, oldest first. A snapshot handed over but not yet removed
    /// is still listed; a restart meanwhile keeps it, harmlessly, until the next cleanup.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be listed.
    ///
    /// # Panics
    /// If `keep` is 0.
    pub fn retain_later(
        &self,
        keep: usize,
        janitor: &Janitor,
    ) -> Result<Vec<SnapshotMeta>, StorageError> {
        assert!(keep > 0, "retain must keep the newest snapshot");
        let metas = self.list()?;
        let doomed: Vec<SnapshotMeta> = metas.iter().skip(keep).rev().copied().collect();
        let files = doomed.iter().map(|&meta| self.path(meta)).collect();
        janitor.delete(&self.directory, files);
        Ok(doomed)
    }

    /// Renames a whole, synced temporary file to its final name and syncs the directory.
    fn publish(&self, temporary: &Path, meta: SnapshotMeta) -> Result<PathBuf, StorageError> {
        let path = self.path(meta);
        fs::rename(temporary, &path).map_err(StorageError::io("rename", temporary))?;
        sync_directory(&self.directory)?;
        Ok(path)
    }
}

/// Opens the snapshot file at `path` and checks its header.
fn open_reader(
    path: &Path,
    expected: Option<SnapshotMeta>,
) -> Result<SnapshotReader<BufReader<File>>, StorageError> {
    let file = File::open(path).map_err(StorageError::io("open", path))?;
    SnapshotReader::new(BufReader::with_capacity(1 << 16, file), path, expected)
}

/// A snapshot being written under a temporary name; [`Write`] its body, then
/// [`SnapshotWriter::finish`]. Dropped (or [`SnapshotWriter::abort`]ed) unfinished, it removes
/// its temporary file.
#[derive(Debug)]
pub struct SnapshotWriter {
    encoder: Option<SnapshotEncoder<BufWriter<File>>>,
    temporary: PathBuf,
    store: SnapshotStore,
    meta: SnapshotMeta,
}

impl SnapshotWriter {
    /// The snapshot being written.
    #[must_use]
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Writes the trailer, fsyncs the file, renames it to its final name and fsyncs the
    /// directory: once this returns, the snapshot survives a crash.
    ///
    /// # Errors
    /// [`StorageError::Io`]; the temporary file is removed.
    pub fn finish(mut self) -> Result<SnapshotFile, StorageError> {
        let encoder = self
            .encoder
            .take()
            .expect("invariant: the encoder is only taken by finish");
        let (buffered, file_bytes) = encoder
            .finish()
            .map_err(StorageError::io("write", &self.temporary))?;
        let file = buffered
            .into_inner()
            .map_err(|error| StorageError::io("write", &self.temporary)(error.into_error()))?;
        file.sync_all()
            .map_err(StorageError::io("fsync", &self.temporary))?;
        drop(file);
        let path = self.store.publish(&self.temporary, self.meta)?;
        Ok(SnapshotFile {
            meta: self.meta,
            path,
            file_bytes,
        })
    }

    /// Gives up: removes the temporary file.
    pub fn abort(self) {
        drop(self);
    }

    /// Flushes the blocks written so far to the file and fsyncs its data, so that a long
    /// snapshot reaches the disk in steady steps rather than in one burst at
    /// [`SnapshotWriter::finish`] (which competes with the log's fsyncs). The partial block
    /// stays buffered. The file is still temporary: this promises nothing about a crash.
    ///
    /// # Errors
    /// [`StorageError::Io`].
    pub fn sync_data(&mut self) -> Result<(), StorageError> {
        let encoder = self
            .encoder
            .as_mut()
            .expect("invariant: the encoder is only taken by finish");
        encoder
            .inner
            .flush()
            .map_err(StorageError::io("write", &self.temporary))?;
        encoder
            .inner
            .get_ref()
            .sync_data()
            .map_err(StorageError::io("fsync", &self.temporary))
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.encoder
            .as_mut()
            .expect("invariant: the encoder is only taken by finish")
            .write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder
            .as_mut()
            .expect("invariant: the encoder is only taken by finish")
            .flush()
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // After a successful finish the temporary name no longer exists; otherwise this is an
        // abandoned write. Failure to remove is harmless: open removes it.
        let _ = fs::remove_file(&self.temporary);
    }
}

/// A snapshot file being received in chunks of its raw bytes (`InstallSnapshot`).
///
/// Chunks must arrive without holes: a chunk may start anywhere up to the bytes received so
/// far, so a duplicated or resent chunk is harmless, and [`PartialSnapshot::received_bytes`]
/// is where the sender resumes. Dropped (or aborted) unfinished, it removes its temporary file.
#[derive(Debug)]
pub struct PartialSnapshot {
    file: Option<File>,
    temporary: PathBuf,
    store: SnapshotStore,
    meta: SnapshotMeta,
    received_bytes: u64,
}

impl PartialSnapshot {
    /// The snapshot being received.
    #[must_use]
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// The bytes received without holes: the offset of the next chunk to ask for.
    #[must_use]
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Writes `bytes` at `offset` of the file; returns the bytes received so far.
    ///
    /// # Errors
    /// [`StorageError::InvalidWrite`] if `offset` is past the bytes received (a hole; nothing
    /// is written), or [`StorageError::Io`].
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<u64, StorageError> {
        if offset > self.received_bytes {
            return Err(StorageError::InvalidWrite(format!(
                "a snapshot chunk at offset {offset} leaves a hole after the {} bytes received",
                self.received_bytes
            )));
        }
        let file = self
            .file
            .as_mut()
            .expect("invariant: the file is only taken by finish");
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(bytes))
            .map_err(StorageError::io("write", &self.temporary))?;
        self.received_bytes = self.received_bytes.max(offset + bytes.len() as u64);
        Ok(self.received_bytes)
    }

    /// Fsyncs the file, verifies it whole with the reader (it must be the snapshot `meta`),
    /// renames it to its final name and fsyncs the directory.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the temporary file and the offset if the bytes
    /// received do not make a whole, intact snapshot `meta` (the temporary file is removed);
    /// [`StorageError::Io`].
    pub fn finish(mut self) -> Result<SnapshotFile, StorageError> {
        let file = self
            .file
            .take()
            .expect("invariant: the file is only taken by finish");
        file.set_len(self.received_bytes)
            .map_err(StorageError::io("truncate", &self.temporary))?;
        file.sync_all()
            .map_err(StorageError::io("fsync", &self.temporary))?;
        drop(file);
        open_reader(&self.temporary, Some(self.meta))?.verify_to_end()?;
        let path = self.store.publish(&self.temporary, self.meta)?;
        Ok(SnapshotFile {
            meta: self.meta,
            path,
            file_bytes: self.received_bytes,
        })
    }

    /// Gives up: removes the temporary file.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for PartialSnapshot {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

/// Verifies a whole encoded snapshot held in memory (`name` names it in errors); returns its
/// header's snapshot and its body's bytes.
///
/// # Errors
/// [`StorageError::Corrupt`] naming `name` and the offset of the damage.
pub fn verify_bytes(
    bytes: &[u8],
    name: &str,
    expected: Option<SnapshotMeta>,
) -> Result<(SnapshotMeta, u64), StorageError> {
    let reader = SnapshotReader::new(bytes, name, expected)?;
    let meta = reader.meta();
    Ok((meta, reader.verify_to_end()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(term),
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_index() {
        let name = snapshot_file_name(meta(7, 2));
        assert_eq!(name, "snap-00000000000000000007-00000000000000000002.snap");
        assert_eq!(parse_snapshot_file_name(&name), Some(meta(7, 2)));
        assert_eq!(parse_snapshot_file_name("snap-7-2.snap"), None);
        assert_eq!(parse_snapshot_file_name(&format!("{name}.tmp")), None);
        assert!(snapshot_file_name(meta(9, 5)) < snapshot_file_name(meta(10, 1)));
    }

    #[test]
    fn an_encoded_snapshot_reads_back_across_block_boundaries() {
        for length in [0usize, 1, 65_535, 65_536, 65_537, 200_000] {
            let body: Vec<u8> = (0..length).map(|i| (i * 7 % 251) as u8).collect();
            let mut encoder = SnapshotEncoder::new(Vec::new(), meta(5, 1), b"extra").expect("ok");
            for chunk in body.chunks(1000) {
                encoder.write_all(chunk).expect("ok");
            }
            let (bytes, file_bytes) = encoder.finish().expect("ok");
            assert_eq!(bytes.len() as u64, file_bytes);
            let mut reader =
                SnapshotReader::new(&bytes[..], "memory", Some(meta(5, 1))).expect("ok");
            assert_eq!(reader.extra(), b"extra");
            let mut read = Vec::new();
            reader.read_to_end(&mut read).expect("intact");
            assert_eq!(read, body, "length {length}");
        }
    }
}
