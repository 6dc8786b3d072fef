//! `rswarm network ...`: overlay networks. The managers allocate each one's subnet,
//! gateway and VNI; the plumbing on the nodes is netd's.

use crate::client;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use rswarm_proto::model::NetworkSpec;
use rswarm_proto::pb;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create an overlay network.
    Create(CreateArgs),
    /// List networks.
    Ls(FormatArg),
    /// Show networks in full.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove networks (refused while a service uses one).
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The driver; overlay is the only one.
    #[arg(short, long, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR form, e.g. 10.31.0.0/24 (default: the next free /24 of 10.0.0.0/8).
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway's address, inside --subnet (default: its first host).
    #[arg(long)]
    gateway: Option<String>,
    /// Let standalone containers attach.
    #[arg(long)]
    attachable: bool,
    /// No access to the outside world.
    #[arg(long)]
    internal: bool,
    /// KEY=VALUE; repeatable.
    #[arg(long = "label")]
    label: Vec<String>,
    name: String,
}

/// The spec the flags describe; checked here with the same rules the manager applies, so
/// bad syntax fails before anything is sent.
fn spec_from_args(a: &CreateArgs) -> anyhow::Result<pb::NetworkSpec> {
    let mut labels = std::collections::HashMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            anyhow::bail!("invalid --label {l:?}: expected KEY=VALUE");
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    let spec = pb::NetworkSpec {
        name: a.name.clone(),
        driver: a.driver.clone(),
        labels,
        attachable: a.attachable,
        internal: a.internal,
        ingress: false,
        ipam: Some(pb::IpamConfig {
            subnet: a.subnet.clone().unwrap_or_default(),
            gateway: a.gateway.clone().unwrap_or_default(),
        }),
    };
    NetworkSpec::try_from(spec.clone())?;
    Ok(spec)
}

fn spec_of(n: &pb::Network) -> pb::NetworkSpec {
    n.spec.clone().unwrap_or_default()
}

/// A row of `network ls --format json`.
pub fn ls_row(n: &pb::Network) -> Value {
    let spec = spec_of(n);
    let alloc = n.allocation.clone().unwrap_or_default();
    let labels: std::collections::BTreeMap<_, _> = spec.labels.into_iter().collect();
    json!({
        "id": n.id,
        "name": spec.name,
        "driver": spec.driver,
        "scope": "swarm",
        "subnet": alloc.subnet,
        "gateway": alloc.gateway,
        "vni": alloc.vni,
        "attachable": spec.attachable,
        "internal": spec.internal,
        "ingress": spec.ingress,
        "labels": labels,
    })
}

/// `network inspect`: the fields of `ls`, then the object in full.
pub fn inspect_value(n: &pb::Network) -> Value {
    let spec = spec_of(n);
    let meta = n.meta.unwrap_or_default();
    let alloc = n.allocation.clone().unwrap_or_default();
    let ipam = spec.ipam.clone().unwrap_or_default();
    let mut v = ls_row(n);
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), json!(meta.version));
        m.insert("created_at".into(), json!(meta.created_at));
        m.insert("updated_at".into(), json!(meta.updated_at));
        m.insert(
            "spec".into(),
            json!({
                "name": spec.name,
                "driver": spec.driver,
                "labels": spec.labels.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "attachable": spec.attachable,
                "internal": spec.internal,
                "ingress": spec.ingress,
                "ipam": { "subnet": nonempty(&ipam.subnet), "gateway": nonempty(&ipam.gateway) },
            }),
        );
        m.insert(
            "allocation".into(),
            json!({ "subnet": alloc.subnet, "gateway": alloc.gateway, "vni": alloc.vni }),
        );
    }
    v
}

/// Finds a network by id, name, or unique id prefix, as the managers do.
fn find<'a>(all: &'a [pb::Network], key: &str) -> anyhow::Result<&'a pb::Network> {
    let name = |n: &pb::Network| n.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    if let Some(n) = all.iter().find(|n| n.id == key) {
        return Ok(n);
    }
    if let Some(n) = all.iter().find(|n| name(n) == key) {
        return Ok(n);
    }
    let by_prefix: Vec<_> = all
        .iter()
        .filter(|n| !key.is_empty() && n.id.starts_with(key))
        .collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0]),
        0 => anyhow::bail!("network {key} not found"),
        _ => anyhow::bail!("network {key} is ambiguous: use a longer id"),
    }
}

pub async fn run(host: &str, cmd: NetworkCommand) -> anyhow::Result<()> {
    // Flags are checked before the daemon is asked anything.
    let create_spec = match &cmd {
        NetworkCommand::Create(a) => Some(spec_from_args(a)?),
        _ => None,
    };
    let mut c = client::connect(host).await?;
    match cmd {
        NetworkCommand::Create(_) => {
            let network = c
                .create_network(pb::CreateNetworkRequest { spec: create_spec })
                .await?
                .into_inner()
                .network
                .ok_or_else(|| anyhow::anyhow!("the daemon returned no network"))?;
            println!("{}", network.id);
        }
        NetworkCommand::Ls(f) => {
            let mut networks = c
                .list_networks(pb::ListNetworksRequest {})
                .await?
                .into_inner()
                .networks;
            networks.sort_by_key(|n| spec_of(n).name);
            match f.format {
                Format::Json => output::json(&Value::Array(networks.iter().map(ls_row).collect()))?,
                Format::Table => {
                    let rows = networks
                        .iter()
                        .map(|n| {
                            let r = ls_row(n);
                            let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                            vec![
                                n.id.chars().take(12).collect(),
                                s("name"),
                                s("driver"),
                                s("scope"),
                                s("subnet"),
                            ]
                        })
                        .collect();
                    output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], rows);
                }
            }
        }
        NetworkCommand::Inspect { networks, format } => {
            let all = c
                .list_networks(pb::ListNetworksRequest {})
                .await?
                .into_inner()
                .networks;
            let mut out = Vec::new();
            for key in &networks {
                out.push(inspect_value(find(&all, key)?));
            }
            // JSON is the only way `inspect` prints, as for services.
            let _ = format;
            output::json(&Value::Array(out))?;
        }
        NetworkCommand::Rm { networks } => {
            for n in networks {
                c.remove_network(pb::RemoveNetworkRequest { network: n.clone() })
                    .await?;
                println!("{n}");
            }
        }
    }
    Ok(())
}
