//! The orchestration loop (leader only): reconcile every service, clean up after removed
//! services, schedule pending tasks, and commit the outcome as one batch per pass. A pass
//! runs after store changes (debounced) and when a delayed restart falls due.

use super::{is_live, node_lost, reconcile_global, reconcile_replicated, Action};
use crate::ids::{now_ms, random_id};
use crate::manager::Manager;
use crate::proposer::Proposer;
use crate::scheduler::{self, ClusterSnapshot};
use rswarm_proto::model::{
    Command, Node, NodeId, Service, ServiceId, ServiceMode, Task, TaskId, TaskState, TaskStatus,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// The most commands committed in one Raft entry.
const BATCH: usize = 500;

pub async fn run(m: Arc<Manager>) {
    let mut events = m.store.subscribe();
    loop {
        let now = now_ms();
        let (cmds, wake) = m.store.view(|s| pass(&s.nodes, &s.services, &s.tasks, now));
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
pub fn pass(
    nodes: &BTreeMap<NodeId, Node>,
    services: &BTreeMap<ServiceId, Service>,
    tasks: &BTreeMap<TaskId, Task>,
    now: u64,
) -> (Vec<Command>, Option<u64>) {
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

    let mut cmds: Vec<Command> = actions
        .into_iter()
        .map(|a| match a {
            Action::Create(t) => Command::CreateTask(t),
            Action::SetDesired { task, state } => Command::SetTaskDesiredState { id: task, state },
            Action::Remove(id) => Command::RemoveTask { id },
        })
        .collect();

    // Schedule what waits for a node. Tasks created in this pass are scheduled in the next
    // one, which their commit triggers.
    let all: Vec<Task> = tasks.values().cloned().collect();
    let all_nodes: Vec<Node> = nodes.values().cloned().collect();
    let snap = ClusterSnapshot::from_state(&all_nodes, &all);
    let pending: Vec<Task> = tasks
        .values()
        .filter(|t| t.status.state == TaskState::Pending && t.desired_state == TaskState::Running)
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
    (cmds, wake)
}
