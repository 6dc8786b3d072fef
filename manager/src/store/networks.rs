//! The store's guards for networks and addresses. The allocator decides on the leader;
//! these checks make `apply` refuse whatever would break the invariants (a subnet or VNI
//! twice, an address held twice, an address outside its network), so two proposals made
//! from the same view cannot both win.

use super::State;
use rswarm_proto::model::{
    CommandError, EndpointMode, Ipv4Cidr, Network, NetworkId, Service, ServiceId, Task, TaskId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Who holds an address; excluded from the "taken" check when it is the object being
/// written.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    Service(&'a ServiceId),
    Task(&'a TaskId),
    Node(&'a rswarm_proto::model::NodeId),
}

impl State {
    /// Every address taken on `network`, and by what: its gateway, the VIPs of services
    /// and the addresses of tasks that still hold theirs; `except`'s own are left out.
    pub fn addresses_in_use(
        &self,
        network: &NetworkId,
        except: Option<Holder<'_>>,
    ) -> BTreeMap<Ipv4Addr, String> {
        let mut used = BTreeMap::new();
        if let Some(n) = self.networks.get(network) {
            used.insert(n.allocation.gateway, "the network's gateway".to_owned());
            for (node, addr) in &n.node_endpoints {
                if !matches!(except, Some(Holder::Node(id)) if id == node) {
                    used.insert(addr.addr(), format!("node {node}"));
                }
            }
        }
        for svc in self.services.values() {
            if matches!(except, Some(Holder::Service(id)) if *id == svc.id) {
                continue;
            }
            for vip in &svc.endpoint.virtual_ips {
                if &vip.network == network {
                    used.insert(vip.addr.addr(), format!("service {}", svc.spec.name));
                }
            }
        }
        for t in self.tasks.values() {
            if matches!(except, Some(Holder::Task(id)) if *id == t.id) || !t.holds_addresses() {
                continue;
            }
            for a in t.networks.iter().filter(|a| &a.network == network) {
                for addr in &a.addresses {
                    used.insert(
                        addr.addr(),
                        format!("task {}", rswarm_proto::model::naming::task_name(t)),
                    );
                }
            }
        }
        used
    }

    /// A new network: a unique name, a gateway that is a host of its subnet, a subnet
    /// that overlaps no other network's, a VNI of its own.
    pub(super) fn check_new_network(&self, n: &Network) -> Result<(), CommandError> {
        if self.networks.contains_key(&n.id) {
            return Err(CommandError::Exists {
                kind: "network".into(),
                id: n.id.to_string(),
            });
        }
        if self.networks.values().any(|o| o.spec.name == n.spec.name) {
            return Err(CommandError::Exists {
                kind: "network".into(),
                id: n.spec.name.clone(),
            });
        }
        let a = &n.allocation;
        if !a.subnet.is_network() || a.subnet.prefix() > 30 {
            return Err(CommandError::Invalid(format!(
                "{} is not a usable subnet",
                a.subnet
            )));
        }
        if !a.subnet.is_host(a.gateway) {
            return Err(CommandError::Invalid(format!(
                "gateway {} is not a host address of subnet {}",
                a.gateway, a.subnet
            )));
        }
        if a.vni == 0 || a.vni > VNI_MAX {
            return Err(CommandError::Invalid(format!(
                "VNI {} is outside 1-{VNI_MAX}",
                a.vni
            )));
        }
        for o in self.networks.values() {
            if o.allocation.subnet.overlaps(&a.subnet) {
                return Err(CommandError::Conflict(format!(
                    "subnet {} overlaps subnet {} of network {}",
                    a.subnet, o.allocation.subnet, o.spec.name
                )));
            }
            if o.allocation.vni == a.vni {
                return Err(CommandError::Conflict(format!(
                    "VNI {} is taken by network {}",
                    a.vni, o.spec.name
                )));
            }
        }
        Ok(())
    }

    /// What still uses a network, if anything: a service that names it or has a VIP on
    /// it, or a task of a service that still holds an address on it.
    pub(super) fn network_user(&self, id: &NetworkId) -> Option<String> {
        let ingress = self.networks.get(id).is_some_and(|n| n.spec.ingress);
        for svc in self.services.values() {
            if ingress && svc.publishes_through_mesh() {
                return Some(format!("service {}", svc.spec.name));
            }
            let named = svc.spec.networks.iter().any(|c| c.target == id.as_str())
                || svc.endpoint.virtual_ips.iter().any(|v| &v.network == id);
            if named {
                return Some(format!("service {}", svc.spec.name));
            }
        }
        self.tasks
            .values()
            .filter(|t| self.services.contains_key(&t.service_id) && t.holds_addresses())
            .find(|t| {
                t.networks
                    .iter()
                    .any(|a| &a.network == id && !a.addresses.is_empty())
            })
            .map(|t| format!("task {}", rswarm_proto::model::naming::task_name(t)))
    }

    /// A host-network service has no networks or ports. A service's networks exist and are
    /// named once; under `vip` it has exactly one VIP
    /// on each of them (none under `dnsrr`), each a free host address of its network.
    pub(super) fn check_service_networks(&self, svc: &Service) -> Result<(), CommandError> {
        // The control API's rule, checked again: the node's own stack is the only one.
        if svc.spec.task.host_network
            && (!svc.spec.networks.is_empty() || !svc.spec.ports.is_empty())
        {
            return Err(CommandError::Invalid(format!(
                "service {} is on the host network: it joins no other network and publishes no ports",
                svc.spec.name
            )));
        }
        let mut attached = BTreeSet::new();
        for c in &svc.spec.networks {
            let id = NetworkId(c.target.clone());
            if !self.networks.contains_key(&id) {
                return Err(CommandError::NotFound {
                    kind: "network".into(),
                    id: c.target.clone(),
                });
            }
            if !attached.insert(id) {
                return Err(CommandError::Invalid(format!(
                    "network {} is attached more than once",
                    c.target
                )));
            }
        }
        let vips = &svc.endpoint.virtual_ips;
        let with_vip: BTreeSet<&NetworkId> = vips.iter().map(|v| &v.network).collect();
        let want_vips = match svc.spec.endpoint_mode {
            EndpointMode::Vip => attached.iter().collect(),
            EndpointMode::Dnsrr => BTreeSet::new(),
        };
        if with_vip != want_vips || with_vip.len() != vips.len() {
            return Err(CommandError::Invalid(format!(
                "service {} needs exactly one VIP on each of its networks in {} mode",
                svc.spec.name,
                svc.spec.endpoint_mode.as_str()
            )));
        }
        for vip in vips {
            let net = &self.networks[&vip.network];
            check_host(net, &vip.addr)?;
            let used = self.addresses_in_use(&vip.network, Some(Holder::Service(&svc.id)));
            if let Some(by) = used.get(&vip.addr.addr()) {
                return Err(taken(net, vip.addr.addr(), by));
            }
        }
        Ok(())
    }

    /// A task's addresses that `current` (its stored version) did not already hold: each
    /// a free host address of an existing network, no network twice.
    pub(super) fn check_task_addresses(
        &self,
        t: &Task,
        current: Option<&Task>,
    ) -> Result<(), CommandError> {
        let mut seen = BTreeSet::new();
        for a in &t.networks {
            if !seen.insert(&a.network) {
                return Err(CommandError::Invalid(format!(
                    "task {} joins network {} twice",
                    t.id, a.network
                )));
            }
            if a.addresses.is_empty() {
                continue;
            }
            let net = self
                .networks
                .get(&a.network)
                .ok_or_else(|| CommandError::NotFound {
                    kind: "network".into(),
                    id: a.network.to_string(),
                })?;
            let held: BTreeSet<Ipv4Cidr> = current
                .filter(|c| c.holds_addresses())
                .into_iter()
                .flat_map(|c| c.networks.iter())
                .filter(|c| c.network == a.network)
                .flat_map(|c| c.addresses.iter().copied())
                .collect();
            let fresh: Vec<&Ipv4Cidr> = a.addresses.iter().filter(|x| !held.contains(x)).collect();
            if fresh.is_empty() {
                continue;
            }
            let used = self.addresses_in_use(&a.network, Some(Holder::Task(&t.id)));
            let mut mine = BTreeSet::new();
            for addr in &a.addresses {
                if !mine.insert(addr.addr()) {
                    return Err(CommandError::Invalid(format!(
                        "task {} has address {} twice",
                        t.id,
                        addr.addr()
                    )));
                }
            }
            for addr in fresh {
                check_host(net, addr)?;
                if let Some(by) = used.get(&addr.addr()) {
                    return Err(taken(net, addr.addr(), by));
                }
            }
        }
        Ok(())
    }
}

/// Gives up a task's addresses once it no longer holds them, so that no stored object
/// shows an address the allocator may hand out again.
pub(super) fn release_if_done(t: &mut Task) {
    if !t.holds_addresses() {
        for a in &mut t.networks {
            a.addresses.clear();
        }
    }
}

pub(super) fn check_host(net: &Network, addr: &Ipv4Cidr) -> Result<(), CommandError> {
    let subnet = net.allocation.subnet;
    if addr.prefix() != subnet.prefix() || !subnet.is_host(addr.addr()) {
        return Err(CommandError::Invalid(format!(
            "{addr} is not a host address of network {} ({subnet})",
            net.spec.name
        )));
    }
    Ok(())
}

pub(super) fn taken(net: &Network, addr: Ipv4Addr, by: &str) -> CommandError {
    CommandError::Conflict(format!(
        "address {addr} on network {} is taken by {by}",
        net.spec.name
    ))
}
