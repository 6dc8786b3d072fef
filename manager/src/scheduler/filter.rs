//! Filters: where a task *can* run. A [`Pipeline`] holds the filters a task needs, built once
//! per task group (constraints parsed once), and checks nodes in a fixed order, cheapest and
//! most common failures first, as swarmkit's `pipeline.go`. The first failing filter names the
//! node's [`Reject`]; [`RejectCounts`] turns a task's rejects into Swarm's explanation.
//!
//! STYLE.md sketches `trait Filter { applies(task); check(task, node) }`. Filters here are an
//! enum built from the task instead: `applies` is whether the pipeline includes the filter,
//! and checking a node does not re-read (or re-parse) the task, which matters at 100,000 tasks.

use super::constraint::{matches_all, parse_constraints, Constraint, ConstraintError};
use rswarm_proto::model::{Node, NodeAvailability, NodeState, Resources, Task};
use std::collections::BTreeSet;
use std::fmt;

/// A host-mode published port: (protocol, port).
pub type HostPort = (String, u16);

/// Why a node cannot take a task. The order of the variants is the order of the filters,
/// which also orders explanations with equal counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    /// The node's session is down.
    Down,
    /// The node has not (or not yet) reported ready.
    NotReady,
    /// No container runtime answers on the node.
    NoRuntime,
    Drained,
    Paused,
    InsufficientCpu,
    InsufficientMemory,
    Constraints,
    MaxReplicas,
    HostPortInUse,
    /// A preassigned (global) task names a node the snapshot does not have.
    UnknownNode,
    /// The task's constraints or preferences do not parse; `parse_constraints` says why.
    InvalidPlacement,
}

impl Reject {
    pub const ALL: [Reject; 12] = [
        Reject::Down,
        Reject::NotReady,
        Reject::NoRuntime,
        Reject::Drained,
        Reject::Paused,
        Reject::InsufficientCpu,
        Reject::InsufficientMemory,
        Reject::Constraints,
        Reject::MaxReplicas,
        Reject::HostPortInUse,
        Reject::UnknownNode,
        Reject::InvalidPlacement,
    ];

    /// The reason with its node count, in Swarm's words where Swarm has them
    /// ("insufficient memory on 2 nodes", "1 node drained").
    pub fn explain(self, nodes: u64) -> String {
        let n = if nodes == 1 {
            "1 node".to_owned()
        } else {
            format!("{nodes} nodes")
        };
        match self {
            Reject::Down => format!("{n} down"),
            Reject::NotReady => format!("{n} not ready"),
            Reject::NoRuntime => format!("no container runtime on {n}"),
            Reject::Drained => format!("{n} drained"),
            Reject::Paused => format!("{n} paused"),
            Reject::InsufficientCpu => format!("insufficient CPU on {n}"),
            Reject::InsufficientMemory => format!("insufficient memory on {n}"),
            Reject::Constraints => format!("scheduling constraints not satisfied on {n}"),
            Reject::MaxReplicas => format!("max replicas per node reached on {n}"),
            Reject::HostPortInUse => format!("host-mode port already in use on {n}"),
            Reject::UnknownNode => format!("{n} not found"),
            Reject::InvalidPlacement => format!("invalid placement constraints for {n}"),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reject::Down => "node down",
            Reject::NotReady => "node not ready",
            Reject::NoRuntime => "no container runtime",
            Reject::Drained => "node drained",
            Reject::Paused => "node paused",
            Reject::InsufficientCpu => "insufficient CPU",
            Reject::InsufficientMemory => "insufficient memory",
            Reject::Constraints => "scheduling constraints not satisfied",
            Reject::MaxReplicas => "max replicas per node reached",
            Reject::HostPortInUse => "host-mode port already in use",
            Reject::UnknownNode => "node not found",
            Reject::InvalidPlacement => "invalid placement constraints",
        })
    }
}

/// Rejects counted per reason, one per node, for a task's explanation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectCounts([u64; Reject::ALL.len()]);

impl RejectCounts {
    pub fn add(&mut self, r: Reject) {
        self.0[r as usize] += 1;
    }

