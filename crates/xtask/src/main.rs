//! `cargo xtask`: Chorus's own automation, kept out of the shipped binary.
//!
//! Today it has one command, `nemesis`: fault tests on real hosts. It builds the release
//! `chorus`, puts each node in its own network namespace ([`lab`]), starts the nodes
//! ([`cluster`]), runs native and RESP clients that record a history ([`workload`]) while a
//! seeded schedule of partitions, kills, pauses and disk losses hits the cluster ([`nemesis`],
//! [`wal`]), heals, waits for the nodes to converge, reads every key back, and checks the history
//! for linearizability and every acknowledged append for presence. It tears everything down on
//! every exit path and prints one summary line. See `docs/nemesis.md`.

mod cluster;
mod lab;
mod nemesis;
mod picture;
mod wal;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chorus_check::history::{OpStatus, Operation, write_jsonl};
use chorus_check::linearizability::{CheckLimits, Verdict, check};
use chorus_core::Prng;
use clap::{Parser, Subcommand, ValueEnum};

use crate::cluster::{Cluster, Scheme};
use crate::lab::Lab;
use crate::nemesis::Nemesis;
use crate::workload::{Clock, Wire};

/// Chorus's own automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Fault tests on real hosts: nodes in network namespaces, a seeded nemesis, clients
    /// recording a history, and a linearizability verdict. Needs root.
    Nemesis(NemesisArgs),
    /// Build the release `chorus` and lay out, under `target/docker-rootfs`, the root file
    /// system of a `FROM scratch` image: the binary and the shared libraries `ldd` lists. The
    /// repository's Dockerfile copies it.
    DockerRootfs,
}

/// The replication schemes the nemesis can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Raft.
    Raft,
    /// Primary-backup with a view service (one more node than `--nodes`, which counts
    /// servers).
    Pb,
    /// The hybrid: data servers (`--nodes` of them) and a configuration group of three.
    Hybrid,
}

#[derive(Debug, clap::Args)]
struct NemesisArgs {
    /// The replication scheme.
    #[arg(long, value_enum, default_value_t = Protocol::Raft)]
    protocol: Protocol,
    /// How long the faults and the workload run: `120s`, `2m`, or seconds.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// The seed of the fault schedule and the workload (random when left out; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=7))]
    nodes: u64,
    /// Client workers (half native, half RESP; all redis-py with `--redis-py`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=64))]
    clients: u64,
    /// Keep the run directory (history, node logs, data) even when the run passes.
    #[arg(long)]
    keep: bool,
    /// TESTING ONLY: run a `chorus` built with the `inject-bugs` feature and switch this bug on
    /// in every node (`read-without-read-index`, `commit-without-current-term`,
    /// `ack-before-durable`).
    #[arg(long)]
    inject_bug: Option<String>,
    /// Succeed only if the run finds violations or lost writes (to prove that a broken build
    /// is caught).
    #[arg(long)]
    expect_violations: bool,
    /// Only these faults (comma-separated names from docs/nemesis.md); all when left out.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Clients are redis-py 8 (python3 with `redis`), each with redis-py's default retry
    /// policy and its connections bound to a session (`client_name="chorus-session:…"`):
    /// checks that library retries across faults stay linearizable. `--redis-py unbound`
    /// is the control, without binding. See `crates/xtask/scripts/nemesis_redis_py.py`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "bound")]
    redis_py: Option<workload::Binding>,
    /// Use this `chorus` binary instead of building one.
    #[arg(long)]
    chorus: Option<PathBuf>,
    /// Write the run's picture to this self-contained HTML page: each node's lane (running,
    /// paused, down), the partitions, the nemesis's actions, every client operation, and the
    /// checker's findings.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Parses `120s`, `2m`, `500ms` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 120s or 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("unknown unit in {text:?}: use ms, s or m")),
    }
}

/// The workspace root (this crate is `crates/xtask`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where cargo puts build output.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the release `chorus` and returns its path. With `inject`, builds it with the
/// `inject-bugs` feature and copies it to `chorus-inject-bugs` beside the normal one (the
/// dependencies are shared with the normal build; only the crates above `chorus-raft` are
/// built twice), so that a normal `chorus` is never a broken one.
fn build_chorus(inject: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "chorus-server",
        "--bin",
        "chorus",
    ]);
    if inject {
        command.args(["--features", "inject-bugs"]);
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building chorus failed");
    }
    let release = target_dir().join("release");
    let binary = release.join("chorus");
    if !inject {
        return Ok(binary);
    }
    let broken = release.join("chorus-inject-bugs");
    std::fs::copy(&binary, &broken)
        .with_context(|| format!("cannot copy {} to {}", binary.display(), broken.display()))?;
    // Put a normal binary back, so that nothing else picks up the broken one.
    let status =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "chorus-server",
                "--bin",
                "chorus",
            ])
            .status()
            .context("cannot run cargo")?;
    if !status.success() {
        bail!("rebuilding the normal chorus failed");
    }
    Ok(broken)
}

