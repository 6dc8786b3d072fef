//! Rolling updates (swarmkit's updater), as a pure step: which outdated tasks to replace
//! now, and what to record about the update. Tasks are outdated when they were made from an
//! older spec version than the service's. Replacement is stop-first (the orchestrator shuts
//! the old task down and creates the new one in the same pass).

use rswarm_proto::model::{
    Service, Task, TaskId, TaskState, UpdateFailureAction, UpdateState, UpdateStatus,
};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpdateStep {
    /// Live tasks to replace now.
    pub replace: Vec<TaskId>,
    /// A new status to record.
    pub status: Option<UpdateStatus>,
    /// Roll back, with this message.
    pub rollback: Option<String>,
    /// Look again at this time (ms): the delay between batches.
    pub wake: Option<u64>,
}

/// One step of the update of `svc`. `live` are its live tasks, one per slot (or node), in
/// the order they should be updated; `all` every task of the service (for failures).
/// `stopping` counts old tasks told to stop whose replacement waits for them (stop-first).
pub fn step(svc: &Service, live: &[&Task], all: &[&Task], stopping: u64, now: u64) -> UpdateStep {
    let mut out = UpdateStep::default();
    let state = svc.update_status.state;
    let rolling_back = state == UpdateState::RollbackStarted;
    let cfg = if rolling_back {
        &svc.spec.rollback_config
    } else {
        &svc.spec.update_config
    };
    let outdated: Vec<&&Task> = live
        .iter()
        .filter(|t| t.spec_version != svc.spec_version)
        .collect();
    let fresh: Vec<&&Task> = live
        .iter()
        .filter(|t| t.spec_version == svc.spec_version)
        .collect();
    let in_progress = fresh
        .iter()
        .filter(|t| t.status.state < TaskState::Running)
        .count() as u64
        + stopping;

    // Failures of tasks made from this spec: the update may be going wrong.
    if matches!(state, UpdateState::Updating) {
        let made: Vec<&&Task> = all
            .iter()
            .filter(|t| t.spec_version == svc.spec_version)
            .collect();
        let failed: Vec<&&Task> = made
            .iter()
            .copied()
            .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
            .collect();
        let allowed = (made.len() as u64 * u64::from(cfg.max_failure_ratio_permille)) / 1000;
        if failed.len() as u64 > allowed {
            let who = failed.first().map(|t| t.id.to_string()).unwrap_or_default();
            match cfg.failure_action {
                UpdateFailureAction::Pause => {
                    out.status = Some(UpdateStatus {
                        state: UpdateState::Paused,
                        message: format!(
                            "update paused due to failure or early termination of task {who}"
                        ),
                    });
                    return out;
                }
                UpdateFailureAction::Rollback => {
                    out.rollback = Some(format!(
                        "update rolled back due to failure or early termination of task {who}"
                    ));
                    return out;
                }
                UpdateFailureAction::Continue => {}
            }
        }
    }
    if state == UpdateState::Paused {
        return out;
    }
    if outdated.is_empty() && stopping == 0 {
        if in_progress == 0 {
            let done = match state {
                UpdateState::Updating => Some((UpdateState::Completed, "update completed")),
                UpdateState::RollbackStarted => {
                    Some((UpdateState::RollbackCompleted, "rollback completed"))
                }
                _ => None,
            };
            if let Some((state, message)) = done {
                out.status = Some(UpdateStatus {
                    state,
                    message: message.into(),
                });
            }
        }
        return out;
    }
    // The delay runs from when the last replaced task started running.
    if !cfg.delay.is_zero() && in_progress == 0 {
        let last = fresh
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.status.timestamp)
            .max();
        if let Some(last) = last {
            let at = last.saturating_add(u64::try_from(cfg.delay.as_millis()).unwrap_or(u64::MAX));
            if now < at {
                out.wake = Some(at);
                return out;
            }
        }
    }
    let budget = if cfg.parallelism == 0 {
        outdated.len() as u64
    } else {
        cfg.parallelism.saturating_sub(in_progress)
    };
    out.replace = outdated
        .iter()
        .take(usize::try_from(budget).unwrap_or(usize::MAX))
        .map(|t| t.id.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{ServiceSpec, UpdateConfig};
    use std::time::Duration;

    fn svc(version: u64, cfg: UpdateConfig) -> Service {
        Service {
            id: "s".into(),
            spec: ServiceSpec {
                update_config: cfg,
                ..Default::default()
            },
            spec_version: version,
            update_status: UpdateStatus {
                state: UpdateState::Updating,
                message: String::new(),
            },
            ..Default::default()
        }
    }

    fn task(id: &str, version: u64, state: TaskState, at: u64) -> Task {
        let mut t = Task {
            id: id.into(),
            spec_version: version,
            ..Default::default()
        };
        t.status.state = state;
        t.status.timestamp = at;
        t
    }

    #[test]
    fn replaces_parallelism_tasks_at_a_time() {
        let s = svc(2, UpdateConfig::default());
        let ts = [
            task("a", 1, TaskState::Running, 0),
            task("b", 1, TaskState::Running, 0),
            task("c", 1, TaskState::Running, 0),
        ];
        let live: Vec<&Task> = ts.iter().collect();
        let st = step(&s, &live, &live, 0, 10);
        assert_eq!(st.replace, vec![TaskId::from("a")]);
        // One new task still starting: nothing more until it runs.
        let ts = [
            task("a2", 2, TaskState::Starting, 0),
            task("b", 1, TaskState::Running, 0),
        ];
        let live: Vec<&Task> = ts.iter().collect();
        assert!(step(&s, &live, &live, 0, 10).replace.is_empty());
        let s0 = svc(
            2,
            UpdateConfig {
                parallelism: 0,
                ..Default::default()
            },
        );
        let ts = [
            task("a", 1, TaskState::Running, 0),
            task("b", 1, TaskState::Running, 0),
        ];
        let live: Vec<&Task> = ts.iter().collect();
        assert_eq!(step(&s0, &live, &live, 0, 10).replace.len(), 2);
    }

    #[test]
    fn waits_the_delay_after_a_batch_runs() {
        let s = svc(
            2,
            UpdateConfig {
                delay: Duration::from_secs(5),
                ..Default::default()
            },
        );
        let ts = [
            task("a2", 2, TaskState::Running, 1_000),
            task("b", 1, TaskState::Running, 0),
        ];
        let live: Vec<&Task> = ts.iter().collect();
        let st = step(&s, &live, &live, 0, 2_000);
        assert!(st.replace.is_empty());
        assert_eq!(st.wake, Some(6_000));
        assert_eq!(
            step(&s, &live, &live, 0, 6_000).replace,
            vec![TaskId::from("b")]
        );
    }

    #[test]
    fn a_failed_new_task_pauses_or_rolls_back() {
        let ts = [
            task("a2", 2, TaskState::Failed, 0),
            task("b", 1, TaskState::Running, 0),
        ];
        let live: Vec<&Task> = ts.iter().collect();
        let st = step(&svc(2, UpdateConfig::default()), &live, &live, 0, 10);
        assert_eq!(st.status.map(|s| s.state), Some(UpdateState::Paused));
        let cfg = UpdateConfig {
            failure_action: UpdateFailureAction::Rollback,
            ..Default::default()
        };
        assert!(step(&svc(2, cfg), &live, &live, 0, 10).rollback.is_some());
    }

    #[test]
    fn completes_when_everything_is_new_and_running() {
        let ts = [task("a2", 2, TaskState::Running, 0)];
        let live: Vec<&Task> = ts.iter().collect();
        let st = step(&svc(2, UpdateConfig::default()), &live, &live, 0, 10);
        assert_eq!(st.status.map(|s| s.state), Some(UpdateState::Completed));
    }
}
