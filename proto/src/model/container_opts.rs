//! Container options beyond image and command: capabilities, ulimits, sysctls and devices,
//! with Docker's syntax and checks. Shared by the CLI, stacks, the control API (which
//! refuses bad values at create time) and the worker.

use serde::{Deserialize, Serialize};

/// Every capability Linux knows, in number order (CAP_CHOWN is 0): `ALL` means these,
/// cut to what the running kernel knows (see `/proc/sys/kernel/cap_last_cap`).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The special capability name meaning all of them.
pub const ALL: &str = "ALL";

/// Docker's normalisation: case-insensitive, `CAP_` optional, `ALL` kept as is. Unknown
/// names are refused.
pub fn normalize_capability(c: &str) -> Result<String, String> {
    let up = c.trim().to_ascii_uppercase();
    if up == ALL {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(format!("unknown capability: {c:?}"))
    }
}

fn normalize_set(caps: &[String]) -> Result<std::collections::BTreeSet<String>, String> {
    caps.iter().map(|c| normalize_capability(c)).collect()
}

/// Docker's `EffectiveCapAddCapDrop`: normalised, deduplicated and sorted; `ALL` trumps the
/// other names in its list, and a capability in both lists is only added.
pub fn effective_cap_add_drop(
    add: &[String],
    drop: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut add = normalize_set(add)?;
    let mut drop = normalize_set(drop)?;
    if add.contains(ALL) {
        add = [ALL.to_string()].into();
    }
    if drop.contains(ALL) {
        drop = [ALL.to_string()].into();
    }
    drop.retain(|c| !add.contains(c));
    Ok((add.into_iter().collect(), drop.into_iter().collect()))
}

/// `service update --cap-add/--cap-drop`, as Docker's `updateCapabilities`: a capability
/// added leaves the drop list and one dropped leaves the add list (`ALL` clears the other
/// list), then each joins its own list.
pub fn update_capabilities(
    cur_add: &[String],
    cur_drop: &[String],
    to_add: &[String],
    to_drop: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut cap_add = normalize_set(cur_add)?;
    let mut cap_drop = normalize_set(cur_drop)?;
    let to_add = normalize_set(to_add)?;
    let to_drop = normalize_set(to_drop)?;
    if to_drop.contains(ALL) {
        cap_add.clear();
    } else {
        cap_add.retain(|c| !to_drop.contains(c));
    }
    if to_add.contains(ALL) {
        cap_drop.clear();
    } else {
        cap_drop.retain(|c| !to_add.contains(c));
    }
    cap_add.extend(to_add);
    cap_drop.extend(to_drop);
    let add: Vec<String> = cap_add.into_iter().collect();
    let drop: Vec<String> = cap_drop.into_iter().collect();
    effective_cap_add_drop(&add, &drop)
}

/// Docker's `TweakCapabilities`: `ALL` added gives every capability but the dropped ones;
/// `ALL` dropped gives only the added ones; otherwise `basics` − dropped + added.
pub fn tweak_capabilities(
    basics: &[&str],
    all: &[&str],
    add: &[String],
    drop: &[String],
) -> Vec<String> {
    if add.is_empty() && drop.is_empty() {
        return basics.iter().map(|c| c.to_string()).collect();
    }
    // Stored specs are normalised already; names the node does not know are left out.
    let norm = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter_map(|c| normalize_capability(c).ok())
            .collect()
    };
    let (add, drop) = (norm(add), norm(drop));
    let mut caps: Vec<String> = if add.iter().any(|c| c == ALL) {
        all.iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect()
    } else if drop.iter().any(|c| c == ALL) {
        add
    } else {
        let mut caps: Vec<String> = basics
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect();
        caps.extend(add);
        caps
    };
    let mut seen = std::collections::BTreeSet::new();
    caps.retain(|c| seen.insert(c.clone()));
    caps
}

/// A resource limit (Docker's `Ulimit`): -1 is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// The names Docker accepts (go-units' `ulimitNameMapping`).
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl Ulimit {
    /// Checks the name and that soft ≤ hard (go-units' rules).
    pub fn new(name: &str, soft: i64, hard: i64) -> Result<Self, String> {
        if !ULIMIT_NAMES.contains(&name) {
            return Err(format!(
                "invalid ulimit type: {name} (expected one of {})",
                ULIMIT_NAMES.join(", ")
            ));
        }
        if soft < -1 || hard < -1 {
            return Err(format!("invalid ulimit {name}: a limit is -1 or more"));
        }
        // -1 (unlimited) is the largest value.
        let key = |v: i64| if v == -1 { i64::MAX } else { v };
        if key(soft) > key(hard) {
            return Err(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            ));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// Docker's `--ulimit` syntax: `name=soft[:hard]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, limits) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit argument: {s}"))?;
        let (soft, hard) = match limits.split_once(':') {
            Some((s, h)) => (s, h),
            None => (limits, limits),
        };
        let num = |v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid ulimit value {v:?} in {s}: expected a number"))
        };
        Ulimit::new(name.trim(), num(soft)?, num(hard)?)
    }

    /// The OCI name, `RLIMIT_NOFILE`.
    pub fn rlimit_name(&self) -> String {
        format!("RLIMIT_{}", self.name.to_ascii_uppercase())
    }
}

