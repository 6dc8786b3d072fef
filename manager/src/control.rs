//! What the control API does on a manager: node listing and changes with Swarm's guards,
//! join tokens. Reads are local; writes go through the proposer (forwarded to the leader
//! by a follower).

use crate::ca::{generate_secret, JoinToken, RootCa};
use crate::ids::now_ms;
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use crate::store::LookupError;
use rswarm_proto::model::{
    Command, CommandError, ManagerInfo, Node, NodeAvailability, NodeDescription, NodeRole,
    NodeState,
};
use rswarm_proto::pb;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the cluster is not initialised")]
    NoCluster,
    #[error("cluster CA: {0}")]
    Ca(#[from] crate::ca::CaError),
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        match &e {
            ControlError::Lookup(
                LookupError::NotFound(_)
                | LookupError::ServiceNotFound(_)
                | LookupError::TaskNotFound(_)
                | LookupError::NetworkNotFound(_)
                | LookupError::Missing(..),
            ) => Status::not_found(e.to_string()),
            ControlError::Lookup(
                LookupError::Ambiguous(_)
                | LookupError::ServiceAmbiguous(_)
                | LookupError::TaskAmbiguous(_)
                | LookupError::NetworkAmbiguous(_)
                | LookupError::AmbiguousKey(..),
            )
            | ControlError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            ControlError::Propose(ProposeError::Refused(CommandError::StaleVersion { .. })) => {
                Status::aborted(e.to_string())
            }
            ControlError::Propose(ProposeError::Refused(_))
            | ControlError::FailedPrecondition(_) => Status::failed_precondition(e.to_string()),
            ControlError::Propose(_) | ControlError::NoCluster => {
                Status::unavailable(e.to_string())
            }
            ControlError::Ca(_) => Status::internal(e.to_string()),
        }
    }
}

pub fn description_from_pb(d: pb::NodeDescription) -> NodeDescription {
    NodeDescription {
        hostname: d.hostname,
        os: d.os,
        arch: d.arch,
        cpus: d.cpus,
        memory_bytes: d.memory_bytes,
        engine_version: d.engine_version,
        runtime_unavailable: d.runtime_unavailable,
    }
}

pub fn description_to_pb(d: &NodeDescription) -> pb::NodeDescription {
    pb::NodeDescription {
        hostname: d.hostname.clone(),
        os: d.os.clone(),
        arch: d.arch.clone(),
        cpus: d.cpus,
        memory_bytes: d.memory_bytes,
        engine_version: d.engine_version.clone(),
        runtime_unavailable: d.runtime_unavailable,
    }
}

/// The API's view of a node; `leader` is the Raft id of the current leader.
pub fn node_to_pb(n: &Node, leader: Option<u64>, voters: &[u64]) -> pb::Node {
    pb::Node {
        id: n.id.to_string(),
        meta: Some(pb::Meta {
            version: n.meta.version,
            created_at: n.meta.created_at,
            updated_at: n.meta.updated_at,
        }),
        spec: Some(pb::NodeSpec {
            desired_role: n.spec.desired_role.as_str().to_owned(),
            availability: n.spec.availability.as_str().to_owned(),
            labels: n.spec.labels.clone().into_iter().collect(),
        }),
        description: Some(description_to_pb(&n.description)),
        status: Some(pb::NodeStatus {
            state: n.status.state.as_str().to_owned(),
            message: n.status.message.clone(),
            addr: n.status.addr.clone(),
        }),
        role: n.role.as_str().to_owned(),
        manager_status: n.manager.as_ref().map(|mi| pb::ManagerStatus {
            raft_id: mi.raft_id,
            addr: mi.addr.clone(),
            leader: leader == Some(mi.raft_id),
            reachability: if voters.contains(&mi.raft_id) && n.status.state == NodeState::Ready {
                "reachable".into()
            } else {
                "unreachable".into()
            },
        }),
    }
}

