//! `rswarm daemon`: the node daemon. It serves the control API on a Unix socket and, once
//! the node is in a cluster, the cluster port (mutual TLS) with the manager services, and
//! runs the agent session; managers also run Raft and the store.

pub mod config;
mod control;
mod images;
mod metrics;
mod netbridge;
mod node;
mod node_agent;
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

    let (executor, network) = match connect_executor(&cfg).await {
        Some(e) => {
            let network = cfg.networking.then(|| {
                let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let agent = rswarm_netd::agent::NetAgent::new(
                    cfg.data_dir.join("net"),
                    rswarm_netd::dns::upstreams_from_resolv_conf(&host),
                );
                e.set_network(Arc::new(netbridge::NetBridge(agent.clone())));
                tokio::spawn(agent.clone().run());
                agent
            });
            (Some(e as Arc<dyn rswarm_worker::exec::Executor>), network)
        }
        None => (None, None),
    };
    let runtime = Arc::new(NodeRuntime::new(cfg.clone(), executor, network));
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
    if let Some(addr) = cfg.metrics_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-addr: listen on {addr}"))?;
        info!(%addr, "metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(l, runtime.clone()));
    }
    let listener = tokio::net::UnixListener::bind(&cfg.socket)
        .with_context(|| format!("bind {}", cfg.socket.display()))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", cfg.socket.display()))?;
    info!(socket = %cfg.socket.display(), "control API listening");

    let svc = rswarm_proto::pb::control_server::ControlServer::new(control::ControlService::new(
        runtime.clone(),
    ))
    .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES);
    let server = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown_signal());
    let result = server.await;
    info!("shutting down");
    runtime.shutdown().await;
    let _ = std::fs::remove_file(&cfg.socket);
    result.context("control API server")
}

/// The container runtime, if containerd answers; without it the node takes no tasks.
async fn connect_executor(
    cfg: &DaemonConfig,
) -> Option<Arc<rswarm_worker::containerd::ContainerdExecutor>> {
    use rswarm_worker::containerd::{ContainerdExecutor, LogWriterCommand};
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            warn!(
                "cannot find the rswarm binary for container logs: {e}; this node takes no tasks"
            );
            return None;
        }
    };
    let log_writer = LogWriterCommand {
        binary,
        mode: crate::LOG_WRITER_MODE.into(),
    };
    match ContainerdExecutor::connect(
        &cfg.containerd,
        &cfg.containerd_namespace,
        cfg.insecure_registries.clone(),
        &cfg.data_dir.join("executor"),
        log_writer,
    )
    .await
    {
        Ok(e) => Some(Arc::new(e)),
        Err(e) => {
            warn!("containerd is not available ({e}): this node takes no tasks until the daemon restarts with it");
            None
        }
    }
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
