//! The control API on the Unix socket. Node-local operations go to the runtime; cluster
//! operations to the manager running here, or fail with "this node is not a manager".

use super::node::NodeRuntime;
use rswarm_manager::control as ops;
use rswarm_manager::control_networks as net_ops;
use rswarm_manager::control_secrets as secret_ops;
use rswarm_manager::control_services as svc_ops;
use rswarm_proto::model::NodeRole;
use rswarm_proto::pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ControlService {
    node: Arc<NodeRuntime>,
}

impl ControlService {
    pub fn new(node: Arc<NodeRuntime>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        self.node
            .init(req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.node
            .join(req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.node
            .leave(req.into_inner().force)
            .await
            .map(|()| Response::new(pb::LeaveResponse {}))
            .map_err(Status::from)
    }

    async fn info(
        &self,
        _req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Ok(Response::new(self.node.info().await))
    }

    async fn get_join_token(
        &self,
        req: Request<pb::GetJoinTokenRequest>,
    ) -> Result<Response<pb::GetJoinTokenResponse>, Status> {
        let m = self.node.slot().get()?;
        let req = req.into_inner();
        let role = NodeRole::parse(&req.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "invalid role {:?}: expected worker or manager",
                req.role
            ))
        })?;
        let token = ops::join_token(&m, role, req.rotate).await?;
        Ok(Response::new(pb::GetJoinTokenResponse {
            token,
            manager_addr: ops::join_addr(&m),
        }))
    }

    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let m = self.node.slot().get()?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: ops::list_nodes(&m),
        }))
    }

    async fn update_node(
        &self,
        req: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeResponse>, Status> {
        let m = self.node.slot().get()?;
        let node = ops::update_node(&m, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateNodeResponse { node: Some(node) }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let m = self.node.slot().get()?;
        let req = req.into_inner();
        ops::remove_node(&m, &req.node, req.force).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn create_service(
        &self,
        req: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let m = self.node.slot().get()?;
        let resp = svc_ops::create_service(&m, req.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn list_services(
        &self,
        _req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let m = self.node.slot().get()?;
        Ok(Response::new(pb::ListServicesResponse {
            services: svc_ops::list_services(&m),
        }))
    }

    async fn update_service(
        &self,
        req: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let m = self.node.slot().get()?;
        let resp = svc_ops::update_service(&m, req.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn remove_service(
        &self,
        req: Request<pb::RemoveServiceRequest>,
    ) -> Result<Response<pb::RemoveServiceResponse>, Status> {
        let m = self.node.slot().get()?;
        svc_ops::remove_service(&m, &req.into_inner().service).await?;
        Ok(Response::new(pb::RemoveServiceResponse {}))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let m = self.node.slot().get()?;
        let tasks = svc_ops::list_tasks(&m, req.get_ref())?;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    type ServiceLogsStream = svc_ops::LogStream;

    async fn service_logs(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> Result<Response<svc_ops::LogStream>, Status> {
        let m = self.node.slot().get()?;
        let stream = svc_ops::service_logs(&m, req.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let m = self.node.slot().get()?;
        let out = svc_ops::exec(&m, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        let m = self.node.slot().get()?;
        let network = net_ops::create_network(&m, req.into_inner().spec).await?;
        Ok(Response::new(pb::CreateNetworkResponse {
            network: Some(network),
        }))
    }

    async fn list_networks(
        &self,
        _req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let m = self.node.slot().get()?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: net_ops::list_networks(&m),
        }))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let m = self.node.slot().get()?;
        net_ops::remove_network(&m, &req.into_inner().network).await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn create_secret(
        &self,
        req: Request<pb::CreateSecretRequest>,
    ) -> Result<Response<pb::CreateSecretResponse>, Status> {
        let m = self.node.slot().get()?;
        let secret = secret_ops::create_secret(&m, req.into_inner().spec).await?;
        Ok(Response::new(pb::CreateSecretResponse {
            secret: Some(secret),
        }))
    }

    async fn list_secrets(
        &self,
        _req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let m = self.node.slot().get()?;
        Ok(Response::new(pb::ListSecretsResponse {
            secrets: secret_ops::list_secrets(&m),
        }))
    }

    async fn remove_secret(
        &self,
        req: Request<pb::RemoveSecretRequest>,
    ) -> Result<Response<pb::RemoveSecretResponse>, Status> {
        let m = self.node.slot().get()?;
        secret_ops::remove_secret(&m, &req.into_inner().secret).await?;
        Ok(Response::new(pb::RemoveSecretResponse {}))
    }

    async fn create_config(
        &self,
        req: Request<pb::CreateConfigRequest>,
    ) -> Result<Response<pb::CreateConfigResponse>, Status> {
        let m = self.node.slot().get()?;
        let config = secret_ops::create_config(&m, req.into_inner().spec).await?;
        Ok(Response::new(pb::CreateConfigResponse {
            config: Some(config),
        }))
    }

    async fn list_configs(
        &self,
        _req: Request<pb::ListConfigsRequest>,
    ) -> Result<Response<pb::ListConfigsResponse>, Status> {
        let m = self.node.slot().get()?;
        Ok(Response::new(pb::ListConfigsResponse {
            configs: secret_ops::list_configs(&m),
        }))
    }

    async fn remove_config(
        &self,
        req: Request<pb::RemoveConfigRequest>,
    ) -> Result<Response<pb::RemoveConfigResponse>, Status> {
        let m = self.node.slot().get()?;
        secret_ops::remove_config(&m, &req.into_inner().config).await?;
        Ok(Response::new(pb::RemoveConfigResponse {}))
    }

    async fn rollback_service(
        &self,
        req: Request<pb::RollbackServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let m = self.node.slot().get()?;
        let service = svc_ops::rollback_service(&m, &req.into_inner().service).await?;
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some(service),
            warnings: Vec::new(),
        }))
    }
}
