//! `rswarm secret ...` and `rswarm config ...`: named data that services mount as files.
//! A secret's data is never shown again once created; a config's is (`inspect`).

use crate::client;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use rswarm_proto::model::{valid_secret_name, MAX_SECRET_BYTES};
use rswarm_proto::pb;
use rswarm_proto::pb::control_client::ControlClient;
use serde_json::{json, Value};
use std::io::Read;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create one from a file, or from standard input with `-`.
    Create(CreateArgs),
    /// List them.
    Ls(FormatArg),
    /// Show them in full (a secret's data is never shown).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove them (refused while a service uses one).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
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
    /// KEY=VALUE; repeatable.
    #[arg(short, long = "label")]
    label: Vec<String>,
    name: String,
    /// A file, or `-` for standard input.
    file: String,
}

/// Reads at most the size limit (500 KiB), refusing more.
fn read_data(kind: Kind, file: &str) -> anyhow::Result<Vec<u8>> {
    let limit = MAX_SECRET_BYTES as u64 + 1;
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| anyhow::anyhow!("read standard input: {e}"))?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|e| anyhow::anyhow!("read {file}: {e}"))?;
    }
    if data.len() > MAX_SECRET_BYTES {
        anyhow::bail!(
            "{} data is too long: the limit is {MAX_SECRET_BYTES} bytes (500 KiB)",
            kind.name()
        );
    }
    if data.is_empty() {
        anyhow::bail!("{} data is empty", kind.name());
    }
    Ok(data)
}

fn spec_of(x: &pb::Secret) -> pb::SecretSpec {
    x.spec.clone().unwrap_or_default()
}

/// A row of `ls --format json`.
fn ls_row(x: &pb::Secret) -> Value {
    let meta = x.meta.unwrap_or_default();
    json!({
        "id": x.id,
        "name": spec_of(x).name,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
    })
}

fn inspect_value(kind: Kind, x: &pb::Secret) -> Value {
    let spec = spec_of(x);
    let meta = x.meta.unwrap_or_default();
    let labels: std::collections::BTreeMap<_, _> = spec.labels.into_iter().collect();
    let mut spec_json = json!({ "name": spec.name, "labels": labels });
    if kind == Kind::Config {
        spec_json["data"] = json!(String::from_utf8_lossy(&spec.data));
    }
    json!({
        "id": x.id,
        "name": spec_of(x).name,
        "version": meta.version,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
        "spec": spec_json,
    })
}

/// By id, name, or unique id prefix, as the managers find them.
fn find<'a>(kind: Kind, all: &'a [pb::Secret], key: &str) -> anyhow::Result<&'a pb::Secret> {
    if let Some(x) = all.iter().find(|x| x.id == key) {
        return Ok(x);
    }
    if let Some(x) = all.iter().find(|x| spec_of(x).name == key) {
        return Ok(x);
    }
    let by_prefix: Vec<_> = all
        .iter()
        .filter(|x| !key.is_empty() && x.id.starts_with(key))
        .collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0]),
        0 => anyhow::bail!("{} {key} not found", kind.name()),
        _ => anyhow::bail!("{} {key} is ambiguous: use a longer id", kind.name()),
    }
}

async fn list(
    c: &mut ControlClient<tonic::transport::Channel>,
    kind: Kind,
) -> anyhow::Result<Vec<pb::Secret>> {
    Ok(match kind {
        Kind::Secret => {
            c.list_secrets(pb::ListSecretsRequest {})
                .await?
                .into_inner()
                .secrets
        }
        Kind::Config => {
            c.list_configs(pb::ListConfigsRequest {})
                .await?
                .into_inner()
                .configs
        }
    })
}

