//! What the hosts share: containerd (the machine's, or one the lab starts and stops) and the
//! lab's registry (Debian's `docker-registry`, in its own namespace at 198.18.0.250:5000).

use super::layout::{self, Layout};
use super::ledger::Ledger;
use super::procs;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The machine's containerd.
pub const MACHINE_SOCKET: &str = rswarm_worker::containerd::DEFAULT_SOCKET;
/// Set to 1, the lab starts its own containerd even when the machine's answers (for tests
/// of that path).
pub const OWN_CONTAINERD_ENV: &str = "RSWARM_LAB_OWN_CONTAINERD";

/// Something accepts connections on the Unix socket (a stale file does not).
pub fn answers(sock: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(sock).is_ok()
}

/// Picks the containerd the daemons use, in the ledger: the machine's if it answers, else
/// one the lab starts ([`start_own_containerd`]) with everything under `DIR/containerd`.
pub fn choose_containerd(l: &Layout, ledger: &mut Ledger) -> anyhow::Result<()> {
    let force_own = std::env::var(OWN_CONTAINERD_ENV).as_deref() == Ok("1");
    if !force_own && answers(Path::new(MACHINE_SOCKET)) {
        ledger.containerd_socket = PathBuf::from(MACHINE_SOCKET);
        ledger.own_containerd = false;
    } else {
        ledger.containerd_socket = l.own_containerd_socket();
        ledger.own_containerd = true;
        ledger.made_run_containerd = !Path::new("/run/containerd").exists();
    }
    ledger.save(&l.ledger())
}

/// Starts the lab's own containerd (config, root, state, socket and log under
/// `DIR/containerd`) and waits until it answers.
pub async fn start_own_containerd(l: &Layout) -> anyhow::Result<Child> {
    let dir = l.containerd_dir();
    let socket = l.own_containerd_socket();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let config = dir.join("config.toml");
    // No CRI (the lab has no kubelet); the `opt` plugin's dir moved in here, so nothing is
    // made outside the lab dir but what containerd's shims always make under /run/containerd.
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            opt = dir.join("opt").display(),
        ),
    )
    .with_context(|| format!("write {}", config.display()))?;
    let mut child = procs::spawn(
        None,
        Path::new("containerd"),
        &["--config".as_ref(), config.as_os_str()],
        &dir.join("containerd.log"),
        &l.containerd_pid(),
    )?;
    let start = Instant::now();
    while !answers(&socket) {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "the lab's containerd exited ({status}): {}",
                procs::tail(&dir.join("containerd.log"), 3)
            );
        }
        if start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!(
                "the lab's containerd did not answer on {} within 30s",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// Starts the registry in its namespace, storage under `DIR/registry/data`.
pub fn start_registry(l: &Layout) -> anyhow::Result<Child> {
    let dir = l.registry_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log: {{ level: warn, accesslog: {{ disabled: true }} }}\n\
             storage: {{ filesystem: {{ rootdirectory: \"{}\" }}, delete: {{ enabled: true }} }}\n\
             http: {{ addr: \"{}\" }}\n",
            dir.join("data").display(),
            Layout::registry_addr()
        ),
    )
    .with_context(|| format!("write {}", config.display()))?;
    procs::spawn(
        Some(&l.registry_ns()),
        Path::new("docker-registry"),
        &["serve".as_ref(), config.as_os_str()],
        &dir.join("registry.log"),
        &l.registry_pid(),
    )
}

/// The registry accepts connections (from the machine, through its leg).
pub async fn registry_answers() -> bool {
    let addr = std::net::SocketAddr::from((layout::REGISTRY_IP, layout::REGISTRY_PORT));
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Removes every host's containerd namespace (its containers killed first), all at once.
pub async fn destroy_namespaces(l: &Layout, socket: &Path) -> Vec<String> {
    use rswarm_worker::containerd::{ContainerdExecutor, LogWriterCommand};
    if !answers(socket) {
        return vec![format!(
            "containerd does not answer on {}: its namespaces {}..h{} were not checked",
            socket.display(),
            l.ctr_namespace(1),
            l.nodes
        )];
    }
    let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rswarm"));
    let jobs = l.hosts().map(|n| {
        let ns = l.ctr_namespace(n);
        let state = l.data_dir(n).join("executor");
        let log_writer = LogWriterCommand {
            binary: binary.clone(),
            mode: crate::LOG_WRITER_MODE.into(),
        };
        async move {
            // containerd's garbage collector may still be busy with the namespace (a
            // snapshot it is removing counts as one left): try again for a while.
            let work = async {
                let ex = ContainerdExecutor::connect(socket, &ns, vec![], &state, log_writer)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut attempt = 0;
                loop {
                    match ex.destroy_namespace().await {
                        Ok(()) => return Ok(()),
                        Err(e) if attempt < 20 => {
                            tracing::debug!("destroy {ns}: {e}; trying again");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            };
            match tokio::time::timeout(Duration::from_secs(60), work).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("containerd namespace {ns}: {e}")),
                Err(_) => Some(format!("containerd namespace {ns}: timed out")),
            }
        }
    });
    futures::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect()
}
