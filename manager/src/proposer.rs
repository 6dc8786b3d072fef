//! Writes to the store go through a [`Proposer`]: on the leader straight into Raft, on a
//! follower forwarded to the leader's `Raft.Propose`.

use crate::connector::Connector;
use crate::raft::{Raft, TypeConfig};
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use rswarm_proto::model::{Command, CommandError, CommandResponse};
use rswarm_proto::pb;
use std::sync::Arc;
use std::time::Duration;

/// How long a write may wait for a leader before giving up.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// Committed, but the store refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] CommandError),
    #[error("no leader: the cluster has lost its quorum or is electing one; try again")]
    NoLeader,
    #[error("the write could not be committed: {0}")]
    Unavailable(String),
}

impl ProposeError {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, ProposeError::Refused(_))
    }
}

/// Commits commands to the store. The returned index is the new version of what was written.
pub trait Proposer: Send + Sync {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<u64, ProposeError>>;
}

fn outcome(resp: CommandResponse) -> Result<u64, ProposeError> {
    match resp.result {
        None => Ok(resp.index),
        Some(e) => Err(ProposeError::Refused(e)),
    }
}

/// The proposer of a running manager.
pub struct RaftProposer {
    raft: Raft,
    connector: Arc<dyn Connector>,
}

impl RaftProposer {
    pub fn new(raft: Raft, connector: Arc<dyn Connector>) -> Self {
        Self { raft, connector }
    }

    /// Commits on this node, which must be the leader (the `Propose` RPC's handler).
    pub async fn propose_local(&self, cmd: Command) -> Result<CommandResponse, String> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn forward(&self, addr: &str, cmd: &Command) -> Result<CommandResponse, String> {
        let channel = self.connector.channel(addr).map_err(|e| e.to_string())?;
        let data = serde_json::to_vec(cmd).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(pb::RaftMessage { data });
        req.set_timeout(Duration::from_secs(5));
        let resp = pb::raft_client::RaftClient::new(channel)
            .propose(req)
            .await
            .map_err(|s| s.message().to_owned())?;
        let result: Result<CommandResponse, String> =
            serde_json::from_slice(&resp.into_inner().data).map_err(|e| e.to_string())?;
        result
    }

    async fn run(&self, cmd: Command) -> Result<u64, ProposeError> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        let mut last_err = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(written) = tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await
            else {
                // openraft waits for the commit; without a quorum it never comes. The entry
                // may still commit later, so say so.
                return Err(ProposeError::Unavailable(format!(
                    "not committed within {}s: the managers may have lost their quorum (the change may still apply later)",
                    WRITE_DEADLINE.as_secs()
                )));
            };
            match written {
                Ok(r) => return outcome(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(node) = f.leader_node {
                        match self.forward(&node.addr, &cmd).await {
                            Ok(r) => return outcome(r),
                            Err(e) => last_err = Some(e),
                        }
                    }
                }
                Err(RaftError::APIError(e)) => {
                    return Err(ProposeError::Unavailable(e.to_string()))
                }
                Err(RaftError::Fatal(e)) => return Err(ProposeError::Unavailable(e.to_string())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match last_err {
                    Some(e) => ProposeError::Unavailable(e),
                    None => ProposeError::NoLeader,
                });
            }
            // Wait for a leader to be known (or a short while) before trying again.
            let mut metrics = self.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<u64, ProposeError>> {
        Box::pin(self.run(cmd))
    }
}

/// Applies at once to a store with no Raft behind it: for unit tests of the components
/// that write, as swarmkit's nil proposer.
pub struct LocalProposer {
    store: Arc<crate::store::Store>,
    index: std::sync::atomic::AtomicU64,
}

impl LocalProposer {
    pub fn new(store: Arc<crate::store::Store>) -> Self {
        Self {
            store,
            index: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Proposer for LocalProposer {
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<u64, ProposeError>> {
        let index = self.index.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let resp = self.store.apply(index, &cmd);
        Box::pin(async move { outcome(resp) })
    }
}

// Keep the openraft type config reachable for callers that need to name it.
pub type RaftTypeConfig = TypeConfig;
