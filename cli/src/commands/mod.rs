//! One module per command group.
pub mod daemon;
pub mod node;
pub mod swarm;
