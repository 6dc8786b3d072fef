//! Secrets and configs: named blobs of data that services mount into their tasks as
//! files (Swarm's `Secret` and `Config`). A secret's data is stored encrypted in the
//! Raft store (see `manager::secrets`); a config's in clear, as Swarm does.
use super::Meta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The largest secret or config, as Swarm's (500 KiB).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;

/// What the user gave: a name, labels and the data. For a stored secret `data` is the
/// ciphertext (nonce first); for a config it is the plain data.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

/// Never prints the data: secrets must not reach a log through `{:?}`.
impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// A secret. Its spec's data is encrypted with the cluster's data-encryption key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub meta: Meta,
    pub spec: SecretSpec,
}

/// A config: the same shape as a secret, its data stored in clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub meta: Meta,
    pub spec: SecretSpec,
}

/// A service's use of a secret or config: which one, and the file it becomes in the
/// container (Swarm's `SecretReference`/`ConfigReference`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// The object's id (the control API resolves names to ids).
    pub source_id: String,
    /// Its name when the service was written, for display.
    pub source_name: String,
    /// An absolute path in the container. Secrets default to `/run/secrets/NAME`,
    /// configs to `/NAME`.
    pub target: String,
    /// Numeric owner; empty: 0.
    pub uid: String,
    pub gid: String,
    /// File mode; 0o444 by default.
    pub mode: u32,
}

/// The default file mode of a mounted secret or config (Swarm's).
pub const DEFAULT_FILE_MODE: u32 = 0o444;

/// Secret and config names follow Swarm's rules: 1–64 characters, alphanumerics and
/// `-_.`, starting and ending with an alphanumeric.
pub fn valid_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_data() {
        let s = SecretSpec {
            name: "pw".into(),
            labels: BTreeMap::new(),
            data: b"hunter2".to_vec(),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104"), "{shown}");
    }

    #[test]
    fn names() {
        assert!(valid_secret_name("db_password.v1"));
        assert!(!valid_secret_name("-x"));
        assert!(!valid_secret_name("a/b"));
        assert!(!valid_secret_name(""));
    }
}
