//! Orchestrators (leader only): they keep each service's tasks in line with its spec.
//! Each is a pure `reconcile` over a view of the store that returns [`Action`]s; the loop in
//! [`run`] applies them as one batch per pass. Swarm's semantics (swarmkit
//! `design/orchestrators.md`): one task per slot for replicated services, one per eligible
//! node for global ones, replacement by restart policy, replacement of tasks on nodes that
//! are down or drained, task history kept to [`TASK_HISTORY`] per slot.

mod global;
mod replicated;
mod restart;
mod run;
pub mod update;

pub use global::reconcile_global;
pub use replicated::reconcile_replicated;
pub use restart::{restart_decision, start_due, RestartDecision};
pub use run::{pass, run};

use rswarm_proto::model::{
    Node, NodeAvailability, NodeState, Service, ServiceId, Task, TaskId, TaskState, UpdateStatus,
};

/// Old tasks kept per slot (Swarm's task history retention limit).
pub const TASK_HISTORY: usize = 5;

/// What an orchestrator wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create this task.
    Create(Box<Task>),
    /// Change a task's desired state (only ever forward).
    SetDesired { task: TaskId, state: TaskState },
    /// Delete a task from the store.
    Remove(TaskId),
    /// Record where a rolling update stands.
    UpdateStatus {
        service: ServiceId,
        status: UpdateStatus,
    },
    /// Roll the service back to its previous spec.
    Rollback { service: ServiceId, message: String },
}

/// The rolling-update part of a reconcile: the actions for `step`'s status and rollback,
/// and the ids of the live tasks to replace now.
pub fn update_actions(
    svc: &Service,
    live: &[&Task],
    all: &[&Task],
    stopping: u64,
    now: u64,
    actions: &mut Vec<Action>,
    wake: &mut Option<u64>,
) -> std::collections::BTreeSet<TaskId> {
    let st = update::step(svc, live, all, stopping, now);
    if let Some(status) = st.status {
        actions.push(Action::UpdateStatus {
            service: svc.id.clone(),
            status,
        });
    }
    if let Some(message) = st.rollback {
        actions.push(Action::Rollback {
            service: svc.id.clone(),
            message,
        });
    }
    if let Some(w) = st.wake {
        *wake = Some(wake.map_or(w, |x| x.min(w)));
    }
    st.replace.into_iter().collect()
}

/// Whether the update (or rollback) under way starts a replacement before stopping the
/// task it replaces (`order: start-first`).
pub fn starts_first(svc: &Service) -> bool {
    let cfg = if svc.update_status.state == rswarm_proto::model::UpdateState::RollbackStarted {
        &svc.spec.rollback_config
    } else {
        &svc.spec.update_config
    };
    cfg.order == rswarm_proto::model::UpdateOrder::StartFirst
}

/// A task that stopped by itself and that the restart policy did not replace (Swarm's
/// desired state for it is shutdown): its slot (or node) stays taken, with no live task,
/// until the service's spec changes.
pub fn done_for_good(svc: &Service, t: &Task) -> bool {
    !is_live(t)
        && matches!(
            t.status.state,
            TaskState::Failed | TaskState::Complete | TaskState::Rejected
        )
        && t.spec_version == svc.spec_version
}

/// A task that is meant to run (or is still starting).
pub fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
}

/// An old task told to stop by a rolling update and still stopping: its replacement waits
/// for it (stop-first), unless its node is lost.
pub fn is_stopping_for_update(
    svc: &Service,
    t: &Task,
    nodes: &std::collections::BTreeMap<rswarm_proto::model::NodeId, Node>,
) -> bool {
    !is_live(t)
        && t.spec_version != svc.spec_version
        && t.status.state >= TaskState::Assigned
        && !t.status.state.is_terminal()
        && !t.node_id.as_ref().is_some_and(|n| node_lost(nodes.get(n)))
}

/// A live task that has stopped by itself.
pub fn has_stopped(t: &Task) -> bool {
    is_live(t) && t.status.state.is_terminal()
}

/// Tasks on this node must be moved elsewhere: it is down, drained, or gone.
pub fn node_lost(node: Option<&Node>) -> bool {
    match node {
        None => true,
        Some(n) => {
            n.status.state == NodeState::Down || n.spec.availability == NodeAvailability::Drain
        }
    }
}
