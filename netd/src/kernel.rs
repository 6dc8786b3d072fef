//! The real [`Netlink`]: rtnetlink against the kernel.
//!
//! Each sandbox is a network namespace bind-mounted at `sandbox_dir/<name>` ([`netns`]).
//! Every request runs on a fresh thread that entered the right namespace, with a small
//! current-thread tokio runtime and a netlink socket opened there (a netlink socket talks to
//! the namespace it was opened in); the caller's thread never changes namespace, so this is
//! safe to call from anywhere, including inside a tokio runtime.
//!
//! Nothing is kept in memory: [`KernelNetlink::observe`] rebuilds the whole state from the
//! kernel, so a restarted daemon sees what its predecessor made. What the kernel does not
//! say by itself (which task a veth serves, and its far end's name) is written into the
//! sandbox end's interface alias as `<task id> <peer name>`.
use crate::model::{
    BridgeSpec, Link, Mac, NetState, ObservedState, Sandbox, VethSpec, VxlanSpec, HOST_ENDPOINT,
};
use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{self, NetnsError};
use futures::TryStreamExt;
use nix::errno::Errno;
use rswarm_proto::model::{Ipv4Cidr, TaskId};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a task's network namespace is mounted, if it has one.
pub type TaskNetns = Arc<dyn Fn(&TaskId) -> Option<PathBuf> + Send + Sync>;

/// Sandbox files are named so (see [`crate::model::sandbox_name`]); anything else in the
/// directory is not ours.
const SANDBOX_PREFIX: &str = "rsw-";
/// The MTU reported when no underlay link holds the address asked about.
const DEFAULT_MTU: u32 = 1500;

pub struct KernelNetlink {
    sandbox_dir: PathBuf,
    task_netns: TaskNetns,
    /// The namespace current when this was made: VXLAN sockets and host endpoints live here.
    underlay: File,
}

impl std::fmt::Debug for KernelNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNetlink")
            .field("sandbox_dir", &self.sandbox_dir)
            .finish_non_exhaustive()
    }
}

/// A namespace to work in: its fd, and a label for errors.
struct Ns {
    label: PathBuf,
    fd: OwnedFd,
}

impl KernelNetlink {
    /// Sandboxes live under `sandbox_dir`; `task_netns` finds a task's namespace. The calling
    /// thread's namespace becomes the underlay.
    pub fn new(sandbox_dir: PathBuf, task_netns: TaskNetns) -> Result<Self, NetlinkError> {
        let underlay = netns::open(Path::new(netns::THREAD_NETNS)).map_err(ns_err)?;
        Ok(KernelNetlink {
            sandbox_dir,
            task_netns,
            underlay,
        })
    }

    pub fn sandbox_dir(&self) -> &Path {
        &self.sandbox_dir
    }

    fn sandbox_path(&self, sandbox: &str) -> PathBuf {
        self.sandbox_dir.join(sandbox)
    }

    fn sandbox_ns(&self, sandbox: &str) -> Result<Ns, NetlinkError> {
        let label = self.sandbox_path(sandbox);
        if !netns::is_netns(&label) {
            return Err(NetlinkError::NotFound(format!("sandbox {sandbox}")));
        }
        let fd = netns::open(&label).map_err(ns_err)?.into();
        Ok(Ns { label, fd })
    }

    fn underlay_ns(&self) -> Result<Ns, NetlinkError> {
        let fd = self
            .underlay
            .try_clone()
            .map_err(|e| NetlinkError::Os(format!("duplicating the underlay netns fd: {e}")))?
            .into();
        Ok(Ns {
            label: PathBuf::from("underlay"),
            fd,
        })
    }

    /// The namespace holding the far end of `task`'s veth.
    fn far_ns(&self, task: &TaskId) -> Result<Ns, NetlinkError> {
        if task.as_str() == HOST_ENDPOINT {
            return self.underlay_ns();
        }
        let label = (self.task_netns)(task)
            .ok_or_else(|| NetlinkError::NotFound(format!("network namespace of task {task}")))?;
        let fd = netns::open(&label)
            .map_err(|e| NetlinkError::NotFound(e.to_string()))?
            .into();
        Ok(Ns { label, fd })
    }

