//! Property tests of `schedule` over random clusters (STYLE.md §7): never a node that is not
//! ready or not active, never over-reserved, constraints and max-per-node always hold, a
//! service spreads within one across equal nodes, the same input and seed give the same plan,
//! every pending task is decided exactly once, and an unschedulable task has a reason and
//! really fits nowhere.

use super::tests::{node, task, GIB};
use super::*;
use proptest::prelude::*;
use rswarm_proto::model::{NodeAvailability, NodeRole, NodeState, SpreadOver, TaskState};

/// A node as the generator describes it.
#[derive(Debug, Clone)]
struct GenNode {
    state: u8,
    avail: u8,
    /// 0: no zone label.
    zone: u8,
    rack: u8,
    manager: bool,
    cpus: u32,
    mem_gib: u64,
    /// Running tasks already there: (service, CPU quarters, memory in 256 MiB).
    existing: Vec<(u8, u8, u8)>,
}

fn gen_node() -> impl Strategy<Value = GenNode> {
    (
        (0u8..10, 0u8..10, 0u8..4, 0u8..3, any::<bool>()),
        (1u32..=8, 1u64..=16),
        prop::collection::vec((0u8..12, 0u8..=4, 0u8..=4), 0..4),
    )
        .prop_map(
            |((state, avail, zone, rack, manager), (cpus, mem_gib), existing)| GenNode {
                state,
                avail,
                zone,
                rack,
                manager,
                cpus,
                mem_gib,
                existing,
            },
        )
}

/// A service as the generator describes it.
#[derive(Debug, Clone)]
struct GenService {
    replicas: usize,
    /// One task per node (preassigned), instead of `replicas` unassigned ones.
    global: bool,
    cpu_quarters: u64,
    mem_512m: u64,
    constraints: usize,
    max_per_node: u64,
    /// 0: none, 1: zone, 2: zone then rack.
    spread: u8,
}

const CONSTRAINTS: &[&[&str]] = &[
    &[],
    &[],
    &[],
    &["node.labels.zone==z1"],
    &["node.labels.zone!=z2"],
    &["node.role==worker"],
    &["node.labels.rack==r0", "node.role!=manager"],
    &["node.platform.os==LINUX"],
    &["node.labels.zone==nowhere"],
];

fn gen_service(max_replicas: usize) -> impl Strategy<Value = GenService> {
    (
        0..=max_replicas,
        prop::bool::weighted(0.1),
        0u64..=4,
        0u64..=4,
        0..CONSTRAINTS.len(),
        prop_oneof![3 => Just(0u64), 1 => 1u64..=3],
        0u8..3,
    )
        .prop_map(
            |(replicas, global, cpu_quarters, mem_512m, constraints, max_per_node, spread)| {
                GenService {
                    replicas,
                    global,
                    cpu_quarters,
                    mem_512m,
                    constraints,
                    max_per_node,
                    spread,
                }
            },
        )
}

