//! `rswarm node ...`

use crate::client;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use rswarm_proto::pb;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    Ls(FormatArg),
    /// Show nodes in full.
    Inspect {
        #[arg(required = true)]
        nodes: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List the tasks on nodes (default: this node).
    Ps {
        nodes: Vec<String>,
        /// desired-state=running|shutdown|accepted
        #[arg(short, long)]
        filter: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change a node's availability or labels.
    Update(UpdateArgs),
    /// Make workers managers.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove nodes from the cluster.
    Rm {
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Remove a node even if it is not down.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// active, pause or drain.
    #[arg(long, value_parser = ["active", "pause", "drain"])]
    availability: Option<String>,
    /// Add or change a label (key=value); repeatable.
    #[arg(long = "label-add")]
    label_add: Vec<String>,
    /// Remove a label by key; repeatable.
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    node: String,
}

fn hostname(n: &pb::Node) -> &str {
    n.description.as_ref().map_or("", |d| d.hostname.as_str())
}

/// The `node ls --format json` row.
pub fn ls_row(n: &pb::Node) -> Value {
    let spec = n.spec.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let labels: serde_json::Map<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    json!({
        "id": n.id,
        "hostname": hostname(n),
        "role": spec.desired_role,
        "availability": spec.availability,
        "state": status.state,
        "leader": n.manager_status.as_ref().is_some_and(|m| m.leader),
        "manager_status": n.manager_status.as_ref().map(|m| if m.leader { "leader".to_owned() } else { m.reachability.clone() }),
        "addr": status.addr,
        "labels": labels,
        "engine_version": n.description.as_ref().map(|d| d.engine_version.clone()),
    })
}

/// The full object for `node inspect`.
pub fn inspect_value(n: &pb::Node) -> Value {
    let meta = n.meta.unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let d = n.description.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let labels: std::collections::BTreeMap<_, _> = spec.labels.into_iter().collect();
    json!({
        "id": n.id,
        "version": meta.version,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
        "spec": { "role": spec.desired_role, "availability": spec.availability, "labels": labels },
        "description": {
            "hostname": d.hostname, "platform": { "os": d.os, "architecture": d.arch },
            "resources": { "nano_cpus": u64::from(d.cpus) * 1_000_000_000, "memory_bytes": d.memory_bytes },
            "engine_version": d.engine_version,
        },
        "status": { "state": status.state, "message": status.message, "addr": status.addr },
        "role": n.role,
        "manager_status": n.manager_status.as_ref().map(|m| json!({
            "raft_id": m.raft_id, "addr": m.addr, "leader": m.leader, "reachability": m.reachability,
        })),
    })
}

pub async fn run(host: &str, cmd: NodeCommand) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    match cmd {
        NodeCommand::Ls(f) => {
            let self_id = c.info(pb::InfoRequest {}).await?.into_inner().node_id;
            let mut nodes = c
                .list_nodes(pb::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            nodes.sort_by(|a, b| hostname(a).cmp(hostname(b)).then(a.id.cmp(&b.id)));
            match f.format {
                Format::Json => output::json(&Value::Array(nodes.iter().map(ls_row).collect()))?,
                Format::Table => {
                    let rows = nodes
                        .iter()
                        .map(|n| {
                            let row = ls_row(n);
                            let s = |k: &str| row[k].as_str().unwrap_or("").to_owned();
                            let mark = if n.id == self_id { " *" } else { "" };
                            vec![
                                format!("{}{mark}", n.id),
                                s("hostname"),
                                capitalize(&s("state")),
                                capitalize(&s("availability")),
                                capitalize(&s("manager_status")),
                                s("engine_version"),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "ID",
                            "HOSTNAME",
                            "STATUS",
                            "AVAILABILITY",
                            "MANAGER STATUS",
                            "ENGINE VERSION",
                        ],
                        rows,
                    );
                }
            }
        }
        NodeCommand::Inspect { nodes, format } => {
            let all = c
                .list_nodes(pb::ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            let mut out = Vec::new();
            for key in &nodes {
                out.push(inspect_value(find(&all, key)?));
            }
            let _ = format;
            output::json(&Value::Array(out))?;
        }
        NodeCommand::Ps {
            nodes,
            filter,
            format,
        } => {
            let desired = crate::commands::service::desired_filter(&filter)?;
            let nodes = if nodes.is_empty() {
                vec![c.info(pb::InfoRequest {}).await?.into_inner().node_id]
            } else {
                nodes
            };
            let mut all = Vec::new();
            for n in nodes {
                let tasks = c
                    .list_tasks(pb::ListTasksRequest {
                        service: String::new(),
                        node: n,
                        desired_state: desired.clone(),
                    })
                    .await?
                    .into_inner()
                    .tasks;
                all.extend(tasks);
            }
            crate::commands::service::print_tasks(all, format.format)?;
        }
        NodeCommand::Update(a) => {
            let mut label_add = std::collections::HashMap::new();
            for l in &a.label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    anyhow::bail!("invalid label {l:?}: expected key=value");
                }
                label_add.insert(k.to_owned(), v.to_owned());
            }
            let n = c
                .update_node(pb::UpdateNodeRequest {
                    node: a.node.clone(),
                    availability: a.availability.unwrap_or_default(),
                    label_add,
                    label_rm: a.label_rm,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("{}", n.node.map(|n| n.id).unwrap_or(a.node));
        }
        NodeCommand::Promote { nodes } => {
            for n in nodes {
                set_role(&mut c, &n, "manager").await?;
                println!("Node {n} promoted to a manager in the swarm.");
            }
        }
        NodeCommand::Demote { nodes } => {
            for n in nodes {
                set_role(&mut c, &n, "worker").await?;
                println!("Manager {n} demoted in the swarm.");
            }
        }
        NodeCommand::Rm { nodes, force } => {
            for n in nodes {
                c.remove_node(pb::RemoveNodeRequest {
                    node: n.clone(),
                    force,
                })
                .await?;
                println!("{n}");
            }
        }
    }
    Ok(())
}

async fn set_role(
    c: &mut rswarm_proto::pb::control_client::ControlClient<tonic::transport::Channel>,
    node: &str,
    role: &str,
) -> anyhow::Result<()> {
    c.update_node(pb::UpdateNodeRequest {
        node: node.to_owned(),
        desired_role: role.to_owned(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Finds a node by id, unique id prefix or hostname, as the manager does.
fn find<'a>(all: &'a [pb::Node], key: &str) -> anyhow::Result<&'a pb::Node> {
    if let Some(n) = all.iter().find(|n| n.id == key) {
        return Ok(n);
    }
    let by_prefix: Vec<_> = all.iter().filter(|n| n.id.starts_with(key)).collect();
    if by_prefix.len() == 1 {
        return Ok(by_prefix[0]);
    }
    if by_prefix.len() > 1 {
        anyhow::bail!("node {key} is ambiguous: use a longer id");
    }
    let by_name: Vec<_> = all.iter().filter(|n| hostname(n) == key).collect();
    match by_name.len() {
        1 => Ok(by_name[0]),
        0 => anyhow::bail!("node {key} not found"),
        _ => anyhow::bail!("node {key} is ambiguous: use its id"),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
