//! Raft's server side: the `Raft` gRPC service on the cluster port, for managers only.

use crate::auth;
use crate::slot::ManagerSlot;
use rswarm_proto::model::Command;
use rswarm_proto::pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

pub struct RaftService {
    slot: ManagerSlot,
}

impl RaftService {
    pub fn new(slot: ManagerSlot) -> Self {
        Self { slot }
    }
}

fn decode<T: DeserializeOwned>(req: &pb::RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&req.data)
        .map_err(|e| Status::invalid_argument(format!("decode raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<pb::RaftMessage>, Status> {
    serde_json::to_vec(v)
        .map(|data| Response::new(pb::RaftMessage { data }))
        .map_err(|e| Status::internal(format!("encode raft message: {e}")))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let m = self.slot.get()?;
        auth::require_manager(&req, &m.store)?;
        let rpc = decode(req.get_ref())?;
        encode(&m.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let m = self.slot.get()?;
        auth::require_manager(&req, &m.store)?;
        let rpc = decode(req.get_ref())?;
        encode(&m.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let m = self.slot.get()?;
        auth::require_manager(&req, &m.store)?;
        let rpc = decode(req.get_ref())?;
        encode(&m.raft.install_snapshot(rpc).await)
    }

    async fn propose(
        &self,
        req: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let m = self.slot.get()?;
        auth::require_manager(&req, &m.store)?;
        let cmd: Command = decode(req.get_ref())?;
        encode(&m.proposer.propose_local(cmd).await)
    }
}
