//! `raft_bench`: committed writes per second and commit latency (p50/p99) of the control
//! plane's whole write path: client → control API Unix socket → manager → Raft across
//! managers with the fsync'd redb log → applied to the store → reply.
//!
//! A benchmark, not a test: it starts its own `rswarm daemon` processes on 127.0.0.1,
//! drives them with the `rswarm` CLI to build a cluster, then sends `UpdateNode` RPCs that
//! add a label (`bench=<n>`) to nodes, one at a time and with many in flight, and prints a
//! table. Run it on a release build:
//!
//! ```text
//! cargo build --release -p rswarm -p rswarm-tests
//! target/release/raft_bench --follower
//! ```
//!
//! How the cluster is made, and why:
//! - `m1` inits (`--dispatcher-heartbeat 5s`); `--workers N` worker daemons join (default:
//!   the largest concurrency), then are stopped and left to be marked down. Their node
//!   objects stay in the store and are the write targets: in-flight slot `i` always updates
//!   worker `i`, so concurrent writes never touch the same object (`UpdateNode` is a
//!   read-modify-write with optimistic versions: two in-flight updates of one node make the
//!   second one retry). Stopping them keeps their agent sessions from adding per-write work
//!   on the leader (see `--fanout` to measure that cost).
//! - the single-manager figures are taken first, then `m2` and `m3` join as managers and the
//!   three-manager figures are taken on the leader's socket (and, with `--follower`, on a
//!   follower's, which forwards each write to the leader).
//! - a baseline is measured on the same disk in the same run: `fsync` of a small append to a
//!   plain file, and a redb commit of one small write with `Durability::Immediate` (what
//!   the Raft log store does for each append).
//!
//! Every daemon it starts is killed, and its temp dir removed, when it ends, fails or is
//! interrupted (Ctrl-C / SIGTERM).

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use rswarm_proto::pb;
use rswarm_proto::pb::control_client::ControlClient;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
usage: raft_bench [options]

  --rswarm PATH              the rswarm binary (default target/release/rswarm, else the
                             rswarm beside this binary)
  --writes N                 measured writes per setting and run (default 5000)
  --warmup N                 writes before each measured run, not counted (default 500)
  --concurrency LIST         in-flight RPCs, comma-separated (default 1,16,64)
  --runs N                   runs of each setting; the summary shows medians (default 3)
  --workers N                worker nodes to join and use as write targets
                             (default: the largest concurrency)
  --channels N               gRPC channels (connections) to the socket (default 1)
  --base-port P              first cluster port on 127.0.0.1 (default 24871)
  --no-single                skip the single-manager figures
  --follower                 also send writes to a follower (forwarded to the leader)
  --follower-concurrency L   concurrency list for --follower (default 1,16)
  --contended                also run 16 and the largest concurrency against the 3
                             manager nodes only (writes collide; the manager retries)
  --fanout                   also run with the workers' agents live (one session each)
  --baseline-writes N        fsync/redb baseline commits (default 2000)
  --dir DIR                  parent of the temp dir (default /tmp; same disk as /work here)
  --keep                     keep the temp dir (daemon logs) afterwards
";

#[derive(Debug, Clone)]
struct Opts {
    rswarm: PathBuf,
    writes: usize,
    warmup: usize,
    concurrency: Vec<usize>,
    runs: usize,
    workers: Option<usize>,
    channels: usize,
    base_port: u16,
    single: bool,
    follower: bool,
    follower_concurrency: Vec<usize>,
    contended: bool,
    fanout: bool,
    baseline_writes: usize,
    dir: PathBuf,
    keep: bool,
}

fn parse_list(s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid list {s:?}: expected numbers like 1,16,64"))?;
    if v.is_empty() || v.contains(&0) {
        bail!("invalid list {s:?}: numbers must be at least 1");
    }
    Ok(v)
}