    /// One sandbox as the kernel has it.
    fn observe_sandbox(&self, sandbox: &str) -> Result<Sandbox, NetlinkError> {
        let ns = self.sandbox_ns(sandbox)?;
        let (mut sb, veths) = in_ns(ns, |h| async move { read_sandbox(&h).await })?;
        for (name, index) in veths {
            let Some(Link::Veth(spec)) = sb.links.get_mut(&name) else {
                continue;
            };
            let Some((mac, addrs)) = self.read_far_end(spec, index)? else {
                continue;
            };
            spec.mac = mac;
            if !addrs.is_empty() {
                sb.addrs.insert(name, addrs);
            }
        }
        Ok(sb)
    }

    /// The MAC and addresses of a veth's far end, if it is where the alias says (and is the
    /// peer of the sandbox end with index `index`).
    fn read_far_end(
        &self,
        spec: &VethSpec,
        index: u32,
    ) -> Result<Option<(Mac, BTreeSet<Ipv4Cidr>)>, NetlinkError> {
        if spec.peer.is_empty() {
            return Ok(None);
        }
        let ns = match self.far_ns(&spec.task) {
            Ok(ns) => ns,
            Err(NetlinkError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let peer = spec.peer.clone();
        in_ns(ns, move |h| async move {
            let Some(link) = link_by_name(&h, &peer).await? else {
                return Ok(None);
            };
            let raw = RawLink::from(&link);
            // A far end that is down (say, made by a daemon that died before setting it up)
            // reads as missing, so that the diff makes the pair again.
            if raw.kind != Some(InfoKind::Veth) || raw.link != Some(index) || !raw.up {
                return Ok(None);
            }
            let addrs = addrs_of(&h, raw.index).await?;
            Ok(raw.mac.map(|m| (m, addrs)))
        })
    }

    /// Where a link's addresses go: the sandbox, or for a veth its far end. Returns the
    /// namespace and the link's name there.
    fn addr_target(&self, sandbox: &str, link: &str) -> Result<(Ns, String), NetlinkError> {
        let ns = self.sandbox_ns(sandbox)?;
        let name = link.to_owned();
        let raw = in_ns(ns, move |h| async move {
            let l = link_by_name(&h, &name)
                .await?
                .ok_or_else(|| NetlinkError::NotFound(format!("link {name}")))?;
            Ok(RawLink::from(&l))
        })?;
        if raw.kind == Some(InfoKind::Veth) {
            let (task, peer) = raw.alias.as_deref().and_then(parse_alias).ok_or_else(|| {
                NetlinkError::Invalid(format!("veth {link} in {sandbox} has no task alias"))
            })?;
            return Ok((self.far_ns(&task)?, peer));
        }
        Ok((self.sandbox_ns(sandbox)?, link.to_owned()))
    }

    /// Whether the sandbox already has `want` exactly; an error if it has another link of
    /// that name.
    fn has_link(&self, sandbox: &str, want: &Link) -> Result<bool, NetlinkError> {
        let sb = self.observe_sandbox(sandbox)?;
        match sb.links.get(want.name()) {
            None => Ok(false),
            Some(l) if l == want => Ok(true),
            Some(_) => Err(NetlinkError::Exists(format!(
                "link {} in {sandbox}",
                want.name()
            ))),
        }
    }
}

impl Netlink for KernelNetlink {
    fn observe(&self) -> Result<ObservedState, NetlinkError> {
        let mut state = NetState::default();
        let entries = match std::fs::read_dir(&self.sandbox_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => {
                return Err(NetlinkError::Os(format!(
                    "listing {}: {e}",
                    self.sandbox_dir.display()
                )))
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| {
                NetlinkError::Os(format!("listing {}: {e}", self.sandbox_dir.display()))
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(SANDBOX_PREFIX) || !netns::is_netns(&entry.path()) {
                continue;
            }
            let sb = self.observe_sandbox(&name)?;
            state.sandboxes.insert(name, sb);
        }
        Ok(state)
    }

    fn create_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError> {
        netns::create(&self.sandbox_path(sandbox)).map_err(ns_err)
    }

    fn delete_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError> {
        let path = self.sandbox_path(sandbox);
        if netns::is_netns(&path) {
            // Namespace teardown is asynchronous in the kernel: delete the links now so that
            // their names, VNIs and task-side peers are free as soon as this returns.
            let ns = self.sandbox_ns(sandbox)?;
            in_ns(ns, |h| async move {
                let links: Vec<LinkMessage> = h
                    .link()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|e| nl_err("listing links", e))?;
                for l in links.iter().map(RawLink::from) {
                    if matches!(
                        l.kind,
                        Some(InfoKind::Veth) | Some(InfoKind::Vxlan) | Some(InfoKind::Bridge)
                    ) {
                        del_index(&h, l.index, &l.name).await?;
                    }
                }
                Ok(())
            })?;
        }
        netns::delete(&path).map_err(ns_err)
    }

    fn ensure_bridge(&mut self, sandbox: &str, spec: &BridgeSpec) -> Result<(), NetlinkError> {
        if self.has_link(sandbox, &Link::Bridge(spec.clone()))? {
            return Ok(());
        }
        let spec = spec.clone();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            h.link()
                .add(LinkBridge::new(&spec.name).mtu(spec.mtu).up().build())
                .execute()
                .await
                .map_err(|e| nl_err(format!("creating bridge {}", spec.name), e))
        })
    }

    fn ensure_vxlan(&mut self, sandbox: &str, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        if self.has_link(sandbox, &Link::Vxlan(spec.clone()))? {
            return Ok(());
        }
        let target = self.sandbox_ns(sandbox)?;
        // Made in the underlay so that its UDP socket is there, then moved.
        let s = spec.clone();
        in_ns(self.underlay_ns()?, move |h| async move {
            if let Some(stale) = link_by_name(&h, &s.name).await? {
                // A leftover of an attempt that failed before the move: ours by its name.
                let stale = RawLink::from(&stale);
                if stale.kind == Some(InfoKind::Vxlan) {
                    del_index(&h, stale.index, &stale.name).await?;
                }
            }
            let msg = LinkVxlan::new(&s.name, s.vni)
                .port(s.port)
                .local(s.local)
                .learning(s.learning)
                .proxy(s.proxy)
                .mtu(s.mtu)
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| nl_err(format!("creating vxlan {}", s.name), e))?;
            let moved = h
                .link()
                .set(
                    LinkUnspec::new_with_name(&s.name)
                        .setns_by_fd(target.fd.as_raw_fd())
                        .build(),
                )
                .execute()
                .await;
            if let Err(e) = moved {
                if let Ok(Some(l)) = link_by_name(&h, &s.name).await {
                    let _ = h.link().del(l.header.index).execute().await;
                }
                return Err(nl_err(
                    format!("moving vxlan {} to {}", s.name, target.label.display()),
                    e,
                ));
            }
            Ok(())
        })?;
        let s = spec.clone();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            let mut msg = LinkUnspec::new_with_name(&s.name).mtu(s.mtu).up();
            if !s.master.is_empty() {
                msg = msg.controller(index_of(&h, &s.master).await?);
            }
            h.link()
                .set(msg.build())
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting up vxlan {}", s.name), e))
        })
    }

    fn ensure_veth(&mut self, sandbox: &str, spec: &VethSpec) -> Result<(), NetlinkError> {
        if self.has_link(sandbox, &Link::Veth(spec.clone()))? {
            return Ok(());
        }
        let far = self.far_ns(&spec.task)?;
        let s = spec.clone();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            // The far end is made directly in its namespace, named and addressed there. (Up
            // comes later, from there: asking for it here fails with ENOTCONN.)
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(s.peer.clone())
                .address(s.mac.0.to_vec())
                .mtu(s.mtu)
                .setns_by_fd(far.fd.as_raw_fd())
                .build();
            let mut msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(s.name.clone())
                .mtu(s.mtu)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
            if !s.master.is_empty() {
                msg = msg.controller(index_of(&h, &s.master).await?);
            }
            h.link().add(msg.build()).execute().await.map_err(|e| {
                nl_err(
                    format!(
                        "creating veth {} to {} in {}",
                        s.name,
                        s.peer,
                        far.label.display()
                    ),
                    e,
                )
            })?;
            // The alias is only applied on a change, not at creation.
            let index = index_of(&h, &s.name).await?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .alias(format!("{} {}", s.task, s.peer))
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting the alias of veth {}", s.name), e))
        })?;
        let peer = spec.peer.clone();
        in_ns(self.far_ns(&spec.task)?, move |h| async move {
            h.link()
                .set(LinkUnspec::new_with_name(&peer).up().build())
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting {peer} up"), e))
        })
    }

    fn add_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError> {
        let (ns, name) = self.addr_target(sandbox, link)?;
        in_ns(ns, move |h| async move {
            let index = index_of(&h, &name).await?;
            match h
                .address()
                .add(index, IpAddr::V4(addr.addr()), addr.prefix())
                .execute()
                .await
            {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(()),
                Err(e) => Err(nl_err(format!("adding {addr} to {name}"), e)),
            }
        })
    }

    fn del_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError> {
        let (ns, name) = match self.addr_target(sandbox, link) {
            Ok(t) => t,
            Err(NetlinkError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        in_ns(ns, move |h| async move {
            let Some(l) = link_by_name(&h, &name).await? else {
                return Ok(());
            };
            let msgs: Vec<AddressMessage> = h
                .address()
                .get()
                .set_link_index_filter(l.header.index)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_err(format!("listing addresses of {name}"), e))?;
            for m in msgs {
                if cidr_of(&m) == Some(addr) {
                    match h.address().del(m).execute().await {
                        Ok(()) => {}
                        Err(e) if is_gone(&e) => {}
                        Err(e) => return Err(nl_err(format!("deleting {addr} from {name}"), e)),
                    }
                }
            }
            Ok(())
        })
    }

    fn set_fdb(
        &mut self,
        sandbox: &str,
        dev: &str,
        mac: Mac,
        dst: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        let dev = dev.to_owned();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            let index = index_of(&h, &dev).await?;
            // `bridge fdb replace MAC dev DEV self dst IP permanent`.
            h.neighbours()
                .add_bridge(index, &mac.0)
                .destination(IpAddr::V4(dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting fdb {mac} -> {dst} on {dev}"), e))
        })
    }

    fn del_fdb(&mut self, sandbox: &str, dev: &str, mac: Mac) -> Result<(), NetlinkError> {
        let dev = dev.to_owned();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            let Some(l) = link_by_name(&h, &dev).await? else {
                return Ok(());
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Bridge;
            msg.header.ifindex = l.header.index;
            msg.header.flags = NeighbourFlags::Own;
            msg.header.state = NeighbourState::Permanent;
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
            match h.neighbours().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if is_gone(&e) => Ok(()),
                Err(e) => Err(nl_err(format!("deleting fdb {mac} on {dev}"), e)),
            }
        })
    }

    fn set_neigh(
        &mut self,
        sandbox: &str,
        dev: &str,
        ip: Ipv4Addr,
        mac: Mac,
    ) -> Result<(), NetlinkError> {
        let dev = dev.to_owned();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            let index = index_of(&h, &dev).await?;
            // `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
            h.neighbours()
                .add(index, IpAddr::V4(ip))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(|e| nl_err(format!("setting neighbour {ip} -> {mac} on {dev}"), e))
        })
    }

    fn del_neigh(&mut self, sandbox: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let dev = dev.to_owned();
        in_ns(self.sandbox_ns(sandbox)?, move |h| async move {
            let Some(l) = link_by_name(&h, &dev).await? else {
                return Ok(());
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.ifindex = l.header.index;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
            match h.neighbours().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if is_gone(&e) => Ok(()),
                Err(e) => Err(nl_err(format!("deleting neighbour {ip} on {dev}"), e)),
            }
        })
    }

    fn del_link(&mut self, sandbox: &str, name: &str) -> Result<(), NetlinkError> {
        let ns = match self.sandbox_ns(sandbox) {
            Ok(ns) => ns,
            Err(NetlinkError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let name = name.to_owned();
        in_ns(ns, move |h| async move {
            match link_by_name(&h, &name).await? {
                Some(l) => del_index(&h, l.header.index, &name).await,
                None => Ok(()),
            }
        })
    }
}

/// The MTU of the link holding `ip` in the calling thread's namespace (the underlay), or
/// 1500 if no link holds it.
pub fn underlay_mtu(ip: Ipv4Addr) -> Result<u32, NetlinkError> {
    // A new thread starts in its creator's namespace: the caller's.
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            block(move |h| async move {
                let msgs: Vec<AddressMessage> = h
                    .address()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|e| nl_err("listing addresses", e))?;
                let Some(index) = msgs
                    .iter()
                    .find(|m| cidr_of(m).is_some_and(|c| c.addr() == ip))
                    .map(|m| m.header.index)
                else {
                    return Ok(DEFAULT_MTU);
                };
                let links: Vec<LinkMessage> = h
                    .link()
                    .get()
                    .match_index(index)
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|e| nl_err(format!("reading link {index}"), e))?;
                Ok(links
                    .first()
                    .and_then(|l| RawLink::from(l).mtu)
                    .unwrap_or(DEFAULT_MTU))
            })
        })
        .map_err(|e| NetlinkError::Os(format!("spawning a netlink thread: {e}")))?
        .join()
        .map_err(|_| NetlinkError::Os("the netlink thread panicked".into()))?
}