/// Lays out the image's root file system; returns its path.
fn docker_rootfs() -> anyhow::Result<PathBuf> {
    let binary = build_chorus(false)?;
    // Inside the repository whatever CARGO_TARGET_DIR says: it is the Docker build context.
    let root = workspace_root().join("target").join("docker-rootfs");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("cannot clear {}", root.display()))?;
    }
    let copy = |from: &Path, to: &Path| -> anyhow::Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    copy(&binary, &root.join("chorus"))?;
    let output = std::process::Command::new("ldd")
        .arg(&binary)
        .output()
        .context("cannot run ldd")?;
    // Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
    // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|path| path.starts_with('/'));
        if let Some(path) = path {
            let source =
                std::fs::canonicalize(path).with_context(|| format!("cannot resolve {path}"))?;
            copy(&source, &root.join(path.trim_start_matches('/')))?;
        }
    }
    // The nodes keep their data here (a volume in docker-compose.yml).
    std::fs::create_dir_all(root.join("data")).context("cannot create data/")?;
    Ok(root)
}

/// What a run found.
struct Findings {
    ops: usize,
    by_status: BTreeMap<&'static str, usize>,
    violations: Vec<(String, String)>,
    inconclusive: Vec<String>,
    lost: Vec<Operation>,
    unread_keys: usize,
}

