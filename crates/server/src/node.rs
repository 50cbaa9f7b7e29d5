//! One node of a cluster, assembled: storage, the Raft core and its driver thread, the peer
//! transport, the RESP frontend and the HTTP admin server; or, under primary-backup, a server's
//! replica (or the view service) and its driver thread behind the same transport and
//! frontends; or, under the hybrid, a configuration node (the Raft host over the
//! configuration) or a data server (its replica and durable log), again behind the same
//! driver loop, transport and frontends.
//!
//! [`run`] opens the data directory (replaying the log, cutting a torn tail with a warning,
//! refusing to start on corruption), binds every listener (failing clearly if an address is
//! taken), starts the driver, and serves until SIGINT or SIGTERM, or until the driver stops on
//! a storage error.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chorus_core::NodeId;
use chorus_hybrid::{ConfigStateMachine, DataReplica, LocalTime};
use chorus_kv::{KvConfig, KvStore};
use chorus_pb::{DurableView, PbConfig, PbReplica, ViewServer, ViewServiceConfig};
use chorus_raft::{Config, RawNode};
use chorus_storage::record_file::read_record;
use chorus_storage::{FileStorage, FileStorageOptions};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{NodeConfig, Protocol};
use crate::runtime::boundary::{Input, MemberAddress, Outboxes, Shared};
use crate::runtime::driver::{Context as DriverContext, Driver, Host, Pacing};
use crate::runtime::hybrid_host::{ConfigHost, DataHost, recover_data};
use crate::runtime::members::{AddressBook, BOOK_FILE_NAME, Dialer};
use crate::runtime::pb_host::{PbHost, PbNode, VIEW_FILE_NAME};
use crate::runtime::raft_host::{RaftHost, Replicated, SnapshotPacing, fresh_state, restore_state};
use crate::runtime::requests::Requests;
use crate::runtime::transport::{Identity, run_inbound, run_outbound};

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
    if config.debug.fault_injection {
        tracing::warn!(
            "TESTING ONLY: fault injection is on ([debug] fault_injection): \
             POST /debug/stall-fsync stalls this node's disk"
        );
    }
    match config.protocol {
        Protocol::Pb => return run_pb(config, exit_with_parent).await,
        Protocol::Hybrid => return run_hybrid(config, exit_with_parent).await,
        Protocol::Raft => {}
    }
    let (host, incarnation, tick) = start_raft::<KvStore>(&config, config.voters())?;
    if let Some(member) = config.join {
        if host.membership().contains(config.node_id()) {
            tracing::info!(node = config.id, "a member already: no need to join");
        } else {
            spawn_join(&config, member);
        }
    }
    run_node(config, exit_with_parent, host, incarnation, tick, "").await
}

