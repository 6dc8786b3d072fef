//! The plan: the intent-level operations that take the observed state to the desired one.
//!
//! All deletions come first, children before parents (FDB and neighbour entries and
//! addresses, then ports, then bridges, then sandboxes), then all creations, parents before
//! children (sandbox, bridge, its address, its ports, their addresses, then FDB and
//! neighbour entries). A link whose attributes differ is deleted and made again, and so is
//! every port of a bridge that is; what lived on a deleted link (its addresses, FDB and
//! neighbour entries) goes with it and is added again. Entries and addresses nothing asks
//! for are removed, so a diff after a daemon restart clears what went stale while it was
//! down. The diff of a state against itself is empty.
use crate::model::{BridgeSpec, Link, Mac, NetState, Sandbox, VethSpec, VxlanSpec};
use rswarm_proto::model::Ipv4Cidr;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// One change to a node's networking, at the level of intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetOp {
    CreateSandbox {
        sandbox: String,
    },
    CreateBridge {
        sandbox: String,
        spec: BridgeSpec,
    },
    /// Made on the host (so that its socket is on the underlay), then moved into the sandbox.
    CreateVxlan {
        sandbox: String,
        spec: VxlanSpec,
    },
    /// Both ends: the named one on the bridge, the peer in the task's namespace with its MAC.
    CreateVeth {
        sandbox: String,
        spec: VethSpec,
    },
    /// On `link` in the sandbox, or, for a veth, on its task side.
    AddAddr {
        sandbox: String,
        link: String,
        addr: Ipv4Cidr,
    },
    DelAddr {
        sandbox: String,
        link: String,
        addr: Ipv4Cidr,
    },
    /// Add or replace.
    SetFdb {
        sandbox: String,
        dev: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    DelFdb {
        sandbox: String,
        dev: String,
        mac: Mac,
    },
    /// Add or replace (permanent).
    SetNeigh {
        sandbox: String,
        dev: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    DelNeigh {
        sandbox: String,
        dev: String,
        ip: Ipv4Addr,
    },
    /// A veth goes with its task side.
    DelLink {
        sandbox: String,
        name: String,
    },
    DeleteSandbox {
        sandbox: String,
    },
}

impl fmt::Display for NetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetOp::CreateSandbox { sandbox } => write!(f, "create sandbox {sandbox}"),
            NetOp::CreateBridge { sandbox, spec } => {
                write!(f, "create bridge {} in {sandbox}", spec.name)
            }
            NetOp::CreateVxlan { sandbox, spec } => write!(
                f,
                "create vxlan {} (vni {}) in {sandbox}",
                spec.name, spec.vni
            ),
            NetOp::CreateVeth { sandbox, spec } => write!(
                f,
                "create veth {} in {sandbox} to {} of task {}",
                spec.name, spec.peer, spec.task
            ),
            NetOp::AddAddr {
                sandbox,
                link,
                addr,
            } => write!(f, "add address {addr} to {link} in {sandbox}"),
            NetOp::DelAddr {
                sandbox,
                link,
                addr,
            } => write!(f, "delete address {addr} from {link} in {sandbox}"),
            NetOp::SetFdb {
                sandbox,
                dev,
                mac,
                dst,
            } => write!(f, "set fdb {mac} -> {dst} on {dev} in {sandbox}"),
            NetOp::DelFdb { sandbox, dev, mac } => {
                write!(f, "delete fdb {mac} on {dev} in {sandbox}")
            }
            NetOp::SetNeigh {
                sandbox,
                dev,
                ip,
                mac,
            } => write!(f, "set neighbour {ip} -> {mac} on {dev} in {sandbox}"),
            NetOp::DelNeigh { sandbox, dev, ip } => {
                write!(f, "delete neighbour {ip} on {dev} in {sandbox}")
            }
            NetOp::DelLink { sandbox, name } => write!(f, "delete link {name} in {sandbox}"),
            NetOp::DeleteSandbox { sandbox } => write!(f, "delete sandbox {sandbox}"),
        }
    }
}

/// Links in deletion order: ports before the bridges they are on.
fn child_first<'a>(names: impl IntoIterator<Item = &'a String>, sb: &Sandbox) -> Vec<&'a String> {
    let (ports, rest): (Vec<_>, Vec<_>) = names
        .into_iter()
        .partition(|n| sb.links.get(*n).and_then(Link::master).is_some());
    ports.into_iter().chain(rest).collect()
}

/// The ops that take `observed` to `desired`. Pure.
pub fn diff(desired: &NetState, observed: &NetState) -> Vec<NetOp> {
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    for (name, have) in &observed.sandboxes {
        if desired.sandboxes.contains_key(name) {
            continue;
        }
        for link in child_first(have.links.keys(), have) {
            dels.push(NetOp::DelLink {
                sandbox: name.clone(),
                name: link.clone(),
            });
        }
        dels.push(NetOp::DeleteSandbox {
            sandbox: name.clone(),
        });
    }
    let empty = Sandbox::default();
    for (name, want) in &desired.sandboxes {
        let have = match observed.sandboxes.get(name) {
            Some(have) => have,
            None => {
                adds.push(NetOp::CreateSandbox {
                    sandbox: name.clone(),
                });
                &empty
            }
        };
        sandbox_diff(name, want, have, &mut dels, &mut adds);
    }
    dels.extend(adds);
    dels
}

