//! The global orchestrator: one live task on every node that can run the service.
use super::replicated::{create, reap, start_when_due};
use super::{
    done_for_good, has_stopped, is_live, is_stopping_for_update, restart_decision, starts_first,
    update_actions, Action, RestartDecision,
};
use rswarm_proto::model::{
    Node, NodeAvailability, NodeId, NodeState, Service, ServiceMode, Task, TaskId, TaskState,
};
use std::collections::BTreeMap;

/// What to do for one global service. `fits(node)` says whether the node satisfies the
/// service's placement (constraints, resources); see the scheduler.
pub fn reconcile_global(
    svc: &Service,
    tasks: &[&Task],
    nodes: &BTreeMap<NodeId, Node>,
    fits: &dyn Fn(&Node) -> bool,
    now: u64,
    new_id: &mut dyn FnMut() -> TaskId,
) -> (Vec<Action>, Option<u64>) {
    if svc.spec.mode != ServiceMode::Global {
        return (Vec::new(), None);
    }
    let mut actions = Vec::new();
    let mut wake: Option<u64> = None;
    let mut by_node: BTreeMap<NodeId, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        match &t.node_id {
            Some(n) => by_node.entry(n.clone()).or_default().push(t),
            // A global task is made for a node; one without is a leftover.
            None if is_live(t) => actions.push(Action::SetDesired {
                task: t.id.clone(),
                state: TaskState::Shutdown,
            }),
            None => {}
        }
    }
    for id in nodes.keys() {
        by_node.entry(id.clone()).or_default();
    }
    // A rolling update goes node by node over the tasks that run now: the newest live task
    // of each node (an older one beside it is being replaced start-first).
    let mut healthy: Vec<&Task> = by_node
        .values()
        .filter_map(|ts| {
            ts.iter()
                .copied()
                .filter(|t| is_live(t))
                .max_by_key(|t| (t.meta.created_at, t.id.clone()))
        })
        .filter(|t| !has_stopped(t))
        .collect();
    healthy.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let stopping_nodes: std::collections::BTreeSet<&NodeId> = tasks
        .iter()
        .filter(|t| is_stopping_for_update(svc, t, nodes))
        .filter_map(|t| t.node_id.as_ref())
        .collect();
    let outdated_now = update_actions(
        svc,
        &healthy,
        tasks,
        stopping_nodes.len() as u64,
        now,
        &mut actions,
        &mut wake,
    );
    for (node_id, node_tasks) in &mut by_node {
        node_tasks.sort_by_key(|t| (t.meta.created_at, t.id.clone()));
        let node = nodes.get(node_id);
        // Keep tasks where the node is up and not drained and still fits; start new ones
        // only on ready, active nodes.
        let keep_ok = node.is_some_and(|n| {
            n.status.state != NodeState::Down
                && n.spec.availability != NodeAvailability::Drain
                && fits(n)
        });
        let start_ok = keep_ok
            && node.is_some_and(|n| {
                n.status.state == NodeState::Ready
                    && n.spec.availability == NodeAvailability::Active
            });
        let live: Vec<&Task> = node_tasks.iter().copied().filter(|t| is_live(t)).collect();
        if !keep_ok {
            for t in &live {
                actions.push(Action::SetDesired {
                    task: t.id.clone(),
                    state: TaskState::Shutdown,
                });
            }
        } else {
            // A node whose task stopped and was not replaced keeps it (no new one).
            let mut need_new =
                live.is_empty() && !node_tasks.last().is_some_and(|t| done_for_good(svc, t));
            let mut new_desired = TaskState::Running;
            let (keep, extra) = match live.split_last() {
                Some((k, rest)) => (Some(*k), rest),
                None => (None, &[][..]),
            };
            // Start-first: an outdated task keeps running beside its replacement until
            // the replacement runs.
            let overlap = starts_first(svc)
                && keep.is_some_and(|k| {
                    k.spec_version == svc.spec_version && k.status.state != TaskState::Running
                });
            for t in extra {
                if overlap && t.spec_version != svc.spec_version && !has_stopped(t) {
                    continue;
                }
                actions.push(Action::SetDesired {
                    task: t.id.clone(),
                    state: TaskState::Shutdown,
                });
            }
            if let Some(t) = keep {
                if outdated_now.contains(&t.id) {
                    if starts_first(svc) {
                        need_new = true;
                    } else {
                        // Stop-first: the replacement comes once this task has stopped.
                        actions.push(Action::SetDesired {
                            task: t.id.clone(),
                            state: TaskState::Shutdown,
                        });
                    }
                } else if has_stopped(t)
                    && !start_ok
                    && restart_decision(t, node_tasks, now) != RestartDecision::Never
                {
                    // As swarmkit's: a paused (or not yet ready) node gets no replacement;
                    // the stopped task stays as it is until the node can take one.
                } else if has_stopped(t) {
                    let decision = restart_decision(t, node_tasks, now);
                    if let RestartDecision::At(at) = decision {
                        // Made now and prepared during the delay; started once it is over.
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        new_desired = TaskState::Ready;
                    }
                    actions.push(Action::SetDesired {
                        task: t.id.clone(),
                        state: TaskState::Shutdown,
                    });
                    need_new = decision != RestartDecision::Never;
                } else if t.desired_state == TaskState::Ready {
                    start_when_due(t, node_tasks, now, &mut actions, &mut wake);
                }
            }
            if need_new && start_ok && !stopping_nodes.contains(node_id) {
                actions.push(create(
                    svc,
                    0,
                    Some(node_id.clone()),
                    new_desired,
                    now,
                    new_id(),
                ));
            }
        }
        actions.extend(reap(node_tasks));
    }
    (actions, wake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::replicated::new_task;
    use rswarm_proto::model::ServiceSpec;

    fn svc() -> Service {
        Service {
            id: "g".into(),
            spec: ServiceSpec {
                name: "agent".into(),
                mode: ServiceMode::Global,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn node(id: &str, state: NodeState, availability: NodeAvailability) -> (NodeId, Node) {
        let mut n = Node {
            id: id.into(),
            ..Default::default()
        };
        n.status.state = state;
        n.spec.availability = availability;
        (n.id.clone(), n)
    }

    fn ids() -> impl FnMut() -> TaskId {
        let mut n = 0;
        move || {
            n += 1;
            TaskId(format!("t{n}"))
        }
    }

    #[test]
    fn one_task_per_ready_active_node() {
        let nodes: BTreeMap<_, _> = [
            node("a", NodeState::Ready, NodeAvailability::Active),
            node("b", NodeState::Ready, NodeAvailability::Drain),
            node("c", NodeState::Down, NodeAvailability::Active),
            node("d", NodeState::Ready, NodeAvailability::Pause),
        ]
        .into_iter()
        .collect();
        let (a, _) = reconcile_global(&svc(), &[], &nodes, &|_| true, 0, &mut ids());
        let on: Vec<String> = a
            .iter()
            .filter_map(|a| match a {
                Action::Create(t) => t.node_id.as_ref().map(|n| n.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(on, vec!["a"]);
    }

    #[test]
    fn a_drained_node_loses_its_task_and_constraints_are_followed() {
        let nodes: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Drain)]
            .into_iter()
            .collect();
        let mut t = new_task(&svc(), 0, Some("a".into()), 0, "t1".into());
        t.status.state = TaskState::Running;
        let (a, _) = reconcile_global(&svc(), &[&t], &nodes, &|_| true, 0, &mut ids());
        assert_eq!(
            a,
            vec![Action::SetDesired {
                task: "t1".into(),
                state: TaskState::Shutdown
            }]
        );
        let nodes: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Active)]
            .into_iter()
            .collect();
        let (a, _) = reconcile_global(&svc(), &[&t], &nodes, &|_| false, 0, &mut ids());
        assert_eq!(
            a,
            vec![Action::SetDesired {
                task: "t1".into(),
                state: TaskState::Shutdown
            }]
        );
    }

    #[test]
    fn start_first_runs_the_replacement_beside_the_old_task() {
        let nodes: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Active)]
            .into_iter()
            .collect();
        let mut s = svc();
        s.spec_version = 2;
        s.spec.update_config.order = rswarm_proto::model::UpdateOrder::StartFirst;
        s.update_status.state = rswarm_proto::model::UpdateState::Updating;
        let mut old = new_task(&s, 0, Some("a".into()), 1, "old".into());
        old.spec_version = 1;
        old.status.state = TaskState::Running;
        let (a, _) = reconcile_global(&s, &[&old], &nodes, &|_| true, 10, &mut ids());
        let stops = |a: &[Action], id: &str| {
            a.iter().any(|x| {
                matches!(x, Action::SetDesired { task, state: TaskState::Shutdown } if task.as_str() == id)
            })
        };
        let creates = |a: &[Action]| a.iter().filter(|x| matches!(x, Action::Create(_))).count();
        assert!(!stops(&a, "old"), "{a:?}");
        assert_eq!(creates(&a), 1, "{a:?}");
        let mut new = new_task(&s, 0, Some("a".into()), 10, "new".into());
        new.status.state = TaskState::Starting;
        let (a, _) = reconcile_global(&s, &[&old, &new], &nodes, &|_| true, 20, &mut ids());
        assert!(!stops(&a, "old") && creates(&a) == 0, "{a:?}");
        new.status.state = TaskState::Running;
        let (a, _) = reconcile_global(&s, &[&old, &new], &nodes, &|_| true, 30, &mut ids());
        assert!(stops(&a, "old") && creates(&a) == 0, "{a:?}");
    }

    #[test]
    fn a_paused_node_keeps_its_stopped_task_until_it_can_take_a_replacement() {
        let paused: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Pause)]
            .into_iter()
            .collect();
        let s = svc();
        let mut t = new_task(&s, 0, Some("a".into()), 0, "t1".into());
        t.status.state = TaskState::Failed;
        t.status.exit_code = Some(1);
        t.status.timestamp = 1_000;
        let (a, _) = reconcile_global(&s, &[&t], &paused, &|_| true, 10_000, &mut ids());
        assert!(a.is_empty(), "{a:?}");
        let active: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Active)]
            .into_iter()
            .collect();
        let (a, _) = reconcile_global(&s, &[&t], &active, &|_| true, 10_000, &mut ids());
        let stopped = a.contains(&Action::SetDesired {
            task: "t1".into(),
            state: TaskState::Shutdown,
        });
        let made = a.iter().filter(|x| matches!(x, Action::Create(_))).count();
        assert!(stopped && made == 1, "{a:?}");
    }

    #[test]
    fn a_delayed_restart_makes_a_ready_replacement_at_once_and_starts_it_when_due() {
        let nodes: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Active)]
            .into_iter()
            .collect();
        let s = svc();
        let mut old = new_task(&s, 0, Some("a".into()), 0, "old".into());
        old.status.state = TaskState::Failed;
        old.status.exit_code = Some(1);
        old.status.timestamp = 1_000;
        let (a, wake) = reconcile_global(&s, &[&old], &nodes, &|_| true, 1_010, &mut ids());
        assert!(a.contains(&Action::SetDesired {
            task: "old".into(),
            state: TaskState::Shutdown
        }));
        let made: Vec<Task> = a
            .iter()
            .filter_map(|a| match a {
                Action::Create(t) => Some((**t).clone()),
                _ => None,
            })
            .collect();
        assert_eq!(made.len(), 1, "{a:?}");
        assert_eq!(made[0].desired_state, TaskState::Ready);
        // The default restart delay is 5 s.
        assert_eq!(wake, Some(6_000));
        old.desired_state = TaskState::Shutdown;
        let mut new = made[0].clone();
        new.status.state = TaskState::Ready;
        for now in [1_020, 5_999] {
            let (a, wake) = reconcile_global(&s, &[&old, &new], &nodes, &|_| true, now, &mut ids());
            assert!(a.is_empty(), "at {now}: {a:?}");
            assert_eq!(wake, Some(6_000));
        }
        for now in [6_000, 8_000] {
            let (a, _) = reconcile_global(&s, &[&old, &new], &nodes, &|_| true, now, &mut ids());
            assert_eq!(
                a,
                vec![Action::SetDesired {
                    task: new.id.clone(),
                    state: TaskState::Running
                }],
                "at {now}"
            );
        }
        // A drained node loses it before it ever starts.
        let drained: BTreeMap<_, _> = [node("a", NodeState::Ready, NodeAvailability::Drain)]
            .into_iter()
            .collect();
        let (a, _) = reconcile_global(&s, &[&old, &new], &drained, &|_| true, 6_000, &mut ids());
        assert_eq!(
            a,
            vec![Action::SetDesired {
                task: new.id.clone(),
                state: TaskState::Shutdown
            }]
        );
    }
}
