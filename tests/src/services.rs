//! Services on real containers: a three-node cluster whose daemons run their tasks in
//! containerd namespaces of their own, the rows of `service ps --format json`, and what
//! containerd itself says (`ctr`), with every namespace removed again on drop.
//!
//! These tests need containerd and a registry on 127.0.0.1:5055 holding `busybox:latest`
//! (`deploy/test-infra.sh start`); they run only with `RSWARM_CONTAINERD_TESTS=1`.

// Real time is right here: deadlines on other processes, which a paused clock cannot move.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use crate::daemon::Daemon;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The registry the test infrastructure runs, reached over plain HTTP.
pub const REGISTRY: &str = "127.0.0.1:5055";
/// The image every test service runs.
pub const IMAGE: &str = "127.0.0.1:5055/busybox:latest";
/// A container command that runs until SIGTERM and then exits 0 at once.
pub const LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// No `ctr` call should take longer; a hung one is reported instead of hanging the test.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster gets to have its three nodes ready.
const FORM: Duration = Duration::from_secs(30);

/// Whether the containerd tests are enabled (`RSWARM_CONTAINERD_TESTS=1`); when not, prints
/// `skipped: set RSWARM_CONTAINERD_TESTS=1` and the test should return.
pub fn containerd_tests_enabled() -> bool {
    if std::env::var("RSWARM_CONTAINERD_TESTS").as_deref() == Ok("1") {
        true
    } else {
        println!("skipped: set RSWARM_CONTAINERD_TESTS=1");
        false
    }
}

/// Runs `ctr ARGS...`; its stdout, or an error with its stderr.
pub fn ctr(args: &[&str]) -> Result<String, String> {
    let what = format!("ctr {}", args.join(" "));
    let mut child = Command::new("ctr")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let mut out_pipe = child.stdout.take().ok_or("stdout is piped")?;
    let mut err_pipe = child.stderr.take().ok_or("stderr is piped")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > CTR_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no answer within {CTR_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    };
    let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{what} failed ({status}): {}", err.trim()))
    }
}