/// Runs `f` with a netlink handle on a fresh thread inside `ns`.
fn in_ns<T, F, Fut>(ns: Ns, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let Ns { label, fd } = ns;
    netns::run_in_fd(&label, fd, move || block(f)).map_err(ns_err)?
}

/// Runs `f` with a netlink handle opened in the calling thread's namespace, on a runtime of
/// its own (the thread is a fresh one, outside any runtime).
fn block<T, F, Fut>(f: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetlinkError::Os(format!("starting a tokio runtime: {e}")))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetlinkError::Os(format!("opening a netlink socket: {e}")))?;
        tokio::spawn(conn);
        f(handle).await
    })
}

/// What a sandbox holds, veths without their far end (their MAC is zero), and the veths to
/// complete: (name, index).
async fn read_sandbox(h: &Handle) -> Result<(Sandbox, Vec<(String, u32)>), NetlinkError> {
    let links: Vec<RawLink> = h
        .link()
        .get()
        .execute()
        .map_ok(|l| RawLink::from(&l))
        .try_collect()
        .await
        .map_err(|e| nl_err("listing links", e))?;
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let master = |l: &RawLink| {
        l.controller
            .and_then(|c| names.get(&c).cloned())
            .unwrap_or_default()
    };
    let mut sb = Sandbox::default();
    let mut veths = Vec::new();
    let mut vxlans = BTreeSet::new();
    let mut ours = BTreeMap::new();
    for l in &links {
        // The model has no up/down: a link that is down is not as asked, and reports MTU 0
        // so that the diff replaces it (as after a daemon died halfway through making it).
        let mtu = if l.up { l.mtu.unwrap_or_default() } else { 0 };
        let link = match l.kind {
            Some(InfoKind::Bridge) => Link::Bridge(BridgeSpec {
                name: l.name.clone(),
                mtu,
            }),
            Some(InfoKind::Vxlan) => {
                vxlans.insert(l.index);
                Link::Vxlan(VxlanSpec {
                    mtu,
                    ..vxlan_spec(l, master(l))
                })
            }
            Some(InfoKind::Veth) => {
                // Without a readable alias the veth cannot be matched to a task: it is
                // reported with an empty one, so that the diff replaces it.
                let (task, peer) = l
                    .alias
                    .as_deref()
                    .and_then(parse_alias)
                    .unwrap_or_else(|| (TaskId::from(""), String::new()));
                veths.push((l.name.clone(), l.index));
                Link::Veth(VethSpec {
                    name: l.name.clone(),
                    mtu,
                    master: master(l),
                    task,
                    peer,
                    mac: Mac([0; 6]),
                })
            }
            // lo, and anything we never make.
            _ => continue,
        };
        ours.insert(l.index, l.name.clone());
        sb.links.insert(l.name.clone(), link);
    }
    let addrs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("listing addresses", e))?;
    for m in &addrs {
        let (Some(name), Some(cidr)) = (ours.get(&m.header.index), cidr_of(m)) else {
            continue;
        };
        // A veth's addresses are on its far end; any on the sandbox end are not modelled.
        if matches!(sb.links.get(name), Some(Link::Veth(_))) {
            continue;
        }
        sb.addrs.entry(name.clone()).or_default().insert(cidr);
    }
    let neighs: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("listing neighbours", e))?;
    for n in &neighs {
        if n.header.state != NeighbourState::Permanent {
            continue;
        }
        let (Some(dev), Some(IpAddr::V4(ip)), Some(mac)) =
            (ours.get(&n.header.ifindex), neigh_dst(n), neigh_mac(n))
        else {
            continue;
        };
        sb.neigh.insert((dev.clone(), ip), mac);
    }
    let fdb: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("listing fdb entries", e))?;
    for n in &fdb {
        // Only the VXLAN devices' own entries carry a remote: the bridge's are local.
        if n.header.state != NeighbourState::Permanent || !vxlans.contains(&n.header.ifindex) {
            continue;
        }
        let (Some(dev), Some(IpAddr::V4(dst)), Some(mac)) =
            (ours.get(&n.header.ifindex), neigh_dst(n), neigh_mac(n))
        else {
            continue;
        };
        sb.fdb.insert((dev.clone(), mac), dst);
    }
    Ok((sb, veths))
}

