//! What the control API does for secrets and configs: create (a secret's data is sealed
//! before it is proposed), list (never a secret's data), remove (refused while a service
//! uses it), and resolving a service's references to them.

use crate::control::ControlError;
use crate::ids::{now_ms, random_id};
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use crate::secrets;
use crate::store::State;
use rswarm_proto::convert_secrets::{config_to_pb, secret_spec_from_pb, secret_to_pb};
use rswarm_proto::model::{
    valid_secret_name, Command, CommandError, Config, FileReference, Meta, Secret, SecretSpec,
    ServiceSpec, DEFAULT_FILE_MODE, MAX_SECRET_BYTES,
};
use rswarm_proto::pb;

fn checked_spec(kind: &str, spec: Option<pb::SecretSpec>) -> Result<SecretSpec, ControlError> {
    let spec = secret_spec_from_pb(
        spec.ok_or_else(|| ControlError::InvalidArgument(format!("a {kind} spec is required")))?,
    );
    if !valid_secret_name(&spec.name) {
        return Err(ControlError::InvalidArgument(format!(
            "invalid {kind} name {:?}: use 1-64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            spec.name
        )));
    }
    if spec.data.is_empty() {
        return Err(ControlError::InvalidArgument(format!(
            "{kind} data is empty"
        )));
    }
    if spec.data.len() > MAX_SECRET_BYTES {
        return Err(ControlError::InvalidArgument(format!(
            "{kind} data is too long: {} bytes, the limit is {MAX_SECRET_BYTES} (500 KiB)",
            spec.data.len()
        )));
    }
    Ok(spec)
}