    pub fn get(&self, r: Reject) -> u64 {
        self.0[r as usize]
    }

    /// `insufficient memory on 2 nodes; 1 node drained`: most frequent reason first, ties in
    /// filter order (swarmkit's `Explain` sorts the same way). Empty if nothing was rejected.
    pub fn explain(&self) -> String {
        let mut seen: Vec<(u64, Reject)> = Reject::ALL
            .iter()
            .map(|&r| (self.get(r), r))
            .filter(|&(n, _)| n > 0)
            .collect();
        seen.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let parts: Vec<String> = seen.iter().map(|&(n, r)| r.explain(n)).collect();
        parts.join("; ")
    }

    /// The reason text of a task that fits nowhere.
    pub fn no_suitable_node(&self) -> String {
        let why = self.explain();
        if why.is_empty() {
            "no suitable node (the cluster has no nodes)".to_owned()
        } else {
            format!("no suitable node ({why})")
        }
    }
}

/// What is already on a node, as far as the filters care: the scheduler passes its working
/// counters (which include this plan's placements), [`super::check_node`] a snapshot's.
#[derive(Debug, Clone, Copy)]
pub struct NodeLoad<'a> {
    /// Tasks of the task's service on the node.
    pub service_tasks: u64,
    pub reserved_cpu: u64,
    pub reserved_memory: u64,
    pub host_ports: &'a BTreeSet<HostPort>,
    /// Host ports taken by this plan's placements.
    pub planned_ports: Option<&'a BTreeSet<HostPort>>,
}

/// One check, in pipeline order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The node's status is ready.
    Ready,
    /// The node's availability is active (drain and pause take no new tasks).
    Active,
    /// Reservations against the node's CPUs and memory less what is reserved there.
    Resources(Resources),
    Constraints(Vec<Constraint>),
    /// At most this many tasks of the service per node (non-zero).
    MaxReplicas(u64),
    /// Host-mode published ports the task needs free.
    HostPorts(Vec<HostPort>),
}

/// The node's CPU capacity in nano-CPUs.
pub fn node_nano_cpus(node: &Node) -> u64 {
    u64::from(node.description.cpus).saturating_mul(1_000_000_000)
}

