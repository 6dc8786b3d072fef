//! The replicated orchestrator: slots 1..=replicas, one live task each.
use super::{
    done_for_good, has_stopped, is_live, is_stopping_for_update, node_lost, restart_decision,
    start_due, starts_first, update_actions, Action, RestartDecision, TASK_HISTORY,
};
use rswarm_proto::model::{
    Node, NodeId, Service, ServiceMode, Task, TaskId, TaskState, TaskStatus,
};
use std::collections::BTreeMap;

/// What to do for one replicated service. `tasks` are all of its tasks; `new_id` makes task
/// ids. Returns the actions and the earliest time (ms) a delayed restart falls due.
pub fn reconcile_replicated(
    svc: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<NodeId, Node>,
    now: u64,
    new_id: &mut dyn FnMut() -> TaskId,
) -> (Vec<Action>, Option<u64>) {
    let ServiceMode::Replicated { replicas } = svc.spec.mode else {
        return (Vec::new(), None);
    };
    let mut actions = Vec::new();
    let mut wake: Option<u64> = None;
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        slots.entry(t.slot).or_default().push(t);
    }
    // The live task of each slot (the newest; older live ones are leftovers).
    let mut live: BTreeMap<u64, &Task> = BTreeMap::new();
    for (&slot, slot_tasks) in &mut slots {
        slot_tasks.sort_by_key(|t| (t.meta.created_at, t.id.clone()));
        let mut l: Vec<&Task> = slot_tasks.iter().copied().filter(|t| is_live(t)).collect();
        // Start-first: the replacement of an outdated task runs beside it, which keeps
        // serving until the replacement runs.
        let mut overlap = false;
        if let Some(keep) = l.pop() {
            if slot == 0 {
                l.push(keep);
            } else {
                overlap = starts_first(svc)
                    && keep.spec_version == svc.spec_version
                    && keep.status.state != TaskState::Running;
                live.insert(slot, keep);
            }
        }
        for t in l {
            if overlap && t.spec_version != svc.spec_version && !has_stopped(t) {
                continue;
            }
            actions.push(shutdown(t));
        }
    }
    // Scaling down: take slots away from the nodes with the most tasks of the service
    // first, tasks not yet running before running ones, then the highest slots.
    let excess = (live.len() as u64).saturating_sub(replicas);
    for _ in 0..excess {
        let mut per_node: BTreeMap<Option<&NodeId>, u64> = BTreeMap::new();
        for t in live.values() {
            *per_node.entry(t.node_id.as_ref()).or_default() += 1;
        }
        let victim = live
            .iter()
            .max_by_key(|(slot, t)| {
                (
                    per_node.get(&t.node_id.as_ref()).copied().unwrap_or(0),
                    t.status.state != TaskState::Running,
                    **slot,
                )
            })
            .map(|(slot, _)| *slot);
        if let Some(slot) = victim {
            if let Some(t) = live.remove(&slot) {
                actions.push(shutdown(t));
            }
        }
    }
    // Replace what stopped or was lost, as the restart policy says; then, for a rolling
    // update, the next batch of tasks made from an older spec.
    // Slots whose old task a rolling update is stopping: the replacement goes there once
    // it has stopped (stop-first).
    let mut stopping: std::collections::BTreeSet<u64> = slots
        .iter()
        .filter(|(slot, ts)| {
            **slot > 0
                && !live.contains_key(*slot)
                && ts.iter().any(|t| is_stopping_for_update(svc, t, nodes))
        })
        .map(|(slot, _)| *slot)
        .collect();
    let healthy: Vec<&Task> = live.values().copied().filter(|t| !has_stopped(t)).collect();
    let outdated_now = update_actions(
        svc,
        &healthy,
        tasks,
        stopping.len() as u64,
        now,
        &mut actions,
        &mut wake,
    );
    for (&slot, t) in &live {
        if outdated_now.contains(&t.id) {
            if starts_first(svc) && !t.node_id.as_ref().is_some_and(|n| node_lost(nodes.get(n))) {
                // The replacement first; the old task stops once it runs (above).
                actions.push(create(svc, slot, None, TaskState::Running, now, new_id()));
            } else {
                actions.push(shutdown(t));
            }
            stopping.insert(slot);
            continue;
        }
        let lost = t.node_id.as_ref().is_some_and(|n| node_lost(nodes.get(n)));
        // Replace it, with the replacement's desired state.
        let replace = if lost {
            Some(TaskState::Running)
        } else if has_stopped(t) {
            match restart_decision(t, &slots[&slot], now) {
                RestartDecision::Now => Some(TaskState::Running),
                RestartDecision::At(at) => {
                    // Made now and prepared during the delay; started once it is over.
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    Some(TaskState::Ready)
                }
                RestartDecision::Never => {
                    // As Swarm's: no longer wanted, and no replacement.
                    actions.push(shutdown(t));
                    None
                }
            }
        } else {
            if t.desired_state == TaskState::Ready {
                start_when_due(t, &slots[&slot], now, &mut actions, &mut wake);
            }
            None
        };
        if let Some(desired) = replace {
            actions.push(shutdown(t));
            actions.push(create(svc, slot, None, desired, now, new_id()));
        }
    }
    // Scaling up (and slots whose old task has stopped): new tasks in the lowest free
    // slots.
    live.retain(|_, t| !outdated_now.contains(&t.id));
    // Slots whose task stopped and was not replaced stay taken.
    let done: std::collections::BTreeSet<u64> = slots
        .iter()
        .filter(|(slot, ts)| {
            **slot > 0
                && **slot <= replicas
                && !live.contains_key(*slot)
                && !stopping.contains(*slot)
                && ts.last().is_some_and(|t| done_for_good(svc, t))
        })
        .map(|(slot, _)| *slot)
        .collect();
    let missing = replicas.saturating_sub((live.len() + stopping.len() + done.len()) as u64);
    let mut slot = 0;
    for _ in 0..missing {
        slot += 1;
        while live.contains_key(&slot) || stopping.contains(&slot) || done.contains(&slot) {
            slot += 1;
        }
        actions.push(create(svc, slot, None, TaskState::Running, now, new_id()));
    }
    for slot_tasks in slots.values() {
        actions.extend(reap(slot_tasks));
    }
    (actions, wake)
}

