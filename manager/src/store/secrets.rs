//! Applying the secret and config commands: names are unique per kind, and one that a
//! service refers to cannot be removed. Secret data arrives already encrypted.
use super::object::{insert_new, not_found, Stored};
use super::{Event, LookupError, State};
use rswarm_proto::model::{Command, CommandError, Config, Secret};
use std::collections::BTreeMap;

impl State {
    pub(super) fn apply_secrets(
        &mut self,
        index: u64,
        cmd: &Command,
    ) -> Result<Vec<Event>, CommandError> {
        match cmd {
            Command::CreateSecret(x) => {
                unique_name(&self.secrets, &**x)?;
                insert_new(&mut self.secrets, index, &**x);
            }
            Command::CreateConfig(x) => {
                unique_name(&self.configs, &**x)?;
                insert_new(&mut self.configs, index, &**x);
            }
            Command::RemoveSecret { id } => {
                let name = self
                    .secrets
                    .get(id)
                    .map(|x| x.spec.name.clone())
                    .ok_or_else(|| not_found::<Secret>(id))?;
                if let Some(by) = self.file_user(id, true) {
                    return Err(in_use::<Secret>(name, by));
                }
                self.secrets.remove(id);
            }
            Command::RemoveConfig { id } => {
                let name = self
                    .configs
                    .get(id)
                    .map(|x| x.spec.name.clone())
                    .ok_or_else(|| not_found::<Config>(id))?;
                if let Some(by) = self.file_user(id, false) {
                    return Err(in_use::<Config>(name, by));
                }
                self.configs.remove(id);
            }
            _ => {}
        }
        Ok(Vec::new())
    }

    /// The first service (by name) whose spec refers to the secret (or config) `id`.
    pub fn file_user(&self, id: &str, secret: bool) -> Option<String> {
        self.services
            .values()
            .filter(|s| {
                let c = &s.spec.task.container;
                let refs = if secret { &c.secrets } else { &c.configs };
                refs.iter().any(|r| r.source_id == id)
            })
            .map(|s| s.spec.name.clone())
            .min()
    }

    /// Finds a secret by id, name, or unique id prefix.
    pub fn find_secret(&self, key: &str) -> Result<&Secret, LookupError> {
        super::find_by(
            self.secrets.values(),
            key,
            |s| s.id.as_str(),
            |s| Some(s.spec.name.clone()),
        )
        .map_err(|ambiguous| lookup("secret", key, ambiguous))
    }

    /// Finds a config by id, name, or unique id prefix.
    pub fn find_config(&self, key: &str) -> Result<&Config, LookupError> {
        super::find_by(
            self.configs.values(),
            key,
            |s| s.id.as_str(),
            |s| Some(s.spec.name.clone()),
        )
        .map_err(|ambiguous| lookup("config", key, ambiguous))
    }
}

fn lookup(kind: &'static str, key: &str, ambiguous: bool) -> LookupError {
    if key.is_empty() || !ambiguous {
        LookupError::Missing(kind, key.to_owned())
    } else {
        LookupError::AmbiguousKey(kind, key.to_owned())
    }
}

fn in_use<T: Stored>(name: String, by: String) -> CommandError {
    CommandError::InUse {
        kind: T::KIND.into(),
        id: name,
        by: format!("service {by}"),
    }
}

/// Secret and config names are unique per kind (as are their ids).
fn unique_name<T>(map: &BTreeMap<String, T>, x: &T) -> Result<(), CommandError>
where
    T: Stored<Id = String> + Named,
{
    if map.contains_key(x.key()) || map.values().any(|o| o.name() == x.name()) {
        return Err(CommandError::Exists {
            kind: T::KIND.into(),
            id: x.name().to_owned(),
        });
    }
    Ok(())
}

trait Named {
    fn name(&self) -> &str;
}

impl Named for Secret {
    fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Named for Config {
    fn name(&self) -> &str {
        &self.spec.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{FileReference, SecretSpec, Service, ServiceId};

    fn secret(id: &str, name: &str) -> Secret {
        Secret {
            id: id.into(),
            spec: SecretSpec {
                name: name.into(),
                data: b"cipher".to_vec(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn service_using(secret: &str) -> Service {
        let mut s = Service {
            id: ServiceId::from("svc1"),
            ..Default::default()
        };
        s.spec.name = "web".into();
        s.spec.task.container.image = "busybox".into();
        s.spec.task.container.secrets.push(FileReference {
            source_id: secret.into(),
            source_name: "pw".into(),
            target: "/run/secrets/pw".into(),
            mode: 0o444,
            ..Default::default()
        });
        s
    }

    #[test]
    fn secrets_are_created_with_unique_names_and_found_by_name() {
        let mut s = State::default();
        s.apply(1, &Command::CreateSecret(Box::new(secret("s1", "pw"))))
            .unwrap();
        assert_eq!(s.secrets["s1"].meta.version, 1);
        let err = s
            .apply(2, &Command::CreateSecret(Box::new(secret("s2", "pw"))))
            .unwrap_err();
        assert!(matches!(err, CommandError::Exists { .. }));
        assert_eq!(s.find_secret("pw").unwrap().id, "s1");
        assert_eq!(s.find_secret("s1").unwrap().id, "s1");
        assert!(s.find_secret("nope").is_err());
        // Configs are a separate namespace.
        let c = Config {
            id: "c1".into(),
            spec: SecretSpec {
                name: "pw".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        s.apply(3, &Command::CreateConfig(Box::new(c))).unwrap();
        assert_eq!(s.find_config("pw").unwrap().id, "c1");
    }

    #[test]
    fn restore_carries_secrets_and_configs() {
        let mut s = State::default();
        s.apply(
            7,
            &Command::Restore {
                cluster: Box::default(),
                nodes: Vec::new(),
                services: Vec::new(),
                tasks: Vec::new(),
                networks: Vec::new(),
                secrets: vec![secret("s1", "pw")],
                configs: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(s.secrets["s1"].meta.version, 7);
        assert_eq!(s.secrets["s1"].spec.data, b"cipher");
    }

    #[test]
    fn a_secret_in_use_cannot_be_removed() {
        let mut s = State::default();
        s.apply(1, &Command::CreateSecret(Box::new(secret("s1", "pw"))))
            .unwrap();
        s.apply(2, &Command::CreateService(Box::new(service_using("s1"))))
            .unwrap();
        let before = s.clone();
        let err = s
            .apply(3, &Command::RemoveSecret { id: "s1".into() })
            .unwrap_err();
        assert_eq!(err.to_string(), "secret pw is in use by service web");
        assert_eq!(s, before);
        s.apply(
            4,
            &Command::RemoveService {
                id: ServiceId::from("svc1"),
            },
        )
        .unwrap();
        s.apply(5, &Command::RemoveSecret { id: "s1".into() })
            .unwrap();
        assert!(s.secrets.is_empty());
        let err = s
            .apply(6, &Command::RemoveSecret { id: "s1".into() })
            .unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }));
    }
}
