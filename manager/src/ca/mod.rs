//! The cluster's certificate authority and join tokens.
//!
//! Every node holds a certificate signed by the root CA; its subject says who the node is
//! (CN = node id), what it may do (OU = `swarm-manager` / `swarm-worker`) and which cluster it
//! belongs to (O = cluster id), as in swarmkit's `ca` package. A joining node proves it may
//! join with a join token, which also pins the CA by digest so that the node trusts the
//! cluster's CA without trust on first use.
//!
//! Entry points: [`RootCa`] (generate, load, sign CSRs), [`generate_key_and_csr`] (node side),
//! [`parse_cert_der`] / [`parse_cert_pem`] (who is this peer), [`renewal_delay`] and
//! [`JoinToken`].

mod certinfo;
mod root;
mod token;

pub use certinfo::{parse_cert_der, parse_cert_pem, renewal_delay, CertInfo};
pub use root::{cert_der_to_pem, generate_key_and_csr, RootCa};
pub(crate) use token::ca_digest_base36;
pub use token::{generate_secret, JoinToken, TokenError};

use rswarm_proto::model::{NodeId, NodeRole};

/// Organisational unit of manager certificates; also a DNS SAN, so that a manager can be
/// dialled as "swarm-manager" whatever its address.
pub const MANAGER_OU: &str = "swarm-manager";
/// Organisational unit of worker certificates.
pub const WORKER_OU: &str = "swarm-worker";
/// Common name of the root CA; managers also carry it as a SAN (the CA service lives on them).
pub const CA_CN: &str = "swarm-ca";

/// The OU (and role SAN) carried by a certificate of this role.
pub fn role_ou(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => MANAGER_OU,
        NodeRole::Worker => WORKER_OU,
    }
}

fn role_from_ou(ou: &str) -> Option<NodeRole> {
    match ou {
        MANAGER_OU => Some(NodeRole::Manager),
        WORKER_OU => Some(NodeRole::Worker),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a P-256 key")]
    GenerateKey(#[source] rcgen::Error),
    #[error("self-signing the root CA certificate")]
    SelfSign(#[source] rcgen::Error),
    #[error("creating a certificate signing request")]
    CreateCsr(#[source] rcgen::Error),
    #[error("invalid CA certificate: {reason}")]
    InvalidCaCert { reason: String },
    #[error("invalid CA key")]
    InvalidCaKey(#[source] rcgen::Error),
    #[error("the CA key does not belong to the CA certificate")]
    CaKeyMismatch,
    #[error("invalid certificate signing request: {reason}")]
    InvalidCsr { reason: String },
    #[error("the certificate signing request's signature does not verify")]
    CsrSignature,
    #[error("certificate validity of {validity_secs}s is out of range")]
    Validity { validity_secs: u64 },
    #[error("signing the certificate of node {node}")]
    Sign {
        node: NodeId,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid node certificate: {reason}")]
    InvalidCert { reason: String },
}
