//! The scheduler: decides which node each pending task runs on, as a pure function over a
//! [`ClusterSnapshot`] (nomad's `scheduler`, swarmkit's `manager/scheduler`).
//!
//! [`schedule`] takes the snapshot, the pending tasks and a seed and returns a [`Plan`]: the
//! assignments, and for every task that fits nowhere the reason, counted per reason in
//! Swarm's words ("no suitable node (insufficient memory on 2 nodes; 1 node drained)").
//! It does not read or write the store: the leader builds the snapshot
//! ([`ClusterSnapshot::from_state`]), applies the plan (checking each assignment again
//! against the latest state), and leaves unschedulable tasks pending with their reason.
//!
//! - *Filters* ([`filter`]) decide where a task can run, in a fixed order: ready, active
//!   (not drained or paused), CPU and memory reservations, constraints ([`constraint`]), max
//!   replicas per node, host-mode port clashes.
//! - *Ranking* ([`rank`]) picks the best of the nodes left: spread over the values of each
//!   `spread=node.labels.X` preference first, then fewest tasks of the service, then fewest
//!   tasks overall, then a tiebreak hashed from the seed and the node ID.
//!
//! Tasks that need the same filters (same service, placement, reservations) form a group.
//! Readiness and availability run once per node per plan, the other filters once per node
//! per group; the nodes that pass sit in ordered sets (only as many per leaf as the group has
//! tasks) updated as tasks are placed, so only the chosen node is checked again after each
//! placement. A batch of tasks therefore spreads evenly (12 tasks on 3 equal nodes: 4/4/4),
//! and the cost is O(groups × nodes + tasks × log nodes) rather than O(tasks × nodes).
//!
//! Tasks that already name a node (a global service's, one per node) are only checked against
//! that node, before the others so they get their node's resources first (swarmkit's
//! preassigned tasks); [`check_node`] answers the same question for the global orchestrator.
//!
//! Determinism: nothing here iterates a `HashMap`; equal input and seed give an equal plan.

pub mod constraint;
pub mod filter;
pub mod rank;
pub mod snapshot;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use constraint::{parse_constraints, parse_preferences, Constraint, ConstraintError, Spread};
pub use filter::{Filter, Pipeline, Reject, RejectCounts};
pub use snapshot::{counts_against_node, ClusterSnapshot, NodeInfo};

use filter::{host_ports, HostPort, NodeLoad};
use rank::{tiebreak, NodeKey, Tree};
use rswarm_proto::model::{NodeId, Resources, ServiceId, Task, TaskId};
use std::collections::{BTreeMap, BTreeSet};

/// What the scheduler decided. Every pending task appears exactly once, in one of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub assign: Vec<(TaskId, NodeId)>,
    /// Tasks that fit nowhere, with the reason `service ps` shows.
    pub unschedulable: Vec<(TaskId, String)>,
}

/// Places `pending` tasks on the nodes of `snap`. Tasks with `node_id` set are checked
/// against that node only; the others go through filters and ranking. `seed` breaks ties
/// between equal nodes; the caller derives it from something stable (e.g. a task ID) so that
/// plans replay.
pub fn schedule(snap: &ClusterSnapshot, pending: &[Task], seed: u64) -> Plan {
    let mut work = Work::new(snap, pending, seed);
    let mut plan = Plan::default();

    let (preassigned, free): (Vec<&Task>, Vec<&Task>) =
        pending.iter().partition(|t| t.node_id.is_some());
    for t in preassigned {
        schedule_preassigned(&mut work, t, &mut plan);
    }
    // One buffer for the current group's per-node counts of its service.
    let mut counts = Vec::new();
    for group in group_tasks(&free) {
        schedule_group(&mut work, &group, &mut counts, &mut plan);
    }
    plan
}

/// Whether `task` can run on the node `node` as the snapshot stands: the global
/// orchestrator's question, and the check a preassigned task gets.
pub fn check_node(snap: &ClusterSnapshot, task: &Task, node: &NodeId) -> Result<(), Reject> {
    let info = snap.get(node).ok_or(Reject::UnknownNode)?;
    let pipeline = Pipeline::for_task(task).map_err(|_| Reject::InvalidPlacement)?;
    pipeline.check(&info.node, &info.load(&task.service_id))
}

