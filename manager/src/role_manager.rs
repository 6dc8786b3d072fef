//! The role manager (leader only) keeps Raft membership in line with node roles, as
//! swarmkit's roleManager: a node that should be a manager is added as a learner, promoted
//! to voter once caught up, then marked a manager; a node that should be a worker leaves
//! the voters first and is marked a worker after.

use crate::ids::now_ms;
use crate::manager::Manager;
use crate::proposer::Proposer;
use openraft::{BasicNode, ChangeMembers};
use rswarm_proto::model::{Command, Node, NodeRole};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// A learner within this many entries of the leader's log counts as caught up.
const CAUGHT_UP_SLACK: u64 = 100;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One thing to do to move membership toward the roles in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleAction {
    AddLearner {
        raft_id: u64,
        addr: String,
    },
    PromoteVoter {
        raft_id: u64,
    },
    RemoveMember {
        raft_id: u64,
    },
    MarkRole {
        node: Box<Node>,
        role: NodeRole,
        clear_manager: bool,
    },
}

/// What to do next, given the nodes and the Raft membership. Pure, so it is tested alone.
pub fn plan(
    nodes: &[Node],
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
    matched: &dyn Fn(u64) -> Option<u64>,
    last_log_index: u64,
) -> Vec<RoleAction> {
    let mut out = Vec::new();
    for n in nodes {
        match (n.spec.desired_role, &n.manager) {
            (NodeRole::Manager, Some(mi)) => {
                if voters.contains(&mi.raft_id) {
                    if n.role != NodeRole::Manager {
                        out.push(RoleAction::MarkRole {
                            node: Box::new(n.clone()),
                            role: NodeRole::Manager,
                            clear_manager: false,
                        });
                    }
                } else if learners.contains(&mi.raft_id) {
                    let caught_up =
                        matched(mi.raft_id).is_some_and(|m| m + CAUGHT_UP_SLACK >= last_log_index);
                    if caught_up {
                        out.push(RoleAction::PromoteVoter {
                            raft_id: mi.raft_id,
                        });
                    }
                } else {
                    out.push(RoleAction::AddLearner {
                        raft_id: mi.raft_id,
                        addr: mi.addr.clone(),
                    });
                }
            }
            (NodeRole::Worker, Some(mi)) => {
                let member = voters.contains(&mi.raft_id) || learners.contains(&mi.raft_id);
                if member {
                    // Never remove the last voter: the control API refuses that demotion,
                    // and this keeps a racing one from erasing the cluster.
                    if !(voters.contains(&mi.raft_id) && voters.len() == 1) {
                        out.push(RoleAction::RemoveMember {
                            raft_id: mi.raft_id,
                        });
                    }
                } else {
                    out.push(RoleAction::MarkRole {
                        node: Box::new(n.clone()),
                        role: NodeRole::Worker,
                        clear_manager: true,
                    });
                }
            }
            (NodeRole::Worker, None) if n.role == NodeRole::Manager => {
                out.push(RoleAction::MarkRole {
                    node: Box::new(n.clone()),
                    role: NodeRole::Worker,
                    clear_manager: false,
                });
            }
            _ => {}
        }
    }
    out
}

