//! Table-driven tests of `schedule` and `check_node`, with small fixture clusters.

use super::*;
use rswarm_proto::model::{Node, NodeAvailability, NodeRole, NodeState, SpreadOver, TaskState};

pub(super) const GIB: u64 = 1 << 30;

/// A ready, active worker with 4 CPUs and 8 GiB.
pub(super) fn node(id: &str) -> Node {
    let mut n = Node {
        id: id.into(),
        role: NodeRole::Worker,
        ..Default::default()
    };
    n.description.hostname = format!("host-{id}");
    n.description.os = "linux".into();
    n.description.arch = "x86_64".into();
    n.description.cpus = 4;
    n.description.memory_bytes = 8 * GIB;
    n.status.state = NodeState::Ready;
    n
}

fn with_label(mut n: Node, k: &str, v: &str) -> Node {
    n.spec.labels.insert(k.into(), v.into());
    n
}

/// A pending task of `svc` without a node.
pub(super) fn task(id: &str, svc: &str) -> Task {
    let mut t = Task {
        id: id.into(),
        service_id: svc.into(),
        service_name: svc.into(),
        desired_state: TaskState::Running,
        ..Default::default()
    };
    t.status.state = TaskState::Pending;
    t
}

fn tasks(svc: &str, n: usize, f: impl Fn(&mut Task)) -> Vec<Task> {
    (0..n)
        .map(|i| {
            let mut t = task(&format!("{svc}-t{i:03}"), svc);
            f(&mut t);
            t
        })
        .collect()
}

/// Assigned tasks per node ID.
fn per_node(plan: &Plan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, n) in &plan.assign {
        *m.entry(n.0.clone()).or_default() += 1;
    }
    m
}

fn counts(plan: &Plan, ids: &[&str]) -> Vec<usize> {
    let m = per_node(plan);
    ids.iter()
        .map(|id| m.get(*id).copied().unwrap_or(0))
        .collect()
}

#[test]
fn spreads_a_batch_evenly_over_equal_nodes() {
    let nodes = [node("a"), node("b"), node("c")];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    for (n, want) in [(6, 2), (12, 4), (3, 1)] {
        let plan = schedule(&snap, &tasks("web", n, |_| ()), 7);
        assert_eq!(counts(&plan, &["a", "b", "c"]), vec![want; 3], "{n} tasks");
        assert!(plan.unschedulable.is_empty());
    }
    // Two services in one batch: each is spread 2/2/2, and the totals too.
    let mut pending = tasks("web", 6, |_| ());
    pending.extend(tasks("db", 6, |_| ()));
    let plan = schedule(&snap, &pending, 1);
    assert_eq!(counts(&plan, &["a", "b", "c"]), vec![4, 4, 4]);
}

#[test]
fn never_uses_unavailable_nodes_and_says_why() {
    let mut down = node("down");
    down.status.state = NodeState::Down;
    let mut unknown = node("unknown");
    unknown.status.state = NodeState::Unknown;
    let mut drained = node("drained");
    drained.spec.availability = NodeAvailability::Drain;
    let mut paused = node("paused");
    paused.spec.availability = NodeAvailability::Pause;
    let mut drained2 = drained.clone();
    drained2.id = "drained2".into();

    let all = [down, unknown, drained, paused, drained2, node("ok")];
    let snap = ClusterSnapshot::from_state(&all, &[]);
    let plan = schedule(&snap, &tasks("web", 4, |_| ()), 0);
    assert_eq!(counts(&plan, &["ok"]), vec![4]);

    let snap = ClusterSnapshot::from_state(&all[..5], &[]);
    let plan = schedule(&snap, &tasks("web", 2, |_| ()), 0);
    assert!(plan.assign.is_empty());
    let why = "no suitable node (2 nodes drained; 1 node down; 1 node not ready; 1 node paused)";
    assert_eq!(
        plan.unschedulable,
        vec![
            ("web-t000".into(), why.to_owned()),
            ("web-t001".into(), why.to_owned())
        ]
    );

    let plan = schedule(&ClusterSnapshot::default(), &tasks("web", 1, |_| ()), 0);
    assert_eq!(
        plan.unschedulable[0].1,
        "no suitable node (the cluster has no nodes)"
    );
}

