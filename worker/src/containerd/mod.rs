//! The task executor on containerd (1.6+, gRPC over its Unix socket, runtime
//! `io.containerd.runc.v2`): [`ContainerdExecutor`] implements [`Executor`] and makes one
//! [`ContainerdController`] per task.
//!
//! - Images are pulled by us (containerd 1.6 has no server-side pull): [`pull`] fetches from
//!   the registry ([`registry`]), writes the content store, unpacks through the diff service.
//! - Containers get an OCI spec we build ([`spec`]) with Docker's defaults; their id is
//!   derived from the task id, so every step can be retried and found again after a restart.
//! - Logs are written by the shim through a `binary://` logger ([`logwriter`]), so they
//!   outlive the daemon.
//! - Everything lives in the namespace given at construction; containers carry the labels
//!   [`LABEL_TASK_ID`] and [`LABEL_SERVICE_ID`] so that [`Executor::list`] finds them.
//!
//! Per node layout under the state dir: `containers/<id>/` (hostname, hosts, resolv.conf,
//! `container.log`, exec output while an exec runs) and `volumes/<name>/`.

mod client;
mod controller;
mod digest;
mod files;
pub mod image;
pub mod logwriter;
mod pull;
/// Image references; shared with the managers and the CLI through `rswarm_proto`.
pub use rswarm_proto::model::reference;
mod registry;
pub mod spec;

pub use controller::ContainerdController;
pub use digest::ImageDigests;
pub use logwriter::{follow_logs, read_logs, run_log_writer, LogLine, LogStream};

use crate::exec::{ContainerRef, Controller, ExecError, Executor};
use client::{is_not_found, runtime, Client};
use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteContentRequest, DeleteImageRequest, DeleteNamespaceRequest,
    DeleteTaskRequest, GetContainerRequest, KillRequest, ListContainersRequest, ListContentRequest,
    ListImagesRequest, ListRequest as ListLeasesRequest, ListTasksRequest, WaitRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use pull::SharedPull;
use rswarm_proto::model::{Task, TaskId};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// containerd's default socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The task a container runs.
pub const LABEL_TASK_ID: &str = "rswarm.task.id";
/// The service of that task.
pub const LABEL_SERVICE_ID: &str = "rswarm.service.id";
/// The container's name (`web.1.<task id>`), for people reading `ctr containers ls`.
pub const LABEL_TASK_NAME: &str = "rswarm.task.name";
/// The signal that stops it, resolved at create time (spec, else image, else SIGTERM).
pub const LABEL_STOP_SIGNAL: &str = "rswarm.stop-signal";

pub(crate) const SNAPSHOTTER: &str = "overlayfs";
pub(crate) const RUNTIME: &str = "io.containerd.runc.v2";
/// How long a SIGKILLed process may take to be reaped before we call it stuck.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(30);

/// How containerd's shim runs the log writer: `binary mode LOG_FILE`, with the container's
/// stdout and stderr on fds 3 and 4 (see [`logwriter`]).
///
/// The `binary://` URI carries arguments as query pairs, and the shim passes each pair as
/// two arguments in Go's map order (random), so exactly one pair is used: `mode` is the
/// first argument and the log file the second. The daemon passes its own executable with
/// `mode = "log-writer"`; that mode then calls [`run_log_writer`] on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWriterCommand {
    pub binary: PathBuf,
    pub mode: String,
}

/// The containerd executor of a node. Cheap to clone.
#[derive(Clone)]
pub struct ContainerdExecutor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    registry: registry::Registry,
    state_dir: PathBuf,
    log_writer: LogWriterCommand,
    pulls: Mutex<HashMap<String, SharedPull>>,
    pulls_started: AtomicU64,
    /// The secrets and configs of this node's tasks, in memory only (see [`files`]).
    files: std::sync::RwLock<crate::exec::NodeFiles>,
    /// The node's network agent: tasks get their namespaces from it. `None`: containers
    /// get a fresh, unconnected namespace (tests of the executor alone).
    network: std::sync::RwLock<Option<Arc<dyn crate::exec::TaskNetwork>>>,
}

