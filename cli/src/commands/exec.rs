//! `rswarm exec TASK -- CMD [ARG...]`: a command in a task's container, on whatever node it
//! runs. Swarm has no such thing; it saves an ssh to the node and a `docker exec`.

use crate::client;
use clap::Args;
use rswarm_proto::pb;
use std::io::Write;

#[derive(Args)]
pub struct ExecArgs {
    /// A task id, `service.slot`, or a service name (any running task of it).
    task: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// Runs the command; returns its exit code.
pub async fn run(host: &str, a: ExecArgs) -> anyhow::Result<i32> {
    let mut c = client::connect(host).await?;
    let out = c
        .exec(pb::ExecRequest {
            task: a.task,
            cmd: a.cmd,
            timeout_ms: 0,
        })
        .await?
        .into_inner();
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(out.exit_code)
}
