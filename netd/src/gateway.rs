//! Egress for tasks through a NAT bridge on the node, as Docker's `docker_gwbridge`: every
//! task gets a veth pair, one end on the bridge in the node's underlay namespace, the other in
//! the task's namespace with an address on the bridge's subnet and a default route via the
//! bridge. The masquerading that makes it egress lives in [`crate::nft`].
//!
//! All functions are blocking: each runs its netlink work on a fresh thread (entering the
//! task's namespace there when needed), so the caller's thread never changes namespace and
//! the caller may be inside a tokio runtime (use `spawn_blocking`).

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use rswarm_proto::model::Ipv4Cidr;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The node's gateway bridge: its name, subnet and the bridge's own address on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub bridge: String,
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bridge: "rsw_gwbridge".to_owned(),
            subnet: Ipv4Cidr::new(Ipv4Addr::new(172, 18, 0, 0), 16).expect("/16 is a valid prefix"),
            gateway: Ipv4Addr::new(172, 18, 0, 1),
        }
    }
}

/// Failing to run work inside a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: Errno },
    #[error("cannot spawn a namespace worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("namespace worker thread panicked")]
    Panicked,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot start a netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("interface {name} exists but is not a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },
    #[error("gateway bridge {0} does not exist (ensure_bridge first)")]
    NoBridge(String),
    #[error("interface {name} already exists in {netns} and is not the peer of {host_if}")]
    Occupied {
        name: String,
        netns: PathBuf,
        host_if: String,
    },
    #[error("interface {name} vanished from {netns} while being configured")]
    Vanished { name: String, netns: PathBuf },
    #[error("invalid interface name {0:?}: 1 to 15 characters, no '/' or whitespace")]
    BadName(String),
    #[error(
        "task address {addr} is not on the gateway subnet {subnet} (same prefix length expected)"
    )]
    OutsideSubnet { addr: Ipv4Cidr, subnet: Ipv4Cidr },
    #[error("gateway {gateway} is not a host address of the gateway subnet {subnet}")]
    GatewayOutsideSubnet { gateway: Ipv4Addr, subnet: Ipv4Cidr },
    #[error("cannot enable IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> GatewayError {
    let op = op.into();
    move |source| GatewayError::Netlink { op, source }
}

/// Runs `f` on a fresh thread, inside `netns` if given (else in the caller thread's namespace,
/// which a new thread inherits). The thread ends with `f`, so its namespace never leaks;
/// children it spawns start in its namespace.
pub(crate) fn in_netns<T, F>(netns: Option<&Path>, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("rswarm-netns".to_owned())
            .spawn_scoped(s, move || {
                if let Some(path) = netns {
                    let file = File::open(path).map_err(|source| NetnsError::Open {
                        path: path.to_owned(),
                        source,
                    })?;
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                        path: path.to_owned(),
                        source,
                    })?;
                }
                Ok(f())
            })
            .map_err(NetnsError::Spawn)?;
        worker.join().map_err(|_| NetnsError::Panicked)?
    })
}

/// Runs netlink work in `netns` (or the current one): the connection is opened on the worker
/// thread so its socket belongs to that namespace.
fn netlink<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T, GatewayError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    in_netns(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(GatewayError::Runtime)?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(GatewayError::Connect)?;
            tokio::spawn(conn);
            f(handle).await
        })
    })?
}

fn is_errno(e: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno as i32)
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, GatewayError> {
    let mut links = h.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// Adds `addr` to the link unless it already has it (adding twice is EEXIST).
async fn ensure_addr(
    h: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), GatewayError> {
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = addrs.try_next().await.map_err(nl("list addresses"))? {
        let is_addr = |a: &AddressAttribute| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
                *ip == addr
            }
            _ => false,
        };
        let has = msg.header.index == index
            && msg.header.prefix_len == prefix
            && msg.attributes.iter().any(is_addr);
        if has {
            return Ok(());
        }
    }
    match h
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
        r => r.map_err(nl(format!("add address {addr}/{prefix}"))),
    }
}

fn check_name(name: &str) -> Result<(), GatewayError> {
    // IFNAMSIZ is 16 with the NUL; the kernel rejects '/', ':' and whitespace.
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(GatewayError::BadName(name.to_owned()))
    }
}

/// Creates the gateway bridge in the current namespace if missing, gives it the gateway
/// address, brings it up and enables IPv4 forwarding (a per-namespace sysctl). Idempotent.
pub fn ensure_bridge(cfg: &GatewayConfig) -> Result<(), GatewayError> {
    check_name(&cfg.bridge)?;
    if !cfg.subnet.is_host(cfg.gateway) {
        return Err(GatewayError::GatewayOutsideSubnet {
            gateway: cfg.gateway,
            subnet: cfg.subnet,
        });
    }
    let (gateway, prefix) = (cfg.gateway, cfg.subnet.prefix());
    let name = cfg.bridge.clone();
    netlink(None, move |h| async move {
        let index = match link_by_name(&h, &name).await? {
            Some(link) if link_kind(&link) == Some(&InfoKind::Bridge) => link.header.index,
            Some(_) => {
                return Err(GatewayError::WrongKind {
                    name,
                    expected: "bridge",
                })
            }
            None => {
                match h.link().add(LinkBridge::new(&name).build()).execute().await {
                    // Another caller won the race: fine, it is the same bridge.
                    Err(e) if is_errno(&e, Errno::EEXIST) => {}
                    r => r.map_err(nl(format!("add bridge {name}")))?,
                }
                link_by_name(&h, &name)
                    .await?
                    .ok_or_else(|| GatewayError::NoBridge(name.clone()))?
                    .header
                    .index
            }
        };
        ensure_addr(&h, index, gateway, prefix).await?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {name} up")))?;
        // /proc/sys/net resolves to the opening thread's namespace: this worker's.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(GatewayError::Forwarding)
    })
}