pub async fn run(m: Arc<Manager>) {
    loop {
        let nodes: Vec<Node> = m.store.view(|s| s.nodes.values().cloned().collect());
        let metrics = m.raft.metrics().borrow().clone();
        let mem = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let learners: BTreeSet<u64> = mem.learner_ids().collect();
        let replication = metrics.replication.clone().unwrap_or_default();
        let matched = |id: u64| replication.get(&id).and_then(|l| l.map(|l| l.index));
        let last = metrics.last_log_index.unwrap_or(0);
        for action in plan(&nodes, &voters, &learners, &matched, last) {
            if let Err(e) = execute(&m, action.clone()).await {
                debug!(?action, "role change step: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn execute(m: &Manager, action: RoleAction) -> Result<(), String> {
    match action {
        RoleAction::AddLearner { raft_id, addr } => {
            info!(raft.id = raft_id, %addr, "adding manager as raft learner");
            tokio::time::timeout(
                STEP_TIMEOUT,
                m.raft.add_learner(raft_id, BasicNode::new(addr), false),
            )
            .await
            .map_err(|_| "timed out".to_owned())?
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        RoleAction::PromoteVoter { raft_id } => {
            info!(raft.id = raft_id, "promoting learner to voter");
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([raft_id]));
            tokio::time::timeout(STEP_TIMEOUT, m.raft.change_membership(change, false))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        RoleAction::RemoveMember { raft_id } => {
            info!(raft.id = raft_id, "removing manager from raft");
            let (voters, _) = m.members();
            let change = if voters.contains(&raft_id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([raft_id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([raft_id]))
            };
            let r = tokio::time::timeout(STEP_TIMEOUT, m.raft.change_membership(change, false))
                .await
                .map_err(|_| "timed out".to_owned())?;
            if let Err(e) = &r {
                warn!(raft.id = raft_id, "remove from raft: {e}");
            }
            // A voter removed with `retain = false` is also gone as a learner; drop any
            // learner left behind.
            let (_, learners) = m.members();
            if learners.contains(&raft_id) {
                let change = ChangeMembers::RemoveNodes(BTreeSet::from([raft_id]));
                let _ = tokio::time::timeout(STEP_TIMEOUT, m.raft.change_membership(change, false))
                    .await;
            }
            r.map(|_| ()).map_err(|e| e.to_string())
        }
        RoleAction::MarkRole {
            node,
            role,
            clear_manager,
        } => {
            info!(node.id = %node.id, role = role.as_str(), "node role in effect");
            let mut n = *node;
            n.role = role;
            if clear_manager {
                n.manager = None;
            }
            n.meta.updated_at = now_ms();
            m.proposer
                .propose(Command::UpdateNode(Box::new(n)))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{ManagerInfo, NodeId};

    fn node(id: &str, desired: NodeRole, role: NodeRole, raft: Option<u64>) -> Node {
        let mut n = Node {
            id: NodeId::from(id),
            role,
            manager: raft.map(|r| ManagerInfo {
                raft_id: r,
                addr: format!("127.0.0.1:{r}"),
            }),
            ..Default::default()
        };
        n.spec.desired_role = desired;
        n
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_new_manager_becomes_learner_then_voter_then_manager() {
        let n = node("b", NodeRole::Manager, NodeRole::Worker, Some(2));
        let none = |_| None;
        let a = plan(std::slice::from_ref(&n), &set(&[1]), &set(&[]), &none, 10);
        assert_eq!(
            a,
            vec![RoleAction::AddLearner {
                raft_id: 2,
                addr: "127.0.0.1:2".into()
            }]
        );
        let lagging = |_| Some(1);
        assert!(plan(
            std::slice::from_ref(&n),
            &set(&[1]),
            &set(&[2]),
            &lagging,
            500
        )
        .is_empty());
        let caught = |_| Some(10);
        let a = plan(
            std::slice::from_ref(&n),
            &set(&[1]),
            &set(&[2]),
            &caught,
            10,
        );
        assert_eq!(a, vec![RoleAction::PromoteVoter { raft_id: 2 }]);
        let a = plan(&[n], &set(&[1, 2]), &set(&[]), &caught, 10);
        assert!(matches!(
            &a[..],
            [RoleAction::MarkRole {
                role: NodeRole::Manager,
                ..
            }]
        ));
    }

    #[test]
    fn a_demoted_manager_leaves_raft_before_it_is_a_worker() {
        let n = node("b", NodeRole::Worker, NodeRole::Manager, Some(2));
        let none = |_| None;
        let a = plan(
            std::slice::from_ref(&n),
            &set(&[1, 2]),
            &set(&[]),
            &none,
            10,
        );
        assert_eq!(a, vec![RoleAction::RemoveMember { raft_id: 2 }]);
        let a = plan(&[n], &set(&[1]), &set(&[]), &none, 10);
        assert!(matches!(
            &a[..],
            [RoleAction::MarkRole {
                role: NodeRole::Worker,
                clear_manager: true,
                ..
            }]
        ));
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        let n = node("a", NodeRole::Worker, NodeRole::Manager, Some(1));
        let none = |_| None;
        assert!(plan(&[n], &set(&[1]), &set(&[]), &none, 10).is_empty());
    }
}
