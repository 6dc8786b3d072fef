//! One module per command group.
pub mod daemon;
pub mod exec;
pub mod node;
pub mod service;
pub mod swarm;
