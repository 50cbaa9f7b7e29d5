//! Cleanup that must not run on a driver thread: deleting files and freeing large values.
//!
//! Compaction and snapshotting leave garbage behind whose disposal is slow but needs no
//! ordering with anything that follows it: WAL segments a durable snapshot marker covers, an
//! older snapshot file once a newer one is durable, and the hundreds of thousands of log
//! entries a compaction drops from memory. Measured on a node holding a million keys, the
//! three took 35-74 ms, 180-220 ms and 225-400 ms of the driver's time at each snapshot (an
//! `unlink` of a 100 MB file is slow on most file systems; freeing 700,000 small buffers is
//! slow everywhere), and every client request waited behind them.
//!
//! A [`Janitor`] hands such work to one background thread through a bounded queue. Work is
//! done in the order it was given, so segments are still deleted oldest first (replay wants
//! their sequence numbers contiguous). Deferring a deletion is safe because every file it
//! removes is already superseded: a restart that finds one still present treats it exactly as
//! it would after a crash just before the deletion. A file already gone is not an error. When
//! the queue is full the caller does the work itself, so nothing is lost and memory stays
//! bounded; when the janitor is dropped, its thread finishes what was queued and stops.

use std::any::Any;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;

use crate::hard_state::sync_directory;

/// How many jobs may wait for the janitor's thread before callers do their own work.
const QUEUE_JOBS_MAX: usize = 64;

/// One piece of deferred work.
enum Job {
    /// Remove these files, in order, then sync their directory.
    Delete {
        directory: PathBuf,
        files: Vec<PathBuf>,
    },
    /// Drop this value.
    Free(Box<dyn Any + Send>),
    /// Answer once everything queued before it is done.
    Flush(SyncSender<()>),
}

/// A handle to a background thread that deletes files and frees values; cheap to clone.
#[derive(Clone, Debug)]
pub struct Janitor {
    jobs: SyncSender<Job>,
}

impl Janitor {
    /// Starts the janitor's thread, named `name` for debuggers and panics.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(name: &str) -> std::io::Result<Janitor> {
        let (jobs, queue) = mpsc::sync_channel(QUEUE_JOBS_MAX);
        thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                lower_thread_priority();
                work(&queue);
            })?;
        Ok(Janitor { jobs })
    }

    /// Removes `files` (in this order) from `directory`, then syncs the directory, in the
    /// background; inline if the queue is full. A failure is logged, not returned: the
    /// files are garbage already, and a later cleanup or restart meets them again.
    pub fn delete(&self, directory: &Path, files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        let job = Job::Delete {
            directory: directory.to_path_buf(),
            files,
        };
        self.submit(job);
    }

    /// Drops `value` in the background; inline if the queue is full.
    pub fn free<T: Send + 'static>(&self, value: T) {
        self.submit(Job::Free(Box::new(value)));
    }

    /// Waits until everything queued so far is done (for tests and orderly shutdown).
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn submit(&self, job: Job) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => run(job),
        }
    }
}

/// The cross-platform priority (0–99) of background threads; on Linux it maps to nice 10.
const BACKGROUND_PRIORITY: u8 = 22;

/// Lowers the calling thread's CPU priority (to nice 10 on Linux), for background work that
/// must not take the cores from a driver thread: the janitor and the snapshot writer.
///
/// On a machine whose cores are all busy a nice-0 background thread gets an equal share
/// against every driver, and while it runs a driver with a request to answer waits out its
/// time slice; at nice 10 it gets about a tenth of a core against a busy driver, and all of an
/// idle one, so a snapshot only takes longer when the node is busy (not starved: the log keeps
/// growing until it finishes). Failure (a platform without nice values) is logged and ignored.
pub fn lower_thread_priority() {
    let lowered = thread_priority::ThreadPriorityValue::try_from(BACKGROUND_PRIORITY)
        .map_err(|error| format!("{error:?}"))
        .and_then(|value| {
            thread_priority::set_current_thread_priority(
                thread_priority::ThreadPriority::Crossplatform(value),
            )
            .map_err(|error| format!("{error:?}"))
        });
    if let Err(error) = lowered {
        tracing::debug!(%error, "cannot lower a background thread's priority");
    }
}

/// The janitor thread's loop: runs jobs until every handle is dropped.
fn work(queue: &Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        run(job);
    }
}

fn run(job: Job) {
    match job {
        Job::Delete { directory, files } => delete_now(&directory, &files),
        Job::Free(value) => drop(value),
        Job::Flush(done) => {
            let _ = done.send(());
        }
    }
}

/// Removes `files` in order (one already gone is fine), then syncs `directory`.
fn delete_now(directory: &Path, files: &[PathBuf]) {
    for file in files {
        match fs::remove_file(file) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                // Stop here: removing a later segment while an earlier one stays would leave
                // a gap in the sequence numbers that replay refuses.
                tracing::warn!(%error, file = %file.display(), "cannot remove a superseded file");
                return;
            }
        }
    }
    if let Err(error) = sync_directory(directory) {
        tracing::warn!(%error, directory = %directory.display(), "cannot sync a directory after removing files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from `/proc/thread-self/stat` (field 19).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i64 {
        let stat = fs::read_to_string("/proc/thread-self/stat").expect("the thread's stat");
        let after_name = stat.rsplit(')').next().expect("a stat line");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Field 19 of the line is the 17th after the command name and state.
        fields[16].parse().expect("a nice value")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_threads_run_at_nice_10() {
        let nice = thread::spawn(|| {
            lower_thread_priority();
            own_nice()
        })
        .join()
        .expect("the thread ran");
        assert_eq!(nice, 10);
    }

    #[test]
    fn deletes_in_order_tolerates_missing_files_and_flushes() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let files: Vec<PathBuf> = (0..5)
            .map(|n| {
                let path = directory.path().join(format!("f{n}"));
                fs::write(&path, b"x").expect("write a file");
                path
            })
            .collect();
        let janitor = Janitor::start("janitor-test").expect("a janitor");
        let mut with_missing = files.clone();
        with_missing.insert(2, directory.path().join("never-there"));
        janitor.delete(directory.path(), with_missing);
        janitor.free(vec![0u8; 1 << 20]);
        janitor.flush();
        assert!(files.iter().all(|file| !file.exists()));
    }

    #[test]
    fn a_full_queue_does_the_work_inline() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let janitor = Janitor::start("janitor-test").expect("a janitor");
        // Far more jobs than the queue holds: whichever way each one goes, all are done.
        let mut paths = Vec::new();
        for n in 0..(QUEUE_JOBS_MAX * 4) {
            let path = directory.path().join(format!("g{n}"));
            fs::write(&path, b"x").expect("write a file");
            janitor.delete(directory.path(), vec![path.clone()]);
            paths.push(path);
        }
        janitor.flush();
        assert!(paths.iter().all(|path| !path.exists()));
    }
}
