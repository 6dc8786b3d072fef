//! The durable Raft log: openraft's v2 [`RaftLogStorage`] on a redb file.
//!
//! One redb database holds two tables:
//! - `raft_log`: `u64` index → the serde_json encoding of the entry;
//! - `raft_meta`: `vote`, `committed`, `last_purged_log_id` (serde_json) and `format`.
//!
//! Every write that openraft is told about (the return of `save_vote`, `truncate`, `purge`,
//! and the `append` callback) is a redb transaction committed with
//! [`Durability::Immediate`], i.e. fsynced, before it is acknowledged. `save_committed` is
//! the exception: the committed index is only a hint, so it rides on the next fsync. `append` writes the
//! whole batch openraft hands it in one transaction, so one fsync covers many entries.
//! redb calls block, so they run on tokio's blocking pool.
//!
//! Writes are serialized because openraft drives them one at a time through `&mut self` and
//! each method waits for its commit; clones of [`RedbLogStore`] (the log readers handed to
//! replication) only read. Nothing else may write through a clone.

// openraft's trait methods return its 224-byte `StorageError`; the helpers here return what
// the trait returns.
#![allow(clippy::result_large_err)]

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, NodeId, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Log entries by index.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed log id, last purged log id and the format version.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged_log_id";
const KEY_FORMAT: &str = "format";
/// Bump when the encoding of keys or values changes.
const FORMAT: &[u8] = b"1";

/// Why [`RedbLogStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("open raft log database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("initialize raft log database {}", path.display())]
    Init {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("raft log database {} has format {found:?}, this build reads format {:?}", path.display(), String::from_utf8_lossy(FORMAT))]
    UnsupportedFormat { path: PathBuf, found: String },
}

/// A durable openraft log store on redb, generic over the Raft type configuration.
///
/// Cloning is cheap (an `Arc`); a clone serves as the [`RaftLogStorage::LogReader`].
pub struct RedbLogStore<C> {
    db: Arc<Database>,
    path: Arc<Path>,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for RedbLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: Arc::clone(&self.db),
            path: Arc::clone(&self.path),
            _config: PhantomData,
        }
    }
}

impl<C> fmt::Debug for RedbLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbLogStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> RedbLogStore<C> {
    /// Opens the log database at `path`, creating the file and its tables if missing.
    ///
    /// The parent directory must exist. The file is locked: a second `open` of the same file
    /// fails while any clone of the first store is alive. This call blocks (redb may repair
    /// the file after a crash); call it before serving, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
        let db = Database::create(path).map_err(|source| LogStoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let init_err = |source: redb::Error| LogStoreError::Init {
            path: path.to_owned(),
            source,
        };
        let found = init_tables(&db).map_err(init_err)?;
        if let Some(found) = found {
            if found != FORMAT {
                return Err(LogStoreError::UnsupportedFormat {
                    path: path.to_owned(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                });
            }
        }
        Ok(Self {
            db: Arc::new(db),
            path: Arc::from(path),
            _config: PhantomData,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool with the database; a panic there becomes a storage error
    /// about `subject`.
    async fn blocking<T, F>(
        &self,
        subject: ErrorSubject<C::NodeId>,
        verb: ErrorVerb,
        f: F,
    ) -> Result<T, StorageError<C::NodeId>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError<C::NodeId>> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(res) => res,
            Err(join) => Err(sto_err(subject, verb, &join)),
        }
    }

    async fn read_meta<T>(
        &self,
        key: &'static str,
        subject: ErrorSubject<C::NodeId>,
    ) -> Result<Option<T>, StorageError<C::NodeId>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let s = subject.clone();
        self.blocking(subject, ErrorVerb::Read, move |db| {
            read_meta_in(db, key).ctx(&s, ErrorVerb::Read)
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) a meta key, durably.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: Option<&T>,
        subject: ErrorSubject<C::NodeId>,
        durability: Durability,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = value
            .map(serde_json::to_vec)
            .transpose()
            .ctx(&subject, ErrorVerb::Write)?;
        let s = subject.clone();
        self.blocking(subject, ErrorVerb::Write, move |db| {
            let mut txn = db.begin_write().ctx(&s, ErrorVerb::Write)?;
            txn.set_durability(durability).ctx(&s, ErrorVerb::Write)?;
            {
                let mut meta = txn.open_table(META).ctx(&s, ErrorVerb::Write)?;
                match &bytes {
                    Some(b) => meta.insert(key, b.as_slice()).map(drop),
                    None => meta.remove(key).map(drop),
                }
                .ctx(&s, ErrorVerb::Write)?;
            }
            txn.commit().ctx(&s, ErrorVerb::Write)
        })
        .await
    }
}

/// Creates the tables and the format marker if missing; returns the format found, if any.
fn init_tables(db: &Database) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = begin_durable(db)?;
    let found = {
        txn.open_table(LOGS)?;
        let mut meta = txn.open_table(META)?;
        let found = meta.get(KEY_FORMAT)?.map(|v| v.value().to_vec());
        if found.is_none() {
            meta.insert(KEY_FORMAT, FORMAT)?;
        }
        found
    };
    txn.commit()?;
    Ok(found)
}

fn begin_durable(db: &Database) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// The meta value under `key`, decoded.
fn read_meta_in<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, DbError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let Some(v) = meta.get(key)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(v.value())?))
}

