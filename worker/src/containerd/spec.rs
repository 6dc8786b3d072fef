//! The OCI runtime spec of a task's container, built the way Docker builds it: its default
//! capabilities, masked and read-only paths, /dev and friends, cgroup limits, the image's
//! entrypoint/cmd/env/user/working dir merged with the service's. Pure: the controller
//! gathers the inputs (image config, /etc/passwd, resolved mount sources) and this module
//! turns them into JSON that runc reads.

use super::image::ImageConfig;
use rswarm_proto::model::container_opts::{self, ALL_CAPABILITIES};
use rswarm_proto::model::{ContainerSpec, DeviceMapping, Mount, MountType, Resources};
use std::path::{Path, PathBuf};

/// What the shim is told the spec is (containerd's `typeurl` for specs.Spec).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The same for an exec'd process (specs.Process).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Where the init binary appears in a container started with `init` (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";
/// The node's init binaries, in order: Debian's `tini` package, then Docker's own. Both are
/// static: the image may have no libc (Debian's dynamic `/usr/bin/tini` would not run).
pub const INIT_CANDIDATES: [&str; 2] = ["/usr/bin/tini-static", "/usr/bin/docker-init"];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CPU_PERIOD: u64 = 100_000;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker hides from containers (bind-mounted over with /dev/null or an empty tmpfs).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The parts of the OCI runtime spec (v1.0) that we set; serialised with its field names.
pub mod oci {
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Spec {
        pub oci_version: String,
        pub process: Process,
        pub root: Root,
        pub hostname: String,
        pub mounts: Vec<Mount>,
        pub linux: Linux,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Process {
        #[serde(default)]
        pub terminal: bool,
        pub user: User,
        pub args: Vec<String>,
        #[serde(default)]
        pub env: Vec<String>,
        pub cwd: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub capabilities: Option<Capabilities>,
        #[serde(default)]
        pub no_new_privileges: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub rlimits: Vec<Rlimit>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Rlimit {
        #[serde(rename = "type")]
        pub kind: String,
        pub hard: u64,
        pub soft: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct User {
        pub uid: u32,
        pub gid: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub additional_gids: Vec<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct Capabilities {
        #[serde(default)]
        pub bounding: Vec<String>,
        #[serde(default)]
        pub effective: Vec<String>,
        #[serde(default)]
        pub permitted: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Root {
        pub path: String,
        #[serde(default)]
        pub readonly: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Mount {
        pub destination: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub source: String,
        #[serde(default)]
        pub options: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Linux {
        pub namespaces: Vec<Namespace>,
        pub resources: Resources,
        pub cgroups_path: String,
        pub masked_paths: Vec<String>,
        pub readonly_paths: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub sysctl: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub devices: Vec<Device>,
    }

    /// A device node runc makes in the container's /dev.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Device {
        pub path: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub major: i64,
        pub minor: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub file_mode: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gid: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Namespace {
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct Resources {
        #[serde(default)]
        pub devices: Vec<DeviceRule>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub memory: Option<Memory>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cpu: Option<Cpu>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeviceRule {
        pub allow: bool,
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub major: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub minor: Option<i64>,
        pub access: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Memory {
        pub limit: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Cpu {
        pub quota: i64,
        pub period: u64,
    }
}

/// A uid, gid and supplementary groups, as the process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A host path already resolved for each mount of the spec (volumes become directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub mount: Mount,
    /// Host path for bind and volume mounts; unused for tmpfs.
    pub host_path: PathBuf,
}

/// Host files bind-mounted at /etc/hostname, /etc/hosts and /etc/resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Where a container's network stack comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkNs<'a> {
    /// A fresh, unconnected namespace (the node runs without networking).
    #[default]
    Own,
    /// The task's namespace, made and connected by the node's networking (a bind-mounted
    /// namespace file).
    Joined(&'a Path),
    /// The node's own namespace (`host_network`, Docker's `--network host`): the spec has
    /// no network namespace entry, and the hostname defaults to the node's.
    Host { node_hostname: &'a str },
}

/// Everything a container's spec is made from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub namespace: &'a str,
    pub spec: &'a ContainerSpec,
    pub limits: &'a Resources,
    pub image: &'a ImageConfig,
    pub user: ResolvedUser,
    pub mounts: Vec<ResolvedMount>,
    pub etc: Option<EtcFiles>,
    /// The network namespace the container runs in.
    pub network: NetworkNs<'a>,
    /// The service's devices as found on this node ([`gather_devices`]).
    pub devices: Vec<HostDevice>,
    /// Every capability the node's kernel knows: what `ALL` means ([`known_capabilities`]).
    pub known_caps: &'a [&'static str],
    /// The node's init binary ([`find_init`]); only read when the service sets `init`.
    pub init: Option<PathBuf>,
}

/// The first of `candidates` that is a file (through symlinks, as Docker's
/// `/usr/bin/docker-init` may be one).
pub fn find_init(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A host device node, as stat found it, and where it goes in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path_in_container: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub permissions: String,
}

/// The capabilities this kernel knows (up to `/proc/sys/kernel/cap_last_cap`), as moby's
/// `GetAllCapabilities`; all we know of when the file cannot be read.
pub fn known_capabilities() -> &'static [&'static str] {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    match last {
        Some(n) if n < ALL_CAPABILITIES.len() => &ALL_CAPABILITIES[..=n],
        _ => &ALL_CAPABILITIES,
    }
}

fn errno_text(e: &std::io::Error) -> String {
    // Go's wording (what Docker prints), not Rust's "(os error 2)".
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The device node at `path` (through symlinks) as it is to appear at `ctr`; `None` when
/// `path` is something else.
fn device_at(path: &Path, ctr: String, permissions: &str) -> std::io::Result<Option<HostDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        return Ok(None);
    };
    let dev = md.rdev();
    // glibc's gnu_dev_major/minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Ok(Some(HostDevice {
        path_in_container: ctr,
        kind,
        major: i64::try_from(major).unwrap_or(i64::MAX),
        minor: i64::try_from(minor).unwrap_or(i64::MAX),
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        permissions: permissions.to_string(),
    }))
}

/// Looks the service's devices up on this node, as moby's `devicesFromPath`: a device node
/// is taken as is (through symlinks); a directory is walked and every device node under it
/// is added at the same place under the container path (one without any is refused).
pub fn gather_devices(devices: &[DeviceMapping]) -> Result<Vec<HostDevice>, String> {
    let mut out = Vec::new();
    for d in devices {
        let fail = |why: String| {
            format!(
                "error gathering device information while adding custom device {:?}: {why}",
                d.path_on_host
            )
        };
        let host = Path::new(&d.path_on_host);
        let found = device_at(host, d.path_in_container.clone(), &d.permissions)
            .map_err(|e| fail(errno_text(&e)))?;
        match found {
            Some(dev) => out.push(dev),
            None if host.is_dir() => {
                let before = out.len();
                let mut stack = vec![host.to_path_buf()];
                while let Some(dir) = stack.pop() {
                    let entries = std::fs::read_dir(&dir).map_err(|e| fail(errno_text(&e)))?;
                    for entry in entries.flatten() {
                        let p = entry.path();
                        // As filepath.Walk: symlinked directories are not followed.
                        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(p);
                            continue;
                        }
                        let rel = p.strip_prefix(host).unwrap_or(&p);
                        let ctr = Path::new(&d.path_in_container).join(rel);
                        if let Ok(Some(dev)) =
                            device_at(&p, ctr.display().to_string(), &d.permissions)
                        {
                            out.push(dev);
                        }
                    }
                }
                if out.len() == before {
                    return Err(fail(format!("no devices found in {}", d.path_on_host)));
                }
                // A stable order, whatever read_dir gives.
                out[before..].sort_by(|a, b| a.path_in_container.cmp(&b.path_in_container));
            }
            None => return Err(fail("not a device node".into())),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified: the image has no entrypoint or cmd and the service sets none")]
    NoCommand,
    #[error("working directory {0:?} is not an absolute path")]
    RelativeDir(String),
    #[error("invalid mount: {0}")]
    Mount(String),
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("{0}")]
    Sysctl(String),
    #[error("--init: no init binary on this node: install Debian's tini (/usr/bin/tini-static)")]
    NoInit,
}

/// The container's hostname: the service's, else the node's on the host network, else the
/// first 12 characters of the container id, as Docker does.
pub fn hostname(spec: &ContainerSpec, container_id: &str, network: NetworkNs<'_>) -> String {
    match network {
        _ if !spec.hostname.is_empty() => spec.hostname.clone(),
        NetworkNs::Host { node_hostname } if !node_hostname.is_empty() => node_hostname.to_owned(),
        _ => container_id.chars().take(12).collect(),
    }
}

/// This node's hostname ("" when it cannot be read: the container id's then).
pub fn node_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// argv with Docker's rules: `command` replaces the image's entrypoint, `args` replaces its
/// cmd, and setting `command` without `args` drops the image's cmd.
pub fn merge_command(spec: &ContainerSpec, image: &ImageConfig) -> Vec<String> {
    let image_entry = image.entrypoint.clone().unwrap_or_default();
    let image_cmd = image.cmd.clone().unwrap_or_default();
    let (entry, cmd) = if !spec.command.is_empty() {
        (spec.command.clone(), spec.args.clone())
    } else if !spec.args.is_empty() {
        (image_entry, spec.args.clone())
    } else {
        (image_entry, image_cmd)
    };
    entry.into_iter().chain(cmd).collect()
}

/// The process environment, as Docker: PATH (when nobody sets it) and HOSTNAME first, then
/// the image's variables, then the service's; a later `KEY=` replaces an earlier one in place.
pub fn merge_env(image_env: &[String], spec_env: &[String], hostname: &str) -> Vec<String> {
    let mut user = Vec::new();
    replace_or_append(&mut user, image_env);
    replace_or_append(&mut user, spec_env);
    let mut env = Vec::new();
    if !user.iter().any(|e| env_key(e) == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.push(format!("HOSTNAME={hostname}"));
    replace_or_append(&mut env, &user);
    env
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

fn replace_or_append(env: &mut Vec<String>, more: &[String]) {
    for e in more {
        let key = env_key(e);
        match env.iter_mut().find(|x| env_key(x) == key) {
            Some(slot) => slot.clone_from(e),
            None => env.push(e.clone()),
        }
    }
}

/// Resolves `user` (`name|uid[:group|gid]`; empty: root) against the image's passwd and group
/// files (runc's rules: a numeric uid missing from passwd runs with gid 0; names must exist;
/// supplementary groups come from the group file only when no group is given).
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let err = |reason: String| SpecError::User {
        user: user.to_string(),
        reason,
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let numeric_u = u.parse::<u32>().ok();
    let found = entries.iter().find(|f| match numeric_u {
        Some(n) => f[2].parse::<u32>().ok() == Some(n),
        None => f[0] == u,
    });
    let (uid, mut gid, name) = match (found, numeric_u) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| err(format!("bad uid in passwd entry for {}", f[0])))?,
            f[3].parse::<u32>()
                .map_err(|_| err(format!("bad gid in passwd entry for {}", f[0])))?,
            Some(f[0].to_string()),
        ),
        (None, Some(n)) => (n, 0, None),
        (None, None) => return Err(err("no matching entries in passwd file".into())),
    };
    let groups: Vec<Vec<&str>> = group
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let mut additional_gids = Vec::new();
    match g {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|f| f[0] == g)
                    .and_then(|f| f[2].parse::<u32>().ok())
                    .ok_or_else(|| err(format!("no group {g:?} in group file")))?,
            };
        }
        _ => {
            if let Some(name) = &name {
                for f in &groups {
                    let members = f.get(3).copied().unwrap_or("");
                    if members.split(',').any(|m| m == name) {
                        if let Ok(n) = f[2].parse::<u32>() {
                            if n != gid && !additional_gids.contains(&n) {
                                additional_gids.push(n);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The /etc/hosts Docker writes for a container without a network address.
pub fn hosts_file(hostname: &str, address: Option<&str>) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(a) = address {
        s.push_str(&format!("{a}\t{hostname}\n"));
    }
    s
}

/// What the container's /etc/hosts and /etc/resolv.conf hold, made from the node's own
/// files (`node_hosts`: its /etc/hosts, if readable). On the host network they are the
/// node's, as moby copies them: names resolve as on the node, and loopback resolvers
/// answer since the namespace is the node's. Joined to the node's networking, names go to
/// the embedded DNS in the task's namespace (which forwards the rest to the node's
/// resolvers), as Docker's.
pub fn etc_contents(
    network: NetworkNs<'_>,
    node_hosts: Option<&str>,
    node_resolv: &str,
    hostname: &str,
    address: Option<&str>,
) -> (String, String) {
    match network {
        NetworkNs::Host { .. } => (
            node_hosts
                .map(str::to_owned)
                .unwrap_or_else(|| hosts_file(hostname, None)),
            node_resolv.to_owned(),
        ),
        NetworkNs::Joined(_) => (
            hosts_file(hostname, address),
            embedded_resolv_conf(node_resolv),
        ),
        NetworkNs::Own => (
            hosts_file(hostname, address),
            container_resolv_conf(node_resolv),
        ),
    }
}

/// The host's resolv.conf without loopback name servers, which mean nothing inside the
/// container's own network namespace (Docker filters them the same way).
pub fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A resolv.conf pointing at the embedded DNS (127.0.0.11), keeping the host's search
/// domains and options, as Docker writes it for containers on user networks.
pub fn embedded_resolv_conf(host: &str) -> String {
    let mut out = String::from("nameserver 127.0.0.11\n");
    for line in host.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search" | "domain")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("options ndots:0\n");
    out
}

/// Signal names and numbers (Linux, x86 and arm): `SIGTERM`, `TERM` and `15` all work.
pub fn parse_signal(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => {
            let rt = |base: u32, rest: &str| -> Option<u32> {
                if rest.is_empty() {
                    return Some(base);
                }
                let off = rest.trim_start_matches(['+', '-']).parse::<u32>().ok()?;
                if rest.starts_with('-') {
                    base.checked_sub(off)
                } else {
                    Some(base + off)
                }
            };
            let n = if let Some(rest) = name.strip_prefix("RTMIN") {
                rt(34, rest)?
            } else if let Some(rest) = name.strip_prefix("RTMAX") {
                rt(64, rest)?
            } else {
                return None;
            };
            return (34..=64).contains(&n).then_some(n);
        }
    };
    Some(n)
}

/// Builds the runtime spec.
pub fn build_spec(input: &SpecInput<'_>) -> Result<oci::Spec, SpecError> {
    let spec = input.spec;
    let mut args = merge_command(spec, input.image);
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    if spec.init {
        if input.init.is_none() {
            return Err(SpecError::NoInit);
        }
        // As moby: tini runs the resolved command as its child, forwards signals to it and
        // reaps zombies, which a bare PID 1 (a shell, `sleep`) does not.
        args.splice(0..0, [INIT_PATH.to_owned(), "--".to_owned()]);
    }
    let hostname = hostname(spec, input.container_id, input.network);
    let env = merge_env(
        input.image.env.as_deref().unwrap_or(&[]),
        &spec.env,
        &hostname,
    );
    let cwd = if !spec.dir.is_empty() {
        spec.dir.clone()
    } else {
        input
            .image
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativeDir(cwd));
    }
    // Docker's default set with the service's additions and removals (moby's
    // TweakCapabilities).
    let caps = container_opts::tweak_capabilities(
        &DEFAULT_CAPABILITIES,
        input.known_caps,
        &spec.capability_add,
        &spec.capability_drop,
    );
    // As Docker since 20.10: a non-root process starts with empty effective and permitted
    // sets (the bounding set still limits what it can regain through file capabilities).
    let (effective, permitted) = if input.user.uid == 0 {
        (caps.clone(), caps.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    let process = oci::Process {
        terminal: false,
        user: oci::User {
            uid: input.user.uid,
            gid: input.user.gid,
            additional_gids: input.user.additional_gids.clone(),
        },
        args,
        env,
        cwd,
        capabilities: Some(oci::Capabilities {
            bounding: caps,
            effective,
            permitted,
        }),
        no_new_privileges: false,
        rlimits: spec
            .ulimits
            .iter()
            .map(|u| {
                // -1 is unlimited (RLIM_INFINITY).
                let v = |n: i64| u64::try_from(n).unwrap_or(u64::MAX);
                oci::Rlimit {
                    kind: u.rlimit_name(),
                    hard: v(u.hard),
                    soft: v(u.soft),
                }
            })
            .collect(),
    };

    let mounts = build_mounts(input)?;

    let mut namespaces: Vec<oci::Namespace> = ["pid", "ipc", "uts", "mount"]
        .iter()
        .map(|k| oci::Namespace {
            kind: k.to_string(),
            path: None,
        })
        .collect();
    // On the host network the container shares the runtime's (the node's) namespace:
    // runc joins no network namespace when the spec names none.
    match input.network {
        NetworkNs::Host { .. } => {}
        NetworkNs::Own => namespaces.push(oci::Namespace {
            kind: "network".into(),
            path: None,
        }),
        NetworkNs::Joined(p) => namespaces.push(oci::Namespace {
            kind: "network".into(),
            path: Some(p.display().to_string()),
        }),
    }

    let mut resources = oci::Resources {
        devices: default_device_rules(),
        ..Default::default()
    };
    let mut devices = Vec::new();
    for d in &input.devices {
        devices.push(oci::Device {
            path: d.path_in_container.clone(),
            kind: d.kind.to_string(),
            major: d.major,
            minor: d.minor,
            file_mode: Some(d.file_mode),
            uid: Some(d.uid),
            gid: Some(d.gid),
        });
        resources.devices.push(oci::DeviceRule {
            allow: true,
            kind: Some(d.kind.to_string()),
            major: Some(d.major),
            minor: Some(d.minor),
            access: d.permissions.clone(),
        });
    }
    // Checked at create time already; a spec stored otherwise still never reaches runc.
    for k in spec.sysctls.keys() {
        container_opts::validate_sysctl(k).map_err(SpecError::Sysctl)?;
    }
    if input.limits.memory_bytes > 0 {
        resources.memory = Some(oci::Memory {
            limit: i64::try_from(input.limits.memory_bytes).unwrap_or(i64::MAX),
        });
    }
    if input.limits.nano_cpus > 0 {
        // Docker's NanoCPUs: quota = cpus * period, with the period fixed at 100 ms.
        let quota = u128::from(input.limits.nano_cpus) * u128::from(CPU_PERIOD) / 1_000_000_000;
        resources.cpu = Some(oci::Cpu {
            // The kernel refuses quotas under 1 ms.
            quota: i64::try_from(quota).unwrap_or(i64::MAX).max(1000),
            period: CPU_PERIOD,
        });
    }

    Ok(oci::Spec {
        oci_version: "1.0.2".into(),
        process,
        root: oci::Root {
            path: "rootfs".into(),
            readonly: spec.read_only,
        },
        hostname,
        mounts,
        linux: oci::Linux {
            namespaces,
            resources,
            // One parent for all (as Docker's /docker), so no per-namespace directory is left
            // behind in every hierarchy; the namespace keeps ids of two nodes apart.
            cgroups_path: format!("/rswarm/{}-{}", input.namespace, input.container_id),
            masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
            sysctl: spec.sysctls.clone(),
            devices,
        },
    })
}

fn m(dest: &str, kind: &str, source: &str, options: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: dest.into(),
        kind: kind.into(),
        source: source.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// Docker's default mounts, then /etc files, then the service's mounts (parents before
/// children); a service mount replaces a default at the same place.
fn build_mounts(input: &SpecInput<'_>) -> Result<Vec<oci::Mount>, SpecError> {
    let mut user = Vec::new();
    for r in &input.mounts {
        let mt = &r.mount;
        if !mt.target.starts_with('/') || mt.target == "/" {
            return Err(SpecError::Mount(format!(
                "target {:?} must be an absolute path other than /",
                mt.target
            )));
        }
        let rw = if mt.read_only { "ro" } else { "rw" };
        let om = match mt.kind {
            MountType::Bind | MountType::Volume => oci::Mount {
                destination: mt.target.clone(),
                kind: "bind".into(),
                source: r.host_path.display().to_string(),
                options: vec!["rbind".into(), "rprivate".into(), rw.into()],
            },
            MountType::Tmpfs => {
                let mut options: Vec<String> = ["noexec", "nosuid", "nodev", "rprivate", rw]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if mt.tmpfs_size > 0 {
                    options.push(format!("size={}", mt.tmpfs_size));
                }
                oci::Mount {
                    destination: mt.target.clone(),
                    kind: "tmpfs".into(),
                    source: "tmpfs".into(),
                    options,
                }
            }
        };
        user.push(om);
    }
    user.sort_by_key(|m| Path::new(&m.destination).components().count());
    let taken = |d: &str| user.iter().any(|m| m.destination == d);

    let mut out: Vec<oci::Mount> = [
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        m(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
    .into_iter()
    .filter(|d| !taken(&d.destination))
    .collect();
    if let Some(etc) = &input.etc {
        for (dest, src) in [
            ("/etc/hostname", &etc.hostname),
            ("/etc/hosts", &etc.hosts),
            ("/etc/resolv.conf", &etc.resolv_conf),
        ] {
            if !taken(dest) {
                out.push(oci::Mount {
                    destination: dest.into(),
                    kind: "bind".into(),
                    source: src.display().to_string(),
                    options: vec!["rbind".into(), "rprivate".into(), "rw".into()],
                });
            }
        }
    }
    out.extend(user);
    // Last, as moby appends it: nothing the service mounts hides it.
    if let Some(init) = input.init.as_ref().filter(|_| input.spec.init) {
        out.push(m(
            INIT_PATH,
            "bind",
            &init.display().to_string(),
            &["bind", "ro"],
        ));
    }
    Ok(out)
}

/// Docker's device cgroup: deny everything, then allow mknod of any device and the usual
/// character devices (null, zero, full, random, urandom, tty, console pts, ptmx, tun).
fn default_device_rules() -> Vec<oci::DeviceRule> {
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| oci::DeviceRule {
        allow: true,
        kind: Some(kind.into()),
        major,
        minor,
        access: access.into(),
    };
    vec![
        oci::DeviceRule {
            allow: false,
            kind: None,
            major: None,
            minor: None,
            access: "rwm".into(),
        },
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"),
        rule("c", Some(1), Some(8), "rwm"),
        rule("c", Some(1), Some(7), "rwm"),
        rule("c", Some(5), Some(0), "rwm"),
        rule("c", Some(1), Some(5), "rwm"),
        rule("c", Some(1), Some(9), "rwm"),
        rule("c", Some(5), Some(1), "rwm"),
        rule("c", Some(136), None, "rwm"),
        rule("c", Some(5), Some(2), "rwm"),
        rule("c", Some(10), Some(200), "rwm"),
    ]
}

/// A named volume's name must be a single path component (it becomes a directory).
pub fn validate_volume_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Mount(format!(
            "volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// The stop signal: the service's, else the image's STOPSIGNAL, else SIGTERM.
pub fn stop_signal(spec: &ContainerSpec, image: &ImageConfig) -> String {
    if !spec.stop_signal.is_empty() {
        spec.stop_signal.clone()
    } else {
        image
            .stop_signal
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "SIGTERM".into())
    }
}

/// The process of an exec: the container's own process (user, env, cwd, capabilities) with
/// other arguments.
pub fn exec_process(container: &oci::Process, cmd: &[String]) -> oci::Process {
    oci::Process {
        terminal: false,
        args: cmd.to_vec(),
        ..container.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{Mount, MountType};

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: entry.map(sv),
            cmd: cmd.map(sv),
            ..Default::default()
        }
    }

    fn cspec(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            command: sv(command),
            args: sv(args),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        // image entrypoint, image cmd, service command, service args => argv
        type Case<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // image entrypoint, image cmd, service command, service args => argv
            (None, Some(&["sh"]), &[], &[], &["sh"]),
            (None, Some(&["sh"]), &[], &["echo", "hi"], &["echo", "hi"]),
            (
                Some(&["/init"]),
                Some(&["--serve"]),
                &[],
                &[],
                &["/init", "--serve"],
            ),
            (
                Some(&["/init"]),
                Some(&["--serve"]),
                &[],
                &["--debug"],
                &["/init", "--debug"],
            ),
            // Setting the entrypoint drops the image's cmd.
            (
                Some(&["/init"]),
                Some(&["--serve"]),
                &["/bin/other"],
                &[],
                &["/bin/other"],
            ),
            (None, Some(&["sh"]), &["sleep"], &[], &["sleep"]),
            (
                Some(&["/init"]),
                Some(&["--serve"]),
                &["/bin/other"],
                &["-x"],
                &["/bin/other", "-x"],
            ),
            (None, None, &[], &["ls"], &["ls"]),
            (Some(&["/init"]), None, &[], &[], &["/init"]),
            (None, None, &[], &[], &[]),
        ];
        for (ie, ic, c, a, want) in cases {
            let got = merge_command(&cspec(c, a), &image(*ie, *ic));
            assert_eq!(
                got,
                sv(want),
                "entry {ie:?} cmd {ic:?} command {c:?} args {a:?}"
            );
        }
    }

    #[test]
    fn env_merges_image_then_service() {
        let env = merge_env(
            &sv(&["PATH=/bin", "A=1", "B=2"]),
            &sv(&["B=3", "C=4", "HOSTNAME=mine"]),
            "abc",
        );
        assert_eq!(
            env,
            sv(&["HOSTNAME=mine", "PATH=/bin", "A=1", "B=3", "C=4"])
        );
        let env = merge_env(&[], &[], "h");
        assert_eq!(env, sv(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h"]));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app,other\napp:x:1001:\nwheel:x:10:app\n";

    #[test]
    fn users_resolve_through_passwd_and_group() {
        let r = |u: &str| resolve_user(u, Some(PASSWD), Some(GROUP));
        assert_eq!(r("").ok(), Some(ResolvedUser::default()));
        assert_eq!(
            r("nobody").ok(),
            Some(ResolvedUser {
                uid: 65534,
                gid: 65534,
                additional_gids: vec![]
            })
        );
        assert_eq!(
            r("app").ok(),
            Some(ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50, 10]
            })
        );
        assert_eq!(
            r("1000:staff").ok(),
            Some(ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            })
        );
        assert_eq!(
            r("4242").ok(),
            Some(ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            })
        );
        assert_eq!(r("4242:7").ok().map(|u| (u.uid, u.gid)), Some((4242, 7)));
        assert!(r("ghost").is_err());
        assert!(r("app:ghosts").is_err());
        // Without the image's files, only numbers work.
        assert_eq!(
            resolve_user("5:6", None, None).ok().map(|u| (u.uid, u.gid)),
            Some((5, 6))
        );
        assert!(resolve_user("app", None, None).is_err());
    }

    fn input<'a>(
        spec: &'a ContainerSpec,
        limits: &'a Resources,
        image: &'a ImageConfig,
    ) -> SpecInput<'a> {
        SpecInput {
            container_id: "0123456789abcdef0123",
            namespace: "rswtest",
            spec,
            limits,
            image,
            user: ResolvedUser::default(),
            mounts: vec![],
            etc: Some(EtcFiles {
                hostname: "/s/hostname".into(),
                hosts: "/s/hosts".into(),
                resolv_conf: "/s/resolv.conf".into(),
            }),
            network: NetworkNs::Own,
            devices: vec![],
            known_caps: &ALL_CAPABILITIES,
            init: None,
        }
    }

    #[test]
    fn init_runs_tini_first_with_its_binary_mounted() {
        let img = image(Some(&["/entry"]), Some(&["serve", "-v"]));
        let limits = Resources::default();
        let mut spec = cspec(&[], &[]);
        spec.init = true;
        let mut inp = input(&spec, &limits, &img);
        // No binary on the node: one clear line, not a spec runc cannot start.
        let e = build_spec(&inp).expect_err("no init");
        assert_eq!(
            e.to_string(),
            "--init: no init binary on this node: install Debian's tini (/usr/bin/tini-static)"
        );
        inp.init = Some(PathBuf::from("/usr/bin/tini-static"));
        let s = build_spec(&inp).expect("spec");
        assert_eq!(
            s.process.args,
            sv(&["/sbin/docker-init", "--", "/entry", "serve", "-v"])
        );
        let last = s.mounts.last().expect("mounts");
        assert_eq!(last.destination, INIT_PATH);
        assert_eq!(last.kind, "bind");
        assert_eq!(last.source, "/usr/bin/tini-static");
        assert_eq!(last.options, sv(&["bind", "ro"]));
        // Without `init` the binary is neither run nor mounted, even when the node has it.
        spec.init = false;
        let mut inp = input(&spec, &limits, &img);
        inp.init = Some(PathBuf::from("/usr/bin/tini-static"));
        let s = build_spec(&inp).expect("spec");
        assert_eq!(s.process.args, sv(&["/entry", "serve", "-v"]));
        assert!(s.mounts.iter().all(|m| m.destination != INIT_PATH));
    }

    #[test]
    fn init_binary_is_the_first_file_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&b, b"").expect("write");
        let (sa, sb) = (a.display().to_string(), b.display().to_string());
        assert_eq!(find_init(&[&sa, &sb]), Some(b.clone()));
        assert_eq!(find_init(&[&sa]), None);
        // A directory is not a binary.
        let ds = dir.path().display().to_string();
        assert_eq!(find_init(&[&ds]), None);
    }

    #[test]
    fn capabilities_readonly_sysctls_rlimits() {
        let mut spec = cspec(&[], &["sleep", "1"]);
        spec.capability_drop = sv(&["ALL"]);
        spec.capability_add = sv(&["CAP_NET_ADMIN"]);
        spec.read_only = true;
        spec.sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        spec.ulimits = vec![
            rswarm_proto::model::Ulimit::new("nofile", 123, 456).expect("ulimit"),
            rswarm_proto::model::Ulimit::new("memlock", -1, -1).expect("ulimit"),
        ];
        let (limits, img) = (Resources::default(), ImageConfig::default());
        let s = build_spec(&input(&spec, &limits, &img)).expect("spec");
        let caps = s.process.capabilities.as_ref().expect("caps");
        assert_eq!(caps.bounding, sv(&["CAP_NET_ADMIN"]));
        assert_eq!(caps.effective, caps.bounding);
        assert!(s.root.readonly);
        assert_eq!(
            s.linux
                .sysctl
                .get("net.ipv4.ip_forward")
                .map(String::as_str),
            Some("1")
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(json["process"]["rlimits"][0]["soft"], 123);
        assert_eq!(json["process"]["rlimits"][0]["hard"], 456);
        assert_eq!(json["process"]["rlimits"][1]["hard"], u64::MAX);

        // Defaults minus one, plus one; a non-root user keeps only the bounding set.
        spec.capability_drop = sv(&["CAP_KILL"]);
        spec.capability_add = sv(&["CAP_SYS_TIME"]);
        let mut inp = input(&spec, &limits, &img);
        inp.user.uid = 1000;
        let s = build_spec(&inp).expect("spec");
        let caps = s.process.capabilities.as_ref().expect("caps");
        assert_eq!(caps.bounding.len(), 14);
        assert!(caps.bounding.contains(&"CAP_SYS_TIME".to_string()));
        assert!(!caps.bounding.contains(&"CAP_KILL".to_string()));
        assert!(caps.effective.is_empty() && caps.permitted.is_empty());

        // ALL added: whatever the kernel knows, less the dropped.
        spec.capability_add = sv(&["ALL"]);
        let mut inp = input(&spec, &limits, &img);
        inp.known_caps = &ALL_CAPABILITIES[..38];
        let s = build_spec(&inp).expect("spec");
        let caps = s.process.capabilities.as_ref().expect("caps");
        assert_eq!(caps.bounding.len(), 37);
        assert!(!caps.bounding.contains(&"CAP_BPF".to_string()));

        // Not a namespaced sysctl: never reaches runc.
        spec.sysctls.insert("kernel.hostname".into(), "x".into());
        assert!(matches!(
            build_spec(&input(&spec, &limits, &img)),
            Err(SpecError::Sysctl(_))
        ));
    }

    #[test]
    fn devices_from_the_host() {
        let found =
            gather_devices(&[DeviceMapping::new("/dev/null", "/dev/mynull", "rw").expect("dev")])
                .expect("/dev/null");
        assert_eq!(found.len(), 1);
        let d = &found[0];
        assert_eq!((d.kind, d.major, d.minor), ('c', 1, 3));
        assert_eq!(d.path_in_container, "/dev/mynull");
        let missing =
            gather_devices(
                &[DeviceMapping::new("/dev/rswarm-nope", "/dev/x", "rwm").expect("dev")],
            )
            .expect_err("missing");
        assert_eq!(
            missing,
            "error gathering device information while adding custom device \"/dev/rswarm-nope\": no such file or directory"
        );
        assert!(
            gather_devices(&[DeviceMapping::new("/etc/hostname", "/x", "r").expect("dev")])
                .is_err()
        );
        // A directory is walked: its device nodes (here symlinks to them) go to the same
        // places under the container path; other files are skipped; none at all fails.
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("/dev/null", dir.path().join("a")).expect("symlink");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("sub/b")).expect("symlink");
        std::fs::write(dir.path().join("plain"), "x").expect("write");
        let host = dir.path().display().to_string();
        let walked = gather_devices(&[DeviceMapping::new(&host, "/dev/d", "r").expect("dev")])
            .expect("walk");
        let got: Vec<(&str, i64, i64)> = walked
            .iter()
            .map(|d| (d.path_in_container.as_str(), d.major, d.minor))
            .collect();
        assert_eq!(got, [("/dev/d/a", 1, 3), ("/dev/d/sub/b", 1, 5)]);
        let empty = tempfile::tempdir().expect("tmp");
        let e = gather_devices(&[DeviceMapping::new(
            &empty.path().display().to_string(),
            "/dev/d",
            "r",
        )
        .expect("dev")])
        .expect_err("empty dir");
        assert!(e.contains("no devices found"), "{e}");

        let spec = cspec(&[], &["sleep", "1"]);
        let (limits, img) = (Resources::default(), ImageConfig::default());
        let mut inp = input(&spec, &limits, &img);
        inp.devices = found;
        let s = build_spec(&inp).expect("spec");
        assert_eq!(s.linux.devices.len(), 1);
        assert_eq!(s.linux.devices[0].path, "/dev/mynull");
        assert_eq!(s.linux.devices[0].kind, "c");
        let rule = s.linux.resources.devices.last().expect("rule");
        assert_eq!(
            (rule.allow, rule.major, rule.minor, rule.access.as_str()),
            (true, Some(1), Some(3), "rw")
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["linux"]["devices"][0]["fileMode"], 0o666);
    }

    #[test]
    fn spec_has_dockers_defaults_and_limits() {
        let spec = cspec(&[], &["sleep", "1"]);
        let limits = Resources {
            nano_cpus: 1_500_000_000,
            memory_bytes: 64 << 20,
        };
        let img = ImageConfig {
            env: Some(sv(&["PATH=/bin"])),
            working_dir: Some("/work".into()),
            ..Default::default()
        };
        let s = build_spec(&input(&spec, &limits, &img)).expect("spec");
        assert_eq!(s.hostname, "0123456789ab");
        assert_eq!(s.process.args, sv(&["sleep", "1"]));
        assert_eq!(s.process.cwd, "/work");
        assert_eq!(s.process.env, sv(&["HOSTNAME=0123456789ab", "PATH=/bin"]));
        let caps = s.process.capabilities.as_ref().expect("caps");
        assert_eq!(caps.bounding.len(), 14);
        assert_eq!(caps.effective, caps.bounding);
        assert_eq!(
            s.linux.resources.cpu,
            Some(oci::Cpu {
                quota: 150_000,
                period: 100_000
            })
        );
        assert_eq!(
            s.linux.resources.memory,
            Some(oci::Memory { limit: 64 << 20 })
        );
        assert!(s.linux.masked_paths.contains(&"/proc/kcore".to_string()));
        assert!(s.linux.readonly_paths.contains(&"/proc/sys".to_string()));
        let dests: Vec<&str> = s.mounts.iter().map(|m| m.destination.as_str()).collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/dev/shm",
            "/dev/mqueue",
            "/etc/hosts",
            "/etc/hostname",
        ] {
            assert!(dests.contains(&d), "{d} missing from {dests:?}");
        }
        let net = s
            .linux
            .namespaces
            .iter()
            .find(|n| n.kind == "network")
            .expect("netns");
        assert_eq!(net.path, None);
        assert_eq!(s.linux.cgroups_path, "/rswarm/rswtest-0123456789abcdef0123");
        // And it is the JSON runc reads.
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(json["process"]["user"]["uid"], 0);
        assert!(json["linux"]["cgroupsPath"].is_string());
    }

    #[test]
    fn no_limits_no_cgroup_entries_and_netns_by_path() {
        let spec = ContainerSpec {
            hostname: "web".into(),
            ..cspec(&["/bin/true"], &[])
        };
        let img = ImageConfig::default();
        let limits = Resources::default();
        let mut inp = input(&spec, &limits, &img);
        let p = PathBuf::from("/run/netns/t1");
        inp.network = NetworkNs::Joined(&p);
        inp.user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        };
        let s = build_spec(&inp).expect("spec");
        assert_eq!(s.hostname, "web");
        assert_eq!(s.linux.resources.cpu, None);
        assert_eq!(s.linux.resources.memory, None);
        let net = s
            .linux
            .namespaces
            .iter()
            .find(|n| n.kind == "network")
            .expect("netns");
        assert_eq!(net.path.as_deref(), Some("/run/netns/t1"));
        let caps = s.process.capabilities.expect("caps");
        assert!(
            caps.effective.is_empty() && caps.permitted.is_empty() && !caps.bounding.is_empty()
        );
    }

    #[test]
    fn host_network_has_no_netns_and_the_nodes_hostname_and_files() {
        let spec = cspec(&["/bin/true"], &[]);
        let img = ImageConfig::default();
        let limits = Resources::default();
        let mut inp = input(&spec, &limits, &img);
        inp.network = NetworkNs::Host {
            node_hostname: "node-7",
        };
        let s = build_spec(&inp).expect("spec");
        let kinds: Vec<&str> = s.linux.namespaces.iter().map(|n| n.kind.as_str()).collect();
        assert!(!kinds.contains(&"network"), "{kinds:?}");
        assert!(
            kinds.contains(&"uts"),
            "its own hostname namespace: {kinds:?}"
        );
        assert_eq!(s.hostname, "node-7");
        assert!(s.process.env.iter().any(|e| e == "HOSTNAME=node-7"));
        // --hostname still wins; an unreadable node hostname falls back to Docker's.
        let named = ContainerSpec {
            hostname: "agent".into(),
            ..spec.clone()
        };
        assert_eq!(hostname(&named, "0123456789abcdef", inp.network), "agent");
        let unknown = NetworkNs::Host { node_hostname: "" };
        assert_eq!(hostname(&spec, "0123456789abcdef", unknown), "0123456789ab");
        assert_eq!(
            hostname(&spec, "0123456789abcdef", NetworkNs::Own),
            "0123456789ab"
        );

        // /etc/hosts and /etc/resolv.conf are the node's, loopback resolvers included.
        let node_hosts = "127.0.0.1 localhost\n10.1.2.3 db.lan\n";
        let node_resolv = "nameserver 127.0.0.53\nsearch lan\n";
        let (hosts, resolv) =
            etc_contents(inp.network, Some(node_hosts), node_resolv, "node-7", None);
        assert_eq!((hosts.as_str(), resolv.as_str()), (node_hosts, node_resolv));
        let (hosts, _) = etc_contents(inp.network, None, node_resolv, "node-7", None);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost"), "{hosts}");
        // Elsewhere: the embedded DNS, or the node's resolvers minus loopback ones.
        let p = PathBuf::from("/run/netns/t1");
        let (hosts, resolv) = etc_contents(
            NetworkNs::Joined(&p),
            Some(node_hosts),
            node_resolv,
            "web",
            Some("10.0.1.5"),
        );
        assert!(hosts.contains("10.0.1.5\tweb") && !hosts.contains("db.lan"));
        assert!(resolv.starts_with("nameserver 127.0.0.11\n"), "{resolv}");
        let (_, resolv) = etc_contents(NetworkNs::Own, None, node_resolv, "web", None);
        assert!(!resolv.contains("127.0.0.53"), "{resolv}");
    }

    #[test]
    fn spec_errors() {
        let img = ImageConfig::default();
        let limits = Resources::default();
        let empty = ContainerSpec::default();
        assert_eq!(
            build_spec(&input(&empty, &limits, &img)).err(),
            Some(SpecError::NoCommand)
        );
        let rel = ContainerSpec {
            dir: "rel".into(),
            ..cspec(&["x"], &[])
        };
        assert!(matches!(
            build_spec(&input(&rel, &limits, &img)),
            Err(SpecError::RelativeDir(_))
        ));
    }

    #[test]
    fn mounts_bind_volume_tmpfs() {
        let spec = cspec(&["x"], &[]);
        let img = ImageConfig::default();
        let limits = Resources::default();
        let mut inp = input(&spec, &limits, &img);
        let mk = |kind, source: &str, target: &str, ro| Mount {
            kind,
            source: source.into(),
            target: target.into(),
            read_only: ro,
            tmpfs_size: 0,
        };
        inp.mounts = vec![
            ResolvedMount {
                mount: mk(MountType::Bind, "/data", "/srv/data/sub", true),
                host_path: "/data".into(),
            },
            ResolvedMount {
                mount: mk(MountType::Volume, "v1", "/srv", false),
                host_path: "/state/volumes/v1".into(),
            },
            ResolvedMount {
                mount: Mount {
                    tmpfs_size: 1 << 20,
                    ..mk(MountType::Tmpfs, "", "/dev/shm", false)
                },
                host_path: PathBuf::new(),
            },
        ];
        let s = build_spec(&inp).expect("spec");
        let pos = |d: &str| s.mounts.iter().position(|m| m.destination == d).expect(d);
        assert!(pos("/srv") < pos("/srv/data/sub"), "parents first");
        let shm: Vec<_> = s
            .mounts
            .iter()
            .filter(|m| m.destination == "/dev/shm")
            .collect();
        assert_eq!(
            shm.len(),
            1,
            "the service's tmpfs replaces the default /dev/shm"
        );
        assert!(shm[0].options.contains(&"size=1048576".to_string()));
        let bind = &s.mounts[pos("/srv/data/sub")];
        assert_eq!(
            (bind.kind.as_str(), bind.source.as_str()),
            ("bind", "/data")
        );
        assert!(bind.options.contains(&"ro".to_string()));
        assert_eq!(s.mounts[pos("/srv")].source, "/state/volumes/v1");

        inp.mounts = vec![ResolvedMount {
            mount: mk(MountType::Bind, "/x", "relative", false),
            host_path: "/x".into(),
        }];
        assert!(matches!(build_spec(&inp), Err(SpecError::Mount(_))));
        assert!(validate_volume_name("../etc").is_err());
        assert!(validate_volume_name("data_1.x").is_ok());
    }

    #[test]
    fn signals_and_stop_signal() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        let img = ImageConfig {
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        };
        assert_eq!(stop_signal(&ContainerSpec::default(), &img), "SIGQUIT");
        assert_eq!(
            stop_signal(&ContainerSpec::default(), &ImageConfig::default()),
            "SIGTERM"
        );
        let s = ContainerSpec {
            stop_signal: "SIGINT".into(),
            ..Default::default()
        };
        assert_eq!(stop_signal(&s, &img), "SIGINT");
    }

    #[test]
    fn etc_files() {
        assert!(hosts_file("h", None).starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts_file("h", Some("10.0.0.2")).ends_with("10.0.0.2\th\n"));
        let r = container_resolv_conf("nameserver 127.0.0.53\nnameserver 10.1.1.1\nsearch x\n");
        assert_eq!(r, "nameserver 10.1.1.1\nsearch x\n");
    }
}
