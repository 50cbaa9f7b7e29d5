//! The Raft host's durable log, written on a storage thread of its own (asynchronous storage
//! writes), so that a slow fsync never holds the driver.
//!
//! The driver hands each Ready's durable work (the hard state, the entries, the compaction
//! that installs a received snapshot) to [`Disk::submit`] as a [`DiskJob`] and goes on
//! stepping messages, ticking, heartbeating and taking proposals while the job is out (the
//! core's contract, crates/raft/src/lib.rs, points 2 to 4). The thread does the jobs in the
//! order submitted and answers each with a [`DiskDone`]; the driver takes them with
//! [`Disk::try_done`] (woken by an [`Input::StorageDone`]), and only then sends the Ready's
//! votes and acks and advances the core. So a leader whose fsync hangs keeps its followers'
//! election timers reset: a slow disk costs latency, never an election.
//!
//! Invariants:
//! - **One owner.** The storage lives on the thread (or, in [`Disk::inline`] mode, in the
//!   [`Disk`] itself, written at once on the driver: unit tests). Nothing else touches the
//!   write-ahead log; snapshot files, which are separate files, are read and written by the
//!   driver and the snapshot thread through their own [`SnapshotStore`].
//! - **In order.** Jobs are done in submission order, so a log compaction submitted while a
//!   Ready's write is out follows that write, and a later write never overtakes an earlier
//!   sync it relies on.
//! - **Bounded.** At most [`DISK_JOBS_MAX`] jobs are out at once, and the outcome queue has
//!   as many slots, so neither side ever blocks on the other. One Ready is out at a time (the
//!   core enforces it) and at most one compaction (a snapshot is asked for only after the
//!   last one was reported, and the Ready that asks for it is written after that one's
//!   compaction was submitted).
//! - **Failure stops the node.** A failed write, sync or compaction is reported in its
//!   [`DiskDone`]; the host stops the node on it, as before (the storage is poisoned). A
//!   thread that stopped without an outcome stops the node too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chorus_core::LogIndex;
use chorus_raft::{Entry, HardState, SnapshotMeta};
use chorus_storage::{Janitor, SnapshotStore, Storage, StorageError};

use super::boundary::{Input, Shared};

/// At most this many jobs are out at once (one Ready's write and one compaction, with room
/// to spare).
pub const DISK_JOBS_MAX: usize = 4;

/// Snapshot files kept after a compaction: the newest and the one before it, so that a
/// restart that finds the newest damaged can fall back and replay the log from there.
const SNAPSHOTS_KEPT: usize = 2;

/// An injected stall is slept out in slices this long, so that a stopping node does not wait
/// for the whole stall.
const STALL_SLICE: Duration = Duration::from_millis(10);

/// Work for the storage, done in the order submitted.
#[derive(Debug)]
pub enum DiskJob {
    /// One Ready's durable work.
    Write(ReadyWrite),
    /// A snapshot taken on this node is durable: record that it covers the log, drop the
    /// entries below `keep_from`, and remove snapshot files older than the two newest.
    Compact {
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// The first entry the durable log keeps.
        keep_from: LogIndex,
    },
}

/// The durable part of one Ready, in the order the contract demands.
#[derive(Debug)]
pub struct ReadyWrite {
    /// A snapshot received from the leader and installed (its file is complete and durable,
    /// the state machine restored from it): compact the durable log to it first, keeping
    /// what follows it only if the log goes on from it (Raft §7).
    pub installed: Option<SnapshotMeta>,
    /// The hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append (after truncating a conflicting suffix).
    pub entries: Vec<Entry>,
    /// Whether to fsync: false when only the commit index moved, which is volatile state in
    /// Raft and rides on the next sync.
    pub sync: bool,
}

impl ReadyWrite {
    /// Whether there is anything to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.installed.is_none() && self.hard_state.is_none() && self.entries.is_empty()
    }
}

/// The outcome of a [`DiskJob`].
#[derive(Debug)]
pub enum DiskDone {
    /// A [`DiskJob::Write`] is durable (or failed): how long its sync took, if it synced.
    Written(Result<Option<Duration>, StorageError>),
    /// A [`DiskJob::Compact`] is done (or failed), in this time.
    Compacted {
        /// The snapshot compacted to.
        snapshot: SnapshotMeta,
        /// How long it took, or why it failed.
        result: Result<Duration, StorageError>,
    },
}

