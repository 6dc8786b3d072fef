//! An in-process cluster of managers for tests: each manager has its own data directory,
//! certificate from one cluster CA, and real cluster-port gRPC server (Raft, Dispatcher,
//! NodeCa over mutual TLS on 127.0.0.1), so the real Raft transport, TLS and
//! authorisation are exercised. Managers reach each other only through per-link relays
//! ([`relay::Relay`]) that a test cuts and heals to make partitions.
//!
//! Addresses: manager `i` is known to everyone (Raft membership, the store) by its
//! *canonical* address, the port its first server listened on. Each manager has its own
//! [`LinkConnector`], which dials a canonical address through the relay of link
//! (self → peer). After a restart on a new port the relays into that manager are pointed
//! at the new port, so its canonical address stays valid.
//!
//! Bootstrap goes as the daemon's: the first manager initialises Raft alone and proposes
//! `Batch([CreateCluster, CreateNode(self)])`. The others are then added with
//! `add_learner` + `change_membership` directly (not through the role manager, to keep
//! the set-up independent of it), and only then stored as manager nodes, so the role
//! manager finds nothing to do.

pub mod relay;

use openraft::{BasicNode, ChangeMembers, ServerState};
use relay::Relay;
use rswarm_manager::ca::{self, RootCa};
use rswarm_manager::connector::Connector;
use rswarm_manager::manager::{Manager, ManagerConfig};
use rswarm_manager::proposer::Proposer;
use rswarm_manager::slot::{manager_slot, ManagerSlot, ManagerSlotSetter};
use rswarm_manager::store::State;
use rswarm_manager::tls::{self, CertSwitch, NodeCredentials, TlsError};
use rswarm_manager::{ca_server, dispatcher, raft};
use rswarm_proto::model::{
    Cluster as ClusterObject, ClusterId, ClusterSpec, Command, JoinSecrets, ManagerInfo, Meta,
    Node, NodeId, NodeRole, NodeSpec, NodeState, NodeStatus, RaftId, RootCaMaterial,
};
use rswarm_proto::pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub type TestError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult<T = ()> = Result<T, TestError>;

/// Polls `check` until it returns `Ok` or `timeout` passes; the error then names `what`
/// and the last unmet condition `check` reported.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> TestResult<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(
                    format!("timed out after {timeout:?} waiting for {what}: {last}").into(),
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The Raft election timeout upper bound the managers run with.
pub fn election_timeout_max() -> Duration {
    let cfg = raft::config().expect("the manager's raft config is valid");
    Duration::from_millis(cfg.election_timeout_max)
}

/// Runs `body` against a fresh bootstrapped cluster of `n` managers and always shuts the
/// cluster down afterwards, whether `body` returns, fails, panics or overruns `limit`.
pub async fn run<F, Fut>(n: usize, limit: Duration, body: F) -> TestResult
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = TestResult> + Send + 'static,
{
    let cluster = Arc::new(Cluster::start(n).await?);
    let outcome = match cluster.bootstrap().await {
        Err(e) => Ok(Err(format!("bootstrap: {e}").into())),
        Ok(()) => {
            let mut task = tokio::spawn(body(cluster.clone()));
            match tokio::time::timeout(limit, &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    task.abort();
                    Ok(Err(
                        format!("the test did not finish within {limit:?}").into()
                    ))
                }
            }
        }
    };
    cluster.shutdown().await;
    match outcome {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(join.into()),
    }
}

/// Dials managers through the relays of this manager's links.
struct LinkConnector {
    from: usize,
    /// Canonical address → relay of link (from → that manager).
    routes: HashMap<String, String>,
    config: Arc<rustls::ClientConfig>,
}

impl Connector for LinkConnector {
    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, TlsError> {
        // An unknown address would bypass the test network: refuse it loudly.
        let via = self.routes.get(addr).ok_or_else(|| TlsError::ServerName {
            name: format!(
                "(test network) no link from manager {} to {addr}",
                self.from
            ),
        })?;
        tls::connect_lazy(via, tls::MANAGER_SERVER_NAME, self.config.clone())
    }
}

