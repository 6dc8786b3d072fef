//! `rswarm lab` end to end: the real binary builds real labs (network namespaces, daemons,
//! the registry, containers on containerd) and takes them down again.
//!
//! Needs root, containerd, runc, docker-registry, skopeo and busybox-static (installed by
//! `deploy/test-infra.sh start`), and `RSWARM_LAB_TESTS=1`; without it every test says it is
//! skipped and passes, so `cargo test` as a normal user stays green.
//!
//! Every lab's addresses are the same (198.18.0.0/24), so each test runs its lab inside a
//! sandbox: a network namespace of its own (`rswlabtest-<pid>-<tag>`) that stands in for the
//! machine, entered with `nsenter --net` (the mount namespace stays the machine's, so the
//! lab's namespaces, sockets and files are the real ones). The tests thus run in parallel,
//! and beside a developer's (or the quickstart's) lab. A test's lab is taken down and its
//! sandbox deleted however the test ends; a failing test prints its daemons' last log lines.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use rswarm_tests::{rswarm_bin, wait_for, Checks};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Tasks get this long to run (pull, create, start) after a service is created.
const RUN: Duration = Duration::from_secs(90);
/// A stopped daemon's node is down within this (3 missed 1 s beats, plus slack).
const DOWN: Duration = Duration::from_secs(20);
/// A restarted daemon's node is ready again within this.
const BACK: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// Whether the lab tests run; says why not when they do not.
fn enabled(test: &str) -> bool {
    if std::env::var("RSWARM_LAB_TESTS").as_deref() != Ok("1") {
        eprintln!("{test}: skipped (set RSWARM_LAB_TESTS=1 and run as root for the lab tests)");
        return false;
    }
    assert!(
        is_root(),
        "RSWARM_LAB_TESTS=1 but not root: the lab tests need root"
    );
    true
}

/// The lab id of a (resolved) lab dir: FNV-1a, as `rswarm lab` names its namespaces.
fn lab_id(dir: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// nsenter (util-linux), found on the test's own PATH.
fn nsenter() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nsenter"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/nsenter"))
}

