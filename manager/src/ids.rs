//! Fresh identifiers.
use rand::Rng;
use rswarm_proto::model::{ClusterId, NodeId};

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// 25 random base-36 characters, the shape of Swarm's ids.
pub fn random_id() -> String {
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn new_node_id() -> NodeId {
    NodeId(random_id())
}

pub fn new_cluster_id() -> ClusterId {
    ClusterId(random_id())
}

/// A Raft member id: random, never zero, so a re-promoted manager never reuses one.
pub fn new_raft_id() -> u64 {
    let mut rng = rand::rng();
    loop {
        let v: u64 = rng.random::<u64>() >> 1;
        if v != 0 {
            return v;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