/// The snapshot's counters plus this plan's placements. The snapshot itself is never
/// cloned, and per-service counts stay sparse (a service's tasks per node are held densely
/// only while its group is being scheduled): dense counts for every service would take
/// services × nodes memory.
struct Work<'s> {
    snap: &'s ClusterSnapshot,
    total: Vec<u64>,
    cpu: Vec<u64>,
    memory: Vec<u64>,
    /// For each service with pending tasks: (node, tasks) from the snapshot.
    existing: BTreeMap<&'s ServiceId, Vec<(usize, u64)>>,
    /// Tasks placed by this plan: service → node → tasks.
    planned: BTreeMap<ServiceId, BTreeMap<usize, u64>>,
    planned_ports: BTreeMap<usize, BTreeSet<HostPort>>,
    /// Per node: the seeded tiebreak.
    tiebreak: Vec<u64>,
    seed: u64,
    /// Nodes that are ready and active, and why the others are not: these two filters do not
    /// depend on the task, so they run once per plan, not once per group.
    live: Vec<usize>,
    unavailable: RejectCounts,
}

impl<'s> Work<'s> {
    fn new(snap: &'s ClusterSnapshot, pending: &[Task], seed: u64) -> Self {
        let nodes = &snap.nodes;
        let services: BTreeSet<&ServiceId> = pending.iter().map(|t| &t.service_id).collect();
        let mut existing: BTreeMap<&'s ServiceId, Vec<(usize, u64)>> = BTreeMap::new();
        let mut live = Vec::with_capacity(nodes.len());
        let mut unavailable = RejectCounts::default();
        for (i, n) in nodes.iter().enumerate() {
            for (svc, &c) in &n.tasks_by_service {
                if services.contains(svc) {
                    existing.entry(svc).or_default().push((i, c));
                }
            }
            match filter::available_for_tasks(&n.node) {
                Ok(()) => live.push(i),
                Err(r) => unavailable.add(r),
            }
        }
        Self {
            snap,
            total: nodes.iter().map(|n| n.total_tasks).collect(),
            cpu: nodes.iter().map(|n| n.reserved.nano_cpus).collect(),
            memory: nodes.iter().map(|n| n.reserved.memory_bytes).collect(),
            existing,
            planned: BTreeMap::new(),
            planned_ports: BTreeMap::new(),
            tiebreak: nodes
                .iter()
                .map(|n| tiebreak(seed, Some(n.node.id.as_str())))
                .collect(),
            seed,
            live,
            unavailable,
        }
    }

    /// Tasks of `service` on node `i`, the snapshot's and this plan's.
    fn service_tasks(&self, service: &ServiceId, i: usize) -> u64 {
        let before = self.snap.nodes[i]
            .tasks_by_service
            .get(service)
            .copied()
            .unwrap_or(0);
        let planned = self
            .planned
            .get(service)
            .and_then(|m| m.get(&i))
            .copied()
            .unwrap_or(0);
        before + planned
    }

    /// Fills `counts` with the tasks of `service` on every node.
    fn fill_counts(&self, service: &ServiceId, counts: &mut Vec<u64>) {
        counts.clear();
        counts.resize(self.snap.nodes.len(), 0);
        for &(i, c) in self.existing.get(service).into_iter().flatten() {
            counts[i] += c;
        }
        for (&i, &c) in self.planned.get(service).into_iter().flatten() {
            counts[i] += c;
        }
    }

    fn load(&self, i: usize, service_tasks: u64) -> NodeLoad<'_> {
        NodeLoad {
            service_tasks,
            reserved_cpu: self.cpu[i],
            reserved_memory: self.memory[i],
            host_ports: &self.snap.nodes[i].host_ports,
            planned_ports: self.planned_ports.get(&i),
        }
    }

    fn place(&mut self, i: usize, service: &ServiceId, r: &Resources, ports: &[HostPort]) {
        self.total[i] += 1;
        self.cpu[i] = self.cpu[i].saturating_add(r.nano_cpus);
        self.memory[i] = self.memory[i].saturating_add(r.memory_bytes);
        // Looked up before inserting so that the ID is cloned once per service, not per task.
        match self.planned.get_mut(service) {
            Some(m) => *m.entry(i).or_default() += 1,
            None => {
                self.planned
                    .insert(service.clone(), BTreeMap::from([(i, 1)]));
            }
        }
        if !ports.is_empty() {
            self.planned_ports
                .entry(i)
                .or_default()
                .extend(ports.iter().cloned());
        }
    }

    fn key(&self, i: usize, service_tasks: u64) -> NodeKey {
        (service_tasks, self.total[i], self.tiebreak[i], i)
    }
}

