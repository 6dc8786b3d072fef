//! rswarm agents: what every node runs to be part of the cluster. Today: the session with
//! the leader's dispatcher (registration, heartbeats, following the leader) and the node's
//! description. Task execution on containerd comes here next.
//!
//! The worker never opens TLS itself: the daemon hands it a [`agent::Channels`] that dials
//! managers with the node's certificate.

pub mod agent;
pub mod containerd;
pub mod describe;
pub mod exec;
pub mod fake;
pub mod health;
pub mod tasks;
