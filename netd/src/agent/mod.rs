//! The node's network agent: gives each task a network namespace (made before its
//! container, which joins it by path), connects it to the node's egress bridge, and keeps
//! the node's networking in line with the cluster's view as the dispatcher sends it — the
//! overlay sandboxes, veths and peers (netd's diff against the kernel), each task's
//! embedded DNS at 127.0.0.11 and VIP balancing, and the node's published ports.
//!
//! Everything it makes lives in the kernel and survives a daemon restart: on start it
//! rebuilds its picture from the state directory (task namespaces, gateway addresses) and
//! the next view, and reconciles instead of rebuilding, so traffic never stops. Only the
//! DNS servers are processes' sockets, served again once the daemon is back.

pub mod plan;

use crate::dns::{self, DnsHandle, NameSource};
use crate::gateway::{self, GatewayConfig};
use crate::{netns, nft, KernelNetlink, Netlink};
use rswarm_proto::model::{Ipv4Cidr, NetworkView, NodeId, Task, TaskId, TaskView};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// How often the agent reconciles even without news (repairs what someone else changed).
const RESYNC: Duration = Duration::from_secs(10);
/// How old a task's namespace must be before it counts as stale when no task owns it.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// What a task's container needs from its network.
#[derive(Debug, Clone)]
pub struct TaskNet {
    /// The namespace the container joins.
    pub netns: PathBuf,
    /// The task's first overlay address, for its /etc/hosts.
    pub address: Option<Ipv4Addr>,
}

/// The per-task names the embedded DNS answers from, shared with the DNS servers.
type Names = Arc<RwLock<BTreeMap<TaskId, BTreeMap<String, Vec<Ipv4Addr>>>>>;

struct TaskNames {
    names: Names,
    task: TaskId,
}

impl NameSource for TaskNames {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        names.get(&self.task)?.get(name).cloned()
    }
}

#[derive(Default)]
struct State {
    view: NetworkView,
    dns: BTreeMap<TaskId, DnsHandle>,
    /// What was last applied, to skip rewriting unchanged rules.
    vips: BTreeMap<TaskId, Vec<nft::VipBackends>>,
    host: Option<nft::HostRules>,
    /// The last pass's overlay failures of each task (its veth or address).
    overlay_errors: BTreeMap<TaskId, String>,
    /// Whether a view came since the daemon started (until then nothing is stale).
    have_view: bool,
}

