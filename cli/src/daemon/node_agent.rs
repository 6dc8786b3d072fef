//! The `NodeAgent` service on every node's cluster port: container logs for managers.

use futures::StreamExt;
use rswarm_manager::tls::peer_info;
use rswarm_proto::model::{NodeRole, TaskId};
use rswarm_proto::pb;
use rswarm_worker::containerd::{follow_logs, read_logs, LogLine, LogStream};
use rswarm_worker::tasks::TaskManager;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct NodeAgentService {
    tasks: Option<Arc<TaskManager>>,
}

impl NodeAgentService {
    pub fn new(tasks: Option<Arc<TaskManager>>) -> Self {
        Self { tasks }
    }
}

/// Commands run by `rswarm exec` may take this long unless the caller says otherwise.
const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

fn require_manager<T>(req: &Request<T>) -> Result<(), Status> {
    // The TLS handshake checked the certificate against the cluster CA; these RPCs are for
    // managers only.
    let who = peer_info(req)
        .ok_or_else(|| Status::unauthenticated("a cluster certificate is required"))?;
    if who.role != NodeRole::Manager {
        return Err(Status::permission_denied(
            "a manager certificate is required",
        ));
    }
    Ok(())
}

fn message(task: &str, l: LogLine) -> pb::LogMessage {
    pb::LogMessage {
        task_id: task.to_owned(),
        stream: match l.stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
        .into(),
        timestamp: l.time,
        line: l.line,
        ..Default::default()
    }
}

type LogsStream = Pin<Box<dyn futures::Stream<Item = Result<pb::LogMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_agent_server::NodeAgent for NodeAgentService {
    type TaskLogsStream = LogsStream;

    async fn task_logs(
        &self,
        req: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<LogsStream>, Status> {
        // The TLS handshake checked the certificate against the cluster CA; logs are for
        // managers only.
        let who = peer_info(&req)
            .ok_or_else(|| Status::unauthenticated("a cluster certificate is required"))?;
        if who.role != NodeRole::Manager {
            return Err(Status::permission_denied(
                "a manager certificate is required",
            ));
        }
        let tm = self
            .tasks
            .clone()
            .ok_or_else(|| Status::failed_precondition("this node has no container runtime"))?;
        let req = req.into_inner();
        let tail = usize::try_from(req.tail).ok();
        let mut first = Vec::new();
        let mut follows = Vec::new();
        for id in req.task_ids {
            let path = tm.executor().log_file(&TaskId(id.clone()));
            let (lines, offset) =
                read_logs(&path, tail).map_err(|e| Status::internal(format!("read logs: {e}")))?;
            first.extend(lines.into_iter().map(|l| message(&id, l)));
            if req.follow {
                let task = id.clone();
                follows.push(
                    follow_logs(path, offset)
                        .map(move |r| {
                            r.map(|l| message(&task, l))
                                .map_err(|e| Status::internal(format!("follow logs: {e}")))
                        })
                        .boxed(),
                );
            }
        }
        first.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        let head = futures::stream::iter(first.into_iter().map(Ok));
        if req.follow {
            Ok(Response::new(
                head.chain(futures::stream::select_all(follows)).boxed(),
            ))
        } else {
            Ok(Response::new(head.boxed()))
        }
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        require_manager(&req)?;
        let tm = self
            .tasks
            .clone()
            .ok_or_else(|| Status::failed_precondition("this node has no container runtime"))?;
        let req = req.into_inner();
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("no command to run"));
        }
        let task = tm.task(&TaskId(req.task.clone())).ok_or_else(|| {
            Status::not_found(format!("task {} does not run on this node", req.task))
        })?;
        let timeout = if req.timeout_ms == 0 {
            EXEC_TIMEOUT
        } else {
            std::time::Duration::from_millis(req.timeout_ms)
        };
        let mut ctl = tm
            .executor()
            .controller(&task)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let out = ctl
            .exec(&req.cmd, timeout)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::ExecResponse {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
        }))
    }
}