impl ContainerdExecutor {
    /// Connects to containerd at `socket` and checks that it answers. Everything happens in
    /// `namespace`; registries in `insecure_registries` (`host:port`) are spoken to in plain
    /// HTTP; node-local state goes under `state_dir`.
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        insecure_registries: Vec<String>,
        state_dir: &Path,
        log_writer: LogWriterCommand,
    ) -> Result<ContainerdExecutor, ExecError> {
        let client = Client::new(socket, namespace)?;
        client
            .version()
            .version(client.req(()))
            .await
            .map_err(|s| runtime(&format!("containerd at {}", socket.display()), s))?;
        for sub in ["containers", "volumes"] {
            std::fs::create_dir_all(state_dir.join(sub)).map_err(|e| {
                ExecError::Runtime(format!("{}: {e}", state_dir.join(sub).display()))
            })?;
        }
        Ok(ContainerdExecutor {
            inner: Arc::new(Inner {
                client,
                registry: registry::Registry::new(insecure_registries),
                state_dir: state_dir.to_path_buf(),
                log_writer,
                pulls: Mutex::new(HashMap::new()),
                pulls_started: AtomicU64::new(0),
                files: Default::default(),
                network: Default::default(),
            }),
        })
    }

    /// Gives tasks' containers their networking through `agent`.
    pub fn set_network(&self, agent: Arc<dyn crate::exec::TaskNetwork>) {
        *self
            .inner
            .network
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(agent);
    }

    pub fn namespace(&self) -> &str {
        &self.inner.client.namespace_name
    }

    /// The id of `task`'s container: 64 hex digits derived from the task id (like Docker's
    /// ids, so the hostname is its first 12), stable across retries and restarts.
    pub fn container_id(task: &TaskId) -> String {
        format!(
            "{:x}",
            Sha256::digest(format!("rswarm-task/{task}").as_bytes())
        )
    }

    /// The log file of `task`'s container (JSON lines, see [`logwriter`]).
    pub fn log_path(&self, task: &TaskId) -> PathBuf {
        self.inner
            .container_dir(&Self::container_id(task))
            .join("container.log")
    }

    /// A controller whose container joins the network namespace at `netns` (a bind-mounted
    /// namespace file); `None` gives the container a fresh, unconnected one.
    pub fn controller_with_netns(
        &self,
        task: &Task,
        netns: Option<PathBuf>,
    ) -> ContainerdController {
        ContainerdController::new(self.inner.clone(), task.clone(), netns)
    }

    /// Pulls `image` (sharing a pull already under way) and unpacks it, so that creating a
    /// container from it needs no registry.
    pub async fn pull_image(&self, image: &str) -> Result<(), ExecError> {
        self.inner.ensure_image(image).await.map(|_| ())
    }

    /// How many pulls contacted a registry since construction (shared pulls count once).
    pub fn pulls_started(&self) -> u64 {
        self.inner.pulls_started.load(Ordering::Relaxed)
    }

    /// Removes everything in this executor's namespace (tasks, containers, images, content,
    /// snapshots, leases) and then the namespace itself. For tests and for tearing a lab
    /// node down; never for a namespace shared with anything else.
    pub async fn destroy_namespace(&self) -> Result<(), ExecError> {
        let inner = &self.inner;
        let c = &inner.client;
        let tasks = c
            .tasks()
            .list(c.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| runtime("list tasks", s))?
            .into_inner()
            .tasks;
        for t in tasks {
            let id = if t.container_id.is_empty() {
                t.id
            } else {
                t.container_id
            };
            let _ = c
                .tasks()
                .kill(c.req(KillRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                    signal: 9,
                    all: true,
                }))
                .await;
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                c.tasks().wait(c.req(WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })),
            )
            .await;
            let _ = c
                .tasks()
                .delete(c.req(DeleteTaskRequest { container_id: id }))
                .await;
        }
        let containers = c
            .containers()
            .list(c.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| runtime("list containers", s))?
            .into_inner()
            .containers;
        for ct in containers {
            let _ = c
                .containers()
                .delete(c.req(DeleteContainerRequest { id: ct.id.clone() }))
                .await;
            let _ = std::fs::remove_dir_all(inner.container_dir(&ct.id));
        }
        let images = c
            .images()
            .list(c.req(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| runtime("list images", s))?
            .into_inner()
            .images;
        for im in images {
            let _ = c
                .images()
                .delete(c.req(DeleteImageRequest {
                    name: im.name,
                    sync: false,
                    target: None,
                }))
                .await;
        }
        let leases = c
            .leases()
            .list(c.req(ListLeasesRequest { filters: vec![] }))
            .await
            .map_err(|s| runtime("list leases", s))?
            .into_inner()
            .leases;
        for l in leases {
            let _ = c
                .leases()
                .delete(c.req(containerd_client::services::v1::DeleteRequest {
                    id: l.id,
                    sync: false,
                }))
                .await;
        }
        // Snapshots go children first: keep removing what can be removed until none is left.
        for _ in 0..64 {
            let mut names = Vec::new();
            let mut stream = c
                .snapshots()
                .list(c.req(ListSnapshotsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    filters: vec![],
                }))
                .await
                .map_err(|s| runtime("list snapshots", s))?
                .into_inner();
            while let Some(m) = stream
                .message()
                .await
                .map_err(|s| runtime("list snapshots", s))?
            {
                names.extend(m.info.into_iter().map(|i| i.name));
            }
            if names.is_empty() {
                break;
            }
            for n in names {
                inner.remove_snapshot(&n).await;
            }
        }
        let mut stream = c
            .content()
            .list(c.req(ListContentRequest { filters: vec![] }))
            .await
            .map_err(|s| runtime("list content", s))?
            .into_inner();
        let mut digests = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| runtime("list content", s))?
        {
            digests.extend(m.info.into_iter().map(|i| i.digest));
        }
        for d in digests {
            let _ = c
                .content()
                .delete(c.req(DeleteContentRequest { digest: d }))
                .await;
        }
        match c
            .namespaces()
            .delete(c.req(DeleteNamespaceRequest {
                name: c.namespace_name.clone(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(runtime("delete namespace", s)),
        }
    }
}

impl Inner {
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    /// The task's secret and config files as bind mounts, on a fresh tmpfs.
    pub(crate) fn prepare_files(
        &self,
        id: &str,
        task: &Task,
    ) -> Result<Vec<spec::ResolvedMount>, String> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner()).clone();
        files::prepare(&self.state_dir, id, task, &files)
    }

    pub(crate) fn remove_files(&self, id: &str) -> Result<(), String> {
        files::remove(&self.state_dir, id)
    }

    pub(crate) fn network(&self) -> Option<Arc<dyn crate::exec::TaskNetwork>> {
        self.network
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn volume_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("volumes").join(name)
    }
}