fn build(nodes: &[GenNode], services: &[GenService]) -> (ClusterSnapshot, Vec<Task>) {
    let mut all_nodes = Vec::new();
    let mut running = Vec::new();
    for (i, g) in nodes.iter().enumerate() {
        let mut n = node(&format!("n{i:05}"));
        n.status.state = match g.state {
            0..=7 => NodeState::Ready,
            8 => NodeState::Down,
            _ => NodeState::Unknown,
        };
        n.spec.availability = match g.avail {
            0..=7 => NodeAvailability::Active,
            8 => NodeAvailability::Drain,
            _ => NodeAvailability::Pause,
        };
        if g.zone > 0 {
            n.spec.labels.insert("zone".into(), format!("z{}", g.zone));
        }
        n.spec.labels.insert("rack".into(), format!("r{}", g.rack));
        n.role = if g.manager {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        n.description.cpus = g.cpus;
        n.description.memory_bytes = g.mem_gib * GIB;
        for (k, &(svc, cpu, mem)) in g.existing.iter().enumerate() {
            let mut t = task(&format!("old-{i}-{k}"), &format!("s{svc}"));
            t.node_id = Some(n.id.clone());
            t.status.state = TaskState::Running;
            t.spec.resources.reservations = Resources {
                nano_cpus: u64::from(cpu) * 250_000_000,
                memory_bytes: u64::from(mem) * (GIB / 4),
            };
            running.push(t);
        }
        all_nodes.push(n);
    }
    let mut pending = Vec::new();
    for (k, s) in services.iter().enumerate() {
        let mut proto = task("", &format!("s{k}"));
        proto.spec.resources.reservations = Resources {
            nano_cpus: s.cpu_quarters * 250_000_000,
            memory_bytes: s.mem_512m * (GIB / 2),
        };
        proto.spec.placement.constraints = CONSTRAINTS[s.constraints]
            .iter()
            .map(|c| c.to_string())
            .collect();
        proto.spec.placement.max_replicas_per_node = s.max_per_node;
        proto.spec.placement.preferences = ["zone", "rack"][..usize::from(s.spread)]
            .iter()
            .map(|l| SpreadOver {
                descriptor: format!("node.labels.{l}"),
            })
            .collect();
        // Global: one preassigned task per node; replicated: `replicas` without a node.
        let targets: Vec<Option<NodeId>> = if s.global {
            all_nodes.iter().map(|n| Some(n.id.clone())).collect()
        } else {
            vec![None; s.replicas]
        };
        for (r, target) in targets.into_iter().enumerate() {
            let mut t = proto.clone();
            t.id = format!("s{k}-t{r}").as_str().into();
            t.slot = if target.is_some() { 0 } else { r as u64 + 1 };
            t.node_id = target;
            pending.push(t);
        }
    }
    (ClusterSnapshot::from_state(&all_nodes, &running), pending)
}

/// Checks every safety property of `plan` for `pending` on `snap`.
fn check_plan(snap: &ClusterSnapshot, pending: &[Task], plan: &Plan) -> Result<(), TestCaseError> {
    let by_id: BTreeMap<&TaskId, &Task> = pending.iter().map(|t| (&t.id, t)).collect();
    prop_assert_eq!(by_id.len(), pending.len(), "task IDs are unique");

    // Every pending task exactly once.
    let mut seen: BTreeMap<&TaskId, usize> = BTreeMap::new();
    for id in plan
        .assign
        .iter()
        .map(|(t, _)| t)
        .chain(plan.unschedulable.iter().map(|(t, _)| t))
    {
        prop_assert!(by_id.contains_key(id), "{} was not pending", id);
        *seen.entry(id).or_default() += 1;
    }
    prop_assert_eq!(seen.len(), pending.len());
    prop_assert!(seen.values().all(|&n| n == 1), "a task decided twice");
    for (id, why) in &plan.unschedulable {
        prop_assert!(!why.trim().is_empty(), "{} has no reason", id);
    }

    // The cluster after the plan.
    let mut after = snap.clone();
    let mut reserving: BTreeSet<usize> = BTreeSet::new();
    let mut capped: BTreeSet<(usize, &ServiceId, u64)> = BTreeSet::new();
    for (tid, nid) in &plan.assign {
        let t = by_id[tid];
        let i = snap.position(nid);
        prop_assert!(i.is_some(), "{} assigned to unknown node {}", tid, nid);
        let i = i.unwrap_or_default();
        let n = &snap.nodes[i].node;
        prop_assert_eq!(
            n.status.state,
            NodeState::Ready,
            "{} on a node not ready",
            tid
        );
        prop_assert_eq!(
            n.spec.availability,
            NodeAvailability::Active,
            "{} on a node not active",
            tid
        );
        if let Some(pre) = &t.node_id {
            prop_assert_eq!(pre, nid, "a preassigned task moved");
        }
        let cs = parse_constraints(&t.spec.placement.constraints);
        prop_assert!(cs.is_ok());
        for c in cs.unwrap_or_default() {
            prop_assert!(c.matches(n), "{} on {} breaks {}", tid, nid, c);
        }
        after.nodes[i].add_task(t);
        let r = &t.spec.resources.reservations;
        if r.nano_cpus > 0 || r.memory_bytes > 0 {
            reserving.insert(i);
        }
        if t.spec.placement.max_replicas_per_node > 0 {
            capped.insert((i, &t.service_id, t.spec.placement.max_replicas_per_node));
        }
    }
    // A node may start over-reserved (it shrank, or the generator put more there); what the
    // plan adds in a dimension must fit in that dimension.
    for i in reserving {
        let (before, n) = (&snap.nodes[i], &after.nodes[i]);
        let cpu_cap = u64::from(n.node.description.cpus) * 1_000_000_000;
        prop_assert!(
            n.reserved.nano_cpus == before.reserved.nano_cpus || n.reserved.nano_cpus <= cpu_cap,
            "{} over-reserved CPU: {:?}",
            n.node.id,
            n.reserved
        );
        prop_assert!(
            n.reserved.memory_bytes == before.reserved.memory_bytes
                || n.reserved.memory_bytes <= n.node.description.memory_bytes,
            "{} over-reserved memory: {:?}",
            n.node.id,
            n.reserved
        );
    }
    for (i, svc, max) in capped {
        let on = after.nodes[i]
            .tasks_by_service
            .get(svc)
            .copied()
            .unwrap_or(0);
        prop_assert!(
            on <= max,
            "{} tasks of {} on {} (max {})",
            on,
            svc,
            after.nodes[i].node.id,
            max
        );
    }

    // An unschedulable task fits on no node even after the plan (one check per service: its
    // tasks share a spec here).
    let mut checked: BTreeSet<&ServiceId> = BTreeSet::new();
    for (tid, _) in &plan.unschedulable {
        let t = by_id[tid];
        if t.node_id.is_some() || !checked.insert(&t.service_id) {
            continue;
        }
        for n in &after.nodes {
            prop_assert!(
                check_node(&after, t, &n.node.id).is_err(),
                "{} left unschedulable but fits on {}",
                tid,
                n.node.id
            );
        }
    }
    Ok(())
}

/// The same rules as `schedule`, written the slow, obvious way: every filter on every node
/// for every task, no ordered sets, no trimming. `schedule` must agree with it exactly.
fn reference_schedule(snap: &ClusterSnapshot, pending: &[Task], seed: u64) -> Plan {
    let mut state = snap.clone();
    let mut plan = Plan::default();
    let fits = |state: &ClusterSnapshot, p: &Pipeline, t: &Task, i: usize| {
        let n = &state.nodes[i];
        p.check(&n.node, &n.load(&t.service_id))
    };
    for t in pending {
        let Some(id) = &t.node_id else { continue };
        let Some(i) = state.position(id) else {
            let why = format!("assigned node {id} is not in the cluster");
            plan.unschedulable.push((t.id.clone(), why));
            continue;
        };
        match Pipeline::for_task(t).map(|p| fits(&state, &p, t, i)) {
            Err(e) => plan.unschedulable.push((t.id.clone(), e.to_string())),
            Ok(Ok(())) => {
                state.nodes[i].add_task(t);
                plan.assign.push((t.id.clone(), id.clone()));
            }
            Ok(Err(r)) => {
                let mut c = RejectCounts::default();
                c.add(r);
                plan.unschedulable
                    .push((t.id.clone(), c.no_suitable_node()));
            }
        }
    }
    let mut groups: Vec<Vec<&Task>> = Vec::new();
    for t in pending.iter().filter(|t| t.node_id.is_none()) {
        let same = |g: &Vec<&Task>| {
            g[0].service_id == t.service_id
                && g[0].spec.placement == t.spec.placement
                && g[0].spec.resources.reservations == t.spec.resources.reservations
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(t),
            None => groups.push(vec![t]),
        }
    }
    for g in groups {
        let first = g[0];
        let parsed = Pipeline::for_task(first)
            .and_then(|p| Ok((p, parse_preferences(&first.spec.placement.preferences)?)));
        let (p, spreads) = match parsed {
            Ok(v) => v,
            Err(e) => {
                for t in g {
                    plan.unschedulable.push((t.id.clone(), e.to_string()));
                }
                continue;
            }
        };
        let all: Vec<usize> = (0..state.nodes.len()).collect();
        // Spread groups count the tasks on the nodes that passed when the group started.
        let eligible: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| fits(&state, &p, first, i).is_ok())
            .collect();
        for t in g {
            let mut pool: Vec<usize> = eligible
                .iter()
                .copied()
                .filter(|&i| fits(&state, &p, t, i).is_ok())
                .collect();
            if pool.is_empty() {
                let mut c = RejectCounts::default();
                for &i in &all {
                    if let Err(r) = fits(&state, &p, t, i) {
                        c.add(r);
                    }
                }
                plan.unschedulable
                    .push((t.id.clone(), c.no_suitable_node()));
                continue;
            }
            let svc = |state: &ClusterSnapshot, i: usize| {
                state.nodes[i]
                    .tasks_by_service
                    .get(&t.service_id)
                    .copied()
                    .unwrap_or(0)
            };
            let mut branch = eligible.clone();
            for sp in &spreads {
                let values: BTreeSet<Option<&str>> = pool
                    .iter()
                    .map(|&i| sp.value(&state.nodes[i].node))
                    .collect();
                let in_group = |i: usize, v: Option<&str>| sp.value(&state.nodes[i].node) == v;
                let best = values.into_iter().min_by_key(|&v| {
                    let n: u64 = branch
                        .iter()
                        .filter(|&&i| in_group(i, v))
                        .map(|&i| svc(&state, i))
                        .sum();
                    (n, rank::tiebreak(seed, v))
                });
                let best = best.unwrap_or(None);
                pool.retain(|&i| in_group(i, best));
                branch.retain(|&i| in_group(i, best));
            }
            let i = pool.into_iter().min_by_key(|&i| {
                let n = &state.nodes[i];
                (
                    svc(&state, i),
                    n.total_tasks,
                    rank::tiebreak(seed, Some(n.node.id.as_str())),
                    i,
                )
            });
            let Some(i) = i else { continue };
            state.nodes[i].add_task(t);
            plan.assign
                .push((t.id.clone(), state.nodes[i].node.id.clone()));
        }
    }
    plan
}