fn meta_now() -> Meta {
    let now = now_ms();
    Meta {
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

fn name_taken(kind: &str, name: &str) -> ControlError {
    ControlError::FailedPrecondition(format!("a {kind} named {name} already exists"))
}

/// The cluster's data-encryption key; made now (and stored) for a cluster initialised
/// before secrets existed.
async fn secrets_key(m: &Manager) -> Result<Vec<u8>, ControlError> {
    for _ in 0..5 {
        let cluster = m
            .store
            .view(|s| s.cluster.clone())
            .ok_or(ControlError::NoCluster)?;
        if cluster.secrets_key.len() == secrets::KEY_LEN {
            return Ok(cluster.secrets_key);
        }
        let mut next = cluster;
        next.secrets_key = secrets::generate_key();
        match m
            .proposer
            .propose(Command::UpdateCluster(Box::new(next)))
            .await
        {
            // A follower applies the leader's commit a little later: wait for it.
            Ok(_) | Err(ProposeError::Refused(CommandError::StaleVersion { .. })) => {
                crate::control_networks::catch_up(m).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::FailedPrecondition(
        "the cluster kept changing; try again".into(),
    ))
}

pub async fn create_secret(
    m: &Manager,
    spec: Option<pb::SecretSpec>,
) -> Result<pb::Secret, ControlError> {
    let mut spec = checked_spec("secret", spec)?;
    if m.store
        .view(|s| s.secrets.values().any(|x| x.spec.name == spec.name))
    {
        return Err(name_taken("secret", &spec.name));
    }
    let key = secrets_key(m).await?;
    let id = random_id();
    spec.data = secrets::seal(&key, &id, &spec.data)
        .map_err(|e| ControlError::FailedPrecondition(e.to_string()))?;
    let secret = Secret {
        id: id.clone(),
        meta: meta_now(),
        spec,
    };
    let name = secret.spec.name.clone();
    match m
        .proposer
        .propose(Command::CreateSecret(Box::new(secret.clone())))
        .await
    {
        Ok(_) => {}
        Err(ProposeError::Refused(CommandError::Exists { .. })) => {
            return Err(name_taken("secret", &name))
        }
        Err(e) => return Err(e.into()),
    }
    let stored = m
        .store
        .view(|s| s.secrets.get(&id).cloned())
        .unwrap_or(secret);
    Ok(secret_to_pb(&stored))
}

pub async fn create_config(
    m: &Manager,
    spec: Option<pb::SecretSpec>,
) -> Result<pb::Secret, ControlError> {
    let spec = checked_spec("config", spec)?;
    if m.store
        .view(|s| s.configs.values().any(|x| x.spec.name == spec.name))
    {
        return Err(name_taken("config", &spec.name));
    }
    let id = random_id();
    let config = Config {
        id: id.clone(),
        meta: meta_now(),
        spec,
    };
    let name = config.spec.name.clone();
    match m
        .proposer
        .propose(Command::CreateConfig(Box::new(config.clone())))
        .await
    {
        Ok(_) => {}
        Err(ProposeError::Refused(CommandError::Exists { .. })) => {
            return Err(name_taken("config", &name))
        }
        Err(e) => return Err(e.into()),
    }
    let stored = m
        .store
        .view(|s| s.configs.get(&id).cloned())
        .unwrap_or(config);
    Ok(config_to_pb(&stored))
}

pub fn list_secrets(m: &Manager) -> Vec<pb::Secret> {
    m.store
        .view(|s| s.secrets.values().map(secret_to_pb).collect())
}

pub fn list_configs(m: &Manager) -> Vec<pb::Secret> {
    m.store
        .view(|s| s.configs.values().map(config_to_pb).collect())
}

fn in_use(e: ProposeError) -> ControlError {
    match e {
        ProposeError::Refused(e @ CommandError::InUse { .. }) => {
            ControlError::FailedPrecondition(e.to_string())
        }
        e => e.into(),
    }
}

pub async fn remove_secret(m: &Manager, key: &str) -> Result<(), ControlError> {
    let id = m.store.view(|s| s.find_secret(key).map(|x| x.id.clone()))?;
    m.proposer
        .propose(Command::RemoveSecret { id })
        .await
        .map_err(in_use)?;
    Ok(())
}

pub async fn remove_config(m: &Manager, key: &str) -> Result<(), ControlError> {
    let id = m.store.view(|s| s.find_config(key).map(|x| x.id.clone()))?;
    m.proposer
        .propose(Command::RemoveConfig { id })
        .await
        .map_err(in_use)?;
    Ok(())
}

/// Names a service's secrets and configs by id and fills in Swarm's defaults: target
/// `/run/secrets/NAME` for a secret (a relative target goes under `/run/secrets`), `/NAME`
/// for a config, mode 0444. An unknown one, or two files at one target, is refused.
pub fn resolve_file_refs(s: &State, spec: &mut ServiceSpec) -> Result<(), ControlError> {
    let c = &mut spec.task.container;
    let mut targets = std::collections::BTreeSet::new();
    for (secret, refs) in [(true, &mut c.secrets), (false, &mut c.configs)] {
        for r in refs.iter_mut() {
            let key = if r.source_id.is_empty() {
                r.source_name.clone()
            } else {
                r.source_id.clone()
            };
            let (id, name) = if secret {
                let x = s.find_secret(&key)?;
                (x.id.clone(), x.spec.name.clone())
            } else {
                let x = s.find_config(&key)?;
                (x.id.clone(), x.spec.name.clone())
            };
            resolve_one(r, id, name, secret)?;
            if !targets.insert(r.target.clone()) {
                return Err(ControlError::InvalidArgument(format!(
                    "more than one secret or config at target {}",
                    r.target
                )));
            }
        }
    }
    Ok(())
}

fn resolve_one(
    r: &mut FileReference,
    id: String,
    name: String,
    secret: bool,
) -> Result<(), ControlError> {
    r.source_id = id;
    if r.target.is_empty() {
        r.target.clone_from(&name);
    }
    if !r.target.starts_with('/') {
        r.target = if secret {
            format!("/run/secrets/{}", r.target)
        } else {
            format!("/{}", r.target)
        };
    }
    r.source_name = name;
    if r.target.split('/').any(|p| p == "..") || r.target.ends_with('/') {
        return Err(ControlError::InvalidArgument(format!(
            "invalid target {:?}",
            r.target
        )));
    }
    for (what, v) in [("uid", &r.uid), ("gid", &r.gid)] {
        if !v.is_empty() && v.parse::<u32>().is_err() {
            return Err(ControlError::InvalidArgument(format!(
                "invalid {what} {v:?}: expected a number"
            )));
        }
    }
    if r.mode == 0 {
        r.mode = DEFAULT_FILE_MODE;
    }
    if r.mode > 0o7777 {
        return Err(ControlError::InvalidArgument(format!(
            "invalid mode {:o}",
            r.mode
        )));
    }
    Ok(())
}