pub async fn run(host: &str, kind: Kind, cmd: SecretCommand) -> anyhow::Result<()> {
    // Arguments are checked before the daemon is asked anything.
    let create = match &cmd {
        SecretCommand::Create(a) => {
            if !valid_secret_name(&a.name) {
                anyhow::bail!(
                    "invalid {} name {:?}: use 1-64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    kind.name(),
                    a.name
                );
            }
            let mut labels = std::collections::HashMap::new();
            for l in &a.label {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    anyhow::bail!("invalid --label {l:?}: expected KEY=VALUE");
                }
                labels.insert(k.to_owned(), v.to_owned());
            }
            Some(pb::SecretSpec {
                name: a.name.clone(),
                labels,
                data: read_data(kind, &a.file)?,
            })
        }
        _ => None,
    };
    let mut c = client::connect(host).await?;
    match cmd {
        SecretCommand::Create(_) => {
            let id = match kind {
                Kind::Secret => c
                    .create_secret(pb::CreateSecretRequest { spec: create })
                    .await?
                    .into_inner()
                    .secret
                    .map(|x| x.id),
                Kind::Config => c
                    .create_config(pb::CreateConfigRequest { spec: create })
                    .await?
                    .into_inner()
                    .config
                    .map(|x| x.id),
            };
            println!("{}", id.unwrap_or_default());
        }
        SecretCommand::Ls(f) => {
            let mut all = list(&mut c, kind).await?;
            all.sort_by_key(|x| spec_of(x).name);
            match f.format {
                Format::Json => output::json(&Value::Array(all.iter().map(ls_row).collect()))?,
                Format::Table => {
                    let rows = all
                        .iter()
                        .map(|x| vec![x.id.chars().take(25).collect(), spec_of(x).name])
                        .collect();
                    output::table(&["ID", "NAME"], rows);
                }
            }
        }
        SecretCommand::Inspect { names, format } => {
            let all = list(&mut c, kind).await?;
            let mut out = Vec::new();
            for key in &names {
                out.push(inspect_value(kind, find(kind, &all, key)?));
            }
            // JSON is the only way `inspect` prints.
            let _ = format;
            output::json(&Value::Array(out))?;
        }
        SecretCommand::Rm { names } => {
            for n in names {
                match kind {
                    Kind::Secret => {
                        c.remove_secret(pb::RemoveSecretRequest { secret: n.clone() })
                            .await?;
                    }
                    Kind::Config => {
                        c.remove_config(pb::RemoveConfigRequest { config: n.clone() })
                            .await?;
                    }
                }
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// `--secret`/`--config` of `service create`: `NAME`, or
/// `source=NAME[,target=T][,uid=U][,gid=G][,mode=0400]` (Docker's syntax). The managers
/// resolve the name and fill in the default target and mode.
pub fn parse_file_ref(v: &str) -> Result<rswarm_proto::model::FileReference, String> {
    let mut r = rswarm_proto::model::FileReference::default();
    if !v.contains('=') {
        r.source_name = v.to_owned();
    } else {
        for part in v.split(',') {
            let (k, val) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            match k {
                "source" | "src" => r.source_name = val.to_owned(),
                "target" => r.target = val.to_owned(),
                "uid" => r.uid = val.to_owned(),
                "gid" => r.gid = val.to_owned(),
                "mode" => {
                    r.mode = u32::from_str_radix(val, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            format!("mode {val:?}: expected an octal mode such as 0400")
                        })?
                }
                _ => return Err(format!("unknown option {k:?}")),
            }
        }
    }
    if r.source_name.is_empty() {
        return Err("source is required".into());
    }
    for (what, x) in [("uid", &r.uid), ("gid", &r.gid)] {
        if !x.is_empty() && x.parse::<u32>().is_err() {
            return Err(format!("{what} {x:?}: expected a number"));
        }
    }
    Ok(r)
}

/// A service's secret or config reference in `service inspect`.
pub fn file_ref_json(r: &pb::FileReference) -> Value {
    json!({
        "source_id": r.source_id,
        "source_name": r.source_name,
        "target": r.target,
        "uid": r.uid,
        "gid": r.gid,
        "mode": format!("{:04o}", r.mode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_refs_parse() {
        let r = parse_file_ref("pw").unwrap();
        assert_eq!((r.source_name.as_str(), r.mode), ("pw", 0));
        let r = parse_file_ref("source=pw,target=db,uid=1,gid=2,mode=0400").unwrap();
        assert_eq!(r.target, "db");
        assert_eq!((r.uid.as_str(), r.gid.as_str(), r.mode), ("1", "2", 0o400));
        assert!(parse_file_ref("target=x").is_err());
        assert!(parse_file_ref("source=pw,mode=9").is_err());
        assert!(parse_file_ref("source=pw,uid=root").is_err());
        assert!(parse_file_ref("source=pw,bogus=1").is_err());
    }
}
