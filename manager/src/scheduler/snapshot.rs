//! The scheduler's view of the cluster: every node with what is already placed on it.

use super::filter::{host_ports, node_nano_cpus, HostPort, NodeLoad};
use rswarm_proto::model::{Node, NodeId, Resources, ServiceId, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// A node and the tasks that count against it (swarmkit's `NodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: Node,
    /// Active tasks on the node per service: ranking spreads a service by this.
    pub tasks_by_service: BTreeMap<ServiceId, u64>,
    pub total_tasks: u64,
    /// The sum of the reservations of the active tasks on the node.
    pub reserved: Resources,
    /// Host-mode published ports in use: (protocol, port).
    pub host_ports: BTreeSet<HostPort>,
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        Self {
            node,
            ..Default::default()
        }
    }

    /// Counts `task` against the node.
    pub fn add_task(&mut self, task: &Task) {
        *self
            .tasks_by_service
            .entry(task.service_id.clone())
            .or_default() += 1;
        self.total_tasks += 1;
        let r = &task.spec.resources.reservations;
        self.reserved.nano_cpus = self.reserved.nano_cpus.saturating_add(r.nano_cpus);
        self.reserved.memory_bytes = self.reserved.memory_bytes.saturating_add(r.memory_bytes);
        self.host_ports.extend(host_ports(task));
    }

    /// What is left for new reservations: CPUs × 10⁹ and memory, less what is reserved.
    pub fn available(&self) -> Resources {
        Resources {
            nano_cpus: node_nano_cpus(&self.node).saturating_sub(self.reserved.nano_cpus),
            memory_bytes: self
                .node
                .description
                .memory_bytes
                .saturating_sub(self.reserved.memory_bytes),
        }
    }

    pub(crate) fn load(&self, service: &ServiceId) -> NodeLoad<'_> {
        NodeLoad {
            service_tasks: self.tasks_by_service.get(service).copied().unwrap_or(0),
            reserved_cpu: self.reserved.nano_cpus,
            reserved_memory: self.reserved.memory_bytes,
            host_ports: &self.host_ports,
            planned_ports: None,
        }
    }
}

/// Whether a task holds its place on its node: it is assigned (state assigned to running),
/// meant to run, and has not ended. A task being shut down stops counting as soon as its
/// desired state moves past running, so its replacement can take its place. A task still
/// `pending` with a node set is a preassigned (global) task waiting for the scheduler to
/// check it: it does not count yet, or `schedule` would count it twice (swarmkit's
/// `setupTasksList` makes the same split).
pub fn counts_against_node(task: &Task) -> bool {
    task.node_id.is_some()
        && task.desired_state <= TaskState::Running
        && task.status.state >= TaskState::Assigned
        && task.status.state <= TaskState::Running
}

/// Every node of the cluster with what is on it, sorted by node ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub nodes: Vec<NodeInfo>,
}

impl ClusterSnapshot {
    /// Builds the snapshot from the store's nodes and tasks. Tasks on nodes that are not in
    /// `nodes` are ignored.
    pub fn from_state(nodes: &[Node], tasks: &[Task]) -> Self {
        let mut infos: Vec<NodeInfo> = nodes.iter().cloned().map(NodeInfo::new).collect();
        infos.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        let mut snap = Self { nodes: infos };
        for t in tasks.iter().filter(|t| counts_against_node(t)) {
            if let Some(i) = t.node_id.as_ref().and_then(|id| snap.position(id)) {
                snap.nodes[i].add_task(t);
            }
        }
        snap
    }

    /// The index of a node. Binary search when the nodes are sorted (as `from_state` leaves
    /// them), a scan otherwise, so a hand-built snapshot still works.
    pub fn position(&self, id: &NodeId) -> Option<usize> {
        match self.nodes.binary_search_by(|n| n.node.id.cmp(id)) {
            Ok(i) => Some(i),
            Err(_) => self.nodes.iter().position(|n| n.node.id == *id),
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.position(id).map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, svc: &str, node: Option<&str>, desired: TaskState, state: TaskState) -> Task {
        let mut t = Task {
            id: id.into(),
            service_id: svc.into(),
            node_id: node.map(NodeId::from),
            desired_state: desired,
            ..Default::default()
        };
        t.status.state = state;
        t.spec.resources.reservations = Resources {
            nano_cpus: 100,
            memory_bytes: 1000,
        };
        t
    }

    #[test]
    fn counts_only_active_assigned_tasks() {
        use TaskState::*;
        let nodes: Vec<Node> = ["b", "a"]
            .iter()
            .map(|id| Node {
                id: (*id).into(),
                ..Default::default()
            })
            .collect();
        let tasks = vec![
            task("t1", "s1", Some("a"), Running, Running),
            task("t2", "s1", Some("a"), Running, Assigned),
            task("t3", "s2", Some("a"), Running, Starting),
            task("t9", "s2", Some("a"), Running, Pending), // preassigned, not yet checked
            task("t4", "s1", Some("b"), Shutdown, Running), // being stopped
            task("t5", "s1", Some("b"), Running, Failed),  // ended
            task("t6", "s1", None, Running, Pending),      // not scheduled
            task("t7", "s1", Some("gone"), Running, Running),
            task("t8", "s2", Some("b"), Ready, Preparing),
        ];
        let snap = ClusterSnapshot::from_state(&nodes, &tasks);
        let ids: Vec<&str> = snap.nodes.iter().map(|n| n.node.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let a = &snap.nodes[0];
        assert_eq!(a.total_tasks, 3);
        assert_eq!(a.tasks_by_service.get(&ServiceId::from("s1")), Some(&2));
        assert_eq!(a.tasks_by_service.get(&ServiceId::from("s2")), Some(&1));
        assert_eq!(
            a.reserved,
            Resources {
                nano_cpus: 300,
                memory_bytes: 3000
            }
        );
        let b = &snap.nodes[1];
        assert_eq!(b.total_tasks, 1);
        assert_eq!(b.tasks_by_service.get(&ServiceId::from("s1")), None);
        assert_eq!(snap.get(&"b".into()).map(|n| n.total_tasks), Some(1));
        assert_eq!(snap.position(&"zz".into()), None);
    }

    #[test]
    fn available_subtracts_reservations() {
        let mut n = NodeInfo::new(Node::default());
        n.node.description.cpus = 2;
        n.node.description.memory_bytes = 1000;
        n.reserved = Resources {
            nano_cpus: 500_000_000,
            memory_bytes: 1200,
        };
        assert_eq!(
            n.available(),
            Resources {
                nano_cpus: 1_500_000_000,
                memory_bytes: 0
            }
        );
    }
}
