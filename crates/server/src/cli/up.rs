//! `chorus up`: a local cluster of separate node processes on 127.0.0.1, one command.
//!
//! It writes one configuration file per node under the data directory, starts each node as a
//! child process (`chorus server --config …`, logging to a file beside it), waits until the
//! cluster has a leader, prints where to reach every node, and stays up until Ctrl-C, when it
//! stops the nodes gracefully. Data persists in the directory: running it again restarts the
//! same cluster from disk.
//!
//! With `--protocol pb` it starts a primary-backup cluster instead: the view service (node
//! `nodes + 1`, no RESP port) and `nodes` servers, node 1 first so that it becomes the primary,
//! and waits until the view service has a primary that acknowledged a view with a backup (the
//! third server is a spare). Primary-backup
//! keeps nothing on disk, so a restart starts an empty cluster.
//!
//! With `--protocol hybrid` it starts a configuration group of three (nodes `nodes + 1` to
//! `nodes + 3`, no RESP port) and `nodes` data servers (3 by default: primary, backup, spare;
//! `--replicas 3` for views of two backups), node 1 first so that it becomes the primary, and
//! waits until a view of `replicas` members is active and its primary serves. Data servers
//! keep durable logs: running it again restarts the same cluster from disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::config::{NodeConfig, Protocol};
use crate::runtime::pb_host::VIEW_FILE_NAME;

/// Arguments of `chorus up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Where the nodes keep their data, configuration and logs.
    #[arg(long, default_value = "chorus-data")]
    data_dir: PathBuf,
    /// Ports are counted from here: peers at P+id, RESP at P+100+id, admin at P+200+id.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// The replication scheme: `raft`, or `pb` (primary-backup with a view service; `--nodes`
    /// then counts the servers, and the view service is one more node).
    #[arg(long, value_enum, default_value_t = Protocol::Raft)]
    protocol: Protocol,
    /// `hybrid` only: members of a view (the primary and `replicas - 1` backups).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=9))]
    replicas: u64,
    /// `raft` only: leaders serve linearizable reads from a lease, with no message round
    /// (`[reads] lease = true`; see docs/protocols/raft.md, "Lease reads").
    #[arg(long)]
    lease_reads: bool,
}

/// The serving primary of a hybrid cluster, once one serves a view of `replicas` members.
fn hybrid_ready(configs: &[(NodeConfig, PathBuf)], replicas: u64) -> Option<u64> {
    configs.iter().find_map(|(config, _)| {
        config.me().redis?;
        let status = fetch_status(config.me().admin).ok()?;
        let hybrid = &status["hybrid"];
        let members = 1 + hybrid["backups"].as_array()?.len() as u64;
        (hybrid["serving"] == true && members >= replicas).then_some(config.id)
    })
}

/// Asks the admin endpoint of a node for its status.
pub fn fetch_status(admin: std::net::SocketAddr) -> anyhow::Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{admin}/status"))
        .call()
        .with_context(|| format!("no answer from {admin}"))?;
    let status: serde_json::Value = response
        .body_mut()
        .read_json()
        .context("bad /status body")?;
    Ok(status)
}

fn start_node(config_path: &Path, log_path: &Path) -> anyhow::Result<Child> {
    let executable = std::env::current_exe().context("cannot find the chorus executable")?;
    let log =
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let log_err = log.try_clone().context("cannot share the log file")?;
    Command::new(executable)
        .arg("server")
        .arg("--config")
        .arg(config_path)
        .arg("--exit-with-parent")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .context("cannot start a node process")
}

