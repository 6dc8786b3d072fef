//! What one node's networking needs to know of the cluster, as the dispatcher sends it:
//! the networks the node's tasks are on (and the ingress network), the services on them
//! with their VIPs, aliases and published ports, every task holding an address on them
//! with its node, and those nodes' underlay addresses. Computed on the leader from the
//! store (`manager::netview`), consumed by the node's network agent.
use super::{
    EndpointMode, Network, NetworkAttachment, NetworkId, NodeId, PortConfig, ServiceId, TaskId,
    VirtualIp,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub networks: Vec<Network>,
    pub services: Vec<ServiceView>,
    pub tasks: Vec<TaskView>,
    /// Underlay addresses of the nodes holding those tasks or ingress endpoints.
    pub nodes: BTreeMap<NodeId, Ipv4Addr>,
    /// Every overlay network's subnet in the cluster (traffic to them never leaves a node
    /// through its egress bridge).
    #[serde(default)]
    pub subnets: Vec<super::Ipv4Cidr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: ServiceId,
    pub name: String,
    /// The networks it is on (ids), with the extra names it answers to there.
    pub networks: Vec<(NetworkId, Vec<String>)>,
    pub endpoint_mode: EndpointMode,
    pub virtual_ips: Vec<VirtualIp>,
    /// Published ports, every number chosen.
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: TaskId,
    pub service_id: ServiceId,
    pub node_id: Option<NodeId>,
    pub networks: Vec<NetworkAttachment>,
    /// Running (and healthy, if it has a health check) and still wanted: it takes traffic.
    pub serving: bool,
}

impl NetworkView {
    pub fn ingress(&self) -> Option<&Network> {
        self.networks.iter().find(|n| n.spec.ingress)
    }
}