fn vxlan_spec(l: &RawLink, master: String) -> VxlanSpec {
    let mut spec = VxlanSpec {
        name: l.name.clone(),
        mtu: l.mtu.unwrap_or_default(),
        master,
        vni: 0,
        local: Ipv4Addr::UNSPECIFIED,
        port: 0,
        // The kernel's defaults, should it not say.
        learning: true,
        proxy: false,
    };
    for info in &l.vxlan {
        match info {
            InfoVxlan::Id(v) => spec.vni = *v,
            InfoVxlan::Local(a) => spec.local = *a,
            InfoVxlan::Port(p) => spec.port = *p,
            InfoVxlan::Learning(b) => spec.learning = *b,
            InfoVxlan::Proxy(b) => spec.proxy = *b,
            _ => {}
        }
    }
    spec
}

/// `<task id> <peer name>`, as [`KernelNetlink::ensure_veth`] writes it.
fn parse_alias(alias: &str) -> Option<(TaskId, String)> {
    let (task, peer) = alias.rsplit_once(' ')?;
    (!task.is_empty() && !peer.is_empty()).then(|| (TaskId::from(task), peer.to_owned()))
}

/// What netd reads of a link.
#[derive(Debug, Default)]
struct RawLink {
    index: u32,
    name: String,
    kind: Option<InfoKind>,
    mtu: Option<u32>,
    /// Administratively up.
    up: bool,
    controller: Option<u32>,
    alias: Option<String>,
    mac: Option<Mac>,
    /// For a veth, its peer's index (in the peer's namespace).
    link: Option<u32>,
    vxlan: Vec<InfoVxlan>,
}

