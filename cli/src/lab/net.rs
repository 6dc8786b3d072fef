//! The lab's wiring, through iproute2's `ip`: a switch namespace with a bridge, a namespace
//! per host with a veth to the switch, and a leg for the machine itself. The lab is a
//! development tool, so it drives `ip` rather than speaking netlink itself.

use super::layout::{self, Layout};
use super::ledger::Ledger;
use anyhow::Context;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

/// Runs `ip ARGS`; the error is `ip`'s own message.
pub async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run ip (iproute2)")?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::bail!(
        "ip {}: {}",
        args.join(" "),
        err.lines().next().unwrap_or("failed").trim()
    )
}

/// Runs a list of `ip` commands in one process (`ip [-n NS] -batch -`), stopping at the
/// first that fails.
async fn batch(netns: Option<&str>, lines: &[String]) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ip (iproute2)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes()).await?;
        stdin.write_all(b"\n").await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed");
    anyhow::bail!(
        "ip{} -batch: {}",
        netns.map(|n| format!(" -n {n}")).unwrap_or_default(),
        first.trim()
    )
}

/// What already uses the lab's subnet in the machine's namespace (an address or a route),
/// described for an error message; `None` when the range is free.
pub async fn subnet_in_use() -> anyhow::Result<Option<String>> {
    let addrs = ip(&["-4", "-o", "addr", "show"]).await?;
    for line in addrs.lines() {
        // `4: eth0    inet 192.0.2.2/24 brd ... scope global eth0`
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = f.iter().position(|w| *w == "inet") else {
            continue;
        };
        let (Some(dev), Some(cidr)) = (f.get(1), f.get(i + 1)) else {
            continue;
        };
        if let Some((net, len)) = parse_cidr(cidr) {
            if layout::in_subnet(net) || (len < 32 && layout::overlaps_subnet(net, len)) {
                let owner = lab_of_link(dev)
                    .await
                    .map(|d| format!(": the lab in {d}"))
                    .unwrap_or_default();
                return Ok(Some(format!("{dev} has {cidr}{owner}")));
            }
        }
    }
    let routes = ip(&["-4", "route", "show", "table", "all"]).await?;
    for line in routes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // `[type] PREFIX ...`; skip the type keyword if any.
        let dst = match f.first() {
            Some(
                &("unicast" | "local" | "broadcast" | "blackhole" | "unreachable" | "prohibit"),
            ) => f.get(1),
            other => other,
        };
        let Some(dst) = dst else { continue };
        if *dst == "default" {
            continue;
        }
        if let Some((net, len)) = parse_cidr(dst) {
            if len > 0 && layout::overlaps_subnet(net, len) {
                return Ok(Some(format!("a route to {dst} exists ({})", line.trim())));
            }
        }
    }
    Ok(None)
}

/// The lab dir a link belongs to, from the alias `up` gives the machine's leg.
async fn lab_of_link(dev: &str) -> Option<String> {
    let out = ip(&["-o", "link", "show", "dev", dev]).await.ok()?;
    let alias = out.split("alias ").nth(1)?;
    let dir = alias
        .split_whitespace()
        .next()?
        .strip_prefix("rswarm-lab:")?;
    Some(dir.to_owned())
}

/// `A.B.C.D[/LEN]`.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    Some((a.parse().ok()?, l.parse().ok().filter(|l| *l <= 32)?))
}

/// The lab dir as a link alias: one word, whatever the path holds.
fn alias_safe(dir: &Path) -> String {
    dir.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

pub async fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).await.is_ok()
}

