//! One node of a cluster, assembled: storage, the Raft core and its driver thread, the peer
//! transport, the RESP frontend and the HTTP admin server.
//!
//! [`run`] opens the data directory (replaying the log, cutting a torn tail with a warning,
//! refusing to start on corruption), binds every listener (failing clearly if an address is
//! taken), starts the driver, and serves until SIGINT or SIGTERM, or until the driver stops on
//! a storage error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chorus_core::NodeId;
use chorus_raft::{Config, RawNode};
use chorus_storage::{FileStorage, FileStorageOptions};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::driver::{Driver, DriverSettings, Input, Shared};
use crate::transport::{Identity, run_inbound, run_outbound};

/// How the process was asked to stop.
async fn stop_signal(exit_with_parent: bool) {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        if !exit_with_parent {
            return std::future::pending::<()>().await;
        }
        // `chorus up` starts nodes as children; if it dies without stopping them (kill -9),
        // they notice they were re-parented and stop too.
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
        () = orphaned => {}
    }
}

async fn bind(address: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for {what} on {address}"))
}

/// Runs a node until it is asked to stop.
///
/// # Errors
/// If the data directory cannot be opened (or is corrupt), an address cannot be bound, or the
/// driver stops on a storage error.
pub async fn run(config: NodeConfig, exit_with_parent: bool) -> anyhow::Result<()> {
    config.validate()?;
    let me = config.node_id();
    let (storage, durable, report) =
        FileStorage::open(&config.data_dir, FileStorageOptions::default()).with_context(|| {
            format!(
                "cannot open the data directory {}",
                config.data_dir.display()
            )
        })?;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            file = %torn.file.display(),
            offset = torn.offset,
            bytes = torn.bytes_dropped,
            "cut a torn write off the end of the log (a crash interrupted it; it was never acknowledged)"
        );
    }
    tracing::info!(
        node = me.0,
        entries = durable.entries.len(),
        term = durable.hard_state.term.0,
        commit = durable.hard_state.commit.0,
        "recovered from disk"
    );

    let timing = &config.timing;
    let mut raft_config = Config::new(me, config.voters());
    raft_config.election_timeout_ticks = timing.election_timeout_ticks;
    raft_config.heartbeat_interval_ticks = timing.heartbeat_interval_ticks;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    raft_config.seed = (now.as_nanos() as u64) ^ me.0.rotate_left(32);
    let raft =
        RawNode::restart(raft_config, durable).context("the durable state cannot be used")?;

    let peer_listener = bind(config.me().peer, "peers").await?;
    let redis_listener = bind(config.me().redis, "RESP clients").await?;
    let admin_listener = bind(config.me().admin, "HTTP admin").await?;

    let limits = &config.limits;
    let (inputs, inputs_receiver) = sync_channel::<Input>(limits.driver_queue_max);
    let shared = Arc::new(Shared::new());
    let identity = Arc::new(Identity {
        cluster_id: config.cluster_id.clone(),
        me,
        peers: config
            .nodes
            .iter()
            .filter(|n| n.id != me.0)
            .map(|n| (NodeId(n.id), n.peer))
            .collect(),
        frame_bytes_max: limits.frame_bytes_max,
    });
    let mut outboxes = BTreeMap::new();
    for (&peer, &address) in &identity.peers {
        let (sender, receiver) = mpsc::channel(limits.peer_queue_max);
        outboxes.insert(peer, sender);
        tokio::spawn(run_outbound(identity.clone(), peer, address, receiver));
    }

    let driver = Driver::new(
        raft,
        storage,
        inputs_receiver,
        outboxes,
        shared.clone(),
        DriverSettings {
            tick: Duration::from_millis(timing.tick_ms),
            request_timeout: Duration::from_millis(timing.request_timeout_ms),
            requests_pending_max: limits.requests_pending_max,
            batch_inputs_max: 4096,
            incarnation: now.as_millis() as u64,
        },
    );
    let (driver_done, driver_exit) = tokio::sync::oneshot::channel();
    let driver_thread = std::thread::Builder::new()
        .name(format!("chorus-driver-{}", me.0))
        .spawn(move || {
            let result = driver.run();
            let _ = driver_done.send(());
            result
        })
        .context("cannot start the driver thread")?;

    tokio::spawn(run_inbound(
        peer_listener,
        identity.clone(),
        inputs.clone(),
        shared.clone(),
    ));
    tokio::spawn(crate::admin::serve(admin_listener, shared.clone()));
    tokio::spawn(crate::redis::server::serve(
        redis_listener,
        inputs.clone(),
        shared.clone(),
        crate::redis::server::Settings {
            connections_max: limits.connections_max,
            inflight_max: limits.connection_inflight_max,
        },
    ));
    tracing::info!(
        node = me.0,
        peer = %config.me().peer,
        redis = %config.me().redis,
        admin = %config.me().admin,
        "serving"
    );

    tokio::select! {
        () = stop_signal(exit_with_parent) => {
            tracing::info!(node = me.0, "stopping");
            shared.shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        _ = driver_exit => {}
    }
    drop(inputs);
    match driver_thread.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => bail!("the node stopped because its storage failed: {error}"),
        Err(_) => bail!("the driver thread panicked"),
    }
}
