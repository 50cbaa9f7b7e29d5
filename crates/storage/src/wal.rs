//! The write-ahead log's on-disk format: segments of checksummed records.
//!
//! The log is a sequence of segment files in the storage directory, named
//! `wal-<sequence>.log` with the sequence number in 20 zero-padded decimal digits
//! (`wal-00000000000000000001.log`), so that names sort in write order. A writer appends to the
//! last segment and starts the next one once the current one passes its size limit. Replay
//! reads the segments in sequence order; their sequence numbers must be contiguous, but the
//! first need not be 1 and its first entry need not be index 1: a compaction deletes the
//! oldest segments once a snapshot marker (kind `3` below) covers them, and replay checks at
//! the end that a snapshot covers whatever the remaining segments no longer hold.
//!
//! Sequence numbers, not log indexes, name the segments: a log record may truncate the log, so
//! the first index of a later segment can be below the last index of an earlier one, while the
//! order in which records were written is what replay needs.
//!
//! # Segment header (24 bytes, integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CHORUSWL` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 8 | the segment's sequence number (must match the file name) |
//! | 20 | 4 | CRC-32C of bytes 0..20 |
//!
//! # Records, one after another from byte 24
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `length`: the number of bytes of `kind` and `payload` together (at least 1) |
//! | 4 | 4 | CRC-32C (Castagnoli) of `kind` and `payload` |
//! | 8 | 1 | `kind` |
//! | 9 | `length - 1` | `payload` |
//!
//! Kinds:
//! - `1`, **entries**: the payload is the [postcard] encoding of `(from: LogIndex,
//!   entries: Vec<Entry>)`, `from` being the first entry's index. Replay truncates the log from
//!   `from` (dropping a conflicting suffix written earlier) and appends the entries, which
//!   must be contiguous and must start at or below the log's last index plus one.
//! - `2`, **commit**: the payload is the commit index, 8 bytes little-endian. The last one
//!   read, with the hard-state file's, gives the commit index on restart.
//! - `3`, **snapshot marker**: the payload is 32 bytes, four `u64` little-endian: the
//!   snapshot's index, its term, `keep_from` (the first index the log keeps, at most the
//!   snapshot's index plus one) and the commit index when it was written. Written by a
//!   compaction once the snapshot file is durable, and synced before any segment is deleted;
//!   see [`crate::FileStorage`] for what replay makes of it.
//!
//! - `4`, **sync marker**: the payload is 32 bytes, four `u64` little-endian: the segment's
//!   sequence number, the marker's own byte offset in the segment, and the index and term of
//!   where the log ended when it was written (its last entry, or the snapshot's place if it
//!   held no entry after it). Appended right after every fsync of the segment (without an
//!   fsync of its own), it proves that every byte before it in its segment was durable: it
//!   is only ever written once they are. Carrying its own place makes a copy of it elsewhere
//!   (inside a client's command, say) worthless. Where the log ended tells a repair how far
//!   the log reached before a damage (below). Markers written before that was added have a
//!   16-byte payload (the first two words) and are still read.
//!
//! A record's `length` is at most the configured `record_bytes_max`; a larger one is
//! corruption, never an allocation.
//!
//! # Recovery
//!
//! A crash loses what was not synced, and a power cut can leave the unsynced tail of the last
//! segment in any state: cut short, zero-filled, garbage in the middle with later pages
//! present (the kernel writes pages back in any order).
//!
//! The last segment may also end in zeros by design: a writer that preallocates a segment
//! (`FileStorageOptions::preallocate`) writes its records into space that reads as zeros
//! until written. So where the last segment's records stop and every byte after them, to the
//! end of the file, is zero, that is the **clean end** of the log: nothing is cut and nothing
//! reported, and the writer goes on from there. Zeros cannot hide a synced record (a sync
//! marker is never zero), so this loses nothing that the rules below would keep. A closed
//! segment is cut to its last record before the next one starts, so zeros in it are damage. A disk can also flip bits in data that
//! was synced. Sync markers tell the two apart. Replay reads records until the first damage
//! in the last segment — a header or a record that is cut short, has a length out of range or
//! running past the end of the file, or fails its checksum — and then looks for a valid sync
//! marker (at its own offset) anywhere after the damage:
//! - **none**: the damage is in bytes never proven durable, a *torn tail*; recovery cuts it
//!   off at the damage (and reports it), wherever in the unsynced tail it is and whatever
//!   follows it;
//! - **one**: the damaged bytes were synced before that marker was written, so records this
//!   node may have acknowledged are lost. Recovery still cuts the segment at the damage
//!   (the records after it cannot be trusted to follow on), but first records in the
//!   hard-state file that the node is *repairing* ([`chorus_raft::HardState::repairing`]),
//!   and where the log ended before the damage: the latest of where the last valid sync
//!   marker after the damage says it ended and of the entries of the records that follow
//!   that marker (synced records whose own marker was lost with a power cut), readable one
//!   after another from it ([`chorus_raft::DurableState::log_end_before_damage`]; unknown if
//!   that marker is of the older, 16-byte kind). The Raft core then restarts in a later
//!   term, does not campaign, and votes only as that log would have, until a leader has
//!   brought its log back past everything it could have acknowledged (protocol-aware
//!   recovery, after Alagappan et al., FAST'18). The damage is reported
//!   ([`crate::RecoveryReport::synced_damage`]) for the operator.
//!
//! Damage in any earlier segment is always corruption (a segment is synced before the next
//! one starts), as are an unknown version, an undecodable payload behind a good checksum, and
//! records that do not fit together.
//!
//! Limits: the last synced batch is proven only once its marker reaches the disk. A process
//! that dies between the fsync and the marker's write, or a power cut before the marker is
//! written back, leaves that batch unproven, and a bit flip in it then would be cut as torn.
//! A segment written before sync markers existed has none, so damage in it is always cut.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use chorus_core::{LogIndex, Term};
use chorus_raft::{Entry, LogPosition};

