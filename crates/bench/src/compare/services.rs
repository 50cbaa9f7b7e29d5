//! The servers a comparison starts, and the guarantee that it stops them all.
//!
//! Each server runs in its own process group (a Chorus cluster is `chorus up` and its three
//! node processes), and a [`Service`] stops its whole group when it is dropped: SIGTERM, a
//! few seconds' grace, then SIGKILL. So an error, a panic or Ctrl-C anywhere in a comparison
//! leaves no process behind. Everything listens on 127.0.0.1 on ports the kernel just handed
//! out, with its data in a fresh directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server (one process group), stopped on drop.
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
    /// Sent to the process itself first; it is expected to stop (and reap) its own children.
    /// `None`: SIGTERM to the whole group.
    stop_signal: Option<nix::sys::signal::Signal>,
}

impl Service {
    /// Starts `command` in a new process group, its output going to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot start.
    pub fn start(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Service> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share a log file")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(Service {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stop_signal: None,
        })
    }

    /// Stops the service by sending `signal` to its first process only (which then stops its
    /// children itself), before the group is killed as a last resort.
    #[must_use]
    pub fn stopped_by(mut self, signal: nix::sys::signal::Signal) -> Service {
        self.stop_signal = Some(signal);
        self
    }

    /// The name given at start.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails if the server has exited.
    ///
    /// # Errors
    /// Naming the server and its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until `ready` says yes, failing if the server exits or takes too long.
    ///
    /// # Errors
    /// Naming the server and its log.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {} s; see {}",
                    self.name,
                    READY_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        match (self.stop_signal, i32::try_from(self.child.id())) {
            (Some(signal), Ok(pid)) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
            _ => self.signal_group(nix::sys::signal::Signal::SIGTERM),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (the leader or its children) goes now.
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` free TCP ports on 127.0.0.1, as the kernel hands them out.
///
/// # Errors
/// When no port can be bound.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A base port `P` such that `P+1..=P+nodes`, `P+101..` and `P+201..` are all free (the
/// layout of `chorus up --base-port`; `nodes` counts a view service too).
///
/// # Errors
/// When no such range is found among a few candidates.
pub fn free_chorus_base(nodes: u16, avoid: &[u16]) -> anyhow::Result<u16> {
    for candidate in (20_000u16..40_000).step_by(1_000) {
        let ports: Vec<u16> = [1u16, 101, 201]
            .iter()
            .flat_map(|offset| (0..nodes).map(move |i| candidate + offset + i))
            .collect();
        if ports.iter().any(|p| avoid.contains(p)) {
            continue;
        }
        let bound: Result<Vec<TcpListener>, _> = ports
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)))
            .collect();
        if bound.is_ok() {
            return Ok(candidate);
        }
    }
    bail!("no free range of ports for a Chorus cluster between 20000 and 40000")
}

/// Where `program` is on the `PATH`, if anywhere.
#[must_use]
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The first line a program prints for `--version`, if it runs.
#[must_use]
pub fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Redis adds its build details (sha, malloc, bits, build id) after the version.
    text.lines().next().map(|line| {
        line.split(" sha=")
            .next()
            .unwrap_or(line)
            .trim()
            .to_string()
    })
}

/// Whether a RESP server on `address` answers `PING` with `+PONG`.
#[must_use]
pub fn resp_ping(address: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// Whether an etcd member's `/health` on `address` says it is healthy.
#[must_use]
pub fn etcd_healthy(address: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        let _ = BufReader::new(stream.take(4096)).read_to_string(&mut reply);
        Ok(reply.starts_with("HTTP/1.") && reply.contains("\"health\":\"true\""))
    };
    attempt().unwrap_or(false)
}

/// A 3-member etcd cluster on 127.0.0.1 with fsync on (etcd's default), data in `dir`.
///
/// # Errors
/// When a member cannot start or the cluster does not become healthy.
pub fn start_etcd(
    etcd: &Path,
    dir: &Path,
    members: usize,
) -> anyhow::Result<(Vec<Service>, Vec<String>)> {
    let ports = free_ports(members * 2)?;
    let (client_ports, peer_ports) = ports.split_at(members);
    let initial: Vec<String> = (0..members)
        .map(|i| format!("m{i}=http://127.0.0.1:{}", peer_ports[i]))
        .collect();
    let initial = initial.join(",");
    let mut services = Vec::new();
    for i in 0..members {
        let data = dir.join(format!("etcd-m{i}"));
        let client = format!("http://127.0.0.1:{}", client_ports[i]);
        let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
        let mut command = Command::new(etcd);
        command
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "chorus-bench"])
            .args(["--log-level", "warn"])
            // Debian's etcd 3.4 refuses to start on arm64 without this; harmless elsewhere.
            .env(
                "ETCD_UNSUPPORTED_ARCH",
                std::env::consts::ARCH.replace("aarch64", "arm64"),
            );
        let log = dir.join(format!("etcd-m{i}.log"));
        services.push(Service::start(&format!("etcd member m{i}"), command, &log)?);
    }
    for (i, service) in services.iter_mut().enumerate() {
        let address = SocketAddr::from(([127, 0, 0, 1], client_ports[i]));
        service.wait_ready(|| etcd_healthy(address))?;
    }
    let endpoints = client_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    Ok((services, endpoints))
}

/// One redis-server on 127.0.0.1 with `appendonly yes` and `appendfsync always`, data in
/// `dir`.
///
/// # Errors
/// When it cannot start or does not answer `PING`.
pub fn start_redis(redis: &Path, dir: &Path) -> anyhow::Result<(Service, SocketAddr)> {
    let port = free_ports(1)?[0];
    let data = dir.join("redis");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let mut command = Command::new(redis);
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&data)
        .args(["--appendonly", "yes"])
        .args(["--appendfsync", "always"])
        .args(["--save", ""])
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "no"]);
    let mut service = Service::start("redis-server", command, &dir.join("redis.log"))?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    service.wait_ready(|| resp_ping(address))?;
    Ok((service, address))
}

/// A 3-node Chorus cluster (`chorus up`) running replication `scheme` with the flags
/// `extra`, named `label` (its data and log in `dir`).
///
/// `protocol_flag` says whether to pass `--protocol <scheme>` (only builds that offer more
/// than one scheme have the flag).
///
/// # Errors
/// When the cluster does not start or elects no leader in time.
pub fn start_chorus(
    chorus: &Path,
    dir: &Path,
    label: &str,
    scheme: &str,
    protocol_flag: bool,
    extra: &[&str],
    avoid_ports: &[u16],
) -> anyhow::Result<(Service, Vec<SocketAddr>)> {
    let nodes = 3u16;
    // Primary-backup adds a view service as one more node, the hybrid a configuration group
    // of three.
    let base = free_chorus_base(nodes + 3, avoid_ports)?;
    let data = dir.join(label);
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let mut command = Command::new(chorus);
    command
        .arg("up")
        .args(["--nodes", &nodes.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(["--base-port", &base.to_string()])
        .env("RUST_LOG", "warn");
    if protocol_flag {
        command.args(["--protocol", scheme]);
    }
    command.args(extra);
    let log = dir.join(format!("{label}.log"));
    // Ctrl-C makes `chorus up` stop its nodes gracefully and wait for them.
    let mut service = Service::start(&format!("chorus ({label})"), command, &log)?
        .stopped_by(nix::sys::signal::Signal::SIGINT);
    // `chorus up` prints its table once the cluster has a leader (or a primary).
    service.wait_ready(|| {
        std::fs::read_to_string(&log)
            .map(|text| text.contains(" up on 127.0.0.1"))
            .unwrap_or(false)
    })?;
    let endpoints = (1..=nodes)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + 100 + i)))
        .collect();
    Ok((service, endpoints))
}

/// The RESP address of the node that leads a Chorus cluster (the Raft leader or the
/// primary), asked through each node's admin `/status` (admin port = RESP port + 100).
#[must_use]
pub fn chorus_leader(endpoints: &[SocketAddr]) -> Option<SocketAddr> {
    endpoints.iter().copied().find(|resp| {
        let admin = SocketAddr::new(resp.ip(), resp.port().saturating_add(100));
        http_get(admin, "/status").is_some_and(|body| {
            let compact: String = body.split_whitespace().collect();
            compact.contains("\"role\":\"leader\"") || compact.contains("\"role\":\"primary\"")
        })
    })
}

/// The body of an HTTP/1.0 GET on 127.0.0.1 (at most 64 KiB), if it answers 200.
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    let _ = BufReader::new(stream.take(64 << 10)).read_to_string(&mut reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.lines()
        .next()
        .is_some_and(|status| status.contains(" 200"))
        .then(|| body.to_string())
}

/// Whether `chorus up` of this build takes `--protocol`, and which schemes its help names.
#[must_use]
pub fn chorus_up_help(chorus: &Path) -> String {
    Command::new(chorus)
        .args(["up", "--help"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// One `redis-benchmark` run: SET with 50 connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisBenchmarkRun {
    /// The server.
    pub address: SocketAddr,
    /// Requests in all (`-n`).
    pub requests: u64,
    /// Bytes per value (`-d`).
    pub data_size: usize,
    /// Requests pipelined per connection (`-P`; 1 is no pipelining).
    pub pipeline: u32,
}

impl RedisBenchmarkRun {
    /// The arguments after the program's name.
    #[must_use]
    pub fn arguments(&self) -> Vec<String> {
        let mut arguments = vec![
            "-h".to_string(),
            self.address.ip().to_string(),
            "-p".to_string(),
            self.address.port().to_string(),
            "-t".to_string(),
            "set".to_string(),
            "-c".to_string(),
            "50".to_string(),
            "-d".to_string(),
            self.data_size.to_string(),
            "-n".to_string(),
            self.requests.to_string(),
        ];
        if self.pipeline > 1 {
            arguments.push("-P".to_string());
            arguments.push(self.pipeline.to_string());
        }
        arguments.push("--csv".to_string());
        arguments
    }

    /// The command as the report names it (`redis-benchmark -t set -c 50 -d 100 -P 16`).
    #[must_use]
    pub fn command_line(&self) -> String {
        let pipeline = if self.pipeline > 1 {
            format!(" -P {}", self.pipeline)
        } else {
            String::new()
        };
        format!(
            "redis-benchmark -t set -c 50 -d {}{pipeline}",
            self.data_size
        )
    }
}

/// Runs `redis-benchmark` as `run` says and returns the requests per second it reports.
///
/// # Errors
/// When it fails, takes longer than `limit`, or prints no SET result.
pub fn redis_benchmark(
    program: &Path,
    run: &RedisBenchmarkRun,
    limit: Duration,
) -> anyhow::Result<f64> {
    let address = run.address;
    let mut child = Command::new(program)
        .args(run.arguments())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start redis-benchmark")?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("redis-benchmark against {address} did not finish within {limit:?}");
            }
        }
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.as_mut() {
        let _ = stdout.take(1 << 20).read_to_string(&mut out);
    }
    parse_redis_benchmark_csv(&out)
        .with_context(|| format!("redis-benchmark printed no SET result: {out:?}"))
}

/// The requests per second of the `SET` line of `redis-benchmark --csv` output.
#[must_use]
pub fn parse_redis_benchmark_csv(text: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut fields = line.split(',').map(|f| f.trim().trim_matches('"'));
        (fields.next()? == "SET").then_some(())?;
        fields.next()?.parse().ok()
    })
}

/// Reads lines of a child's output into a string (bounded), for error messages.
#[must_use]
pub fn tail_of(path: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(file.take(1 << 20))
        .lines()
        .map_while(Result::ok)
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_runs_name_their_options() {
        let mut run = RedisBenchmarkRun {
            address: "127.0.0.1:6379".parse().expect("an address"),
            requests: 20_000,
            data_size: 100,
            pipeline: 1,
        };
        assert_eq!(run.command_line(), "redis-benchmark -t set -c 50 -d 100");
        assert_eq!(
            run.arguments().join(" "),
            "-h 127.0.0.1 -p 6379 -t set -c 50 -d 100 -n 20000 --csv"
        );
        run.pipeline = 16;
        assert_eq!(
            run.command_line(),
            "redis-benchmark -t set -c 50 -d 100 -P 16"
        );
        assert!(run.arguments().join(" ").ends_with("-n 20000 -P 16 --csv"));
    }

    #[test]
    fn redis_benchmark_csv_is_parsed() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\"SET\",\"12345.67\",\"3.9\",\"0.5\"\n";
        assert_eq!(parse_redis_benchmark_csv(csv), Some(12345.67));
        assert_eq!(parse_redis_benchmark_csv("\"GET\",\"1.0\"\n"), None);
        assert_eq!(parse_redis_benchmark_csv(""), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(4).expect("ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn a_missing_program_is_not_found() {
        assert!(which("surely-no-such-program-chorus-bench").is_none());
    }

    #[test]
    fn a_service_is_stopped_with_its_children_when_dropped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut command = Command::new("sh");
        // A parent and a child that would both outlive a plain kill of the parent.
        command.args(["-c", "sleep 600 & sleep 600; wait"]);
        let service = Service::start("sleepers", command, &dir.path().join("log")).expect("start");
        let group = service.child.id();
        std::thread::sleep(Duration::from_millis(200));
        assert!(live_members(group) >= 2, "the sleepers did not start");
        drop(service);
        // Nothing of the group is left running (a zombie waiting for init does not count).
        let deadline = Instant::now() + Duration::from_secs(5);
        while live_members(group) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            live_members(group),
            0,
            "the process group outlived its service"
        );
    }

    /// Processes of process group `group` that are not zombies, from /proc.
    fn live_members(group: u32) -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'.
                let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
            })
            .count()
    }
}
