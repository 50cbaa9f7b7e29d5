//! Reads served from a leader's lease (thesis §6.4.1) under clocks that drift: within the
//! stated bound no read is stale; beyond it the lease is unsafe, and the checkers show it.
//!
//! In these runs every node's clock ticks at its own rate (`SimConfig::clock_drift_ppm`), and
//! the nemesis's stale-read hunt cuts the leader off with its clock slowed and every other
//! clock sped up by the full drift: the worst case the bound allows.

use chorus_sim::{FaultProfile, SimConfig};

use crate::assert_passed;

fn leased(seed: u64, drift_ppm: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.faults = FaultProfile::Network;
    config.lease_reads = Some(true);
    config.clock_drift_ppm = drift_ppm;
    config
}

#[test]
fn leases_within_the_stated_drift_bound_serve_reads_and_none_is_stale() {
    let mut lease_reads = 0;
    for seed in 1..=12 {
        let report = chorus_sim::run(leased(seed, 50_000));
        assert_passed(&report);
        lease_reads += report.stats.lease_reads;
    }
    assert!(lease_reads > 0, "no read was served from a lease");
}

#[test]
fn a_clock_drift_beyond_the_stated_bound_shows_a_stale_read() {
    let caught = (1..=40).find(|&seed| {
        let report = chorus_sim::run(leased(seed, 900_000));
        report.violations.iter().any(|v| v.invariant == "S7")
    });
    assert!(
        caught.is_some(),
        "clocks 90% apart against a 5% bound, and no seed served a stale read"
    );
}
