//! Tasks: one container's worth of a service, placed on a node.
use super::{Meta, NetworkAttachment, NodeId, ServiceId, TaskId, TaskSpec};
use serde::{Deserialize, Serialize};

/// A task's lifecycle, as Swarm's. `Ord` follows the lifecycle: a task's observed state only
/// moves forward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => TaskState::New,
            "pending" => TaskState::Pending,
            "assigned" => TaskState::Assigned,
            "accepted" => TaskState::Accepted,
            "preparing" => TaskState::Preparing,
            "ready" => TaskState::Ready,
            "starting" => TaskState::Starting,
            "running" => TaskState::Running,
            "complete" => TaskState::Complete,
            "shutdown" => TaskState::Shutdown,
            "failed" => TaskState::Failed,
            "rejected" => TaskState::Rejected,
            "remove" => TaskState::Remove,
            "orphaned" => TaskState::Orphaned,
            _ => return None,
        })
    }

    /// The task will not run again.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    /// Observed states only move forward (swarmkit's rule).
    pub fn can_transition_to(self, next: TaskState) -> bool {
        next > self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub message: String,
    /// Why the task failed or was rejected.
    pub err: String,
    pub exit_code: Option<i32>,
    pub container_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub meta: Meta,
    pub service_id: ServiceId,
    /// Replicated services number their tasks 1..=replicas; global services use 0.
    pub slot: u64,
    /// Set once scheduled (and from the start for global tasks).
    pub node_id: Option<NodeId>,
    /// The spec the task was made from, and its version.
    pub spec: TaskSpec,
    pub spec_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// The service's name when the task was made, for naming it.
    pub service_name: String,
    /// The networks the task joins and its address on each, allocated when the task is
    /// made (a task that could not get one waits in `New`).
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
}

impl Task {
    /// Whether the task's network addresses are still its own. They are released once the
    /// task has stopped for good, or when it is no longer wanted before it was ever given
    /// to a node (it will never run then).
    pub fn holds_addresses(&self) -> bool {
        let stopped = self.status.state.is_terminal();
        let never_to_run =
            self.desired_state > TaskState::Running && self.status.state <= TaskState::Pending;
        !stopped && !never_to_run
    }
}

/// Task names, from one place (swarmkit's `api/naming`): `web.1` for slot 1 of a replicated
/// service, `web.<node id>` for a global one.
pub mod naming {
    use super::Task;

    pub fn task_name(t: &Task) -> String {
        match (&t.node_id, t.slot) {
            (_, slot) if slot > 0 => format!("{}.{}", t.service_name, slot),
            (Some(node), _) => format!("{}.{}", t.service_name, node),
            (None, _) => format!("{}.{}", t.service_name, t.id),
        }
    }

    /// The container's name on its node: `web.1.<task id>`, as Docker's.
    pub fn container_name(t: &Task) -> String {
        format!("{}.{}", task_name(t), t.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        assert!(TaskState::Pending.can_transition_to(TaskState::Assigned));
        assert!(TaskState::Running.can_transition_to(TaskState::Failed));
        assert!(!TaskState::Running.can_transition_to(TaskState::Starting));
        assert!(!TaskState::Failed.can_transition_to(TaskState::Failed));
        assert!(TaskState::Complete.is_terminal());
        assert!(!TaskState::Running.is_terminal());
    }

    #[test]
    fn names_follow_swarm() {
        let mut t = Task {
            id: "t1".into(),
            service_name: "web".into(),
            slot: 3,
            ..Default::default()
        };
        assert_eq!(naming::task_name(&t), "web.3");
        t.slot = 0;
        t.node_id = Some("n1".into());
        assert_eq!(naming::task_name(&t), "web.n1");
        assert_eq!(naming::container_name(&t), "web.n1.t1");
        for s in ["new", "running", "orphaned"] {
            assert_eq!(TaskState::parse(s).map(TaskState::as_str), Some(s));
        }
    }
}
