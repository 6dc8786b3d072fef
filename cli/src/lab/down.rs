//! `lab down`, and the rollback of a failed `lab up`: stop the daemons and the registry,
//! remove the hosts' containerd namespaces (their containers killed), delete the network
//! namespaces and the machine's leg, stop the lab's own containerd if it started one, and
//! remove the lab dir. Each step runs whatever the earlier ones left; when one fails the
//! record (`lab.json`) is kept so that `lab down` can be run again.

use super::layout::{self, Layout};
use super::ledger::Ledger;
use super::{net, procs, require_root, runtime};
use anyhow::Context;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a daemon gets to stop on SIGTERM before SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(3);

pub async fn down(dir: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    require_root("lab down")?;
    let dir = layout::resolve_dir(dir).with_context(|| format!("lab dir {}", dir.display()))?;
    let path = dir.join("lab.json");
    if !path.exists() {
        anyhow::bail!("no lab in {}", dir.display());
    }
    let ledger = Ledger::load(&path)?;
    let l = Layout::new(dir.clone(), ledger.nodes);
    let errors = teardown(&l).await;
    if !errors.is_empty() {
        anyhow::bail!(
            "lab down left something behind ({}); its record stays in {}: run `rswarm lab down --dir {}` again",
            errors.join("; "),
            path.display(),
            dir.display()
        );
    }
    super::print(&format!(
        "Lab down in {:.1}s: {} hosts, the registry, the switch and {} removed\n",
        t0.elapsed().as_secs_f64(),
        l.nodes,
        dir.display()
    ));
    Ok(())
}

/// Removes what the lab in `l.dir` made, as recorded there; returns what could not be.
pub async fn teardown(l: &Layout) -> Vec<String> {
    let ledger = match Ledger::load(&l.ledger()) {
        Ok(x) => x,
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut errors = Vec::new();

    // The daemons and the registry.
    let mut stops: Vec<_> = l
        .hosts()
        .map(|n| (Layout::host_name(n), l.daemon_pid(n)))
        .collect();
    stops.push(("the registry".into(), l.registry_pid()));
    let jobs = stops.iter().map(|(name, pid_file)| async move {
        procs::stop(pid_file, "TERM", DAEMON_GRACE)
            .await
            .map_err(|e| format!("{name}: {e}"))
    });
    for r in futures::future::join_all(jobs).await {
        if let Err(e) = r {
            errors.push(e);
        }
    }

    // The hosts' containers and containerd namespaces.
    if !ledger.containerd_socket.as_os_str().is_empty() {
        errors.extend(runtime::destroy_namespaces(l, &ledger.containerd_socket).await);
    }

    errors.extend(net::teardown(l).await);

    if ledger.own_containerd {
        if let Err(e) = procs::stop(&l.containerd_pid(), "TERM", Duration::from_secs(10)).await {
            errors.push(format!("the lab's containerd: {e}"));
        }
    }

    // Anything still mounted under the lab dir (a container's rootfs under the lab's own
    // containerd whose task could not be deleted).
    for m in mounts_under(&l.dir) {
        if let Err(e) = run("umount", &[m.as_str()]).await {
            errors.push(e.to_string());
        }
    }

    forget_runtime_dirs(l, ledger.made_run_containerd);

    if ledger.made_run_netns {
        forget_run_netns().await;
    }

    if errors.is_empty() {
        let removed = if ledger.made_dir {
            std::fs::remove_dir_all(&l.dir)
        } else {
            remove_contents(&l.dir)
        };
        if let Err(e) = removed {
            errors.push(format!("remove {}: {e}", l.dir.display()));
        }
    }
    errors
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape_mount)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found.dedup();
    found
}

/// `/proc` escapes space, tab, newline and backslash in mount points as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `ip netns add` made `/run/netns` a mount point: when the lab made it and no namespace is
/// left in it, the machine gets it back as it was.
async fn forget_run_netns() {
    let dir = Path::new("/run/netns");
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty {
        return;
    }
    if mounts_under(dir).iter().any(|m| m == "/run/netns") {
        let _ = run("umount", &["/run/netns"]).await;
    }
    let _ = std::fs::remove_dir(dir);
}

/// The empty per-namespace dirs containerd and runc leave under /run/containerd (named
/// after our containerd namespaces, so ours); and /run/containerd itself when the lab's own
/// containerd made it and only empty dirs are left in it.
fn forget_runtime_dirs(l: &Layout, made_run_containerd: bool) {
    let run = Path::new("/run/containerd");
    for n in l.hosts() {
        for base in ["runc", "io.containerd.runtime.v2.task"] {
            let _ = std::fs::remove_dir(run.join(base).join(l.ctr_namespace(n)));
        }
    }
    if made_run_containerd {
        remove_empty_dirs(run);
    }
}

/// Removes `dir` and the directories under it, if none holds anything but directories.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn remove_contents(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {program}"))?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_unescape() {
        assert_eq!(unescape_mount(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount(r"/tmp/x\04"), r"/tmp/x\04");
    }
}
