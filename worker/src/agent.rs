//! The agent's session with the dispatcher. It finds the leader (a non-leader answers with
//! the leader's address), registers, heartbeats at the period the leader gives, and
//! publishes what the leader says of this node through a `watch`. It reconnects with
//! backoff, so a leader failover costs one election and one reconnect.

use rand::Rng;
use rswarm_proto::pb;
use rswarm_proto::pb::dispatcher_client::DispatcherClient;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Metadata key in which a non-leader names the leader (see the dispatcher).
const LEADER_KEY: &str = "rswarm-leader";

/// Dials a manager's cluster port with the node's credentials.
pub trait Channels: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, String>;
}

/// What the leader last said of this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionView {
    pub managers: Vec<pb::Peer>,
    pub desired_role: String,
    pub role: String,
    pub raft_id: u64,
}

pub struct AgentConfig {
    pub description: pb::NodeDescription,
    /// This node's cluster port, `IP:PORT`.
    pub advertise_addr: String,
    /// Runs the tasks assigned to this node; `None` when no container runtime is available
    /// (the node then takes no assignments).
    pub tasks: Option<Arc<crate::tasks::TaskManager>>,
    /// The node's network agent, fed the network view that comes with the assignments.
    pub network: Option<Arc<dyn crate::exec::TaskNetwork>>,
}

/// Manager addresses to try, shared with the daemon (which persists them).
pub type ManagerList = Arc<Mutex<Vec<String>>>;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{addr}: {status}")]
    Rpc { addr: String, status: tonic::Status },
    #[error("{0}")]
    Dial(String),
    #[error("session stream from {0} ended")]
    Ended(String),
    #[error("this node was removed from the cluster")]
    Removed,
}

