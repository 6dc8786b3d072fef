//! The orchestration loop (leader only): reconcile every service, clean up after removed
//! services, give new tasks their network addresses, schedule pending tasks, and commit
//! the outcome as one batch per pass. A pass runs after store changes (debounced) and when
//! a delayed restart falls due.

use super::{is_live, node_lost, reconcile_global, reconcile_replicated, Action};
use crate::allocator::{service_networks, Allocator};
use crate::ids::{now_ms, random_id};
use crate::manager::Manager;
use crate::proposer::Proposer;
use crate::scheduler::{self, ClusterSnapshot};
use crate::store::State;
use rswarm_proto::model::{
    Command, NetworkAttachment, Node, Service, ServiceId, ServiceMode, Task, TaskId, TaskState,
    TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// The most commands committed in one Raft entry.
const BATCH: usize = 500;

pub async fn run(m: Arc<Manager>) {
    let mut events = m.store.subscribe();
    loop {
        let now = now_ms();
        let (cmds, wake) = m.store.view(|s| pass(s, now));
        for chunk in cmds.chunks(BATCH) {
            if let Err(e) = m.proposer.propose(Command::Batch(chunk.to_vec())).await {
                warn!("orchestrator: {e}");
            }
        }
        let idle = wake
            .map(|w| Duration::from_millis(w.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(2))
            .min(Duration::from_secs(2));
        // Wait for a change, then let a burst of changes settle before the next pass.
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r { return; }
                tokio::time::sleep(Duration::from_millis(15)).await;
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(idle) => {}
        }
    }
}

/// One pass over a view of the store: the commands to commit and when to look again.
pub fn pass(state: &State, now: u64) -> (Vec<Command>, Option<u64>) {
    let (nodes, services, tasks) = (&state.nodes, &state.services, &state.tasks);
    let mut by_service: BTreeMap<&ServiceId, Vec<&Task>> = BTreeMap::new();
    for t in tasks.values() {
        by_service.entry(&t.service_id).or_default().push(t);
    }
    let mut new_id = || TaskId(random_id());
    let mut actions = Vec::new();
    let mut wake: Option<u64> = None;
    for svc in services.values() {
        let ts = by_service.get(&svc.id).map(Vec::as_slice).unwrap_or(&[]);
        let (a, w) = match svc.spec.mode {
            ServiceMode::Replicated { .. } => {
                reconcile_replicated(svc, ts, nodes, now, &mut new_id)
            }
            ServiceMode::Global => {
                // Constraints decide where a global service runs; resources are the
                // scheduler's to check when it assigns the task.
                let constraints =
                    scheduler::parse_constraints(&svc.spec.task.placement.constraints)
                        .unwrap_or_default();
                let fits = |n: &Node| scheduler::constraint::matches_all(&constraints, n);
                reconcile_global(svc, ts, nodes, &fits, now, &mut new_id)
            }
        };
        actions.extend(a);
        if let Some(w) = w {
            wake = Some(wake.map_or(w, |x: u64| x.min(w)));
        }
    }
    // Tasks of removed services: stop them, then forget them once they are done.
    for (sid, ts) in &by_service {
        if services.contains_key(*sid) {
            continue;
        }
        for t in ts {
            if is_live(t) {
                actions.push(Action::SetDesired {
                    task: t.id.clone(),
                    state: TaskState::Shutdown,
                });
            } else {
                let gone = t.status.state.is_terminal()
                    || t.status.state <= TaskState::Pending
                    || t.node_id.as_ref().is_none_or(|n| node_lost(nodes.get(n)));
                if gone {
                    actions.push(Action::Remove(t.id.clone()));
                }
            }
        }
    }

    // Tasks get their addresses as they are made, before any node sees them. The
    // allocator's view is built only when some task needs addresses.
    let mut alloc: Option<Allocator> = None;
    let touched: BTreeSet<TaskId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SetDesired { task, .. } | Action::Remove(task) => Some(task.clone()),
            Action::Create(_) | Action::UpdateStatus { .. } | Action::Rollback { .. } => None,
        })
        .collect();
    // Tasks that could not get addresses before try again (unless this pass changes them:
    // a replaced task would carry a stale version and fail the batch). They go before the
    // tasks made in this pass: the longest waiting get freed addresses first.
    let mut cmds: Vec<Command> = Vec::new();
    for t in tasks.values() {
        if t.status.state != TaskState::New || !is_live(t) || touched.contains(&t.id) {
            continue;
        }
        let Some(svc) = services.get(&t.service_id) else {
            continue;
        };
        let mut next = t.clone();
        let got = attach(&mut alloc, state, Some(svc), &mut next, now);
        if got || next.status.err != t.status.err {
            cmds.push(Command::UpdateTask(Box::new(next)));
        }
    }
    cmds.extend(actions.into_iter().map(|a| match a {
        Action::Create(mut t) => {
            attach(&mut alloc, state, services.get(&t.service_id), &mut t, now);
            Command::CreateTask(t)
        }
        Action::SetDesired { task, state } => Command::SetTaskDesiredState { id: task, state },
        Action::Remove(id) => Command::RemoveTask { id },
        Action::UpdateStatus { service, status } => Command::SetServiceUpdateStatus {
            id: service,
            status,
        },
        Action::Rollback { service, message } => Command::RollbackService {
            id: service,
            message,
        },
    }));
    // Schedule what waits for a node. Tasks created in this pass are scheduled in the next
    // one, which their commit triggers.
    let all: Vec<Task> = tasks.values().cloned().collect();
    let all_nodes: Vec<Node> = nodes.values().cloned().collect();
    let snap = ClusterSnapshot::from_state(&all_nodes, &all);
    let pending: Vec<Task> = tasks
        .values()
        // A restart's replacement (desired `Ready`) is placed and prepared during its delay.
        .filter(|t| t.status.state == TaskState::Pending && is_live(t))
        .cloned()
        .collect();
    // Tasks that already name a node (global ones) are only checked against it.
    let plan = scheduler::schedule(&snap, &pending, now);
    for (task, node) in plan.assign {
        cmds.push(Command::AssignTask {
            id: task,
            node,
            timestamp: now,
        });
    }
    let unschedulable = plan.unschedulable;
    for (id, reason) in unschedulable {
        let Some(t) = tasks.get(&id) else { continue };
        // As swarmkit, the reason is the task's error: `service ps` shows it there.
        if t.status.err != reason {
            debug!(task.id = %id, %reason, "task pending");
            cmds.push(Command::UpdateTaskStatus {
                id,
                status: TaskStatus {
                    state: TaskState::Pending,
                    timestamp: now,
                    message: "pending task scheduling".into(),
                    err: reason,
                    ..t.status.clone()
                },
            });
        }
    }
    cmds.extend(node_endpoints(state, &mut alloc));
    (cmds, wake)
}

