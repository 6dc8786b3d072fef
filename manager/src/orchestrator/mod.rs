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

pub use global::reconcile_global;
pub use replicated::reconcile_replicated;
pub use restart::{restart_decision, RestartDecision};
pub use run::run;

use rswarm_proto::model::{Node, NodeAvailability, NodeState, Task, TaskId, TaskState};

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
}

/// A task that is meant to run (or is still starting).
pub fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
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