/// Runs the session until the task is aborted, or the node is removed.
pub async fn run(
    cfg: AgentConfig,
    channels: Arc<dyn Channels>,
    managers: ManagerList,
    view: watch::Sender<Option<SessionView>>,
) {
    let mut hint: Option<String> = None;
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let addr = match hint.take() {
            Some(a) => a,
            None => {
                let list = managers.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if list.is_empty() {
                    warn!("no manager address known");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                next = (next + 1) % list.len();
                list[next].clone()
            }
        };
        match session(&cfg, channels.as_ref(), &addr, &managers, &view).await {
            Ok(()) => {}
            Err(SessionError::Removed) => {
                warn!("this node was removed from the cluster; the session stops");
                view.send_replace(None);
                return;
            }
            Err(SessionError::Rpc { status, .. })
                if status.code() == tonic::Code::FailedPrecondition
                    && status.metadata().get(LEADER_KEY).is_some() =>
            {
                let leader = status
                    .metadata()
                    .get(LEADER_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                debug!(?leader, "{addr} is not the leader");
                if leader.as_deref() != Some(addr.as_str()) {
                    hint = leader;
                    continue;
                }
            }
            Err(e) => debug!("session: {e}"),
        }
        // Jittered backoff so that every node does not hit the new leader at once.
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
        // A completed session resets the backoff in `session` through the view.
        if view.borrow().is_some() {
            backoff = Duration::from_millis(100);
        }
    }
}

async fn session(
    cfg: &AgentConfig,
    channels: &dyn Channels,
    addr: &str,
    managers: &ManagerList,
    view: &watch::Sender<Option<SessionView>>,
) -> Result<(), SessionError> {
    let rpc = |status: tonic::Status| SessionError::Rpc {
        addr: addr.to_owned(),
        status,
    };
    let channel = channels.channel(addr).map_err(SessionError::Dial)?;
    let mut client = DispatcherClient::new(channel)
        .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES);
    let req = pb::SessionRequest {
        description: Some(cfg.description.clone()),
        advertise_addr: cfg.advertise_addr.clone(),
    };
    let mut stream = client.session(req).await.map_err(rpc)?.into_inner();
    let first = match stream.next().await {
        Some(Ok(m)) => m,
        Some(Err(s)) if s.code() == tonic::Code::NotFound => return Err(SessionError::Removed),
        Some(Err(s)) => return Err(rpc(s)),
        None => return Err(SessionError::Ended(addr.to_owned())),
    };
    info!(manager = addr, "session established");
    let session_id = first.session_id.clone();
    let mut period = Duration::from_millis(first.heartbeat_period_ms.max(100));
    apply(&first, managers, view);

    let mut beat_client = client.clone();
    let mut next_beat = tokio::time::Instant::now() + period;
    let mut assignments = match &cfg.tasks {
        Some(tm) => {
            let s = client
                .assignments(pb::AssignmentsRequest {
                    session_id: session_id.clone(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            tm.resend_all();
            Some((tm.clone(), s))
        }
        None => None,
    };
    let mut status_client = client.clone();
    loop {
        let reports = cfg.tasks.as_ref().map(|tm| tm.reports.clone());
        tokio::select! {
            msg = next_assignment(&mut assignments) => match msg {
                Some(Ok(m)) => {
                    if let (Some(net), false) = (&cfg.network, m.network_view.is_empty()) {
                        // Before the tasks, so that a new task's peers and names are known.
                        net.set_view(&m.network_view).await;
                    }
                    if let Some((tm, _)) = &assignments {
                        // Before the tasks, so that a new task finds its files.
                        tm.executor().set_files(crate::exec::NodeFiles::from_pb(m.secrets, m.configs));
                        let tasks: Vec<rswarm_proto::model::Task> = m
                            .update
                            .into_iter()
                            .filter_map(|t| match rswarm_proto::model::Task::try_from(t) {
                                Ok(t) => Some(t),
                                Err(e) => {
                                    warn!("ignoring a malformed assignment: {e}");
                                    None
                                }
                            })
                            .collect();
                        if m.complete {
                            tm.set_all(tasks).await;
                        } else {
                            let removed = m.remove.into_iter().map(rswarm_proto::model::TaskId).collect();
                            tm.update(tasks, removed).await;
                        }
                    }
                }
                Some(Err(s)) => return Err(rpc(s)),
                None => return Err(SessionError::Ended(addr.to_owned())),
            },
            _ = notified(&reports) => {
                let Some(r) = &reports else { continue };
                let pending = r.take();
                if pending.is_empty() {
                    continue;
                }
                let updates = pending
                    .iter()
                    .map(|(id, st)| pb::TaskStatusUpdate {
                        task_id: id.to_string(),
                        status: Some(rswarm_proto::convert::task_status_to_pb(st)),
                    })
                    .collect();
                let req = pb::UpdateTaskStatusRequest { session_id: session_id.clone(), updates };
                if let Err(s) = status_client.update_task_status(req).await {
                    r.restore(pending);
                    return Err(rpc(s));
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(m)) => {
                    period = Duration::from_millis(m.heartbeat_period_ms.max(100));
                    apply(&m, managers, view);
                }
                Some(Err(s)) if s.code() == tonic::Code::NotFound => return Err(SessionError::Removed),
                Some(Err(s)) => return Err(rpc(s)),
                None => return Err(SessionError::Ended(addr.to_owned())),
            },
            _ = tokio::time::sleep_until(next_beat) => {
                let mut req = tonic::Request::new(pb::HeartbeatRequest { session_id: session_id.clone() });
                req.set_timeout(period);
                let resp = beat_client.heartbeat(req).await.map_err(rpc)?;
                period = Duration::from_millis(resp.into_inner().period_ms.max(100));
                next_beat = tokio::time::Instant::now() + period;
            }
        }
    }
}

type AssignmentStream = tonic::Streaming<pb::AssignmentsMessage>;

/// The next assignments message, or never when this node takes none.
async fn next_assignment(
    a: &mut Option<(Arc<crate::tasks::TaskManager>, AssignmentStream)>,
) -> Option<Result<pb::AssignmentsMessage, tonic::Status>> {
    match a {
        Some((_, s)) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn notified(r: &Option<Arc<crate::tasks::Reports>>) {
    match r {
        Some(r) => r.notify.notified().await,
        None => std::future::pending().await,
    }
}

fn apply(
    m: &pb::SessionMessage,
    managers: &ManagerList,
    view: &watch::Sender<Option<SessionView>>,
) {
    if !m.managers.is_empty() {
        let addrs: Vec<String> = m.managers.iter().map(|p| p.addr.clone()).collect();
        *managers.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }
    let v = SessionView {
        managers: m.managers.clone(),
        desired_role: m.desired_role.clone(),
        role: m.role.clone(),
        raft_id: m.raft_id,
    };
    view.send_if_modified(|cur| {
        if cur.as_ref() == Some(&v) {
            false
        } else {
            *cur = Some(v);
            true
        }
    });
}
