use super::{ClusterId, Meta, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Cluster-wide settings a user may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// How often agents heartbeat; a node is down after three missed beats.
    pub dispatcher_heartbeat_ms: u64,
    /// Lifetime of node certificates.
    pub cert_expiry_secs: u64,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        // Swarm's defaults: 5 s heartbeats, 90-day certificates.
        Self {
            dispatcher_heartbeat_ms: 5_000,
            cert_expiry_secs: 90 * 24 * 3600,
        }
    }
}

/// The root CA. Its key lives in the replicated store so that every manager can sign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The secret halves of the join tokens; the full token adds the CA digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSecrets {
    pub worker: String,
    pub manager: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: ClusterId,
    pub meta: Meta,
    pub spec: ClusterSpec,
    pub root_ca: RootCaMaterial,
    pub join_secrets: JoinSecrets,
    /// Nodes removed from the cluster: their certificates are refused from then on.
    pub removed_nodes: BTreeSet<NodeId>,
    /// The key (32 bytes) that encrypts secrets' data in the store, made at `init`. It
    /// lives in the replicated store as the CA key does (Swarm without autolock).
    #[serde(default)]
    pub secrets_key: Vec<u8>,
}
