//! The container runtime seen from the agent: an [`Executor`] makes one [`Controller`] per
//! task (swarmkit's `agent/exec`). `crate::containerd` is the real implementation; tests use
//! fakes behind the same traits.

use rswarm_proto::model::{Task, TaskId};
use std::time::Duration;

/// What the runtime knows of a task's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub container_id: String,
    pub running: bool,
    /// Set once the container's process has exited.
    pub exit_code: Option<i32>,
}

/// A container found on the node, for reattaching after a daemon restart and for removing
/// the containers of tasks the node no longer owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub task_id: TaskId,
    pub container_id: String,
    pub running: bool,
}

/// The output of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The image could not be pulled: the registry's reason.
    #[error("pull {image}: {reason}")]
    ImagePull { image: String, reason: String },
    #[error("invalid image reference {0:?}")]
    InvalidImage(String),
    #[error("create container for task {task}: {reason}")]
    Create { task: TaskId, reason: String },
    #[error("start container for task {task}: {reason}")]
    Start { task: TaskId, reason: String },
    #[error("container of task {0} not found")]
    NotFound(TaskId),
    #[error("exec in task {task}: {reason}")]
    Exec { task: TaskId, reason: String },
    #[error("containerd: {0}")]
    Runtime(String),
    /// containerd cannot be reached; retry later.
    #[error("containerd unavailable: {0}")]
    Unavailable(String),
}

impl ExecError {
    /// Temporary errors are retried with backoff; others end the task as failed or
    /// rejected (swarmkit's `exec/errors.go`).
    pub fn is_temporary(&self) -> bool {
        matches!(self, ExecError::Unavailable(_))
    }
}

/// The container runtime of a node.
#[tonic::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// A controller for `task`'s container (nothing is created until `prepare`).
    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>, ExecError>;
    /// Every container this node's namespace holds that belongs to a task.
    async fn list(&self) -> Result<Vec<ContainerRef>, ExecError>;
    /// Removes a container found by `list` (stopping it first) that no task owns.
    async fn remove_orphan(&self, c: &ContainerRef, grace: Duration) -> Result<(), ExecError>;
    /// Where the task's container logs are kept on this node (see `containerd::logwriter`).
    fn log_file(&self, task: &TaskId) -> std::path::PathBuf;
    /// The secrets and configs this node's tasks use, as the leader last sent them
    /// (replacing the previous set). Held in memory only.
    fn set_files(&self, _files: NodeFiles) {}
}

/// What a task's container needs from the node's networking.
#[derive(Debug, Clone)]
pub struct TaskNet {
    /// The network namespace the container joins (a bind-mounted namespace file).
    pub netns: std::path::PathBuf,
    /// The task's first overlay address, for its /etc/hosts.
    pub address: Option<std::net::Ipv4Addr>,
}

/// The node's networking as the executor and the agent see it (netd's agent, wired in by
/// the daemon; the worker does not depend on netd).
#[tonic::async_trait]
pub trait TaskNetwork: Send + Sync + 'static {
    /// Makes the task's namespace and connects it; idempotent. An error fails the task;
    /// `None`: the node has no networking (the container gets a namespace of its own).
    async fn attach(&self, task: &Task) -> Result<Option<TaskNet>, String>;
    /// Tears the task's networking down; idempotent.
    async fn detach(&self, task: &TaskId);
    /// The network view that came with the assignments (JSON, see dispatcher.proto).
    async fn set_view(&self, json: &[u8]);
}

/// Secret and config data by id, as the dispatcher sends them with the assignments. Never
/// written to the node's disk; `Debug` shows no data.
#[derive(Clone, Default)]
pub struct NodeFiles {
    pub secrets: std::collections::BTreeMap<String, Vec<u8>>,
    pub configs: std::collections::BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for NodeFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFiles")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("configs", &self.configs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NodeFiles {
    pub fn from_pb(
        secrets: Vec<rswarm_proto::pb::FilePayload>,
        configs: Vec<rswarm_proto::pb::FilePayload>,
    ) -> Self {
        NodeFiles {
            secrets: secrets.into_iter().map(|p| (p.id, p.data)).collect(),
            configs: configs.into_iter().map(|p| (p.id, p.data)).collect(),
        }
    }
}

/// One task's container. Every method is idempotent, so the agent can call them again
/// after a restart or an error.
#[tonic::async_trait]
pub trait Controller: Send + Sync {
    /// Pulls the image (one pull per image per node at a time, shared by waiting tasks) and
    /// creates the container.
    async fn prepare(&mut self) -> Result<(), ExecError>;
    /// Starts the container's process.
    async fn start(&mut self) -> Result<(), ExecError>;
    /// Waits for the process to exit and returns its exit code.
    async fn wait(&mut self) -> Result<i32, ExecError>;
    /// The container's current state, or `NotFound`.
    async fn inspect(&mut self) -> Result<ContainerState, ExecError>;
    /// Sends `signal` (empty: the stop signal of the spec or image, else SIGTERM), then
    /// SIGKILL after `grace`; returns once the process is gone.
    async fn stop(&mut self, signal: &str, grace: Duration) -> Result<(), ExecError>;
    /// Deletes the container and its snapshot (not the image).
    async fn remove(&mut self) -> Result<(), ExecError>;
    /// Runs `cmd` inside the running container, with a timeout.
    async fn exec(&mut self, cmd: &[String], timeout: Duration) -> Result<ExecOutput, ExecError>;
    /// The health check of the image, if it declares one (merged under the spec's).
    async fn image_healthcheck(
        &mut self,
    ) -> Result<Option<rswarm_proto::model::HealthCheck>, ExecError>;
}