/// Asks the cluster, through the member whose admin endpoint is `member`, to add this node as
/// a learner, until the leader has (retrying every second while no leader answers).
fn spawn_join(config: &NodeConfig, member: std::net::SocketAddr) {
    let me = config.me().clone();
    let body = crate::frontends::admin::AddLearnerBody {
        cluster_id: Some(config.cluster_id.clone()),
        id: me.id,
        peer: me.peer,
        redis: me.redis,
        admin: me.admin,
    };
    tracing::info!(node = me.id, %member, "joining a running cluster: asking to be added as a learner");
    tokio::task::spawn_blocking(move || {
        loop {
            match crate::cli::admin::call(&[member], "add-learner", &body) {
                Ok(answer) => {
                    tracing::info!(message = ?answer.message, "added to the cluster as a learner");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%member, error = %format!("{error:#}"), "not added yet; asking again in a second");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    });
}

/// Opens the data directory (replaying the log, cutting a torn tail with a warning), logs
/// what the recovery found, and returns the storage and its durable state.
fn open_storage(
    config: &NodeConfig,
    repair_synced_damage: bool,
) -> anyhow::Result<(FileStorage, chorus_raft::DurableState)> {
    let me = config.node_id();
    let (storage, durable, report) = FileStorage::open(
        &config.data_dir,
        FileStorageOptions {
            segment_bytes_max: config.storage.segment_bytes,
            preallocate: config.storage.preallocate,
            repair_synced_damage,
            ..FileStorageOptions::default()
        },
    )
    .with_context(|| {
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
    if let Some(damage) = &report.synced_damage {
        tracing::error!(
            file = %damage.file.display(),
            offset = damage.offset,
            marker = damage.marker,
            bytes = damage.bytes_dropped,
            reason = %damage.reason,
            repairing_term = damage.repairing.0,
            "the disk damaged log records that were synced (a later sync marker proves it): cut \
             them; this node repairs its log from its peers: it starts no election, and votes only \
             for candidates whose log reaches where its own ended, until a leader has brought it \
             back"
        );
    }
    for damaged in &report.damaged_snapshots {
        tracing::error!(
            file = %damaged.file.display(),
            offset = damaged.offset,
            reason = %damaged.reason,
            index = damaged.meta.index.0,
            "a snapshot file is damaged: fell back to an older snapshot the log still covers"
        );
    }
    if report.removed_temporary_snapshots > 0 {
        tracing::warn!(
            files = report.removed_temporary_snapshots,
            "removed snapshot files a crash left half-written"
        );
    }
    tracing::info!(
        node = me.0,
        entries = durable.entries.len(),
        term = durable.hard_state.term.0,
        commit = durable.hard_state.commit.0,
        "recovered from disk"
    );
    Ok((storage, durable))
}

/// The Raft host of a node replicating `M` among `voters` (every node under Raft, the
/// configuration group under the hybrid), restarted from its data directory; with this run's
/// incarnation and the tick.
pub fn start_raft<M: Replicated>(
    config: &NodeConfig,
    voters: Vec<NodeId>,
) -> anyhow::Result<(RaftHost<FileStorage, M>, u64, Duration)> {
    let me = config.node_id();
    // A Raft node repairs damaged synced records from its peers (protocol-aware recovery).
    let (storage, durable) = open_storage(config, true)?;
    let timing = &config.timing;
    let mut raft_config = Config::new(me, voters);
    raft_config.election_timeout_ticks = timing.election_timeout_ticks;
    raft_config.heartbeat_interval_ticks = timing.heartbeat_interval_ticks;
    raft_config.lease_reads = config.reads.lease;
    raft_config.clock_drift_bound_ppm = config.reads.clock_drift_bound_ppm;
    let snapshots = &config.snapshots;
    raft_config.snapshot_threshold_entries = snapshots.threshold_entries;
    raft_config.snapshot_threshold_bytes = snapshots.threshold_bytes;
    raft_config.compaction_tail_entries = snapshots.compaction_tail_entries;
    raft_config.snapshot_chunk_bytes_max = snapshots.chunk_bytes;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    raft_config.seed = (now.as_nanos() as u64) ^ me.0.rotate_left(32);
    #[cfg(feature = "inject-bugs")]
    {
        raft_config.injected_bugs = config.injected_bugs();
        if !config.inject_bugs.is_empty() {
            tracing::warn!(bugs = ?config.inject_bugs, "TESTING ONLY: deliberately broken Raft behaviour is switched on");
        }
    }
    // The state machine starts from the durable snapshot, if any; the core replays the log
    // after it.
    let state = match durable.snapshot {
        Some(meta) => {
            let started = std::time::Instant::now();
            let file = storage.snapshots().path(meta);
            let state = restore_state::<M>(storage.snapshots(), meta)
                .with_context(|| format!("cannot restore the snapshot {}", file.display()))?;
            tracing::info!(
                index = meta.index.0,
                term = meta.term.0,
                file = %file.display(),
                keys = state.inner().keys(),
                ms = started.elapsed().as_millis() as u64,
                "restored the state machine from a snapshot"
            );
            state
        }
        None => fresh_state(),
    };
    let raft =
        RawNode::restart(raft_config, durable).context("the durable state cannot be used")?;

    // This run of the node: in the origin session of every proposal (so a proposal re-sent
    // to a new leader applies once, and an answer in a replayed entry never reaches a live
    // request) and at the start of read numbers (so a late read response of an earlier run
    // never matches a live read).
    let incarnation = chorus_storage::next_incarnation(&config.data_dir, now.as_millis() as u64)
        .context("cannot record this start of the node")?;
    let tick = Duration::from_millis(timing.tick_ms);
    // Long enough for an election or two; a request that finds no leader by then is refused.
    let leaderless_wait =
        tick * u32::try_from(3 * timing.election_timeout_ticks).unwrap_or(u32::MAX);
    // A forward lost on a broken connection to a live leader is sent again after two
    // election timeouts; a change of leader re-sends at once.
    let resend_after = tick * u32::try_from(2 * timing.election_timeout_ticks).unwrap_or(u32::MAX);
    let host = RaftHost::new(
        raft,
        state,
        storage,
        config.data_dir.clone(),
        incarnation,
        leaderless_wait,
        resend_after,
    )
    .with_snapshot_pacing(SnapshotPacing {
        bytes_per_second: config.snapshots.write_bytes_per_second,
        sync_bytes: config.snapshots.sync_bytes,
    })
    .with_storage_thread();
    Ok((host, incarnation, tick))
}

/// Runs a node of the hybrid scheme: a member of the configuration group (Raft over the
/// configuration state machine) or a data server (its durable log and key-value store), each
/// through the one driver loop.
async fn run_hybrid(config: NodeConfig, exit_with_parent: bool) -> anyhow::Result<()> {
    let me = config.node_id();
    let group = config.configuration_nodes();
    let settings = &config.hybrid;
    if group.contains(&me) {
        let (raft, incarnation, tick) = start_raft::<ConfigStateMachine>(&config, group.clone())?;
        tracing::info!(node = me.0, group = ?group.iter().map(|n| n.0).collect::<Vec<_>>(), "hybrid: a configuration node");
        let host = ConfigHost::new(
            raft,
            config.data_servers(),
            Duration::from_millis(settings.update_interval_ms),
        );
        return run_node(config, exit_with_parent, host, incarnation, tick, "cfg-").await;
    }
    // A hybrid data server has no such repair: damage in its synced records refuses to start.
    let (storage, durable) = open_storage(&config, false)?;
    let durable = recover_data(&config.data_dir, durable)
        .context("cannot read the data server's durable state")?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_millis() as u64);
    let incarnation = chorus_storage::next_incarnation(&config.data_dir, now_ms)
        .context("cannot record this start of the node")?;
    let core = settings.core_config(me, incarnation);
    tracing::info!(
        node = me.0,
        entries = durable.log.len(),
        epoch = durable.hard_state.highest_epoch.0,
        commit = durable.hard_state.commit.0,
        replicas = core.replicas,
        min_replicas = core.min_replicas,
        heartbeat_ms = core.heartbeat_units,
        lease_ms = core.lease_units,
        grace_ms = core.grace_units,
        "hybrid: a data server"
    );
    let synced = durable.hard_state;
    let clock = Instant::now();
    let store = KvStore::new(KvConfig::default());
    let replica = DataReplica::restart(core, durable, Box::new(store), LocalTime(0))
        .context("the hybrid settings are invalid")?;
    let host = DataHost::new(
        replica,
        storage,
        config.data_dir.clone(),
        clock,
        synced,
        group,
        config.redis_addresses(),
    );
    // Ticks often enough to keep heartbeats and grace checks within a few milliseconds.
    let tick = Duration::from_millis((settings.heartbeat_ms / 5).clamp(1, 10));
    run_node(config, exit_with_parent, host, incarnation, tick, "data-").await
}

/// Runs a primary-backup node (a server, or the view service) until it is asked to stop. It
/// keeps nothing on disk: a restarted server comes back empty and the view service treats it
/// as a new server.
async fn run_pb(config: NodeConfig, exit_with_parent: bool) -> anyhow::Result<()> {
    let me = config.node_id();
    let timing = &config.timing;
    let view_service = config
        .view_service()
        .context("a primary-backup cluster needs a view service")?;
    // Primary-backup keeps its data in memory only; the data directory holds the node's
    // incarnation and, on the view service, the current view.
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let node = if me == view_service {
        let service_config = ViewServiceConfig {
            dead_pings: timing.dead_pings,
            ..ViewServiceConfig::default()
        };
        match read_durable_view(&config.data_dir)? {
            Some(durable) => {
                tracing::info!(
                    view = durable.view.number.0,
                    primary = ?durable.view.primary.map(|p| p.0),
                    backup = ?durable.view.backup.map(|b| b.0),
                    acked = durable.acked,
                    "the view service resumes its view"
                );
                PbNode::ViewService(ViewServer::resume(service_config, durable)?)
            }
            None => PbNode::ViewService(ViewServer::new(service_config)?),
        }
    } else {
        let mut replica_config = PbConfig::new(me, view_service);
        // Larger on every start (a counter in the data directory, lifted to the wall clock in
        // milliseconds), so the view service tells a restart of this server from a late ping
        // of its previous run.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_millis() as u64);
        replica_config.incarnation = chorus_storage::next_incarnation(&config.data_dir, now_ms)
            .context("cannot record this start of the node")?;
        let mut store = KvStore::new(KvConfig::default());
        // Primary-backup ships effects, so the primary's own randomness may decide what a
        // command such as SPOP does (Raft's replicas apply every command and stay seeded by
        // the log index): seeded from the operating system's randomness, through std's
        // randomly keyed hasher, and this start's time.
        store.set_entropy(
            std::collections::hash_map::RandomState::new().hash_one((now_ms, std::process::id())),
        );
        PbNode::Replica(Box::new(PbReplica::new(replica_config, Box::new(store))?))
    };
    let role = if me == view_service {
        "view service"
    } else {
        "server"
    };

    tracing::info!(
        node = me.0,
        role,
        view_service = view_service.0,
        ping_interval_ms = timing.ping_interval_ms,
        dead_pings = timing.dead_pings,
        "primary-backup (data in memory only)"
    );
    let host = PbHost::new(node, config.redis_addresses(), config.data_dir.clone());
    let tick = Duration::from_millis(timing.ping_interval_ms);
    run_node(config, exit_with_parent, host, 0, tick, "pb-").await
}

/// The view the view service made durable before it stopped, if any.
fn read_durable_view(data_dir: &std::path::Path) -> anyhow::Result<Option<DurableView>> {
    let Some(bytes) = read_record(data_dir, VIEW_FILE_NAME)
        .context("cannot read the view service's durable view")?
    else {
        return Ok(None);
    };
    let durable = DurableView::decode(&bytes).with_context(|| {
        format!(
            "the view service's durable view in {} is damaged",
            data_dir.join(VIEW_FILE_NAME).display()
        )
    })?;
    Ok(Some(durable))
}

/// A node started in this process: its driver thread, its input queue and its published
/// state. `run_node` serves until a signal; [`crate::embed`] until the program stops it.
pub struct Started {
    /// The node.
    pub me: NodeId,
    /// The driver's input queue.
    pub inputs: SyncSender<Input>,
    /// What the driver publishes (status, the shutdown flag).
    pub shared: Arc<Shared>,
    driver_thread: std::thread::JoinHandle<Result<(), String>>,
    driver_exit: tokio::sync::oneshot::Receiver<()>,
}

impl Started {
    /// Asks the driver to stop, and waits for its thread.
    ///
    /// # Errors
    /// If the driver had stopped on a storage error, or panicked.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shared
            .shutdown
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.inputs);
        match self.driver_thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => bail!("the node stopped because its storage failed: {error}"),
            Err(_) => bail!("the driver thread panicked"),
        }
    }
}