impl std::fmt::Display for Ulimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

/// A host device made available in the container (Docker's `DeviceMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    /// Some of `rwm`.
    pub permissions: String,
}

/// A non-empty subset of `rwm`, each at most once.
pub fn valid_device_mode(mode: &str) -> bool {
    !mode.is_empty()
        && mode.len() <= 3
        && mode.chars().all(|c| "rwm".contains(c))
        && mode
            .chars()
            .enumerate()
            .all(|(i, c)| !mode[..i].contains(c))
}

impl DeviceMapping {
    /// `docker run --device` syntax: `/dev/x[:/dev/y][:rwm]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.splitn(4, ':').collect();
        let mut permissions = "rwm".to_string();
        let mut dst = String::new();
        match parts.as_slice() {
            [src] => return DeviceMapping::new(src, src, &permissions),
            [_, second] | [_, second, _] => {
                if let [_, _, mode] = parts.as_slice() {
                    permissions = mode.to_string();
                }
                // The middle part is a mode when it reads as one (Docker's rule).
                if valid_device_mode(second) && parts.len() == 2 {
                    permissions = second.to_string();
                } else {
                    dst = second.to_string();
                }
            }
            _ => return Err(format!("invalid device specification: {s}")),
        }
        let src = parts[0];
        let dst = if dst.is_empty() { src.to_string() } else { dst };
        DeviceMapping::new(src, &dst, &permissions)
    }

    /// Checks both paths are absolute and the mode is some of `rwm`.
    pub fn new(host: &str, container: &str, permissions: &str) -> Result<Self, String> {
        for p in [host, container] {
            if !p.starts_with('/') {
                return Err(format!("invalid device path {p:?}: must be absolute"));
            }
        }
        if !valid_device_mode(permissions) {
            return Err(format!("invalid device mode: {permissions}"));
        }
        Ok(DeviceMapping {
            path_on_host: host.to_string(),
            path_in_container: container.to_string(),
            permissions: permissions.to_string(),
        })
    }
}

impl std::fmt::Display for DeviceMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.path_on_host, self.path_in_container, self.permissions
        )
    }
}

/// Docker's `ValidateSysctl`: only sysctls of the container's own namespaces (IPC and
/// network) may be set.
pub fn validate_sysctl(key: &str) -> Result<(), String> {
    const EXACT: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    const PREFIXES: [&str; 2] = ["net.", "fs.mqueue."];
    if EXACT.contains(&key)
        || PREFIXES
            .iter()
            .any(|p| key.starts_with(p) && key.len() > p.len())
    {
        Ok(())
    } else {
        Err(format!(
            "sysctl {key:?} is not allowed: only namespaced ones (kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.*) can be set"
        ))
    }
}

