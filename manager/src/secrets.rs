//! Secrets at rest: a secret's data is sealed with AES-256-GCM under the cluster's
//! data-encryption key (`Cluster::secrets_key`, made at `init`) before it is proposed, so
//! the Raft log, its snapshots and every manager's store hold only ciphertext. The key
//! lives in the replicated Cluster object, as Swarm keeps its keys without autolock: it
//! protects the data from anything that reads a log or snapshot file alone.
//!
//! Sealed form: a random 96-bit nonce, then the ciphertext and its tag. The secret's id is
//! the associated data, so a sealed blob cannot be passed off as another secret.
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the cluster has no secrets key")]
    NoKey,
    #[error("secret data cannot be decrypted")]
    Decrypt,
    #[error("random number generator failed")]
    Random,
}

/// A new random data-encryption key.
pub fn generate_key() -> Vec<u8> {
    let mut key = vec![0u8; KEY_LEN];
    // The system RNG does not fail on Linux; an all-zero key would be refused by `key`.
    if SystemRandom::new().fill(&mut key).is_err() {
        key.clear();
    }
    key
}

fn key(bytes: &[u8]) -> Result<LessSafeKey, SecretsError> {
    if bytes.len() != KEY_LEN {
        return Err(SecretsError::NoKey);
    }
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretsError::NoKey)?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `plain` for the secret `id`.
pub fn seal(key_bytes: &[u8], id: &str, plain: &[u8]) -> Result<Vec<u8>, SecretsError> {
    let k = key(key_bytes)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SecretsError::Random)?;
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(id.as_bytes()),
        &mut buf,
    )
    .map_err(|_| SecretsError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Opens what [`seal`] made for the secret `id`.
pub fn open(key_bytes: &[u8], id: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
    let k = key(key_bytes)?;
    if sealed.len() < NONCE_LEN {
        return Err(SecretsError::Decrypt);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Decrypt)?;
    let mut buf = rest.to_vec();
    let plain = k
        .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf)
        .map_err(|_| SecretsError::Decrypt)?;
    Ok(plain.to_vec())
}

/// The secrets and configs (in clear) that the tasks in `node`'s assignment set use:
/// what the dispatcher sends that node, and nothing more. Sorted by id.
pub fn node_files(
    s: &crate::store::State,
    node: &rswarm_proto::model::NodeId,
) -> (
    Vec<rswarm_proto::pb::FilePayload>,
    Vec<rswarm_proto::pb::FilePayload>,
) {
    use std::collections::BTreeSet;
    let mut secret_ids = BTreeSet::new();
    let mut config_ids = BTreeSet::new();
    for t in s
        .tasks
        .values()
        .filter(|t| crate::dispatcher::is_assigned(t, node))
    {
        let c = &t.spec.container;
        secret_ids.extend(c.secrets.iter().map(|r| r.source_id.as_str()));
        config_ids.extend(c.configs.iter().map(|r| r.source_id.as_str()));
    }
    let key = s
        .cluster
        .as_ref()
        .map(|c| c.secrets_key.as_slice())
        .unwrap_or_default();
    let secrets = secret_ids
        .into_iter()
        .filter_map(|id| {
            let x = s.secrets.get(id)?;
            match open(key, id, &x.spec.data) {
                Ok(data) => Some(rswarm_proto::pb::FilePayload {
                    id: id.to_owned(),
                    name: x.spec.name.clone(),
                    data,
                }),
                Err(e) => {
                    tracing::warn!(secret.id = %id, "secret not sent: {e}");
                    None
                }
            }
        })
        .collect();
    let configs = config_ids
        .into_iter()
        .filter_map(|id| {
            let x = s.configs.get(id)?;
            Some(rswarm_proto::pb::FilePayload {
                id: id.to_owned(),
                name: x.spec.name.clone(),
                data: x.spec.data.clone(),
            })
        })
        .collect();
    (secrets, configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_stored_bytes_are_not_the_plaintext() {
        let key = generate_key();
        assert_eq!(key.len(), KEY_LEN);
        let plain = b"correct horse battery staple";
        let sealed = seal(&key, "s1", plain).unwrap();
        assert_ne!(&sealed[..], &plain[..]);
        assert!(!sealed.windows(plain.len()).any(|w| w == plain));
        assert_eq!(open(&key, "s1", &sealed).unwrap(), plain);
        // A fresh nonce each time.
        assert_ne!(seal(&key, "s1", plain).unwrap(), sealed);
    }

    #[test]
    fn a_wrong_key_id_or_tampering_fails() {
        let key = generate_key();
        let sealed = seal(&key, "s1", b"data").unwrap();
        assert!(open(&generate_key(), "s1", &sealed).is_err());
        assert!(open(&key, "s2", &sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&key, "s1", &bad).is_err());
        assert!(open(&key, "s1", &sealed[..4]).is_err());
        assert!(matches!(open(&[], "s1", &sealed), Err(SecretsError::NoKey)));
    }

    #[test]
    fn a_node_gets_only_the_secrets_its_tasks_use() {
        use crate::store::State;
        use rswarm_proto::model::{
            Cluster, FileReference, NodeId, Secret, SecretSpec, Task, TaskId, TaskState,
        };
        let key = generate_key();
        let mut s = State {
            cluster: Some(Cluster {
                secrets_key: key.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for (id, name) in [("s1", "a"), ("s2", "b"), ("s3", "c")] {
            s.secrets.insert(
                id.into(),
                Secret {
                    id: id.into(),
                    spec: SecretSpec {
                        name: name.into(),
                        data: seal(&key, id, format!("data-{name}").as_bytes()).unwrap(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            );
        }
        let task = |id: &str, node: &str, secret: &str, state: TaskState| {
            let mut t = Task {
                id: TaskId::from(id),
                node_id: Some(NodeId::from(node)),
                desired_state: TaskState::Running,
                ..Default::default()
            };
            t.status.state = state;
            t.spec.container.secrets.push(FileReference {
                source_id: secret.into(),
                ..Default::default()
            });
            t
        };
        for t in [
            task("t1", "n1", "s1", TaskState::Running),
            task("t2", "n2", "s2", TaskState::Running),
            // Not yet assigned: no node gets its secret.
            task("t3", "n1", "s3", TaskState::Pending),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        let (n1, _) = node_files(&s, &NodeId::from("n1"));
        assert_eq!(n1.len(), 1);
        assert_eq!((n1[0].id.as_str(), n1[0].name.as_str()), ("s1", "a"));
        assert_eq!(n1[0].data, b"data-a");
        let (n2, _) = node_files(&s, &NodeId::from("n2"));
        assert_eq!(n2.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["s2"]);
        assert!(node_files(&s, &NodeId::from("n3")).0.is_empty());
    }
}
