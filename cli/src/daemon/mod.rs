//! `rswarm daemon`: the node daemon. It serves the control API on a Unix socket and, once
//! the node is in a cluster, the cluster port (mutual TLS) with the manager services, and
//! runs the agent session; managers also run Raft and the store.

pub mod config;
mod control;
mod node;
pub mod persist;

pub use config::DaemonConfig;

use anyhow::Context;
use node::NodeRuntime;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    info!(
        containerd.namespace = %cfg.containerd_namespace,
        insecure_registries = ?cfg.insecure_registries,
        "container runtime settings"
    );
    if !cfg.containerd.exists() {
        warn!(
            "containerd is not running at {}: this node cannot run tasks until it is",
            cfg.containerd.display()
        );
    }

    let runtime = Arc::new(NodeRuntime::new(cfg.clone()));
    runtime
        .resume()
        .await
        .context("resume the node from its data dir")?;

    // A stale socket from a killed daemon would make bind fail; nothing answers on it.
    if cfg.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&cfg.socket).is_ok() {
            anyhow::bail!("another daemon is serving {}", cfg.socket.display());
        }
        std::fs::remove_file(&cfg.socket)
            .with_context(|| format!("remove stale {}", cfg.socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&cfg.socket)
        .with_context(|| format!("bind {}", cfg.socket.display()))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", cfg.socket.display()))?;
    info!(socket = %cfg.socket.display(), "control API listening");

    let svc = rswarm_proto::pb::control_server::ControlServer::new(control::ControlService::new(
        runtime.clone(),
    ));
    let server = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal());
    let result = server.await;
    info!("shutting down");
    runtime.shutdown().await;
    let _ = std::fs::remove_file(&cfg.socket);
    result.context("control API server")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
