//! A running manager: Raft with its durable storage, the store it feeds, and the
//! components that run only while this manager leads (dispatcher liveness, role manager).

use crate::connector::Connector;
use crate::dispatcher::Dispatcher;
use crate::image_pin::ImageResolver;
use crate::proposer::RaftProposer;
use crate::raft::log_store::RedbLogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{self, Raft, TypeConfig};
use crate::store::Store;
use openraft::{BasicNode, ServerState};
use rswarm_proto::model::{NodeId, RaftId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tracing::{info, info_span, Instrument};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("open raft storage in {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
    #[error("start raft: {0}")]
    Raft(String),
    #[error("initialize the cluster: {0}")]
    Initialize(String),
}

pub struct ManagerConfig {
    /// Where Raft keeps its log and snapshots.
    pub dir: PathBuf,
    pub node_id: NodeId,
    pub raft_id: RaftId,
    /// This manager's cluster port, `IP:PORT`, as peers reach it.
    pub addr: String,
    pub connector: Arc<dyn Connector>,
    /// Resolves service images to digests at `service create`/`update`; `None`: images are
    /// stored as given (test clusters without registries).
    pub image_resolver: Option<Arc<dyn ImageResolver>>,
}

pub struct Manager {
    pub node_id: NodeId,
    pub raft_id: RaftId,
    pub addr: String,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub proposer: Arc<RaftProposer>,
    pub dispatcher: Arc<Dispatcher>,
    pub connector: Arc<dyn Connector>,
    pub image_resolver: Option<Arc<dyn ImageResolver>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Manager {
    pub async fn start(cfg: ManagerConfig) -> Result<Arc<Self>, ManagerError> {
        let storage_err = |path: &PathBuf, e: &dyn std::fmt::Display| ManagerError::Storage {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&cfg.dir).map_err(|e| storage_err(&cfg.dir, &e))?;
        let store = Arc::new(Store::new());
        let log_path = cfg.dir.join("raft.redb");
        let log =
            RedbLogStore::<TypeConfig>::open(&log_path).map_err(|e| storage_err(&log_path, &e))?;
        let snap_dir = cfg.dir.join("snapshots");
        let sm = StateMachine::open(store.clone(), snap_dir.clone())
            .map_err(|e| storage_err(&snap_dir, &e))?;
        let raft = Raft::new(
            cfg.raft_id,
            Arc::new(raft::config()?),
            Network::new(cfg.connector.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
        let proposer = Arc::new(RaftProposer::new(raft.clone(), cfg.connector.clone()));
        let m = Arc::new(Self {
            node_id: cfg.node_id,
            raft_id: cfg.raft_id,
            addr: cfg.addr,
            raft,
            store,
            proposer,
            dispatcher: Arc::new(Dispatcher::default()),
            connector: cfg.connector,
            image_resolver: cfg.image_resolver,
            tasks: Mutex::new(Vec::new()),
        });
        let watcher = tokio::spawn(leadership_loop(m.clone()).instrument(info_span!("leadership")));
        m.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher);
        Ok(m)
    }

    /// Makes this manager the single voter of a new cluster.
    pub async fn bootstrap(&self) -> Result<(), ManagerError> {
        let members = BTreeMap::from([(self.raft_id, BasicNode::new(&self.addr))]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ManagerError::Initialize(e.to_string()))
    }

    /// Waits until this node is the leader (a fresh single-voter cluster elects itself).
    pub async fn wait_leader(&self, timeout: std::time::Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .state(ServerState::Leader, "become leader")
            .await
            .is_ok()
    }

    /// Whether this manager leads: Raft says so and a quorum has acknowledged it within the
    /// leader lease. openraft 0.9 never makes a leader cut off from its quorum step down
    /// (its election timer skips leaders), so without the lease check an isolated leader
    /// would keep running the dispatcher and role manager while the majority elects
    /// another.
    pub fn is_leader(&self) -> bool {
        leading(&self.raft.metrics().borrow(), self.raft_id)
    }

    /// The current leader's Raft id and cluster address, if one is known.
    pub fn leader(&self) -> Option<(RaftId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Raft voters and learners as the latest membership lists them.
    pub fn members(&self) -> (Vec<RaftId>, Vec<RaftId>) {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }

    pub async fn shutdown(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let _ = self.raft.shutdown().await;
        info!("manager stopped");
    }
}

/// See [`Manager::is_leader`].
fn leading(m: &crate::raft::RaftMetrics, me: RaftId) -> bool {
    if m.state != ServerState::Leader || m.current_leader != Some(me) {
        return false;
    }
    let alone = m.membership_config.membership().voter_ids().count() <= 1;
    alone
        || m.millis_since_quorum_ack
            .is_some_and(|ms| ms <= crate::raft::LEADER_LEASE_MS)
}

/// Starts the leader-only components when this manager becomes leader and stops them when
/// it stops being leader. Each does a full pass when it starts, since events may have been
/// missed across a leader change.
async fn leadership_loop(m: Arc<Manager>) {
    let mut metrics = m.raft.metrics();
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let leading = m.is_leader();
        if leading && running.is_empty() {
            info!(raft.id = m.raft_id, "became leader");
            m.dispatcher.leader_start();
            running.push(tokio::spawn(
                crate::dispatcher::liveness_loop(m.clone()).instrument(info_span!("dispatcher")),
            ));
            running.push(tokio::spawn(
                crate::role_manager::run(m.clone()).instrument(info_span!("role_manager")),
            ));
            running.push(tokio::spawn(
                crate::orchestrator::run(m.clone()).instrument(info_span!("orchestrator")),
            ));
        } else if !leading && !running.is_empty() {
            info!(raft.id = m.raft_id, "no longer leader");
            for t in running.drain(..) {
                t.abort();
            }
            m.dispatcher.leader_stop();
        }
        // Metrics change on every Raft event; the timer catches a lease running out while
        // nothing else happens.
        tokio::select! {
            r = metrics.changed() => if r.is_err() { break; },
            _ = tokio::time::sleep(std::time::Duration::from_millis(crate::raft::LEADER_LEASE_MS / 4)) => {}
        }
    }
    for t in running {
        t.abort();
    }
}