#[test]
fn reservations_fill_nodes_and_never_oversubscribe() {
    let mut small = node("small");
    small.description.memory_bytes = GIB;
    let nodes = [small, node("big")];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    // 3 GiB each: 2 fit on big (8 GiB), none on small.
    let pending = tasks("web", 4, |t| {
        t.spec.resources.reservations.memory_bytes = 3 * GIB
    });
    let plan = schedule(&snap, &pending, 0);
    assert_eq!(counts(&plan, &["small", "big"]), vec![0, 2]);
    let why = "no suitable node (insufficient memory on 2 nodes)";
    assert_eq!(plan.unschedulable.len(), 2);
    assert!(plan.unschedulable.iter().all(|(_, w)| w == why));

    // CPU: 4 CPUs per node, 1.5 each: 2 per node.
    let pending = tasks("web", 5, |t| {
        t.spec.resources.reservations.nano_cpus = 1_500_000_000
    });
    let plan = schedule(&snap, &pending, 0);
    assert_eq!(counts(&plan, &["small", "big"]), vec![2, 2]);
    assert_eq!(
        plan.unschedulable[0].1,
        "no suitable node (insufficient CPU on 2 nodes)"
    );

    // Existing reservations count, and so do this plan's own earlier placements of other
    // services.
    let mut running = task("old", "other");
    running.node_id = Some("big".into());
    running.status.state = TaskState::Running;
    running.spec.resources.reservations.memory_bytes = 7 * GIB + GIB / 2;
    let snap = ClusterSnapshot::from_state(&nodes, &[running]);
    let mut pending = tasks("a", 1, |t| {
        t.spec.resources.reservations.memory_bytes = GIB / 2
    });
    pending.extend(tasks("b", 3, |t| {
        t.spec.resources.reservations.memory_bytes = GIB / 2
    }));
    let plan = schedule(&snap, &pending, 0);
    // 1.5 GiB free in total: the first three half-GiB tasks fit, the fourth does not.
    assert_eq!(plan.assign.len(), 3);
    assert_eq!(counts(&plan, &["small", "big"]), vec![2, 1]);
}

#[test]
fn ranks_by_service_tasks_then_total_tasks() {
    let nodes = [node("a"), node("b"), node("c")];
    let running = |id: &str, svc: &str, on: &str| {
        let mut t = task(id, svc);
        t.node_id = Some(on.into());
        t.status.state = TaskState::Running;
        t
    };
    // a: 1 web + 0 other; b: 0 web + 3 other; c: 0 web + 1 other.
    let existing = [
        running("w1", "web", "a"),
        running("o1", "other", "b"),
        running("o2", "other", "b"),
        running("o3", "other", "b"),
        running("o4", "other", "c"),
    ];
    let snap = ClusterSnapshot::from_state(&nodes, &existing);
    // First to c (no web, fewest total), then b (no web), then ties on web=1: a (total 1)
    // before c (total 2) before b (total 4).
    let steps: &[(usize, &[usize])] = &[
        (1, &[0, 0, 1]),
        (2, &[0, 1, 1]),
        (3, &[1, 1, 1]),
        (4, &[1, 1, 2]),
    ];
    for (n, want) in steps {
        let plan = schedule(&snap, &tasks("web", *n, |_| ()), 3);
        assert_eq!(counts(&plan, &["a", "b", "c"]), want.to_vec(), "{n} tasks");
    }
    // Tasks being shut down or finished free their place.
    let mut gone = running("w2", "web", "c");
    gone.desired_state = TaskState::Shutdown;
    let mut failed = running("w3", "web", "c");
    failed.status.state = TaskState::Failed;
    let snap2 = ClusterSnapshot::from_state(&nodes, &[existing[0].clone(), gone, failed]);
    let plan = schedule(&snap2, &tasks("web", 2, |_| ()), 3);
    assert_eq!(counts(&plan, &["a", "b", "c"]), vec![0, 1, 1]);
}