impl Filter {
    pub fn check(&self, node: &Node, load: &NodeLoad<'_>) -> Result<(), Reject> {
        match self {
            Filter::Ready => match node.status.state {
                NodeState::Ready if node.description.runtime_unavailable => Err(Reject::NoRuntime),
                NodeState::Ready => Ok(()),
                NodeState::Down => Err(Reject::Down),
                NodeState::Unknown => Err(Reject::NotReady),
            },
            Filter::Active => match node.spec.availability {
                NodeAvailability::Active => Ok(()),
                NodeAvailability::Drain => Err(Reject::Drained),
                NodeAvailability::Pause => Err(Reject::Paused),
            },
            Filter::Resources(r) => {
                let cpu_left = node_nano_cpus(node).saturating_sub(load.reserved_cpu);
                let mem_left = node
                    .description
                    .memory_bytes
                    .saturating_sub(load.reserved_memory);
                if r.memory_bytes > mem_left {
                    Err(Reject::InsufficientMemory)
                } else if r.nano_cpus > cpu_left {
                    Err(Reject::InsufficientCpu)
                } else {
                    Ok(())
                }
            }
            Filter::Constraints(c) => {
                if matches_all(c, node) {
                    Ok(())
                } else {
                    Err(Reject::Constraints)
                }
            }
            Filter::MaxReplicas(max) => {
                if load.service_tasks < *max {
                    Ok(())
                } else {
                    Err(Reject::MaxReplicas)
                }
            }
            Filter::HostPorts(ports) => {
                let taken = |p: &HostPort| {
                    load.host_ports.contains(p) || load.planned_ports.is_some_and(|s| s.contains(p))
                };
                if ports.iter().any(taken) {
                    Err(Reject::HostPortInUse)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The filters every task has, ready then active, on their own: they do not depend on the
/// task, so the scheduler runs them once per node per plan.
pub fn available_for_tasks(node: &Node) -> Result<(), Reject> {
    let none = BTreeSet::new();
    let load = NodeLoad {
        service_tasks: 0,
        reserved_cpu: 0,
        reserved_memory: 0,
        host_ports: &none,
        planned_ports: None,
    };
    Filter::Ready.check(node, &load)?;
    Filter::Active.check(node, &load)
}

/// The host-mode ports a task publishes. Tasks carry no published ports yet; when the task
/// spec gains them (endpoint spec, `mode=host`), this is the one place to read them, and the
/// [`Filter::HostPorts`] check and the snapshot's bookkeeping follow.
pub fn host_ports(_task: &Task) -> Vec<HostPort> {
    Vec::new()
}

/// The filters one task group needs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    filters: Vec<Filter>,
}

impl Pipeline {
    /// Builds the pipeline for a task: readiness and availability always, the rest only when
    /// the task asks for it (swarmkit's `SetTask` returning false).
    pub fn for_task(task: &Task) -> Result<Self, ConstraintError> {
        let placement = &task.spec.placement;
        let constraints = parse_constraints(&placement.constraints)?;
        let reservations = &task.spec.resources.reservations;
        let ports = host_ports(task);
        let mut filters = vec![Filter::Ready, Filter::Active];
        if reservations.nano_cpus > 0 || reservations.memory_bytes > 0 {
            filters.push(Filter::Resources(reservations.clone()));
        }
        if !constraints.is_empty() {
            filters.push(Filter::Constraints(constraints));
        }
        if placement.max_replicas_per_node > 0 {
            filters.push(Filter::MaxReplicas(placement.max_replicas_per_node));
        }
        if !ports.is_empty() {
            filters.push(Filter::HostPorts(ports));
        }
        Ok(Self { filters })
    }

    pub fn from_filters(filters: Vec<Filter>) -> Self {
        Self { filters }
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The first reject, or `Ok` if the node can take the task.
    pub fn check(&self, node: &Node, load: &NodeLoad<'_>) -> Result<(), Reject> {
        self.filters.iter().try_for_each(|f| f.check(node, load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::NodeAvailability;

    const GIB: u64 = 1 << 30;

    fn node(state: NodeState, avail: NodeAvailability) -> Node {
        let mut n = Node {
            id: "n1".into(),
            ..Default::default()
        };
        n.status.state = state;
        n.spec.availability = avail;
        n.description.cpus = 2;
        n.description.memory_bytes = 4 * GIB;
        n.spec.labels.insert("zone".into(), "a".into());
        n
    }

    fn load(ports: &BTreeSet<HostPort>) -> NodeLoad<'_> {
        NodeLoad {
            service_tasks: 0,
            reserved_cpu: 0,
            reserved_memory: 0,
            host_ports: ports,
            planned_ports: None,
        }
    }

    #[test]
    fn ready_and_active() {
        use NodeAvailability::*;
        use NodeState::*;
        let none = BTreeSet::new();
        let cases = [
            (Ready, Active, Ok(())),
            (Down, Active, Err(Reject::Down)),
            (Unknown, Active, Err(Reject::NotReady)),
            (Ready, Drain, Err(Reject::Drained)),
            (Ready, Pause, Err(Reject::Paused)),
            // Readiness is checked first: a down, drained node counts as down.
            (Down, Drain, Err(Reject::Down)),
        ];
        let p = Pipeline::from_filters(vec![Filter::Ready, Filter::Active]);
        for (state, avail, want) in cases {
            assert_eq!(
                p.check(&node(state, avail), &load(&none)),
                want,
                "{state:?} {avail:?}"
            );
        }
    }

    #[test]
    fn resources() {
        let none = BTreeSet::new();
        let n = node(NodeState::Ready, NodeAvailability::Active);
        let res = |cpu: u64, mem: u64| Resources {
            nano_cpus: cpu,
            memory_bytes: mem,
        };
        // (reservation, already reserved cpu, already reserved memory, want)
        let cases = [
            (res(2_000_000_000, 4 * GIB), 0, 0, Ok(())),
            (res(2_000_000_001, 0), 0, 0, Err(Reject::InsufficientCpu)),
            (res(0, 4 * GIB + 1), 0, 0, Err(Reject::InsufficientMemory)),
            (
                res(500_000_000, 0),
                1_600_000_000,
                0,
                Err(Reject::InsufficientCpu),
            ),
            (res(500_000_000, 0), 1_500_000_000, 0, Ok(())),
            (res(0, GIB), 0, 3 * GIB, Ok(())),
            (res(0, GIB), 0, 3 * GIB + 1, Err(Reject::InsufficientMemory)),
            // Memory is reported first when both are short.
            (
                res(3_000_000_000, 5 * GIB),
                0,
                0,
                Err(Reject::InsufficientMemory),
            ),
            // Already oversubscribed (e.g. the node shrank): nothing more fits.
            (res(1, 0), 9_000_000_000, 0, Err(Reject::InsufficientCpu)),
        ];
        for (r, cpu, mem, want) in cases {
            let mut l = load(&none);
            l.reserved_cpu = cpu;
            l.reserved_memory = mem;
            assert_eq!(
                Filter::Resources(r.clone()).check(&n, &l),
                want,
                "{r:?} {cpu} {mem}"
            );
        }
    }

    #[test]
    fn constraints_max_replicas_and_ports() {
        let mut used = BTreeSet::new();
        used.insert(("tcp".to_owned(), 80));
        let mut planned = BTreeSet::new();
        planned.insert(("udp".to_owned(), 53));
        let n = node(NodeState::Ready, NodeAvailability::Active);
        let c = |e: &str| {
            Filter::Constraints(parse_constraints(&[e.to_owned()]).expect("valid constraint"))
        };
        let port = |p: &str, n: u16| Filter::HostPorts(vec![(p.to_owned(), n)]);
        let mut l = load(&used);
        l.planned_ports = Some(&planned);
        l.service_tasks = 2;
        let cases = [
            (c("node.labels.zone==a"), Ok(())),
            (c("node.labels.zone==b"), Err(Reject::Constraints)),
            (Filter::MaxReplicas(3), Ok(())),
            (Filter::MaxReplicas(2), Err(Reject::MaxReplicas)),
            (port("tcp", 80), Err(Reject::HostPortInUse)),
            (port("udp", 80), Ok(())),
            (port("udp", 53), Err(Reject::HostPortInUse)),
            (port("tcp", 8080), Ok(())),
        ];
        for (f, want) in cases {
            assert_eq!(f.check(&n, &l), want, "{f:?}");
        }
    }

    #[test]
    fn pipeline_includes_only_what_the_task_needs() {
        let mut t = Task::default();
        assert_eq!(
            Pipeline::for_task(&t).map(|p| p.filters().to_vec()),
            Ok(vec![Filter::Ready, Filter::Active])
        );
        t.spec.resources.reservations.memory_bytes = 1;
        t.spec.placement.constraints = vec!["node.role==worker".into()];
        t.spec.placement.max_replicas_per_node = 2;
        let p = Pipeline::for_task(&t).expect("valid");
        assert_eq!(p.filters().len(), 5);
        assert!(matches!(p.filters()[4], Filter::MaxReplicas(2)));
        t.spec.placement.constraints = vec!["node.role=worker".into()];
        assert!(Pipeline::for_task(&t).is_err());
    }

    #[test]
    fn explanations_count_per_reason() {
        let mut c = RejectCounts::default();
        assert_eq!(
            c.no_suitable_node(),
            "no suitable node (the cluster has no nodes)"
        );
        c.add(Reject::Drained);
        c.add(Reject::InsufficientMemory);
        c.add(Reject::InsufficientMemory);
        c.add(Reject::Down);
        assert_eq!(
            c.no_suitable_node(),
            "no suitable node (insufficient memory on 2 nodes; 1 node down; 1 node drained)"
        );
        let mut c = RejectCounts::default();
        for _ in 0..3 {
            c.add(Reject::Constraints);
        }
        c.add(Reject::MaxReplicas);
        assert_eq!(
            c.explain(),
            "scheduling constraints not satisfied on 3 nodes; \
             max replicas per node reached on 1 node"
        );
    }
}