/// `KEY=VALUE` of `--sysctl`, checked.
pub fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid sysctl {s:?}: expected KEY=VALUE"))?;
    let k = k.trim();
    validate_sysctl(k)?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn capabilities_normalise_like_docker() {
        assert_eq!(normalize_capability("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(
            normalize_capability("CAP_SYS_ADMIN").unwrap(),
            "CAP_SYS_ADMIN"
        );
        assert_eq!(normalize_capability("cap_chown").unwrap(), "CAP_CHOWN");
        assert_eq!(normalize_capability("all").unwrap(), "ALL");
        assert!(normalize_capability("CAP_FLY").is_err());
        assert!(normalize_capability("").is_err());
        let (a, d) =
            effective_cap_add_drop(&sv(&["net_admin", "chown"]), &sv(&["chown", "kill"])).unwrap();
        assert_eq!(a, sv(&["CAP_CHOWN", "CAP_NET_ADMIN"]));
        assert_eq!(d, sv(&["CAP_KILL"]));
        assert!(effective_cap_add_drop(&sv(&["kill"]), &sv(&["x_x"])).is_err());
        let (a, d) = effective_cap_add_drop(&sv(&["ALL", "kill"]), &sv(&["chown"])).unwrap();
        assert_eq!((a, d), (sv(&["ALL"]), sv(&["CAP_CHOWN"])));
        let (a, d) = effective_cap_add_drop(&sv(&["kill"]), &sv(&["all", "chown"])).unwrap();
        assert_eq!((a, d), (sv(&["CAP_KILL"]), sv(&["ALL"])));
    }

    #[test]
    fn capability_updates_move_between_lists() {
        let (a, d) = update_capabilities(
            &sv(&["CAP_NET_ADMIN"]),
            &sv(&["CAP_KILL", "CAP_CHOWN"]),
            &sv(&["kill"]),
            &sv(&["net_admin"]),
        )
        .unwrap();
        assert_eq!(a, sv(&["CAP_KILL"]));
        assert_eq!(d, sv(&["CAP_CHOWN", "CAP_NET_ADMIN"]));
        let (a, d) =
            update_capabilities(&sv(&["CAP_NET_ADMIN"]), &sv(&[]), &sv(&[]), &sv(&["ALL"]))
                .unwrap();
        assert_eq!((a, d), (sv(&[]), sv(&["ALL"])));
    }

    #[test]
    fn capability_arithmetic() {
        let basics = ["CAP_CHOWN", "CAP_KILL"];
        assert_eq!(
            tweak_capabilities(&basics, &ALL_CAPABILITIES, &[], &[]),
            sv(&basics)
        );
        assert_eq!(
            tweak_capabilities(
                &basics,
                &ALL_CAPABILITIES,
                &sv(&["CAP_NET_ADMIN"]),
                &sv(&["ALL"])
            ),
            sv(&["CAP_NET_ADMIN"])
        );
        let all = tweak_capabilities(&basics, &ALL_CAPABILITIES, &sv(&["ALL"]), &sv(&["CAP_BPF"]));
        assert_eq!(all.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!all.contains(&"CAP_BPF".to_string()));
        assert_eq!(
            tweak_capabilities(
                &basics,
                &ALL_CAPABILITIES,
                &sv(&["CAP_SYS_ADMIN", "CAP_CHOWN"]),
                &sv(&["CAP_KILL"])
            ),
            sv(&["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
    }

    #[test]
    fn ulimits_parse_like_docker() {
        let u = Ulimit::parse("nofile=123:456").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 123, 456));
        assert_eq!(u.rlimit_name(), "RLIMIT_NOFILE");
        let u = Ulimit::parse("core=0").unwrap();
        assert_eq!((u.soft, u.hard), (0, 0));
        assert!(Ulimit::parse("memlock=-1:-1").is_ok());
        assert!(Ulimit::parse("nofile=10:-1").is_ok());
        assert!(Ulimit::parse("nofile=456:123").is_err());
        assert!(Ulimit::parse("nofiles=1").is_err());
        assert!(Ulimit::parse("nofile").is_err());
        assert!(Ulimit::parse("nofile=x").is_err());
        assert!(Ulimit::parse("nofile=-5").is_err());
    }

    #[test]
    fn devices_parse_like_docker_run() {
        let d = DeviceMapping::parse("/dev/null").unwrap();
        assert_eq!(d.to_string(), "/dev/null:/dev/null:rwm");
        let d = DeviceMapping::parse("/dev/null:/dev/mynull").unwrap();
        assert_eq!(d.to_string(), "/dev/null:/dev/mynull:rwm");
        let d = DeviceMapping::parse("/dev/null:r").unwrap();
        assert_eq!(d.to_string(), "/dev/null:/dev/null:r");
        let d = DeviceMapping::parse("/dev/null:/dev/y:rw").unwrap();
        assert_eq!(d.to_string(), "/dev/null:/dev/y:rw");
        assert!(DeviceMapping::parse("/dev/null:/dev/y:rwx").is_err());
        assert!(DeviceMapping::parse("/dev/null:/dev/y:rr").is_err());
        assert!(DeviceMapping::parse("dev/null").is_err());
        assert!(DeviceMapping::parse("/dev/null:rel").is_err());
        assert!(DeviceMapping::parse("/a:/b:r:x").is_err());
    }

    #[test]
    fn only_namespaced_sysctls() {
        for ok in [
            "net.ipv4.ip_forward",
            "kernel.shmmax",
            "kernel.sem",
            "fs.mqueue.msg_max",
        ] {
            assert!(validate_sysctl(ok).is_ok(), "{ok}");
        }
        for bad in ["kernel.hostname", "vm.swappiness", "net.", "fs.file-max"] {
            assert!(validate_sysctl(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_sysctl("net.core.somaxconn=1024").unwrap(),
            ("net.core.somaxconn".to_string(), "1024".to_string())
        );
        assert!(parse_sysctl("net.core.somaxconn").is_err());
    }
}