/// Runs node `config` with its driver `host` until it is asked to stop (a signal, or the
/// parent's exit).
async fn run_node<H>(
    config: NodeConfig,
    exit_with_parent: bool,
    host: H,
    incarnation: u64,
    tick: Duration,
    thread_prefix: &str,
) -> anyhow::Result<()>
where
    H: Host + Send + 'static,
    H::Error: std::fmt::Display + Send + 'static,
{
    let mut started = start_node(&config, host, incarnation, tick, thread_prefix).await?;
    wait_for_stop(
        started.me,
        exit_with_parent,
        &started.shared,
        &mut started.driver_exit,
    )
    .await;
    started.stop()
}

/// Binds node `config`'s listeners, starts its driver thread over `host` and serves its peers
/// and frontends (the RESP frontend only if the configuration gives the node a RESP address).
///
/// # Errors
/// If an address cannot be bound or the thread cannot start.
pub async fn start_node<H>(
    config: &NodeConfig,
    host: H,
    incarnation: u64,
    tick: Duration,
    thread_prefix: &str,
) -> anyhow::Result<Started>
where
    H: Host + Send + 'static,
    H::Error: std::fmt::Display + Send + 'static,
{
    let me = config.node_id();
    let listeners = Listeners::bind(config).await?;
    let limits = &config.limits;
    let (inputs, inputs_receiver) = sync_channel::<Input>(limits.driver_queue_max);
    let shared = Arc::new(Shared::new());
    let book = AddressBook::open(
        config.nodes.iter().map(|node| MemberAddress {
            id: NodeId(node.id),
            peer: node.peer,
            redis: node.redis,
            admin: node.admin,
        }),
        Some(config.data_dir.join(BOOK_FILE_NAME)),
    );
    let (identity, outboxes) = start_outbound(config, &book);
    let context = DriverContext {
        me,
        peers: outboxes,
        shared: shared.clone(),
        requests: Requests::new(
            incarnation,
            Duration::from_millis(config.timing.request_timeout_ms),
            limits.requests_pending_max,
        ),
        book,
        dialer: Some(Dialer {
            handle: tokio::runtime::Handle::current(),
            identity: identity.clone(),
            queue_max: limits.peer_queue_max,
        }),
        waker: Some(inputs.clone()),
        tick_due: Instant::now(),
        tick,
    };
    let pacing = Pacing {
        tick,
        batch_inputs_max: 4096,
    };
    let driver = Driver::new(host, context, inputs_receiver, pacing);
    let (driver_done, driver_exit) = tokio::sync::oneshot::channel();
    let driver_thread = std::thread::Builder::new()
        .name(format!("chorus-{thread_prefix}driver-{}", me.0))
        .spawn(move || {
            let result = driver.run().map_err(|error| error.to_string());
            let _ = driver_done.send(());
            result
        })
        .context("cannot start the driver thread")?;

    serve_frontends(config, listeners, identity, &inputs, &shared);
    Ok(Started {
        me,
        inputs,
        shared,
        driver_thread,
        driver_exit,
    })
}

