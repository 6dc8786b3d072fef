//! The Raft state machine: applies committed entries to the in-memory [`Store`] and
//! persists snapshots to a file. On restart the store is rebuilt from the latest snapshot
//! plus the log entries after it, which openraft replays.

// openraft's StorageError is large; it is openraft's API.
#![allow(clippy::result_large_err)]

use super::snapshot_file::SnapshotFile;
use super::TypeConfig;
use crate::store::{State, Store};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rswarm_proto::model::CommandResponse;
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

type NodeIdT = u64;

/// What a snapshot holds: the store and the Raft bookkeeping that goes with it.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeIdT>>,
    membership: StoredMembership<NodeIdT, BasicNode>,
    state: State,
}

pub struct StateMachine {
    store: Arc<Store>,
    dir: PathBuf,
    /// Builds run in their own task and may race an install: one save at a time, so the
    /// snapshot-file's "never replace a newer snapshot" check and its rename are atomic.
    save_lock: Arc<Mutex<()>>,
    last_applied: Option<LogId<NodeIdT>>,
    membership: StoredMembership<NodeIdT, BasicNode>,
    current: Option<(SnapshotMeta<NodeIdT, BasicNode>, Vec<u8>)>,
}

impl StateMachine {
    /// Opens the state machine, loading the latest snapshot from `dir` into `store`.
    pub fn open(store: Arc<Store>, dir: PathBuf) -> Result<Self, StorageError<NodeIdT>> {
        std::fs::create_dir_all(&dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let mut sm = Self {
            store,
            dir,
            save_lock: Arc::new(Mutex::new(())),
            last_applied: None,
            membership: StoredMembership::default(),
            current: None,
        };
        SnapshotFile::<TypeConfig>::remove_temp_files(&sm.dir)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let loaded = SnapshotFile::<TypeConfig>::load(&sm.dir)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        if let Some((meta, data)) = loaded {
            sm.load_body(&meta, &data)?;
            sm.current = Some((meta, data));
        }
        Ok(sm)
    }

    fn load_body(
        &mut self,
        meta: &SnapshotMeta<NodeIdT, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeIdT>> {
        let body: SnapshotBody = serde_json::from_slice(data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let state = serde_json::to_vec(&body.state)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.store
            .restore(&state)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        Ok(())
    }
}

/// Writes a snapshot to its file on the blocking pool, one save at a time.
async fn save(
    dir: &std::path::Path,
    lock: &Arc<Mutex<()>>,
    meta: &SnapshotMeta<NodeIdT, BasicNode>,
    data: &[u8],
) -> Result<(), StorageError<NodeIdT>> {
    let (dir, m, d, lock) = (dir.to_owned(), meta.clone(), data.to_vec(), lock.clone());
    tokio::task::spawn_blocking(move || {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        SnapshotFile::<TypeConfig>::save(&dir, &m, &d)
    })
    .await
    .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
    .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    Ok(())
}

/// Builds a snapshot from a copy of the state taken between two applies.
pub struct Builder {
    dir: PathBuf,
    save_lock: Arc<Mutex<()>>,
    body: SnapshotBody,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeIdT>> {
        let data =
            serde_json::to_vec(&self.body).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.body.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.body.last_applied,
            last_membership: self.body.membership.clone(),
            snapshot_id,
        };
        save(&self.dir, &self.save_lock, &meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeIdT>>, StoredMembership<NodeIdT, BasicNode>), StorageError<NodeIdT>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<NodeIdT>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse {
                    index,
                    ..Default::default()
                },
                EntryPayload::Normal(cmd) => self.store.apply(index, &cmd),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse {
                        index,
                        ..Default::default()
                    }
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder {
            dir: self.dir.clone(),
            save_lock: self.save_lock.clone(),
            body: SnapshotBody {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                state: self.store.view(Clone::clone),
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeIdT>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeIdT, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeIdT>> {
        let data = snapshot.into_inner();
        self.load_body(meta, &data)?;
        save(&self.dir, &self.save_lock, meta, &data).await?;
        self.current = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeIdT>> {
        // The latest is on disk (the builder wrote it); read it back so that a snapshot built
        // since `open` is served too.
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || SnapshotFile::<TypeConfig>::load(&dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        if let Some((meta, data)) = loaded {
            self.current = Some((meta, data));
        }
        Ok(self.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