use crate::StorageError;
use crate::array;
use crate::replay::Record;

/// The bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// The bytes of a record header (`length` and checksum), before `kind`.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"CHORUSWL";
const KIND_ENTRIES: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
const KIND_SYNCED: u8 = 4;
/// The bytes of a sync marker record: header, kind, sequence number, offset and where the
/// log ended.
pub const SYNC_MARKER_BYTES: u64 = RECORD_HEADER_BYTES + 1 + 32;
/// The bytes of a sync marker record written before markers said where the log ended.
const SYNC_MARKER_BYTES_V1: u64 = RECORD_HEADER_BYTES + 1 + 16;
/// Largest encoding of a `u64` as a postcard varint.
const VARINT_BYTES_MAX: u64 = 10;

/// The file name of the segment with this sequence number.
#[must_use]
pub fn segment_file_name(sequence: u64) -> String {
    format!("wal-{sequence:020}.log")
}

/// The sequence number in a segment's file name, or `None` if the name is not a segment's.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of the segment with this sequence number.
pub(crate) fn encode_segment_header(sequence: u64) -> [u8; 24] {
    let mut header = [0u8; 24];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&sequence.to_le_bytes());
    let checksum = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// An upper bound on the bytes one entry takes inside an entries record.
pub(crate) fn entry_bytes_bound(entry: &Entry) -> u64 {
    let payload = match &entry.payload {
        chorus_raft::EntryPayload::NoOp => 0,
        chorus_raft::EntryPayload::Command(command) => command.len() as u64,
        // Two set lengths, then one varint per member.
        chorus_raft::EntryPayload::Membership(membership) => {
            (2 + membership.voters.len() + membership.learners.len()) as u64 * VARINT_BYTES_MAX
        }
    };
    // Term, index, payload variant and command length, each at most one varint.
    4 * VARINT_BYTES_MAX + payload
}

/// An upper bound on the bytes of an entries record's `kind` and `payload`, beyond its
/// entries: the kind byte, `from` and the entry count.
pub(crate) const ENTRIES_RECORD_OVERHEAD_BYTES: u64 = 1 + 2 * VARINT_BYTES_MAX;

/// Appends one framed record to `out`.
pub(crate) fn encode_record(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Entries { from, entries } => encode_entries_record(*from, entries, out),
        Record::Commit(commit) => {
            let start = begin_record(out, KIND_COMMIT);
            out.extend_from_slice(&commit.0.to_le_bytes());
            finish_record(out, start);
        }
        Record::Synced {
            sequence,
            offset,
            log_end,
        } => {
            let start = begin_record(out, KIND_SYNCED);
            out.extend_from_slice(&sequence.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            if let Some(log_end) = log_end {
                out.extend_from_slice(&log_end.index.0.to_le_bytes());
                out.extend_from_slice(&log_end.term.0.to_le_bytes());
            }
            finish_record(out, start);
        }
        Record::Snapshot {
            snapshot,
            keep_from,
            commit,
        } => {
            let start = begin_record(out, KIND_SNAPSHOT);
            for word in [snapshot.index.0, snapshot.term.0, keep_from.0, commit.0] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            finish_record(out, start);
        }
    }
}

