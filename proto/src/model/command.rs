use super::{
    Cluster, Config, Network, NetworkId, Node, NodeId, NodeState, Secret, Service, ServiceId, Task,
    TaskId, TaskState, TaskStatus,
};
use serde::{Deserialize, Serialize};

/// A change to the cluster store: the payload of every Raft log entry. Only add variants;
/// entries already in a log must keep decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the cluster object; refused if one exists.
    CreateCluster(Box<Cluster>),
    /// Replaces the cluster object; refused unless `meta.version` is the stored version.
    UpdateCluster(Box<Cluster>),
    /// Creates a node; refused if the id exists or was removed.
    CreateNode(Box<Node>),
    /// Replaces a node; refused unless `meta.version` is the stored version.
    UpdateNode(Box<Node>),
    /// Removes a node and records its id as removed, so its certificate is refused.
    RemoveNode { id: NodeId },
    /// The dispatcher's view of node liveness. Unversioned: the leader's dispatcher is its
    /// only writer.
    SetNodeState {
        id: NodeId,
        state: NodeState,
        addr: Option<String>,
        message: String,
    },
    /// Applies every command or none.
    Batch(Vec<Command>),
    /// Replaces the whole store: the first entry of a cluster recovered with
    /// `init --force-new-cluster`. Every object's version becomes this entry's index.
    Restore {
        cluster: Box<Cluster>,
        nodes: Vec<Node>,
        #[serde(default)]
        services: Vec<Service>,
        #[serde(default)]
        tasks: Vec<Task>,
        #[serde(default)]
        networks: Vec<Network>,
        #[serde(default)]
        secrets: Vec<Secret>,
        #[serde(default)]
        configs: Vec<Config>,
    },
    /// Creates a service; refused if the id or the name is taken, if it names a network
    /// that does not exist, or if one of its VIPs is taken (`Conflict`).
    CreateService(Box<Service>),
    /// Replaces a service; refused unless `meta.version` is the stored version, or if the
    /// name would collide, or as `CreateService` for its networks and VIPs.
    UpdateService(Box<Service>),
    /// Removes a service; its tasks are shut down and reaped by the orchestrators.
    RemoveService { id: ServiceId },
    /// Creates a task; refused if the id exists, or if one of its network addresses is not
    /// a free host address of its network (`Conflict` when another holds it).
    CreateTask(Box<Task>),
    /// Replaces a task (desired state, node assignment, addresses); refused unless
    /// `meta.version` is the stored version, or for a new address as `CreateTask`.
    UpdateTask(Box<Task>),
    /// Deletes a task from the store (the reaper's job).
    RemoveTask { id: TaskId },
    /// What a node reports of its tasks. Unversioned, but a status only moves forward: an
    /// older state than the stored one is ignored (not refused), as reports may arrive late.
    UpdateTaskStatus { id: TaskId, status: TaskStatus },
    /// The orchestrators' decision for a task. Only moves forward; a missing task is a
    /// no-op, so a batch of these never fails on a task reaped meanwhile.
    SetTaskDesiredState { id: TaskId, state: TaskState },
    /// The scheduler's decision: the task runs on `node`. Applies only to a task still
    /// pending and unassigned (a no-op otherwise).
    AssignTask {
        id: TaskId,
        node: NodeId,
        timestamp: u64,
    },
    /// Independent commands committed in one entry, each applied or refused on its own
    /// (unlike `Batch`): how the proposer coalesces concurrent writes.
    Multi(Vec<Command>),
    /// Creates a network with the allocation the leader chose; refused if the id or name
    /// is taken, the gateway is not a host of the subnet, or (`Conflict`) the subnet
    /// overlaps another network's or the VNI is taken.
    CreateNetwork(Box<Network>),
    /// Removes a network; refused (`InUse`) while a service names it or a task of a
    /// service still holds an address on it. Tasks of removed services do not hold it up:
    /// they are on their way out.
    RemoveNetwork { id: NetworkId },
    /// The orchestrator's record of a rolling update. Unversioned: the leader's
    /// orchestrator is its only writer; a missing service is a no-op.
    SetServiceUpdateStatus {
        id: ServiceId,
        status: super::UpdateStatus,
    },
    /// Puts back the spec before the last update (and keeps the current one as the
    /// previous), as `service rollback` and a failed update with `rollback` do. A no-op
    /// without a previous spec.
    RollbackService { id: ServiceId, message: String },
    /// Creates a secret (its data already encrypted); refused if the id or name is taken.
    CreateSecret(Box<Secret>),
    /// Removes a secret; refused (`InUse`) while a service refers to it.
    RemoveSecret { id: String },
    /// Creates a config; refused if the id or name is taken.
    CreateConfig(Box<Config>),
    /// Removes a config; refused (`InUse`) while a service refers to it.
    RemoveConfig { id: String },
    /// Gives a node its own address on a network (the ingress network's node endpoints),
    /// or takes it back (`None`). Refused (`Conflict`) if the address is taken.
    SetNodeEndpoint {
        network: NetworkId,
        node: NodeId,
        addr: Option<super::Ipv4Cidr>,
    },
}

/// Why the store refused a command. Refusals are results, not Raft failures: the entry is
/// committed and every replica refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },
    #[error("{kind} {id} already exists")]
    Exists { kind: String, id: String },
    #[error("update out of sequence: {kind} {id} is at version {current}, the update was based on version {given}")]
    StaleVersion {
        kind: String,
        id: String,
        current: u64,
        given: u64,
    },
    #[error("node {0} was removed from the cluster")]
    Removed(String),
    #[error("{0}")]
    Invalid(String),
    /// An allocation (address, subnet, VNI) collides with one made since the proposer
    /// looked: allocate again from a fresh view.
    #[error("{0}")]
    Conflict(String),
    #[error("{kind} {id} is in use by {by}")]
    InUse {
        kind: String,
        id: String,
        by: String,
    },
}

/// The outcome of applying one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// `Err` when the store refused the command; nothing was changed then.
    pub result: Option<CommandError>,
    /// The log index at which it was applied: the new version of what it wrote.
    pub index: u64,
    /// For `Multi`: the outcome of each command, in order.
    #[serde(default)]
    pub results: Vec<Option<CommandError>>,
}
