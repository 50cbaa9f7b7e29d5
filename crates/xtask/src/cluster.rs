//! The node processes of a nemesis run: one `chorus server` per network namespace, started,
//! killed, paused and restarted on the nemesis's command, and asked for their status over HTTP.
//!
//! Each node gets a configuration file and a log file in the run directory; the log is appended
//! to across restarts, so a failed run keeps the whole story of every node. Dropping a
//! [`Cluster`] kills every node it started.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lab::Lab;

/// The port of Raft traffic on every node's own address.
const PEER_PORT: u16 = 7100;
/// The port of RESP clients.
const REDIS_PORT: u16 = 6379;
/// The port of the HTTP admin endpoint.
const ADMIN_PORT: u16 = 8100;

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its namespace.
    ns: String,
    config: PathBuf,
    log: PathBuf,
    /// Its RESP address.
    pub redis: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    child: Option<Child>,
    paused: bool,
}

/// The replication scheme a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Raft: every node a server.
    Raft,
    /// Primary-backup: the servers and one view service.
    Pb,
    /// The hybrid: the data servers and a configuration group of three.
    Hybrid,
}

impl Scheme {
    /// The name in configurations and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Raft => "raft",
            Scheme::Pb => "pb",
            Scheme::Hybrid => "hybrid",
        }
    }

    /// Nodes that take no clients, after the servers: the view service, or the configuration
    /// group.
    #[must_use]
    pub fn extra_nodes(self) -> usize {
        match self {
            Scheme::Raft => 0,
            Scheme::Pb => 1,
            Scheme::Hybrid => 3,
        }
    }
}

/// Every node of the cluster, 1-based as in the configuration (`nodes[0]` is node 1). Under
/// primary-backup the last node is the view service, under the hybrid the last three are the
/// configuration group; the others are servers.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    scheme: Scheme,
    /// Primary-backup: the view service's node.
    view_service: Option<usize>,
    agent: ureq::Agent,
}