pub fn list_nodes(m: &Manager) -> Vec<pb::Node> {
    let leader = m.raft.metrics().borrow().current_leader;
    let (voters, _) = m.members();
    m.store.view(|s| {
        s.nodes
            .values()
            .map(|n| node_to_pb(n, leader, &voters))
            .collect()
    })
}

pub fn inspect_node(m: &Manager, key: &str) -> Result<pb::Node, ControlError> {
    let leader = m.raft.metrics().borrow().current_leader;
    let (voters, _) = m.members();
    m.store
        .view(|s| s.find_node(key).map(|n| node_to_pb(n, leader, &voters)))
        .map_err(ControlError::from)
}

/// Whether demoting `node` keeps the cluster able to elect a leader: the remaining voters
/// must still hold a quorum of ready managers (Swarm's guard).
fn check_demote(nodes: &[Node], node: &Node) -> Result<(), ControlError> {
    let managers: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.spec.desired_role == NodeRole::Manager)
        .collect();
    if node.spec.desired_role != NodeRole::Manager {
        return Ok(());
    }
    if managers.len() <= 1 {
        return Err(ControlError::FailedPrecondition(format!(
            "attempting to demote the last manager of the cluster: node {} is the only manager",
            node.description.hostname
        )));
    }
    let remaining = managers.len() - 1;
    let reachable = managers
        .iter()
        .filter(|n| n.id != node.id && n.status.state == NodeState::Ready)
        .count();
    if reachable < remaining / 2 + 1 {
        return Err(ControlError::FailedPrecondition(format!(
            "can't demote {}: the remaining managers would lose their quorum ({reachable} of {remaining} reachable)",
            node.description.hostname
        )));
    }
    Ok(())
}