/// Connects a task to the gateway bridge: a veth pair with `host_if` on the bridge in the
/// current (underlay) namespace and `task_if` in `task_netns` with `addr`, both with `mtu`, up,
/// and a default route via the gateway in the task. Idempotent: an existing pair is reused
/// and its settings re-applied.
pub fn attach(
    cfg: &GatewayConfig,
    task_netns: &Path,
    host_if: &str,
    task_if: &str,
    addr: Ipv4Cidr,
    mtu: u32,
) -> Result<(), GatewayError> {
    check_name(host_if)?;
    check_name(task_if)?;
    if !cfg.subnet.contains(addr.addr()) || addr.prefix() != cfg.subnet.prefix() {
        return Err(GatewayError::OutsideSubnet {
            addr,
            subnet: cfg.subnet,
        });
    }
    let task_side_exists = netlink(Some(task_netns), |h| async move {
        Ok(link_by_name(&h, task_if).await?.is_some())
    })?;

    // Underlay side: reuse or (re)create the pair, then put host_if on the bridge.
    netlink(None, |h| async move {
        let bridge = match link_by_name(&h, &cfg.bridge).await? {
            Some(link) => link.header.index,
            None => return Err(GatewayError::NoBridge(cfg.bridge.clone())),
        };
        let host = link_by_name(&h, host_if).await?;
        let reuse = match &host {
            Some(link) if link_kind(link) != Some(&InfoKind::Veth) => {
                return Err(GatewayError::WrongKind {
                    name: host_if.to_owned(),
                    expected: "veth",
                })
            }
            // Half-made by an interrupted attach: the task end is missing; start over.
            Some(link) if !task_side_exists => {
                h.link()
                    .del(link.header.index)
                    .execute()
                    .await
                    .map_err(nl(format!("delete stale {host_if}")))?;
                false
            }
            Some(_) => true,
            None if task_side_exists => {
                return Err(GatewayError::Occupied {
                    name: task_if.to_owned(),
                    netns: task_netns.to_owned(),
                    host_if: host_if.to_owned(),
                })
            }
            None => false,
        };
        if !reuse {
            // The peer is created directly in the task's namespace under its final name, so
            // it never collides with an underlay interface of the same name (eth0...).
            let ns = File::open(task_netns).map_err(|source| NetnsError::Open {
                path: task_netns.to_owned(),
                source,
            })?;
            let peer = LinkUnspec::new_with_name(task_if)
                .mtu(mtu)
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let veth = LinkVeth::new(host_if, task_if)
                .mtu(mtu)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(veth)
                .execute()
                .await
                .map_err(nl(format!("add veth {host_if}")))?;
            drop(ns);
        }
        let index = link_by_name(&h, host_if)
            .await?
            .ok_or_else(|| GatewayError::Vanished {
                name: host_if.to_owned(),
                netns: PathBuf::from("the underlay namespace"),
            })?
            .header
            .index;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("attach {host_if} to {}", cfg.bridge)))?;
        // With br_netfilter, a task's connection to a port published back to itself is
        // bridged out the port it came in by, which the bridge only allows in hairpin mode.
        h.link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl(format!("set hairpin on {host_if}")))
    })?;

    // Task side: address, up, default route via the bridge.
    let gateway = cfg.gateway;
    netlink(Some(task_netns), |h| async move {
        let index = link_by_name(&h, task_if)
            .await?
            .ok_or_else(|| GatewayError::Vanished {
                name: task_if.to_owned(),
                netns: task_netns.to_owned(),
            })?
            .header
            .index;
        h.link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(nl(format!("set {task_if} up")))?;
        ensure_addr(&h, index, addr.addr(), addr.prefix()).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add default route via {gateway}")))
    })
}

/// Deletes `host_if` (and so its peer in the task) from the current namespace, if present.
pub fn detach(host_if: &str) -> Result<(), GatewayError> {
    check_name(host_if)?;
    delete_link(host_if, None)
}

/// Deletes the gateway bridge from the current namespace, if present. Its ports stay (unbridged).
pub fn remove_bridge(cfg: &GatewayConfig) -> Result<(), GatewayError> {
    check_name(&cfg.bridge)?;
    delete_link(&cfg.bridge, Some(InfoKind::Bridge))
}

fn delete_link(name: &str, kind: Option<InfoKind>) -> Result<(), GatewayError> {
    netlink(None, |h| async move {
        let Some(link) = link_by_name(&h, name).await? else {
            return Ok(());
        };
        match kind {
            Some(k) if link_kind(&link) != Some(&k) => {
                return Err(GatewayError::WrongKind {
                    name: name.to_owned(),
                    expected: "bridge",
                })
            }
            _ => {}
        }
        match h.link().del(link.header.index).execute().await {
            Err(e) if is_errno(&e, Errno::ENODEV) => Ok(()),
            r => r.map_err(nl(format!("delete {name}"))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_docker_like() {
        let c = GatewayConfig::default();
        assert_eq!(c.bridge, "rsw_gwbridge");
        assert_eq!(c.subnet.to_string(), "172.18.0.0/16");
        assert!(c.subnet.contains(c.gateway));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("veth0123456789a").is_ok());
        assert!(check_name("veth0123456789ab").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
    }

    #[test]
    fn attach_rejects_an_address_off_the_subnet() {
        let cfg = GatewayConfig::default();
        let addr: Ipv4Cidr = "10.0.0.2/16".parse().expect("cidr");
        let e = attach(&cfg, Path::new("/nonexistent"), "h0", "eth0", addr, 1500);
        assert!(matches!(e, Err(GatewayError::OutsideSubnet { .. })));
    }
}
