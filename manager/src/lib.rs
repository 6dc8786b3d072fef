//! rswarm managers: the replicated cluster store and Raft, the cluster CA and join tokens,
//! the dispatcher that keeps every node's session, the role manager that keeps Raft
//! membership in line with node roles, and the control operations behind the CLI.
//!
//! Entry points: [`manager::Manager::start`] runs a manager on a node; the gRPC services in
//! [`raft::server`], [`dispatcher`] and [`ca_server`] serve the cluster port through a
//! [`slot::ManagerSlot`]; [`control`] holds what the control API does.
//! This crate does not touch containers or the network: that is the worker's and netd's.

pub mod allocator;
pub mod auth;
pub mod ca;
pub mod ca_server;
pub mod connector;
pub mod control;
pub mod control_networks;
pub mod control_secrets;
pub mod control_services;
pub mod dispatcher;
pub mod ids;
pub mod image_pin;
pub mod manager;
pub mod netview;
pub mod orchestrator;
pub mod proposer;
pub mod raft;
pub mod role_manager;
pub mod scheduler;
pub mod secrets;
pub mod slot;
pub mod store;
pub mod tls;
