//! rswarm's wire APIs and core types.
//!
//! - [`pb`]: code generated from `proto/*.proto` (never edited by hand).
//! - [`model`]: the domain types every crate shares (objects, ids, the Raft command).

pub mod model;

/// Generated gRPC messages and services.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("rswarm");
}