/// Builds the network, writing each namespace and link to the ledger before making it (so
/// that a failure at any point leaves a ledger that covers it).
pub async fn build(l: &Layout, ledger: &mut Ledger) -> anyhow::Result<()> {
    let ledger_path = l.ledger();
    ledger.made_run_netns = !Path::new("/run/netns").exists();
    ledger.netns = l.all_netns();
    ledger.links = vec![l.leg()];
    ledger.save(&ledger_path)?;

    // The namespaces, in one `ip` process.
    let adds: Vec<String> = l
        .all_netns()
        .iter()
        .map(|ns| format!("netns add {ns}"))
        .collect();
    batch(None, &adds).await?;

    // The switch: a bridge, and one veth per host whose other end goes straight into the
    // host's namespace (nothing but the leg ever appears in the machine's namespace).
    let sw = l.switch_ns();
    let mut lines = vec![
        "link set lo up".to_owned(),
        format!("link add {} type bridge", layout::BRIDGE),
        format!("link set {} up", layout::BRIDGE),
    ];
    let mut ends = Vec::new();
    for n in l.hosts() {
        ends.push((Layout::switch_port(n), l.host_ns(n)));
    }
    ends.push((layout::REGISTRY_PORT_LINK.to_owned(), l.registry_ns()));
    for (port, ns) in &ends {
        lines.push(format!(
            "link add {port} type veth peer name {} netns {ns}",
            layout::HOST_LINK
        ));
        lines.push(format!("link set {port} master {} up", layout::BRIDGE));
    }
    batch(Some(&sw), &lines).await?;

    // Each host (and the registry) brings its end up with its address.
    let mut hosts: Vec<(String, Ipv4Addr)> = l
        .hosts()
        .map(|n| (l.host_ns(n), Layout::host_ip(n)))
        .collect();
    hosts.push((l.registry_ns(), layout::REGISTRY_IP));
    let jobs = hosts.iter().map(|(ns, addr)| {
        let lines = vec![
            "link set lo up".to_owned(),
            format!(
                "addr add {addr}/{} dev {}",
                layout::PREFIX_LEN,
                layout::HOST_LINK
            ),
            format!("link set {} up", layout::HOST_LINK),
        ];
        async move { batch(Some(ns), &lines).await }
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }

    // The machine's leg: made in the machine's namespace, its peer moved into the switch.
    let leg = l.leg();
    batch(
        None,
        &[
            format!(
                "link add {leg} type veth peer name {} netns {sw}",
                layout::MACHINE_PORT
            ),
            format!("link set {leg} alias rswarm-lab:{}", alias_safe(&l.dir)),
            format!(
                "addr add {}/{} dev {leg}",
                layout::MACHINE_IP,
                layout::PREFIX_LEN
            ),
            format!("link set {leg} up"),
        ],
    )
    .await?;
    // No IPv6 autoconfiguration chatter from the machine's side of the leg.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{leg}/disable_ipv6"), "1");
    ip(&[
        "-n",
        &sw,
        "link",
        "set",
        layout::MACHINE_PORT,
        "master",
        layout::BRIDGE,
        "up",
    ])
    .await?;
    Ok(())
}

/// Removes the lab's namespaces and its leg (whichever exist). Deleting a namespace takes
/// the veths in it, and their peers, with it.
pub async fn teardown(l: &Layout) -> Vec<String> {
    let mut errors = Vec::new();
    let dels: Vec<String> = l
        .all_netns()
        .into_iter()
        .filter(|ns| netns_exists(ns))
        .map(|ns| format!("netns del {ns}"))
        .collect();
    if !dels.is_empty() {
        if let Err(e) = batch(None, &dels).await {
            errors.push(e.to_string());
        }
    }
    let leg = l.leg();
    if link_exists(&leg).await {
        if let Err(e) = ip(&["link", "del", "dev", &leg]).await {
            errors.push(e.to_string());
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse() {
        assert_eq!(
            parse_cidr("198.18.0.254/24"),
            Some((Ipv4Addr::new(198, 18, 0, 254), 24))
        );
        assert_eq!(
            parse_cidr("10.0.0.1"),
            Some((Ipv4Addr::new(10, 0, 0, 1), 32))
        );
        assert_eq!(parse_cidr("fe80::1/64"), None);
        assert_eq!(parse_cidr("1.2.3.4/33"), None);
    }
}
