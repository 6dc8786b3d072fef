use crate::daemon::config::{parse_addr, DaemonConfig, DEFAULT_PORT};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Args)]
pub struct DaemonArgs {
    /// Where the node keeps its state.
    #[arg(long, default_value = "/var/lib/rswarm")]
    data_dir: PathBuf,
    /// The control API's Unix socket.
    #[arg(long, default_value = "/run/rswarm/rswarm.sock")]
    socket: PathBuf,
    /// The cluster port: IP:PORT to listen on.
    #[arg(long, default_value = "0.0.0.0:2377")]
    listen_addr: String,
    /// IP[:PORT] other nodes use to reach this one.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The node's hostname in the cluster (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd: PathBuf,
    /// containerd namespace for this node's containers.
    #[arg(long, default_value = "rswarm")]
    containerd_namespace: String,
    /// A registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// Where to serve Prometheus metrics (IP:PORT).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Run tasks without the node's networking (no overlay, DNS, published ports or
    /// egress: each container gets an unconnected namespace). For tests that run several
    /// daemons in one network namespace.
    #[arg(long)]
    no_networking: bool,
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A flag value the daemon cannot use: the process exits 64 before binding anything.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

pub async fn run(a: DaemonArgs) -> anyhow::Result<()> {
    let usage = |e: crate::daemon::config::ConfigError| UsageError(e.to_string());
    let listen_addr = parse_addr("--listen-addr", &a.listen_addr, DEFAULT_PORT).map_err(usage)?;
    let advertise_addr = a
        .advertise_addr
        .as_deref()
        .map(|s| parse_addr("--advertise-addr", s, listen_addr.port()))
        .transpose()
        .map_err(usage)?;
    // Docker's usual metrics port when only an address is given.
    let metrics_addr = a
        .metrics_addr
        .as_deref()
        .map(|s| parse_addr("--metrics-addr", s, 9323))
        .transpose()
        .map_err(usage)?;
    // Paths end up in container specs and in the shim's log URI, which need them absolute.
    let absolute = |p: PathBuf| -> anyhow::Result<PathBuf> {
        if p.is_absolute() {
            Ok(p)
        } else {
            Ok(std::env::current_dir()
                .context("current directory")?
                .join(p))
        }
    };
    let cfg = DaemonConfig {
        data_dir: absolute(a.data_dir)?,
        socket: absolute(a.socket)?,
        listen_addr,
        advertise_addr,
        hostname: a.hostname.unwrap_or_else(machine_hostname),
        containerd: a.containerd,
        containerd_namespace: a.containerd_namespace,
        insecure_registries: a.insecure_registry,
        networking: !a.no_networking,
        metrics_addr,
    };
    let filter = EnvFilter::try_from_env("RSWARM_LOG").unwrap_or_else(|_| {
        EnvFilter::new("warn,rswarm=info,rswarm_manager=info,rswarm_worker=info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("RSWARM_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    crate::daemon::run(cfg).await.context("daemon")
}
