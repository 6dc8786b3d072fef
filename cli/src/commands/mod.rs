//! One module per command group.
pub mod daemon;
pub mod exec;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod stack;
pub mod swarm;