/// The state of a container's task, as containerd reports it.
fn is_running(status: i32) -> bool {
    matches!(
        ProcessStatus::try_from(status),
        Ok(ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing)
    )
}

#[tonic::async_trait]
impl Executor for ContainerdExecutor {
    fn set_files(&self, files: crate::exec::NodeFiles) {
        *self.inner.files.write().unwrap_or_else(|p| p.into_inner()) = files;
    }

    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>, ExecError> {
        let image = &task.spec.container.image;
        reference::Reference::parse(image)
            .map_err(|e| ExecError::InvalidImage(format!("{image}: {e}")))?;
        Ok(Box::new(self.controller_with_netns(task, None)))
    }

    async fn list(&self) -> Result<Vec<ContainerRef>, ExecError> {
        let c = &self.inner.client;
        let containers = c
            .containers()
            .list(c.req(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_TASK_ID}\"")],
            }))
            .await
            .map_err(|s| runtime("list containers", s))?
            .into_inner()
            .containers;
        let tasks = c
            .tasks()
            .list(c.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| runtime("list tasks", s))?
            .into_inner()
            .tasks;
        let running: HashMap<String, bool> = tasks
            .into_iter()
            .map(|t| {
                let id = if t.container_id.is_empty() {
                    t.id
                } else {
                    t.container_id
                };
                (id, is_running(t.status))
            })
            .collect();
        let mut out: Vec<ContainerRef> = containers
            .into_iter()
            .filter_map(|ct| {
                let task = ct.labels.get(LABEL_TASK_ID)?.clone();
                Some(ContainerRef {
                    task_id: TaskId(task),
                    running: running.get(&ct.id).copied().unwrap_or(false),
                    container_id: ct.id,
                })
            })
            .collect();
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(out)
    }

    fn log_file(&self, task: &TaskId) -> PathBuf {
        self.log_path(task)
    }

    async fn remove_orphan(&self, c: &ContainerRef, grace: Duration) -> Result<(), ExecError> {
        self.inner
            .stop_container(&c.container_id, &c.task_id, "", grace)
            .await?;
        self.inner
            .remove_container(&c.container_id, &c.task_id)
            .await?;
        if let Some(net) = self.inner.network() {
            net.detach(&c.task_id).await;
        }
        Ok(())
    }
}

impl Inner {
    /// The stop signal recorded on the container at create time.
    pub(crate) async fn recorded_stop_signal(&self, id: &str) -> Option<String> {
        let c = &self.client;
        let ct = c
            .containers()
            .get(c.req(GetContainerRequest { id: id.into() }))
            .await
            .ok()?;
        ct.into_inner()
            .container?
            .labels
            .get(LABEL_STOP_SIGNAL)
            .cloned()
    }
}
