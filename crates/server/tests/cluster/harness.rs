//! A cluster of real `chorus server` processes on 127.0.0.1 for end-to-end tests.
//!
//! [`TestCluster`] writes one TOML configuration per node into a temporary directory, starts
//! each node with its output going to a log file there, and can kill (SIGKILL), restart and
//! observe them. It runs Raft clusters ([`TestCluster::start`]), primary-backup clusters
//! ([`TestCluster::start_pb`]: servers 1..=n and the view service as node n + 1) and hybrid
//! clusters ([`TestCluster::start_hybrid`]: data servers 1..=n and the configuration group as
//! nodes n + 1 to n + 3). Its `Drop` kills every process it started, even when the test panics, and on
//! a panic prints the tail of every node's log and keeps the directory for inspection.
//!
//! Ports are taken from a range below Linux's ephemeral range (so that no outbound connection
//! can be given one of them between the check and the node's bind), distinct within this test
//! binary, and each is checked to be free before it is used.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_client::{Client, ClientConfig};
use chorus_resp::{Frame, Limits, encode_request, parse_reply};

/// The addresses of one node.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub peer: SocketAddr,
    pub redis: SocketAddr,
    pub admin: SocketAddr,
}

/// What `/status` says.
#[derive(Clone, Debug)]
pub struct Status {
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
}

/// What `/status` says about the view, on a primary-backup node.
#[derive(Clone, Debug)]
pub struct PbStatus {
    pub role: String,
    pub view: u64,
    pub primary: Option<u64>,
    pub backup: Option<u64>,
    pub acked: bool,
}