/// Appends one framed entries record to `out` (`from` is the first entry's index).
pub(crate) fn encode_entries_record(from: LogIndex, entries: &[Entry], out: &mut Vec<u8>) {
    let start = begin_record(out, KIND_ENTRIES);
    let body = std::mem::take(out);
    *out = postcard::to_extend(&(from, entries), body)
        .expect("invariant: encoding into a vector cannot fail");
    finish_record(out, start);
}

/// Reserves a record header in `out` and writes the kind; returns where the record starts.
fn begin_record(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    // The header is filled in by `finish_record`, once the body is known.
    out.extend_from_slice(&[0u8; 8]);
    out.push(kind);
    start
}

/// Fills in the header of the record that starts at `start` and runs to the end of `out`.
fn finish_record(out: &mut [u8], start: usize) {
    let body_start = start + 8;
    let length = u32::try_from(out.len() - body_start)
        .expect("invariant: the writer bounds records below record_bytes_max");
    let checksum = crc32c::crc32c(&out[body_start..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Decodes a record's `kind` and `payload`, or says why it cannot.
fn decode_body(body: &[u8]) -> Result<Record, String> {
    let (&kind, payload) = body.split_first().ok_or("an empty record")?;
    match kind {
        KIND_ENTRIES => {
            let ((from, entries), rest): ((LogIndex, Vec<Entry>), &[u8]) =
                postcard::take_from_bytes(payload)
                    .map_err(|error| format!("undecodable entries record: {error}"))?;
            if !rest.is_empty() {
                return Err(format!(
                    "an entries record has {} bytes after its entries",
                    rest.len()
                ));
            }
            if entries.is_empty() {
                return Err("an entries record without entries".to_owned());
            }
            Ok(Record::Entries { from, entries })
        }
        KIND_COMMIT => {
            let bytes: [u8; 8] = payload
                .try_into()
                .map_err(|_| format!("a commit record of {} bytes, not 8", payload.len()))?;
            Ok(Record::Commit(LogIndex(u64::from_le_bytes(bytes))))
        }
        KIND_SNAPSHOT => {
            if payload.len() != 32 {
                return Err(format!(
                    "a snapshot marker of {} bytes, not 32",
                    payload.len()
                ));
            }
            let word = |at: usize| u64::from_le_bytes(array(&payload[at..at + 8]));
            Ok(Record::Snapshot {
                snapshot: chorus_raft::SnapshotMeta {
                    index: LogIndex(word(0)),
                    term: chorus_core::Term(word(8)),
                },
                keep_from: LogIndex(word(16)),
                commit: LogIndex(word(24)),
            })
        }
        KIND_SYNCED => {
            if payload.len() != 16 && payload.len() != 32 {
                return Err(format!(
                    "a sync marker of {} bytes, not 16 or 32",
                    payload.len()
                ));
            }
            let word = |at: usize| u64::from_le_bytes(array(&payload[at..at + 8]));
            Ok(Record::Synced {
                sequence: word(0),
                offset: word(8),
                log_end: (payload.len() == 32).then(|| LogPosition {
                    index: LogIndex(word(16)),
                    term: Term(word(24)),
                }),
            })
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

/// What reading one segment found.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    /// The end of the last good record (or of the header): where a torn tail is cut.
    pub(crate) good_end: u64,
    /// The file's length as read.
    pub(crate) length: u64,
    /// Where the bytes that are not zero end: the file's length, or less when the file ends
    /// in zeros (preallocated space). What a cut drops is counted up to here.
    pub(crate) data_end: u64,
    /// Set when the damage at `good_end` is in synced data (a sync marker follows it): the
    /// records from there on may have been acknowledged, and cutting them loses them.
    pub(crate) synced_damage: Option<SyncedDamage>,
    /// Set when every byte from `good_end` (past the header) to the end of the last segment
    /// is zero: space allocated ahead of the records, or pages a crash never wrote back. It
    /// holds nothing, and is the clean end of the log rather than a torn tail.
    pub(crate) zero_tail: bool,
}

/// Damage that a later sync marker proves was in durable bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyncedDamage {
    /// The offset of the first valid sync marker after the damage.
    pub(crate) marker: u64,
    /// What is wrong at the damaged offset.
    pub(crate) reason: String,
    /// Where the log ended before the damage, as far as the bytes after it say (see the
    /// module docs); `None` if the last marker after it does not say.
    pub(crate) log_end: Option<LogPosition>,
}

impl SegmentScan {
    /// Whether the segment ends with a torn tail.
    pub(crate) fn is_torn(&self) -> bool {
        self.good_end < self.length
    }
}

/// Reads the segment at `path` and hands each good record, with its offset, to `on_record`
/// (sync markers are checked here and not handed on). A torn tail is tolerated only when
/// `is_last`; see the module docs.
pub(crate) fn scan_segment(
    path: &Path,
    sequence: u64,
    is_last: bool,
    record_bytes_max: u32,
    mut on_record: impl FnMut(Record, u64) -> Result<(), String>,
) -> Result<SegmentScan, StorageError> {
    let file = File::open(path).map_err(StorageError::io("open", path))?;
    let length = file
        .metadata()
        .map_err(StorageError::io("stat", path))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let read_error = StorageError::io;
    let corrupt = |offset: u64, reason: String| StorageError::corrupt(path, offset, reason);
    // Damage at `offset`: a torn tail if nothing after it proves it was synced.
    let damage = |offset: u64, reason: String| -> Result<SegmentScan, StorageError> {
        if !is_last {
            return Err(corrupt(offset, reason));
        }
        let data_end = nonzero_end(path, offset)?;
        if offset >= SEGMENT_HEADER_BYTES && data_end == offset {
            return Ok(SegmentScan {
                good_end: offset,
                length,
                data_end,
                synced_damage: None,
                zero_tail: true,
            });
        }
        let synced_damage = match find_sync_markers(path, sequence, offset + 1)? {
            None => None,
            Some(markers) => Some(SyncedDamage {
                marker: markers.first,
                reason,
                log_end: log_end_after(path, &markers, length, record_bytes_max)?,
            }),
        };
        Ok(SegmentScan {
            good_end: offset,
            length,
            data_end,
            synced_damage,
            zero_tail: false,
        })
    };

    if length < SEGMENT_HEADER_BYTES {
        return damage(
            0,
            format!("a segment of {length} bytes, shorter than its header"),
        );
    }
    let mut header = [0u8; 24];
    reader
        .read_exact(&mut header)
        .map_err(read_error("read", path))?;
    if &header[0..8] != MAGIC {
        return damage(0, "bad magic: not a Chorus log segment".to_owned());
    }
    if crc32c::crc32c(&header[0..20]) != u32::from_le_bytes(array(&header[20..24])) {
        return damage(0, "segment header checksum mismatch".to_owned());
    }
    let version = u32::from_le_bytes(array(&header[8..12]));
    if version != FORMAT_VERSION {
        return Err(corrupt(
            8,
            format!("unknown log format version {version} (this build reads {FORMAT_VERSION})"),
        ));
    }
    let stored_sequence = u64::from_le_bytes(array(&header[12..20]));
    if stored_sequence != sequence {
        return Err(corrupt(
            12,
            format!("the header says segment {stored_sequence}, the file name {sequence}"),
        ));
    }

    let mut offset = SEGMENT_HEADER_BYTES;
    let mut body = Vec::new();
    while offset < length {
        let remaining = length - offset;
        if remaining < RECORD_HEADER_BYTES {
            return damage(offset, "the segment ends inside a record header".to_owned());
        }
        let mut record_header = [0u8; 8];
        reader
            .read_exact(&mut record_header)
            .map_err(read_error("read", path))?;
        let record_length = u32::from_le_bytes(array(&record_header[0..4]));
        let checksum = u32::from_le_bytes(array(&record_header[4..8]));
        if record_length == 0 || record_length > record_bytes_max {
            return damage(
                offset,
                format!("record length {record_length} is outside 1..={record_bytes_max}"),
            );
        }
        let record_end = offset + RECORD_HEADER_BYTES + u64::from(record_length);
        if record_end > length {
            return damage(
                offset,
                format!("a record of {record_length} bytes runs past the end of the segment"),
            );
        }
        body.clear();
        body.resize(record_length as usize, 0);
        reader
            .read_exact(&mut body)
            .map_err(read_error("read", path))?;
        if crc32c::crc32c(&body) != checksum {
            return damage(offset, "record checksum mismatch".to_owned());
        }
        match decode_body(&body).map_err(|reason| corrupt(offset, reason))? {
            Record::Synced {
                sequence: marked_sequence,
                offset: marked_offset,
                ..
            } => {
                if (marked_sequence, marked_offset) != (sequence, offset) {
                    return Err(corrupt(
                        offset,
                        format!(
                            "a sync marker of byte {marked_offset} of segment \
                             {marked_sequence} found at byte {offset} of segment {sequence}"
                        ),
                    ));
                }
            }
            record => on_record(record, offset).map_err(|reason| corrupt(offset, reason))?,
        }
        offset = record_end;
    }
    Ok(SegmentScan {
        good_end: offset,
        length,
        data_end: length,
        synced_damage: None,
        zero_tail: false,
    })
}

/// The offset right after the last byte that is not zero in the file at `path`, looking from
/// `from` on; `from` itself if every byte from there to the end is zero. Reads the rest of
/// the file once, in bounded chunks.
fn nonzero_end(path: &Path, from: u64) -> Result<u64, StorageError> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(StorageError::io("open", path))?;
    file.seek(SeekFrom::Start(from))
        .map_err(StorageError::io("seek", path))?;
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = from;
    let mut end = from;
    loop {
        let read = file
            .read(&mut chunk)
            .map_err(StorageError::io("read", path))?;
        if read == 0 {
            return Ok(end);
        }
        if let Some(last) = chunk[..read].iter().rposition(|&byte| byte != 0) {
            end = at + last as u64 + 1;
        }
        at += read as u64;
    }
}

/// The valid sync markers found after a damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FoundMarkers {
    /// The offset of the first one.
    first: u64,
    /// The offset of the last one.
    last: u64,
    /// The last one's length in bytes.
    last_bytes: u64,
    /// Where the last one says the log ended (`None` for a marker of the older kind).
    last_log_end: Option<LogPosition>,
}

/// The first and the last valid sync marker of segment `sequence` that start at or after
/// `from` in the file at `path` and sit at the offset they name, if any (of either kind).
/// Reads the rest of the file once, in bounded chunks.
fn find_sync_markers(
    path: &Path,
    sequence: u64,
    from: u64,
) -> Result<Option<FoundMarkers>, StorageError> {
    use std::io::{Seek, SeekFrom};
    let longest = SYNC_MARKER_BYTES as usize;
    let shortest = SYNC_MARKER_BYTES_V1 as usize;
    let mut file = File::open(path).map_err(StorageError::io("open", path))?;
    file.seek(SeekFrom::Start(from))
        .map_err(StorageError::io("seek", path))?;
    let mut window: Vec<u8> = Vec::with_capacity((1 << 16) + longest);
    // The file offset of `window[0]`.
    let mut window_start = from;
    let mut chunk = vec![0u8; 1 << 16];
    let mut found: Option<FoundMarkers> = None;
    loop {
        let read = file
            .read(&mut chunk)
            .map_err(StorageError::io("read", path))?;
        window.extend_from_slice(&chunk[..read]);
        // At the end of the file, every start a short marker fits in; before it, only
        // those a long one fits in (the others are looked at again with more bytes).
        let last_start = if read == 0 {
            window.len().saturating_sub(shortest - 1)
        } else {
            window.len().saturating_sub(longest - 1)
        };
        for start in 0..last_start {
            let at = window_start + start as u64;
            let Some((bytes, log_end)) = sync_marker_at(&window[start..], sequence, at) else {
                continue;
            };
            found = Some(FoundMarkers {
                first: found.map_or(at, |found| found.first),
                last: at,
                last_bytes: bytes,
                last_log_end: log_end,
            });
        }
        if read == 0 {
            return Ok(found);
        }
        // Keep the bytes a marker starting near the end of the window could still need.
        window.drain(..last_start);
        window_start += last_start as u64;
    }
}

/// The length of the valid sync marker of segment `sequence` at the start of `bytes`, which
/// sit at offset `at`, and where it says the log ended; `None` if there is none.
fn sync_marker_at(bytes: &[u8], sequence: u64, at: u64) -> Option<(u64, Option<LogPosition>)> {
    let header = bytes.get(..9)?;
    let length = u64::from(u32::from_le_bytes(array(&header[0..4])));
    if header[8] != KIND_SYNCED
        || (length != SYNC_MARKER_BYTES - RECORD_HEADER_BYTES
            && length != SYNC_MARKER_BYTES_V1 - RECORD_HEADER_BYTES)
    {
        return None;
    }
    let total = (RECORD_HEADER_BYTES + length) as usize;
    let record = bytes.get(..total)?;
    if crc32c::crc32c(&record[8..]) != u32::from_le_bytes(array(&record[4..8])) {
        return None;
    }
    match decode_body(&record[8..]) {
        Ok(Record::Synced {
            sequence: marked_sequence,
            offset,
            log_end,
        }) if marked_sequence == sequence && offset == at => Some((total as u64, log_end)),
        _ => None,
    }
}

/// Where the log ended before a damage, from the markers found after it: the latest of where
/// the last marker says it ended and of the entries (and snapshot markers) of the good
/// records that follow that marker one after another, up to the end of the file or the
/// first record that is not good. Those records were written after the marker's sync, and
/// may have been synced by a later fsync whose own marker a power cut lost: the node may
/// have acknowledged them. `None` if the last marker does not say where the log ended.
fn log_end_after(
    path: &Path,
    markers: &FoundMarkers,
    length: u64,
    record_bytes_max: u32,
) -> Result<Option<LogPosition>, StorageError> {
    use std::io::{Seek, SeekFrom};
    let Some(mut log_end) = markers.last_log_end else {
        return Ok(None);
    };
    let mut file = File::open(path).map_err(StorageError::io("open", path))?;
    let mut offset = markers.last + markers.last_bytes;
    file.seek(SeekFrom::Start(offset))
        .map_err(StorageError::io("seek", path))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut body = Vec::new();
    while length - offset >= RECORD_HEADER_BYTES {
        let mut record_header = [0u8; 8];
        reader
            .read_exact(&mut record_header)
            .map_err(StorageError::io("read", path))?;
        let record_length = u32::from_le_bytes(array(&record_header[0..4]));
        if record_length == 0
            || record_length > record_bytes_max
            || u64::from(record_length) > length - offset - RECORD_HEADER_BYTES
        {
            break;
        }
        body.clear();
        body.resize(record_length as usize, 0);
        reader
            .read_exact(&mut body)
            .map_err(StorageError::io("read", path))?;
        if crc32c::crc32c(&body) != u32::from_le_bytes(array(&record_header[4..8])) {
            break;
        }
        match decode_body(&body) {
            Ok(Record::Entries { entries, .. }) => {
                if let Some(last) = entries.last() {
                    log_end = log_end.max(LogPosition {
                        term: last.term,
                        index: last.index,
                    });
                }
            }
            Ok(Record::Snapshot { snapshot, .. }) => {
                log_end = log_end.max(LogPosition {
                    term: snapshot.term,
                    index: snapshot.index,
                });
            }
            Ok(Record::Commit(_) | Record::Synced { .. }) => {}
            Err(_) => break,
        }
        offset += RECORD_HEADER_BYTES + u64::from(record_length);
    }
    Ok(Some(log_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_in_sequence_order() {
        assert_eq!(segment_file_name(7), "wal-00000000000000000007.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(parse_segment_file_name("wal-7.log"), None);
        assert_eq!(parse_segment_file_name("hardstate"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Commit(LogIndex(9)),
            Record::Snapshot {
                snapshot: chorus_raft::SnapshotMeta {
                    index: LogIndex(7),
                    term: chorus_core::Term(3),
                },
                keep_from: LogIndex(5),
                commit: LogIndex(8),
            },
            Record::Entries {
                from: LogIndex(3),
                entries: vec![Entry {
                    term: chorus_core::Term(2),
                    index: LogIndex(3),
                    payload: chorus_raft::EntryPayload::Command(bytes::Bytes::from_static(b"x")),
                }],
            },
        ];
        for record in records {
            let mut out = Vec::new();
            encode_record(&record, &mut out);
            assert_eq!(decode_body(&out[8..]), Ok(record));
        }
    }
}
