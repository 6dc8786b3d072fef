//! Raft's client side: openraft messages to peers over the `Raft` gRPC service.

use super::TypeConfig;
use crate::connector::Connector;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use rswarm_proto::pb;
use rswarm_proto::pb::raft_client::RaftClient;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

type NodeIdT = u64;

/// Makes one client per peer; openraft asks again after errors.
#[derive(Clone)]
pub struct Network {
    connector: Arc<dyn Connector>,
}

impl Network {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeIdT, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            client: self.connector.channel(&node.addr).ok().map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES)
            }),
        }
    }
}

pub struct PeerClient {
    target: NodeIdT,
    addr: String,
    client: Option<RaftClient<tonic::transport::Channel>>,
}

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("no channel to {0}")]
    NoChannel(String),
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("rpc to {addr}: {status}")]
    Rpc { addr: String, status: tonic::Status },
}

impl PeerClient {
    /// Sends `req` with `call` and decodes the peer's `Result<Resp, E>`.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<NodeIdT, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<tonic::transport::Channel>, tonic::Request<pb::RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<pb::RaftMessage>, tonic::Status>>,
    {
        let client = self.client.clone().ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&PeerError::NoChannel(self.addr.clone())))
        })?;
        let data = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&PeerError::Encode(e))))?;
        let mut request = tonic::Request::new(pb::RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        let resp = call(client, request).await.map_err(|status| {
            let unreachable = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            );
            let err = PeerError::Rpc {
                addr: self.addr.clone(),
                status,
            };
            if unreachable {
                RPCError::Unreachable(Unreachable::new(&err))
            } else {
                RPCError::Network(NetworkError::new(&err))
            }
        })?;
        let result: Result<Resp, E> = serde_json::from_slice(&resp.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&PeerError::Encode(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeIdT>, RPCError<NodeIdT, BasicNode, RaftError<NodeIdT>>>
    {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeIdT>,
        RPCError<NodeIdT, BasicNode, RaftError<NodeIdT, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeIdT>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeIdT>, RPCError<NodeIdT, BasicNode, RaftError<NodeIdT>>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}
