//! Overlay networks, and the addresses the managers' allocator hands out on them.
//!
//! Addresses are IPv4 only (as Swarm's default pools); a subnet or an address with its
//! prefix length is an [`Ipv4Cidr`], written `10.0.1.2/24` on the wire and in snapshots.
use super::{Meta, NetworkId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length: a subnet (`10.0.1.0/24`, host bits zero) or an
/// address on one (`10.0.1.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}: expected an IPv4 address and prefix length such as 10.0.1.0/24")]
    Syntax(String),
    #[error("invalid CIDR {0:?}: only IPv4 is supported")]
    Ipv6(String),
    #[error("invalid prefix length /{0}: at most 32")]
    Prefix(u8),
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::Prefix(prefix));
        }
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a number (`/24` → `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The subnet's own address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The subnet this address is on (`10.0.1.2/24` → `10.0.1.0/24`).
    pub fn subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// The last address of the subnet.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether this is a subnet as written: no host bits set.
    pub fn is_network(&self) -> bool {
        self.addr == self.network()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Whether `ip` can be given to a host: inside, and neither the subnet's address nor
    /// its broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network() && ip != self.broadcast()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (ip, prefix) = s.split_once('/').ok_or_else(syntax)?;
        if ip.contains(':') {
            return Err(CidrError::Ipv6(s.to_owned()));
        }
        let addr: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The only driver: VXLAN overlays spanning the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    #[default]
    Overlay,
}

impl NetworkDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Overlay => "overlay",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "overlay" => Some(NetworkDriver::Overlay),
            _ => None,
        }
    }
}

/// What the user asked of the network's addressing; empty: the allocator chooses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// A subnet with no host bits set.
    pub subnet: Option<Ipv4Cidr>,
    /// Inside `subnet` (which it needs); default: the subnet's first host.
    pub gateway: Option<Ipv4Addr>,
}

/// Docker's predefined network for the node's own network stack. It is no network
/// object here: a service that names it gets [`super::TaskSpec::host_network`].
pub const HOST_NETWORK: &str = "host";

/// Names Docker gives its node-local predefined networks; no user network may take them
/// (so `host` in a service's networks can only mean the node's stack).
pub const PREDEFINED_NETWORKS: [&str; 3] = [HOST_NETWORK, "bridge", "none"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: NetworkDriver,
    pub labels: BTreeMap<String, String>,
    /// Standalone containers may attach (kept for the netd side; nothing uses it yet).
    pub attachable: bool,
    /// No egress to the outside world.
    pub internal: bool,
    pub ipam: IpamConfig,
    /// The routing mesh's network, `ingress`: made by the managers when a service first
    /// publishes a port through the mesh; every node has an endpoint on it.
    #[serde(default)]
    pub ingress: bool,
}

/// What the allocator chose for a network: fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    /// The VXLAN network identifier (24 bits).
    pub vni: u32,
}

impl Default for NetworkAllocation {
    fn default() -> Self {
        Self {
            subnet: Ipv4Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            },
            gateway: Ipv4Addr::UNSPECIFIED,
            vni: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub meta: Meta,
    pub spec: NetworkSpec,
    pub allocation: NetworkAllocation,
    /// Each node's own address on the network (the ingress network only: where published
    /// ports enter the mesh), chosen by the allocator.
    #[serde(default)]
    pub node_endpoints: BTreeMap<super::NodeId, Ipv4Cidr>,
}

/// A task's place on one network: its address there (with the subnet's prefix length).
/// `addresses` is empty while the task waits for an address, and once it has stopped for
/// good (the address is released then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: NetworkId,
    pub addresses: Vec<Ipv4Cidr>,
}

/// A service's virtual IP on one network, with the subnet's prefix length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub network: NetworkId,
    pub addr: Ipv4Cidr,
}

/// How a service is reached: its VIPs, one per network (none under `dnsrr`), and its
/// published ports with every published port number chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub virtual_ips: Vec<VirtualIp>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// Where a published port answers: on every node through the routing mesh (Swarm's
/// default), or only on the nodes running a task.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingress" => Some(PublishMode::Ingress),
            "host" => Some(PublishMode::Host),
            _ => None,
        }
    }
}

/// A published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct PortConfig {
    pub protocol: Protocol,
    /// The port inside the task.
    pub target: u16,
    /// On the cluster; 0 in a spec: the managers pick one (from 30000, as Swarm).
    pub published: u16,
    pub mode: PublishMode,
}

impl fmt::Display for PortConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{}/{}",
            self.published,
            self.target,
            self.protocol.as_str()
        )?;
        if self.mode == PublishMode::Host {
            f.write_str(" (host)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_print() {
        let c: Ipv4Cidr = "10.0.1.2/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.1.2/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 1, 255));
        assert!(!c.is_network());
        assert_eq!(c.subnet().to_string(), "10.0.1.0/24");
        assert!(c.subnet().is_host(Ipv4Addr::new(10, 0, 1, 254)));
        assert!(!c.subnet().is_host(Ipv4Addr::new(10, 0, 1, 255)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/24",
            "banana/24",
            "10.0.0.0/+8",
            "10.0.0.0/008",
            "fd00::/64",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn overlaps_both_ways() {
        let a: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Ipv4Cidr = "10.0.3.0/24".parse().unwrap();
        let c: Ipv4Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }

    #[test]
    fn cidrs_serialize_as_strings() {
        let v = VirtualIp {
            network: "n1".into(),
            addr: "10.0.1.2/24".parse().unwrap(),
        };
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(j, r#"{"network":"n1","addr":"10.0.1.2/24"}"#);
        assert_eq!(serde_json::from_str::<VirtualIp>(&j).unwrap(), v);
    }
}
