//! End-to-end tests of `chorus server`: real node processes on 127.0.0.1 talking over TCP,
//! driven through RESP, the native client and the peer port, killed with SIGKILL and
//! restarted, with their on-disk logs damaged on purpose.
//!
//! Every test starts its own cluster on its own ports in its own temporary directory, so the
//! tests can run in parallel; every process is killed when its test ends, pass or fail.

mod basics;
mod failover;
mod faults;
mod harness;
mod hybrid;
mod lease;
mod membership;
mod pb;
mod redis_compat;
mod redis_sessions;
mod slow_disk;
mod snapshots;