impl From<&LinkMessage> for RawLink {
    fn from(m: &LinkMessage) -> Self {
        let mut raw = RawLink {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..RawLink::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => raw.name = n.clone(),
                LinkAttribute::Mtu(v) => raw.mtu = Some(*v),
                LinkAttribute::Controller(c) => raw.controller = Some(*c),
                LinkAttribute::IfAlias(s) => raw.alias = Some(s.clone()),
                LinkAttribute::Link(l) => raw.link = Some(*l),
                LinkAttribute::Address(b) => raw.mac = mac_of(b),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => raw.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => raw.vxlan = v.clone(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        raw
    }
}

fn mac_of(b: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(b).ok().map(Mac)
}

fn cidr_of(m: &AddressMessage) -> Option<Ipv4Cidr> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on p2p links).
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })?;
    Ipv4Cidr::new(addr, m.header.prefix_len).ok()
}

fn neigh_dst(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // In AF_BRIDGE (FDB) messages the parser leaves the address raw.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from)
        }
        _ => None,
    })
}

fn neigh_mac(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => mac_of(b),
        _ => None,
    })
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
    let found: Result<Vec<LinkMessage>, _> = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_collect()
        .await;
    match found {
        Ok(mut v) => Ok(v.pop()),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
    }
}

