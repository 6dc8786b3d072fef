//! The desired per-node network state, derived purely from what the node knows: its id, its
//! underlay address and MTU, the networks, its own tasks, and the remote tasks on the same
//! networks with their nodes' underlay addresses.
//!
//! Per network with a local task: a sandbox namespace (`rsw-<short network id>`) holding a
//! bridge (`br0`) with the network's gateway, a VXLAN device on the bridge (the network's
//! VNI, UDP 4789, no learning, ARP answered from the neighbour table, local = the underlay
//! address, MTU = underlay MTU − 50), one veth per local task (its task side carries the
//! task's address and a MAC derived from it), and for every remote task an FDB entry (its
//! MAC → its node's underlay address) and a neighbour entry (its IP → its MAC) on the VXLAN
//! device.
use rswarm_proto::model::{Ipv4Cidr, Network, NetworkId, NodeId, Task, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN adds to each frame over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The task id a veth names when its far end is not a task but the node's own (underlay)
/// namespace: the node's endpoint on the ingress network, through which published ports
/// reach tasks anywhere.
pub const HOST_ENDPOINT: &str = "host";
/// The name of the node's endpoint in its own namespace.
pub const HOST_ENDPOINT_IF: &str = "rsw_ingress";
/// The bridge's name inside every sandbox (each sandbox is its own namespace).
pub const BRIDGE: &str = "br0";
/// How many characters of a network or task id go into names (interface names are at most
/// 15 bytes).
const SHORT: usize = 10;

fn short(id: &str) -> &str {
    id.get(..SHORT).unwrap_or(id)
}

/// The sandbox namespace of a network on every node.
pub fn sandbox_name(network: &NetworkId) -> String {
    format!("rsw-{}", short(network.as_str()))
}

/// The VXLAN device of a network (unique on the host, where it is created before it moves
/// into the sandbox).
pub fn vxlan_name(network: &NetworkId) -> String {
    format!("vx-{}", short(network.as_str()))
}

/// The sandbox side of a task's veth.
pub fn veth_name(task: &TaskId) -> String {
    format!("ve-{}", short(task.as_str()))
}

/// The task side of a task's veth: `eth<i>` for the task's i-th network, as Docker's.
pub fn task_if_name(index: usize) -> String {
    format!("eth{index}")
}

/// The MTU inside the overlay, so that VXLAN's 50 bytes never make the underlay fragment.
pub fn overlay_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A task's MAC, from its overlay address as Docker's: `02:42` (locally administered,
    /// unicast) then the four bytes of the IPv4 address. Stable, and unique per address.
    pub fn from_ip(ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, 0x42, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A bridge in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub mtu: u32,
}

/// A VXLAN device in a sandbox, enslaved to its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub mtu: u32,
    /// The bridge it is a port of (empty: none).
    pub master: String,
    pub vni: u32,
    /// The underlay address its UDP packets leave from.
    pub local: Ipv4Addr,
    pub port: u16,
    /// Learn remote MACs from traffic (never: peers are programmed statically).
    pub learning: bool,
    /// Answer ARP from the neighbour table instead of flooding it.
    pub proxy: bool,
}

/// A veth pair between a sandbox's bridge and a task's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// The sandbox side, a port of `master`.
    pub name: String,
    pub mtu: u32,
    pub master: String,
    /// The task whose namespace holds the other side.
    pub task: TaskId,
    /// The other side's name in the task's namespace.
    pub peer: String,
    /// The other side's MAC.
    pub mac: Mac,
}

/// A link in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Bridge(BridgeSpec),
    Vxlan(VxlanSpec),
    Veth(VethSpec),
}

impl Link {
    pub fn name(&self) -> &str {
        match self {
            Link::Bridge(b) => &b.name,
            Link::Vxlan(v) => &v.name,
            Link::Veth(v) => &v.name,
        }
    }

    /// The bridge this link is a port of, if any.
    pub fn master(&self) -> Option<&str> {
        let m = match self {
            Link::Bridge(_) => return None,
            Link::Vxlan(v) => &v.master,
            Link::Veth(v) => &v.master,
        };
        (!m.is_empty()).then_some(m.as_str())
    }
}