/// A redb or serde_json failure inside one storage operation.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("decode: {0}")]
    Decode(#[from] serde_json::Error),
}

macro_rules! db_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
db_error_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn sto_err<NID: NodeId, E: std::error::Error + 'static>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// Attaches openraft's error subject and verb to a failed redb/serde call.
trait StorageContext<T> {
    fn ctx<NID: NodeId>(
        self,
        subject: &ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>>;
}

impl<T, E: std::error::Error + 'static> StorageContext<T> for Result<T, E> {
    fn ctx<NID: NodeId>(
        self,
        subject: &ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>> {
        self.map_err(|e| sto_err(subject.clone(), verb, &e))
    }
}

/// The bounds as an inclusive range of indexes, or `None` if they hold no index.
fn index_range(start: Bound<u64>, end: Bound<u64>) -> Option<RangeInclusive<u64>> {
    let lo = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match end {
        Bound::Included(e) => e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (lo <= hi).then_some(lo..=hi)
}

impl<C: RaftTypeConfig> RaftLogReader<C> for RedbLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let Some(range) = index_range(range.start_bound().cloned(), range.end_bound().cloned())
        else {
            return Ok(Vec::new());
        };
        self.blocking(ErrorSubject::Logs, ErrorVerb::Read, move |db| {
            let subject = ErrorSubject::Logs;
            let txn = db.begin_read().ctx(&subject, ErrorVerb::Read)?;
            let logs = txn.open_table(LOGS).ctx(&subject, ErrorVerb::Read)?;
            let mut out = Vec::new();
            for item in logs.range(range).ctx(&subject, ErrorVerb::Read)? {
                let (k, v) = item.ctx(&subject, ErrorVerb::Read)?;
                let entry: C::Entry = serde_json::from_slice(v.value())
                    .ctx(&ErrorSubject::LogIndex(k.value()), ErrorVerb::Read)?;
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for RedbLogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        self.blocking(ErrorSubject::Logs, ErrorVerb::Read, |db| {
            let subject = ErrorSubject::Logs;
            let last_purged_log_id: Option<LogId<C::NodeId>> =
                read_meta_in(db, KEY_LAST_PURGED).ctx(&subject, ErrorVerb::Read)?;
            let txn = db.begin_read().ctx(&subject, ErrorVerb::Read)?;
            let logs = txn.open_table(LOGS).ctx(&subject, ErrorVerb::Read)?;
            let last = match logs.last().ctx(&subject, ErrorVerb::Read)? {
                Some((k, v)) => {
                    let entry: C::Entry = serde_json::from_slice(v.value())
                        .ctx(&ErrorSubject::LogIndex(k.value()), ErrorVerb::Read)?;
                    Some(entry.get_log_id().clone())
                }
                None => None,
            };
            // With every entry purged, the last log id is the last purged one.
            let last_log_id = last.or_else(|| last_purged_log_id.clone());
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.write_meta(
            KEY_VOTE,
            Some(vote),
            ErrorSubject::Vote,
            Durability::Immediate,
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // The committed index is a hint (openraft re-learns it from the leader), so it
        // need not cost an fsync per commit: it reaches the disk with the next durable write
        // (every append and vote), and a crash at worst loses an older hint.
        self.write_meta(
            KEY_COMMITTED,
            committed.as_ref(),
            ErrorSubject::Store,
            Durability::None,
        )
        .await
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(KEY_COMMITTED, ErrorSubject::Store).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let res = self
            .blocking(ErrorSubject::Logs, ErrorVerb::Write, move |db| {
                let subject = ErrorSubject::Logs;
                let txn = begin_durable(db).ctx(&subject, ErrorVerb::Write)?;
                {
                    let mut logs = txn.open_table(LOGS).ctx(&subject, ErrorVerb::Write)?;
                    let mut buf = Vec::new();
                    for entry in &entries {
                        let log_id = entry.get_log_id();
                        buf.clear();
                        serde_json::to_writer(&mut buf, entry)
                            .ctx(&ErrorSubject::Log(log_id.clone()), ErrorVerb::Write)?;
                        logs.insert(log_id.index, buf.as_slice())
                            .ctx(&ErrorSubject::Log(log_id.clone()), ErrorVerb::Write)?;
                    }
                }
                txn.commit().ctx(&subject, ErrorVerb::Write)
            })
            .await;
        // Acknowledge only what is on disk; on failure openraft gets the error both ways
        // and stops this node.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let subject = ErrorSubject::Log(log_id.clone());
        self.blocking(subject.clone(), ErrorVerb::Delete, move |db| {
            let txn = begin_durable(db).ctx(&subject, ErrorVerb::Delete)?;
            {
                let mut logs = txn.open_table(LOGS).ctx(&subject, ErrorVerb::Delete)?;
                logs.retain_in(log_id.index.., |_, _| false)
                    .ctx(&subject, ErrorVerb::Delete)?;
            }
            txn.commit().ctx(&subject, ErrorVerb::Delete)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let subject = ErrorSubject::Log(log_id.clone());
        let purged = serde_json::to_vec(&log_id).ctx(&subject, ErrorVerb::Delete)?;
        self.blocking(subject.clone(), ErrorVerb::Delete, move |db| {
            // The marker and the deletion commit together, so the log never has a hole.
            let txn = begin_durable(db).ctx(&subject, ErrorVerb::Delete)?;
            {
                let mut meta = txn.open_table(META).ctx(&subject, ErrorVerb::Delete)?;
                meta.insert(KEY_LAST_PURGED, purged.as_slice())
                    .ctx(&subject, ErrorVerb::Delete)?;
                let mut logs = txn.open_table(LOGS).ctx(&subject, ErrorVerb::Delete)?;
                logs.retain_in(..=log_id.index, |_, _| false)
                    .ctx(&subject, ErrorVerb::Delete)?;
            }
            txn.commit().ctx(&subject, ErrorVerb::Delete)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::{RaftLogStorageExt, RaftStateMachine, Snapshot};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{
        BasicNode, Entry, EntryPayload, Membership, RaftSnapshotBuilder, SnapshotMeta,
        StoredMembership,
    };
    use serde::Deserialize;
    use std::collections::BTreeSet;
    use std::io::Cursor;
    use std::sync::Mutex;
    use tempfile::TempDir;

    openraft::declare_raft_types!(
        /// D = String, R = String, NodeId = u64, Node = BasicNode.
        TestConfig
    );

    type NodeIdT = u64;
    type StoreErr = StorageError<NodeIdT>;

    /// What the test state machine holds; also its snapshot format.
    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    struct SmData {
        last_applied: Option<LogId<NodeIdT>>,
        last_membership: StoredMembership<NodeIdT, BasicNode>,
        applied: Vec<String>,
    }

    type StoredSnapshot = (SnapshotMeta<NodeIdT, BasicNode>, Vec<u8>);

    /// A minimal in-memory state machine, enough for openraft's conformance suite.
    #[derive(Clone, Default)]
    struct MemStateMachine {
        data: Arc<Mutex<SmData>>,
        current: Arc<Mutex<Option<StoredSnapshot>>>,
    }

    fn sm_err(e: impl ToString) -> StoreErr {
        StorageIOError::write_state_machine(AnyError::error(e)).into()
    }

    impl MemStateMachine {
        fn data(&self) -> Result<std::sync::MutexGuard<'_, SmData>, StoreErr> {
            self.data.lock().map_err(sm_err)
        }

        fn current(&self) -> Result<std::sync::MutexGuard<'_, Option<StoredSnapshot>>, StoreErr> {
            self.current.lock().map_err(sm_err)
        }
    }

    impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
        async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StoreErr> {
            let (bytes, meta) = {
                let data = self.data()?;
                let bytes = serde_json::to_vec(&*data).map_err(sm_err)?;
                let snapshot_id = match &data.last_applied {
                    Some(l) => format!("{}-{}", l.leader_id, l.index),
                    None => "empty".to_owned(),
                };
                let meta = SnapshotMeta {
                    last_log_id: data.last_applied,
                    last_membership: data.last_membership.clone(),
                    snapshot_id,
                };
                (bytes, meta)
            };
            *self.current()? = Some((meta.clone(), bytes.clone()));
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            })
        }
    }

    impl RaftStateMachine<TestConfig> for MemStateMachine {
        type SnapshotBuilder = Self;

        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogId<NodeIdT>>, StoredMembership<NodeIdT, BasicNode>), StoreErr>
        {
            let data = self.data()?;
            Ok((data.last_applied, data.last_membership.clone()))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, StoreErr>
        where
            I: IntoIterator<Item = Entry<TestConfig>> + Send,
            I::IntoIter: Send,
        {
            let mut data = self.data()?;
            let mut out = Vec::new();
            for entry in entries {
                data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => out.push(String::new()),
                    EntryPayload::Normal(d) => {
                        data.applied.push(d.clone());
                        out.push(d);
                    }
                    EntryPayload::Membership(m) => {
                        data.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        out.push(String::new());
                    }
                }
            }
            Ok(out)
        }

        async fn get_snapshot_builder(&mut self) -> Self {
            self.clone()
        }

        async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StoreErr> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<NodeIdT, BasicNode>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), StoreErr> {
            let bytes = snapshot.into_inner();
            let mut installed: SmData = serde_json::from_slice(&bytes).map_err(sm_err)?;
            installed.last_applied = meta.last_log_id;
            installed.last_membership = meta.last_membership.clone();
            *self.data()? = installed;
            *self.current()? = Some((meta.clone(), bytes));
            Ok(())
        }

        async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TestConfig>>, StoreErr> {
            Ok(self.current()?.as_ref().map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
        }
    }

    /// Each store gets a fresh directory, removed when the suite drops the guard.
    struct Builder;

    impl StoreBuilder<TestConfig, RedbLogStore<TestConfig>, MemStateMachine, TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(TempDir, RedbLogStore<TestConfig>, MemStateMachine), StoreErr> {
            let dir = tempfile::tempdir().map_err(|e| {
                StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
            })?;
            let store = RedbLogStore::open(&dir.path().join("raft-log.redb"))
                .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            Ok((dir, store, MemStateMachine::default()))
        }
    }

    #[test]
    fn passes_openraft_conformance_suite() -> Result<(), StoreErr> {
        // The suite runs each case on a runtime of its own, so this is a plain test.
        Suite::test_all(Builder)
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeIdT> {
        openraft::testing::log_id(term, 1, index)
    }

    fn normal(term: u64, index: u64, d: &str) -> Entry<TestConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(d.to_owned()),
        }
    }

    fn blank(term: u64, index: u64) -> Entry<TestConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership(term: u64, index: u64) -> Entry<TestConfig> {
        let voters: BTreeSet<NodeIdT> = [1, 2, 3].into();
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
        }
    }

    fn open(dir: &TempDir) -> RedbLogStore<TestConfig> {
        RedbLogStore::open(&dir.path().join("raft-log.redb")).expect("open log store")
    }

    async fn all_entries(store: &mut RedbLogStore<TestConfig>) -> Vec<Entry<TestConfig>> {
        store.try_get_log_entries(..).await.expect("read entries")
    }

    fn ids(entries: &[Entry<TestConfig>]) -> Vec<LogId<NodeIdT>> {
        entries.iter().map(|e| e.log_id).collect()
    }

    #[tokio::test]
    async fn everything_survives_reopen() -> Result<(), StoreErr> {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = vec![
            blank(1, 1),
            membership(1, 2),
            normal(1, 3, "a"),
            normal(2, 4, "b"),
        ];
        {
            let mut store = open(&dir);
            store.blocking_append(written[..2].to_vec()).await?;
            store.blocking_append(written[2..].to_vec()).await?;
            store.save_vote(&Vote::new(2, 1)).await?;
            store.save_committed(Some(log_id(1, 3))).await?;
        }

        let mut store = open(&dir);
        assert_eq!(all_entries(&mut store).await, written);
        assert_eq!(store.read_vote().await?, Some(Vote::new(2, 1)));
        assert_eq!(store.read_committed().await?, Some(log_id(1, 3)));
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
        assert_eq!(
            ids(&store.try_get_log_entries(2..4).await?),
            vec![log_id(1, 2), log_id(1, 3)]
        );

        // A committed vote replaces the old one; committed can be cleared.
        store.save_vote(&Vote::new_committed(3, 2)).await?;
        store.save_committed(None).await?;
        drop(store);
        let mut store = open(&dir);
        assert_eq!(store.read_vote().await?, Some(Vote::new_committed(3, 2)));
        assert_eq!(store.read_committed().await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn truncate_and_purge_survive_reopen() -> Result<(), StoreErr> {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open(&dir);
            store
                .blocking_append((1..=10).map(|i| normal(1, i, &i.to_string())))
                .await?;
            // A new leader overwrites 8.. : truncate, then append the new term's entries.
            store.truncate(log_id(1, 8)).await?;
            store
                .blocking_append([normal(2, 8, "x"), normal(2, 9, "y")])
                .await?;
            store.purge(log_id(1, 3)).await?;
        }

        let mut store = open(&dir);
        let entries = all_entries(&mut store).await;
        let mut expected: Vec<_> = (4..=7).map(|i| log_id(1, i)).collect();
        expected.extend([log_id(2, 8), log_id(2, 9)]);
        assert_eq!(ids(&entries), expected);
        assert_eq!(
            store.get_log_state().await?,
            LogState {
                last_purged_log_id: Some(log_id(1, 3)),
                last_log_id: Some(log_id(2, 9)),
            }
        );
        assert!(store.try_get_log_entries(0..=3).await?.is_empty());

        // Purging past the end leaves no entries; the purged id becomes the last log id.
        store.purge(log_id(2, 9)).await?;
        drop(store);
        let mut store = open(&dir);
        assert!(all_entries(&mut store).await.is_empty());
        assert_eq!(
            store.get_log_state().await?,
            LogState {
                last_purged_log_id: Some(log_id(2, 9)),
                last_log_id: Some(log_id(2, 9)),
            }
        );
        // The log continues after the purged point.
        store.blocking_append([blank(3, 10)]).await?;
        drop(store);
        let mut store = open(&dir);
        assert_eq!(ids(&all_entries(&mut store).await), vec![log_id(3, 10)]);
        assert_eq!(
            store.get_log_state().await?.last_log_id,
            Some(log_id(3, 10))
        );
        Ok(())
    }

    #[tokio::test]
    async fn empty_and_inverted_ranges_read_nothing() -> Result<(), StoreErr> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        store.blocking_append((0..5).map(|i| blank(1, i))).await?;
        assert!(store.try_get_log_entries(3..3).await?.is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = 4..2;
        assert!(store.try_get_log_entries(inverted).await?.is_empty());
        assert_eq!(store.try_get_log_entries(3..).await?.len(), 2);
        assert_eq!(
            store
                .try_get_log_entries((Bound::Excluded(0), Bound::Included(1)))
                .await?
                .len(),
            1
        );
        assert_eq!(store.try_get_log_entries(u64::MAX..).await?.len(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_damaged_entry_is_a_read_error_about_its_index() -> Result<(), StoreErr> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log.redb");
        {
            let mut store = open(&dir);
            store.blocking_append((1..=3).map(|i| blank(1, i))).await?;
        }
        {
            let db = Database::create(&path).expect("raw open");
            let txn = db.begin_write().expect("begin");
            txn.open_table(LOGS)
                .expect("table")
                .insert(2, b"not json".as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let mut store = open(&dir);
        let err = store
            .try_get_log_entries(1..=3)
            .await
            .expect_err("entry 2 is damaged");
        let msg = err.to_string();
        assert!(msg.starts_with("when Read LogIndex(2)"), "{msg}");
        assert_eq!(
            ids(&store.try_get_log_entries(3..).await?),
            vec![log_id(1, 3)]
        );
        Ok(())
    }

    #[tokio::test]
    async fn second_open_of_a_live_store_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        let err = RedbLogStore::<TestConfig>::open(&dir.path().join("raft-log.redb"))
            .expect_err("file is locked");
        assert!(matches!(err, LogStoreError::Open { .. }), "{err}");
        drop(store);
        open(&dir);
    }
}
