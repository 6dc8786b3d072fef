//! `rswarm lab`: a rack on one machine, for development, tests, demos and fault drills.
//!
//! `lab up` builds, as root, a switch namespace with a bridge, one network namespace per host
//! (hN at 198.18.0.(10+N)/24) with a veth to the switch, a registry host running Debian's
//! `docker-registry` at 198.18.0.250:5000, and a leg for the machine itself at
//! 198.18.0.254; then one `rswarm daemon` per host inside its namespace (its own data dir,
//! socket, log and containerd namespace under the lab dir, the lab registry as an insecure
//! registry), `init` on h1 and `join` on the others, the first M hosts as managers. The
//! daemons share the machine's containerd (a network namespace does not hide its socket),
//! or one the lab starts when none answers. `lab down` undoes all of it.
//!
//! This is a development tool: it drives iproute2's `ip` (and util-linux's `nsenter --net` to start the
//! daemons and the registry inside their namespaces) and `kill(1)`, rather than adding
//! netlink and syscall crates to the product. Everything it makes is named after a hash of
//! the lab dir ([`layout`]) and recorded in the lab dir ([`ledger`], pid files in
//! [`procs`]), so it only ever stops and removes what it made itself.

mod down;
mod layout;
mod ledger;
mod net;
mod procs;
mod runtime;
mod status;
mod up;

use crate::output::Format;
use anyhow::Context;
use clap::{Args, Subcommand};
use layout::Layout;
use ledger::Ledger;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build a lab: a switch, N hosts with a daemon each, a registry; init and join.
    Up(up::UpArgs),
    /// Remove everything the lab made: namespaces, links, processes, containers, files.
    Down(DirArg),
    /// Show the lab's hosts, addresses, daemons and node roles.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print `export RSWARM_HOST=unix://...` for a host's daemon: eval "$(rswarm lab env h1)".
    Env {
        /// The host: h1, h2, ...
        host: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop hosts' daemons (SIGTERM; --kill for SIGKILL, as a crash). Their containers keep running.
    Stop(HostsArgs),
    /// Start hosts' stopped daemons again (same data dir: they resume their role).
    Start(HostsArgs),
    /// Stop, then start hosts' daemons.
    Restart(HostsArgs),
}

#[derive(Args)]
pub struct DirArg {
    /// The lab's directory: its record, and each host's data dir, socket and log.
    #[arg(long, env = "RSWARM_LAB_DIR", default_value = layout::DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct HostsArgs {
    /// Hosts: h1, h2, ...
    #[arg(required = true)]
    hosts: Vec<String>,
    /// Stop with SIGKILL instead of SIGTERM.
    #[arg(long)]
    kill: bool,
    #[command(flatten)]
    dir: DirArg,
}

pub async fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Up(a) => up::up(a).await,
        LabCommand::Down(d) => down::down(&d.dir).await,
        LabCommand::Status { dir, format } => status::status(&dir.dir, format).await,
        LabCommand::Env { host, dir } => {
            let (l, _) = open(&dir.dir)?;
            let n = l.parse_host(&host)?;
            print(&format!(
                "export RSWARM_HOST=unix://{}\n",
                l.socket(n).display()
            ));
            Ok(())
        }
        LabCommand::Stop(a) => hosts_cmd(a, true, false).await,
        LabCommand::Start(a) => hosts_cmd(a, false, true).await,
        LabCommand::Restart(a) => hosts_cmd(a, true, true).await,
    }
}

/// The lab in `dir`, which must exist.
fn open(dir: &Path) -> anyhow::Result<(Layout, Ledger)> {
    let dir = layout::resolve_dir(dir).with_context(|| format!("lab dir {}", dir.display()))?;
    let path = dir.join("lab.json");
    if !path.exists() {
        anyhow::bail!(
            "no lab in {}: make one with `rswarm lab up --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    let ledger = Ledger::load(&path)?;
    Ok((Layout::new(dir, ledger.nodes), ledger))
}

/// `lab stop|start|restart HOST...`.
async fn hosts_cmd(a: HostsArgs, stop: bool, start: bool) -> anyhow::Result<()> {
    require_root("lab stop/start/restart")?;
    let (l, ledger) = open(&a.dir.dir)?;
    let hosts = a
        .hosts
        .iter()
        .map(|h| l.parse_host(h))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    for &n in &hosts {
        let name = Layout::host_name(n);
        if stop {
            let signal = if a.kill { "KILL" } else { "TERM" };
            match procs::stop(&l.daemon_pid(n), signal, Duration::from_secs(15)).await? {
                Some(pid) => print(&format!(
                    "{name}: daemon stopped (pid {pid}, SIG{signal})\n"
                )),
                None if !start => print(&format!("{name}: daemon was not running\n")),
                None => {}
            }
        }
        if start {
            if let Some(pid) = procs::alive(&l.daemon_pid(n)) {
                print(&format!("{name}: daemon already running (pid {pid})\n"));
                continue;
            }
            let mut child = up::start_daemon(&l, &ledger, n)?;
            up::wait_socket(&l, n, &mut child, Duration::from_secs(30)).await?;
            print(&format!("{name}: daemon started (pid {})\n", child.id()));
        }
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
pub fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `what` needs root: namespaces, links and other users' processes are root's.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid == Some(0) {
        Ok(())
    } else {
        anyhow::bail!("{what} needs root (network namespaces and links): run it with sudo")
    }
}

/// Whether `program` is an executable file on `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(program))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The programs the lab runs, with the Debian packages that have them.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("kill", "procps"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("nft", "nftables"),
];

/// Refuses, in one line naming the packages, when a program the lab runs is missing.
pub fn require_tools() -> anyhow::Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS.iter().copied().filter(|(p, _)| !on_path(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, k)| *k).collect();
    anyhow::bail!(
        "the lab needs {} (not found on PATH): apt-get install {}",
        programs.join(", "),
        packages.join(" ")
    )
}
