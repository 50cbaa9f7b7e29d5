//! Losing a node's unsynced writes: what a power cut does to the write-ahead log, done to a
//! real node process.
//!
//! `kill -9` alone loses nothing (the page cache survives the process), so the nemesis has to
//! cut the log itself, and only at a point a power cut could produce: a record boundary **after
//! the last fsync**. Cutting deeper would drop data the node had promised to keep, which is not
//! a fault but a different, broken disk.
//!
//! Finding the last fsync from outside: the node's storage thread (`chorus-storage-<id>`; a
//! hybrid data server's driver, `chorus-data-driver-<id>`; the driver, `chorus-driver-<id>`,
//! in builds before the storage thread) writes each batch with
//! `write(2)` and then calls `fdatasync(2)` before the driver sends any message that promises
//! the batch, so unsynced data exists only between a WAL `write` returning and the following
//! `fdatasync` returning. [`catch_unsynced`] freezes the process with SIGSTOP and reads
//! `/proc/<pid>/task/<tid>/syscall` of that thread: a thread stopped on its way out of a
//! system call shows that call's number and arguments. If it is a `write` to a `wal-*.log` file,
//! the `count` bytes (the write's third argument) before the file's position (read from
//! `/proc/<pid>/fdinfo/<fd>`; not its length, which a preallocated segment has at its full
//! size) are exactly the batch that was never synced. Otherwise the probe thaws the node and tries again a few milliseconds
//! later, a bounded number of times. When the probe never catches the window (it is short: a
//! write to the page cache takes microseconds), the fault degrades to a plain `kill -9` and the
//! nemesis log says so; it never guesses.
//!
//! The cut itself ([`truncate_at_boundary`]) parses the segment's records (24-byte header, then
//! `length`, CRC, kind, payload per record; see `crates/storage/src/wal.rs`) and truncates at a
//! record boundary chosen by the caller's PRNG among those at or after the unsynced start.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chorus_core::Prng;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The segment header's bytes.
const SEGMENT_HEADER_BYTES: u64 = 24;
/// A record header's bytes (`length` and checksum).
const RECORD_HEADER_BYTES: u64 = 8;
/// The `write` system call's number on x86-64.
#[cfg(target_arch = "x86_64")]
const SYS_WRITE: i64 = 1;
/// The `write` system call's number on aarch64.
#[cfg(target_arch = "aarch64")]
const SYS_WRITE: i64 = 64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_WRITE: i64 = -2;

/// Unsynced bytes caught in a node's log: the file and where the unsynced part starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsynced {
    /// The segment being written.
    pub segment: PathBuf,
    /// The first byte that was not yet synced.
    pub start: u64,
    /// Where the writes had reached when the process was frozen (the file's position).
    pub end: u64,
}

/// The thread of process `pid` that writes the WAL: a Raft node's storage thread, a hybrid
/// data server's driver (which writes its log itself), or the driver of a build before the
/// storage thread. Linux keeps 15 bytes of a thread's name, so `chorus-data-driver-<id>`
/// reads `chorus-data-dri`.
fn writer_thread(pid: Pid) -> Option<u32> {
    let named = |prefix: &str| {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks.flatten().find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            comm.starts_with(prefix)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
    };
    named("chorus-storage")
        .or_else(|| named("chorus-data-dri"))
        .or_else(|| named("chorus-driver"))
}

/// The position of file descriptor `fd` of process `pid`, from its `fdinfo`.
fn file_position(pid: Pid, fd: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("pos:"))
        .and_then(|position| position.trim().parse().ok())
}