/// Checks every key's history on its own (a history is linearizable iff each key's is).
fn check_history(history: &[Operation]) -> (Vec<(String, String)>, Vec<String>) {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut violations = Vec::new();
    let mut inconclusive = Vec::new();
    for (key, ops) in by_key {
        // Two million steps per key: each key holds a few hundred operations, which need far
        // fewer; the bound keeps a pathological key from eating the machine's memory.
        let limits = CheckLimits {
            steps_max: 2_000_000,
        };
        match check(&ops, limits) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key, detail } => violations.push((key, detail)),
            Verdict::Inconclusive { .. } => inconclusive.push(key.to_string()),
        }
    }
    (violations, inconclusive)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Task::Nemesis(args) => match nemesis_command(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("xtask nemesis: {error:#}");
                ExitCode::from(2)
            }
        },
        Task::DockerRootfs => match docker_rootfs() {
            Ok(root) => {
                println!("{}", root.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("xtask docker-rootfs: {error:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Runs `cargo xtask nemesis`; returns whether it met its expectation.
fn nemesis_command(args: &NemesisArgs) -> anyhow::Result<bool> {
    let scheme = match args.protocol {
        Protocol::Raft => Scheme::Raft,
        Protocol::Pb => Scheme::Pb,
        Protocol::Hybrid => Scheme::Hybrid,
    };
    if let Some(unknown) = args
        .faults
        .iter()
        .find(|f| !nemesis::FAULTS.contains(&f.as_str()))
    {
        bail!(
            "unknown fault {unknown:?}; known: {}",
            nemesis::FAULTS.join(", ")
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the nemesis needs root (network namespaces and iptables)");
    }
    let started = Instant::now();
    let removed = lab::cleanup_leftovers();
    if removed > 0 {
        println!("removed {removed} leftover namespaces and links of earlier runs");
    }
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::from(now.subsec_nanos()) ^ now.as_secs()
    });
    let binary = match &args.chorus {
        Some(path) => path.clone(),
        None => build_chorus(args.inject_bug.is_some())?,
    };
    let protocol = scheme.name();
    let dir = target_dir()
        .join("nemesis")
        .join(format!("{protocol}-seed{seed}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (stop, interrupted) = (stop.clone(), interrupted.clone());
        runtime.spawn(async move {
            let Ok(mut terminate) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            interrupted.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        });
    }

    let bugs: Vec<String> = args.inject_bug.iter().cloned().collect();
    let nodes = usize::try_from(args.nodes).unwrap_or(3);
    // Declared before the cluster so that it is dropped after it: processes die first, then
    // their namespaces go.
    let lab = Lab::create(nodes + scheme.extra_nodes())?;
    let mut cluster = Cluster::new(&lab, nodes, scheme, &binary, &dir, &bugs)?;
    // The view service (or the configuration group) first, so that the servers find it at
    // once.
    for node in (1..=cluster.len()).rev() {
        cluster.start(node)?;
    }
    let Some(leader) = cluster.wait_leader(Duration::from_secs(30)) else {
        bail!("no leader within 30 s; node logs in {}", dir.display());
    };
    println!(
        "nemesis {protocol}: seed {seed}, {nodes} nodes in namespaces {}..{} (leader {leader}), {} clients, {} s of faults; run directory {}",
        lab.node_ns(1),
        lab.node_ns(cluster.len()),
        args.clients,
        args.duration.as_secs(),
        dir.display()
    );

    let clock = Clock(Instant::now());
    let mut seeds = Prng::new(seed);
    let endpoints = cluster.redis_addresses();
    let redis_py = match args.redis_py {
        Some(binding) => Some(workload::RedisPy::start(
            seed,
            args.clients,
            binding,
            &endpoints,
            clock,
        )?),
        None => None,
    };
    let workers: Vec<_> = (0..args.clients)
        .filter(|_| redis_py.is_none())
        .map(|client| {
            let wire = if client % 2 == 0 {
                Wire::Native
            } else {
                Wire::Resp
            };
            runtime.spawn(workload::worker(
                client,
                wire,
                endpoints.clone(),
                seeds.next_u64(),
                clock,
                stop.clone(),
            ))
        })
        .collect();

    let faults: Vec<&'static str> = if args.faults.is_empty() {
        nemesis::default_faults(scheme, args.redis_py.is_some())
    } else {
        nemesis::FAULTS
            .iter()
            .copied()
            .filter(|f| nemesis::applies(f, scheme))
            .filter(|f| args.faults.iter().any(|g| g == f))
            .collect()
    };
    if faults.is_empty() {
        bail!("none of the faults asked for applies to {protocol}");
    }
    // redis-py retries a write whose reply was lost; only a lost reply makes that retry resend
    // a write that took effect, so its runs hold `drop-replies` every second fault.
    let alternate = faults
        .iter()
        .copied()
        .find(|f| *f == "drop-replies" && args.redis_py.is_some());
    let mut nemesis = Nemesis::new(&mut cluster, &lab, seed, clock.0, &stop, faults, alternate);
    let outcome = nemesis.run(clock.0 + args.duration);
    let (log, counts) = (std::mem::take(&mut nemesis.log), nemesis.counts.clone());
    let (timeline, notes) = (
        std::mem::take(&mut nemesis.timeline),
        std::mem::take(&mut nemesis.notes),
    );
    drop(nemesis);
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    let mut native_ops = 0;
    for (client, worker) in workers.into_iter().enumerate() {
        let ops = runtime.block_on(worker).unwrap_or_default();
        if client % 2 == 0 {
            native_ops += ops.len();
        }
        history.extend(ops);
    }
    if let Some(redis_py) = redis_py {
        history.extend(redis_py.finish()?);
    }
    std::fs::write(dir.join("nemesis.log"), log.join("\n") + "\n")
        .context("cannot write the nemesis log")?;
    outcome?;

    println!("healed; waiting for the nodes to converge");
    let converged = cluster.wait_converged(Duration::from_secs(60));
    let keys: Vec<String> = history
        .iter()
        .map(|op| op.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (reads, finals) = runtime.block_on(workload::read_back(
        args.clients,
        endpoints,
        keys.clone(),
        clock,
    ));
    history.extend(reads);
    let crashed =
        cluster.reap_exited().len() + counts.get("node-exited").copied().unwrap_or(0) as usize;
    let view_service = cluster.view_service();
    let lane_names: Vec<String> = (1..=cluster.len())
        .map(|node| {
            if Some(node) == view_service {
                "view service".to_string()
            } else if scheme == Scheme::Hybrid && node > nodes {
                format!("cfg{node}")
            } else {
                format!("n{node}")
            }
        })
        .collect();
    drop(cluster);
    drop(lab);

    let mut file =
        std::fs::File::create(dir.join("history.jsonl")).context("cannot write the history")?;
    write_jsonl(&history, &mut file).context("cannot write the history")?;
    println!("checking {} operations", history.len());
    let (violations, inconclusive) = check_history(&history);
    let lost = workload::lost_appends(&history, &finals);
    let mut by_status = BTreeMap::new();
    for op in &history {
        *by_status.entry(op.status.name()).or_default() += 1;
    }
    let findings = Findings {
        ops: history.len(),
        by_status,
        violations,
        inconclusive,
        lost,
        unread_keys: keys.len() - finals.len(),
    };

    let faults: u64 = nemesis::FAULTS
        .iter()
        .map(|f| counts.get(f).copied().unwrap_or(0))
        .sum();
    let fault_list: Vec<String> = nemesis::FAULTS
        .iter()
        .filter_map(|f| counts.get(f).map(|c| format!("{f}={c}")))
        .collect();
    let interrupted = interrupted.load(Ordering::SeqCst);
    let clean = findings.violations.is_empty()
        && findings.lost.is_empty()
        && findings.unread_keys == 0
        && converged
        && crashed == 0
        && !interrupted;
    let status = |s: OpStatus| findings.by_status.get(s.name()).copied().unwrap_or(0);
    let summary = format!(
        "nemesis {protocol}: seed={seed} nodes={nodes} duration={}s ops={} (ok={} fail={} unknown={}; native={native_ops} {}={}) faults={faults} ({}; unsynced-caught={}) violations={} lost-writes={} inconclusive-keys={} unread-keys={} converged={} crashes={crashed}{} elapsed={:.1}s{}",
        args.duration.as_secs(),
        findings.ops,
        status(OpStatus::Ok),
        status(OpStatus::Fail),
        status(OpStatus::Unknown),
        match args.redis_py {
            Some(workload::Binding::Bound) => "redis-py",
            Some(workload::Binding::Unbound) => "redis-py-unbound",
            None => "resp",
        },
        findings.ops - native_ops - finals.len(),
        fault_list.join(" "),
        counts.get("lose-unsynced-caught").copied().unwrap_or(0),
        findings.violations.len(),
        findings.lost.len(),
        findings.inconclusive.len(),
        findings.unread_keys,
        if converged { "yes" } else { "NO" },
        if interrupted { " INTERRUPTED" } else { "" },
        started.elapsed().as_secs_f64(),
        args.inject_bug
            .as_ref()
            .map(|b| format!(" injected-bug={b}"))
            .unwrap_or_default(),
    );
    let mut report = summary.clone() + "\n";
    for (key, detail) in &findings.violations {
        report.push_str(&format!("not linearizable: key {key}: {detail}\n"));
    }
    for op in findings.lost.iter().take(20) {
        report.push_str(&format!(
            "lost: acknowledged append {:?} to {} (client {}, returned at {:?} ns) is missing\n",
            op.value.as_deref().unwrap_or(""),
            op.key,
            op.client,
            op.ret
        ));
    }
    std::fs::write(dir.join("summary.txt"), &report).context("cannot write the summary")?;
    if let Some(path) = &args.html {
        let page = picture::page(&picture::Run {
            title: format!("Chorus nemesis — {summary}"),
            lanes: lane_names,
            timeline: &timeline,
            notes: &notes,
            history: &history,
            violations: &findings.violations,
            lost: &findings.lost,
        });
        std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
        println!("picture of the run: {}", path.display());
    }
    for (key, detail) in findings.violations.iter().take(5) {
        let first = detail.lines().next().unwrap_or("");
        let cut: String = first.chars().take(200).collect();
        println!("not linearizable: key {key}: {cut} (full detail in summary.txt)");
    }
    for line in report.lines().filter(|l| l.starts_with("lost:")).take(5) {
        println!("{line}");
    }
    println!("{summary}");
    if clean && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!(
            "history, nemesis log and node logs kept in {}",
            dir.display()
        );
    }
    Ok(if args.expect_violations {
        !findings.violations.is_empty() || !findings.lost.is_empty()
    } else {
        clean
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn a_stale_read_is_a_violation_on_its_key_only() {
        use chorus_check::history::{OpKind, Output};
        let op = |client, kind, key: &str, value: Option<&str>, call, ret, output| Operation {
            client,
            kind,
            key: key.into(),
            value: value.map(Into::into),
            from: None,
            call,
            ret: Some(ret),
            status: OpStatus::Ok,
            output,
        };
        let history = vec![
            op(0, OpKind::Put, "a", Some("1"), 0, 10, Output::None),
            op(1, OpKind::Get, "a", None, 20, 30, Output::Value(None)),
            op(0, OpKind::Put, "b", Some("1"), 40, 50, Output::None),
            op(
                1,
                OpKind::Get,
                "b",
                None,
                60,
                70,
                Output::Value(Some("1".into())),
            ),
        ];
        println!("checking {} operations", history.len());
        let (violations, inconclusive) = check_history(&history);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].0, "a");
        assert!(inconclusive.is_empty());
    }
}
