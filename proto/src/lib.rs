//! rswarm's wire APIs and core types.
//!
//! - [`pb`]: code generated from `proto/*.proto` (never edited by hand).
//! - [`model`]: the domain types every crate shares (objects, ids, the Raft command).

pub mod convert;
pub mod convert_secrets;
pub mod model;

/// Generated gRPC messages and services.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("rswarm");
}

/// The largest gRPC message rswarm sends or accepts. tonic's default of 4 MiB is too small
/// for Raft appends of batched entries, snapshots in one message, and `service ps` of large
/// services; the peers are authenticated, so a large bound is safe.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