/// The storage thread stopped without an outcome for a job it had (it panicked).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the storage thread stopped with {0} jobs unfinished")]
pub struct DiskStopped(pub usize);

/// What a storage thread needs besides the storage.
struct Worker {
    snapshots: Option<SnapshotStore>,
    janitor: Option<Janitor>,
    /// For the injected fsync stall and the shutdown flag (none: inline, no stall).
    shared: Option<Arc<Shared>>,
}

enum Mode<S> {
    /// The storage is written at once, on the caller's thread.
    Inline {
        storage: S,
        worker: Worker,
        done: VecDeque<DiskDone>,
    },
    /// The storage lives on a thread of its own.
    Thread {
        jobs: SyncSender<DiskJob>,
        done: Receiver<DiskDone>,
        thread: JoinHandle<S>,
    },
    /// Only while switching modes.
    Moving,
}

/// The driver's handle on the storage.
pub struct Disk<S: Storage + Send + 'static> {
    mode: Mode<S>,
    /// Jobs submitted whose outcome the driver has not taken yet.
    in_flight: usize,
}

impl<S: Storage + Send + 'static> Disk<S> {
    /// Storage written at once on the caller's thread, until [`Disk::start_thread`]. Snapshot
    /// files superseded by a compaction are removed from `snapshots` (through `janitor`, if
    /// any).
    #[must_use]
    pub fn inline(storage: S, snapshots: Option<SnapshotStore>, janitor: Option<Janitor>) -> Self {
        Disk {
            mode: Mode::Inline {
                storage,
                worker: Worker {
                    snapshots,
                    janitor,
                    shared: None,
                },
                done: VecDeque::new(),
            },
            in_flight: 0,
        }
    }

    /// Moves the storage onto a thread named `name`, which wakes the driver through `waker`
    /// after each job and honours `shared`'s injected fsync stall. Must be called with no
    /// job out.
    ///
    /// # Errors
    /// If the thread cannot start; the storage stays inline then.
    pub fn start_thread(
        &mut self,
        name: String,
        shared: Arc<Shared>,
        waker: Option<SyncSender<Input>>,
    ) -> std::io::Result<()> {
        assert_eq!(
            self.in_flight, 0,
            "invariant: no job out when the thread starts"
        );
        if !matches!(self.mode, Mode::Inline { .. }) {
            return Ok(());
        }
        // The storage is handed over only once the thread runs, so that a failed start keeps it.
        let (hand_over, take_over) = sync_channel::<(S, Worker)>(1);
        let (jobs, job_queue) = sync_channel::<DiskJob>(DISK_JOBS_MAX);
        let (done_sender, done) = sync_channel::<DiskDone>(DISK_JOBS_MAX);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let (mut storage, worker) = take_over
                .recv()
                .expect("invariant: the storage is handed over right after the spawn");
            for job in job_queue {
                let outcome = perform(&mut storage, &worker, job);
                if done_sender.send(outcome).is_err() {
                    break;
                }
                if let Some(waker) = &waker {
                    let _ = waker.try_send(Input::StorageDone);
                }
            }
            storage
        })?;
        let Mode::Inline {
            storage,
            mut worker,
            done: pending,
        } = std::mem::replace(&mut self.mode, Mode::Moving)
        else {
            unreachable!("checked above");
        };
        assert!(pending.is_empty(), "invariant: no outcome left untaken");
        worker.shared = Some(shared);
        hand_over
            .send((storage, worker))
            .expect("invariant: the thread waits for its storage");
        self.mode = Mode::Thread { jobs, done, thread };
        Ok(())
    }

    /// Whether the storage is written on a thread of its own.
    #[must_use]
    pub fn is_threaded(&self) -> bool {
        matches!(self.mode, Mode::Thread { .. })
    }

    /// Jobs submitted whose outcome was not taken yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `job` (inline: does it now). Never blocks: at most [`DISK_JOBS_MAX`] jobs are
    /// ever out (see the module docs).
    ///
    /// # Panics
    /// If [`DISK_JOBS_MAX`] jobs are out already (a broken invariant of the host).
    pub fn submit(&mut self, job: DiskJob) {
        assert!(
            self.in_flight < DISK_JOBS_MAX,
            "invariant: at most {DISK_JOBS_MAX} storage jobs out"
        );
        self.in_flight += 1;
        match &mut self.mode {
            Mode::Inline {
                storage,
                worker,
                done,
            } => done.push_back(perform(storage, worker, job)),
            Mode::Thread { jobs, .. } => {
                // A thread that stopped shows as a missing outcome in `try_done`.
                let _ = jobs.send(job);
            }
            Mode::Moving => unreachable!("only while switching modes"),
        }
    }

    /// The next outcome, if one is ready.
    ///
    /// # Errors
    /// [`DiskStopped`] if the thread stopped with jobs unfinished.
    pub fn try_done(&mut self) -> Result<Option<DiskDone>, DiskStopped> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let outcome = match &mut self.mode {
            Mode::Inline { done, .. } => done.pop_front(),
            Mode::Thread { done, .. } => match done.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return Err(DiskStopped(self.in_flight)),
            },
            Mode::Moving => unreachable!("only while switching modes"),
        };
        if outcome.is_some() {
            self.in_flight -= 1;
        }
        Ok(outcome)
    }

    /// Stops the thread (after the jobs already queued) and returns the storage, for tests
    /// that look at what it holds.
    ///
    /// # Panics
    /// If the storage thread panicked.
    #[must_use]
    pub fn into_storage(mut self) -> S {
        match std::mem::replace(&mut self.mode, Mode::Moving) {
            Mode::Inline { storage, .. } => storage,
            Mode::Thread { jobs, thread, .. } => {
                drop(jobs);
                thread.join().expect("the storage thread panicked")
            }
            Mode::Moving => unreachable!("only while switching modes"),
        }
    }
}