struct Listeners {
    peer: TcpListener,
    redis: Option<TcpListener>,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(config: &NodeConfig) -> anyhow::Result<Listeners> {
        let me = config.me();
        let redis = match me.redis {
            Some(address) => Some(bind(address, "RESP clients").await?),
            None => None,
        };
        Ok(Listeners {
            peer: bind(me.peer, "peers").await?,
            redis,
            admin: bind(me.admin, "HTTP admin").await?,
        })
    }
}

/// Starts one outbound connection task per peer in the address book; returns who this node
/// is and the peers' queues.
fn start_outbound(config: &NodeConfig, book: &AddressBook) -> (Arc<Identity>, Outboxes) {
    let me = config.node_id();
    let limits = &config.limits;
    let peers: BTreeMap<NodeId, std::net::SocketAddr> = book
        .all()
        .into_iter()
        .filter(|entry| entry.id != me)
        .map(|entry| (entry.id, entry.peer))
        .collect();
    let identity = Arc::new(Identity {
        cluster_id: config.cluster_id.clone(),
        me,
        peers: std::sync::RwLock::new(peers.clone()),
        accept_unknown: config.join.is_some(),
        frame_bytes_max: limits.frame_bytes_max,
    });
    let mut outboxes = BTreeMap::new();
    for (&peer, &address) in &peers {
        let (sender, receiver) = mpsc::channel(limits.peer_queue_max);
        outboxes.insert(peer, sender);
        tokio::spawn(run_outbound(identity.clone(), peer, address, receiver));
    }
    (identity, outboxes)
}

