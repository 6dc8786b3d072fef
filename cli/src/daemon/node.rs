//! The node's life in the cluster: init, join, leave, resuming after a restart, and the
//! role transitions and certificate renewals the leader's session messages call for.
//! One lock serialises all of these, so a leave never races a promotion.

use super::config::{advertise_for, parse_addr, DaemonConfig};
use super::persist::{DataDir, NodeFile, PersistError};
use rswarm_manager::ca::{self, CertInfo, JoinToken, RootCa};
use rswarm_manager::connector::{Connector, TlsConnector};
use rswarm_manager::ids::{new_cluster_id, new_node_id, new_raft_id, now_ms};
use rswarm_manager::manager::{Manager, ManagerConfig};
use rswarm_manager::proposer::Proposer;
use rswarm_manager::slot::{manager_slot, ManagerSlot, ManagerSlotSetter};
use rswarm_manager::tls::{self, CertSwitch, NodeCredentials};
use rswarm_manager::{ca_server, dispatcher, raft};
use rswarm_proto::model::{
    Cluster, ClusterSpec, Command, JoinSecrets, ManagerInfo, Meta, Node, NodeRole, NodeSpec,
    NodeState, NodeStatus, RootCaMaterial,
};
use rswarm_proto::pb;
use rswarm_worker::agent::{self, AgentConfig, ManagerList, SessionView};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("this node is already part of a swarm: leave it first (rswarm leave)")]
    AlreadyInCluster,
    #[error("this node is not part of a swarm")]
    NotInCluster,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::AlreadyInCluster
            | NodeError::NotInCluster
            | NodeError::FailedPrecondition(_) => Status::failed_precondition(msg),
            NodeError::InvalidArgument(_) => Status::invalid_argument(msg),
            NodeError::Unavailable(_) => Status::unavailable(msg),
            NodeError::PermissionDenied(_) => Status::permission_denied(msg),
            NodeError::Internal(_) => Status::internal(msg),
        }
    }
}

impl From<PersistError> for NodeError {
    fn from(e: PersistError) -> Self {
        NodeError::Internal(format!("data dir: {e}"))
    }
}

impl From<ca::CaError> for NodeError {
    fn from(e: ca::CaError) -> Self {
        NodeError::Internal(format!("certificates: {e}"))
    }
}

impl From<tls::TlsError> for NodeError {
    fn from(e: tls::TlsError) -> Self {
        NodeError::Internal(format!("tls: {e}"))
    }
}

/// Everything that runs while the node is in a cluster.
struct Running {
    switch: Arc<CertSwitch>,
    connector: Arc<TlsConnector>,
    managers: ManagerList,
    server: JoinHandle<()>,
    agent: Option<JoinHandle<()>>,
    supervisor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    node: Option<NodeFile>,
    creds: Option<NodeCredentials>,
    running: Option<Running>,
}

pub struct NodeRuntime {
    cfg: DaemonConfig,
    /// Runs this node's tasks; `None` without a container runtime.
    tasks: Option<Arc<rswarm_worker::tasks::TaskManager>>,
    /// The node's networking; `None` without a runtime or with `--no-networking`.
    network: Option<Arc<rswarm_netd::agent::NetAgent>>,
    data: DataDir,
    slot: ManagerSlot,
    slot_setter: ManagerSlotSetter,
    inner: Mutex<Inner>,
}

/// Adapts the TLS connector to what the agent needs.
struct AgentChannels(Arc<TlsConnector>);

impl agent::Channels for AgentChannels {
    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        self.0.channel(addr).map_err(|e| e.to_string())
    }
}

fn resolve_addrs(
    cfg: &DaemonConfig,
    listen: &str,
    advertise: &str,
) -> Result<(SocketAddr, SocketAddr), NodeError> {
    let listen = if listen.is_empty() {
        cfg.listen_addr
    } else {
        parse_addr("--listen-addr", listen, cfg.listen_addr.port())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?
    };
    let given = if advertise.is_empty() {
        cfg.advertise_addr
    } else {
        Some(
            parse_addr("--advertise-addr", advertise, listen.port())
                .map_err(|e| NodeError::InvalidArgument(e.to_string()))?,
        )
    };
    let adv = advertise_for(listen, given).ok_or_else(|| {
        NodeError::InvalidArgument(
            "could not choose an IP address to advertise: specify one with --advertise-addr".into(),
        )
    })?;
    Ok((listen, adv))
}