/// Applies `req` to the node it names. A non-zero `req.version` must be the stored version.
pub async fn update_node(
    m: &Manager,
    req: pb::UpdateNodeRequest,
) -> Result<pb::Node, ControlError> {
    let availability = match req.availability.as_str() {
        "" => None,
        s => Some(NodeAvailability::parse(s).ok_or_else(|| {
            ControlError::InvalidArgument(format!(
                "invalid availability {s:?}: expected active, pause or drain"
            ))
        })?),
    };
    let desired_role = match req.desired_role.as_str() {
        "" => None,
        s => Some(NodeRole::parse(s).ok_or_else(|| {
            ControlError::InvalidArgument(format!("invalid role {s:?}: expected worker or manager"))
        })?),
    };
    for k in req.label_add.keys() {
        if k.is_empty() {
            return Err(ControlError::InvalidArgument("a label needs a key".into()));
        }
    }
    // Read, change, write; retried on a concurrent change unless the caller pinned a version.
    for _ in 0..5 {
        // The other nodes matter only to the demotion guard.
        let (node, nodes) = m.store.view(|s| {
            s.find_node(&req.node).map(|n| {
                let others = if desired_role.is_some() {
                    s.nodes.values().cloned().collect::<Vec<_>>()
                } else {
                    Vec::new()
                };
                (n.clone(), others)
            })
        })?;
        if req.version != 0 && req.version != node.meta.version {
            return Err(ProposeError::Refused(CommandError::StaleVersion {
                kind: "node".into(),
                id: node.id.to_string(),
                current: node.meta.version,
                given: req.version,
            })
            .into());
        }
        let mut n = node.clone();
        if let Some(a) = availability {
            n.spec.availability = a;
        }
        for (k, v) in &req.label_add {
            n.spec.labels.insert(k.clone(), v.clone());
        }
        for k in &req.label_rm {
            if n.spec.labels.remove(k).is_none() {
                return Err(ControlError::InvalidArgument(format!(
                    "label {k} does not exist on node {}",
                    req.node
                )));
            }
        }
        if let Some(role) = desired_role {
            if role == NodeRole::Worker {
                check_demote(&nodes, &node)?;
            }
            if role == NodeRole::Manager && n.manager.is_none() {
                if n.cluster_addr.is_empty() {
                    return Err(ControlError::FailedPrecondition(format!(
                        "node {} has never reported its address; it can be promoted once it is ready",
                        req.node
                    )));
                }
                n.manager = Some(ManagerInfo {
                    raft_id: crate::ids::new_raft_id(),
                    addr: n.cluster_addr.clone(),
                });
            }
            n.spec.desired_role = role;
        }
        n.meta.updated_at = now_ms();
        match m.proposer.propose(Command::UpdateNode(Box::new(n))).await {
            Ok(_) => return inspect_node(m, node.id.as_str()),
            Err(ProposeError::Refused(CommandError::StaleVersion { .. })) if req.version == 0 => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::FailedPrecondition(format!(
        "node {} kept changing; try again",
        req.node
    )))
}

pub async fn remove_node(m: &Manager, key: &str, force: bool) -> Result<(), ControlError> {
    let node = m.store.view(|s| s.find_node(key).cloned())?;
    if node.spec.desired_role == NodeRole::Manager || node.role == NodeRole::Manager {
        return Err(ControlError::FailedPrecondition(format!(
            "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
            node.description.hostname
        )));
    }
    if node.status.state == NodeState::Ready && !force {
        return Err(ControlError::FailedPrecondition(format!(
            "node {} is not down and can't be removed (use --force)",
            node.description.hostname
        )));
    }
    m.proposer
        .propose(Command::RemoveNode {
            id: node.id.clone(),
        })
        .await?;
    Ok(())
}

/// The join token for `role`, made anew first when `rotate` (the old one stops working at
/// once: joins check the secret in the store).
pub async fn join_token(m: &Manager, role: NodeRole, rotate: bool) -> Result<String, ControlError> {
    if rotate {
        for attempt in 0..5 {
            let mut c = m
                .store
                .view(|s| s.cluster.clone())
                .ok_or(ControlError::NoCluster)?;
            match role {
                NodeRole::Worker => c.join_secrets.worker = generate_secret(),
                NodeRole::Manager => c.join_secrets.manager = generate_secret(),
            }
            c.meta.updated_at = now_ms();
            match m
                .proposer
                .propose(Command::UpdateCluster(Box::new(c)))
                .await
            {
                Ok(_) => break,
                Err(ProposeError::Refused(CommandError::StaleVersion { .. })) if attempt < 4 => {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let c = m
        .store
        .view(|s| s.cluster.clone())
        .ok_or(ControlError::NoCluster)?;
    let ca = RootCa::from_pem(&c.root_ca.cert_pem, &c.root_ca.key_pem)?;
    let secret = match role {
        NodeRole::Worker => c.join_secrets.worker,
        NodeRole::Manager => c.join_secrets.manager,
    };
    Ok(JoinToken::new(&ca, secret).to_string())
}

/// Where to tell joining nodes to go: the leader's address, else this manager's.
pub fn join_addr(m: &Manager) -> String {
    m.leader().map(|(_, a)| a).unwrap_or_else(|| m.addr.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::NodeId;

    fn mgr(id: &str, state: NodeState) -> Node {
        let mut n = Node {
            id: NodeId::from(id),
            ..Default::default()
        };
        n.spec.desired_role = NodeRole::Manager;
        n.status.state = state;
        n.description.hostname = id.into();
        n
    }

    #[test]
    fn the_last_manager_cannot_be_demoted() {
        let a = mgr("a", NodeState::Ready);
        assert!(check_demote(std::slice::from_ref(&a), &a).is_err());
    }

    #[test]
    fn demoting_must_keep_a_quorum_of_ready_managers() {
        let nodes = vec![
            mgr("a", NodeState::Ready),
            mgr("b", NodeState::Ready),
            mgr("c", NodeState::Down),
        ];
        // Demoting a leaves b (ready) and c (down): 1 of 2 reachable, no quorum.
        assert!(check_demote(&nodes, &nodes[0]).is_err());
        // Demoting c leaves a and b, both ready.
        assert!(check_demote(&nodes, &nodes[2]).is_ok());
    }
}