/// A restart's replacement held in desired state `Ready`: to `Running` once its restart
/// delay is over, else a wake-up then. `history` is its slot's (or node's) tasks.
pub fn start_when_due(
    t: &Task,
    history: &[&Task],
    now: u64,
    actions: &mut Vec<Action>,
    wake: &mut Option<u64>,
) {
    let due = start_due(t, history);
    if due <= now {
        actions.push(Action::SetDesired {
            task: t.id.clone(),
            state: TaskState::Running,
        });
    } else {
        *wake = Some(wake.map_or(due, |w| w.min(due)));
    }
}

/// Creating a new task for `slot` (and `node`, for global services), with the desired
/// state it starts in (`Ready` for a restart's replacement still waiting out its delay).
pub fn create(
    svc: &Service,
    slot: u64,
    node: Option<NodeId>,
    desired: TaskState,
    now: u64,
    id: TaskId,
) -> Action {
    let mut t = new_task(svc, slot, node, now, id);
    t.desired_state = desired;
    Action::Create(Box::new(t))
}

fn shutdown(t: &Task) -> Action {
    Action::SetDesired {
        task: t.id.clone(),
        state: TaskState::Shutdown,
    }
}

/// A fresh task of `svc` for `slot` (and `node`, for global services).
pub fn new_task(svc: &Service, slot: u64, node: Option<NodeId>, now: u64, id: TaskId) -> Task {
    Task {
        id,
        meta: rswarm_proto::model::Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        },
        service_id: svc.id.clone(),
        slot,
        node_id: node,
        spec: svc.spec.task.clone(),
        spec_version: svc.spec_version,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Pending,
            timestamp: now,
            message: "pending task scheduling".into(),
            ..Default::default()
        },
        service_name: svc.spec.name.clone(),
        // Addresses come from the allocator in the orchestrator's pass.
        networks: Vec::new(),
    }
}