pub struct NetAgent {
    dir: PathBuf,
    gateway: GatewayConfig,
    upstreams: Vec<SocketAddr>,
    names: Names,
    /// The node's id and underlay address: set when it is in a cluster whose peers can
    /// reach it; `None`, no networking (tasks get an unconnected namespace).
    me: Mutex<Option<(NodeId, Ipv4Addr)>>,
    state: tokio::sync::Mutex<State>,
    /// Serialises attach/detach with gateway address choice.
    gw_lock: Mutex<()>,
    kick: Notify,
    /// Passes asked for (by `reconcile`) and the last one a finished pass covered: a
    /// burst of attaches shares passes instead of running one each.
    requested: std::sync::atomic::AtomicU64,
    completed: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network namespace: {0}")]
    Netns(#[from] crate::netns::NetnsError),
    #[error("egress bridge: {0}")]
    Gateway(#[from] gateway::GatewayError),
    #[error("overlay: {0}")]
    Overlay(String),
    #[error("no free address left on the egress bridge {0}")]
    GatewayFull(Ipv4Cidr),
    #[error("{0}")]
    Io(String),
}

impl NetAgent {
    /// Keeps its state under `dir`; forwards other names to `upstreams`.
    pub fn new(dir: PathBuf, upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(NetAgent {
            dir,
            gateway: GatewayConfig::default(),
            upstreams,
            names: Arc::default(),
            me: Mutex::new(None),
            state: tokio::sync::Mutex::new(State::default()),
            gw_lock: Mutex::new(()),
            kick: Notify::new(),
            requested: Default::default(),
            completed: tokio::sync::watch::channel(0).0,
        })
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }
    fn sandbox_dir(&self) -> PathBuf {
        self.dir.join("sandboxes")
    }
    fn gw_dir(&self) -> PathBuf {
        self.dir.join("gateway")
    }

    /// Where a task's namespace is mounted.
    pub fn netns_path(&self, task: &TaskId) -> PathBuf {
        self.netns_dir().join(task.as_str())
    }

    /// The node's identity, once it has one (after init or join). A node that advertises
    /// a loopback address cannot be reached by peers (test clusters of several daemons in
    /// one namespace): it gets no networking, and leaves the namespace it shares untouched.
    pub fn set_identity(&self, node: NodeId, underlay: Ipv4Addr) {
        let me = if underlay.is_loopback() {
            tracing::info!(
                "the node advertises {underlay}, a loopback address: overlay networking is off"
            );
            None
        } else {
            Some((node, underlay))
        };
        *self.me.lock().unwrap_or_else(|p| p.into_inner()) = me;
        self.kick.notify_one();
    }

    fn identity(&self) -> Option<(NodeId, Ipv4Addr)> {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new view from the dispatcher (JSON, see dispatcher.proto); a malformed one is
    /// ignored with a warning.
    pub async fn set_view_json(&self, json: &[u8]) {
        match serde_json::from_slice::<NetworkView>(json) {
            Ok(v) => {
                let mut st = self.state.lock().await;
                st.view = v;
                st.have_view = true;
                drop(st);
                self.kick.notify_one();
            }
            Err(e) => warn!("ignoring a malformed network view: {e}"),
        }
    }

    /// Makes the task's namespace (with `lo` up), connects it to the egress bridge and
    /// brings its overlay interfaces up. Idempotent. `None` when the node has no
    /// networking (see [`NetAgent::set_identity`]).
    pub async fn attach(self: &Arc<Self>, task: &Task) -> Result<Option<TaskNet>, NetError> {
        if self.identity().is_none() {
            return Ok(None);
        }
        let path = self.netns_path(&task.id);
        // A task only on internal networks gets no way out (Docker's --internal).
        let egress = {
            let st = self.state.lock().await;
            let nets = &st.view.networks;
            let internal_only = !task.networks.is_empty()
                && task.networks.iter().all(|a| {
                    nets.iter()
                        .any(|n| n.id == a.network && n.spec.internal && !n.spec.ingress)
                });
            !internal_only
        };
        let me = self.clone();
        let t = task.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || me.attach_blocking(&t, &p, egress))
            .await
            .map_err(|e| NetError::Io(e.to_string()))??;
        // The overlay side comes from the view; reconcile now so the container starts
        // with its interfaces, and fail the task if the kernel refused them.
        self.reconcile().await;
        if let Some(e) = self.state.lock().await.overlay_errors.get(&task.id) {
            return Err(NetError::Overlay(e.clone()));
        }
        let address = task
            .networks
            .iter()
            .find_map(|a| a.addresses.first())
            .map(|a| a.addr());
        Ok(Some(TaskNet {
            netns: path,
            address,
        }))
    }

    fn attach_blocking(&self, task: &Task, path: &Path, egress: bool) -> Result<(), NetError> {
        netns::create(path)?;
        if !egress {
            return Ok(());
        }
        gateway::ensure_bridge(&self.gateway)?;
        let addr = self.gateway_addr(&task.id)?;
        let index = task.networks.len();
        gateway::attach(
            &self.gateway,
            path,
            &gw_host_if(&task.id),
            &format!("eth{index}"),
            addr,
            1500,
        )?;
        Ok(())
    }

    /// The task's address on the egress bridge: kept in a file so that it survives a
    /// daemon restart; the lowest free one for a new task.
    fn gateway_addr(&self, task: &TaskId) -> Result<Ipv4Cidr, NetError> {
        let _g = self.gw_lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.gw_dir();
        let file = dir.join(task.as_str());
        if let Some(a) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Cidr>().ok())
        {
            return Ok(a);
        }
        let used: BTreeSet<Ipv4Addr> = self.gateway_ips().into_values().collect();
        let subnet = self.gateway.subnet;
        let first = u32::from(self.gateway.gateway) + 1;
        let last = u32::from(subnet.broadcast());
        let ip = (first..last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
            .ok_or(NetError::GatewayFull(subnet))?;
        let cidr = Ipv4Cidr::new(ip, subnet.prefix()).map_err(|e| NetError::Io(e.to_string()))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetError::Io(format!("{}: {e}", dir.display())))?;
        std::fs::write(&file, cidr.to_string())
            .map_err(|e| NetError::Io(format!("{}: {e}", file.display())))?;
        Ok(cidr)
    }

    /// Every task's egress-bridge address, from the state directory.
    fn gateway_ips(&self) -> BTreeMap<TaskId, Ipv4Addr> {
        let Ok(rd) = std::fs::read_dir(self.gw_dir()) else {
            return BTreeMap::new();
        };
        rd.filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                let a: Ipv4Cidr = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((TaskId(id), a.addr()))
            })
            .collect()
    }

    /// Tears the task's networking down: its DNS server, egress veth and namespace (its
    /// overlay veths go with it). Idempotent.
    pub async fn detach(self: &Arc<Self>, task: &TaskId) {
        {
            let mut st = self.state.lock().await;
            st.dns.remove(task);
            st.vips.remove(task);
        }
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task);
        let me = self.clone();
        let t = task.clone();
        let r = blocking(move || {
            let _g = me.gw_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = gateway::detach(&gw_host_if(&t)) {
                warn!(task.id = %t, "egress veth: {e}");
            }
            let _ = std::fs::remove_file(me.gw_dir().join(t.as_str()));
            netns::delete(&me.netns_path(&t))
        })
        .await;
        if let Err(e) = r {
            warn!(task.id = %task, "remove the task's network namespace: {e}");
        }
        self.kick.notify_one();
    }

    /// Local tasks whose namespace exists.
    fn ready_tasks(&self) -> BTreeSet<TaskId> {
        let Ok(rd) = std::fs::read_dir(self.netns_dir()) else {
            return BTreeSet::new();
        };
        rd.filter_map(Result::ok)
            .map(|e| TaskId(e.file_name().to_string_lossy().into_owned()))
            .filter(|t| netns::is_netns(&self.netns_path(t)))
            .collect()
    }

    /// Runs until the process ends: reconciles on every change and every few seconds.
    pub async fn run(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        loop {
            let covers = self.requested.load(Ordering::SeqCst);
            self.pass().await;
            self.completed.send_replace(covers);
            tokio::select! {
                _ = self.kick.notified() => {
                    // Let a burst of changes settle.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// Returns once a pass that started after this call has finished (see `run`).
    pub async fn reconcile(&self) {
        use std::sync::atomic::Ordering;
        let want = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.kick.notify_one();
        let mut done = self.completed.subscribe();
        let _ = done.wait_for(|c| *c >= want).await;
    }

    /// One pass: overlay links and peers, then per task DNS and VIPs, then the node's
    /// published ports. Failures are logged and retried on the next pass.
    async fn pass(self: &Arc<Self>) {
        let mut st = self.state.lock().await;
        let Some((me, underlay)) = self.identity() else {
            return;
        };
        // Until the first view after a (re)start, the kernel's state is the best there is:
        // an empty view would take every sandbox and rule down under running tasks.
        if !st.have_view {
            return;
        }
        let view = st.view.clone();
        let ready = self.ready_tasks();
        // 1. The overlay, through netd's diff against what the kernel has.
        let agent = self.clone();
        let v = view.clone();
        let (m2, r2) = (me.clone(), ready.clone());
        let overlay = blocking(move || agent.overlay(&v, &m2, underlay, &r2)).await;
        st.overlay_errors.clear();
        match overlay {
            Ok(failed) => {
                for (task, e) in failed {
                    warn!(task.id = ?task, "overlay networking: {e}");
                    if let Some(t) = task {
                        st.overlay_errors.insert(t, e);
                    }
                }
            }
            Err(e) => warn!("overlay networking: {e}"),
        }
        // 2. Each local task: names, DNS server, VIPs.
        let local: Vec<TaskView> = view
            .tasks
            .iter()
            .filter(|t| t.node_id.as_ref() == Some(&me) && ready.contains(&t.id))
            .cloned()
            .collect();
        {
            let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
            names.retain(|t, _| ready.contains(t));
            for t in &local {
                names.insert(t.id.clone(), plan::task_names(&view, t));
            }
        }
        st.dns.retain(|t, _| ready.contains(t));
        st.vips.retain(|t, _| ready.contains(t));
        for t in &local {
            let path = self.netns_path(&t.id);
            if !st.dns.contains_key(&t.id) {
                let source = Arc::new(TaskNames {
                    names: self.names.clone(),
                    task: t.id.clone(),
                });
                match dns::serve_in_netns(&path, source, self.upstreams.clone()).await {
                    Ok(h) => {
                        st.dns.insert(t.id.clone(), h);
                    }
                    Err(e) => warn!(task.id = %t.id, "embedded DNS: {e}"),
                }
            }
            let vips = plan::task_vips(&view, t);
            if st.vips.get(&t.id) != Some(&vips) {
                let (p, v) = (path.clone(), vips.clone());
                match blocking(move || nft::apply_vips(&p, &v)).await {
                    Ok(()) => {
                        st.vips.insert(t.id.clone(), vips);
                    }
                    Err(e) => warn!(task.id = %t.id, "VIP rules: {e}"),
                }
            }
        }
        // 3. The node's published ports and egress NAT.
        let rules = plan::host_rules(&view, &me, &self.gateway_ips(), self.gateway.clone());
        if st.host.as_ref() != Some(&rules) {
            let (r, g) = (rules.clone(), self.gateway.clone());
            let applied = blocking(move || {
                gateway::ensure_bridge(&g)?;
                nft::apply_host(&r).map_err(|e| NetError::Io(e.to_string()))
            })
            .await;
            match applied {
                Ok(()) => st.host = Some(rules),
                Err(e) => warn!("published ports: {e}"),
            }
        }
        debug!(tasks = local.len(), "network reconciled");
        // Namespaces of tasks no longer this node's whose container went without a word
        // (the daemon died between making the namespace and the container, say): after a
        // grace period, so that a task just made is never taken for one.
        let stale: Vec<TaskId> = {
            let mine: BTreeSet<&TaskId> = view
                .tasks
                .iter()
                .filter(|t| t.node_id.as_ref() == Some(&me))
                .map(|t| &t.id)
                .collect();
            ready
                .iter()
                .filter(|t| !mine.contains(t))
                .filter(|t| {
                    std::fs::symlink_metadata(self.netns_path(t))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > STALE_AFTER)
                })
                .cloned()
                .collect()
        };
        drop(st);
        for t in stale {
            warn!(task.id = %t, "removing the network namespace of a task this node no longer has");
            self.detach(&t).await;
        }
    }

    /// Takes the overlay from what the kernel has to what the view asks; returns the ops
    /// that failed, with the task each concerns (if one).
    fn overlay(
        &self,
        view: &NetworkView,
        me: &NodeId,
        underlay: Ipv4Addr,
        ready: &BTreeSet<TaskId>,
    ) -> Result<Vec<(Option<TaskId>, String)>, String> {
        let mtu = crate::underlay_mtu(underlay).unwrap_or(1500);
        let input = plan::node_view(view, me, underlay, mtu, ready);
        let desired = crate::desired(&input);
        let dir = self.netns_dir();
        let resolve: crate::TaskNetns = Arc::new(move |t: &TaskId| {
            let p = dir.join(t.as_str());
            p.exists().then_some(p)
        });
        std::fs::create_dir_all(self.sandbox_dir()).map_err(|e| e.to_string())?;
        let mut nl = KernelNetlink::new(self.sandbox_dir(), resolve).map_err(|e| e.to_string())?;
        let observed = nl.observe().map_err(|e| e.to_string())?;
        let ops = crate::diff(&desired, &observed);
        if !ops.is_empty() {
            debug!(ops = ops.len(), "overlay changes");
        }
        // Which task each veth belongs to, to pin failures on tasks.
        let owners: BTreeMap<String, TaskId> = desired
            .sandboxes
            .values()
            .flat_map(|sb| sb.links.values())
            .filter_map(|l| match l {
                crate::model::Link::Veth(v) => Some((v.name.clone(), v.task.clone())),
                _ => None,
            })
            .collect();
        Ok(crate::apply_all(&mut nl, &ops)
            .into_iter()
            .map(|e| {
                let crate::NetdError::Apply { op, .. } = &e;
                let task = match op.as_ref() {
                    crate::NetOp::CreateVeth { spec, .. } => Some(spec.task.clone()),
                    crate::NetOp::AddAddr { link, .. } => owners.get(link).cloned(),
                    _ => None,
                };
                (task, e.to_string())
            })
            .collect())
    }

    /// The node left its cluster: everything goes, and nothing is made again until it has
    /// an identity again.
    pub async fn leave(self: &Arc<Self>) {
        {
            let mut st = self.state.lock().await;
            *self.me.lock().unwrap_or_else(|p| p.into_inner()) = None;
            st.view = NetworkView::default();
            st.have_view = false;
        }
        self.teardown().await;
    }

    /// Removes everything this node made.
    pub async fn teardown(self: &Arc<Self>) {
        let ready = self.ready_tasks();
        for t in ready {
            self.detach(&t).await;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(rd) = std::fs::read_dir(me.sandbox_dir()) {
                for e in rd.filter_map(Result::ok) {
                    let _ = netns::delete(&e.path());
                }
            }
            let _ = nft::clear_host();
            let _ = gateway::remove_bridge(&me.gateway);
        })
        .await;
        let mut st = self.state.lock().await;
        st.host = None;
        st.dns.clear();
    }
}

/// Runs a kernel-facing call off the async threads; its error, or the worker's failure,
/// as one message.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The task's veth on the egress bridge (interface names are at most 15 bytes).
fn gw_host_if(task: &TaskId) -> String {
    format!("gw-{}", task.as_str().get(..10).unwrap_or(task.as_str()))
}