impl<S: Storage + Send + 'static> Drop for Disk<S> {
    /// Lets the thread finish the jobs queued (an injected stall is cut short by the node's
    /// shutdown flag) and waits for it, so that the log's files are closed when the host is
    /// gone.
    fn drop(&mut self) {
        if let Mode::Thread { jobs, thread, .. } = std::mem::replace(&mut self.mode, Mode::Moving) {
            drop(jobs);
            let _ = thread.join();
        }
    }
}

/// Does one job on the storage.
fn perform<S: Storage>(storage: &mut S, worker: &Worker, job: DiskJob) -> DiskDone {
    match job {
        DiskJob::Write(write) => DiskDone::Written(write_ready(storage, worker, write)),
        DiskJob::Compact {
            snapshot,
            keep_from,
        } => {
            let started = Instant::now();
            worker.wait_out_stall();
            let result = storage.compact(snapshot, keep_from).map(|()| {
                worker.remove_old_snapshots();
                started.elapsed()
            });
            DiskDone::Compacted { snapshot, result }
        }
    }
}

/// Writes one Ready in the contract's order: the install's compaction, then the hard state
/// and entries, then the sync. Returns how long the sync took, if it synced.
fn write_ready<S: Storage>(
    storage: &mut S,
    worker: &Worker,
    write: ReadyWrite,
) -> Result<Option<Duration>, StorageError> {
    let started = Instant::now();
    if let Some(snapshot) = write.installed {
        worker.wait_out_stall();
        // Keep the log after the snapshot only if it goes on from it (storage decides).
        storage.compact(snapshot, snapshot.index.next())?;
        worker.remove_old_snapshots();
    }
    if write.hard_state.is_some() || !write.entries.is_empty() {
        storage.write(write.hard_state, &write.entries)?;
    }
    if !write.sync {
        return Ok(None);
    }
    // An injected stall counts as part of the sync, as a hung disk's would.
    worker.wait_out_stall();
    storage.sync()?;
    Ok(Some(started.elapsed()))
}

