use super::{Meta, NodeId, RaftId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    #[default]
    Worker,
    Manager,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "worker" => Some(NodeRole::Worker),
            "manager" => Some(NodeRole::Manager),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeAvailability {
    #[default]
    Active,
    Pause,
    Drain,
}

impl NodeAvailability {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAvailability::Active => "active",
            NodeAvailability::Pause => "pause",
            NodeAvailability::Drain => "drain",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(NodeAvailability::Active),
            "pause" => Some(NodeAvailability::Pause),
            "drain" => Some(NodeAvailability::Drain),
            _ => None,
        }
    }
}

/// What the dispatcher last saw of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Down => "down",
            NodeState::Ready => "ready",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unknown" => Some(NodeState::Unknown),
            "down" => Some(NodeState::Down),
            "ready" => Some(NodeState::Ready),
            _ => None,
        }
    }
}

/// What a user may set on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The role the node should have; `Node::role` is the role it has now.
    pub desired_role: NodeRole,
    pub availability: NodeAvailability,
    pub labels: BTreeMap<String, String>,
}

/// What a node reports about itself when its session starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub engine_version: String,
    /// No container runtime answered when the node registered: it takes no tasks.
    #[serde(default)]
    pub runtime_unavailable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: NodeState,
    pub message: String,
    /// The node's address as its session reported it (an IP, no port).
    pub addr: String,
}

/// Raft membership of a manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub raft_id: RaftId,
    /// Where its cluster port answers: `IP:PORT`.
    pub addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub meta: Meta,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// The role in effect: a demoted manager stays `Manager` until it has left Raft.
    pub role: NodeRole,
    /// Set for nodes that are, or are becoming, Raft members.
    pub manager: Option<ManagerInfo>,
    /// Where the node's cluster port answers (`IP:PORT`), as it last reported.
    pub cluster_addr: String,
}
