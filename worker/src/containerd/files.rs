//! Secrets and configs in a task's container, kept off the node's disk.
//!
//! The data comes from the leader with the assignments and is held in memory
//! (`Inner::files`). When a task's container is created, a tmpfs is mounted on the host at
//! `STATE/secrets/<container id>` (mode 0700, nosuid, nodev, noexec), each secret or
//! config is written there with its uid, gid and mode, and each file is bind-mounted
//! read-only at its target in the container's OCI spec. Once runc has made the container's
//! mounts (containerd's task create), the host's mount of the tmpfs is detached (`umount
//! -l`) and its directory removed: the container's bind mounts keep the tmpfs alive, so the
//! data then exists only in memory, reachable only inside the container, and goes with it.
//! Nothing touches a disk-backed filesystem. A tmpfs left by a daemon that died between
//! create and start is still mounted when it comes back (the start then detaches it), and
//! removing the container (also as an orphan after a restart) removes it too. Configs take
//! the same path: Swarm writes them to disk, but this costs nothing.
use super::spec::ResolvedMount;
use crate::exec::NodeFiles;
use rswarm_proto::model::{Mount, MountType, Task};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a container's files are mounted on the host.
pub(crate) fn files_dir(state_dir: &Path, container_id: &str) -> PathBuf {
    state_dir.join("secrets").join(container_id)
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Mounts the task's tmpfs, writes its secrets and configs there, and returns the bind
/// mounts that put them at their targets. Nothing to do for a task that uses none.
pub(crate) fn prepare(
    state_dir: &Path,
    container_id: &str,
    task: &Task,
    files: &NodeFiles,
) -> Result<Vec<ResolvedMount>, String> {
    let c = &task.spec.container;
    if c.secrets.is_empty() && c.configs.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted = Vec::new();
    for (kind, refs, have) in [
        ("secret", &c.secrets, &files.secrets),
        ("config", &c.configs, &files.configs),
    ] {
        for (i, r) in refs.iter().enumerate() {
            let data = have.get(&r.source_id).ok_or_else(|| {
                format!(
                    "{kind} {} ({}) has not reached this node",
                    r.source_name, r.source_id
                )
            })?;
            wanted.push((format!("{kind}-{i}"), r, data));
        }
    }
    let dir = files_dir(state_dir, container_id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // mountinfo names mount points by their canonical path.
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !is_mountpoint(&dir) {
        let total: usize = wanted.iter().map(|(_, _, d)| d.len() + 4096).sum();
        let size = total + (1 << 20);
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("mode=0700,nosuid,nodev,noexec,size={size}"))
            .arg("tmpfs")
            .arg(&dir))
        .map_err(|e| format!("mount a tmpfs for secrets: {e}"))?;
    }
    if !is_mountpoint(&dir) {
        return Err(format!("{} is not a tmpfs mount", dir.display()));
    }
    let mut mounts = Vec::new();
    for (file, r, data) in wanted {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(&file);
        std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(r.mode & 0o7777))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let id = |s: &str| s.parse::<u32>().unwrap_or(0);
        std::os::unix::fs::chown(&path, Some(id(&r.uid)), Some(id(&r.gid)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        mounts.push(ResolvedMount {
            mount: Mount {
                kind: MountType::Bind,
                source: path.display().to_string(),
                target: r.target.clone(),
                read_only: true,
                tmpfs_size: 0,
            },
            host_path: path,
        });
    }
    Ok(mounts)
}

/// Unmounts and removes a container's files; nothing to do when there are none.
pub(crate) fn remove(state_dir: &Path, container_id: &str) -> Result<(), String> {
    let dir = files_dir(state_dir, container_id);
    if !dir.exists() {
        return Ok(());
    }
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    if is_mountpoint(&dir) {
        run(Command::new("umount").arg("-l").arg(&dir))?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::FileReference;

    fn task_with(secret: &str, target: &str) -> Task {
        let mut t = Task::default();
        t.spec.container.secrets.push(FileReference {
            source_id: secret.into(),
            source_name: "pw".into(),
            target: target.into(),
            mode: 0o400,
            ..Default::default()
        });
        t
    }

    #[test]
    fn nothing_to_do_without_references_and_missing_data_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = prepare(dir.path(), "c1", &Task::default(), &NodeFiles::default());
        assert!(none.expect("no refs").is_empty());
        let err = prepare(
            dir.path(),
            "c1",
            &task_with("s1", "/run/secrets/pw"),
            &NodeFiles::default(),
        )
        .unwrap_err();
        assert!(err.contains("has not reached this node"), "{err}");
        assert!(!files_dir(dir.path(), "c1").exists());
        remove(dir.path(), "c1").expect("nothing to remove");
    }

    /// Needs root (mount); skipped otherwise.
    #[test]
    fn files_are_written_on_a_tmpfs_and_removed() {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        if uid.trim_ascii() != b"0" {
            println!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = NodeFiles::default();
        files.secrets.insert("s1".into(), b"hunter2".to_vec());
        let mounts = prepare(
            dir.path(),
            "c1",
            &task_with("s1", "/run/secrets/pw"),
            &files,
        )
        .expect("prepare");
        let d = files_dir(dir.path(), "c1");
        assert!(is_mountpoint(&d));
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount.target, "/run/secrets/pw");
        assert!(mounts[0].mount.read_only);
        assert_eq!(
            std::fs::read(&mounts[0].host_path).expect("read"),
            b"hunter2"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&mounts[0].host_path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o400);
        remove(dir.path(), "c1").expect("remove");
        assert!(!is_mountpoint(&d));
        assert!(!d.exists());
    }
}