/// One manager's identity and what runs for it.
pub struct Member {
    pub index: usize,
    pub raft_id: RaftId,
    pub node_id: NodeId,
    /// How every other manager knows this one.
    pub addr: String,
    dir: tempfile::TempDir,
    creds: NodeCredentials,
    setter: ManagerSlotSetter,
    slot: ManagerSlot,
    /// The cluster-port server and the port it listens on now.
    server: Mutex<Option<(SocketAddr, JoinHandle<()>)>>,
}

impl Member {
    fn raft_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("raft")
    }
}

pub struct Cluster {
    pub ca: RootCa,
    pub cluster_id: ClusterId,
    pub members: Vec<Member>,
    /// `links[&(a, b)]` carries what manager `a` sends to manager `b` (and the answers).
    links: BTreeMap<(usize, usize), Relay>,
}

impl Cluster {
    /// Starts `n` managers with their servers and links; none is initialised yet.
    async fn start(n: usize) -> TestResult<Cluster> {
        let ca = RootCa::generate()?;
        let cluster_id = ClusterId::from("partition-test-cluster");
        let mut members = Vec::with_capacity(n);
        for index in 0..n {
            let node_id = NodeId(format!("manager-{index}"));
            let (key_pem, csr) = ca::generate_key_and_csr()?;
            let cert_pem = ca.sign_csr(
                &csr,
                &node_id,
                NodeRole::Manager,
                &cluster_id,
                Duration::from_secs(3600),
            )?;
            let creds = NodeCredentials {
                key_pem,
                cert_pem,
                ca_pem: ca.cert_pem().to_owned(),
            };
            let (setter, slot) = manager_slot();
            let (addr, handle) = serve(&creds, slot.clone()).await?;
            members.push(Member {
                index,
                raft_id: index as RaftId + 1,
                node_id,
                addr: addr.to_string(),
                dir: tempfile::tempdir()?,
                creds,
                setter,
                slot,
                server: Mutex::new(Some((addr, handle))),
            });
        }
        let mut links = BTreeMap::new();
        for from in 0..n {
            // Including (i, i), never cut, so that a manager dialling itself also works.
            for to in &members {
                let relay = Relay::start(to.addr.parse()?).await?;
                links.insert((from, to.index), relay);
            }
        }
        let cluster = Cluster {
            ca,
            cluster_id,
            members,
            links,
        };
        for i in 0..n {
            if let Err(e) = cluster.start_manager(i).await {
                cluster.shutdown().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    async fn start_manager(&self, i: usize) -> TestResult<Arc<Manager>> {
        let m = &self.members[i];
        let routes = self
            .members
            .iter()
            .map(|peer| {
                (
                    peer.addr.clone(),
                    self.link(i, peer.index).addr().to_string(),
                )
            })
            .collect();
        let connector = Arc::new(LinkConnector {
            from: i,
            routes,
            config: tls::client_config(&m.creds)?,
        });
        let manager = Manager::start(ManagerConfig {
            dir: m.raft_dir(),
            node_id: m.node_id.clone(),
            raft_id: m.raft_id,
            addr: m.addr.clone(),
            connector,
            image_resolver: None,
        })
        .await?;
        m.setter.set(Some(manager.clone()));
        Ok(manager)
    }

    /// As the daemon's `init`: manager 0 forms the cluster; then every other manager is
    /// added as a learner, all become voters, and all are stored as manager nodes.
    async fn bootstrap(&self) -> TestResult {
        let first = self.manager(0)?;
        first.bootstrap().await?;
        if !first.wait_leader(Duration::from_secs(10)).await {
            return Err("the new cluster elected no leader".into());
        }
        let cluster = ClusterObject {
            id: self.cluster_id.clone(),
            meta: Meta::default(),
            spec: ClusterSpec {
                // No agents heartbeat here: keep the dispatcher from marking managers down
                // (a background write) while a test runs.
                dispatcher_heartbeat_ms: 3_600_000,
                ..ClusterSpec::default()
            },
            root_ca: RootCaMaterial {
                cert_pem: self.ca.cert_pem().to_owned(),
                key_pem: self.ca.key_pem().to_owned(),
            },
            join_secrets: JoinSecrets {
                worker: ca::generate_secret(),
                manager: ca::generate_secret(),
            },
            removed_nodes: BTreeSet::new(),
            secrets_key: rswarm_manager::secrets::generate_key(),
        };
        first
            .proposer
            .propose(Command::Batch(vec![
                Command::CreateCluster(Box::new(cluster)),
                Command::CreateNode(Box::new(self.manager_node(0))),
            ]))
            .await?;
        for m in &self.members[1..] {
            first
                .raft
                .add_learner(m.raft_id, BasicNode::new(&m.addr), true)
                .await?;
        }
        let voters: BTreeSet<RaftId> = self.members.iter().map(|m| m.raft_id).collect();
        first
            .raft
            .change_membership(ChangeMembers::AddVoterIds(voters.clone()), false)
            .await?;
        let others = (1..self.members.len())
            .map(|i| Command::CreateNode(Box::new(self.manager_node(i))))
            .collect();
        first.proposer.propose(Command::Batch(others)).await?;
        wait_for(
            "every manager to see all voters",
            Duration::from_secs(10),
            || {
                for m in &self.members {
                    let mgr = self.manager(m.index).map_err(|e| e.to_string())?;
                    let (have, _) = mgr.members();
                    if have.iter().copied().collect::<BTreeSet<_>>() != voters {
                        return Err(format!("manager {} has voters {have:?}", m.index));
                    }
                }
                Ok(())
            },
        )
        .await?;
        self.wait_converged(Duration::from_secs(10)).await?;
        Ok(())
    }

    /// The store object of manager `i`, as the daemon writes it for itself.
    pub fn manager_node(&self, i: usize) -> Node {
        let m = &self.members[i];
        Node {
            id: m.node_id.clone(),
            meta: Meta::default(),
            spec: NodeSpec {
                desired_role: NodeRole::Manager,
                ..Default::default()
            },
            description: Default::default(),
            status: NodeStatus {
                state: NodeState::Unknown,
                message: String::new(),
                addr: "127.0.0.1".into(),
            },
            role: NodeRole::Manager,
            manager: Some(ManagerInfo {
                raft_id: m.raft_id,
                addr: m.addr.clone(),
            }),
            cluster_addr: m.addr.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The manager now running for member `i`.
    pub fn manager(&self, i: usize) -> TestResult<Arc<Manager>> {
        self.members[i]
            .slot
            .current()
            .ok_or_else(|| format!("manager {i} is not running").into())
    }

    fn running(&self) -> Vec<(usize, Arc<Manager>)> {
        self.members
            .iter()
            .filter_map(|m| m.slot.current().map(|mgr| (m.index, mgr)))
            .collect()
    }

    pub fn index_of(&self, raft_id: RaftId) -> Option<usize> {
        self.members.iter().position(|m| m.raft_id == raft_id)
    }

    fn link(&self, from: usize, to: usize) -> &Relay {
        &self.links[&(from, to)]
    }

    /// Cuts every link between `a` and `b`, both directions, so that the managers on
    /// either side no longer hear each other.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.link(x, y).cut();
                self.link(y, x).cut();
            }
        }
    }

    /// Cuts manager `i` off from every other manager.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.len()).filter(|&j| j != i).collect();
        self.partition(&[i], &others);
    }

    pub fn heal_all(&self) {
        for relay in self.links.values() {
            relay.heal();
        }
    }

    /// Waits until every manager in `group` names the same leader, that leader is in
    /// `group`, and it is in state Leader. Returns its index.
    pub async fn wait_leader_among(&self, group: &[usize], timeout: Duration) -> TestResult<usize> {
        wait_for(
            &format!("managers {group:?} to agree on a leader among them"),
            timeout,
            || {
                let mut leader = None;
                for &i in group {
                    let m = self.manager(i).map_err(|e| e.to_string())?;
                    let metrics = m.raft.metrics().borrow().clone();
                    let Some(l) = metrics.current_leader else {
                        return Err(format!("manager {i} knows no leader"));
                    };
                    if leader.is_some_and(|x| x != l) {
                        return Err(format!("leaders disagree: {leader:?} vs {l} (manager {i})"));
                    }
                    leader = Some(l);
                }
                let l = leader.ok_or("empty group")?;
                let li = self
                    .index_of(l)
                    .filter(|li| group.contains(li))
                    .ok_or_else(|| format!("the leader, raft id {l}, is not in {group:?}"))?;
                let state = self
                    .manager(li)
                    .map_err(|e| e.to_string())?
                    .raft
                    .metrics()
                    .borrow()
                    .state;
                if state != ServerState::Leader {
                    return Err(format!("manager {li} is named leader but is {state:?}"));
                }
                Ok(li)
            },
        )
        .await
    }

    /// Waits until every running manager has applied the same log index and holds the same
    /// store, and returns that store.
    pub async fn wait_converged(&self, timeout: Duration) -> TestResult<State> {
        wait_for("the stores to converge", timeout, || {
            let running = self.running();
            let (first, rest) = running.split_first().ok_or("no manager is running")?;
            let applied = |m: &Manager| m.raft.metrics().borrow().last_applied.map(|l| l.index);
            let want_applied = applied(&first.1);
            let want = first.1.store.view(|s| s.clone());
            for (i, m) in rest {
                if applied(m) != want_applied {
                    return Err(format!(
                        "manager {} applied up to {:?}, manager {i} up to {:?}",
                        first.0,
                        want_applied,
                        applied(m)
                    ));
                }
                if m.store.view(|s| s != &want) {
                    return Err(format!(
                        "store of manager {i} differs from manager {}'s",
                        first.0
                    ));
                }
            }
            Ok(want)
        })
        .await
    }

    /// Stops manager `i` as a crash would look to its peers: its manager shuts down, its
    /// server stops, and its connections close.
    pub async fn stop(&self, i: usize) -> TestResult {
        let m = &self.members[i];
        let mgr = self.manager(i)?;
        m.setter.set(None);
        shutdown_manager(&mgr).await;
        if let Some((_, handle)) = m.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            handle.abort();
        }
        for relay in self
            .links
            .iter()
            .filter(|((_, to), _)| *to == i)
            .map(|(_, r)| r)
        {
            // Close the connections into the stopped server, and refuse new ones.
            relay.retarget(None);
        }
        Ok(())
    }

