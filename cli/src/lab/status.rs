//! `lab status`: each host's address, daemon (from its pid file) and node (role, state,
//! leader, from the daemon itself and from a manager's node list).

use super::layout::Layout;
use super::up::host_url;
use super::{procs, runtime};
use crate::client;
use crate::output::Format;
use rswarm_proto::pb;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// How long one daemon gets to answer; a stopped or stuck daemon must not hang the status.
const ASK: Duration = Duration::from_secs(2);

pub async fn status(dir: &Path, format: Format) -> anyhow::Result<()> {
    let (l, ledger) = super::open(dir)?;
    let mut hosts = Vec::new();
    let mut node_list: Option<Vec<pb::Node>> = None;
    for n in l.hosts() {
        let pid = procs::alive(&l.daemon_pid(n));
        let mut info = None;
        if pid.is_some() {
            let url = host_url(&l, n);
            let ask = async {
                let mut c = client::connect(&url).await?;
                let i = c.info(pb::InfoRequest {}).await?.into_inner();
                let nodes = if i.role == "manager" {
                    c.list_nodes(pb::ListNodesRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner().nodes)
                } else {
                    None
                };
                anyhow::Ok((i, nodes))
            };
            if let Ok(Ok((i, nodes))) = tokio::time::timeout(ASK, ask).await {
                if node_list.is_none() {
                    node_list = nodes;
                }
                info = Some(i);
            }
        }
        hosts.push((n, pid, info));
    }
    let registry_pid = procs::alive(&l.registry_pid());
    let containerd_up = runtime::answers(&ledger.containerd_socket);

    let rows: Vec<Value> = hosts
        .iter()
        .map(|(n, pid, info)| {
            let name = Layout::host_name(*n);
            let node = node_list.as_ref().and_then(|nodes| {
                let by_id = info
                    .as_ref()
                    .and_then(|i| nodes.iter().find(|x| !i.node_id.is_empty() && x.id == i.node_id));
                by_id.or_else(|| {
                    nodes
                        .iter()
                        .find(|x| x.description.as_ref().is_some_and(|d| d.hostname == name))
                })
            });
            let role = info
                .as_ref()
                .map(|i| i.role.clone())
                .filter(|r| !r.is_empty())
                .or_else(|| node.map(|x| x.role.clone()));
            json!({
                "host": name,
                "address": Layout::host_ip(*n).to_string(),
                "netns": l.host_ns(*n),
                "socket": l.socket(*n),
                "daemon": if pid.is_some() { "running" } else { "stopped" },
                "pid": pid,
                "node_id": node.map(|x| x.id.clone()),
                "role": role,
                "state": node.and_then(|x| x.status.as_ref().map(|s| s.state.clone())),
                "leader": node.and_then(|x| x.manager_status.as_ref().map(|m| m.leader)).unwrap_or(false),
            })
        })
        .collect();

    match format {
        Format::Json => super::print(&format!(
            "{:#}\n",
            json!({
                "dir": l.dir,
                "id": l.id,
                "hosts": rows,
                "registry": {
                    "address": Layout::registry_addr(),
                    "netns": l.registry_ns(),
                    "daemon": if registry_pid.is_some() { "running" } else { "stopped" },
                    "pid": registry_pid,
                },
                "containerd": {
                    "socket": ledger.containerd_socket,
                    "started_by_lab": ledger.own_containerd,
                    "answers": containerd_up,
                },
                "ready": ledger.ready,
            })
        )),
        Format::Table => {
            let mut text = format!(
                "Lab in {} (id {}){}; containerd {} ({}, {})\n",
                l.dir.display(),
                l.id,
                if ledger.ready { "" } else { ", not fully up" },
                ledger.containerd_socket.display(),
                if ledger.own_containerd {
                    "started by the lab"
                } else {
                    "the machine's"
                },
                if containerd_up {
                    "answering"
                } else {
                    "not answering"
                },
            );
            let s = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            let mut table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let daemon = match r["pid"].as_u64() {
                        Some(pid) => format!("running (pid {pid})"),
                        None => "stopped".into(),
                    };
                    let mut state = s(&r["state"]);
                    if r["leader"] == Value::Bool(true) {
                        state.push_str(" (leader)");
                    }
                    vec![
                        s(&r["host"]),
                        s(&r["address"]),
                        daemon,
                        s(&r["role"]),
                        state,
                    ]
                })
                .collect();
            table.push(vec![
                "registry".into(),
                Layout::registry_addr(),
                match registry_pid {
                    Some(pid) => format!("running (pid {pid})"),
                    None => "stopped".into(),
                },
                "-".into(),
                "-".into(),
            ]);
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::NOTHING)
                .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
                .set_header(vec!["HOST", "ADDRESS", "DAEMON", "ROLE", "STATE"]);
            for r in table {
                t.add_row(r);
            }
            for line in t.to_string().lines() {
                text.push_str(line.trim_end());
                text.push('\n');
            }
            super::print(&text);
        }
    }
    Ok(())
}
