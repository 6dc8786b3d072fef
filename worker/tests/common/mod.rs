//! Fixtures for the task manager tests: tasks as the dispatcher sends them, and a recorder
//! of the statuses a `TaskManager` reports.

#![allow(dead_code)]

use rswarm_proto::model::{
    ContainerSpec, HealthCheck, ServiceId, Task, TaskId, TaskSpec, TaskState, TaskStatus,
};
use rswarm_worker::tasks::Reports;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A task assigned to this node, wanted running.
pub fn task(id: &str, image: &str) -> Task {
    Task {
        id: id.into(),
        service_id: ServiceId("svc".into()),
        service_name: "web".into(),
        slot: 1,
        node_id: Some("node1".into()),
        spec: TaskSpec {
            container: ContainerSpec {
                image: image.into(),
                ..Default::default()
            },
            ..Default::default()
        },
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Assigned,
            message: "assigned".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn with_health(mut t: Task, hc: HealthCheck) -> Task {
    t.spec.container.healthcheck = Some(hc);
    t
}

pub fn healthcheck(interval: Duration, retries: u32, start_period: Duration) -> HealthCheck {
    HealthCheck {
        test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
        interval,
        timeout: Duration::from_secs(1),
        start_period,
        retries,
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One status as the agent would have sent it, with the (Tokio) time it was taken.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: TaskStatus,
    pub at: Instant,
}

/// Takes reports as the agent's session does (`take`, woken by `notify`) and keeps every
/// status seen, per task.
pub struct Recorder {
    reports: Arc<Reports>,
    pub seen: BTreeMap<TaskId, Vec<Seen>>,
    pub t0: Instant,
}

impl Recorder {
    pub fn new(reports: Arc<Reports>) -> Self {
        Self {
            reports,
            seen: BTreeMap::new(),
            t0: Instant::now(),
        }
    }

    fn drain(&mut self) -> bool {
        let taken = self.reports.take();
        let any = !taken.is_empty();
        let at = Instant::now();
        for (id, status) in taken {
            self.seen.entry(id).or_default().push(Seen { status, at });
        }
        any
    }

    pub fn latest(&self, id: &TaskId) -> Option<&Seen> {
        self.seen.get(id).and_then(|v| v.last())
    }

    pub fn states(&self, id: &TaskId) -> Vec<TaskState> {
        self.seen
            .get(id)
            .map(|v| v.iter().map(|s| s.status.state).collect())
            .unwrap_or_default()
    }

    /// Waits until `id`'s latest status has `state` and returns it; panics after `within`
    /// (Tokio time) with what was seen.
    pub async fn until(&mut self, id: &TaskId, state: TaskState, within: Duration) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if let Some(s) = self.latest(id) {
                if s.status.state == state {
                    return s.clone();
                }
                assert!(
                    s.status.state < state,
                    "task {id}: wanted {state:?}, got past it: {:?}",
                    self.states(id)
                );
            }
            tokio::select! {
                _ = self.reports.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "task {id}: not {state:?} after {within:?}; seen {:?}",
                    self.seen.get(id).map(|v| v.iter().map(|s| &s.status).collect::<Vec<_>>())
                ),
            }
        }
    }

    /// Waits until `id`'s latest status is terminal (complete, shutdown, failed, ...).
    pub async fn until_terminal(&mut self, id: &TaskId, within: Duration) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if let Some(s) = self.latest(id).filter(|s| s.status.state.is_terminal()) {
                return s.clone();
            }
            tokio::select! {
                _ = self.reports.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "task {id}: not finished after {within:?}; seen {:?}",
                    self.states(id)
                ),
            }
        }
    }

    /// Asserts that nothing is reported for `within` (Tokio time).
    pub async fn quiet_for(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            assert!(!self.drain(), "unexpected reports: {:?}", self.seen);
            tokio::select! {
                _ = self.reports.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    assert!(!self.drain(), "unexpected reports: {:?}", self.seen);
                    return;
                }
            }
        }
    }

    /// Time since the recorder was made.
    pub fn since_t0(&self, s: &Seen) -> Duration {
        s.at - self.t0
    }
}
