//! Restart policy: whether, and when, a stopped task is replaced. As swarmkit's restart
//! supervisor, the replacement is made at once; while its restart delay runs its desired
//! state is `Ready` (the worker prepares it but does not start it), and it is moved to
//! `Running` once [`start_due`] has passed.
use rswarm_proto::model::{RestartCondition, Task, TaskState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Replace it now.
    Now,
    /// Replace it at this time (ms since the epoch), after the restart delay.
    At(u64),
    /// Leave the slot as it is: the policy says no more.
    Never,
}

/// `task` has stopped; `history` holds the earlier tasks of its slot (or node, for global
/// services). Attempts are the replacements already made within the policy's window.
pub fn restart_decision(task: &Task, history: &[&Task], now: u64) -> RestartDecision {
    let policy = &task.spec.restart;
    let failed = match task.status.state {
        TaskState::Complete => task.status.exit_code.is_some_and(|c| c != 0),
        TaskState::Failed | TaskState::Rejected | TaskState::Orphaned => true,
        // Shut down by us (e.g. node lost): always replaced.
        _ => return RestartDecision::Now,
    };
    let allowed = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => failed,
        RestartCondition::Any => true,
    };
    if !allowed {
        return RestartDecision::Never;
    }
    if policy.max_attempts > 0 {
        let window_start = if policy.window.is_zero() {
            0
        } else {
            now.saturating_sub(u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX))
        };
        let attempts = history
            .iter()
            .filter(|t| t.id != task.id && t.meta.created_at >= window_start)
            .count() as u64;
        if attempts >= policy.max_attempts {
            return RestartDecision::Never;
        }
    }
    let delay = u64::try_from(policy.delay.as_millis()).unwrap_or(u64::MAX);
    let at = task.status.timestamp.saturating_add(delay);
    if delay == 0 || at <= now {
        RestartDecision::Now
    } else {
        RestartDecision::At(at)
    }
}

/// When `task`, a restart's replacement held in desired state `Ready`, may start: the stop
/// time of the task it replaced (the newest older one in `history`, its slot's or node's)
/// plus its own restart delay. Computed from the store alone, so a new leader agrees.
pub fn start_due(task: &Task, history: &[&Task]) -> u64 {
    let delay = u64::try_from(task.spec.restart.delay.as_millis()).unwrap_or(u64::MAX);
    let key = (task.meta.created_at, &task.id);
    history
        .iter()
        .filter(|h| (h.meta.created_at, &h.id) < key)
        .max_by_key(|h| (h.meta.created_at, &h.id))
        // Nothing before it (history reaped): no stop to count from.
        .map_or(0, |prev| prev.status.timestamp.saturating_add(delay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::RestartPolicy;
    use std::time::Duration;

    fn stopped(
        id: &str,
        state: TaskState,
        exit: Option<i32>,
        at: u64,
        policy: &RestartPolicy,
    ) -> Task {
        let mut t = Task {
            id: id.into(),
            ..Default::default()
        };
        t.spec.restart = policy.clone();
        t.status.state = state;
        t.status.exit_code = exit;
        t.status.timestamp = at;
        t.meta.created_at = at;
        t
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let p = RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay: Duration::ZERO,
            ..Default::default()
        };
        let ok = stopped("a", TaskState::Complete, Some(0), 0, &p);
        assert_eq!(restart_decision(&ok, &[&ok], 10), RestartDecision::Never);
        let bad = stopped("a", TaskState::Failed, Some(3), 0, &p);
        assert_eq!(restart_decision(&bad, &[&bad], 10), RestartDecision::Now);
    }

    #[test]
    fn max_attempts_counts_replacements() {
        let p = RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay: Duration::ZERO,
            max_attempts: 2,
            ..Default::default()
        };
        let t1 = stopped("1", TaskState::Failed, Some(3), 0, &p);
        let t2 = stopped("2", TaskState::Failed, Some(3), 1, &p);
        let t3 = stopped("3", TaskState::Failed, Some(3), 2, &p);
        assert_eq!(restart_decision(&t1, &[&t1], 5), RestartDecision::Now);
        assert_eq!(restart_decision(&t2, &[&t1, &t2], 5), RestartDecision::Now);
        assert_eq!(
            restart_decision(&t3, &[&t1, &t2, &t3], 5),
            RestartDecision::Never
        );
    }

    #[test]
    fn delay_is_counted_from_the_stop() {
        let p = RestartPolicy {
            delay: Duration::from_secs(5),
            ..Default::default()
        };
        let t = stopped("a", TaskState::Complete, Some(0), 1_000, &p);
        assert_eq!(
            restart_decision(&t, &[&t], 2_000),
            RestartDecision::At(6_000)
        );
        assert_eq!(restart_decision(&t, &[&t], 6_000), RestartDecision::Now);
    }

    #[test]
    fn a_replacement_starts_a_delay_after_the_stop_of_the_task_before_it() {
        let p = RestartPolicy {
            delay: Duration::from_secs(5),
            ..Default::default()
        };
        let old = stopped("a", TaskState::Failed, Some(1), 1_000, &p);
        let mut older = stopped("0", TaskState::Failed, Some(1), 500, &p);
        older.meta.created_at = 0;
        let mut new = stopped("b", TaskState::Preparing, None, 1_010, &p);
        new.meta.created_at = 1_010;
        assert_eq!(start_due(&new, &[&older, &old, &new]), 6_000);
        assert_eq!(start_due(&new, &[&new]), 0);
    }

    #[test]
    fn condition_none_never_restarts() {
        let p = RestartPolicy {
            condition: RestartCondition::None,
            ..Default::default()
        };
        let t = stopped("a", TaskState::Failed, Some(1), 0, &p);
        assert_eq!(restart_decision(&t, &[&t], 10), RestartDecision::Never);
    }
}
