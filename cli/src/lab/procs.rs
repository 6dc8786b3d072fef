//! The lab's processes: started in a network namespace through `nsenter --net` (which execs,
//! so the pid we get is the program's), recorded in pid files as `PID START_TIME`, and only
//! ever signalled when `/proc/PID/stat` still shows that start time: a pid reused by some
//! other process is never touched. Signals go through `kill(1)` (no unsafe code here).

use anyhow::Context;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process's start time (clock ticks since boot) and state letter, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; fields after the
    // last `)` are plain. Start time is field 22, the 20th after `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Records `pid` in `path`.
pub fn record(path: &Path, pid: u32) -> anyhow::Result<()> {
    let (start, _) = stat(pid).with_context(|| format!("process {pid} is gone"))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid} {start}\n"))
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

/// The recorded process, if it still runs (same start time, not a zombie).
pub fn alive(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    match stat(pid) {
        Some((s, state)) if s == start && state != 'Z' && state != 'X' => Some(pid),
        _ => None,
    }
}

/// Starts `program args` inside network namespace `netns` (or in the machine's own when
/// `None`), in its own process group (a Ctrl-C meant for `rswarm lab` does not reach it),
/// with stdin closed and stdout and stderr appended to `log`; records it in `pid_file`.
pub fn spawn<S: AsRef<OsStr>>(
    netns: Option<&str>,
    program: &Path,
    args: &[S],
    log: &Path,
    pid_file: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = match netns {
        Some(ns) => {
            // `nsenter --net`, not `ip netns exec`: the latter also gives the process a
            // mount namespace of its own, and the mounts a daemon makes for its containers
            // (the secrets tmpfs) must be visible to containerd, in the machine's.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    if let Err(e) = record(pid_file, child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// Sends `signal` (a name such as `TERM`) to `pid`.
pub async fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .context("run kill")?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "kill -s {signal} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Stops the process recorded in `pid_file`: `signal`, then SIGKILL if it is still there
/// after `grace`. Returns the pid it stopped, or `None` when nothing was running. The pid
/// file is removed.
pub async fn stop(
    pid_file: &Path,
    signal_name: &str,
    grace: Duration,
) -> anyhow::Result<Option<u32>> {
    let Some(pid) = alive(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return Ok(None);
    };
    // The process may exit between the check and the signal: only its still being there
    // afterwards is an error.
    let _ = signal(pid, signal_name).await;
    let start = Instant::now();
    let mut killed = signal_name == "KILL";
    while alive(pid_file).is_some() {
        if !killed && start.elapsed() >= grace {
            let _ = signal(pid, "KILL").await;
            killed = true;
        }
        if start.elapsed() >= grace + Duration::from_secs(10) {
            anyhow::bail!("process {pid} ({}) does not stop", pid_file.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(Some(pid))
}

/// The last `n` lines of a log, for an error message.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_stale_record_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        record(&p, std::process::id()).unwrap();
        assert_eq!(alive(&p), Some(std::process::id()));
        // Same pid, another start time: a reused pid.
        std::fs::write(&p, format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(alive(&p), None);
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(alive(&p), None);
    }

    #[tokio::test]
    async fn stop_ends_a_child_and_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut child = spawn(
            None,
            Path::new("sleep"),
            &["30"],
            &dir.path().join("log"),
            &pid_file,
        )
        .unwrap();
        assert!(alive(&pid_file).is_some());
        // Reap it as it dies, as init would for a detached daemon.
        let reaper = std::thread::spawn(move || child.wait());
        let stopped = stop(&pid_file, "TERM", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(stopped.is_some());
        assert!(!pid_file.exists());
        reaper.join().unwrap().unwrap();
        assert_eq!(
            stop(&pid_file, "TERM", Duration::from_secs(1))
                .await
                .unwrap(),
            None
        );
    }
}