/// The first column of `ctr -n NS LIST...` after its header line.
fn first_column(ns: &str, list: &[&str]) -> Result<Vec<String>, String> {
    let mut args = vec!["-n", ns];
    args.extend_from_slice(list);
    Ok(ctr(&args)?
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Non-empty lines of `ctr -n NS LIST... -q`.
fn quiet_list(ns: &str, list: &[&str]) -> Result<Vec<String>, String> {
    let mut args = vec!["-n", ns];
    args.extend_from_slice(list);
    args.push("-q");
    Ok(ctr(&args)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// One row of `ctr -n NS tasks ls`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CtrTask {
    /// The container id.
    pub id: String,
    pub pid: String,
    /// RUNNING, STOPPED, CREATED, ...
    pub status: String,
}

/// Every containerd task in `ns`, sorted by container id.
pub fn ctr_tasks(ns: &str) -> Result<Vec<CtrTask>, String> {
    let mut v: Vec<CtrTask> = ctr(&["-n", ns, "tasks", "ls"])?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [id, pid, status, ..] => Some(CtrTask {
                    id: (*id).to_owned(),
                    pid: (*pid).to_owned(),
                    status: (*status).to_owned(),
                }),
                _ => None,
            }
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The ids of the containers whose task runs in `ns`.
pub fn ctr_running(ns: &str) -> Result<Vec<String>, String> {
    Ok(ctr_tasks(ns)?
        .into_iter()
        .filter(|t| t.status == "RUNNING")
        .map(|t| t.id)
        .collect())
}

/// The ids of every container in `ns`, running or not.
pub fn ctr_containers(ns: &str) -> Result<Vec<String>, String> {
    let mut v = quiet_list(ns, &["containers", "ls"])?;
    v.sort();
    Ok(v)
}

/// Whether containerd has a namespace called `ns`.
pub fn namespace_exists(ns: &str) -> Result<bool, String> {
    Ok(ctr(&["namespaces", "ls", "-q"])?
        .lines()
        .any(|l| l.trim() == ns))
}

/// Removes everything in containerd namespace `ns` and the namespace itself: kills and
/// deletes its tasks, deletes its containers, images, leases, snapshots and content.
/// Only for namespaces the tests made (`rswtest-...`).
pub fn remove_namespace(ns: &str) -> Result<(), String> {
    if !ns.starts_with("rswtest-") {
        return Err(format!(
            "refusing to remove namespace {ns}: not a test namespace"
        ));
    }
    if !namespace_exists(ns)? {
        return Ok(());
    }
    let tasks = quiet_list(ns, &["tasks", "ls"])?;
    for t in &tasks {
        let _ = ctr(&["-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", t]);
    }
    for t in &tasks {
        // `--force` waits for a killed process before deleting its task.
        let _ = ctr(&["-n", ns, "tasks", "delete", "--force", t]);
    }
    for c in quiet_list(ns, &["containers", "ls"])? {
        let _ = ctr(&["-n", ns, "containers", "delete", &c]);
    }
    for i in quiet_list(ns, &["images", "ls"])? {
        let _ = ctr(&["-n", ns, "images", "rm", &i]);
    }
    for l in quiet_list(ns, &["leases", "ls"])? {
        let _ = ctr(&["-n", ns, "leases", "rm", &l]);
    }
    // Snapshots go children first: remove what can be removed until none is left.
    for _ in 0..32 {
        let snaps = first_column(ns, &["snapshots", "--snapshotter", "overlayfs", "ls"])?;
        if snaps.is_empty() {
            break;
        }
        for s in snaps {
            let _ = ctr(&[
                "-n",
                ns,
                "snapshots",
                "--snapshotter",
                "overlayfs",
                "rm",
                &s,
            ]);
        }
    }
    for d in quiet_list(ns, &["content", "ls"])? {
        let _ = ctr(&["-n", ns, "content", "rm", &d]);
    }
    ctr(&["namespaces", "rm", ns]).map(|_| ())
}

/// A manager `m1` and workers `w1`, `w2` on ports `base..base+3`, each daemon running its
/// containers in `rswtest-svc-TEST-NODE` and pulling from the test registry over HTTP.
/// Dropping it kills the daemons, then removes the three namespaces (also when the test
/// failed); namespaces left by an earlier aborted run are removed before the start.
pub struct Cluster {
    /// m1, w1, w2, in that order.
    pub daemons: Vec<Daemon>,
    namespaces: Vec<String>,
}

impl Cluster {
    /// Starts the three daemons, initialises the cluster on m1, joins w1 and w2 as workers
    /// and waits until m1 lists three ready nodes.
    pub fn start(test: &str, base: u16) -> Cluster {
        let names = ["m1", "w1", "w2"];
        let namespaces: Vec<String> = names
            .iter()
            .map(|n| format!("rswtest-svc-{test}-{n}"))
            .collect();
        for ns in &namespaces {
            if let Err(e) = remove_namespace(ns) {
                eprintln!("cleanup of a leftover namespace {ns}: {e}");
            }
        }
        let mut c = Cluster {
            daemons: Vec::new(),
            namespaces: namespaces.clone(),
        };
        for (i, (name, ns)) in names.iter().zip(&namespaces).enumerate() {
            let port = base + u16::try_from(i).expect("three nodes");
            c.daemons.push(Daemon::start_with(
                name,
                port,
                ns,
                &["--insecure-registry", REGISTRY],
            ));
        }
        c.m1().init();
        let token = c.m1().join_token("worker");
        c.node("w1").join(&token, c.m1());
        c.node("w2").join(&token, c.m1());
        c.m1().wait_ready(3, FORM);
        c
    }

    /// The manager.
    pub fn m1(&self) -> &Daemon {
        &self.daemons[0]
    }

    #[track_caller]
    pub fn node(&self, name: &str) -> &Daemon {
        self.daemons
            .iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }

    #[track_caller]
    pub fn node_mut(&mut self, name: &str) -> &mut Daemon {
        self.daemons
            .iter_mut()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }

    /// The containerd namespace of node `name`.
    #[track_caller]
    pub fn ns(&self, name: &str) -> String {
        self.node(name).containerd_namespace().to_owned()
    }

    /// Running containerd tasks per node, e.g. `{m1: 2, w1: 2, w2: 2}`.
    pub fn ctr_running_per_node(&self) -> Result<BTreeMap<String, usize>, String> {
        let mut m = BTreeMap::new();
        for d in &self.daemons {
            m.insert(
                d.name().to_owned(),
                ctr_running(d.containerd_namespace())?.len(),
            );
        }
        Ok(m)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The daemons go first, so that nothing starts containers again.
        for d in &mut self.daemons {
            d.kill9();
        }
        for ns in &self.namespaces {
            if let Err(e) = remove_namespace(ns) {
                eprintln!("cleanup of containerd namespace {ns}: {e}");
            }
        }
    }
}

/// The rows of `service ps SERVICE --format json` on `m`; only the tasks whose desired
/// state is running when `desired_running`.
pub fn tasks(m: &Daemon, service: &str, desired_running: bool) -> Result<Vec<Value>, String> {
    let mut args = vec!["service", "ps", service];
    if desired_running {
        args.extend(["--filter", "desired-state=running"]);
    }
    match m.try_json(&args)? {
        Value::Array(rows) => Ok(rows),
        other => Err(format!("service ps printed a non-array: {other}")),
    }
}

/// A string field of a task row ("" when missing).
pub fn s<'a>(row: &'a Value, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A one-line summary of task rows: `web.1@w1:running web.2@w2:pending(no suitable node...)`.
pub fn summary(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| {
            let why = if !s(r, "error").is_empty() {
                format!("({})", s(r, "error"))
            } else if s(r, "state") == "pending" {
                format!("({})", s(r, "message"))
            } else {
                String::new()
            };
            format!(
                "{}@{}:{}/{}{why}",
                s(r, "name"),
                s(r, "node"),
                s(r, "state"),
                s(r, "desired_state")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rows whose observed state is running.
pub fn running(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| s(r, "state") == "running").collect()
}

/// Running tasks per node hostname.
pub fn running_per_node(rows: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in running(rows) {
        *m.entry(s(r, "node").to_owned()).or_insert(0) += 1;
    }
    m
}

/// `Ok(rows)` when `service` has exactly `n` tasks that should run, all of them running.
pub fn expect_running(m: &Daemon, service: &str, n: usize) -> Result<Vec<Value>, String> {
    let rows = tasks(m, service, true)?;
    let up = running(&rows).len();
    if rows.len() == n && up == n {
        Ok(rows)
    } else {
        Err(format!(
            "{service}: {up} running of {} wanted, expected {n}: {}",
            rows.len(),
            summary(&rows)
        ))
    }
}
