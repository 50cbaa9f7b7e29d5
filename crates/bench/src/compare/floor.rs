//! The physical floor of one replicated write on this machine.
//!
//! No replicated store can acknowledge a durable write faster than one `fdatasync` of its
//! log (on the disk it uses) plus two loopback round trips (client to leader and back, leader
//! to a follower and back), so the comparison measures both, on the same disk as the servers'
//! data, and judges one-client write latency against their sum. The fdatasync is of the kind
//! the logs do: its writes land in space allocated ahead (`fallocate`, as the Chorus and etcd
//! logs preallocate their segments), so the file's size never changes with a write.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What the floor is made of, in microseconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Floor {
    /// Median time of one small append plus `fdatasync`.
    pub fdatasync_p50_us: f64,
    /// 99th percentile of the same.
    pub fdatasync_p99_us: f64,
    /// Median loopback TCP round trip of a small message.
    pub round_trip_p50_us: f64,
    /// One fdatasync plus two round trips (medians).
    pub floor_us: f64,
    /// How many fdatasyncs were timed (spread over the whole comparison).
    pub fdatasync_samples: usize,
}

/// Samples of the floor, gathered a few at a time between benchmark runs so that a moment of
/// disk contention weighs no more on the floor than on the targets.
#[derive(Clone, Debug, Default)]
pub struct FloorSamples {
    syncs: Vec<Duration>,
    trips: Vec<Duration>,
}

impl FloorSamples {
    /// Times `syncs` fdatasyncs in `dir` and `trips` loopback round trips, and keeps them.
    ///
    /// # Errors
    /// When either measurement fails.
    pub fn sample(&mut self, dir: &Path, syncs: usize, trips: usize) -> anyhow::Result<()> {
        self.syncs.extend(fdatasync_times(dir, syncs)?);
        self.trips.extend(round_trip_times(trips)?);
        Ok(())
    }

    /// The floor from every sample so far, if there is any.
    #[must_use]
    pub fn floor(&self) -> Option<Floor> {
        if self.syncs.is_empty() || self.trips.is_empty() {
            return None;
        }
        let mut syncs = self.syncs.clone();
        let mut trips = self.trips.clone();
        Some(floor_of(&mut syncs, &mut trips))
    }
}

fn percentile(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Times `count` appends of 128 bytes, each followed by `fdatasync`, in a file under `dir`
/// whose space is allocated first (where the platform can).
///
/// # Errors
/// When the file cannot be written or synced.
pub fn fdatasync_times(dir: &Path, count: usize) -> anyhow::Result<Vec<Duration>> {
    let path = dir.join("floor-fdatasync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    preallocate(&file, count * 128);
    let record = [0x5Au8; 128];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        file.write_all(&record)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("cannot sync {}", path.display()))?;
        times.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(times)
}

/// Allocates `bytes` of `file` (Linux; elsewhere, or where the file system cannot, the file
/// grows with each write instead).
fn preallocate(file: &std::fs::File, bytes: usize) {
    #[cfg(target_os = "linux")]
    if let Ok(bytes) = i64::try_from(bytes) {
        let _ = nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, bytes);
        let _ = file.sync_all();
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, bytes);
}

/// Times `count` round trips of 64 bytes over a loopback TCP connection (`TCP_NODELAY`).
///
/// # Errors
/// When the loopback connection fails.
pub fn round_trip_times(count: usize) -> anyhow::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; 64];
        for _ in 0..count {
            stream.read_exact(&mut buffer)?;
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address).context("cannot connect on 127.0.0.1")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let message = [0xA5u8; 64];
    let mut reply = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
        times.push(start.elapsed());
    }
    drop(stream);
    match echo.join() {
        Ok(result) => result.context("the loopback echo failed")?,
        Err(_) => anyhow::bail!("the loopback echo thread panicked"),
    }
    Ok(times)
}

/// The floor from raw samples.
#[must_use]
pub fn floor_of(syncs: &mut [Duration], trips: &mut [Duration]) -> Floor {
    syncs.sort_unstable();
    trips.sort_unstable();
    let fdatasync_p50_us = percentile(syncs, 0.5);
    let round_trip_p50_us = percentile(trips, 0.5);
    Floor {
        fdatasync_p50_us,
        fdatasync_p99_us: percentile(syncs, 0.99),
        round_trip_p50_us,
        floor_us: fdatasync_p50_us + 2.0 * round_trip_p50_us,
        fdatasync_samples: syncs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_one_sync_and_two_round_trips() {
        let mut syncs: Vec<Duration> = [300, 100, 200].map(Duration::from_micros).to_vec();
        let mut trips: Vec<Duration> = [20, 10, 30].map(Duration::from_micros).to_vec();
        let floor = floor_of(&mut syncs, &mut trips);
        assert_eq!(floor.fdatasync_p50_us, 200.0);
        assert_eq!(floor.round_trip_p50_us, 20.0);
        assert_eq!(floor.floor_us, 240.0);
        assert_eq!(floor.fdatasync_p99_us, 300.0);
        assert_eq!(floor.fdatasync_samples, 3);
    }

    #[test]
    fn samples_accumulate() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut samples = FloorSamples::default();
        assert!(samples.floor().is_none());
        samples.sample(dir.path(), 2, 5).expect("sampled");
        samples.sample(dir.path(), 3, 5).expect("sampled");
        let floor = samples.floor().expect("a floor");
        assert_eq!(floor.fdatasync_samples, 5);
        assert!(floor.floor_us >= floor.fdatasync_p50_us);
    }

    #[test]
    fn the_measurements_run() {
        let dir = tempfile::tempdir().expect("a temp dir");
        assert_eq!(fdatasync_times(dir.path(), 3).expect("syncs").len(), 3);
        assert_eq!(round_trip_times(10).expect("round trips").len(), 10);
        // The scratch file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
