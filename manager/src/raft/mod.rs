//! Raft through openraft: the type configuration, durable storage (redb log, snapshot
//! file), the state machine that feeds the [`crate::store::Store`], and the gRPC transport.
//! openraft's types stay inside this module.

pub mod log_store;
pub mod network;
pub mod server;
pub mod snapshot_file;
pub mod state_machine;

use openraft::{BasicNode, SnapshotPolicy};
use rswarm_proto::model::{Command, CommandResponse};
use std::io::Cursor;
use std::time::Duration;

openraft::declare_raft_types!(
    /// rswarm's Raft: commands are store [`Command`]s, members are addressed by `IP:PORT`.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<u64, BasicNode>;

/// Raft timings, chosen on purpose:
/// - heartbeats every 100 ms, so a follower sees at least five before its election timer
///   can fire, even when a loaded two-core machine delays a few of them;
/// - an election timeout of 500–800 ms. openraft 0.9 also gives the leader a lease of
///   `election_timeout_max`: a follower refuses votes until that long after the last
///   heartbeat, so the first candidate often loses and retries. A lost leader is thus
///   replaced after 0.8–1.6 s plus a vote round with fsync: within 2 s on a LAN (Swarm
///   takes ~10 s);
/// - a snapshot every 10,000 entries, keeping 1,000 behind it so a briefly lagging
///   follower catches up from the log rather than by snapshot.
#[allow(clippy::result_large_err)] // openraft's error type.
pub fn config() -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "rswarm".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: LEADER_LEASE_MS,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        // Entries can be coalesced writes of up to 256 commands; 64 of them keep an append
        // well under the message limit.
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
}

/// openraft's leader lease (`election_timeout_max`): a leader not acknowledged by a quorum
/// for longer is treated as not leading by the manager.
pub const LEADER_LEASE_MS: u64 = 800;

/// How long an RPC to a peer may take before it counts as failed.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