async fn index_of(h: &Handle, name: &str) -> Result<u32, NetlinkError> {
    link_by_name(h, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| NetlinkError::NotFound(format!("link {name}")))
}

async fn addrs_of(h: &Handle, index: u32) -> Result<BTreeSet<Ipv4Cidr>, NetlinkError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl_err("listing addresses", e))?;
    Ok(msgs.iter().filter_map(cidr_of).collect())
}

async fn del_index(h: &Handle, index: u32, name: &str) -> Result<(), NetlinkError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(nl_err(format!("deleting link {name}"), e)),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

/// The kernel's ways of saying "not there".
fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(Errno::ENOENT | Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL)
    )
}

fn nl_err(what: impl std::fmt::Display, e: rtnetlink::Error) -> NetlinkError {
    let text = match &e {
        rtnetlink::Error::NetlinkError(m) => format!("{what}: {}", m.to_io()),
        other => format!("{what}: {other}"),
    };
    match errno(&e) {
        _ if is_gone(&e) => NetlinkError::NotFound(text),
        Some(Errno::EEXIST | Errno::EBUSY) => NetlinkError::Exists(text),
        Some(Errno::EINVAL | Errno::ERANGE | Errno::EOPNOTSUPP) => NetlinkError::Invalid(text),
        _ => NetlinkError::Os(text),
    }
}