    /// Starts manager `i` again on its data directory, with the same Raft id and a new
    /// server on a new port; the links into it are pointed there.
    pub async fn restart(&self, i: usize) -> TestResult<Arc<Manager>> {
        let m = &self.members[i];
        let mgr = self.start_manager(i).await?;
        let (addr, handle) = serve(&m.creds, m.slot.clone()).await?;
        *m.server.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr, handle));
        for relay in self
            .links
            .iter()
            .filter(|((_, to), _)| *to == i)
            .map(|(_, r)| r)
        {
            relay.retarget(Some(addr));
        }
        Ok(mgr)
    }

    async fn shutdown(&self) {
        for m in &self.members {
            if let Some(mgr) = m.setter.current() {
                m.setter.set(None);
                shutdown_manager(&mgr).await;
            }
            if let Some((_, handle)) = m.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
                handle.abort();
            }
        }
    }
}

impl Drop for Member {
    /// The server stops even when the cluster is dropped without [`Cluster::shutdown`] (a
    /// failed start); relays stop as they drop, and the runtime ending takes Raft down.
    fn drop(&mut self) {
        if let Some((_, handle)) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            handle.abort();
        }
    }
}

async fn shutdown_manager(m: &Manager) {
    // Bounded, so a stuck Raft cannot hang the clean-up.
    let _ = tokio::time::timeout(Duration::from_secs(10), m.shutdown()).await;
}

/// The cluster port as the daemon serves it: Raft, Dispatcher and NodeCa over mutual TLS.
async fn serve(
    creds: &NodeCredentials,
    slot: ManagerSlot,
) -> TestResult<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let switch = Arc::new(CertSwitch::new(creds)?);
    let config = tls::server_config(switch, &creds.ca_pem)?;
    let handle = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::raft_server::RaftServer::new(
                raft::server::RaftService::new(slot.clone()),
            ))
            .add_service(pb::dispatcher_server::DispatcherServer::new(
                dispatcher::DispatcherService::new(slot.clone()),
            ))
            .add_service(pb::node_ca_server::NodeCaServer::new(
                ca_server::NodeCaService::new(slot),
            ))
            .serve_with_incoming(tls::incoming(listener, config))
            .await;
    });
    Ok((addr, handle))
}
