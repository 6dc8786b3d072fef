//! The allocator: subnets, gateways and VNIs for networks, a VIP per service per network, an
//! address per task per network. Pure: an [`Allocator`] is built from a view of the store
//! and hands out what is free in it (lowest free first), remembering what it handed out
//! itself so that one pass can allocate for many objects. It runs where objects are made on
//! the leader — the control API for networks and service VIPs, the orchestrator's pass for
//! task addresses — and the chosen values travel in the proposed command, so `apply` stays
//! deterministic. `apply` re-checks them (see `store::networks`): of two proposals made from
//! the same view, the second is refused with `CommandError::Conflict`, and its proposer
//! allocates again.
//!
//! Nothing is ever released here: an address is free again when the store no longer shows
//! it held (the task stopped for good or was deleted, the service or network was removed).

mod pool;
#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;

pub use pool::{next_host, next_subnet, next_vni};

use crate::store::{State, VNI_MAX};
use rswarm_proto::model::{
    Endpoint, EndpointMode, Ipv4Cidr, NetworkAllocation, NetworkAttachment, NetworkId, NetworkSpec,
    Service, ServiceSpec, VirtualIp,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Where subnets come from when the user names none: Swarm's default pool.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
/// The size of each subnet taken from the default pool.
pub const DEFAULT_PREFIX: u8 = 24;
/// The first VNI handed out (Swarm's too); lower ones are left to other uses.
pub const VNI_FIRST: u32 = 4096;
/// The longest prefix a network may have: a /30 has a gateway and one more host.
pub const MAX_PREFIX: u8 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("network {0} not found")]
    UnknownNetwork(String),
    #[error("invalid subnet {given}: it has host bits set (did you mean {network}?)")]
    HostBits { given: Ipv4Cidr, network: Ipv4Cidr },
    #[error("invalid subnet {0}: too small, the longest prefix is /{MAX_PREFIX}")]
    TooSmall(Ipv4Cidr),
    #[error("invalid gateway {gateway}: not a host address of subnet {subnet}")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Cidr },
    #[error("subnet {subnet} overlaps subnet {other} of network {network}")]
    Overlap {
        subnet: Ipv4Cidr,
        other: Ipv4Cidr,
        network: String,
    },
    #[error("no free /{DEFAULT_PREFIX} subnet left in the default pool {DEFAULT_POOL}")]
    PoolExhausted,
    #[error("no free VNI left")]
    VniExhausted,
    #[error("no free address left on network {network} ({subnet})")]
    NetworkFull { network: String, subnet: Ipv4Cidr },
}

/// One network's addresses as the allocator sees them.
#[derive(Debug, Clone)]
struct Pool {
    name: String,
    subnet: Ipv4Cidr,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    fn take(&mut self) -> Result<Ipv4Cidr, AllocError> {
        let ip = next_host(self.subnet, &self.used).ok_or_else(|| AllocError::NetworkFull {
            network: self.name.clone(),
            subnet: self.subnet,
        })?;
        self.used.insert(ip);
        // A host address of the subnet with its prefix: always a valid CIDR.
        Ipv4Cidr::new(ip, self.subnet.prefix()).map_err(|_| AllocError::NetworkFull {
            network: self.name.clone(),
            subnet: self.subnet,
        })
    }
}

/// What is taken in a view of the store, plus what this allocator handed out since.
#[derive(Debug, Clone)]
pub struct Allocator {
    pools: BTreeMap<NetworkId, Pool>,
    /// Every network's subnet, with the network's name (for messages).
    subnets: Vec<(Ipv4Cidr, String)>,
    vnis: BTreeSet<u32>,
}