#[test]
fn honours_constraints() {
    let nodes = [
        with_label(node("a"), "zone", "eu"),
        with_label(node("b"), "zone", "us"),
        with_label(node("c"), "zone", "eu"),
        node("d"),
    ];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let cases: &[(&[&str], &[usize], Option<&str>)] = &[
        (&["node.labels.zone==eu"], &[2, 0, 2, 0], None),
        (&["node.labels.zone!=eu"], &[0, 2, 0, 2], None),
        (&["node.hostname==host-b"], &[0, 4, 0, 0], None),
        (&["node.id!=a", "node.labels.zone==eu"], &[0, 0, 4, 0], None),
        (
            &["node.role==manager"],
            &[0, 0, 0, 0],
            Some("no suitable node (scheduling constraints not satisfied on 4 nodes)"),
        ),
        (
            &["node.platform.os==windows"],
            &[0, 0, 0, 0],
            Some("no suitable node (scheduling constraints not satisfied on 4 nodes)"),
        ),
        (
            &["node.role=manager"],
            &[0, 0, 0, 0],
            Some("invalid constraint `node.role=manager`: expected KEY==VALUE or KEY!=VALUE"),
        ),
    ];
    for (exprs, want, why) in cases {
        let c: Vec<String> = exprs.iter().map(|s| s.to_string()).collect();
        let pending = tasks("web", 4, |t| t.spec.placement.constraints = c.clone());
        let plan = schedule(&snap, &pending, 11);
        assert_eq!(
            counts(&plan, &["a", "b", "c", "d"]),
            want.to_vec(),
            "{exprs:?}"
        );
        match why {
            None => assert!(plan.unschedulable.is_empty(), "{exprs:?}"),
            Some(w) => assert!(
                plan.unschedulable.iter().all(|(_, r)| r == w),
                "{exprs:?}: {plan:?}"
            ),
        }
    }
}

#[test]
fn honours_max_replicas_per_node() {
    let nodes = [node("a"), node("b")];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let pending = tasks("web", 5, |t| t.spec.placement.max_replicas_per_node = 2);
    let plan = schedule(&snap, &pending, 0);
    assert_eq!(counts(&plan, &["a", "b"]), vec![2, 2]);
    assert_eq!(
        plan.unschedulable,
        vec![(
            "web-t004".into(),
            "no suitable node (max replicas per node reached on 2 nodes)".to_owned()
        )]
    );
}

#[test]
fn spreads_over_label_values_first() {
    // Zone a has three nodes, zone b one, and one node has no zone label: each of the three
    // groups gets a third of the tasks, whatever its number of nodes.
    let nodes = [
        with_label(node("a1"), "zone", "a"),
        with_label(node("a2"), "zone", "a"),
        with_label(node("a3"), "zone", "a"),
        with_label(node("b1"), "zone", "b"),
        node("x1"),
    ];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let pending = tasks("web", 9, |t| {
        t.spec.placement.preferences = vec![SpreadOver {
            descriptor: "node.labels.zone".into(),
        }]
    });
    let plan = schedule(&snap, &pending, 5);
    assert_eq!(
        counts(&plan, &["a1", "a2", "a3", "b1", "x1"]),
        vec![1, 1, 1, 3, 3]
    );

    // A full zone leaves the rest to the others.
    let pending = tasks("web", 9, |t| {
        t.spec.placement.preferences = vec![SpreadOver {
            descriptor: "spread=node.labels.zone".into(),
        }];
        t.spec.placement.max_replicas_per_node = 2;
    });
    let plan = schedule(&snap, &pending, 5);
    let c = counts(&plan, &["a1", "a2", "a3", "b1", "x1"]);
    assert_eq!((c[3], c[4], c[0] + c[1] + c[2]), (2, 2, 5));

    // Nested preferences: zone, then rack within the zone.
    let nodes = [
        with_label(with_label(node("a1"), "zone", "a"), "rack", "1"),
        with_label(with_label(node("a2"), "zone", "a"), "rack", "1"),
        with_label(with_label(node("a3"), "zone", "a"), "rack", "2"),
        with_label(with_label(node("b1"), "zone", "b"), "rack", "1"),
    ];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let pending = tasks("web", 8, |t| {
        t.spec.placement.preferences = ["zone", "rack"]
            .iter()
            .map(|l| SpreadOver {
                descriptor: format!("node.labels.{l}"),
            })
            .collect()
    });
    let plan = schedule(&snap, &pending, 5);
    // b: 4; a: 4, split 2 per rack, rack 1's two nodes 1 each.
    assert_eq!(counts(&plan, &["a1", "a2", "a3", "b1"]), vec![1, 1, 2, 4]);

    let pending = tasks("web", 2, |t| {
        t.spec.placement.preferences = vec![SpreadOver {
            descriptor: "node.hostname".into(),
        }]
    });
    let plan = schedule(&snap, &pending, 5);
    assert!(plan.unschedulable[0]
        .1
        .contains("invalid placement preference"));
}

