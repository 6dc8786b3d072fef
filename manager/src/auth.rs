//! Who may call what on the cluster port. Every RPC but `NodeCa.Join` needs a certificate
//! from the cluster CA (checked in the TLS handshake); these helpers read the identity it
//! carries and refuse removed nodes and workers where a manager is required.

use crate::ca::CertInfo;
use crate::store::Store;
use rswarm_proto::model::NodeRole;
use tonic::{Request, Status};

/// The caller's identity; refused without a certificate or when its node was removed.
pub fn require_node<T>(req: &Request<T>, store: &Store) -> Result<CertInfo, Status> {
    let info = crate::tls::peer_info(req)
        .ok_or_else(|| Status::unauthenticated("a cluster certificate is required"))?;
    let (removed, cluster_ok) = store.view(|s| {
        (
            s.is_removed(&info.node_id),
            s.cluster.as_ref().is_none_or(|c| c.id == info.cluster_id),
        )
    });
    if removed {
        return Err(Status::permission_denied(format!(
            "node {} was removed from the cluster",
            info.node_id
        )));
    }
    if !cluster_ok {
        return Err(Status::permission_denied("certificate of another cluster"));
    }
    Ok(info)
}

/// As [`require_node`], and the certificate must be a manager's.
pub fn require_manager<T>(req: &Request<T>, store: &Store) -> Result<CertInfo, Status> {
    let info = require_node(req, store)?;
    if info.role != NodeRole::Manager {
        return Err(Status::permission_denied(
            "a manager certificate is required",
        ));
    }
    Ok(info)
}