impl Allocator {
    pub fn new(state: &State) -> Self {
        let pools = state
            .networks
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    Pool {
                        name: n.spec.name.clone(),
                        subnet: n.allocation.subnet,
                        used: state.addresses_in_use(&n.id, None).into_keys().collect(),
                    },
                )
            })
            .collect();
        Self {
            pools,
            subnets: state
                .networks
                .values()
                .map(|n| (n.allocation.subnet, n.spec.name.clone()))
                .collect(),
            vnis: state.networks.values().map(|n| n.allocation.vni).collect(),
        }
    }

    /// A subnet (the one asked for, else the lowest free /24 of the default pool), its
    /// gateway (the one asked for, else the first host) and a VNI for a new network.
    pub fn allocate_network(
        &mut self,
        spec: &NetworkSpec,
    ) -> Result<NetworkAllocation, AllocError> {
        let taken: Vec<Ipv4Cidr> = self.subnets.iter().map(|(s, _)| *s).collect();
        let subnet = match spec.ipam.subnet {
            Some(s) => {
                if !s.is_network() {
                    return Err(AllocError::HostBits {
                        given: s,
                        network: s.subnet(),
                    });
                }
                if s.prefix() > MAX_PREFIX {
                    return Err(AllocError::TooSmall(s));
                }
                if let Some((other, name)) = self.subnets.iter().find(|(o, _)| o.overlaps(&s)) {
                    return Err(AllocError::Overlap {
                        subnet: s,
                        other: *other,
                        network: name.clone(),
                    });
                }
                s
            }
            None => {
                let pool: Ipv4Cidr = DEFAULT_POOL
                    .parse()
                    .map_err(|_| AllocError::PoolExhausted)?;
                next_subnet(pool, DEFAULT_PREFIX, &taken).ok_or(AllocError::PoolExhausted)?
            }
        };
        let gateway = match spec.ipam.gateway {
            Some(g) if subnet.is_host(g) => g,
            Some(g) => return Err(AllocError::GatewayOutside { gateway: g, subnet }),
            None => next_host(subnet, &BTreeSet::new()).ok_or(AllocError::TooSmall(subnet))?,
        };
        let vni = next_vni(VNI_FIRST, VNI_MAX, &self.vnis).ok_or(AllocError::VniExhausted)?;
        self.vnis.insert(vni);
        self.subnets.push((subnet, spec.name.clone()));
        Ok(NetworkAllocation {
            subnet,
            gateway,
            vni,
        })
    }

    /// The VIPs a service with `spec` should have: under `vip`, one per network, keeping
    /// those `current` already has on networks it stays on; none under `dnsrr`. VIPs on
    /// networks it leaves are free again for this allocator. `spec`'s targets are network
    /// ids (as stored).
    pub fn allocate_endpoint(
        &mut self,
        spec: &ServiceSpec,
        current: &Endpoint,
    ) -> Result<Endpoint, AllocError> {
        let mut out = Endpoint::default();
        let wanted: Vec<NetworkId> = match spec.endpoint_mode {
            // On the node's own stack there is no network to hold a VIP.
            _ if spec.task.host_network => Vec::new(),
            EndpointMode::Vip => spec
                .networks
                .iter()
                .map(|c| NetworkId(c.target.clone()))
                .collect(),
            EndpointMode::Dnsrr => Vec::new(),
        };
        for id in &wanted {
            if !self.pools.contains_key(id) {
                return Err(AllocError::UnknownNetwork(id.to_string()));
            }
        }
        for vip in &current.virtual_ips {
            if !wanted.contains(&vip.network) {
                if let Some(p) = self.pools.get_mut(&vip.network) {
                    p.used.remove(&vip.addr.addr());
                }
            }
        }
        for id in wanted {
            if let Some(keep) = current.virtual_ips.iter().find(|v| v.network == id) {
                out.virtual_ips.push(keep.clone());
                continue;
            }
            let pool = self
                .pools
                .get_mut(&id)
                .ok_or_else(|| AllocError::UnknownNetwork(id.to_string()))?;
            let addr = pool.take()?;
            out.virtual_ips.push(VirtualIp { network: id, addr });
        }
        Ok(out)
    }

    /// One address on `network`, for a node's endpoint there.
    pub fn allocate_address(&mut self, network: &NetworkId) -> Result<Ipv4Cidr, AllocError> {
        self.pools
            .get_mut(network)
            .ok_or_else(|| AllocError::UnknownNetwork(network.to_string()))?
            .take()
    }

    /// An address on each of `networks` for a new task; all or none.
    pub fn allocate_task(
        &mut self,
        networks: &[NetworkId],
    ) -> Result<Vec<NetworkAttachment>, AllocError> {
        let saved: BTreeMap<NetworkId, Pool> = networks
            .iter()
            .filter_map(|id| self.pools.get(id).map(|p| (id.clone(), p.clone())))
            .collect();
        let mut out = Vec::with_capacity(networks.len());
        for id in networks {
            let taken = match self.pools.get_mut(id) {
                Some(p) => p.take(),
                None => Err(AllocError::UnknownNetwork(id.to_string())),
            };
            match taken {
                Ok(addr) => out.push(NetworkAttachment {
                    network: id.clone(),
                    addresses: vec![addr],
                }),
                Err(e) => {
                    // Give back what this task took.
                    self.pools.extend(saved);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

/// The networks a service's tasks join, by id (stored specs name networks by id): its own,
/// then the ingress network if it publishes a port through the routing mesh (so an
/// ingress-only task's interface is `eth0`, as in Swarm).
pub fn service_networks(state: &State, svc: &Service) -> Vec<NetworkId> {
    // A host-network task uses the node's stack: no attachment anywhere (the control API
    // also refuses networks and ports with it; this keeps any stored spec consistent).
    if svc.spec.task.host_network {
        return Vec::new();
    }
    let mut out: Vec<NetworkId> = svc
        .spec
        .networks
        .iter()
        .map(|c| NetworkId(c.target.clone()))
        .collect();
    if svc.publishes_through_mesh() {
        if let Some(n) = state.ingress_network() {
            if !out.contains(&n.id) {
                out.push(n.id.clone());
            }
        }
    }
    out
}
