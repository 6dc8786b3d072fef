//! The dispatcher: on the leader, it keeps a session with every node, takes their
//! heartbeats, marks nodes `ready` and `down`, and tells each node what the store says of
//! it (its role, the managers to reach). Non-leaders point agents at the leader.

use crate::auth;
use crate::ids::{now_ms, random_id};
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use crate::slot::ManagerSlot;
use crate::store::Event;
use rswarm_proto::model::{Command, Node, NodeDescription, NodeId, NodeRole, NodeState};
use rswarm_proto::pb;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

/// Nodes are down after this many missed heartbeats.
pub const MISSED_BEATS: u32 = 3;
/// Metadata key carrying the leader's address when a non-leader refuses a session.
pub const LEADER_KEY: &str = "rswarm-leader";

struct Session {
    id: String,
    last_beat: Instant,
}

/// The leader's view of node sessions. Kept in memory: a new leader starts empty and gives
/// every node a full grace period to find it.
#[derive(Default)]
pub struct Dispatcher {
    sessions: Mutex<HashMap<NodeId, Session>>,
    leader_since: Mutex<Option<Instant>>,
}

impl Dispatcher {
    pub fn leader_start(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.leader_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub fn leader_stop(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.leader_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn open(&self, node: &NodeId) -> String {
        let id = random_id();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                node.clone(),
                Session {
                    id: id.clone(),
                    last_beat: Instant::now(),
                },
            );
        id
    }

    fn beat(&self, node: &NodeId, session: &str) -> bool {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match s.get_mut(node) {
            Some(sess) if sess.id == session => {
                sess.last_beat = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn is_current(&self, node: &NodeId, session: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|s| s.id == session)
    }

    /// When the node was last heard from (or when this leader started, if never).
    fn last_seen(&self, node: &NodeId) -> Option<Instant> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(node)
            .map(|s| s.last_beat)
            .or(*self.leader_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub fn heartbeat_period(m: &Manager) -> Duration {
    let ms = m
        .store
        .view(|s| s.cluster.as_ref().map(|c| c.spec.dispatcher_heartbeat_ms))
        .unwrap_or(5_000);
    Duration::from_millis(ms.max(100))
}

/// The managers agents should know about.
pub fn manager_peers(nodes: &[&Node]) -> Vec<pb::Peer> {
    nodes
        .iter()
        .filter_map(|n| {
            n.manager.as_ref().map(|mi| pb::Peer {
                node_id: n.id.to_string(),
                addr: mi.addr.clone(),
                raft_id: mi.raft_id,
            })
        })
        .collect()
}

fn session_message(m: &Manager, node: &NodeId, session_id: &str) -> Option<pb::SessionMessage> {
    let period = heartbeat_period(m);
    m.store.view(|s| {
        let n = s.nodes.get(node)?;
        let all: Vec<&Node> = s.nodes.values().collect();
        Some(pb::SessionMessage {
            session_id: session_id.to_owned(),
            managers: manager_peers(&all),
            desired_role: n.spec.desired_role.as_str().to_owned(),
            role: n.role.as_str().to_owned(),
            raft_id: n.manager.as_ref().map_or(0, |mi| mi.raft_id),
            heartbeat_period_ms: period.as_millis() as u64,
        })
    })
}

/// Refuses with the leader's address when this manager does not lead.
pub fn not_leader(m: &Manager) -> Status {
    let mut st = Status::failed_precondition("this manager is not the leader");
    if let Some((_, addr)) = m.leader() {
        if let Ok(v) = addr.parse() {
            st.metadata_mut().insert(LEADER_KEY, v);
        }
    }
    st
}

/// Records a node's registration: its description, address and `ready`.
async fn register(
    m: &Manager,
    node: &NodeId,
    desc: NodeDescription,
    cluster_addr: String,
    ip: String,
) -> Result<(), ProposeError> {
    for _ in 0..5 {
        let Some(mut n) = m.store.view(|s| s.nodes.get(node).cloned()) else {
            return Err(ProposeError::Refused(
                rswarm_proto::model::CommandError::NotFound {
                    kind: "node".into(),
                    id: node.to_string(),
                },
            ));
        };
        n.description = desc.clone();
        n.cluster_addr.clone_from(&cluster_addr);
        n.status.state = NodeState::Ready;
        n.status.addr.clone_from(&ip);
        n.status.message.clear();
        n.meta.updated_at = now_ms();
        match m.proposer.propose(Command::UpdateNode(Box::new(n))).await {
            Err(ProposeError::Refused(rswarm_proto::model::CommandError::StaleVersion {
                ..
            })) => continue,
            other => return other.map(|_| ()),
        }
    }
    Err(ProposeError::Unavailable(
        "node kept changing during registration".into(),
    ))
}

/// Marks nodes down after missed heartbeats, and ready again once they beat. Leader only.
pub async fn liveness_loop(m: Arc<Manager>) {
    loop {
        let period = heartbeat_period(&m);
        let limit = period * MISSED_BEATS;
        let now = Instant::now();
        let nodes: Vec<(NodeId, NodeState)> = m.store.view(|s| {
            s.nodes
                .values()
                .map(|n| (n.id.clone(), n.status.state))
                .collect()
        });
        for (id, state) in nodes {
            let Some(seen) = m.dispatcher.last_seen(&id) else {
                continue;
            };
            let alive = now.duration_since(seen) <= limit;
            let has_session = m
                .dispatcher
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
            let next = if alive && has_session {
                NodeState::Ready
            } else if !alive {
                NodeState::Down
            } else {
                continue;
            };
            if next == state {
                continue;
            }
            if next == NodeState::Down {
                info!(node.id = %id, "node down: heartbeat failure");
                m.dispatcher
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            let message = if next == NodeState::Down {
                "heartbeat failure".to_owned()
            } else {
                String::new()
            };
            let cmd = Command::SetNodeState {
                id: id.clone(),
                state: next,
                addr: None,
                message,
            };
            if let Err(e) = m.proposer.propose(cmd).await {
                debug!(node.id = %id, "set node state: {e}");
            }
        }
        tokio::time::sleep((period / 4).max(Duration::from_millis(100))).await;
    }
}

pub struct DispatcherService {
    slot: ManagerSlot,
}

impl DispatcherService {
    pub fn new(slot: ManagerSlot) -> Self {
        Self { slot }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SessionMessage, Status>> + Send>>;
type AssignmentsStream = Pin<Box<dyn Stream<Item = Result<pb::AssignmentsMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        req: Request<pb::SessionRequest>,
    ) -> Result<Response<SessionStream>, Status> {
        let m = self.slot.get()?;
        let who = auth::require_node(&req, &m.store)?;
        if !m.is_leader() {
            return Err(not_leader(&m));
        }
        let body = req.into_inner();
        let desc = body
            .description
            .map(crate::control::description_from_pb)
            .unwrap_or_default();
        let ip = body
            .advertise_addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .unwrap_or_default();
        let session_id = m.dispatcher.open(&who.node_id);
        register(&m, &who.node_id, desc, body.advertise_addr.clone(), ip)
            .await
            .map_err(|e| match e {
                ProposeError::Refused(e) => Status::not_found(e.to_string()),
                e => Status::unavailable(e.to_string()),
            })?;
        info!(node.id = %who.node_id, "session opened");

        let (tx, rx) = mpsc::channel(8);
        let node = who.node_id.clone();
        tokio::spawn(async move {
            let mut events = m.store.subscribe();
            let mut metrics = m.raft.metrics();
            let mut last: Option<pb::SessionMessage> = None;
            // Only node and cluster changes can change what a session is told.
            let mut dirty = true;
            loop {
                if !m.dispatcher.is_current(&node, &session_id) || !m.is_leader() {
                    break;
                }
                if dirty {
                    dirty = false;
                    match session_message(&m, &node, &session_id) {
                        None => {
                            let _ = tx
                                .send(Err(Status::not_found(
                                    "this node was removed from the cluster",
                                )))
                                .await;
                            break;
                        }
                        Some(msg) if last.as_ref() != Some(&msg) => {
                            if tx.send(Ok(msg.clone())).await.is_err() {
                                break;
                            }
                            last = Some(msg);
                        }
                        Some(_) => {}
                    }
                }
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(Event::NodeCreated(_) | Event::NodeUpdated { .. } | Event::NodeRemoved(_)
                            | Event::ClusterUpdated(_) | Event::Reset)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    // Leadership is re-checked at the top of the loop.
                    r = metrics.changed() => { if r.is_err() { break; } }
                    _ = tx.closed() => break,
                    // Re-check now and then: sessions are replaced without a store event.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            debug!(node.id = %node, "session stream ended");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type AssignmentsStream = AssignmentsStream;

    async fn assignments(
        &self,
        req: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<AssignmentsStream>, Status> {
        let m = self.slot.get()?;
        let who = auth::require_node(&req, &m.store)?;
        if !m.is_leader() {
            return Err(not_leader(&m));
        }
        let session_id = req.into_inner().session_id;
        if !m.dispatcher.is_current(&who.node_id, &session_id) {
            return Err(Status::not_found("session not found: open a new one"));
        }
        let (tx, rx) = mpsc::channel(16);
        let node = who.node_id.clone();
        tokio::spawn(async move {
            let mut events = m.store.subscribe();
            let mut sent = assignments_of(&m, &node);
            // The secrets and configs its tasks use, in every message (see dispatcher.proto).
            let mut sent_files = m.store.view(|s| crate::secrets::node_files(s, &node));
            let mut sent_view = m.store.view(|s| crate::netview::network_view(s, &node));
            let first = pb::AssignmentsMessage {
                complete: true,
                update: sent.values().map(|(_, t)| t.clone()).collect(),
                remove: Vec::new(),
                secrets: sent_files.0.clone(),
                configs: sent_files.1.clone(),
                network_view: encode_view(&sent_view),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(Event::Commit { .. }) | Ok(Event::Reset) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !m.dispatcher.is_current(&node, &session_id) || !m.is_leader() {
                    break;
                }
                let now = assignments_of(&m, &node);
                let update: Vec<pb::Task> = now
                    .iter()
                    .filter(|(id, (v, _))| sent.get(*id).is_none_or(|(sv, _)| sv != v))
                    .map(|(_, (_, t))| t.clone())
                    .collect();
                let remove: Vec<String> = sent
                    .keys()
                    .filter(|id| !now.contains_key(*id))
                    .map(|id| id.to_string())
                    .collect();
                let files = m.store.view(|s| crate::secrets::node_files(s, &node));
                let view = m.store.view(|s| crate::netview::network_view(s, &node));
                let view_changed = view != sent_view;
                if update.is_empty() && remove.is_empty() && files == sent_files && !view_changed {
                    continue;
                }
                let msg = pb::AssignmentsMessage {
                    complete: false,
                    update,
                    remove,
                    secrets: files.0.clone(),
                    configs: files.1.clone(),
                    network_view: if view_changed {
                        encode_view(&view)
                    } else {
                        Vec::new()
                    },
                };
                sent_files = files;
                sent_view = view;
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
                sent = now;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_task_status(
        &self,
        req: Request<pb::UpdateTaskStatusRequest>,
    ) -> Result<Response<pb::UpdateTaskStatusResponse>, Status> {
        let m = self.slot.get()?;
        let who = auth::require_node(&req, &m.store)?;
        if !m.is_leader() {
            return Err(not_leader(&m));
        }
        let body = req.into_inner();
        if !m.dispatcher.is_current(&who.node_id, &body.session_id) {
            return Err(Status::not_found("session not found: open a new one"));
        }
        let mut cmds = Vec::new();
        for u in body.updates {
            let id = rswarm_proto::model::TaskId(u.task_id);
            // A node reports only on its own tasks.
            let owned = m.store.view(|s| {
                s.tasks
                    .get(&id)
                    .is_some_and(|t| t.node_id.as_ref() == Some(&who.node_id))
            });
            if !owned {
                continue;
            }
            let status = rswarm_proto::model::TaskStatus::try_from(u.status.unwrap_or_default())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            cmds.push(Command::UpdateTaskStatus { id, status });
        }
        if !cmds.is_empty() {
            m.proposer
                .propose(Command::Batch(cmds))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(pb::UpdateTaskStatusResponse {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let m = self.slot.get()?;
        let who = auth::require_node(&req, &m.store)?;
        if !m.is_leader() {
            return Err(not_leader(&m));
        }
        if !m.dispatcher.beat(&who.node_id, &req.get_ref().session_id) {
            warn!(node.id = %who.node_id, "heartbeat for an unknown session");
            return Err(Status::not_found("session not found: open a new one"));
        }
        Ok(Response::new(pb::HeartbeatResponse {
            period_ms: heartbeat_period(&m).as_millis() as u64,
        }))
    }
}

/// The network view as the wire carries it (see dispatcher.proto).
fn encode_view(v: &rswarm_proto::model::NetworkView) -> Vec<u8> {
    // Serializing plain data to JSON cannot fail; an empty message means "unchanged".
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether `t` belongs in its node's assignments: scheduled there, and not both finished and
/// no longer wanted (then its container can go).
pub fn is_assigned(t: &rswarm_proto::model::Task, node: &NodeId) -> bool {
    use rswarm_proto::model::TaskState;
    t.node_id.as_ref() == Some(node)
        && t.status.state >= TaskState::Assigned
        && !(t.desired_state >= TaskState::Shutdown && t.status.state.is_terminal())
}

/// The node's assignments now, with each task's version.
fn assignments_of(
    m: &Manager,
    node: &NodeId,
) -> BTreeMap<rswarm_proto::model::TaskId, (u64, pb::Task)> {
    m.store.view(|s| {
        let hostname = s
            .nodes
            .get(node)
            .map(|n| n.description.hostname.clone())
            .unwrap_or_default();
        s.tasks
            .values()
            .filter(|t| is_assigned(t, node))
            .map(|t| {
                (
                    t.id.clone(),
                    (
                        t.meta.version,
                        rswarm_proto::convert::task_to_pb(t, &hostname),
                    ),
                )
            })
            .collect()
    })
}

/// Roles as the dispatcher reports them to agents.
pub fn parse_role(s: &str) -> NodeRole {
    NodeRole::parse(s).unwrap_or(NodeRole::Worker)
}