/// One network's sandbox namespace and what is in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// By name.
    pub links: BTreeMap<String, Link>,
    /// Each link's addresses (a veth's are on its task side); links without any are absent.
    pub addrs: BTreeMap<String, BTreeSet<Ipv4Cidr>>,
    /// FDB entries: (device, MAC) → the remote VTEP's underlay address.
    pub fdb: BTreeMap<(String, Mac), Ipv4Addr>,
    /// Neighbour entries: (device, IP) → MAC.
    pub neigh: BTreeMap<(String, Ipv4Addr), Mac>,
}

/// A node's overlay networking: its sandboxes by name. The same shape describes what should
/// be ([`DesiredState`]) and what the kernel has ([`ObservedState`]), so they compare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetState {
    pub sandboxes: BTreeMap<String, Sandbox>,
}

pub type DesiredState = NetState;
pub type ObservedState = NetState;

/// A task on another node, with that node's underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTask {
    pub underlay_ip: Ipv4Addr,
    pub task: Task,
}

/// Everything [`desired`] needs to know about the cluster, from this node's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node_id: NodeId,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mtu: u32,
    pub networks: Vec<Network>,
    /// The tasks assigned to this node.
    pub local_tasks: Vec<Task>,
    /// Tasks on other nodes (those on networks with no local task are ignored).
    pub remote_tasks: Vec<RemoteTask>,
}

/// A task's address on a network, if it holds one there, with its interface index.
fn address_on(task: &Task, network: &NetworkId) -> Option<(usize, Ipv4Cidr)> {
    if !task.holds_addresses() {
        return None;
    }
    task.networks
        .iter()
        .enumerate()
        .find(|(_, a)| &a.network == network)
        .and_then(|(i, a)| a.addresses.first().map(|addr| (i, *addr)))
}

/// The state this node's networking should be in. Pure.
pub fn desired(input: &NodeView) -> DesiredState {
    let mtu = overlay_mtu(input.underlay_mtu);
    let mut state = NetState::default();
    for net in &input.networks {
        let local: Vec<(&Task, usize, Ipv4Cidr)> = input
            .local_tasks
            .iter()
            .filter(|t| t.node_id.as_ref().is_none_or(|n| n == &input.node_id))
            .filter_map(|t| address_on(t, &net.id).map(|(i, a)| (t, i, a)))
            .collect();
        if local.is_empty() {
            continue;
        }
        let mut sb = Sandbox::default();
        let alloc = &net.allocation;
        sb.links.insert(
            BRIDGE.to_owned(),
            Link::Bridge(BridgeSpec {
                name: BRIDGE.to_owned(),
                mtu,
            }),
        );
        if let Ok(gw) = Ipv4Cidr::new(alloc.gateway, alloc.subnet.prefix()) {
            sb.addrs.insert(BRIDGE.to_owned(), BTreeSet::from([gw]));
        }
        let vx = vxlan_name(&net.id);
        sb.links.insert(
            vx.clone(),
            Link::Vxlan(VxlanSpec {
                name: vx.clone(),
                mtu,
                master: BRIDGE.to_owned(),
                vni: alloc.vni,
                local: input.underlay_ip,
                port: VXLAN_PORT,
                learning: false,
                proxy: true,
            }),
        );
        let mut local_ips = BTreeSet::new();
        for (task, index, addr) in local {
            let name = veth_name(&task.id);
            local_ips.insert(addr.addr());
            sb.links.insert(
                name.clone(),
                Link::Veth(VethSpec {
                    name: name.clone(),
                    mtu,
                    master: BRIDGE.to_owned(),
                    task: task.id.clone(),
                    peer: if task.id.as_str() == HOST_ENDPOINT {
                        HOST_ENDPOINT_IF.to_owned()
                    } else {
                        task_if_name(index)
                    },
                    mac: Mac::from_ip(addr.addr()),
                }),
            );
            sb.addrs.entry(name).or_default().insert(addr);
        }
        for remote in &input.remote_tasks {
            if remote.task.node_id.as_ref() == Some(&input.node_id) {
                continue;
            }
            let Some((_, addr)) = address_on(&remote.task, &net.id) else {
                continue;
            };
            let ip = addr.addr();
            if local_ips.contains(&ip) {
                continue;
            }
            let mac = Mac::from_ip(ip);
            sb.fdb.insert((vx.clone(), mac), remote.underlay_ip);
            sb.neigh.insert((vx.clone(), ip), mac);
        }
        state.sandboxes.insert(sandbox_name(&net.id), sb);
    }
    state
}