fn run(nodes: &[GenNode], services: &[GenService], seed: u64) -> Result<(), TestCaseError> {
    let (snap, pending) = build(nodes, services);
    let plan = schedule(&snap, &pending, seed);
    check_plan(&snap, &pending, &plan)?;
    prop_assert_eq!(
        &plan,
        &schedule(&snap, &pending, seed),
        "same input and seed, other plan"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn schedule_agrees_with_the_obvious_implementation(
        nodes in prop::collection::vec(gen_node(), 0..=120),
        services in prop::collection::vec(gen_service(40), 1..=8),
        seed in any::<u64>(),
    ) {
        let (snap, pending) = build(&nodes, &services);
        prop_assert_eq!(schedule(&snap, &pending, seed), reference_schedule(&snap, &pending, seed));
    }

    #[test]
    fn plans_are_safe_and_deterministic(
        nodes in prop::collection::vec(gen_node(), 0..=200),
        services in prop::collection::vec(gen_service(60), 1..=9),
        seed in any::<u64>(),
    ) {
        run(&nodes, &services, seed)?;
    }

    /// Equal nodes, nothing that fills them: every service ends within one task between its
    /// fullest and emptiest node, whatever else was scheduled in the same batch.
    #[test]
    fn a_service_spreads_within_one_across_equal_nodes(
        nodes in 1usize..=60,
        replicas in prop::collection::vec(0usize..=150, 1..=8),
        small_reservations in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let all: Vec<_> = (0..nodes).map(|i| node(&format!("n{i:03}"))).collect();
        let snap = ClusterSnapshot::from_state(&all, &[]);
        let mut pending = Vec::new();
        for (k, &r) in replicas.iter().enumerate() {
            for i in 0..r {
                let mut t = task(&format!("s{k}-t{i}"), &format!("s{k}"));
                if small_reservations {
                    // 8 services × 150 tasks × 1 MiB < 8 GiB even on one node.
                    t.spec.resources.reservations.memory_bytes = 1 << 20;
                }
                pending.push(t);
            }
        }
        let plan = schedule(&snap, &pending, seed);
        check_plan(&snap, &pending, &plan)?;
        prop_assert!(plan.unschedulable.is_empty());
        let mut per: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (t, n) in &plan.assign {
            let svc = t.0.split('-').next().unwrap_or_default().to_owned();
            *per.entry((svc, n.0.clone())).or_default() += 1;
        }
        for (k, &r) in replicas.iter().enumerate() {
            let svc = format!("s{k}");
            let on: Vec<u64> = all
                .iter()
                .map(|n| per.get(&(svc.clone(), n.id.0.clone())).copied().unwrap_or(0))
                .collect();
            let (lo, hi) = (on.iter().min().copied(), on.iter().max().copied());
            let spread = hi.unwrap_or(0) - lo.unwrap_or(0);
            prop_assert!(spread <= 1, "{}: {} tasks as {:?}", svc, r, on);
        }
    }
}

proptest! {
    // Thousands of nodes: fewer cases, each one a cluster of the size the benchmark uses.
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn plans_are_safe_on_thousands_of_nodes(
        nodes in prop::collection::vec(gen_node(), 1000..=4000),
        services in prop::collection::vec(gen_service(400), 10..=30),
        seed in any::<u64>(),
    ) {
        run(&nodes, &services, seed)?;
    }
}
