//! Writes to the store go through a [`Proposer`]: on the leader straight into Raft, on a
//! follower forwarded to the leader's `Raft.Propose`.
//!
//! Concurrent writes are coalesced: while a Raft write is in flight, new proposals queue,
//! and the next write carries all of them as one `Command::Multi` entry (each command still
//! applied or refused on its own). openraft 0.9 appends and fsyncs one client write at a
//! time, so this is what turns many small writes into few log appends.

use crate::connector::Connector;
use crate::raft::Raft;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use rswarm_proto::model::{Command, CommandError, CommandResponse};
use rswarm_proto::pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;

/// How long a write may wait for a leader before giving up.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// The most commands coalesced into one entry.
const MAX_BATCH: usize = 256;
/// Raft writes in flight at once; more proposals queue and coalesce.
const IN_FLIGHT: usize = 2;

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

type Waiter = oneshot::Sender<Result<u64, ProposeError>>;

/// The proposer of a running manager.
pub struct RaftProposer {
    queue: mpsc::UnboundedSender<(Command, Waiter)>,
    writer: Arc<Writer>,
}

/// Does the Raft writes: locally on the leader, else through the leader's `Propose`.
struct Writer {
    raft: Raft,
    connector: Arc<dyn Connector>,
    /// The channel to the leader, kept while the leader stays the same.
    leader: Mutex<Option<(String, Channel)>>,
}

impl RaftProposer {
    pub fn new(raft: Raft, connector: Arc<dyn Connector>) -> Self {
        let writer = Arc::new(Writer {
            raft,
            connector,
            leader: Mutex::new(None),
        });
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(coalesce(rx, writer.clone()));
        Self { queue, writer }
    }

    /// Commits on this node, which must be the leader (the `Propose` RPC's handler).
    pub async fn propose_local(&self, cmd: Command) -> Result<CommandResponse, String> {
        match self.writer.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Takes queued proposals and writes them, coalescing whatever queued meanwhile.
async fn coalesce(mut rx: mpsc::UnboundedReceiver<(Command, Waiter)>, writer: Arc<Writer>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A caller that gave up (its future dropped) is not written for.
            batch.retain(|(_, tx)| !tx.is_closed());
            if batch.len() == 1 {
                let Some((cmd, tx)) = batch.pop() else { return };
                let r = writer
                    .write(cmd, &|| tx.is_closed())
                    .await
                    .and_then(outcome);
                let _ = tx.send(r);
                return;
            }
            if batch.is_empty() {
                return;
            }
            let (cmds, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
            let gone = || waiters.iter().all(|w| w.is_closed());
            match writer.write(Command::Multi(cmds), &gone).await {
                Ok(resp) => {
                    for (i, tx) in waiters.into_iter().enumerate() {
                        let r = match resp.results.get(i).cloned().flatten() {
                            None => Ok(resp.index),
                            Some(e) => Err(ProposeError::Refused(e)),
                        };
                        let _ = tx.send(r);
                    }
                }
                Err(e) => {
                    for tx in waiters {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl Writer {
    fn leader_channel(&self, addr: &str) -> Result<Channel, String> {
        let mut cached = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, c)) = cached.as_ref() {
            if a == addr {
                return Ok(c.clone());
            }
        }
        let c = self.connector.channel(addr).map_err(|e| e.to_string())?;
        *cached = Some((addr.to_owned(), c.clone()));
        Ok(c)
    }

    async fn forward(&self, addr: &str, cmd: &Command) -> Result<CommandResponse, String> {
        let channel = self.leader_channel(addr)?;
        let data = serde_json::to_vec(cmd).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(pb::RaftMessage { data });
        req.set_timeout(Duration::from_secs(5));
        let resp = match pb::raft_client::RaftClient::new(channel)
            .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
            .propose(req)
            .await
        {
            Ok(r) => r,
            Err(s) => {
                // A broken channel is not reused.
                *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(s.message().to_owned());
            }
        };
        let result: Result<CommandResponse, String> =
            serde_json::from_slice(&resp.into_inner().data).map_err(|e| e.to_string())?;
        result
    }

    /// Commits `cmd` through the leader, waiting up to the write deadline for one. Stops
    /// trying once `abandoned()` says nobody waits for the outcome any more, so a write its
    /// caller gave up on is not retried into the log later.
    async fn write(
        &self,
        cmd: Command,
        abandoned: &(dyn Fn() -> bool + Sync),
    ) -> Result<CommandResponse, ProposeError> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        let mut last_err = None;
        loop {
            if abandoned() {
                return Err(ProposeError::Unavailable("the caller gave up".into()));
            }
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
                Ok(r) => return Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(node) = f.leader_node {
                        match self.forward(&node.addr, &cmd).await {
                            Ok(r) => {
                                // Read your writes: what the caller reads next on this
                                // node must include this write.
                                let left =
                                    deadline.saturating_duration_since(tokio::time::Instant::now());
                                let _ = self
                                    .raft
                                    .wait(Some(left.max(Duration::from_secs(1))))
                                    .applied_index_at_least(
                                        Some(r.index),
                                        "apply a forwarded write",
                                    )
                                    .await;
                                return Ok(r);
                            }
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
        let (tx, rx) = oneshot::channel();
        let sent = self.queue.send((cmd, tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(ProposeError::Unavailable(
                    "the manager is shutting down".into(),
                ));
            }
            rx.await.unwrap_or_else(|_| {
                Err(ProposeError::Unavailable(
                    "the manager is shutting down".into(),
                ))
            })
        })
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