fn schedule_preassigned(work: &mut Work<'_>, t: &Task, plan: &mut Plan) {
    let Some(node_id) = &t.node_id else { return };
    let Some(i) = work.snap.position(node_id) else {
        plan.unschedulable.push((
            t.id.clone(),
            format!("assigned node {node_id} is not in the cluster"),
        ));
        return;
    };
    let pipeline = match Pipeline::for_task(t) {
        Ok(p) => p,
        Err(e) => {
            plan.unschedulable.push((t.id.clone(), e.to_string()));
            return;
        }
    };
    let on_node = work.service_tasks(&t.service_id, i);
    match pipeline.check(&work.snap.nodes[i].node, &work.load(i, on_node)) {
        Ok(()) => {
            let ports = host_ports(t);
            work.place(i, &t.service_id, &t.spec.resources.reservations, &ports);
            plan.assign.push((t.id.clone(), node_id.clone()));
        }
        Err(r) => {
            let mut why = RejectCounts::default();
            why.add(r);
            plan.unschedulable
                .push((t.id.clone(), why.no_suitable_node()));
        }
    }
}

/// Tasks that get the same filters and ranking: one service, equal placement, reservations
/// and host ports. Groups keep the order in which their first task was pending.
struct Group<'p> {
    tasks: Vec<&'p Task>,
}

fn group_tasks<'p>(tasks: &[&'p Task]) -> Vec<Group<'p>> {
    let mut groups: Vec<Group<'p>> = Vec::new();
    // Service → its groups; a service usually has one (two during a rolling update).
    let mut by_service: BTreeMap<&ServiceId, Vec<usize>> = BTreeMap::new();
    for &t in tasks {
        let same = |g: &Group<'_>| {
            let f = g.tasks[0];
            f.spec.placement == t.spec.placement
                && f.spec.resources.reservations == t.spec.resources.reservations
                && host_ports(f) == host_ports(t)
        };
        let candidates = by_service.entry(&t.service_id).or_default();
        match candidates.iter().find(|&&g| same(&groups[g])) {
            Some(&g) => groups[g].tasks.push(t),
            None => {
                candidates.push(groups.len());
                groups.push(Group { tasks: vec![t] });
            }
        }
    }
    groups
}

fn schedule_group(work: &mut Work<'_>, group: &Group<'_>, counts: &mut Vec<u64>, plan: &mut Plan) {
    let first = group.tasks[0];
    let parsed = Pipeline::for_task(first)
        .and_then(|p| Ok((p, parse_preferences(&first.spec.placement.preferences)?)));
    let (pipeline, spreads) = match parsed {
        Ok(v) => v,
        Err(e) => {
            // Refused at create time normally; a task stored before that check stays
            // pending with the parse error as its reason.
            let why = e.to_string();
            for t in &group.tasks {
                plan.unschedulable.push((t.id.clone(), why.clone()));
            }
            return;
        }
    };
    let service = &first.service_id;
    let reservations = &first.spec.resources.reservations;
    let ports = host_ports(first);
    work.fill_counts(service, counts);
    let mut rejects = work.unavailable.clone();

    let snap = work.snap;
    let seed = work.seed;
    let mut tree = Tree::new(spreads.len());
    let mut path: Vec<Option<&str>> = Vec::with_capacity(spreads.len());
    for &i in &work.live {
        let node = &snap.nodes[i].node;
        match pipeline.check(node, &work.load(i, counts[i])) {
            Ok(()) => {
                path.clear();
                path.extend(spreads.iter().map(|s| s.value(node)));
                tree.insert(&path, work.key(i, counts[i]), |v| tiebreak(seed, v));
            }
            Err(r) => rejects.add(r),
        }
    }
    tree.finish(group.tasks.len());

    let mut exhausted: Option<String> = None;
    for t in &group.tasks {
        let Some((leaf, old)) = tree.pick() else {
            let why = exhausted.get_or_insert_with(|| rejects.no_suitable_node());
            plan.unschedulable.push((t.id.clone(), why.clone()));
            continue;
        };
        let i = old.3;
        work.place(i, service, reservations, &ports);
        counts[i] += 1;
        plan.assign
            .push((t.id.clone(), snap.nodes[i].node.id.clone()));
        // Only the chosen node changed: check whether it can take another task of the group
        // (resources, max replicas, ports; the rest cannot have changed).
        let new = match pipeline.check(&snap.nodes[i].node, &work.load(i, counts[i])) {
            Ok(()) => Some(work.key(i, counts[i])),
            Err(r) => {
                rejects.add(r);
                None
            }
        };
        tree.placed(leaf, old, new);
    }
}
