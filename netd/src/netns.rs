//! Network namespaces kept alive by bind mounts at arbitrary paths (as `ip netns` does under
//! `/run/netns`, but anywhere), and running code inside them.
//!
//! A thread's network namespace is its own (not the process's), so every namespace switch
//! here happens on a fresh `std::thread` that exits afterwards: the caller's thread, and any
//! tokio worker, never change namespace.
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The calling thread's own network namespace (not the process's: threads may differ).
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("preparing netns file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening netns {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("creating a network namespace for {path}: {source}")]
    Unshare {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("bind-mounting the new network namespace on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting netns {path}: {source}")]
    Umount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("removing netns file {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entering netns {path}: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("bringing lo up in netns {path}: {reason}")]
    Loopback { path: PathBuf, reason: String },
    #[error("spawning a thread for netns {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the thread working in netns {path} panicked")]
    Panicked { path: PathBuf },
}

/// Whether `path` is a mounted namespace file (nsfs), i.e. it keeps a namespace alive.
/// (Only network namespaces are ever mounted by this module.)
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// A new network namespace, bind-mounted at `path` (parents created), with `lo` up. Fine if
/// `path` already holds one.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if is_netns(path) {
        return Ok(());
    }
    let file_err = |source| NetnsError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(file_err)?;
    }
    // The mount point: an empty file (left as is if a stale one is there).
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(file_err)?;
    let owned = path.to_owned();
    let made = on_thread(path, move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
            path: owned.clone(),
            source,
        })?;
        mount(
            Some(THREAD_NETNS),
            owned.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Mount {
            path: owned.clone(),
            source,
        })?;
        loopback_up().map_err(|reason| NetnsError::Loopback {
            path: owned.clone(),
            reason,
        })
    })
    .and_then(|r| r);
    if made.is_err() {
        // Leave neither a half-made namespace nor an empty mount point behind a failure
        // (the early return above means nothing was there before).
        let _ = delete(path);
    }
    made
}

/// Unmounts the namespace at `path` and removes the file; fine if absent. The namespace (and
/// every link in it) goes once nothing else holds it.
pub fn delete(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a stale file); ENOENT: nothing there.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Umount {
                path: path.to_owned(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Opens a namespace file to enter it later (also works on `/proc/.../ns/net`).
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })
}

/// Runs `f` on a fresh thread inside the network namespace mounted at `path`.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    if !is_netns(path) {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
        });
    }
    let file = open(path)?;
    run_in_fd(path, file.into(), f)
}

/// Runs `f` on a fresh thread inside the network namespace `fd` refers to (`path` only names
/// it in errors).
pub fn run_in_fd<T: Send + 'static>(
    path: &Path,
    fd: OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let owned = path.to_owned();
    on_thread(path, move || {
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns {
            path: owned,
            source,
        })?;
        drop(fd);
        Ok(f())
    })
    .and_then(|r| r)
}

/// Runs `f` on a fresh thread and waits for it.
fn on_thread<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let handle = std::thread::Builder::new()
        .name("netns".into())
        .spawn(f)
        .map_err(|source| NetnsError::Spawn {
            path: path.to_owned(),
            source,
        })?;
    handle.join().map_err(|_| NetnsError::Panicked {
        path: path.to_owned(),
    })
}

/// `ip link set lo up` in the calling thread's namespace.
fn loopback_up() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_name("lo").up().build())
            .execute()
            .await
            .map_err(|e| e.to_string())
    })
}