fn sandbox_diff(
    sandbox: &str,
    want: &Sandbox,
    have: &Sandbox,
    dels: &mut Vec<NetOp>,
    adds: &mut Vec<NetOp>,
) {
    let sb = || sandbox.to_owned();
    // Links that go: unwanted, different, or ports of a bridge that goes.
    let mut gone: BTreeSet<&String> = have
        .links
        .iter()
        .filter(|(n, l)| want.links.get(*n) != Some(*l))
        .map(|(n, _)| n)
        .collect();
    loop {
        let more: Vec<&String> = have
            .links
            .iter()
            .filter(|(n, l)| {
                !gone.contains(n) && l.master().is_some_and(|m| gone.contains(&m.to_owned()))
            })
            .map(|(n, _)| n)
            .collect();
        if more.is_empty() {
            break;
        }
        gone.extend(more);
    }
    let kept = |link: &str| have.links.contains_key(link) && !gone.contains(&link.to_owned());

    // Deletions on links that stay; what is on a link that goes goes with it.
    for (dev, ip) in have.neigh.keys() {
        if kept(dev) && !want.neigh.contains_key(&(dev.clone(), *ip)) {
            dels.push(NetOp::DelNeigh {
                sandbox: sb(),
                dev: dev.clone(),
                ip: *ip,
            });
        }
    }
    for (dev, mac) in have.fdb.keys() {
        if kept(dev) && !want.fdb.contains_key(&(dev.clone(), *mac)) {
            dels.push(NetOp::DelFdb {
                sandbox: sb(),
                dev: dev.clone(),
                mac: *mac,
            });
        }
    }
    for (link, addrs) in &have.addrs {
        if !kept(link) {
            continue;
        }
        let wanted = want.addrs.get(link);
        for addr in addrs {
            if !wanted.is_some_and(|w| w.contains(addr)) {
                dels.push(NetOp::DelAddr {
                    sandbox: sb(),
                    link: link.clone(),
                    addr: *addr,
                });
            }
        }
    }
    for link in child_first(gone.iter().copied(), have) {
        dels.push(NetOp::DelLink {
            sandbox: sb(),
            name: link.clone(),
        });
    }

    // Creations, bridges first, each link followed by its addresses.
    let (bridges, ports): (Vec<&Link>, Vec<&Link>) = want
        .links
        .values()
        .filter(|l| !kept(l.name()))
        .partition(|l| l.master().is_none());
    for link in bridges.into_iter().chain(ports) {
        adds.push(match link {
            Link::Bridge(spec) => NetOp::CreateBridge {
                sandbox: sb(),
                spec: spec.clone(),
            },
            Link::Vxlan(spec) => NetOp::CreateVxlan {
                sandbox: sb(),
                spec: spec.clone(),
            },
            Link::Veth(spec) => NetOp::CreateVeth {
                sandbox: sb(),
                spec: spec.clone(),
            },
        });
    }
    let no_addrs = BTreeSet::new();
    for (link, addrs) in &want.addrs {
        let present = if kept(link) {
            have.addrs.get(link).unwrap_or(&no_addrs)
        } else {
            &no_addrs
        };
        for addr in addrs.difference(present) {
            adds.push(NetOp::AddAddr {
                sandbox: sb(),
                link: link.clone(),
                addr: *addr,
            });
        }
    }
    set_entries(&want.fdb, &have.fdb, &kept, |(dev, mac), dst| {
        NetOp::SetFdb {
            sandbox: sb(),
            dev: dev.clone(),
            mac: *mac,
            dst: *dst,
        }
    })
    .for_each(|op| adds.push(op));
    set_entries(&want.neigh, &have.neigh, &kept, |(dev, ip), mac| {
        NetOp::SetNeigh {
            sandbox: sb(),
            dev: dev.clone(),
            ip: *ip,
            mac: *mac,
        }
    })
    .for_each(|op| adds.push(op));
}

/// Set ops for the wanted entries that the device does not hold as wanted (entries on a
/// device made again are all missing).
fn set_entries<'a, K: Ord, V: PartialEq>(
    want: &'a BTreeMap<(String, K), V>,
    have: &'a BTreeMap<(String, K), V>,
    kept: &'a dyn Fn(&str) -> bool,
    op: impl Fn(&(String, K), &V) -> NetOp + 'a,
) -> impl Iterator<Item = NetOp> + 'a {
    want.iter()
        .filter(move |(key, v)| !(kept(&key.0) && have.get(*key) == Some(*v)))
        .map(move |(key, v)| op(key, v))
}