/// Why a join could not connect, in one line: a certificate the token does not vouch for
/// is not an unreachable manager.
fn join_connect_error(remote: &str, e: &tls::TlsError) -> NodeError {
    let mut chain = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        cur = err.source();
    }
    let text = chain.join(": ");
    if text.contains("certificate")
        || text.contains("UnknownIssuer")
        || text.contains("BadSignature")
    {
        NodeError::PermissionDenied(format!(
            "the manager at {remote} is not of the cluster this join token is for (its CA does not match the token)"
        ))
    } else {
        let cause = chain.last().cloned().unwrap_or_default();
        NodeError::Unavailable(format!("could not reach a manager at {remote}: {cause}"))
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Unavailable(format!("listen on {addr}: {e}")))
}

impl NodeRuntime {
    pub fn new(
        cfg: DaemonConfig,
        executor: Option<Arc<dyn rswarm_worker::exec::Executor>>,
        network: Option<Arc<rswarm_netd::agent::NetAgent>>,
    ) -> Self {
        let (slot_setter, slot) = manager_slot();
        Self {
            network,
            tasks: executor.map(rswarm_worker::tasks::TaskManager::new),
            data: DataDir::new(cfg.data_dir.clone()),
            cfg,
            slot,
            slot_setter,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn slot(&self) -> &ManagerSlot {
        &self.slot
    }

    /// What a metrics scrape reports (see `metrics`).
    pub async fn metrics(&self) -> super::metrics::Snapshot {
        let (node_id, cluster_id) = {
            let inner = self.inner.lock().await;
            inner
                .node
                .as_ref()
                .map(|n| (n.node_id.clone(), n.cluster_id.clone()))
                .unwrap_or_default()
        };
        let store = self.slot.current().map(|m| {
            let leader = m.is_leader();
            m.store.view(|s| {
                let mut nodes: std::collections::BTreeMap<&'static str, i64> = Default::default();
                for n in s.nodes.values() {
                    *nodes.entry(n.status.state.as_str()).or_default() += 1;
                }
                let mut tasks: std::collections::BTreeMap<&'static str, i64> = Default::default();
                for t in s.tasks.values() {
                    *tasks.entry(t.status.state.as_str()).or_default() += 1;
                }
                let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                super::metrics::StoreCounts {
                    leader,
                    nodes_by_state: nodes.into_iter().collect(),
                    tasks_by_state: tasks.into_iter().collect(),
                    services: count(s.services.len()),
                    networks: count(s.networks.len()),
                    secrets: count(s.secrets.len()),
                    configs: count(s.configs.len()),
                }
            })
        });
        super::metrics::Snapshot {
            node_id,
            cluster_id,
            manager: store.is_some(),
            store,
        }
    }

    /// Takes the node's place in its cluster again after a restart, without re-joining.
    pub async fn resume(self: &Arc<Self>) -> Result<(), NodeError> {
        let Some((node, creds)) = self.data.load()? else {
            return Ok(());
        };
        let listen: SocketAddr = node.listen_addr.parse().map_err(|_| {
            NodeError::Internal(format!("bad listen address in state: {}", node.listen_addr))
        })?;
        let listener = bind(listen).await?;
        let mut inner = self.inner.lock().await;
        self.start_services(&mut inner, node, creds, listener)
            .await?;
        self.start_agent(&mut inner);
        info!("resumed the node's place in its cluster");
        Ok(())
    }

    pub async fn info(&self) -> pb::InfoResponse {
        let inner = self.inner.lock().await;
        match &inner.node {
            Some(n) => pb::InfoResponse {
                node_id: n.node_id.clone(),
                cluster_id: n.cluster_id.clone(),
                role: n.role.clone(),
                hostname: self.cfg.hostname.clone(),
                advertise_addr: n.advertise_addr.clone(),
            },
            None => pb::InfoResponse {
                hostname: self.cfg.hostname.clone(),
                ..Default::default()
            },
        }
    }

    /// Starts the cluster port and, for a manager, Raft. The agent starts separately, once
    /// the store knows this node.
    async fn start_services(
        self: &Arc<Self>,
        inner: &mut Inner,
        node: NodeFile,
        creds: NodeCredentials,
        listener: TcpListener,
    ) -> Result<(), NodeError> {
        let switch = Arc::new(CertSwitch::new(&creds)?);
        let server_cfg = tls::server_config(switch.clone(), &creds.ca_pem)?;
        let connector = Arc::new(TlsConnector::new(&creds)?);
        let slot = self.slot.clone();
        let tasks = self.tasks.clone();
        let server = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(
                    pb::raft_server::RaftServer::new(raft::server::RaftService::new(slot.clone()))
                        .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES),
                )
                .add_service(
                    pb::dispatcher_server::DispatcherServer::new(
                        dispatcher::DispatcherService::new(slot.clone()),
                    )
                    .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES),
                )
                .add_service(
                    pb::node_ca_server::NodeCaServer::new(ca_server::NodeCaService::new(slot))
                        .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES),
                )
                .add_service(
                    pb::node_agent_server::NodeAgentServer::new(
                        super::node_agent::NodeAgentService::new(tasks),
                    )
                    .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming(tls::incoming(listener, server_cfg))
                .await;
            if let Err(e) = r {
                error!("cluster port: {e}");
            }
        });
        let managers: ManagerList = Arc::new(StdMutex::new(node.managers.clone()));
        inner.running = Some(Running {
            switch,
            connector: connector.clone(),
            managers,
            server,
            agent: None,
            supervisor: None,
        });
        if node.role == NodeRole::Manager.as_str() {
            if let Err(e) = self.start_manager(&node, connector).await {
                self.stop(inner).await;
                return Err(e);
            }
        }
        inner.node = Some(node);
        inner.creds = Some(creds);
        Ok(())
    }

    async fn start_manager(
        &self,
        node: &NodeFile,
        connector: Arc<TlsConnector>,
    ) -> Result<Arc<Manager>, NodeError> {
        let m = Manager::start(ManagerConfig {
            dir: self.data.raft_dir(),
            node_id: node.node_id.as_str().into(),
            raft_id: node.raft_id,
            addr: node.advertise_addr.clone(),
            connector,
            image_resolver: Some(Arc::new(super::images::RegistryResolver::new(
                self.cfg.insecure_registries.clone(),
            ))),
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?;
        self.slot_setter.set(Some(m.clone()));
        Ok(m)
    }

    async fn stop_manager(&self) {
        if let Some(m) = self.slot_setter.current() {
            self.slot_setter.set(None);
            m.shutdown().await;
        }
    }

    fn start_agent(self: &Arc<Self>, inner: &mut Inner) {
        let (Some(node), Some(running)) = (&inner.node, inner.running.as_mut()) else {
            return;
        };
        let (view_tx, view_rx) = watch::channel(None);
        let cfg = AgentConfig {
            description: rswarm_worker::describe::describe(
                &self.cfg.hostname,
                self.tasks.is_some(),
            ),
            advertise_addr: node.advertise_addr.clone(),
            tasks: self.tasks.clone(),
            network: self.network.clone().map(|n| {
                Arc::new(super::netbridge::NetBridge(n))
                    as Arc<dyn rswarm_worker::exec::TaskNetwork>
            }),
        };
        if let Some(net) = &self.network {
            let ip = node
                .advertise_addr
                .parse::<SocketAddr>()
                .ok()
                .and_then(|a| match a.ip() {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                });
            match ip {
                Some(ip) => net.set_identity(rswarm_proto::model::NodeId(node.node_id.clone()), ip),
                None => warn!(
                    "the node's address {} is not IPv4: overlay networking is off",
                    node.advertise_addr
                ),
            }
        }
        let channels = Arc::new(AgentChannels(running.connector.clone()));
        running.agent = Some(tokio::spawn(agent::run(
            cfg,
            channels,
            running.managers.clone(),
            view_tx,
        )));
        let me = self.clone();
        running.supervisor = Some(tokio::spawn(async move { me.supervise(view_rx).await }));
    }

    async fn stop(&self, inner: &mut Inner) {
        if let Some(r) = inner.running.take() {
            if let Some(a) = r.agent {
                a.abort();
            }
            if let Some(s) = r.supervisor {
                s.abort();
            }
            r.server.abort();
        }
        self.stop_manager().await;
    }

    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        self.stop(&mut inner).await;
    }

    pub async fn init(
        self: &Arc<Self>,
        req: pb::InitRequest,
    ) -> Result<pb::InitResponse, NodeError> {
        let mut inner = self.inner.lock().await;
        if inner.node.is_some() {
            if req.force_new_cluster {
                return self.force_new_cluster(&mut inner).await;
            }
            return Err(NodeError::AlreadyInCluster);
        }
        if req.force_new_cluster {
            return Err(NodeError::FailedPrecondition(
                "--force-new-cluster needs a manager of an existing cluster: this node is in none"
                    .into(),
            ));
        }
        let (listen, advertise) = resolve_addrs(&self.cfg, &req.listen_addr, &req.advertise_addr)?;
        let mut spec = ClusterSpec::default();
        if req.dispatcher_heartbeat_ms > 0 {
            spec.dispatcher_heartbeat_ms = req.dispatcher_heartbeat_ms;
        }
        if req.cert_expiry_secs > 0 {
            if req.cert_expiry_secs < 3600 {
                return Err(NodeError::InvalidArgument(
                    "--cert-expiry must be at least 1h".into(),
                ));
            }
            spec.cert_expiry_secs = req.cert_expiry_secs;
        }
        let listener = bind(listen).await?;

        let root = RootCa::generate()?;
        let cluster_id = new_cluster_id();
        let node_id = new_node_id();
        let raft_id = new_raft_id();
        let (key_pem, csr_pem) = ca::generate_key_and_csr()?;
        let cert_pem = root.sign_csr(
            &csr_pem,
            &node_id,
            NodeRole::Manager,
            &cluster_id,
            Duration::from_secs(spec.cert_expiry_secs),
        )?;
        let creds = NodeCredentials {
            key_pem,
            cert_pem,
            ca_pem: root.cert_pem().to_owned(),
        };
        let node_file = NodeFile {
            node_id: node_id.to_string(),
            cluster_id: cluster_id.to_string(),
            role: NodeRole::Manager.as_str().into(),
            raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            managers: vec![advertise.to_string()],
        };
        // Raft data left by an earlier cluster must not leak into this one.
        self.data.wipe()?;
        self.start_services(&mut inner, node_file.clone(), creds.clone(), listener)
            .await?;
        let result = self.bootstrap(&node_file, &root, spec, &cluster_id).await;
        if let Err(e) = result {
            self.stop(&mut inner).await;
            inner.node = None;
            inner.creds = None;
            let _ = self.data.wipe();
            return Err(e);
        }
        self.data.save_credentials(&creds)?;
        self.data.save_node(&node_file)?;
        self.start_agent(&mut inner);
        info!(node.id = %node_id, cluster.id = %cluster_id, "initialised a new cluster");
        Ok(pb::InitResponse {
            node_id: node_id.to_string(),
            cluster_id: cluster_id.to_string(),
        })
    }

    /// Recovers from lost quorum on this surviving manager, keeping the state: a new
    /// single-voter Raft whose first entry restores the store as this manager last applied
    /// it. The other managers are recorded as workers; they can be promoted again.
    async fn force_new_cluster(
        self: &Arc<Self>,
        inner: &mut Inner,
    ) -> Result<pb::InitResponse, NodeError> {
        let m = self.slot.current().ok_or_else(|| {
            NodeError::FailedPrecondition("--force-new-cluster must run on a manager".into())
        })?;
        let state = m.store.view(Clone::clone);
        let Some(mut cluster) = state.cluster else {
            return Err(NodeError::FailedPrecondition(
                "this manager holds no cluster state to recover".into(),
            ));
        };
        let node = inner.node.clone().ok_or(NodeError::NotInCluster)?;
        let connector = inner
            .running
            .as_ref()
            .map(|r| r.connector.clone())
            .ok_or(NodeError::NotInCluster)?;
        warn!("forcing a new cluster from this manager's state");
        self.slot_setter.set(None);
        m.shutdown().await;
        drop(m);

        let raft_id = new_raft_id();
        let now = now_ms();
        let mut nodes: Vec<Node> = state.nodes.into_values().collect();
        for n in &mut nodes {
            if n.id.as_str() == node.node_id {
                n.role = NodeRole::Manager;
                n.spec.desired_role = NodeRole::Manager;
                n.manager = Some(ManagerInfo {
                    raft_id,
                    addr: node.advertise_addr.clone(),
                });
            } else {
                // Nobody has heard from the others in this new cluster yet.
                n.status.state = NodeState::Unknown;
            }
            if n.id.as_str() != node.node_id
                && (n.manager.is_some() || n.spec.desired_role == NodeRole::Manager)
            {
                n.role = NodeRole::Worker;
                n.spec.desired_role = NodeRole::Worker;
                n.manager = None;
            }
            n.meta.updated_at = now;
        }
        cluster.meta.updated_at = now;

        self.data.remove_dir(&self.data.raft_dir())?;
        let mut node_file = node.clone();
        node_file.raft_id = raft_id;
        node_file.managers = vec![node.advertise_addr.clone()];
        self.data.save_node(&node_file)?;
        let m = self.start_manager(&node_file, connector).await?;
        m.bootstrap()
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        if !m.wait_leader(Duration::from_secs(15)).await {
            return Err(NodeError::Internal(
                "the new cluster elected no leader".into(),
            ));
        }
        m.proposer
            .propose(Command::Restore {
                cluster: Box::new(cluster.clone()),
                nodes,
                services: state.services.into_values().collect(),
                tasks: state.tasks.into_values().collect(),
                networks: state.networks.into_values().collect(),
                secrets: state.secrets.into_values().collect(),
                configs: state.configs.into_values().collect(),
            })
            .await
            .map_err(|e| NodeError::Internal(format!("restore the state: {e}")))?;
        if let Some(r) = inner.running.as_ref() {
            *r.managers.lock().unwrap_or_else(|p| p.into_inner()) = node_file.managers.clone();
        }
        inner.node = Some(node_file);
        info!("new cluster forced from this manager's state");
        Ok(pb::InitResponse {
            node_id: node.node_id,
            cluster_id: cluster.id.to_string(),
        })
    }

    async fn bootstrap(
        &self,
        node: &NodeFile,
        root: &RootCa,
        spec: ClusterSpec,
        cluster_id: &rswarm_proto::model::ClusterId,
    ) -> Result<(), NodeError> {
        let m = self
            .slot
            .current()
            .ok_or_else(|| NodeError::Internal("manager did not start".into()))?;
        m.bootstrap()
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        if !m.wait_leader(Duration::from_secs(15)).await {
            return Err(NodeError::Internal(
                "the new cluster elected no leader".into(),
            ));
        }
        let now = now_ms();
        let meta = Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        };
        let cluster = Cluster {
            id: cluster_id.clone(),
            meta: meta.clone(),
            spec,
            root_ca: RootCaMaterial {
                cert_pem: root.cert_pem().to_owned(),
                key_pem: root.key_pem().to_owned(),
            },
            join_secrets: JoinSecrets {
                worker: ca::generate_secret(),
                manager: ca::generate_secret(),
            },
            removed_nodes: Default::default(),
            secrets_key: rswarm_manager::secrets::generate_key(),
        };
        let ip = node
            .advertise_addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        let me = Node {
            id: node.node_id.as_str().into(),
            meta,
            spec: NodeSpec {
                desired_role: NodeRole::Manager,
                ..Default::default()
            },
            description: rswarm_manager::control::description_from_pb(
                rswarm_worker::describe::describe(&self.cfg.hostname, self.tasks.is_some()),
            ),
            status: NodeStatus {
                state: NodeState::Unknown,
                message: String::new(),
                addr: ip,
            },
            role: NodeRole::Manager,
            manager: Some(ManagerInfo {
                raft_id: node.raft_id,
                addr: node.advertise_addr.clone(),
            }),
            cluster_addr: node.advertise_addr.clone(),
        };
        m.proposer
            .propose(Command::Batch(vec![
                Command::CreateCluster(Box::new(cluster)),
                Command::CreateNode(Box::new(me)),
            ]))
            .await
            .map_err(|e| NodeError::Internal(format!("create the cluster: {e}")))?;
        Ok(())
    }

    pub async fn join(
        self: &Arc<Self>,
        req: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, NodeError> {
        let mut inner = self.inner.lock().await;
        if inner.node.is_some() {
            return Err(NodeError::AlreadyInCluster);
        }
        let token = JoinToken::parse(req.token.trim())
            .map_err(|_| NodeError::InvalidArgument("invalid join token".into()))?;
        let (listen, advertise) = resolve_addrs(&self.cfg, &req.listen_addr, &req.advertise_addr)?;
        let remote = req.remote_addr.trim().to_owned();
        if remote.is_empty() {
            return Err(NodeError::InvalidArgument(
                "the address of a manager is required (HOST:PORT)".into(),
            ));
        }
        let remote = if remote.contains(':') {
            remote
        } else {
            format!("{remote}:2377")
        };
        let listener = bind(listen).await?;

        let (key_pem, csr_pem) = ca::generate_key_and_csr()?;
        let (join_cfg, verified_ca) = tls::join_client_config(&token)?;
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            tls::connect(&remote, tls::MANAGER_SERVER_NAME, join_cfg),
        )
        .await
        .map_err(|_| {
            NodeError::Unavailable(format!("could not reach a manager at {remote}: timed out"))
        })?
        .map_err(|e| join_connect_error(&remote, &e))?;
        let mut client = pb::node_ca_client::NodeCaClient::new(channel)
            .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(pb::JoinClusterRequest {
            token: req.token.trim().to_owned(),
            csr_pem,
            description: Some(rswarm_worker::describe::describe(
                &self.cfg.hostname,
                self.tasks.is_some(),
            )),
            advertise_addr: advertise.to_string(),
        });
        request.set_timeout(Duration::from_secs(30));
        let resp = client.join(request).await.map_err(|s| match s.code() {
            tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                NodeError::PermissionDenied(s.message().to_owned())
            }
            _ => NodeError::Unavailable(format!("join through {remote}: {}", s.message())),
        })?;
        let resp = resp.into_inner();
        // Trust the CA the TLS handshake proved to be the one the token names, not
        // whatever the response carries.
        let ca_pem = match verified_ca.der() {
            Some(der) if token.matches_ca(&der) => ca::cert_der_to_pem(&der),
            _ => {
                return Err(NodeError::PermissionDenied(
                    "the manager's CA does not match the join token".into(),
                ))
            }
        };
        let role = NodeRole::parse(&resp.role).unwrap_or(NodeRole::Worker);
        let mut managers: Vec<String> = resp.managers.iter().map(|p| p.addr.clone()).collect();
        if managers.is_empty() {
            managers.push(remote.clone());
        }
        let node_file = NodeFile {
            node_id: resp.node_id.clone(),
            cluster_id: resp.cluster_id.clone(),
            role: role.as_str().into(),
            raft_id: resp.raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            managers,
        };
        let creds = NodeCredentials {
            key_pem,
            cert_pem: resp.cert_pem,
            ca_pem,
        };
        self.data.wipe()?;
        self.data.save_credentials(&creds)?;
        self.data.save_node(&node_file)?;
        self.start_services(&mut inner, node_file, creds, listener)
            .await?;
        self.start_agent(&mut inner);
        drop(inner);
        if role == NodeRole::Manager {
            // As Swarm's, a manager join returns once the node votes in Raft.
            self.wait_voter(resp.raft_id, Duration::from_secs(30))
                .await?;
        }
        info!(node.id = %resp.node_id, role = role.as_str(), "joined the cluster");
        Ok(pb::JoinResponse {
            node_id: resp.node_id,
            role: role.as_str().into(),
        })
    }

    /// Waits until this node's Raft sees itself among the voters.
    async fn wait_voter(&self, raft_id: u64, timeout: Duration) -> Result<(), NodeError> {
        let m = self
            .slot
            .current()
            .ok_or_else(|| NodeError::Internal("the manager did not start".into()))?;
        m.raft
            .wait(Some(timeout))
            .metrics(
                |x| {
                    x.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == raft_id)
                },
                "become a raft voter",
            )
            .await
            .map(|_| ())
            .map_err(|e| NodeError::Unavailable(format!("joined, but not yet a raft voter: {e}")))
    }

    pub async fn leave(self: &Arc<Self>, force: bool) -> Result<(), NodeError> {
        let mut inner = self.inner.lock().await;
        let Some(node) = inner.node.clone() else {
            return Err(NodeError::NotInCluster);
        };
        if let Some(m) = self.slot.current() {
            let (voters, _) = m.members();
            if !force {
                let mut msg = String::from("you are attempting to leave the swarm on a node that is participating as a manager. ");
                if voters.len() <= 1 {
                    msg.push_str(
                        "Removing the last manager erases all current state of the swarm. ",
                    );
                } else {
                    let reachable = m.store.view(|s| {
                        s.nodes
                            .values()
                            .filter(|n| n.manager.is_some() && n.status.state == NodeState::Ready)
                            .count()
                    });
                    let quorum = voters.len() / 2 + 1;
                    if reachable.saturating_sub(1) < quorum {
                        msg.push_str(&format!(
                            "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm will be inaccessible. ",
                            reachable.saturating_sub(1),
                            voters.len()
                        ));
                    }
                }
                msg.push_str(
                    "Demote it first (rswarm node demote), or use --force to leave anyway.",
                );
                return Err(NodeError::FailedPrecondition(msg));
            }
            if voters.len() > 1 {
                // Leave Raft cleanly if the others can still commit that.
                let req = pb::UpdateNodeRequest {
                    node: node.node_id.clone(),
                    desired_role: "worker".into(),
                    ..Default::default()
                };
                if rswarm_manager::control::update_node(&m, req).await.is_ok() {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while tokio::time::Instant::now() < deadline
                        && m.members().0.contains(&m.raft_id)
                    {
                        let mut metrics = m.raft.metrics();
                        let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed())
                            .await;
                    }
                }
            }
        }
        self.stop(&mut inner).await;
        // As Swarm's: a node that leaves keeps none of the cluster's tasks or networking.
        if let Some(tm) = &self.tasks {
            tm.set_all(Vec::new()).await;
        }
        if let Some(net) = &self.network {
            net.leave().await;
        }
        inner.node = None;
        inner.creds = None;
        self.data.wipe()?;
        info!("left the cluster");
        Ok(())
    }

    /// Follows what the leader says of this node: role changes and the managers' addresses;
    /// and renews the certificate at a random point between 50% and 80% of its life.
    async fn supervise(self: Arc<Self>, mut view: watch::Receiver<Option<SessionView>>) {
        let mut renew_at = self.next_renewal().await;
        loop {
            let current = view.borrow_and_update().clone();
            if let Some(v) = current {
                if let Err(e) = self.reconcile_role(&v).await {
                    warn!("role change: {e}");
                }
            }
            let sleep = renew_at
                .map(|t| {
                    t.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                r = view.changed() => if r.is_err() { return; },
                _ = tokio::time::sleep(sleep.min(Duration::from_secs(2))) => {
                    if renew_at.is_some_and(|t| t <= SystemTime::now()) {
                        let role = { self.inner.lock().await.node.as_ref().map(|n| n.role.clone()) };
                        match self.renew(role.as_deref().and_then(NodeRole::parse).unwrap_or_default()).await {
                            Ok(()) => info!("certificate renewed"),
                            Err(e) => warn!("certificate renewal: {e}"),
                        }
                        renew_at = self.next_renewal().await;
                    }
                }
            }
        }
    }

    async fn next_renewal(&self) -> Option<SystemTime> {
        let inner = self.inner.lock().await;
        let creds = inner.creds.as_ref()?;
        let info: CertInfo = ca::parse_cert_pem(&creds.cert_pem).ok()?;
        let delay = ca::renewal_delay(
            info.not_before,
            info.not_after,
            SystemTime::now(),
            &mut rand::rng(),
        );
        Some(SystemTime::now() + delay)
    }

    /// Gets a new certificate; `want` is the role it must carry for the change at hand.
    async fn renew(&self, want: NodeRole) -> Result<(), NodeError> {
        let mut inner = self.inner.lock().await;
        let (connector, managers, switch) = match &inner.running {
            Some(r) => (
                r.connector.clone(),
                r.managers.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                r.switch.clone(),
            ),
            None => return Err(NodeError::NotInCluster),
        };
        let (key_pem, csr_pem) = ca::generate_key_and_csr()?;
        let mut last = String::from("no manager known");
        for addr in &managers {
            let channel = match connector.channel(addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut req = tonic::Request::new(pb::RenewRequest {
                csr_pem: csr_pem.clone(),
            });
            req.set_timeout(Duration::from_secs(10));
            match pb::node_ca_client::NodeCaClient::new(channel)
                .renew(req)
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    if NodeRole::parse(&r.role) != Some(want) {
                        last = format!(
                            "{addr} issued a {} certificate, {} needed",
                            r.role,
                            want.as_str()
                        );
                        continue;
                    }
                    let creds = NodeCredentials {
                        key_pem: key_pem.clone(),
                        cert_pem: r.cert_pem,
                        ca_pem: r.ca_cert_pem,
                    };
                    self.data.save_credentials(&creds)?;
                    switch.set(&creds)?;
                    connector.update(&creds)?;
                    if let Some(n) = inner.node.as_mut() {
                        n.role = want.as_str().into();
                        self.data.save_node(n)?;
                    }
                    inner.creds = Some(creds);
                    return Ok(());
                }
                Err(s) => last = format!("{addr}: {}", s.message()),
            }
        }
        Err(NodeError::Unavailable(format!(
            "renew the certificate: {last}"
        )))
    }

    /// Starts or stops this node's manager as the store's roles say.
    async fn reconcile_role(&self, v: &SessionView) -> Result<(), NodeError> {
        // Remember the managers for the next restart.
        {
            let mut inner = self.inner.lock().await;
            let addrs: Vec<String> = v.managers.iter().map(|p| p.addr.clone()).collect();
            if let Some(n) = inner.node.as_mut() {
                if !addrs.is_empty() && n.managers != addrs {
                    n.managers = addrs;
                    self.data.save_node(n)?;
                }
            }
        }
        // The store names a Raft id while the node is, or is becoming, a Raft member; the
        // role manager clears it only once the node has left Raft. Stopping earlier would
        // wipe the log of a node that still votes.
        let want_manager = v.raft_id != 0;
        let running = self.slot.current();
        match (want_manager, running) {
            (true, Some(m)) if m.raft_id == v.raft_id => Ok(()),
            (true, existing) => {
                info!(raft.id = v.raft_id, "becoming a manager");
                if let Some(m) = existing {
                    self.slot_setter.set(None);
                    m.shutdown().await;
                }
                let cert_role = {
                    let inner = self.inner.lock().await;
                    inner
                        .node
                        .as_ref()
                        .map(|n| n.role.clone())
                        .unwrap_or_default()
                };
                if cert_role != "manager" {
                    self.renew(NodeRole::Manager).await?;
                }
                let mut inner = self.inner.lock().await;
                let connector = inner
                    .running
                    .as_ref()
                    .map(|r| r.connector.clone())
                    .ok_or(NodeError::NotInCluster)?;
                let Some(node) = inner.node.as_mut() else {
                    return Err(NodeError::NotInCluster);
                };
                if node.raft_id != v.raft_id {
                    // A new Raft member starts from an empty log.
                    self.data.remove_dir(&self.data.raft_dir())?;
                    node.raft_id = v.raft_id;
                    self.data.save_node(node)?;
                }
                let node = node.clone();
                self.start_manager(&node, connector).await?;
                Ok(())
            }
            (false, Some(_)) => {
                info!("no longer a manager: leaving raft");
                self.stop_manager().await;
                {
                    let mut inner = self.inner.lock().await;
                    self.data.remove_dir(&self.data.raft_dir())?;
                    if let Some(n) = inner.node.as_mut() {
                        n.raft_id = 0;
                        self.data.save_node(n)?;
                    }
                }
                self.renew(NodeRole::Worker).await
            }
            (false, None) => {
                let cert_role = {
                    let inner = self.inner.lock().await;
                    inner
                        .node
                        .as_ref()
                        .map(|n| n.role.clone())
                        .unwrap_or_default()
                };
                if cert_role == "manager" && v.role == "worker" {
                    self.renew(NodeRole::Worker).await?;
                }
                Ok(())
            }
        }
    }
}