fn parse_opts() -> Result<Opts> {
    let default_rswarm = {
        let p = PathBuf::from("target/release/rswarm");
        if p.exists() {
            p
        } else {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("rswarm")))
                .filter(|p| p.exists())
                .unwrap_or(p)
        }
    };
    let mut o = Opts {
        rswarm: default_rswarm,
        writes: 5000,
        warmup: 500,
        concurrency: vec![1, 16, 64],
        runs: 3,
        workers: None,
        channels: 1,
        base_port: 24871,
        single: true,
        follower: false,
        follower_concurrency: vec![1, 16],
        contended: false,
        fanout: false,
        baseline_writes: 2000,
        dir: PathBuf::from("/tmp"),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow!("{name} needs a value\n\n{USAGE}"))
        };
        let num = |name: &str, v: String| -> Result<usize> {
            v.parse()
                .with_context(|| format!("{name}: {v:?} is not a number"))
        };
        match a.as_str() {
            "--rswarm" => o.rswarm = PathBuf::from(val(&a)?),
            "--writes" => o.writes = num(&a, val(&a)?)?,
            "--warmup" => o.warmup = num(&a, val(&a)?)?,
            "--concurrency" => o.concurrency = parse_list(&val(&a)?)?,
            "--runs" => o.runs = num(&a, val(&a)?)?.max(1),
            "--workers" => o.workers = Some(num(&a, val(&a)?)?),
            "--channels" => o.channels = num(&a, val(&a)?)?.max(1),
            "--base-port" => {
                let v = val(&a)?;
                o.base_port = v.parse().with_context(|| format!("--base-port {v:?}"))?;
            }
            "--no-single" => o.single = false,
            "--follower" => o.follower = true,
            "--follower-concurrency" => o.follower_concurrency = parse_list(&val(&a)?)?,
            "--contended" => o.contended = true,
            "--fanout" => o.fanout = true,
            "--baseline-writes" => o.baseline_writes = num(&a, val(&a)?)?.max(1),
            "--dir" => o.dir = PathBuf::from(val(&a)?),
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if o.writes == 0 {
        bail!("--writes must be at least 1");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Processes and cleanup

struct Procs {
    root: PathBuf,
    keep: bool,
    children: Vec<(String, Child)>,
    done: bool,
}

/// Owns every daemon this bench starts and its temp dir; cleans up once, from `Drop` or
/// from the signal handler.
#[derive(Clone)]
struct Guard(Arc<Mutex<Procs>>);

impl Guard {
    fn new(root: PathBuf, keep: bool) -> Self {
        Guard(Arc::new(Mutex::new(Procs {
            root,
            keep,
            children: Vec::new(),
            done: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, name: &str, child: Child) {
        self.lock().children.push((name.to_owned(), child));
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.lock()
            .children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Kills (SIGKILL) the daemon started as `name`, by its pid.
    fn kill(&self, name: &str) {
        let mut p = self.lock();
        if let Some(i) = p.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = p.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cleanup(&self) {
        let mut p = self.lock();
        if p.done {
            return;
        }
        p.done = true;
        for (_, c) in p.children.iter_mut() {
            let _ = c.kill();
        }
        for (_, mut c) in p.children.drain(..) {
            let _ = c.wait();
        }
        if p.keep {
            eprintln!("kept {}", p.root.display());
        } else {
            let _ = fs::remove_dir_all(&p.root);
        }
    }
}

struct CleanupOnDrop(Guard);

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

#[derive(Debug, Clone)]
struct Daemon {
    name: String,
    dir: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Daemon {
    fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
}

struct Bench {
    opts: Opts,
    guard: Guard,
    root: PathBuf,
}

impl Bench {
    fn daemon(&self, name: &str, port: u16) -> Daemon {
        let dir = self.root.join(name);
        Daemon {
            name: name.to_owned(),
            sock: dir.join("rswarm.sock"),
            dir,
            port,
        }
    }

    /// Starts (or restarts, on the same data dir) the daemon `d` and waits for its socket.
    fn start(&self, d: &Daemon) -> Result<()> {
        fs::create_dir_all(&d.dir).with_context(|| format!("create {}", d.dir.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.log())
            .with_context(|| format!("open {}", d.log().display()))?;
        let child = Command::new(&self.opts.rswarm)
            .arg("daemon")
            .arg("--data-dir")
            .arg(d.dir.join("data"))
            .arg("--socket")
            .arg(&d.sock)
            .arg("--listen-addr")
            .arg(d.addr())
            .arg("--advertise-addr")
            .arg(d.addr())
            .arg("--hostname")
            .arg(&d.name)
            // No containerd is needed for control-plane writes; never touch the machine's.
            .arg("--containerd")
            .arg(d.dir.join("no-containerd.sock"))
            .arg("--containerd-namespace")
            .arg("rswarm-bench")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} daemon", self.opts.rswarm.display()))?;
        self.guard.add(&d.name, child);
        let sock = d.sock.clone();
        wait_until(
            &format!("{}'s control socket", d.name),
            Duration::from_secs(20),
            || Ok(std::os::unix::net::UnixStream::connect(&sock).is_ok()),
        )
    }

    fn cli(&self, d: &Daemon, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.opts.rswarm)
            .arg("-H")
            .arg(d.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", self.opts.rswarm.display()))?;
        if !out.status.success() {
            bail!(
                "rswarm {} on {}: {}",
                args.join(" "),
                d.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn node_ls(&self, d: &Daemon) -> Result<Vec<Value>> {
        let out = self.cli(d, &["node", "ls", "--format", "json"])?;
        match serde_json::from_str(&out).context("parse node ls --format json")? {
            Value::Array(a) => Ok(a),
            other => bail!("node ls --format json printed {other}"),
        }
    }

    /// Joins `ds` with `token` through `via`, a few at a time.
    fn join_all(&self, ds: &[Daemon], token: &str, via: &Daemon) -> Result<()> {
        for chunk in ds.chunks(8) {
            let mut running = Vec::new();
            for d in chunk {
                let child = Command::new(&self.opts.rswarm)
                    .arg("-H")
                    .arg(d.host())
                    .args(["join", "--token", token, &via.addr()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("run rswarm join")?;
                running.push((d, child));
            }
            for (d, child) in running {
                let out = child.wait_with_output().context("wait for rswarm join")?;
                if !out.status.success() {
                    bail!(
                        "rswarm join on {}: {}",
                        d.name,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        Ok(())
    }
}

/// Polls `f` every 100 ms until it says yes or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow!("timed out waiting for {what}"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------
// Measurements

#[derive(Debug, Clone)]
struct Row {
    setting: String,
    concurrency: usize,
    writes: usize,
    secs: f64,
    lat: Vec<Duration>,
    errors: usize,
    /// Raft log entries committed per successful write (from the versions the writes got).
    entries_per_write: Option<f64>,
    /// CPU use in % of one core: leader, the other managers together, this bench.
    cpu: Option<(f64, f64, f64)>,
    note: String,
}

impl Row {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        percentile(&self.lat, p).as_secs_f64() * 1e3
    }
}

/// The `p` quantile (0..=1) of sorted `v`, nearest rank.
fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fsync_baseline(dir: &Path, n: usize) -> Result<Row> {
    let path = dir.join("fsync-baseline.dat");
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let buf = [0x5au8; 256];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(&path);
    lat.sort();
    Ok(Row {
        setting: "baseline: write 256 B + fdatasync".into(),
        concurrency: 1,
        writes: n,
        secs,
        lat,
        errors: 0,
        entries_per_write: None,
        cpu: None,
        note: String::new(),
    })
}

fn redb_baseline(dir: &Path, n: usize) -> Result<Row> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let path = dir.join("redb-baseline.redb");
    let db = redb::Database::create(&path).with_context(|| format!("create {}", path.display()))?;
    let value = [0x5au8; 256];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n as u64 {
        let t = Instant::now();
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = txn.open_table(T)?;
            table.insert(i, value.as_slice())?;
        }
        txn.commit()?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    drop(db);
    let _ = fs::remove_file(&path);
    lat.sort();
    Ok(Row {
        setting: "baseline: redb commit, 1 x 256 B, Immediate".into(),
        concurrency: 1,
        writes: n,
        secs,
        lat,
        errors: 0,
        entries_per_write: None,
        cpu: None,
        note: String::new(),
    })
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

async fn connect(sock: &Path) -> Result<ControlClient<Channel>> {
    let p = sock.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://rswarm.sock")?
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .with_context(|| format!("connect to {}", sock.display()))?;
    Ok(ControlClient::new(channel))
}

struct LoadOut {
    lat: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    max_version: u64,
    elapsed: Duration,
}

/// Sends `n` label updates with `conc` in flight; in-flight slot `i` updates
/// `targets[i % targets.len()]`, over `clients[i % clients.len()]`.
async fn load(
    clients: &[ControlClient<Channel>],
    targets: &[String],
    conc: usize,
    n: usize,
    tag: &str,
) -> Result<LoadOut> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let max_version = Arc::new(AtomicU64::new(0));
    let error_limit = (n / 20).max(20);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..conc {
        let mut client = clients[i % clients.len()].clone();
        let node = targets[i % targets.len()].clone();
        let (next, errors, max_version) = (next.clone(), errors.clone(), max_version.clone());
        let tag = tag.to_owned();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(n / conc + 1);
            let mut first_error = None;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n || errors.load(Ordering::Relaxed) > error_limit {
                    break;
                }
                let req = pb::UpdateNodeRequest {
                    node: node.clone(),
                    label_add: HashMap::from([("bench".to_owned(), format!("{tag}{k}"))]),
                    ..Default::default()
                };
                let t = Instant::now();
                match client.update_node(req).await {
                    Ok(resp) => {
                        lat.push(t.elapsed());
                        let v = resp
                            .into_inner()
                            .node
                            .and_then(|n| n.meta)
                            .map_or(0, |m| m.version);
                        max_version.fetch_max(v, Ordering::Relaxed);
                    }
                    Err(s) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                    }
                }
            }
            (lat, first_error)
        });
    }
    let mut lat = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        let (l, e) = r.context("load task panicked")?;
        lat.extend(l);
        if first_error.is_none() {
            first_error = e;
        }
    }
    let elapsed = start.elapsed();
    lat.sort();
    Ok(LoadOut {
        lat,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        max_version: max_version.load(Ordering::Relaxed),
        elapsed,
    })
}

/// What a measured setting runs against.
struct Target<'a> {
    setting: String,
    /// The daemon whose socket receives the writes.
    entry: &'a Daemon,
    leader: &'a Daemon,
    managers: &'a [Daemon],
    targets: &'a [String],
}

impl Bench {
    fn leader_of(&self, via: &Daemon, managers: &[Daemon]) -> Result<Option<Daemon>> {
        let rows = self.node_ls(via)?;
        Ok(rows
            .iter()
            .find(|r| r["leader"].as_bool() == Some(true))
            .and_then(|r| managers.iter().find(|d| d.name == field(r, "hostname")))
            .cloned())
    }

    fn measure(
        &self,
        rt: &tokio::runtime::Runtime,
        t: &Target<'_>,
        conc: usize,
        run: usize,
    ) -> Result<Row> {
        let tck = clock_ticks();
        let clients = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..self.opts.channels.min(conc) {
                v.push(connect(&t.entry.sock).await?);
            }
            anyhow::Ok(v)
        })?;
        let warm = if self.opts.warmup > 0 {
            let w = rt.block_on(load(
                &clients,
                t.targets,
                conc,
                self.opts.warmup,
                &format!("w{run}-"),
            ))?;
            if w.errors > 0 {
                eprintln!(
                    "  warmup: {} errors, first: {}",
                    w.errors,
                    w.first_error.unwrap_or_default()
                );
            }
            Some(w.max_version)
        } else {
            None
        };
        let pids: Vec<(bool, Option<u32>)> = t
            .managers
            .iter()
            .map(|d| (d.name == t.leader.name, self.guard.pid(&d.name)))
            .collect();
        let sample = || -> (u64, u64, u64) {
            let mut l = 0;
            let mut f = 0;
            for (is_leader, pid) in &pids {
                let c = pid.and_then(cpu_ticks).unwrap_or(0);
                if *is_leader {
                    l += c;
                } else {
                    f += c;
                }
            }
            (l, f, cpu_ticks(std::process::id()).unwrap_or(0))
        };
        let before = sample();
        let out = rt.block_on(load(
            &clients,
            t.targets,
            conc,
            self.opts.writes,
            &format!("r{run}-"),
        ))?;
        let after = sample();
        let secs = out.elapsed.as_secs_f64();
        let pct = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / tck / secs * 100.0;
        let writes = out.lat.len();
        let entries_per_write = match (warm, writes) {
            (Some(w), n) if n > 0 && out.max_version > w => {
                Some((out.max_version - w) as f64 / n as f64)
            }
            _ => None,
        };
        let mut note = String::new();
        if out.errors > 0 {
            note = format!("first error: {}", out.first_error.unwrap_or_default());
        }
        if out.errors > (self.opts.writes / 20).max(20) {
            eprintln!("  aborted: {note}");
        }
        Ok(Row {
            setting: t.setting.clone(),
            concurrency: conc,
            writes,
            secs,
            lat: out.lat,
            errors: out.errors,
            entries_per_write,
            cpu: Some((
                pct(before.0, after.0),
                pct(before.1, after.1),
                pct(before.2, after.2),
            )),
            note,
        })
    }

    /// Runs every concurrency in `concs`, `runs` times each, checking the leader stays put.
    fn series(
        &self,
        rt: &tokio::runtime::Runtime,
        t: &Target<'_>,
        concs: &[usize],
        rows: &mut Vec<Row>,
    ) -> Result<()> {
        for &c in concs {
            for run in 0..self.opts.runs {
                let mut row = self.measure(rt, t, c, run)?;
                let now = self.leader_of(t.entry, t.managers)?;
                if now.as_ref().map(|d| d.name.as_str()) != Some(t.leader.name.as_str()) {
                    row.note.push_str(" LEADER CHANGED during the run");
                }
                eprintln!("  {}", line(&row));
                rows.push(row);
            }
        }
        Ok(())
    }
}

fn line(r: &Row) -> String {
    format!(
        "{} c={} writes={} {:.2}s {:.0}/s p50={:.2}ms p99={:.2}ms errors={} {}",
        r.setting,
        r.concurrency,
        r.writes,
        r.secs,
        r.rate(),
        r.pct(0.5),
        r.pct(0.99),
        r.errors,
        r.note
    )
}

fn print_tables(rows: &[Row], runs: usize) {
    println!("\n### All runs\n");
    println!("| setting | conc | writes | seconds | writes/s | p50 ms | p99 ms | max ms | entries/write | CPU % leader / other mgrs / bench | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for r in rows {
        let cpu = r.cpu.map_or("-".to_owned(), |(l, f, b)| {
            format!("{l:.0} / {f:.0} / {b:.0}")
        });
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.setting,
            r.concurrency,
            r.writes,
            r.secs,
            r.rate(),
            r.pct(0.5),
            r.pct(0.99),
            r.pct(1.0),
            r.entries_per_write
                .map_or("-".to_owned(), |e| format!("{e:.2}")),
            cpu,
            format!("{} {}", r.errors, r.note.trim()).trim(),
        );
    }

    // Medians per (setting, concurrency), in first-seen order.
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let k = (r.setting.clone(), r.concurrency);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    println!("\n### Medians of {runs} run(s) (baselines: of the start and end measurements)\n");
    println!("| setting | conc | writes | writes/s | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut med: Vec<(String, usize, f64, f64, f64)> = Vec::new();
    for (s, c) in &keys {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| &r.setting == s && r.concurrency == *c)
            .collect();
        let rate = median(rs.iter().map(|r| r.rate()).collect());
        let p50 = median(rs.iter().map(|r| r.pct(0.5)).collect());
        let p99 = median(rs.iter().map(|r| r.pct(0.99)).collect());
        let writes = rs.first().map_or(0, |r| r.writes);
        println!("| {s} | {c} | {writes} | {rate:.0} | {p50:.2} | {p99:.2} |");
        med.push((s.clone(), *c, rate, p50, p99));
    }

    let find = |prefix: &str, c: usize| {
        med.iter()
            .find(|(s, cc, ..)| s.starts_with(prefix) && *cc == c)
            .map(|m| m.2)
    };
    let redb = find("baseline: redb", 1);
    let fsync = find("baseline: write", 1);
    println!("\n### Ratios (medians)\n");
    for (s, c, rate, _, _) in &med {
        if s.starts_with("baseline") {
            continue;
        }
        let mut parts = Vec::new();
        if let Some(b) = redb {
            parts.push(format!("{:.2} x redb commits/s", rate / b));
        }
        if let Some(b) = fsync {
            parts.push(format!("{:.2} x fdatasyncs/s", rate / b));
        }
        if s.starts_with("3 managers") {
            if let Some(b) = find("1 manager", *c) {
                parts.push(format!("{:.2} x 1 manager", rate / b));
            }
        }
        println!("- {s}, c={c}: {rate:.0} writes/s = {}", parts.join(", "));
    }
}

// ---------------------------------------------------------------------------------------

fn run(b: &Bench, rt: &tokio::runtime::Runtime) -> Result<Vec<Row>> {
    let o = &b.opts;
    if !o.rswarm.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p rswarm) or pass --rswarm PATH",
            o.rswarm.display()
        );
    }
    let max_conc = o.concurrency.iter().copied().max().unwrap_or(1);
    let workers = o.workers.unwrap_or(max_conc);
    let mut rows = Vec::new();

    eprintln!("baselines on {} ...", b.root.display());
    rows.push(fsync_baseline(&b.root, o.baseline_writes)?);
    rows.push(redb_baseline(&b.root, o.baseline_writes)?);
    for r in &rows {
        eprintln!("  {}", line(r));
    }

    // The first manager and the workers.
    let port = |i: usize| -> Result<u16> {
        u16::try_from(usize::from(o.base_port) + i).context("--base-port too high")
    };
    let managers: Vec<Daemon> = (0..3)
        .map(|i| Ok(b.daemon(&format!("m{}", i + 1), port(i)?)))
        .collect::<Result<_>>()?;
    let worker_ds: Vec<Daemon> = (0..workers)
        .map(|i| Ok(b.daemon(&format!("w{:02}", i + 1), port(3 + i)?)))
        .collect::<Result<_>>()?;
    let m1 = &managers[0];
    eprintln!("starting m1 and {workers} workers ...");
    b.start(m1)?;
    b.cli(
        m1,
        &[
            "init",
            "--dispatcher-heartbeat",
            "5s",
            "--advertise-addr",
            &m1.addr(),
        ],
    )?;
    let worker_token = b
        .cli(m1, &["join-token", "worker", "-q"])?
        .trim()
        .to_owned();
    let manager_token = b
        .cli(m1, &["join-token", "manager", "-q"])?
        .trim()
        .to_owned();
    for w in &worker_ds {
        b.start(w)?;
    }
    b.join_all(&worker_ds, &worker_token, m1)?;
    wait_until(
        &format!("1 manager and {workers} workers ready"),
        Duration::from_secs(120),
        || {
            let rows = b.node_ls(m1)?;
            Ok(rows.len() == 1 + workers && rows.iter().all(|r| field(r, "state") == "ready"))
        },
    )?;
    let ids: HashMap<String, String> = b
        .node_ls(m1)?
        .iter()
        .map(|r| (field(r, "hostname").to_owned(), field(r, "id").to_owned()))
        .collect();
    let worker_ids: Vec<String> = worker_ds
        .iter()
        .map(|w| {
            ids.get(&w.name)
                .cloned()
                .context("worker missing in node ls")
        })
        .collect::<Result<_>>()?;
    let targets: Vec<String> = if worker_ids.is_empty() {
        vec![ids.get("m1").cloned().context("m1 missing in node ls")?]
    } else {
        worker_ids.clone()
    };
    if targets.len() < max_conc {
        eprintln!(
            "note: {} target nodes for concurrency {max_conc}: some in-flight writes share a node and will retry",
            targets.len()
        );
    }

    // Stop the workers: their node objects stay as write targets, without live sessions.
    let stop_workers = || -> Result<()> {
        for w in &worker_ds {
            b.guard.kill(&w.name);
        }
        wait_until(
            "the stopped workers to be marked down",
            Duration::from_secs(90),
            || {
                let rows = b.node_ls(m1)?;
                Ok(rows
                    .iter()
                    .filter(|r| field(r, "role") == "worker")
                    .all(|r| field(r, "state") == "down"))
            },
        )
    };
    if workers > 0 {
        eprintln!("stopping the workers and waiting for them to be marked down ...");
        stop_workers()?;
    }

    if o.single {
        eprintln!("1 manager:");
        let t = Target {
            setting: "1 manager, leader socket".into(),
            entry: m1,
            leader: m1,
            managers: &managers[..1],
            targets: &targets,
        };
        b.series(rt, &t, &o.concurrency, &mut rows)?;
    }

    eprintln!("joining m2 and m3 as managers ...");
    for m in &managers[1..] {
        b.start(m)?;
        b.join_all(std::slice::from_ref(m), &manager_token, m1)?;
    }
    wait_until("3 ready managers", Duration::from_secs(60), || {
        let rows = b.node_ls(m1)?;
        let ready = rows
            .iter()
            .filter(|r| {
                field(r, "role") == "manager"
                    && field(r, "state") == "ready"
                    && matches!(field(r, "manager_status"), "leader" | "reachable")
            })
            .count();
        Ok(ready == 3)
    })?;
    let leader = b
        .leader_of(m1, &managers)?
        .context("no leader among the managers")?;
    let follower = managers
        .iter()
        .find(|d| d.name != leader.name)
        .context("no follower")?
        .clone();
    eprintln!("3 managers: leader {}", leader.name);
    let t = Target {
        setting: "3 managers, leader socket".into(),
        entry: &leader,
        leader: &leader,
        managers: &managers,
        targets: &targets,
    };
    b.series(rt, &t, &o.concurrency, &mut rows)?;

    if o.follower {
        let t = Target {
            setting: format!("3 managers, follower socket ({})", follower.name),
            entry: &follower,
            leader: &leader,
            managers: &managers,
            targets: &targets,
        };
        b.series(rt, &t, &o.follower_concurrency, &mut rows)?;
    }

    if o.contended {
        let manager_ids: Vec<String> = b
            .node_ls(m1)?
            .iter()
            .filter(|r| field(r, "role") == "manager")
            .map(|r| field(r, "id").to_owned())
            .collect();
        let t = Target {
            setting: "3 managers, leader socket, CONTENDED: 3 target nodes".into(),
            entry: &leader,
            leader: &leader,
            managers: &managers,
            targets: &manager_ids,
        };
        b.series(rt, &t, &[max_conc.min(16), max_conc], &mut rows)?;
    }

    if o.fanout && workers > 0 {
        eprintln!("restarting the {workers} workers (live agent sessions) ...");
        for w in &worker_ds {
            b.start(w)?;
        }
        wait_until("every node ready", Duration::from_secs(120), || {
            let rows = b.node_ls(m1)?;
            Ok(rows.len() == 3 + workers && rows.iter().all(|r| field(r, "state") == "ready"))
        })?;
        let t = Target {
            setting: format!("3 managers, leader socket, {workers} LIVE workers"),
            entry: &leader,
            leader: &leader,
            managers: &managers,
            targets: &targets,
        };
        b.series(rt, &t, &o.concurrency, &mut rows)?;
    }

    eprintln!("baselines again ...");
    let end = [
        fsync_baseline(&b.root, o.baseline_writes)?,
        redb_baseline(&b.root, o.baseline_writes)?,
    ];
    for r in end {
        eprintln!("  {}", line(&r));
        rows.push(r);
    }
    Ok(rows)
}

fn tail(path: &Path, n: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(64);
        }
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000);
    let root = opts
        .dir
        .join(format!("raft_bench.{}.{stamp}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&root) {
        eprintln!("error: create {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let guard = Guard::new(root.clone(), opts.keep);
    let _cleanup = CleanupOnDrop(guard.clone());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C or SIGTERM: kill the daemons and remove the temp dir, then exit.
    {
        let guard = guard.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: stopping the daemons");
            guard.cleanup();
            std::process::exit(130);
        });
    }
    let bench = Bench {
        opts: opts.clone(),
        guard,
        root: root.clone(),
    };
    eprintln!(
        "raft_bench: {} writes (+{} warmup) per run, concurrency {:?}, {} run(s), rswarm {}",
        opts.writes,
        opts.warmup,
        opts.concurrency,
        opts.runs,
        opts.rswarm.display()
    );
    match run(&bench, &rt) {
        Ok(rows) => {
            print_tables(&rows, opts.runs);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            for m in ["m1", "m2", "m3"] {
                let log = root.join(m).join("daemon.log");
                if log.exists() {
                    eprintln!("--- last lines of {m}'s log:\n{}", tail(&log, 15));
                }
            }
            ExitCode::FAILURE
        }
    }
}