/// Every node has its own address on the ingress network (where published ports enter
/// the mesh); a removed node's goes back.
fn node_endpoints(state: &State, alloc: &mut Option<Allocator>) -> Vec<Command> {
    let Some(ingress) = state.ingress_network() else {
        return Vec::new();
    };
    let mut cmds = Vec::new();
    for node in ingress.node_endpoints.keys() {
        if !state.nodes.contains_key(node) {
            cmds.push(Command::SetNodeEndpoint {
                network: ingress.id.clone(),
                node: node.clone(),
                addr: None,
            });
        }
    }
    for node in state.nodes.keys() {
        if ingress.node_endpoints.contains_key(node) {
            continue;
        }
        let alloc = alloc.get_or_insert_with(|| Allocator::new(state));
        match alloc.allocate_address(&ingress.id) {
            Ok(addr) => cmds.push(Command::SetNodeEndpoint {
                network: ingress.id.clone(),
                node: node.clone(),
                addr: Some(addr),
            }),
            Err(e) => {
                warn!(node.id = %node, "no ingress address for the node: {e}");
                break;
            }
        }
    }
    cmds
}

/// Gives a new task an address on each of its service's networks and makes it pending;
/// when that cannot be done, it waits in `New` with the reason as its error. Returns
/// whether it got them.
fn attach(
    alloc: &mut Option<Allocator>,
    state: &State,
    svc: Option<&Service>,
    t: &mut Task,
    now: u64,
) -> bool {
    let networks = svc.map(|s| service_networks(state, s)).unwrap_or_default();
    if networks.is_empty() && t.status.state != TaskState::New {
        return true;
    }
    let alloc = alloc.get_or_insert_with(|| Allocator::new(state));
    match alloc.allocate_task(&networks) {
        Ok(attachments) => {
            t.networks = attachments;
            t.status = TaskStatus {
                state: TaskState::Pending,
                timestamp: now,
                message: "pending task scheduling".into(),
                ..Default::default()
            };
            true
        }
        Err(e) => {
            debug!(task.id = %t.id, "no addresses yet: {e}");
            t.networks = networks
                .into_iter()
                .map(|network| NetworkAttachment {
                    network,
                    addresses: Vec::new(),
                })
                .collect();
            t.status = TaskStatus {
                state: TaskState::New,
                timestamp: now,
                message: "pending network allocation".into(),
                err: e.to_string(),
                ..Default::default()
            };
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::Allocator;
    use rswarm_proto::model::{
        EndpointMode, IpamConfig, Network, NetworkAttachmentConfig, NetworkSpec, ServiceSpec,
    };

    fn state_with(subnet: &str, replicas: u64) -> State {
        let mut s = State::default();
        let spec = NetworkSpec {
            name: "appnet".into(),
            ipam: IpamConfig {
                subnet: Some(subnet.parse().expect("a CIDR")),
                gateway: None,
            },
            ..Default::default()
        };
        let allocation = Allocator::new(&s)
            .allocate_network(&spec)
            .expect("a subnet");
        let net = Network {
            id: "net1".into(),
            spec,
            allocation,
            ..Default::default()
        };
        s.apply(1, &Command::CreateNetwork(Box::new(net)))
            .expect("network");
        let svc = Service {
            id: "s1".into(),
            spec: ServiceSpec {
                name: "web".into(),
                mode: ServiceMode::Replicated { replicas },
                networks: vec![NetworkAttachmentConfig {
                    target: "net1".into(),
                    aliases: Vec::new(),
                }],
                endpoint_mode: EndpointMode::Dnsrr,
                ..Default::default()
            },
            ..Default::default()
        };
        s.apply(2, &Command::CreateService(Box::new(svc)))
            .expect("service");
        s
    }

    fn apply_all(s: &mut State, index: u64, cmds: Vec<Command>) {
        s.apply(index, &Command::Batch(cmds))
            .expect("the pass's batch applies");
    }

    fn addresses(s: &State) -> Vec<String> {
        let mut v: Vec<String> = s
            .tasks
            .values()
            .flat_map(|t| t.networks.iter().flat_map(|a| a.addresses.iter()))
            .map(ToString::to_string)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_tasks_carry_their_addresses() {
        let mut s = state_with("10.31.0.0/24", 3);
        let (cmds, _) = pass(&s, 10);
        apply_all(&mut s, 3, cmds);
        assert_eq!(
            addresses(&s),
            ["10.31.0.2/24", "10.31.0.3/24", "10.31.0.4/24"]
        );
        assert!(s
            .tasks
            .values()
            .all(|t| t.status.state == TaskState::Pending));
    }

    #[test]
    fn a_task_without_a_free_address_waits_in_new_until_one_is_free() {
        // A /30 has the gateway and one more host: one task gets it, the other waits.
        let mut s = state_with("10.31.0.0/30", 2);
        let (cmds, _) = pass(&s, 10);
        apply_all(&mut s, 3, cmds);
        let waiting: Vec<&Task> = s
            .tasks
            .values()
            .filter(|t| t.status.state == TaskState::New)
            .collect();
        assert_eq!(waiting.len(), 1);
        assert!(
            waiting[0].status.err.contains("no free address"),
            "{:?}",
            waiting[0].status
        );
        // Another pass changes nothing while nothing is free.
        let (cmds, _) = pass(&s, 11);
        assert!(
            !cmds.iter().any(|c| matches!(c, Command::UpdateTask(_))),
            "{cmds:?}"
        );
        // The holder fails: its address is released, and the waiting task gets it before
        // the holder's replacement (made in the same pass, it waits now).
        let holder = s
            .tasks
            .values()
            .find(|t| t.status.state == TaskState::Pending)
            .map(|t| t.id.clone())
            .expect("a task with the address");
        s.apply(
            4,
            &Command::UpdateTaskStatus {
                id: holder,
                status: TaskStatus {
                    state: TaskState::Failed,
                    ..Default::default()
                },
            },
        )
        .expect("status");
        let (cmds, _) = pass(&s, 12);
        apply_all(&mut s, 5, cmds);
        assert_eq!(addresses(&s), ["10.31.0.2/30"]);
        let slot2 = s.tasks.values().find(|t| t.slot == 2).expect("slot 2");
        assert_eq!(slot2.status.state, TaskState::Pending);
        assert_eq!(slot2.networks[0].addresses.len(), 1);
    }

    #[test]
    fn a_restarts_replacement_held_ready_is_scheduled_during_its_delay() {
        let mut s = State::default();
        let svc = Service {
            id: "s1".into(),
            spec: ServiceSpec {
                name: "web".into(),
                mode: ServiceMode::Replicated { replicas: 1 },
                ..Default::default()
            },
            ..Default::default()
        };
        s.services.insert(svc.id.clone(), svc.clone());
        let mut node = Node {
            id: "n1".into(),
            ..Default::default()
        };
        node.status.state = rswarm_proto::model::NodeState::Ready;
        s.nodes.insert(node.id.clone(), node);
        let mut old = crate::orchestrator::replicated::new_task(&svc, 1, None, 0, "old".into());
        old.node_id = Some("n1".into());
        old.desired_state = TaskState::Shutdown;
        old.status.state = TaskState::Failed;
        old.status.timestamp = 1_000;
        let mut new = crate::orchestrator::replicated::new_task(&svc, 1, None, 1_010, "new".into());
        new.desired_state = TaskState::Ready;
        s.tasks.insert(old.id.clone(), old);
        s.tasks.insert(new.id.clone(), new);
        let (cmds, wake) = pass(&s, 1_020);
        assert!(
            cmds.iter()
                .any(|c| matches!(c, Command::AssignTask { id, .. } if id.as_str() == "new")),
            "{cmds:?}"
        );
        assert!(
            !cmds
                .iter()
                .any(|c| matches!(c, Command::SetTaskDesiredState { .. })),
            "{cmds:?}"
        );
        assert_eq!(wake, Some(6_000));
    }
}
