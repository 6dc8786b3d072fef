use super::{Cluster, Node, NodeId, NodeState};
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
}

/// The outcome of applying one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// `Err` when the store refused the command; nothing was changed then.
    pub result: Option<CommandError>,
    /// The log index at which it was applied: the new version of what it wrote.
    pub index: u64,
}
