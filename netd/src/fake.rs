//! An in-memory [`Netlink`]: namespaces, links, addresses, FDB and neighbour entries, with
//! the kernel's refusals that matter to ordering (a link in a missing namespace, a port of a
//! missing bridge, a name or VNI taken, deleting what is not there). Backs every netd test.
use crate::model::{BridgeSpec, Link, Mac, NetState, ObservedState, Sandbox, VethSpec, VxlanSpec};
use crate::netlink::{Netlink, NetlinkError};
use rswarm_proto::model::{Ipv4Cidr, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The [`Netlink`] methods, to make one fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    CreateSandbox,
    DeleteSandbox,
    EnsureBridge,
    EnsureVxlan,
    EnsureVeth,
    AddAddr,
    DelAddr,
    SetFdb,
    DelFdb,
    SetNeigh,
    DelNeigh,
    DelLink,
}

#[derive(Debug, Clone)]
struct FakeLink {
    link: Link,
    /// Unused for a veth: its addresses are on its task side.
    addrs: BTreeSet<Ipv4Cidr>,
    fdb: BTreeMap<Mac, Ipv4Addr>,
    neigh: BTreeMap<Ipv4Addr, Mac>,
}

/// A veth's end in a task's namespace.
#[derive(Debug, Clone)]
struct Peer {
    sandbox: String,
    veth: String,
    addrs: BTreeSet<Ipv4Cidr>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeNetlink {
    sandboxes: BTreeMap<String, BTreeMap<String, FakeLink>>,
    /// Task namespaces: interface name → the veth it is the other end of.
    tasks: BTreeMap<TaskId, BTreeMap<String, Peer>>,
    failures: Vec<(Method, NetlinkError)>,
    changes: usize,
}

impl FakeNetlink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next call to `method` fails with `err` and changes nothing.
    pub fn fail_on(&mut self, method: Method, err: NetlinkError) {
        self.failures.push((method, err));
    }

