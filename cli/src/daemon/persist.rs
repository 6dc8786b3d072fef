//! What a node keeps on disk to resume its place in the cluster after a restart: its
//! identity and role (`state.json`) and its key and certificates (`certificates/`).
//! Files are written to a temporary name, fsync'd and renamed, so a crash leaves the old
//! or the new file, never half of one.

use rswarm_manager::tls::NodeCredentials;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    pub node_id: String,
    pub cluster_id: String,
    /// The role of the current certificate.
    pub role: String,
    /// The Raft member id while this node is a manager.
    pub raft_id: u64,
    pub listen_addr: String,
    pub advertise_addr: String,
    /// Managers to reach, refreshed from every session message.
    pub managers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub struct DataDir {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PersistError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

impl DataDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    fn node_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn cert_dir(&self) -> PathBuf {
        self.root.join("certificates")
    }

    pub fn load(&self) -> Result<Option<(NodeFile, NodeCredentials)>, PersistError> {
        let p = self.node_path();
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&p)(e)),
        };
        let node: NodeFile =
            serde_json::from_slice(&bytes).map_err(|source| PersistError::Decode {
                path: p.clone(),
                source,
            })?;
        let read = |name: &str| {
            let path = self.cert_dir().join(name);
            std::fs::read_to_string(&path).map_err(io_err(&path))
        };
        let creds = NodeCredentials {
            key_pem: read("node.key")?,
            cert_pem: read("node.crt")?,
            ca_pem: read("ca.crt")?,
        };
        Ok(Some((node, creds)))
    }

    pub fn save_node(&self, node: &NodeFile) -> Result<(), PersistError> {
        let p = self.node_path();
        let bytes = serde_json::to_vec_pretty(node).map_err(|source| PersistError::Decode {
            path: p.clone(),
            source,
        })?;
        write_file(&p, &bytes, 0o600)
    }

    pub fn save_credentials(&self, creds: &NodeCredentials) -> Result<(), PersistError> {
        let d = self.cert_dir();
        write_file(&d.join("ca.crt"), creds.ca_pem.as_bytes(), 0o644)?;
        write_file(&d.join("node.key"), creds.key_pem.as_bytes(), 0o600)?;
        write_file(&d.join("node.crt"), creds.cert_pem.as_bytes(), 0o644)
    }

    /// Forgets the cluster: identity, certificates and Raft data.
    pub fn wipe(&self) -> Result<(), PersistError> {
        for p in [self.node_path()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        for d in [self.cert_dir(), self.raft_dir()] {
            self.remove_dir(&d)?;
        }
        Ok(())
    }

    pub fn remove_dir(&self, d: &Path) -> Result<(), PersistError> {
        match std::fs::remove_dir_all(d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(d)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_wipes() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path().to_owned());
        assert!(d.load().unwrap().is_none());
        let node = NodeFile {
            node_id: "n".into(),
            cluster_id: "c".into(),
            role: "manager".into(),
            raft_id: 7,
            listen_addr: "127.0.0.1:1".into(),
            advertise_addr: "127.0.0.1:1".into(),
            managers: vec!["127.0.0.1:1".into()],
        };
        let creds = NodeCredentials {
            key_pem: "k".into(),
            cert_pem: "c".into(),
            ca_pem: "a".into(),
        };
        d.save_credentials(&creds).unwrap();
        d.save_node(&node).unwrap();
        let (n2, c2) = d.load().unwrap().unwrap();
        assert_eq!(n2, node);
        assert_eq!(c2.key_pem, "k");
        d.wipe().unwrap();
        assert!(d.load().unwrap().is_none());
    }
}
