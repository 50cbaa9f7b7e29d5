//! The hosts of a nemesis run: one Linux network namespace per node, so that partitions can be
//! made by dropping packets between real network hosts.
//!
//! Layout, for run tag `T` (the runner's process id) and subnet `10.213.S.0/24`:
//! - a bridge namespace `chnemT-br` holding bridge `br0`;
//! - per node `i`, a namespace `chnemT-n<i>` whose `eth0` (address `10.213.S.<i>`) is a veth
//!   whose other end is a port of `br0`;
//! - one veth `chnT-h` in the root namespace (address `10.213.S.254`), also a port of `br0`, so
//!   that the runner's clients and status probes reach every node.
//!
//! Nothing touches the host's own interfaces, routes or firewall: every rule lives in a node's
//! namespace, and the only object in the root namespace is the runner's own veth. Everything
//! carries the `chnem`/`chn` prefix and the tag, so [`cleanup_leftovers`] can remove what a
//! runner that died without cleaning up (kill -9, power loss) left behind, and [`Lab`]'s `Drop`
//! removes everything on every other exit path.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The prefix of every namespace a run creates.
pub const NS_PREFIX: &str = "chnem";
/// The prefix of the runner's veth in the root namespace.
const LINK_PREFIX: &str = "chn";

/// Runs a command and fails with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command for its stdout, or `None` if it fails.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The network namespaces and links of one run. Dropping it removes them all.
#[derive(Debug)]
pub struct Lab {
    tag: u32,
    subnet: u8,
    nodes: usize,
    /// Namespaces created so far, removed on drop.
    namespaces: Vec<String>,
    /// The root-namespace veth, once created.
    host_link: Option<String>,
}

impl Lab {
    /// Creates the namespaces, the bridge and the links for `nodes` nodes. On error, whatever
    /// was created is removed again.
    ///
    /// # Errors
    /// If `ip` fails (not root, no netns support).
    pub fn create(nodes: usize) -> anyhow::Result<Lab> {
        let tag = std::process::id();
        let mut lab = Lab {
            tag,
            // One /24 per runner, so that two concurrent runs do not share addresses.
            subnet: u8::try_from(tag % 200).unwrap_or(0) + 20,
            nodes,
            namespaces: Vec::new(),
            host_link: None,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let bridge = self.bridge_ns();
        run("ip", &["netns", "add", &bridge])?;
        self.namespaces.push(bridge.clone());
        run("ip", &["-n", &bridge, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &bridge, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &bridge, "link", "set", "br0", "up"])?;
        for node in 1..=self.nodes {
            let ns = self.node_ns(node);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let port = format!("n{node}");
            run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                    "netns", &bridge,
                ],
            )?;
            run(
                "ip",
                &["-n", &bridge, "link", "set", &port, "master", "br0", "up"],
            )?;
            let address = format!("{}/24", self.node_ip(node));
            run("ip", &["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let host = format!("{LINK_PREFIX}{}-h", self.tag);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &bridge,
            ],
        )?;
        self.host_link = Some(host.clone());
        run(
            "ip",
            &["-n", &bridge, "link", "set", "host", "master", "br0", "up"],
        )?;
        let address = format!("{}/24", self.host_ip());
        run("ip", &["addr", "add", &address, "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])?;
        Ok(())
    }

    fn bridge_ns(&self) -> String {
        format!("{NS_PREFIX}{}-br", self.tag)
    }

    /// The namespace of node `node` (1-based).
    #[must_use]
    pub fn node_ns(&self, node: usize) -> String {
        format!("{NS_PREFIX}{}-n{node}", self.tag)
    }

    /// The address of node `node` (1-based).
    #[must_use]
    pub fn node_ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, u8::try_from(node).unwrap_or(250))
    }

    /// The runner's address.
    fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// Runs `iptables -w <rule>` in node `node`'s namespace.
    fn iptables(&self, node: usize, rule: &[&str]) -> anyhow::Result<()> {
        let ns = self.node_ns(node);
        let mut args = vec!["netns", "exec", &ns, "iptables", "-w"];
        args.extend_from_slice(rule);
        run("ip", &args)
    }

    /// Drops every packet from node `from` arriving at node `to` (both 1-based). Rules live in
    /// `to`'s namespace; the runner's own traffic is never dropped.
    ///
    /// # Errors
    /// If `iptables` fails.
    pub fn cut(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let source = self.node_ip(from).to_string();
        self.iptables(to, &["-A", "INPUT", "-s", &source, "-j", "DROP"])
    }

    /// Drops every packet node `node` sends from TCP port `port` to the runner: the replies
    /// (and acknowledgements) of the clients' connections to that port, while their requests
    /// still arrive and take effect. A new connection cannot open either (its SYN-ACK is
    /// dropped). The rule lives in the node's namespace, in its OUTPUT chain.
    ///
    /// # Errors
    /// If `iptables` fails.
    pub fn drop_replies(&self, node: usize, port: u16) -> anyhow::Result<()> {
        let runner = self.host_ip().to_string();
        let port = port.to_string();
        self.iptables(
            node,
            &[
                "-A", "OUTPUT", "-p", "tcp", "--sport", &port, "-d", &runner, "-j", "DROP",
            ],
        )
    }

    /// Removes every packet-dropping rule (INPUT and OUTPUT chains of every node).
    ///
    /// # Errors
    /// If `iptables` fails.
    pub fn heal(&self) -> anyhow::Result<()> {
        for node in 1..=self.nodes {
            self.iptables(node, &["-F", "INPUT"])?;
            self.iptables(node, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(host) = self.host_link.take() {
            let _ = run("ip", &["link", "del", &host]);
        }
        for ns in self.namespaces.drain(..).rev() {
            remove_namespace(&ns);
        }
    }
}

/// Kills whatever still runs in namespace `ns`, then removes it.
fn remove_namespace(ns: &str) {
    if let Some(pids) = output("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// The runner tag inside a name `<prefix><tag>-...`, if it has that shape.
fn tag_of(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Whether the runner with this tag (its process id) is still alive.
fn runner_alive(tag: u32) -> bool {
    tag == std::process::id() || std::path::Path::new(&format!("/proc/{tag}")).exists()
}

/// Removes the namespaces and links of earlier runs whose runner is gone. Returns how many
/// objects were removed.
pub fn cleanup_leftovers() -> usize {
    let mut removed = 0;
    if let Some(list) = output("ip", &["-o", "link", "show"]) {
        for line in list.lines() {
            // "7: chn123-h@if4: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if tag_of(name, LINK_PREFIX).is_some_and(|tag| !runner_alive(tag))
                && name.ends_with("-h")
            {
                let _ = run("ip", &["link", "del", name]);
                removed += 1;
            }
        }
    }
    if let Some(list) = output("ip", &["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if tag_of(name, NS_PREFIX).is_some_and(|tag| !runner_alive(tag)) {
                remove_namespace(name);
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_only_from_our_own_names() {
        assert_eq!(tag_of("chnem123-n1", NS_PREFIX), Some(123));
        assert_eq!(tag_of("chnem123-br", NS_PREFIX), Some(123));
        assert_eq!(tag_of("chn77-h", LINK_PREFIX), Some(77));
        assert_eq!(tag_of("docker0", LINK_PREFIX), None);
        assert_eq!(tag_of("chnemx-n1", NS_PREFIX), None);
        assert_eq!(tag_of("eth0", NS_PREFIX), None);
    }
}