#[test]
fn preassigned_tasks_are_checked_on_their_node() {
    let mut drained = node("drained");
    drained.spec.availability = NodeAvailability::Drain;
    let mut small = node("small");
    small.description.memory_bytes = GIB;
    let snap = ClusterSnapshot::from_state(&[drained, small, node("ok")], &[]);
    let global = |id: &str, on: &str| {
        let mut t = task(id, "agent");
        t.node_id = Some(on.into());
        t.spec.resources.reservations.memory_bytes = GIB;
        t
    };
    let mut pending = vec![
        global("g1", "drained"),
        global("g2", "small"),
        global("g3", "ok"),
        global("g4", "gone"),
    ];
    // A replicated task listed first still comes after the preassigned ones, so it cannot
    // take small's memory from the global task.
    let mut web = task("w1", "web");
    web.spec.resources.reservations.memory_bytes = GIB;
    web.spec.placement.constraints = vec!["node.hostname==host-small".into()];
    pending.insert(0, web);
    let plan = schedule(&snap, &pending, 0);
    assert_eq!(
        plan.assign,
        vec![("g2".into(), "small".into()), ("g3".into(), "ok".into())]
    );
    assert_eq!(
        plan.unschedulable,
        vec![
            ("g1".into(), "no suitable node (1 node drained)".to_owned()),
            (
                "g4".into(),
                "assigned node gone is not in the cluster".to_owned()
            ),
            (
                "w1".into(),
                "no suitable node (1 node drained; insufficient memory on 1 node; \
                 scheduling constraints not satisfied on 1 node)"
                    .to_owned()
            ),
        ]
    );
}

#[test]
fn check_node_answers_for_one_node() {
    let mut paused = node("paused");
    paused.spec.availability = NodeAvailability::Pause;
    let mut t = task("g", "agent");
    t.spec.placement.constraints = vec!["node.labels.gpu==yes".into()];
    let snap = ClusterSnapshot::from_state(
        &[paused, node("plain"), with_label(node("gpu"), "gpu", "yes")],
        &[],
    );
    let cases = [
        ("paused", Err(Reject::Paused)),
        ("plain", Err(Reject::Constraints)),
        ("gpu", Ok(())),
        ("missing", Err(Reject::UnknownNode)),
    ];
    for (n, want) in cases {
        assert_eq!(check_node(&snap, &t, &n.into()), want, "{n}");
    }
    t.spec.placement.constraints = vec!["gpu".into()];
    assert_eq!(
        check_node(&snap, &t, &"gpu".into()),
        Err(Reject::InvalidPlacement)
    );
}

#[test]
fn same_input_and_seed_give_the_same_plan() {
    let nodes: Vec<Node> = (0..20).map(|i| node(&format!("n{i:02}"))).collect();
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let pending = tasks("web", 7, |_| ());
    let a = schedule(&snap, &pending, 42);
    assert_eq!(a, schedule(&snap, &pending, 42));
    // The order nodes come in does not matter either.
    let mut reversed = nodes.clone();
    reversed.reverse();
    let mut snap_r = ClusterSnapshot::from_state(&reversed, &[]);
    assert_eq!(a, schedule(&snap_r, &pending, 42));
    snap_r.nodes.reverse(); // unsorted, hand-built
    assert_eq!(a, schedule(&snap_r, &pending, 42));
    // Another seed breaks the ties between the 20 empty nodes differently.
    let others = (0..8u64)
        .filter(|s| schedule(&snap, &pending, *s) != a)
        .count();
    assert!(others > 0);
}

#[test]
fn a_service_with_two_specs_is_spread_as_one() {
    // Mid rolling update: the service's tasks have two specs (two groups), but the spread is
    // by service.
    let nodes = [node("a"), node("b"), node("c")];
    let snap = ClusterSnapshot::from_state(&nodes, &[]);
    let mut pending = tasks("web", 2, |_| ());
    pending.extend(tasks("web", 4, |t| {
        t.id.0.push_str("-v2");
        t.spec.resources.reservations.nano_cpus = 1;
    }));
    let plan = schedule(&snap, &pending, 9);
    assert_eq!(counts(&plan, &["a", "b", "c"]), vec![2, 2, 2]);
}