/// Whether every thread of `pid` is stopped.
fn all_stopped(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // "tid (comm) S ..."; comm may hold spaces, so read after the last ')'.
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

/// Parses `/proc/.../syscall` text into the call number and its first three arguments.
fn parse_syscall(text: &str) -> Option<(i64, [u64; 3])> {
    let mut fields = text.split_whitespace();
    let number: i64 = fields.next()?.parse().ok()?;
    let mut args = [0u64; 3];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((number, args))
}

/// One look at a frozen process: the unsynced tail, if its driver is between a WAL write and
/// the fsync after it.
fn inspect(pid: Pid) -> Option<Unsynced> {
    let tid = writer_thread(pid)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let (number, [fd, _buffer, count]) = parse_syscall(&text)?;
    if number != SYS_WRITE {
        return None;
    }
    let segment = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let name = segment.file_name()?.to_str()?;
    if !(name.starts_with("wal-") && name.ends_with(".log")) {
        return None;
    }
    let end = file_position(pid, fd)?;
    let start = end.checked_sub(count)?.max(SEGMENT_HEADER_BYTES);
    Some(Unsynced {
        segment,
        start,
        end,
    })
}

/// Freezes process `pid` (SIGSTOP) until its driver is caught between a WAL write and its
/// fsync, trying at most `attempts` times, and leaves it frozen either way. Returns what was
/// caught.
pub fn catch_unsynced(pid: Pid, attempts: u32, rng: &mut Prng) -> Option<Unsynced> {
    for _ in 0..attempts {
        if kill(pid, Signal::SIGSTOP).is_err() {
            return None;
        }
        let mut stopped = false;
        for _ in 0..200 {
            if all_stopped(pid) {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // Only a thread stopped on its way out of `write` has its file position past the
        // written bytes; one still inside it (waiting on the disk) shows the call with the
        // position where the write starts, and the bytes before that may be synced.
        if stopped && let Some(unsynced) = inspect(pid) {
            return Some(unsynced);
        }
        let _ = kill(pid, Signal::SIGCONT);
        std::thread::sleep(Duration::from_micros(rng.range(100, 3_000)));
    }
    let _ = kill(pid, Signal::SIGSTOP);
    None
}

/// The offsets of the record boundaries of a segment file (the end of the header, then the end
/// of each whole record), as far as whole records go.
///
/// # Errors
/// If the file cannot be read.
pub fn record_boundaries(segment: &Path) -> anyhow::Result<Vec<u64>> {
    let mut bytes = Vec::new();
    std::fs::File::open(segment)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", segment.display()))?;
    let total = bytes.len() as u64;
    let mut boundaries = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    if total < offset {
        return Ok(boundaries);
    }
    boundaries.push(offset);
    while offset + RECORD_HEADER_BYTES <= total {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(length) = bytes.get(at..at + 4) else {
            break;
        };
        let length = u64::from(u32::from_le_bytes([
            length[0], length[1], length[2], length[3],
        ]));
        let next = offset + RECORD_HEADER_BYTES + length;
        if length == 0 || next > total {
            break;
        }
        boundaries.push(next);
        offset = next;
    }
    Ok(boundaries)
}

/// Truncates the caught segment at a record boundary at or after the unsynced start, chosen by
/// `rng`. Returns the bytes removed.
///
/// # Errors
/// If the file cannot be read or truncated.
pub fn truncate_at_boundary(unsynced: &Unsynced, rng: &mut Prng) -> anyhow::Result<u64> {
    let boundaries = record_boundaries(&unsynced.segment)?;
    let candidates: Vec<u64> = boundaries
        .into_iter()
        .filter(|&b| b >= unsynced.start && b < unsynced.end)
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let cut = candidates[rng.index(candidates.len())];
    let file = OpenOptions::new()
        .write(true)
        .open(&unsynced.segment)
        .with_context(|| format!("cannot open {}", unsynced.segment.display()))?;
    file.set_len(cut)
        .with_context(|| format!("cannot truncate {}", unsynced.segment.display()))?;
    Ok(unsynced.end - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines_are_parsed() {
        let line = "1 0x5 0x7f00aa 0x2a 0x0 0x0 0x0 0x7ffd 0x7f01\n";
        assert_eq!(parse_syscall(line), Some((1, [5, 0x7f00aa, 0x2a])));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x7f01\n"), None);
    }

    #[test]
    fn boundaries_follow_record_lengths_and_stop_at_a_torn_record() {
        let dir = std::env::temp_dir().join(format!("xtask-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal-00000000000000000001.log");
        let mut bytes = vec![0u8; 24];
        for length in [3u32, 5] {
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend(std::iter::repeat_n(1u8, length as usize));
        }
        bytes.extend_from_slice(&9u32.to_le_bytes()); // torn: header only
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(record_boundaries(&path).unwrap(), vec![24, 35, 48]);
        let unsynced = Unsynced {
            segment: path.clone(),
            start: 35,
            end: bytes.len() as u64,
        };
        let removed = truncate_at_boundary(&unsynced, &mut Prng::new(1)).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len == 35 || len == 48);
        assert_eq!(removed, bytes.len() as u64 - len);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
