//! One `rswarm daemon` process per [`Daemon`], and the client commands that talk to it.

// Real time is right here: deadlines on other processes, which a paused clock cannot move.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use crate::binary::rswarm_bin;
use crate::wait::wait_for;
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The dispatcher heartbeat the tests' clusters use: a node is down after 3 missed beats.
pub const HEARTBEAT: &str = "1s";

/// How long a daemon gets to accept connections on its socket after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// No client command should take longer; a hung one fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of each daemon's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// An `rswarm daemon` with its own temporary directory (data dir, control socket, log) and
/// cluster port `127.0.0.1:PORT`, hostname `NAME`, containerd namespace `rswtest-NAME` (or
/// the one given to [`Daemon::start_with`]).
/// Dropping it kills the process (SIGKILL) and waits for it; if the thread is panicking,
/// the tail of the daemon's log is printed first. Set `RSWARM_TEST_KEEP=1` to keep the
/// directories of a failed test.
pub struct Daemon {
    name: String,
    port: u16,
    dir: Option<TempDir>,
    child: Option<Child>,
    starts: u32,
    /// `--containerd-namespace`: `rswtest-NAME` unless [`Daemon::start_with`] says otherwise.
    namespace: String,
    /// More `rswarm daemon` flags, given on every start (see [`Daemon::start_with`]).
    extra_args: Vec<String>,
}

/// Runs `rswarm -H HOST ARGS...` and returns its output; panics if it does not finish
/// within 90 s. `RSWARM_HOST` is removed from its environment.
pub fn client(host: &str, args: &[&str]) -> Output {
    let mut child = Command::new(rswarm_bin())
        .arg("-H")
        .arg(host)
        .args(args)
        .env_remove("RSWARM_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", rswarm_bin().display()));
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
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
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > CLIENT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`rswarm {}` did not finish within {CLIENT_TIMEOUT:?}",
                    args.join(" ")
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for `rswarm {}`: {e}", args.join(" ")),
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn ok_output(what: &str, out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Daemon {
    /// Starts `rswarm daemon` for a node called `name` on cluster port `127.0.0.1:port` and
    /// waits until its control socket accepts connections.
    pub fn start(name: &str, port: u16) -> Daemon {
        Daemon::start_with(name, port, &format!("rswtest-{name}"), &[])
    }

    /// Like [`Daemon::start`], with containerd namespace `namespace` and `extra_args` added
    /// to the daemon's command line (e.g. `--insecure-registry 127.0.0.1:5055`), on this
    /// start and every later one. The caller removes what it makes in that namespace.
    pub fn start_with(name: &str, port: u16, namespace: &str, extra_args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rswtest-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let mut d = Daemon {
            name: name.to_owned(),
            port,
            dir: Some(dir),
            child: None,
            starts: 0,
            namespace: namespace.to_owned(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        d.spawn();
        d
    }

    /// The containerd namespace this daemon runs its containers in.
    pub fn containerd_namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the daemon")
            .path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("rswarm.sock")
    }

    /// The `-H` value for this daemon: `unix:///.../rswarm.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("daemon.log")
    }

    /// The PID of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `n` lines of the daemon's log (all of its starts).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(self.log_path()).is_ok_and(|t| t.contains(needle))
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "daemon {} is already running",
            self.name
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the daemon log");
        let _ = writeln!(
            log,
            "===== test harness: start #{} of {}",
            self.starts, self.name
        );
        let err_log = log.try_clone().expect("clone the log file handle");
        let addr = self.addr();
        let child = Command::new(rswarm_bin())
            .arg("daemon")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--socket")
            .arg(self.socket())
            .args(["--listen-addr", &addr, "--advertise-addr", &addr])
            .args(["--hostname", &self.name])
            .args(["--containerd-namespace", &self.namespace])
            // Several test daemons share the machine's network namespace: no node
            // networking there (the lab tests have it, one namespace per host).
            .arg("--no-networking")
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .env_remove("RSWARM_HOST")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", rswarm_bin().display()));
        self.child = Some(child);
        // Something must accept on the socket: a stale file left by a killed daemon does not.
        let start = Instant::now();
        let sock = self.socket();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "daemon {} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if UnixStream::connect(&sock).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "daemon {} did not accept on {} within {START_TIMEOUT:?}; log:\n{}",
                self.name,
                sock.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon gracefully (SIGTERM; SIGKILL after 15 s) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        // std has no SIGTERM; `kill` with this child's own PID.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "daemon {} ignored SIGTERM for {STOP_TIMEOUT:?}: killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again (after [`Daemon::stop`] or [`Daemon::kill9`]) on the same
    /// data dir, socket and port.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops the daemon gracefully and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs a client command against this daemon (`rswarm -H unix://SOCK ARGS...`).
    pub fn run(&self, args: &[&str]) -> Output {
        client(&self.host(), args)
    }

    /// Runs a client command; its stdout, or an error with its stderr.
    pub fn try_ok(&self, args: &[&str]) -> Result<String, String> {
        ok_output(
            &format!("{}: rswarm {}", self.name, args.join(" ")),
            &self.run(args),
        )
    }

    /// Runs a client command that must succeed; its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.try_ok(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ARGS... --format json` and parses stdout, which must be one JSON value.
    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.try_ok(&a)?;
        serde_json::from_str(&out).map_err(|e| {
            format!(
                "{}: rswarm {}: stdout is not one JSON value ({e}): {out}",
                self.name,
                a.join(" ")
            )
        })
    }

    /// Runs `ARGS... --format json`, which must succeed, and parses stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        self.try_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The rows of `node ls --format json` as seen by this daemon.
    pub fn nodes(&self) -> Result<Vec<Value>, String> {
        match self.try_json(&["node", "ls"])? {
            Value::Array(rows) => Ok(rows),
            other => Err(format!("node ls printed a non-array: {other}")),
        }
    }

    /// `rswarm init --advertise-addr 127.0.0.1:PORT --dispatcher-heartbeat 1s`.
    #[track_caller]
    pub fn init(&self) {
        self.ok(&[
            "init",
            "--advertise-addr",
            &self.addr(),
            "--dispatcher-heartbeat",
            HEARTBEAT,
        ]);
    }

    /// The current join token for `role` (worker or manager).
    #[track_caller]
    pub fn join_token(&self, role: &str) -> String {
        self.ok(&["join-token", role, "-q"]).trim().to_owned()
    }

    /// `rswarm join --token TOKEN MANAGER_ADDR` on this daemon; it must succeed.
    #[track_caller]
    pub fn join(&self, token: &str, manager: &Daemon) {
        self.ok(&["join", "--token", token, &manager.addr()]);
    }

    /// Waits until this daemon, a manager, lists `n` ready nodes.
    #[track_caller]
    pub fn wait_ready(&self, n: usize, timeout: Duration) {
        wait_for(timeout, || {
            let rows = self.nodes()?;
            crate::nodes::expect_ready(&rows, n)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        self.kill9();
        if panicking {
            eprintln!(
                "----- daemon {} (port {}) log, last {LOG_TAIL_LINES} lines: {}\n{}\n-----",
                self.name,
                self.port,
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
            if std::env::var_os("RSWARM_TEST_KEEP").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept {}", dir.keep().display());
                }
            }
        }
    }
}
