//! The `NodeCa` service: joining the cluster with a token, and certificate renewal.

use crate::auth;
use crate::ca::{JoinToken, RootCa};
use crate::dispatcher::manager_peers;
use crate::ids::{new_node_id, new_raft_id, now_ms};
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use crate::slot::ManagerSlot;
use rswarm_proto::model::{
    Cluster, Command, ManagerInfo, Meta, Node, NodeRole, NodeSpec, NodeState, NodeStatus,
};
use rswarm_proto::pb;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::info;

pub struct NodeCaService {
    slot: ManagerSlot,
}

impl NodeCaService {
    pub fn new(slot: ManagerSlot) -> Self {
        Self { slot }
    }
}

fn root_ca(cluster: &Cluster) -> Result<RootCa, Status> {
    RootCa::from_pem(&cluster.root_ca.cert_pem, &cluster.root_ca.key_pem)
        .map_err(|e| Status::internal(format!("cluster CA: {e}")))
}

fn cluster_of(m: &Manager) -> Result<Cluster, Status> {
    m.store
        .view(|s| s.cluster.clone())
        .ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))
}

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Refused(e) => Status::failed_precondition(e.to_string()),
        e => Status::unavailable(e.to_string()),
    }
}

/// Which role a token grants, or why it grants none.
pub fn role_for_token(token: &str, cluster: &Cluster, ca: &RootCa) -> Result<NodeRole, Status> {
    let invalid =
        || Status::permission_denied("a valid join token is necessary to join this cluster");
    let t = JoinToken::parse(token).map_err(|_| Status::invalid_argument("invalid join token"))?;
    if !t.matches_ca(ca.cert_der()) {
        return Err(invalid());
    }
    if t.secret_matches(&cluster.join_secrets.manager) {
        Ok(NodeRole::Manager)
    } else if t.secret_matches(&cluster.join_secrets.worker) {
        Ok(NodeRole::Worker)
    } else {
        Err(invalid())
    }
}

#[tonic::async_trait]
impl pb::node_ca_server::NodeCa for NodeCaService {
    async fn join(
        &self,
        req: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let m = self.slot.get()?;
        if !m.is_leader() {
            // Joins change the store; the leader does them.
            let (_, addr) = m.leader().ok_or_else(|| {
                Status::unavailable("no leader: the cluster is electing one or has lost its quorum")
            })?;
            let channel = m
                .connector
                .channel(&addr)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            return pb::node_ca_client::NodeCaClient::new(channel)
                .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
                .join(req.into_inner())
                .await;
        }
        let body = req.into_inner();
        let cluster = cluster_of(&m)?;
        let ca = root_ca(&cluster)?;
        let role = role_for_token(&body.token, &cluster, &ca)?;
        let addr: SocketAddr = body.advertise_addr.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "invalid advertise address {:?}: expected IP:PORT",
                body.advertise_addr
            ))
        })?;

        let node_id = new_node_id();
        let validity = Duration::from_secs(cluster.spec.cert_expiry_secs);
        let cert_pem = ca
            .sign_csr(&body.csr_pem, &node_id, role, &cluster.id, validity)
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        let raft_id = (role == NodeRole::Manager).then(new_raft_id);
        let now = now_ms();
        let node = Node {
            id: node_id.clone(),
            meta: Meta {
                version: 0,
                created_at: now,
                updated_at: now,
            },
            spec: NodeSpec {
                desired_role: role,
                ..Default::default()
            },
            description: body
                .description
                .map(crate::control::description_from_pb)
                .unwrap_or_default(),
            status: NodeStatus {
                state: NodeState::Unknown,
                message: String::new(),
                addr: addr.ip().to_string(),
            },
            // A joining manager is in effect a manager once it is a Raft voter.
            role: NodeRole::Worker,
            manager: raft_id.map(|raft_id| ManagerInfo {
                raft_id,
                addr: addr.to_string(),
            }),
            cluster_addr: addr.to_string(),
        };
        m.proposer
            .propose(Command::CreateNode(Box::new(node)))
            .await
            .map_err(propose_status)?;
        info!(node.id = %node_id, role = role.as_str(), "node joined");
        let managers = m.store.view(|s| {
            let all: Vec<&Node> = s.nodes.values().collect();
            manager_peers(&all)
        });
        Ok(Response::new(pb::JoinClusterResponse {
            node_id: node_id.to_string(),
            cluster_id: cluster.id.to_string(),
            role: role.as_str().to_owned(),
            cert_pem,
            ca_cert_pem: ca.cert_pem().to_owned(),
            managers,
            raft_id: raft_id.unwrap_or(0),
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let m = self.slot.get()?;
        let who = auth::require_node(&req, &m.store)?;
        let node = m
            .store
            .view(|s| s.nodes.get(&who.node_id).cloned())
            .ok_or_else(|| Status::not_found(format!("node {} not found", who.node_id)))?;
        let cluster = cluster_of(&m)?;
        let ca = root_ca(&cluster)?;
        // A manager certificate while the node is, or is becoming, a manager.
        let role = if node.spec.desired_role == NodeRole::Manager || node.role == NodeRole::Manager
        {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        let validity = Duration::from_secs(cluster.spec.cert_expiry_secs);
        let cert_pem = ca
            .sign_csr(
                &req.get_ref().csr_pem,
                &node.id,
                role,
                &cluster.id,
                validity,
            )
            .map_err(|e| Status::invalid_argument(format!("certificate request: {e}")))?;
        info!(node.id = %node.id, role = role.as_str(), "certificate issued");
        Ok(Response::new(pb::RenewResponse {
            cert_pem,
            ca_cert_pem: ca.cert_pem().to_owned(),
            role: role.as_str().to_owned(),
        }))
    }
}