    /// How many calls have succeeded.
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// The interfaces in a task's namespace.
    pub fn task_interfaces(&self, task: &TaskId) -> Vec<String> {
        self.tasks
            .get(task)
            .map(|ifs| ifs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// What the model holds, as [`Netlink::observe`] reports it.
    pub fn observed(&self) -> ObservedState {
        let mut state = NetState::default();
        for (name, links) in &self.sandboxes {
            let mut sb = Sandbox::default();
            for (ln, l) in links {
                sb.links.insert(ln.clone(), l.link.clone());
                let addrs = match &l.link {
                    Link::Veth(v) => self
                        .tasks
                        .get(&v.task)
                        .and_then(|ifs| ifs.get(&v.peer))
                        .map(|p| p.addrs.clone())
                        .unwrap_or_default(),
                    _ => l.addrs.clone(),
                };
                if !addrs.is_empty() {
                    sb.addrs.insert(ln.clone(), addrs);
                }
                for (mac, dst) in &l.fdb {
                    sb.fdb.insert((ln.clone(), *mac), *dst);
                }
                for (ip, mac) in &l.neigh {
                    sb.neigh.insert((ln.clone(), *ip), *mac);
                }
            }
            state.sandboxes.insert(name.clone(), sb);
        }
        state
    }

    fn check(&mut self, method: Method) -> Result<(), NetlinkError> {
        if let Some(i) = self.failures.iter().position(|(m, _)| *m == method) {
            return Err(self.failures.remove(i).1);
        }
        Ok(())
    }

    fn done(&mut self) -> Result<(), NetlinkError> {
        self.changes += 1;
        Ok(())
    }

    fn sandbox(&mut self, sandbox: &str) -> Result<&mut BTreeMap<String, FakeLink>, NetlinkError> {
        self.sandboxes
            .get_mut(sandbox)
            .ok_or_else(|| NetlinkError::NotFound(format!("sandbox {sandbox}")))
    }

    fn link(&mut self, sandbox: &str, name: &str) -> Result<&mut FakeLink, NetlinkError> {
        self.sandbox(sandbox)?
            .get_mut(name)
            .ok_or_else(|| NetlinkError::NotFound(format!("link {name} in {sandbox}")))
    }

    /// Adds `link` unless one of its name exists: fine if identical, refused otherwise.
    /// Returns whether it was added.
    fn add_link(&mut self, sandbox: &str, link: Link) -> Result<bool, NetlinkError> {
        if let Some(master) = link.master() {
            let is_bridge = self
                .sandbox(sandbox)?
                .get(master)
                .map(|m| matches!(m.link, Link::Bridge(_)));
            match is_bridge {
                None => {
                    return Err(NetlinkError::NotFound(format!(
                        "bridge {master} in {sandbox}"
                    )))
                }
                Some(false) => {
                    return Err(NetlinkError::Invalid(format!("{master} is not a bridge")))
                }
                Some(true) => {}
            }
        }
        let links = self.sandbox(sandbox)?;
        if let Some(existing) = links.get(link.name()) {
            return if existing.link == link {
                Ok(false)
            } else {
                Err(NetlinkError::Exists(format!(
                    "link {} in {sandbox}",
                    link.name()
                )))
            };
        }
        links.insert(
            link.name().to_owned(),
            FakeLink {
                link,
                addrs: BTreeSet::new(),
                fdb: BTreeMap::new(),
                neigh: BTreeMap::new(),
            },
        );
        Ok(true)
    }

    /// Removes a link: a veth takes its task side along, a bridge's ports are detached.
    fn remove_link(&mut self, sandbox: &str, name: &str) -> Result<(), NetlinkError> {
        let links = self.sandbox(sandbox)?;
        let gone = links
            .remove(name)
            .ok_or_else(|| NetlinkError::NotFound(format!("link {name} in {sandbox}")))?;
        match gone.link {
            Link::Veth(v) => {
                if let Some(ifs) = self.tasks.get_mut(&v.task) {
                    ifs.remove(&v.peer);
                    if ifs.is_empty() {
                        self.tasks.remove(&v.task);
                    }
                }
            }
            Link::Bridge(_) => {
                for l in links.values_mut() {
                    match &mut l.link {
                        Link::Vxlan(VxlanSpec { master, .. })
                        | Link::Veth(VethSpec { master, .. })
                            if master == name =>
                        {
                            master.clear();
                        }
                        _ => {}
                    }
                }
            }
            Link::Vxlan(_) => {}
        }
        Ok(())
    }
}

impl Netlink for FakeNetlink {
    fn observe(&self) -> Result<ObservedState, NetlinkError> {
        Ok(self.observed())
    }

    fn create_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError> {
        self.check(Method::CreateSandbox)?;
        if self.sandboxes.contains_key(sandbox) {
            return Err(NetlinkError::Exists(format!("sandbox {sandbox}")));
        }
        self.sandboxes.insert(sandbox.to_owned(), BTreeMap::new());
        self.done()
    }

    fn delete_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError> {
        self.check(Method::DeleteSandbox)?;
        let names: Vec<String> = self.sandbox(sandbox)?.keys().cloned().collect();
        for name in names {
            self.remove_link(sandbox, &name)?;
        }
        self.sandboxes.remove(sandbox);
        self.done()
    }

    fn ensure_bridge(&mut self, sandbox: &str, spec: &BridgeSpec) -> Result<(), NetlinkError> {
        self.check(Method::EnsureBridge)?;
        self.add_link(sandbox, Link::Bridge(spec.clone()))?;
        self.done()
    }

    fn ensure_vxlan(&mut self, sandbox: &str, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        self.check(Method::EnsureVxlan)?;
        let taken = self.sandboxes.iter().any(|(sb, links)| {
            links.values().any(|l| match &l.link {
                Link::Vxlan(v) => {
                    v.vni == spec.vni && v.port == spec.port && !(sb == sandbox && v == spec)
                }
                _ => false,
            })
        });
        if taken {
            return Err(NetlinkError::Exists(format!(
                "vxlan device with vni {} port {}",
                spec.vni, spec.port
            )));
        }
        self.add_link(sandbox, Link::Vxlan(spec.clone()))?;
        self.done()
    }

    fn ensure_veth(&mut self, sandbox: &str, spec: &VethSpec) -> Result<(), NetlinkError> {
        self.check(Method::EnsureVeth)?;
        let peer_taken = self
            .tasks
            .get(&spec.task)
            .and_then(|ifs| ifs.get(&spec.peer))
            .is_some_and(|p| !(p.sandbox == sandbox && p.veth == spec.name));
        if peer_taken {
            return Err(NetlinkError::Exists(format!(
                "{} in the namespace of task {}",
                spec.peer, spec.task
            )));
        }
        if self.add_link(sandbox, Link::Veth(spec.clone()))? {
            self.tasks.entry(spec.task.clone()).or_default().insert(
                spec.peer.clone(),
                Peer {
                    sandbox: sandbox.to_owned(),
                    veth: spec.name.clone(),
                    addrs: BTreeSet::new(),
                },
            );
        }
        self.done()
    }

    fn add_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError> {
        self.check(Method::AddAddr)?;
        let addrs = self.addrs_of(sandbox, link)?;
        if !addrs.insert(addr) {
            return Err(NetlinkError::Exists(format!("address {addr} on {link}")));
        }
        self.done()
    }

    fn del_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError> {
        self.check(Method::DelAddr)?;
        if !self.addrs_of(sandbox, link)?.remove(&addr) {
            return Err(NetlinkError::NotFound(format!("address {addr} on {link}")));
        }
        self.done()
    }

    fn set_fdb(
        &mut self,
        sandbox: &str,
        dev: &str,
        mac: Mac,
        dst: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.check(Method::SetFdb)?;
        self.link(sandbox, dev)?.fdb.insert(mac, dst);
        self.done()
    }

    fn del_fdb(&mut self, sandbox: &str, dev: &str, mac: Mac) -> Result<(), NetlinkError> {
        self.check(Method::DelFdb)?;
        if self.link(sandbox, dev)?.fdb.remove(&mac).is_none() {
            return Err(NetlinkError::NotFound(format!("fdb entry {mac} on {dev}")));
        }
        self.done()
    }

    fn set_neigh(
        &mut self,
        sandbox: &str,
        dev: &str,
        ip: Ipv4Addr,
        mac: Mac,
    ) -> Result<(), NetlinkError> {
        self.check(Method::SetNeigh)?;
        self.link(sandbox, dev)?.neigh.insert(ip, mac);
        self.done()
    }

    fn del_neigh(&mut self, sandbox: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        self.check(Method::DelNeigh)?;
        if self.link(sandbox, dev)?.neigh.remove(&ip).is_none() {
            return Err(NetlinkError::NotFound(format!("neighbour {ip} on {dev}")));
        }
        self.done()
    }

    fn del_link(&mut self, sandbox: &str, name: &str) -> Result<(), NetlinkError> {
        self.check(Method::DelLink)?;
        self.remove_link(sandbox, name)?;
        self.done()
    }
}

impl FakeNetlink {
    /// A link's addresses: a veth's are those of its task side.
    fn addrs_of(
        &mut self,
        sandbox: &str,
        link: &str,
    ) -> Result<&mut BTreeSet<Ipv4Cidr>, NetlinkError> {
        let l = self.link(sandbox, link)?;
        match &l.link {
            Link::Veth(v) => {
                let (task, peer) = (v.task.clone(), v.peer.clone());
                self.tasks
                    .get_mut(&task)
                    .and_then(|ifs| ifs.get_mut(&peer))
                    .map(|p| &mut p.addrs)
                    .ok_or_else(|| NetlinkError::NotFound(format!("{peer} of task {task}")))
            }
            _ => Ok(&mut self.link(sandbox, link)?.addrs),
        }
    }
}