/// Serves the peer listener, the admin server and (on a node that takes clients) the RESP
/// frontend, all feeding the same driver queue, whichever the protocol.
fn serve_frontends(
    config: &NodeConfig,
    listeners: Listeners,
    identity: Arc<Identity>,
    inputs: &SyncSender<Input>,
    shared: &Arc<Shared>,
) {
    let limits = &config.limits;
    tokio::spawn(run_inbound(
        listeners.peer,
        identity,
        inputs.clone(),
        shared.clone(),
    ));
    tokio::spawn(crate::frontends::admin::serve(
        listeners.admin,
        crate::frontends::admin::AdminState {
            shared: shared.clone(),
            inputs: inputs.clone(),
            cluster_id: config.cluster_id.clone(),
            fault_injection: config.debug.fault_injection,
        },
    ));
    if let Some(redis) = listeners.redis {
        tokio::spawn(crate::frontends::redis::server::serve(
            redis,
            inputs.clone(),
            shared.clone(),
            crate::frontends::redis::server::Settings {
                connections_max: limits.connections_max,
                inflight_max: limits.connection_inflight_max,
                me: config.node_id(),
                redis_addresses: Arc::new(config.redis_addresses()),
            },
        ));
    }
    let me = config.me();
    tracing::info!(
        node = me.id,
        protocol = ?config.protocol,
        peer = %me.peer,
        redis = ?me.redis,
        admin = %me.admin,
        "serving"
    );
}

/// Waits for a stop signal (then asks the driver to stop) or for the driver to stop by itself.
async fn wait_for_stop(
    me: NodeId,
    exit_with_parent: bool,
    shared: &Shared,
    driver_exit: &mut tokio::sync::oneshot::Receiver<()>,
) {
    tokio::select! {
        () = stop_signal(exit_with_parent) => {
            tracing::info!(node = me.0, "stopping");
            shared.shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        _ = driver_exit => {}
    }
}
