//! netd's agent behind the worker's `TaskNetwork` (the worker does not depend on netd; the
//! daemon wires the two together).
use rswarm_netd::agent::NetAgent;
use rswarm_proto::model::{Task, TaskId};
use rswarm_worker::exec::{TaskNet, TaskNetwork};
use std::sync::Arc;

pub struct NetBridge(pub Arc<NetAgent>);

#[tonic::async_trait]
impl TaskNetwork for NetBridge {
    async fn attach(&self, task: &Task) -> Result<Option<TaskNet>, String> {
        let n = self.0.attach(task).await.map_err(|e| e.to_string())?;
        Ok(n.map(|n| TaskNet {
            netns: n.netns,
            address: n.address,
        }))
    }

    async fn detach(&self, task: &TaskId) {
        self.0.detach(task).await;
    }

    async fn set_view(&self, json: &[u8]) {
        self.0.set_view_json(json).await;
    }
}