fn ns_err(e: NetnsError) -> NetlinkError {
    match e {
        NetnsError::NotNetns { .. } => NetlinkError::NotFound(e.to_string()),
        _ => NetlinkError::Os(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip() {
        let alias = format!("{} {}", "task-1.abc", "eth2");
        assert_eq!(
            parse_alias(&alias),
            Some((TaskId::from("task-1.abc"), "eth2".to_owned()))
        );
        assert_eq!(parse_alias("no-peer"), None);
        assert_eq!(parse_alias(" eth0"), None);
        assert_eq!(parse_alias("task "), None);
    }

    #[test]
    fn errnos_map_to_intents() {
        let err = |code: i32| {
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(-code);
            rtnetlink::Error::NetlinkError(m)
        };
        assert!(matches!(
            nl_err("x", err(libc_errno(Errno::ENODEV))),
            NetlinkError::NotFound(_)
        ));
        assert!(matches!(
            nl_err("x", err(libc_errno(Errno::EEXIST))),
            NetlinkError::Exists(_)
        ));
        assert!(matches!(
            nl_err("x", err(libc_errno(Errno::EINVAL))),
            NetlinkError::Invalid(_)
        ));
        assert!(matches!(
            nl_err("x", err(libc_errno(Errno::EPERM))),
            NetlinkError::Os(_)
        ));
    }

    fn libc_errno(e: Errno) -> i32 {
        e as i32
    }
}