fn stop(children: &mut [Child]) {
    for child in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for child in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

/// The primary, once the view service reports an acknowledged view with a primary and (with
/// more than one server) a backup.
fn pb_ready(configs: &[(NodeConfig, PathBuf)], servers: u64) -> Option<u64> {
    let (service, _) = configs
        .iter()
        .find(|(config, _)| config.me().redis.is_none())?;
    let status = fetch_status(service.me().admin).ok()?;
    let view = &status["view"];
    let primary = view["primary"].as_u64()?;
    let complete = servers == 1 || view["backup"].as_u64().is_some();
    (view["acked"] == true && complete).then_some(primary)
}

/// Runs `chorus up`.
///
/// # Errors
/// If the data directory cannot be written or a node cannot start.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    if args.lease_reads && args.protocol != Protocol::Raft {
        bail!("--lease-reads applies to --protocol raft only");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .context("cannot resolve the data directory")?;
    let mut configs = Vec::new();
    let mut children = Vec::new();
    let pb = args.protocol == Protocol::Pb;
    let hybrid = args.protocol == Protocol::Hybrid;
    // Under primary-backup the view service starts first, so the servers find it at once;
    // under the hybrid, the configuration group.
    let order: Vec<u64> = if pb {
        std::iter::once(args.nodes + 1)
            .chain(1..=args.nodes)
            .collect()
    } else if hybrid {
        (args.nodes + 1..=args.nodes + 3)
            .chain(1..=args.nodes)
            .collect()
    } else {
        (1..=args.nodes).collect()
    };
    let replicas = usize::try_from(args.replicas).unwrap_or(2);
    for id in order {
        let mut config = if pb {
            NodeConfig::local_pb(args.nodes, id, args.base_port, &data_dir)
        } else if hybrid {
            NodeConfig::local_hybrid(args.nodes, replicas, id, args.base_port, &data_dir)
        } else {
            NodeConfig::local(args.nodes, id, args.base_port, &data_dir)
        };
        config.reads.lease = args.lease_reads;
        if pb && id == args.nodes + 1 {
            // Every server of a new `up` starts empty (primary-backup keeps data in memory
            // only), so this is a new cluster: the view service must not resume the view of
            // an earlier run, whose servers' state is gone (it would wait forever for them).
            let view = config.data_dir.join(VIEW_FILE_NAME);
            match std::fs::remove_file(&view) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    stop(&mut children);
                    return Err(error).with_context(|| format!("cannot remove {}", view.display()));
                }
            }
        }
        let path = data_dir.join(format!("node-{id}.toml"));
        std::fs::write(
            &path,
            toml::to_string(&config).context("cannot encode a configuration")?,
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        let log = data_dir.join(format!("node-{id}.log"));
        match start_node(&path, &log) {
            Ok(child) => children.push(child),
            Err(error) => {
                stop(&mut children);
                return Err(error);
            }
        }
        configs.push((config, log));
        if hybrid && id == 1 {
            // The first data server registered proposes itself; let it be node 1, so the
            // printed table and the documented ports agree run after run (a restarted cluster
            // keeps the primary its configuration names).
            let admin = configs[configs.len() - 1].0.me().admin;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let epoch = fetch_status(admin)
                    .ok()
                    .and_then(|status| status["hybrid"]["epoch"].as_u64());
                if epoch.is_some_and(|epoch| epoch > 0) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if pb && id == 1 {
            // The first server to ping becomes the primary; let it be node 1 (RESP on
            // base + 101), so the printed table and the documented ports agree run after run.
            let view_service = configs[0].0.me().admin;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let primary = fetch_status(view_service)
                    .ok()
                    .and_then(|status| status["view"]["primary"].as_u64());
                if primary.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    // Wait for a leader, so that the table we print is of a working cluster.
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some(exited) = children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            let (config, log) = &configs[exited];
            let id = config.id;
            let log = log.clone();
            stop(&mut children);
            bail!("node {id} exited at start; see {}", log.display());
        }
        let leader = if pb {
            pb_ready(&configs, args.nodes)
        } else if hybrid {
            hybrid_ready(&configs, args.replicas.min(args.nodes))
        } else {
            configs.iter().find_map(|(config, _)| {
                let status = fetch_status(config.me().admin).ok()?;
                (status["role"] == "leader").then_some(config.id)
            })
        };
        if let Some(leader) = leader {
            break leader;
        }
        if Instant::now() > deadline {
            stop(&mut children);
            bail!(
                "no {} within 15 s; see the logs in {}",
                if pb {
                    "acknowledged view with a primary and a backup"
                } else if hybrid {
                    "serving primary with a full view"
                } else {
                    "leader was elected"
                },
                data_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    if pb {
        println!(
            "Chorus (primary-backup): {} servers and a view service up on 127.0.0.1, primary node {leader}, logs in {}",
            args.nodes,
            data_dir.display()
        );
    } else if hybrid {
        println!(
            "Chorus (hybrid): {} data servers (views of {}) and a configuration group of 3 up on 127.0.0.1, primary node {leader}, data in {}",
            args.nodes,
            args.replicas,
            data_dir.display()
        );
    } else {
        println!(
            "Chorus: {} nodes up on 127.0.0.1, leader node {leader}, data in {}",
            args.nodes,
            data_dir.display()
        );
    }
    println!();
    println!(
        "{:<6} {:<22} {:<20} {:<20} {:<20} log",
        "node", "role", "redis (RESP)", "admin (HTTP)", "peer"
    );
    for (config, log) in &configs {
        let me = config.me();
        let role = fetch_status(me.admin)
            .ok()
            .and_then(|status| status["role"].as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        println!(
            "{:<6} {:<22} {:<20} {:<20} {:<20} {}",
            config.id,
            role,
            me.redis.map_or_else(|| "-".to_string(), |r| r.to_string()),
            me.admin,
            me.peer,
            log.display()
        );
    }
    println!();
    let redis_port = |id: u64| {
        configs
            .iter()
            .find(|(config, _)| config.id == id)
            .and_then(|(config, _)| config.me().redis)
            .map_or(0, |r| r.port())
    };
    let other = if leader == args.nodes { 1 } else { args.nodes };
    println!(
        "Try: redis-cli -p {} SET greeting hello",
        redis_port(leader)
    );
    if pb || hybrid {
        println!(
            "     redis-cli -c -p {} GET greeting   (a backup or spare answers MOVED with the primary's address; -c follows it)",
            redis_port(other)
        );
    } else {
        println!("     redis-cli -p {} GET greeting", redis_port(other));
    }
    println!("     curl http://{}/status", configs[0].0.me().admin);
    println!("Press Ctrl-C to stop the cluster.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        let mut reported = vec![false; children.len()];
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = poll.tick() => {
                    // A node that dies (or is killed) is reported once; the others go on
                    // serving, as a real cluster would.
                    for (index, child) in children.iter_mut().enumerate() {
                        if let (Ok(Some(status)), false) = (child.try_wait(), reported[index]) {
                            reported[index] = true;
                            println!("node {} exited ({status}); see {}", configs[index].0.id, configs[index].1.display());
                        }
                    }
                }
            }
        }
    });
    println!("\nstopping the cluster");
    stop(&mut children);
    Ok(())
}
