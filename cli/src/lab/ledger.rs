//! `DIR/lab.json`: what a lab is and what `up` made, written as it goes (temp file, rename),
//! so that `down` (and the rollback of a failed `up`) undo exactly that.
//!
//! Processes are not in here: each one's `pid` file sits beside its logs (see [`super::procs`])
//! so that `lab stop h2` and `lab start h3` never rewrite a shared file.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Ledger {
    pub dir: PathBuf,
    pub id: String,
    pub nodes: u32,
    pub managers: u32,
    /// The lab dir did not exist before `up` (so `down` removes it, not only its contents).
    pub made_dir: bool,
    /// `/run/netns` did not exist before `up` (`ip netns add` makes it a mount point).
    pub made_run_netns: bool,
    /// Network namespaces made, in order.
    pub netns: Vec<String>,
    /// Links made in the machine's own namespace.
    pub links: Vec<String>,
    /// The containerd the daemons use.
    pub containerd_socket: PathBuf,
    /// The lab started that containerd (its pid file is under `DIR/containerd`).
    pub own_containerd: bool,
    /// /run/containerd did not exist before the lab's own containerd ran.
    pub made_run_containerd: bool,
    /// `up` finished: every node was ready.
    pub ready: bool,
}

impl Ledger {
    pub fn load(path: &Path) -> anyhow::Result<Ledger> {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.json");
        let l = Ledger {
            dir: dir.path().into(),
            id: "0badcafe".into(),
            nodes: 3,
            managers: 1,
            netns: vec!["rswlab-0badcafe-sw".into()],
            ..Default::default()
        };
        l.save(&p).unwrap();
        let back = Ledger::load(&p).unwrap();
        assert_eq!(back.nodes, 3);
        assert_eq!(back.netns, l.netns);
        assert!(!p.with_extension("json.tmp").exists());
    }
}