impl Worker {
    /// TESTING ONLY: sleeps until the injected fsync stall is over (or the node stops).
    fn wait_out_stall(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let Some(until) = shared.fsync_stall.until() else {
            return;
        };
        let left = until.saturating_duration_since(Instant::now());
        let slices = left.as_millis() / STALL_SLICE.as_millis() + 2;
        for _ in 0..slices {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || shared.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(left.min(STALL_SLICE));
        }
    }

    /// Removes snapshot files older than the newest [`SNAPSHOTS_KEPT`] (through the janitor
    /// if there is one). A failure only leaves files behind.
    fn remove_old_snapshots(&self) {
        let Some(store) = &self.snapshots else {
            return;
        };
        let removed = match &self.janitor {
            Some(janitor) => store.retain_later(SNAPSHOTS_KEPT, janitor),
            None => store.retain(SNAPSHOTS_KEPT),
        };
        if let Err(error) = removed {
            tracing::warn!(%error, "cannot remove old snapshots");
        }
    }
}

#[cfg(test)]
mod tests {
    use chorus_core::{NodeId, Term};
    use chorus_raft::EntryPayload;
    use chorus_storage::MemStorage;

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(1),
            payload: EntryPayload::Command(bytes::Bytes::from_static(b"x")),
        }
    }

    fn write(indexes: std::ops::RangeInclusive<u64>) -> DiskJob {
        DiskJob::Write(ReadyWrite {
            installed: None,
            hard_state: Some(HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
                commit: LogIndex(0),
                repairing: None,
            }),
            entries: indexes.map(entry).collect(),
            sync: true,
        })
    }

    /// Takes the next outcome from a threaded disk, waiting for it (bounded).
    fn next_done(disk: &mut Disk<MemStorage>) -> DiskDone {
        for _ in 0..10_000 {
            if let Some(done) = disk.try_done().unwrap() {
                return done;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no outcome from the storage thread");
    }

    #[test]
    fn the_thread_writes_in_order_and_wakes_the_driver() {
        let shared = Arc::new(Shared::new());
        let (waker, wakes) = sync_channel(8);
        let mut disk = Disk::inline(MemStorage::new(), None, None);
        disk.start_thread("test-storage".into(), shared, Some(waker))
            .unwrap();
        assert!(disk.is_threaded());
        disk.submit(write(1..=2));
        disk.submit(write(3..=3));
        for _ in 0..2 {
            assert!(matches!(
                next_done(&mut disk),
                DiskDone::Written(Ok(Some(_)))
            ));
        }
        assert!(matches!(wakes.try_recv(), Ok(Input::StorageDone)));
        assert_eq!(disk.in_flight(), 0);
        let storage = disk.into_storage();
        assert_eq!(storage.durable().entries.len(), 3);
    }

    #[test]
    fn an_injected_stall_holds_the_sync_but_not_the_caller() {
        let shared = Arc::new(Shared::new());
        let mut disk = Disk::inline(MemStorage::new(), None, None);
        disk.start_thread("test-storage".into(), shared.clone(), None)
            .unwrap();
        shared.fsync_stall.stall_for(Duration::from_secs(60));
        disk.submit(write(1..=1));
        // The caller goes on at once; the write stays out while the disk hangs.
        assert!(disk.try_done().unwrap().is_none());
        assert_eq!(disk.in_flight(), 1);
        // A stopping node cuts the stall short, and the write completes.
        shared
            .shutdown
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(
            next_done(&mut disk),
            DiskDone::Written(Ok(Some(_)))
        ));
    }

    #[test]
    fn a_commit_only_write_is_not_synced() {
        let mut disk = Disk::inline(MemStorage::new(), None, None);
        disk.submit(write(1..=1));
        assert!(matches!(
            disk.try_done().unwrap(),
            Some(DiskDone::Written(Ok(Some(_))))
        ));
        disk.submit(DiskJob::Write(ReadyWrite {
            installed: None,
            hard_state: Some(HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
                commit: LogIndex(1),
                repairing: None,
            }),
            entries: Vec::new(),
            sync: false,
        }));
        assert!(matches!(
            disk.try_done().unwrap(),
            Some(DiskDone::Written(Ok(None)))
        ));
        assert!(disk.into_storage().is_dirty());
    }
}