/// Old tasks beyond the history limit: finished, no longer wanted, oldest first.
pub fn reap(history: &[&Task]) -> Vec<Action> {
    let done: Vec<&Task> = history
        .iter()
        .copied()
        .filter(|t| !is_live(t) && t.status.state.is_terminal())
        .collect();
    let excess = done.len().saturating_sub(TASK_HISTORY);
    done.iter()
        .take(excess)
        .map(|t| Action::Remove(t.id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{NodeState, RestartCondition, ServiceSpec};
    use std::time::Duration;

    fn svc(replicas: u64) -> Service {
        let mut spec = ServiceSpec {
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas },
            ..Default::default()
        };
        spec.task.restart.delay = Duration::ZERO;
        Service {
            id: "s1".into(),
            spec,
            ..Default::default()
        }
    }

    fn ids() -> impl FnMut() -> TaskId {
        let mut n = 0;
        move || {
            n += 1;
            TaskId(format!("t{n}"))
        }
    }

    fn running(id: &str, slot: u64, node: &str) -> Task {
        let mut t = new_task(&svc(1), slot, Some(node.into()), 0, id.into());
        t.status.state = TaskState::Running;
        t
    }

    fn ready_node(id: &str) -> (NodeId, Node) {
        let mut n = Node {
            id: id.into(),
            ..Default::default()
        };
        n.status.state = NodeState::Ready;
        (n.id.clone(), n)
    }

    fn creates(a: &[Action]) -> Vec<u64> {
        a.iter()
            .filter_map(|a| match a {
                Action::Create(t) => Some(t.slot),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fills_every_slot() {
        let (a, _) = reconcile_replicated(&svc(3), &[], &BTreeMap::new(), 0, &mut ids());
        assert_eq!(creates(&a), vec![1, 2, 3]);
    }

    #[test]
    fn scaling_down_shuts_down_the_highest_slots() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let ts: Vec<Task> = (1..=4)
            .map(|s| running(&format!("t{s}"), s, "n1"))
            .collect();
        let refs: Vec<&Task> = ts.iter().collect();
        let (a, _) = reconcile_replicated(&svc(2), &refs, &nodes, 0, &mut ids());
        let down: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::SetDesired {
                    task,
                    state: TaskState::Shutdown,
                } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        let mut down = down;
        down.sort();
        assert_eq!(down, vec!["t3", "t4"]);
        assert!(creates(&a).is_empty());
    }

    #[test]
    fn scaling_down_keeps_the_spread() {
        let nodes: BTreeMap<_, _> = [ready_node("n1"), ready_node("n2")].into_iter().collect();
        // Slots 1-3 on n1, 4 on n2: going to 2 must leave one on each node.
        let ts: Vec<Task> = (1..=4)
            .map(|s| running(&format!("t{s}"), s, if s <= 3 { "n1" } else { "n2" }))
            .collect();
        let refs: Vec<&Task> = ts.iter().collect();
        let (a, _) = reconcile_replicated(&svc(2), &refs, &nodes, 0, &mut ids());
        let down: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::SetDesired { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(down.len(), 2);
        assert!(
            !down.contains(&"t4"),
            "the only task on n2 was removed: {down:?}"
        );
    }

    #[test]
    fn scaling_up_fills_the_lowest_free_slots() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let t = running("t2", 2, "n1");
        let (a, _) = reconcile_replicated(&svc(3), &[&t], &nodes, 0, &mut ids());
        assert_eq!(creates(&a), vec![1, 3]);
    }

    #[test]
    fn tasks_on_a_down_node_are_replaced() {
        let (id, mut n) = ready_node("n1");
        n.status.state = NodeState::Down;
        let nodes: BTreeMap<_, _> = [(id, n)].into_iter().collect();
        let t = running("t1", 1, "n1");
        let (a, _) = reconcile_replicated(&svc(1), &[&t], &nodes, 0, &mut ids());
        assert!(a.contains(&Action::SetDesired {
            task: "t1".into(),
            state: TaskState::Shutdown
        }));
        assert_eq!(creates(&a), vec![1]);
    }

    #[test]
    fn a_failed_task_is_replaced_unless_the_policy_says_no() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let mut t = running("t1", 1, "n1");
        t.status.state = TaskState::Failed;
        t.status.exit_code = Some(1);
        let (a, _) = reconcile_replicated(&svc(1), &[&t], &nodes, 10, &mut ids());
        assert_eq!(creates(&a), vec![1]);
        t.spec.restart.condition = RestartCondition::None;
        let (a, _) = reconcile_replicated(&svc(1), &[&t], &nodes, 10, &mut ids());
        // As Swarm's: no longer wanted, not replaced...
        assert_eq!(a, vec![shutdown(&t)]);
        // ...and its slot stays taken once it is no longer live.
        t.desired_state = TaskState::Shutdown;
        let (a, _) = reconcile_replicated(&svc(1), &[&t], &nodes, 20, &mut ids());
        assert!(a.is_empty(), "{a:?}");
        // A new spec takes it back.
        let mut s = svc(1);
        s.spec_version = t.spec_version + 1;
        let (a, _) = reconcile_replicated(&s, &[&t], &nodes, 30, &mut ids());
        assert_eq!(creates(&a), vec![1], "{a:?}");
    }

    #[test]
    fn history_is_kept_to_five_per_slot() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let mut ts: Vec<Task> = (0..8)
            .map(|i| {
                let mut t = running(&format!("old{i}"), 1, "n1");
                t.meta.created_at = i;
                t.desired_state = TaskState::Shutdown;
                t.status.state = TaskState::Shutdown;
                t
            })
            .collect();
        let mut cur = running("cur", 1, "n1");
        cur.meta.created_at = 100;
        ts.push(cur);
        let refs: Vec<&Task> = ts.iter().collect();
        let (a, _) = reconcile_replicated(&svc(1), &refs, &nodes, 0, &mut ids());
        let removed: Vec<&str> = a
            .iter()
            .filter_map(|a| match a {
                Action::Remove(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec!["old0", "old1", "old2"]);
    }

    #[test]
    fn a_rolling_update_stops_the_old_task_before_its_replacement() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let mut s = svc(1);
        s.spec_version = 2;
        s.update_status.state = rswarm_proto::model::UpdateState::Updating;
        let mut old = running("t1", 1, "n1");
        old.spec_version = 1;
        let (a, _) = reconcile_replicated(&s, &[&old], &nodes, 0, &mut ids());
        assert!(a.contains(&shutdown(&old)), "{a:?}");
        assert!(
            creates(&a).is_empty(),
            "replacement before the old task stopped: {a:?}"
        );
        // Still stopping: nothing new yet.
        old.desired_state = TaskState::Shutdown;
        let (a, _) = reconcile_replicated(&s, &[&old], &nodes, 0, &mut ids());
        assert!(creates(&a).is_empty(), "{a:?}");
        // Stopped: the replacement takes its slot.
        old.status.state = TaskState::Shutdown;
        let (a, _) = reconcile_replicated(&s, &[&old], &nodes, 0, &mut ids());
        assert_eq!(creates(&a), vec![1]);
    }

    #[test]
    fn start_first_runs_the_replacement_beside_the_old_task() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let mut s = svc(1);
        s.spec_version = 2;
        s.spec.update_config.order = rswarm_proto::model::UpdateOrder::StartFirst;
        s.update_status.state = rswarm_proto::model::UpdateState::Updating;
        let mut old = running("t1", 1, "n1");
        old.spec_version = 1;
        old.meta.created_at = 1;
        let (a, _) = reconcile_replicated(&s, &[&old], &nodes, 10, &mut ids());
        assert!(
            !a.contains(&shutdown(&old)),
            "the old task keeps serving: {a:?}"
        );
        assert_eq!(creates(&a), vec![1], "{a:?}");
        // The replacement is starting: both stay.
        let mut new = running("t2", 1, "n1");
        new.meta.created_at = 10;
        new.spec_version = 2;
        new.status.state = TaskState::Starting;
        let (a, _) = reconcile_replicated(&s, &[&old, &new], &nodes, 20, &mut ids());
        assert!(a.is_empty(), "{a:?}");
        // It runs: now the old one stops.
        new.status.state = TaskState::Running;
        let (a, _) = reconcile_replicated(&s, &[&old, &new], &nodes, 30, &mut ids());
        assert!(a.contains(&shutdown(&old)), "{a:?}");
        assert!(creates(&a).is_empty(), "{a:?}");
    }

    /// Applies a pass's actions to `ts`, as the store would.
    fn apply(ts: &mut Vec<Task>, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Create(t) => ts.push((**t).clone()),
                Action::SetDesired { task, state } => {
                    if let Some(t) = ts.iter_mut().find(|t| &t.id == task) {
                        if *state > t.desired_state {
                            t.desired_state = *state;
                        }
                    }
                }
                Action::Remove(id) => ts.retain(|t| &t.id != id),
                _ => {}
            }
        }
    }

    fn delayed(delay_ms: u64) -> Service {
        let mut s = svc(1);
        s.spec.task.restart.delay = Duration::from_millis(delay_ms);
        s
    }

    fn failed_at(mut t: Task, at: u64) -> Task {
        t.status.state = TaskState::Failed;
        t.status.exit_code = Some(1);
        t.status.timestamp = at;
        t
    }

    #[test]
    fn a_delayed_restart_makes_a_ready_replacement_at_once_and_starts_it_when_due() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let s = delayed(5_000);
        let mut old = running("old", 1, "n1");
        old.spec = s.spec.task.clone();
        let mut ts = vec![failed_at(old, 1_000)];
        let refs: Vec<&Task> = ts.iter().collect();
        let (a, wake) = reconcile_replicated(&s, &refs, &nodes, 1_010, &mut ids());
        // The old task is shut down and its replacement made in the same pass, held ready.
        assert!(a.contains(&shutdown(&ts[0])), "{a:?}");
        let made: Vec<&Task> = a
            .iter()
            .filter_map(|a| match a {
                Action::Create(t) => Some(&**t),
                _ => None,
            })
            .collect();
        assert_eq!(made.len(), 1, "{a:?}");
        assert_eq!((made[0].slot, made[0].desired_state), (1, TaskState::Ready));
        assert_eq!(wake, Some(6_000));
        apply(&mut ts, &a);
        // Placed and prepared meanwhile; before the due time nothing more but a wake-up.
        ts[1].node_id = Some("n1".into());
        ts[1].status.state = TaskState::Ready;
        for now in [1_020, 3_000, 5_999] {
            let refs: Vec<&Task> = ts.iter().collect();
            let (a, wake) = reconcile_replicated(&s, &refs, &nodes, now, &mut ids());
            assert!(a.is_empty(), "at {now}: {a:?}");
            assert_eq!(wake, Some(6_000), "at {now}");
        }
        // Due: started. A new leader (the same pure function on the same store, later)
        // decides the same.
        for now in [6_000, 9_000] {
            let refs: Vec<&Task> = ts.iter().collect();
            let (a, wake) = reconcile_replicated(&s, &refs, &nodes, now, &mut ids());
            assert_eq!(
                a,
                vec![Action::SetDesired {
                    task: ts[1].id.clone(),
                    state: TaskState::Running
                }],
                "at {now}"
            );
            assert_eq!(wake, None);
        }
    }

    #[test]
    fn a_restart_already_due_makes_a_running_replacement() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let s = delayed(5_000);
        let mut old = running("old", 1, "n1");
        old.spec = s.spec.task.clone();
        let old = failed_at(old, 1_000);
        let (a, _) = reconcile_replicated(&s, &[&old], &nodes, 7_000, &mut ids());
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Create(t) if t.desired_state == TaskState::Running)));
    }

    #[test]
    fn on_failure_with_max_attempts_2_makes_exactly_3_tasks() {
        let nodes: BTreeMap<_, _> = [ready_node("n1")].into_iter().collect();
        let mut s = delayed(1_000);
        s.spec.task.restart.condition = RestartCondition::OnFailure;
        s.spec.task.restart.max_attempts = 2;
        let mut ts: Vec<Task> = Vec::new();
        let mut new_id = ids();
        // Every task crashes 200 ms after it is told to run.
        for step in 0..300u64 {
            let now = step * 100;
            for t in &mut ts {
                t.node_id = Some("n1".into());
                if t.desired_state == TaskState::Running
                    && !t.status.state.is_terminal()
                    && now >= t.meta.created_at + 200
                {
                    t.status.state = TaskState::Failed;
                    t.status.exit_code = Some(1);
                    t.status.timestamp = now;
                }
            }
            let refs: Vec<&Task> = ts.iter().collect();
            let (a, _) = reconcile_replicated(&s, &refs, &nodes, now, &mut new_id);
            apply(&mut ts, &a);
        }
        assert_eq!(ts.len(), 3, "{ts:#?}");
        assert!(
            ts.iter()
                .all(|t| t.status.state == TaskState::Failed
                    && t.desired_state == TaskState::Shutdown)
        );
    }
}