/// A network namespace standing in for the machine; deleted on drop.
struct Sandbox {
    name: String,
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        let name = format!("rswlabtest-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        assert!(
            ok(Command::new("ip").args(["netns", "add", &name])),
            "ip netns add {name}"
        );
        let sb = Sandbox { name };
        assert!(ok(
            Command::new("ip").args(["-n", &sb.name, "link", "set", "lo", "up"])
        ));
        sb
    }

    /// `program` run inside the sandbox's network namespace.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // By its full path: a test may give the command a PATH without it.
        let mut c = Command::new(nsenter());
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        self.cmd(program)
            .args(args)
            .output()
            .expect("run a command in the sandbox")
    }

    fn rswarm(&self, args: &[&str]) -> Output {
        self.run(rswarm_bin(), args)
    }

    /// Links in the sandbox (the lab's "machine") whose name starts with `prefix`.
    fn links(&self, prefix: &str) -> Vec<String> {
        text(&self.run("ip", &["-o", "link", "show"]).stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A lab dir in a fresh temporary dir; the lab (if any) is taken down on drop.
struct Lab<'a> {
    sb: &'a Sandbox,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl<'a> Lab<'a> {
    fn new(sb: &'a Sandbox) -> Lab<'a> {
        let tmp = tempfile::Builder::new()
            .prefix("rswlab-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let dir = tmp
            .path()
            .canonicalize()
            .expect("canonical temp dir")
            .join("lab");
        Lab { sb, dir, _tmp: tmp }
    }

    fn dir(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp dir")
    }

    fn id(&self) -> String {
        lab_id(&self.dir)
    }

    /// `rswarm lab SUB ARGS... --dir DIR` in the sandbox.
    fn lab(&self, sub: &str, args: &[&str]) -> Output {
        let mut a = vec!["lab", sub];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--dir", self.dir()]);
        self.sb.rswarm(&a)
    }

    /// `lab SUB ARGS...`, which must succeed; returns its stdout.
    #[track_caller]
    fn ok(&self, sub: &str, args: &[&str]) -> String {
        let out = self.lab(sub, args);
        assert!(
            out.status.success(),
            "lab {sub} {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A client command against hN's daemon.
    fn on(&self, host: &str, args: &[&str]) -> Output {
        let sock = format!("unix://{}/{host}/rswarm.sock", self.dir());
        let mut a = vec!["-H", sock.as_str()];
        a.extend_from_slice(args);
        self.sb.rswarm(&a)
    }

    /// `ARGS... --format json` on hN, which must succeed.
    fn json(&self, host: &str, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--format", "json"]);
        let out = self.on(host, &a);
        if !out.status.success() {
            return Err(format!("{args:?} on {host}: {}", text(&out.stderr).trim()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{args:?}: bad JSON: {e}"))
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok("status", &["--format", "json"])).expect("status JSON")
    }

    /// Builds a busybox image (from busybox-static, as the acceptance scripts do) and
    /// pushes it into the lab's registry as `198.18.0.250:5000/busybox:latest`.
    fn push_busybox(&self) {
        let out = self
            .sb
            .cmd("bash")
            .args([
                "-c",
                PUSH_BUSYBOX,
                "push-busybox",
                "198.18.0.250:5000/busybox:latest",
            ])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "building and pushing the busybox image failed: {}",
            text(&out.stderr)
        );
    }

    /// Takes the lab down now (checked); the drop then has nothing left to do.
    #[track_caller]
    fn down(&self) {
        self.ok("down", &[]);
    }

    fn logs_tail(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let log = e.path().join("daemon.log");
            if let Ok(t) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = t.lines().collect();
                eprintln!("--- {} (last lines)", log.display());
                for l in &lines[lines.len().saturating_sub(15)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.logs_tail();
        }
        if self.dir.join("lab.json").exists() {
            let out = self.lab("down", &[]);
            if !out.status.success() {
                eprintln!(
                    "lab down --dir {} failed: {}",
                    self.dir.display(),
                    text(&out.stderr)
                );
            }
        }
    }
}

/// Everything of lab `id` that is still there (namespaces, links, containerd namespaces,
/// processes, mounts, the dir); empty when it is all gone.
fn leftovers(sb: &Sandbox, id: &str, dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = format!("rswlab-{id}");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) {
                left.push(format!("network namespace {n}"));
            }
        }
    }
    for l in sb.links(&format!("rswl{id}")) {
        left.push(format!("link {l}"));
    }
    let ns = Command::new("ctr")
        .args(["namespaces", "ls", "-q"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    for n in ns.lines().filter(|n| n.starts_with(&prefix)) {
        left.push(format!("containerd namespace {n}"));
    }
    let data_dir = format!("--data-dir\0{}", dir.display());
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&data_dir) || cmdline.contains(&format!("{}/", dir.display())) {
                left.push(format!(
                    "process {}: {}",
                    p.file_name().to_string_lossy(),
                    cmdline.replace('\0', " ")
                ));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(4)) {
        if m.starts_with(&format!("{}/", dir.display())) || m == dir.to_string_lossy() {
            left.push(format!("mount {m}"));
        }
    }
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    left
}

/// Task rows of `service ps NAME` with desired state running.
fn running_nodes(lab: &Lab, service: &str) -> Result<Vec<String>, String> {
    let rows = lab.json(
        "h1",
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
        ],
    )?;
    let mut nodes: Vec<String> = rows
        .as_array()
        .ok_or("service ps: not an array")?
        .iter()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["node"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// Rows of `node ls` on `host`: hostname → (state, role).
fn node_states(lab: &Lab, host: &str) -> Result<Vec<(String, String, String)>, String> {
    let rows = lab.json(host, &["node", "ls"])?;
    Ok(rows
        .as_array()
        .ok_or("node ls: not an array")?
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            (s("hostname"), s("state"), s("role"))
        })
        .collect())
}

#[test]
fn a_service_spreads_over_the_rack_and_down_leaves_nothing() {
    if !enabled("a_service_spreads_over_the_rack_and_down_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("spread");
    let lab = Lab::new(&sb);
    let t = Instant::now();
    let out = lab.ok("up", &["--nodes", "3", "--managers", "1"]);
    eprintln!("lab up took {:?}:\n{out}", t.elapsed());

    let env = lab.ok("env", &["h1"]);
    assert_eq!(
        env.trim(),
        format!("export RSWARM_HOST=unix://{}/h1/rswarm.sock", lab.dir()),
        "lab env h1"
    );
    let nodes = lab.json("h1", &["node", "ls"]).expect("node ls");
    let mut seen: Vec<(String, String, String)> = nodes
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            (s("hostname"), s("state"), s("addr"))
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String, String)> = (1..=3)
        .map(|n| (format!("h{n}"), "ready".into(), format!("198.18.0.1{n}")))
        .collect();
    assert_eq!(seen, want, "node ls on h1");

    let st = lab.status();
    assert_eq!(st["id"], lab.id().as_str());
    let hosts = st["hosts"].as_array().expect("hosts");
    let roles: Vec<(&str, &str, &str)> = hosts
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap_or(""),
                h["daemon"].as_str().unwrap_or(""),
                h["role"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("h1", "running", "manager"),
            ("h2", "running", "worker"),
            ("h3", "running", "worker")
        ]
    );
    assert_eq!(st["registry"]["daemon"], "running");

    lab.push_busybox();
    let out = lab.on(
        "h1",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "spread",
            "--replicas",
            "3",
            "198.18.0.250:5000/busybox:latest",
            "sleep",
            "3600",
        ],
    );
    assert!(
        out.status.success(),
        "service create: {}",
        text(&out.stderr)
    );
    wait_for(RUN, || {
        let nodes = running_nodes(&lab, "spread")?;
        if nodes == ["h1", "h2", "h3"] {
            Ok(())
        } else {
            Err(format!("running on {nodes:?}"))
        }
    });
    // Each host's container runs in that host's containerd namespace.
    for n in 1..=3 {
        let ns = format!("rswlab-{}-h{n}", lab.id());
        let tasks = Command::new("ctr")
            .args(["-n", &ns, "tasks", "ls"])
            .output()
            .expect("ctr");
        assert!(
            text(&tasks.stdout).contains("RUNNING"),
            "no running task in {ns}: {}",
            text(&tasks.stdout)
        );
    }

    let t = Instant::now();
    lab.down();
    eprintln!("lab down took {:?}", t.elapsed());
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    assert!(left.is_empty(), "left behind by lab down: {left:#?}");
}

#[test]
fn fault_drills_stop_start_and_restart_daemons() {
    if !enabled("fault_drills_stop_start_and_restart_daemons") {
        return;
    }
    let sb = Sandbox::new("drill");
    let lab = Lab::new(&sb);
    lab.ok(
        "up",
        &[
            "--nodes",
            "3",
            "--managers",
            "3",
            "--dispatcher-heartbeat",
            "1s",
        ],
    );
    let all_ready = |host: &str| {
        let nodes = node_states(&lab, host)?;
        if nodes.len() == 3 && nodes.iter().all(|(_, s, r)| s == "ready" && r == "manager") {
            Ok(())
        } else {
            Err(format!("node ls on {host}: {nodes:?}"))
        }
    };
    all_ready("h1").expect("three ready managers after lab up");

    // A stopped daemon: its node goes down; the status says so.
    let out = lab.ok("stop", &["h3"]);
    assert!(out.contains("h3: daemon stopped"), "{out}");
    let st = lab.status();
    assert_eq!(st["hosts"][2]["daemon"], "stopped", "{st:#}");
    assert!(st["hosts"][2]["pid"].is_null());
    wait_for(DOWN, || {
        let nodes = node_states(&lab, "h1")?;
        match nodes.iter().find(|(h, _, _)| h == "h3") {
            Some((_, s, _)) if s == "down" => Ok(()),
            other => Err(format!("h3 is {other:?}")),
        }
    });
    let out = lab.ok("stop", &["h3"]);
    assert!(out.contains("h3: daemon was not running"), "{out}");

    // Started again, it resumes its role from its data dir.
    let out = lab.ok("start", &["h3"]);
    assert!(out.contains("h3: daemon started"), "{out}");
    wait_for(BACK, || all_ready("h1"));

    // The leader crashes (SIGKILL) and comes back: the others elect a leader meanwhile.
    let out = lab.ok("restart", &["--kill", "h1"]);
    assert!(
        out.contains("h1: daemon stopped")
            && out.contains("SIGKILL")
            && out.contains("h1: daemon started"),
        "{out}"
    );
    wait_for(BACK, || all_ready("h2"));
    wait_for(BACK, || all_ready("h1"));

    lab.down();
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    assert!(left.is_empty(), "left behind by lab down: {left:#?}");
}

#[test]
fn a_lab_with_its_own_containerd_leaves_nothing() {
    if !enabled("a_lab_with_its_own_containerd_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("own");
    let lab = Lab::new(&sb);
    let out = sb
        .cmd(rswarm_bin())
        .args(["lab", "up", "--nodes", "2", "--dir", lab.dir()])
        .env("RSWARM_LAB_OWN_CONTAINERD", "1")
        .output()
        .expect("lab up");
    assert!(out.status.success(), "lab up: {}", text(&out.stderr));
    let st = lab.status();
    assert_eq!(st["containerd"]["started_by_lab"], true, "{st:#}");
    let socket = format!("{}/containerd/containerd.sock", lab.dir());
    assert_eq!(st["containerd"]["socket"], socket.as_str());
    let pid: u32 = std::fs::read_to_string(lab.dir.join("containerd/pid"))
        .expect("containerd pid file")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a pid");

    lab.push_busybox();
    let out = lab.on(
        "h1",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "pair",
            "--replicas",
            "2",
            "198.18.0.250:5000/busybox:latest",
            "sleep",
            "3600",
        ],
    );
    assert!(
        out.status.success(),
        "service create: {}",
        text(&out.stderr)
    );
    wait_for(RUN, || {
        let nodes = running_nodes(&lab, "pair")?;
        if nodes == ["h1", "h2"] {
            Ok(())
        } else {
            Err(format!("running on {nodes:?}"))
        }
    });

    lab.down();
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    assert!(left.is_empty(), "left behind by lab down: {left:#?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.contains("containerd"))
                .unwrap_or(true),
        "the lab's containerd (pid {pid}) still runs"
    );
}

#[test]
fn bad_input_is_refused_in_one_line_and_leaves_nothing() {
    if !enabled("bad_input_is_refused_in_one_line_and_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("bad");
    let mut c = Checks::new();

    // Flags out of range.
    let lab = Lab::new(&sb);
    for (case, args, expect) in [
        ("no hosts", vec!["--nodes", "0"], "--nodes"),
        ("too many hosts", vec!["--nodes", "65"], "--nodes"),
        (
            "more managers than hosts",
            vec!["--nodes", "2", "--managers", "3"],
            "--managers",
        ),
        ("no managers", vec!["--managers", "0"], "--managers"),
        (
            "bad heartbeat",
            vec!["--dispatcher-heartbeat", "soon"],
            "heartbeat",
        ),
    ] {
        c.refused(case, &lab.lab("up", &args), &[expect]);
        c.that(case, !lab.dir.exists(), || "made the lab dir".into());
    }

    // A dir that holds something else.
    std::fs::create_dir_all(&lab.dir).expect("mkdir");
    std::fs::write(lab.dir.join("notes.txt"), "mine").expect("write");
    c.refused("a non-empty dir", &lab.lab("up", &[]), &["not empty"]);
    c.that(
        "a non-empty dir",
        lab.dir.join("notes.txt").exists(),
        || "removed the user's file".into(),
    );
    std::fs::remove_dir_all(&lab.dir).expect("rm");

    // Commands on a dir without a lab.
    for sub in ["down", "status", "env"] {
        let args: &[&str] = if sub == "env" { &["h1"] } else { &[] };
        c.refused(
            &format!("{sub} without a lab"),
            &lab.lab(sub, args),
            &["no lab"],
        );
    }

    // Not root: a copy of the binary that nobody can run.
    let bin_dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let copy = bin_dir.path().join("rswarm");
    std::fs::copy(rswarm_bin(), &copy).expect("copy rswarm");
    let out = sb
        .cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["lab", "up", "--dir", lab.dir()])
        .output()
        .expect("setpriv");
    c.refused("not root", &out, &["root"]);
    c.that("not root", !lab.dir.exists(), || "made the lab dir".into());

    // Missing packages: a PATH with iproute2 and kill only.
    let path_dir = tempfile::tempdir().expect("temp dir");
    for tool in ["ip", "kill"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, path_dir.path().join(tool)).expect("symlink");
    }
    let out = sb
        .cmd(rswarm_bin())
        .args(["lab", "up", "--dir", lab.dir()])
        .env("PATH", path_dir.path())
        .output()
        .expect("lab up");
    c.refused(
        "missing packages",
        &out,
        &["containerd", "runc", "docker-registry", "apt-get install"],
    );
    c.that("missing packages", !lab.dir.exists(), || {
        "made the lab dir".into()
    });

    // The address range taken (in the sandbox only; a bridge, as this kernel may lack dummy).
    let dummy = format!("rswtd{}", std::process::id() % 100_000);
    let added = sb
        .run("ip", &["link", "add", &dummy, "type", "bridge"])
        .status
        .success()
        && sb
            .run("ip", &["addr", "add", "198.18.0.1/24", "dev", &dummy])
            .status
            .success();
    assert!(added, "add a dummy link in the sandbox");
    c.refused(
        "range in use",
        &lab.lab("up", &[]),
        &["198.18.0.0/24", "in use", &dummy],
    );
    c.that("range in use", !lab.dir.exists(), || {
        "made the lab dir".into()
    });
    let _ = sb.run("ip", &["link", "del", &dummy]);

    // A failure halfway (the registry exits at once) takes back everything made so far.
    let fake = tempfile::tempdir().expect("temp dir");
    std::fs::write(fake.path().join("docker-registry"), "#!/bin/sh\nexit 3\n").expect("write");
    std::fs::set_permissions(
        fake.path().join("docker-registry"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .cmd(rswarm_bin())
        .args(["lab", "up", "--dir", lab.dir()])
        .env("PATH", path)
        .output()
        .expect("lab up");
    c.refused("failed halfway", &out, &["lab up failed", "registry"]);
    c.that("failed halfway", out.status.code() == Some(1), || {
        format!("exit {}", out.status)
    });
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    c.that("failed halfway", left.is_empty(), || {
        format!("left behind: {left:?}")
    });

    // A lab that exists; a second lab beside it.
    lab.ok("up", &["--nodes", "1"]);
    c.refused("up twice", &lab.lab("up", &[]), &["already exists"]);
    let other = Lab::new(&sb);
    c.refused(
        "a second lab",
        &other.lab("up", &[]),
        &["in use", lab.dir()],
    );
    c.that("a second lab", !other.dir.exists(), || {
        "made its dir".into()
    });
    c.refused("a host it does not have", &lab.lab("env", &["h2"]), &["h2"]);
    c.refused(
        "stop a host it does not have",
        &lab.lab("stop", &["h7"]),
        &["h7"],
    );
    lab.down();
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    c.that("down", left.is_empty(), || format!("left behind: {left:?}"));
    c.finish();
}

#[test]
fn an_interrupted_up_takes_back_what_it_made() {
    if !enabled("an_interrupted_up_takes_back_what_it_made") {
        return;
    }
    let sb = Sandbox::new("intr");
    // Interrupt at a few points of the build; whatever point it reached, nothing stays.
    for delay_ms in [20u64, 60, 120] {
        let lab = Lab::new(&sb);
        let child = sb
            .cmd(rswarm_bin())
            .args(["lab", "up", "--dir", lab.dir()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lab up");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // nsenter execs, so the child is rswarm itself.
        let _ = Command::new("kill")
            .args(["-s", "INT", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("wait");
        if out.status.success() {
            // It finished first: then the lab is complete, and down must clear it.
            lab.down();
        } else if out.status.code().is_none() {
            // Killed by the signal before it had set anything up: nothing may be there.
        } else {
            assert!(
                text(&out.stderr).contains("interrupted"),
                "after {delay_ms} ms: {}",
                text(&out.stderr)
            );
        }
        let left = leftovers(&sb, &lab.id(), &lab.dir);
        assert!(
            left.is_empty(),
            "after {delay_ms} ms, left behind: {left:#?}"
        );
    }
}

/// Builds an OCI layout of busybox-static and pushes it to `$1` (plain HTTP). The same
/// image as `build_busybox_image` in ../shared/acceptance/lib.sh.
const PUSH_BUSYBOX: &str = r#"set -euo pipefail
ref=$1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root=$work/root dir=$work/layout
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$dir/blobs/sha256"
cp "$(command -v busybox)" "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$dir/layer.tar" .
diff=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
gzip -n "$dir/layer.tar"
layer=$(sha256sum "$dir/layer.tar.gz" | cut -d' ' -f1); lsize=$(stat -c %s "$dir/layer.tar.gz")
mv "$dir/layer.tar.gz" "$dir/blobs/sha256/$layer"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >"$dir/config.json"
cfg=$(sha256sum "$dir/config.json" | cut -d' ' -f1); csize=$(stat -c %s "$dir/config.json")
mv "$dir/config.json" "$dir/blobs/sha256/$cfg"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$cfg" "$csize" "$layer" "$lsize" >"$dir/manifest.json"
man=$(sha256sum "$dir/manifest.json" | cut -d' ' -f1); msize=$(stat -c %s "$dir/manifest.json")
mv "$dir/manifest.json" "$dir/blobs/sha256/$man"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$man" "$msize" >"$dir/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
skopeo copy -q --dest-tls-verify=false "oci:$dir:latest" "docker://$ref" >&2
"#;

/// The network namespace of lab host hN.
fn host_ns(lab: &Lab, n: u32) -> String {
    format!("/run/netns/rswlab-{}-h{n}", lab.id())
}

/// `program args...` inside lab host hN's network namespace.
fn on_host(lab: &Lab, n: u32, program: &str, args: &[&str]) -> Output {
    Command::new(nsenter())
        .arg(format!("--net={}", host_ns(lab, n)))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("nsenter")
}

/// What hN's daemon has made of the node's networking: network-namespace mounts under its
/// data dir, and its links and nftables tables in the host's namespace.
fn host_networking(lab: &Lab, n: u32) -> Vec<String> {
    let mut out = Vec::new();
    let data = lab.dir.join(format!("h{n}")).join("data");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(4)) {
        if m.starts_with(&format!("{}/net/", data.display())) {
            out.push(format!("mount {m}"));
        }
    }
    let links = text(&on_host(lab, n, "ip", &["-o", "link", "show"]).stdout);
    for l in links.lines().filter_map(|l| l.split(':').nth(1)) {
        let name = l.trim().split('@').next().unwrap_or("");
        if name.starts_with("rsw") || name.starts_with("gw-") || name.starts_with("vx-") {
            out.push(format!("link {name}"));
        }
    }
    let tables = text(&on_host(lab, n, "nft", &["list", "tables"]).stdout);
    out.extend(tables.lines().map(|t| t.trim().to_owned()));
    out
}

/// `rswarm exec TASK -- CMD...` on h1; the output, if it succeeded.
fn exec(lab: &Lab, service: &str, cmd: &[&str]) -> Result<String, String> {
    let mut a = vec!["exec", service, "--"];
    a.extend_from_slice(cmd);
    let out = lab.on("h1", &a);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "exec {service} {cmd:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

#[test]
fn overlay_networking_spans_the_rack_and_leaves_nothing() {
    if !enabled("overlay_networking_spans_the_rack_and_leaves_nothing") {
        return;
    }
    let sb = Sandbox::new("net");
    let lab = Lab::new(&sb);
    lab.ok("up", &["--nodes", "3", "--managers", "1"]);
    lab.push_busybox();
    let img = "198.18.0.250:5000/busybox:latest";
    let httpd = "mkdir -p /www; hostname > /www/index.html; exec httpd -f -p 80 -h /www";
    let ok = |args: &[&str]| {
        let out = lab.on("h1", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.41.0.0/24",
        "appnet",
    ]);
    ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "appnet",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "node.hostname!=h3",
        img,
        "sh",
        "-c",
        httpd,
    ]);
    ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "client",
        "--network",
        "appnet",
        "--constraint",
        "node.hostname==h3",
        img,
        "sleep",
        "3600",
    ]);
    ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "pub",
        "--publish",
        "8080:80",
        "--constraint",
        "node.hostname==h2",
        img,
        "sh",
        "-c",
        httpd,
    ]);
    for (svc, want) in [("web", 2), ("client", 1), ("pub", 1)] {
        wait_for(RUN, || {
            let n = running_nodes(&lab, svc)?;
            if n.len() == want {
                Ok(())
            } else {
                Err(format!("{svc} running on {n:?}"))
            }
        });
    }
    let svc = lab
        .json("h1", &["service", "inspect", "web"])
        .expect("inspect");
    let vip = svc[0]["endpoint"]["virtual_ips"][0]["addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("web's VIP")
        .to_owned();
    assert!(vip.starts_with("10.41.0."), "{vip}");

    // Names: the VIP for the service, the tasks for tasks.NAME.
    wait_for(Duration::from_secs(30), || {
        let out = exec(&lab, "client", &["nslookup", "web"])?;
        out.contains(&vip).then_some(()).ok_or(out)
    });
    let tasks = exec(&lab, "client", &["nslookup", "tasks.web"]).expect("tasks.web");
    assert_eq!(
        tasks.matches("10.41.0.").count(),
        2,
        "two tasks behind tasks.web: {tasks}"
    );
    // Across hosts through the VIP, balanced over both web tasks (on h1 and h2).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let page = exec(&lab, "client", &["wget", "-qO-", "http://web/"]).expect("wget web");
        seen.insert(page.trim().to_owned());
    }
    assert_eq!(seen.len(), 2, "answers from {seen:?}");
    // The routing mesh: port 8080 answers on h1 and h3, which run no pub task.
    for host in ["198.18.0.11", "198.18.0.13"] {
        wait_for(Duration::from_secs(30), || {
            let out = sb.run(
                "timeout",
                &[
                    "5",
                    "busybox",
                    "wget",
                    "-qO-",
                    &format!("http://{host}:8080/"),
                ],
            );
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{host}:8080: {}", text(&out.stderr)))
        });
    }

    // A node that leaves takes its networking with it.
    assert!(!host_networking(&lab, 3).is_empty(), "h3 has networking");
    let out = lab.on("h3", &["leave"]);
    assert!(out.status.success(), "leave: {}", text(&out.stderr));
    wait_for(Duration::from_secs(30), || {
        let left = host_networking(&lab, 3);
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });

    // Removing the services and the network leaves each host only its egress bridge, its
    // ingress endpoint and its rules (the node's own, for as long as it is in the cluster).
    for s in ["web", "client", "pub"] {
        ok(&["service", "rm", s]);
    }
    ok(&["network", "rm", "appnet"]);
    let nets = lab.json("h1", &["network", "ls"]).expect("network ls");
    let ingress = nets
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "ingress"))
        .and_then(|n| n["id"].as_str())
        .expect("the ingress network")
        .to_owned();
    let ingress_sandbox = format!("/sandboxes/rsw-{}", &ingress[..10]);
    for n in 1..=2 {
        wait_for(Duration::from_secs(30), || {
            let left: Vec<String> = host_networking(&lab, n)
                .into_iter()
                .filter(|x| x.starts_with("mount") && !x.ends_with(&ingress_sandbox))
                .collect();
            left.is_empty()
                .then_some(())
                .ok_or(format!("h{n}: {left:?}"))
        });
    }
    lab.down();
    let left = leftovers(&sb, &lab.id(), &lab.dir);
    assert!(left.is_empty(), "left behind by lab down: {left:#?}");
}