/// The cluster id every test cluster uses.
pub const CLUSTER_ID: &str = "chorus-e2e";

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free port on 127.0.0.1, never handed out twice by this process.
fn free_port() -> u16 {
    // Start somewhere that depends on the process id so that two test binaries running at
    // once are unlikely to walk the same ports; stay within 20000..32000.
    let _ = NEXT_PORT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..12_000 {
        let mut port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if port >= 32_000 {
            port = 20_000 + port % 12_000;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A cluster of node processes. Nodes are numbered from 1.
pub struct TestCluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    nodes: Vec<Addresses>,
    children: Vec<Option<Child>>,
    /// Primary-backup: the view service's node id; hybrid: the configuration group's.
    special: Vec<u64>,
}

/// What a hybrid data server's `/status` says.
#[derive(Clone, Debug)]
pub struct HybridStatus {
    pub role: String,
    pub epoch: u64,
    pub primary: Option<u64>,
    pub backups: Vec<u64>,
    pub active: bool,
    pub serving: bool,
    pub config_leader: Option<u64>,
}

impl TestCluster {
    /// Writes the configurations of `count` nodes (default timing and limits) and starts
    /// every node.
    pub fn start(count: usize) -> TestCluster {
        let mut cluster = TestCluster::configure(count, "");
        for node in 1..=count as u64 {
            cluster.restart(node);
        }
        cluster
    }

    /// Writes the configurations of a Raft cluster that starts with the voters 1..=`founders`
    /// and may grow to `total` nodes, and starts the founders. Node `k > founders` is
    /// configured to join the running cluster (`join` = the admin address of node `k - 1`,
    /// with only itself in its `[[nodes]]` table); start it with [`TestCluster::restart`].
    pub fn start_growable(founders: usize, total: usize) -> TestCluster {
        let mut cluster = TestCluster::configure(total, "");
        let table = |ids: &mut dyn Iterator<Item = u64>| -> String {
            ids.map(|id| {
                let node = cluster.addresses(id);
                format!(
                    "[[nodes]]\nid = {id}\npeer = \"{}\"\nredis = \"{}\"\nadmin = \"{}\"\n\n",
                    node.peer, node.redis, node.admin
                )
            })
            .collect()
        };
        let founding = table(&mut (1..=founders as u64));
        for id in 1..=total as u64 {
            let data = cluster.data_dir(id);
            let text = if id as usize <= founders {
                format!(
                    "cluster_id = \"{CLUSTER_ID}\"\nid = {id}\ndata_dir = \"{}\"\n\n{founding}",
                    data.display()
                )
            } else {
                format!(
                    "cluster_id = \"{CLUSTER_ID}\"\nid = {id}\ndata_dir = \"{}\"\njoin = \"{}\"\n\n{}",
                    data.display(),
                    cluster.addresses(id - 1).admin,
                    table(&mut std::iter::once(id))
                )
            };
            std::fs::write(cluster.root.join(format!("node-{id}.toml")), text)
                .expect("cannot write a node configuration");
        }
        for node in 1..=founders as u64 {
            cluster.restart(node);
        }
        cluster
    }

    /// Runs `chorus admin <arguments>` against the admin endpoints of `through`; returns
    /// whether it succeeded, and its output.
    pub fn admin(&self, through: &[u64], arguments: &[&str]) -> (bool, String) {
        let endpoints: Vec<String> = through
            .iter()
            .map(|&node| self.addresses(node).admin.to_string())
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .arg("admin")
            .args(arguments)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .output()
            .expect("cannot run chorus admin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// The voters and learners the node's `/status` reports.
    pub fn membership(&self, node: u64) -> Option<(Vec<u64>, Vec<u64>)> {
        let value = self.status_json(node)?;
        let ids = |field: &str| -> Option<Vec<u64>> {
            Some(
                value[field]
                    .as_array()?
                    .iter()
                    .filter_map(serde_json::Value::as_u64)
                    .collect(),
            )
        };
        Some((ids("voters")?, ids("learners")?))
    }

    /// A leader that a majority of `voters` (itself included) agree on, in one term, whose
    /// configuration has exactly these voters; `None` if there is none right now.
    pub fn leader_among(&self, voters: &[u64]) -> Option<u64> {
        let statuses: Vec<(u64, Status)> = voters
            .iter()
            .filter(|&&node| self.is_running(node))
            .filter_map(|&node| self.status(node).map(|status| (node, status)))
            .collect();
        let (leader, status) = statuses
            .iter()
            .find(|(_, status)| status.role == "leader")?;
        let agreeing = statuses
            .iter()
            .filter(|(_, other)| other.term == status.term && other.leader == Some(*leader))
            .count();
        let (in_force, _) = self.membership(*leader)?;
        (agreeing > voters.len() / 2 && in_force == voters).then_some(*leader)
    }

    /// Writes the configurations, with `extra` TOML appended to each (e.g. a `[timing]`
    /// table), without starting anything.
    pub fn configure(count: usize, extra: &str) -> TestCluster {
        TestCluster::configure_with(count, &[], "", "", extra)
    }

    /// Writes the configurations of a primary-backup cluster of `servers` servers (nodes
    /// 1..=servers) and a view service (node servers + 1), with `extra` TOML appended, and
    /// starts the view service, then every server.
    pub fn start_pb(servers: usize, extra: &str) -> TestCluster {
        let mut cluster = TestCluster::configure_with(
            servers + 1,
            &[servers as u64 + 1],
            "pb",
            "view-service",
            extra,
        );
        cluster.restart(servers as u64 + 1);
        for node in 1..=servers as u64 {
            cluster.restart(node);
        }
        cluster
    }

    /// Writes the configurations of a hybrid cluster of `servers` data servers (nodes
    /// 1..=servers) and a configuration group of three (nodes servers + 1 to servers + 3),
    /// with `extra` TOML appended, and starts the group, then every data server (node 1
    /// first, so that it becomes the primary).
    pub fn start_hybrid(servers: usize, extra: &str) -> TestCluster {
        let group: Vec<u64> = (servers as u64 + 1..=servers as u64 + 3).collect();
        let mut cluster =
            TestCluster::configure_with(servers + 3, &group, "hybrid", "configuration", extra);
        for &node in &group {
            cluster.restart(node);
        }
        cluster.restart(1);
        cluster.poll(
            Duration::from_secs(10),
            "node 1 to be named primary",
            || cluster.hybrid_status(1).filter(|s| s.primary == Some(1)),
        );
        for node in 2..=servers as u64 {
            cluster.restart(node);
        }
        cluster
    }

    /// Hybrid: what the data server's `/status` says.
    pub fn hybrid_status(&self, node: u64) -> Option<HybridStatus> {
        let value = self.status_json(node)?;
        let hybrid = &value["hybrid"];
        Some(HybridStatus {
            role: value["role"].as_str()?.to_string(),
            epoch: hybrid["epoch"].as_u64()?,
            primary: hybrid["primary"].as_u64(),
            backups: hybrid["backups"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect(),
            active: hybrid["active"].as_bool()?,
            serving: hybrid["serving"].as_bool().unwrap_or(false),
            config_leader: hybrid["config_leader"].as_u64(),
        })
    }

    /// Hybrid: waits until a data server serves an active view of at least `members` members
    /// of an epoch above `newer_than`; returns (epoch, primary, backups).
    pub fn wait_for_hybrid_view(
        &self,
        newer_than: u64,
        members: usize,
        within: Duration,
    ) -> (u64, u64, Vec<u64>) {
        self.poll(within, "a serving primary with a full view", || {
            self.servers().into_iter().find_map(|node| {
                let status = self.hybrid_status(node)?;
                (status.serving
                    && status.epoch > newer_than
                    && status.primary == Some(node)
                    && status.backups.len() + 1 >= members)
                    .then_some((status.epoch, node, status.backups))
            })
        })
    }

    fn configure_with(
        count: usize,
        special: &[u64],
        protocol: &str,
        role: &str,
        extra: &str,
    ) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("chorus-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let root = dir.path().to_path_buf();
        let nodes: Vec<Addresses> = (0..count)
            .map(|_| Addresses {
                peer: address(free_port()),
                redis: address(free_port()),
                admin: address(free_port()),
            })
            .collect();
        let mut table = String::new();
        for (index, node) in nodes.iter().enumerate() {
            let id = index as u64 + 1;
            if special.contains(&id) {
                table.push_str(&format!(
                    "[[nodes]]\nid = {id}\nrole = \"{role}\"\npeer = \"{}\"\nadmin = \"{}\"\n\n",
                    node.peer, node.admin
                ));
                continue;
            }
            table.push_str(&format!(
                "[[nodes]]\nid = {id}\npeer = \"{}\"\nredis = \"{}\"\nadmin = \"{}\"\n\n",
                node.peer, node.redis, node.admin
            ));
        }
        let protocol = if protocol.is_empty() {
            String::new()
        } else {
            format!("protocol = \"{protocol}\"\n")
        };
        for id in 1..=count {
            let data = root.join(format!("data-{id}"));
            let text = format!(
                "cluster_id = \"{CLUSTER_ID}\"\nid = {id}\ndata_dir = \"{}\"\n{protocol}\n{table}{extra}",
                data.display()
            );
            std::fs::write(root.join(format!("node-{id}.toml")), text)
                .expect("cannot write a node configuration");
        }
        TestCluster {
            dir: Some(dir),
            root,
            children: (0..count).map(|_| None).collect(),
            nodes,
            special: special.to_vec(),
        }
    }

    /// The nodes that serve clients: every node but a view service or a configuration node.
    pub fn servers(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|node| !self.special.contains(node))
            .collect()
    }

    /// Primary-backup: what the node's `/status` says about the view.
    pub fn pb_status(&self, node: u64) -> Option<PbStatus> {
        let value = self.status_json(node)?;
        let view = &value["view"];
        Some(PbStatus {
            role: value["role"].as_str()?.to_string(),
            view: view["number"].as_u64()?,
            primary: view["primary"].as_u64(),
            backup: view["backup"].as_u64(),
            acked: view["acked"].as_bool()?,
        })
    }

    /// Primary-backup: waits until the view service's view is newer than `newer_than`,
    /// acknowledged, and has a primary and a backup (the backup then holds the complete
    /// state); returns (view, primary, backup).
    pub fn wait_for_pb_view(&self, newer_than: u64, within: Duration) -> (u64, u64, u64) {
        let service = *self.special.first().expect("a primary-backup cluster");
        self.poll(within, "an acknowledged view with a backup", || {
            let status = self.pb_status(service)?;
            match (status.acked, status.primary, status.backup) {
                (true, Some(primary), Some(backup)) if status.view > newer_than => {
                    Some((status.view, primary, backup))
                }
                _ => None,
            }
        })
    }

    /// The temporary directory holding configurations, data and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    /// The node's data directory.
    pub fn data_dir(&self, node: u64) -> PathBuf {
        self.root.join(format!("data-{node}"))
    }

    /// The node's log file (stdout and stderr of every run, appended).
    pub fn log_path(&self, node: u64) -> PathBuf {
        self.root.join(format!("node-{node}.log"))
    }

    /// The node's log so far.
    pub fn log(&self, node: u64) -> String {
        std::fs::read(self.log_path(node))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The node's addresses.
    pub fn addresses(&self, node: u64) -> Addresses {
        self.nodes[(node - 1) as usize]
    }

    /// The node's RESP address.
    pub fn redis(&self, node: u64) -> SocketAddr {
        self.addresses(node).redis
    }

    /// The node's peer address.
    pub fn peer(&self, node: u64) -> SocketAddr {
        self.addresses(node).peer
    }

    /// Whether the node's process was started and not killed (it may have exited since).
    pub fn is_running(&self, node: u64) -> bool {
        self.children[(node - 1) as usize].is_some()
    }

    /// Starts the node (again) with its configuration and data directory.
    pub fn restart(&mut self, node: u64) {
        assert!(!self.is_running(node), "node {node} is already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .expect("cannot open a node log");
        let _ = writeln!(log, "==== e2e harness: starting node {node} ====");
        let log_err = log.try_clone().expect("cannot share a node log");
        let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .arg("server")
            .arg("--config")
            .arg(self.root.join(format!("node-{node}.toml")))
            // If the test binary itself is killed, the nodes notice and stop.
            .arg("--exit-with-parent")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("cannot start chorus");
        self.children[(node - 1) as usize] = Some(child);
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill_9(&mut self, node: u64) {
        if let Some(mut child) = self.children[(node - 1) as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every node.
    pub fn stop_all(&mut self) {
        for node in self.ids() {
            self.kill_9(node);
        }
    }

    /// Waits up to `within` for the node's process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, node: u64, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let slot = &mut self.children[(node - 1) as usize];
        let child = slot.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                *slot = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's `/status` as JSON, if it answers.
    pub fn status_json(&self, node: u64) -> Option<serde_json::Value> {
        let admin = self.addresses(node).admin;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .into();
        let mut response = agent.get(format!("http://{admin}/status")).call().ok()?;
        response.body_mut().read_json().ok()
    }

    /// A counter of the node's `/metrics` (`name` without the `chorus_` prefix), if it
    /// answers.
    pub fn metric(&self, node: u64, name: &str) -> Option<f64> {
        let admin = self.addresses(node).admin;
        let mut response = ureq::get(format!("http://{admin}/metrics")).call().ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        text.lines()
            .find(|line| line.starts_with(&format!("chorus_{name}")) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Sends `signal` to the node's process: SIGSTOP freezes it whole (its driver, its
    /// transport, its clock readings), as a paused VM or a long GC pause would; SIGCONT
    /// resumes it. A stopped node is still killed by `Drop`.
    pub fn signal(&self, node: u64, signal: nix::sys::signal::Signal) {
        let child = self.children[(node - 1) as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        let pid = i32::try_from(child.id()).expect("a pid fits an i32");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|error| panic!("cannot signal node {node}: {error}"));
    }

    /// Posts `/debug/stall-fsync` with `query` to the node (fault injection must be on in
    /// its configuration); returns the HTTP status and the body.
    pub fn stall_fsync(&self, node: u64, query: &str) -> (u16, String) {
        let admin = self.addresses(node).admin;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(format!("http://{admin}/debug/stall-fsync{query}"))
            .send_empty()
            .expect("the admin endpoint answers");
        let code = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (code, body)
    }

    /// The node's `/status`, if it answers.
    pub fn status(&self, node: u64) -> Option<Status> {
        let value = self.status_json(node)?;
        Some(Status {
            role: value["role"].as_str()?.to_string(),
            term: value["term"].as_u64()?,
            leader: value["leader"].as_u64(),
            commit: value["commit"].as_u64()?,
            applied: value["applied"].as_u64()?,
        })
    }

    /// Polls until `condition` holds or `within` passes; panics with `what` on timeout.
    pub fn poll<T>(
        &self,
        within: Duration,
        what: &str,
        mut condition: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = condition() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A leader that a majority of the running nodes (itself included) agree on, in one
    /// term; `None` if there is none right now.
    pub fn agreed_leader(&self) -> Option<u64> {
        let statuses: Vec<(u64, Status)> = self
            .ids()
            .into_iter()
            .filter(|&node| self.is_running(node))
            .filter_map(|node| self.status(node).map(|status| (node, status)))
            .collect();
        let majority = self.nodes.len() / 2 + 1;
        statuses
            .iter()
            .find(|(_, status)| status.role == "leader")
            .and_then(|(leader, status)| {
                let agreeing = statuses
                    .iter()
                    .filter(|(_, other)| other.term == status.term && other.leader == Some(*leader))
                    .count();
                (agreeing >= majority).then_some(*leader)
            })
    }

    /// Waits up to `within` for a leader a majority agrees on; returns its id.
    pub fn wait_for_leader(&self, within: Duration) -> u64 {
        self.poll(within, "a leader", || self.agreed_leader())
    }

    /// Waits until the node has applied at least `index`.
    pub fn wait_applied(&self, node: u64, index: u64, within: Duration) {
        self.poll(within, &format!("node {node} to apply {index}"), || {
            self.status(node).filter(|s| s.applied >= index).map(|_| ())
        });
    }

    /// A native client over every node's RESP address, with timeouts short enough for tests.
    pub fn client(&self) -> Client {
        Client::new(self.client_config()).expect("endpoints are given")
    }

    /// The configuration [`TestCluster::client`] uses.
    pub fn client_config(&self) -> ClientConfig {
        let endpoints = self
            .servers()
            .into_iter()
            .map(|node| self.redis(node))
            .collect();
        let mut config = ClientConfig::new(endpoints);
        config.attempt_timeout = Duration::from_secs(1);
        config.call_timeout = Duration::from_secs(5);
        config
    }

    /// The WAL segments of a node, in sequence order.
    pub fn wal_segments(&self, node: u64) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![self.data_dir(node)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    pending.push(path);
                } else if name.starts_with("wal-") && name.ends_with(".log") {
                    found.push(path);
                }
            }
        }
        found.sort_by_key(|path| path.file_name().map(|n| n.to_os_string()));
        found
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop_all();
        if std::thread::panicking() {
            for node in self.ids() {
                eprintln!(
                    "---- tail of {} ----\n{}",
                    self.log_path(node).display(),
                    tail(&self.log(node), 40)
                );
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("---- kept {} for inspection ----", dir.keep().display());
            }
        }
    }
}

/// A minimal blocking RESP client: one request, one reply.
pub struct Resp {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Resp {
    /// Connects to a RESP address.
    pub fn connect(address: SocketAddr) -> Resp {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .unwrap_or_else(|error| panic!("cannot connect to {address}: {error}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        Resp {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// How long [`Resp::reply`] and [`Resp::try_reply`] wait (10 s unless set).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
    }

    /// Reads one reply: `Ok(None)` if the connection closed first, `Err` if none came within
    /// the read timeout (or the connection broke).
    pub fn try_reply(&mut self) -> std::io::Result<Option<Frame>> {
        let limits = Limits::default();
        loop {
            if let Some(frame) = parse_reply(&mut self.buffer, &limits).expect("a valid reply") {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk)? {
                0 => return Ok(None),
                n => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a request without waiting for its reply.
    pub fn send(&mut self, arguments: &[&str]) {
        let mut out = BytesMut::new();
        encode_request(arguments, &mut out);
        self.send_raw(&out);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one reply; `None` if the connection closed first.
    pub fn reply(&mut self) -> Option<Frame> {
        self.try_reply()
            .unwrap_or_else(|error| panic!("no reply: {error}"))
    }

    /// Sends a request and reads its reply.
    pub fn call(&mut self, arguments: &[&str]) -> Frame {
        self.send(arguments);
        self.reply().expect("the server closed the connection")
    }

    /// Whether the server closes the connection (EOF or reset) within the read timeout,
    /// with no further reply.
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(n) => n == 0,
            Err(error) => matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        }
    }
}

/// `SET key value` through one node, retried (with a deadline) while the cluster has no
/// leader; panics on any other reply.
pub fn resp_set(address: SocketAddr, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = Resp::connect(address).call(&["SET", key, value]);
        match reply {
            Frame::Simple(ref text) if text == "OK" => return,
            Frame::Error(ref text)
                if text.starts_with("UNAVAILABLE") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("SET {key} through {address}: {other:?}"),
        }
    }
}

/// `GET key` through one node.
pub fn resp_get(address: SocketAddr, key: &str) -> Option<String> {
    match Resp::connect(address).call(&["GET", key]) {
        Frame::Bulk(value) => value.map(|v| String::from_utf8_lossy(&v).into_owned()),
        other => panic!("GET {key} through {address}: {other:?}"),
    }
}

/// Appends bytes to a file.
pub fn append_to(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open a segment");
    file.write_all(bytes).expect("append to a segment");
    file.sync_all().expect("sync a segment");
}

/// About where a WAL segment's records end: after its last byte that is not zero. A segment's
/// space is allocated ahead (`storage.preallocate`), so its length says nothing; its records
/// end at most a few bytes after that byte (the last sync marker ends in the high bytes of a
/// term, which are zero).
pub fn records_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read a segment");
    bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |at| at as u64 + 1)
}

/// Flips one bit of a file.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read a segment");
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write a segment");
}