impl Cluster {
    /// Writes one configuration per node under `dir` for `servers` servers (plus a view
    /// service under primary-backup, a configuration group under the hybrid); starts nothing
    /// yet.
    ///
    /// # Errors
    /// If the files cannot be written.
    pub fn new(
        lab: &Lab,
        servers: usize,
        scheme: Scheme,
        binary: &Path,
        dir: &Path,
        inject_bugs: &[String],
    ) -> anyhow::Result<Cluster> {
        let address = |node: usize, port: u16| SocketAddr::from((lab.node_ip(node), port));
        let view_service = (scheme == Scheme::Pb).then_some(servers + 1);
        let count = servers + scheme.extra_nodes();
        let mut table = String::new();
        for node in 1..=count {
            if node > servers {
                let role = if scheme == Scheme::Pb {
                    "view-service"
                } else {
                    "configuration"
                };
                table.push_str(&format!(
                    "\n[[nodes]]\nid = {node}\nrole = \"{role}\"\npeer = \"{}\"\nadmin = \"{}\"\n",
                    address(node, PEER_PORT),
                    address(node, ADMIN_PORT)
                ));
                continue;
            }
            table.push_str(&format!(
                "\n[[nodes]]\nid = {node}\npeer = \"{}\"\nredis = \"{}\"\nadmin = \"{}\"\n",
                address(node, PEER_PORT),
                address(node, REDIS_PORT),
                address(node, ADMIN_PORT)
            ));
        }
        let protocol = scheme.name();
        let bugs = if inject_bugs.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = inject_bugs.iter().map(|b| format!("{b:?}")).collect();
            format!(
                "# TESTING ONLY: deliberately broken behaviour.\ninject_bugs = [{}]\n",
                names.join(", ")
            )
        };
        let mut nodes = Vec::new();
        for node in 1..=count {
            let data_dir = dir.join(format!("node-{node}"));
            let config = dir.join(format!("node-{node}.toml"));
            let text = format!(
                "cluster_id = \"chorus-nemesis\"\nid = {node}\ndata_dir = {:?}\nprotocol = \"{protocol}\"\n{bugs}{table}",
                data_dir.display().to_string()
            );
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            nodes.push(Node {
                ns: lab.node_ns(node),
                config,
                log: dir.join(format!("node-{node}.log")),
                redis: address(node, REDIS_PORT),
                admin: address(node, ADMIN_PORT),
                child: None,
                paused: false,
            });
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(400)))
            .build()
            .into();
        Ok(Cluster {
            binary: binary.to_path_buf(),
            nodes,
            scheme,
            view_service,
            agent,
        })
    }

    /// How many nodes, the view service included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// How many servers (nodes that hold the state machine and take clients).
    #[must_use]
    pub fn servers(&self) -> usize {
        self.nodes.len() - self.scheme.extra_nodes()
    }

    /// The scheme the cluster runs.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Hybrid: the configuration group's leader, if one answers as leader.
    #[must_use]
    pub fn config_leader(&self) -> Option<usize> {
        if self.scheme != Scheme::Hybrid {
            return None;
        }
        (self.servers() + 1..=self.len())
            .filter(|&node| self.running(node) && !self.nodes[node - 1].paused)
            .filter_map(|node| {
                let status = self.status(node)?;
                let leads = status["role"].as_str() == Some("configuration-leader");
                leads.then(|| (status["term"].as_u64().unwrap_or(0), node))
            })
            .max()
            .map(|(_, node)| node)
    }

    /// Primary-backup: the view service's node.
    #[must_use]
    pub fn view_service(&self) -> Option<usize> {
        self.view_service
    }

    /// Every server's RESP address, in node order.
    #[must_use]
    pub fn redis_addresses(&self) -> Vec<SocketAddr> {
        self.nodes[..self.servers()]
            .iter()
            .map(|n| n.redis)
            .collect()
    }

    /// Starts node `node` if it is not running.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn start(&mut self, node: usize) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let entry = &mut self.nodes[node - 1];
        if entry.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&entry.log)
            .with_context(|| format!("cannot open {}", entry.log.display()))?;
        let log_err: File = log.try_clone().context("cannot share a log file")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &entry.ns])
            .arg(&binary)
            .arg("server")
            .arg("--config")
            .arg(&entry.config)
            .arg("--exit-with-parent")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .context("cannot start a node")?;
        entry.child = Some(child);
        entry.paused = false;
        Ok(())
    }

    /// The process id of node `node`, if it runs (`ip netns exec` execs the node in place).
    #[must_use]
    pub fn pid(&self, node: usize) -> Option<Pid> {
        let child = self.nodes[node - 1].child.as_ref()?;
        i32::try_from(child.id()).ok().map(Pid::from_raw)
    }

    fn signal(&self, node: usize, signal: Signal) {
        if let Some(pid) = self.pid(node) {
            let _ = kill(pid, signal);
        }
    }

    /// Kills node `node` with SIGKILL and reaps it.
    pub fn kill(&mut self, node: usize) {
        let entry = &mut self.nodes[node - 1];
        if let Some(mut child) = entry.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        entry.paused = false;
    }

    /// Stops node `node` with SIGTERM (graceful), or SIGKILL after 5 s.
    pub fn stop(&mut self, node: usize) {
        self.resume(node);
        self.signal(node, Signal::SIGTERM);
        let entry = &mut self.nodes[node - 1];
        if let Some(mut child) = entry.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes node `node` (SIGSTOP).
    pub fn pause(&mut self, node: usize) {
        self.signal(node, Signal::SIGSTOP);
        self.nodes[node - 1].paused = true;
    }

    /// Thaws node `node` (SIGCONT) if it was paused.
    pub fn resume(&mut self, node: usize) {
        if self.nodes[node - 1].paused {
            self.signal(node, Signal::SIGCONT);
            self.nodes[node - 1].paused = false;
        }
    }

    /// Whether node `node` is running (not killed; possibly paused).
    #[must_use]
    pub fn running(&self, node: usize) -> bool {
        self.nodes[node - 1].child.is_some()
    }

    /// Reaps nodes that exited on their own; returns them.
    pub fn reap_exited(&mut self) -> Vec<usize> {
        let mut exited = Vec::new();
        for (index, entry) in self.nodes.iter_mut().enumerate() {
            if let Some(child) = entry.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                entry.child = None;
                exited.push(index + 1);
            }
        }
        exited
    }

    /// Node `node`'s `/status`, if it answers.
    #[must_use]
    pub fn status(&self, node: usize) -> Option<serde_json::Value> {
        let admin = self.nodes[node - 1].admin;
        let mut response = self
            .agent
            .get(format!("http://{admin}/status"))
            .call()
            .ok()?;
        response.body_mut().read_json().ok()
    }

    /// The leader: under Raft the node that calls itself leader (in the highest term), under
    /// primary-backup the primary of the view service's latest view, under the hybrid the
    /// data server that serves (the primary of the newest view a server knows, if none does).
    #[must_use]
    pub fn leader(&self) -> Option<usize> {
        if let Some(service) = self.view_service {
            let status = self.status(service)?;
            let primary = status["view"]["primary"].as_u64()?;
            return usize::try_from(primary).ok();
        }
        if self.scheme == Scheme::Hybrid {
            let statuses: Vec<serde_json::Value> = (1..=self.servers())
                .filter(|&node| self.running(node) && !self.nodes[node - 1].paused)
                .filter_map(|node| self.status(node))
                .collect();
            let serving = statuses
                .iter()
                .find(|s| s["hybrid"]["serving"] == true)
                .and_then(|s| s["id"].as_u64());
            let newest = statuses
                .iter()
                .max_by_key(|s| s["hybrid"]["epoch"].as_u64().unwrap_or(0))
                .and_then(|s| s["hybrid"]["primary"].as_u64());
            return serving.or(newest).and_then(|n| usize::try_from(n).ok());
        }
        (1..=self.len())
            .filter(|&node| self.running(node) && !self.nodes[node - 1].paused)
            .filter_map(|node| {
                let status = self.status(node)?;
                let leads = status["role"].as_str() == Some("leader");
                leads.then(|| (status["term"].as_u64().unwrap_or(0), node))
            })
            .max()
            .map(|(_, node)| node)
    }

    /// A fingerprint of a settled cluster, or `None` if it is not settled. Raft: one leader,
    /// and every node at the same commit, applied and last index. Primary-backup: every node
    /// answers, and the view service has an acknowledged view with a primary and a backup.
    /// Hybrid: every node answers, a configuration leader is known, and a primary serves a
    /// view of two or more whose members all applied as much as it did.
    fn settled(&self) -> Option<Vec<u64>> {
        let statuses: Vec<serde_json::Value> = (1..=self.len())
            .map(|node| self.status(node))
            .collect::<Option<_>>()?;
        if self.scheme == Scheme::Hybrid {
            let servers = &statuses[..self.servers()];
            let primary = servers.iter().find(|s| s["hybrid"]["serving"] == true)?;
            let hybrid = &primary["hybrid"];
            let backups: Vec<u64> = hybrid["backups"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect();
            let full = backups.len() + 1 >= 2.min(self.servers());
            let applied = primary["applied"].as_u64()?;
            let in_step = backups.iter().all(|&b| {
                usize::try_from(b)
                    .ok()
                    .and_then(|b| servers.get(b - 1))
                    .is_some_and(|s| s["applied"].as_u64() == Some(applied))
            });
            let leader = self.config_leader().is_some();
            return (full && in_step && leader)
                .then(|| vec![hybrid["epoch"].as_u64().unwrap_or(0), applied]);
        }
        if let Some(service) = self.view_service {
            let view = &statuses[service - 1]["view"];
            let complete = view["primary"].is_u64()
                && (self.servers() == 1 || view["backup"].is_u64())
                && view["acked"] == true;
            return complete.then(|| vec![view["number"].as_u64().unwrap_or(0)]);
        }
        let leaders = statuses
            .iter()
            .filter(|s| s["role"].as_str() == Some("leader"))
            .count();
        let same = statuses.iter().all(|s| {
            s["applied"] == statuses[0]["applied"]
                && s["commit"] == statuses[0]["commit"]
                && s["last_index"] == statuses[0]["last_index"]
        });
        (leaders == 1 && same).then(|| {
            statuses
                .iter()
                .map(|s| s["applied"].as_u64().unwrap_or(0))
                .collect()
        })
    }

    /// Waits until the cluster is settled (see `settled`) twice in a row, 300 ms apart.
    /// Returns whether that happened within `limit`.
    pub fn wait_converged(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut previous: Option<Vec<u64>> = None;
        while Instant::now() < deadline {
            let current = self.settled();
            if current.is_some() && current == previous {
                return true;
            }
            previous = current;
            std::thread::sleep(Duration::from_millis(300));
        }
        false
    }

    /// Waits until the cluster has a leader (primary-backup: a settled view); returns it.
    pub fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let ready = self.scheme == Scheme::Raft || self.settled().is_some();
            if let Some(leader) = self.leader().filter(|_| ready) {
                return Some(leader);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=self.len() {
            self.resume(node);
            self.kill(node);
        }
    }
}
