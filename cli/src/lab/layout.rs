//! Where everything of a lab lives: names and addresses, all derived from the lab dir and the
//! host count. Pure, so that `up`, `down` and every other command agree on them.
//!
//! Names carry a short hash of the lab dir (`id`), so two labs (a test's and a developer's)
//! never share a namespace, a link or a containerd namespace:
//! - network namespaces `rswlab-<id>-sw` (the switch), `rswlab-<id>-hN`, `rswlab-<id>-reg`;
//! - containerd namespaces `rswlab-<id>-hN`;
//! - the machine's own leg, the one link in the machine's namespace: `rswl<id>` (15 bytes
//!   at most, as Linux wants).
//!
//! Addresses (198.18.0.0/24, from the benchmarking range, never routed): hN at
//! 198.18.0.(10+N), the registry at .250, the machine at .254. The addresses are the same
//! in every lab, so only one lab can be up at a time on a machine: `up` checks that the
//! range is free first.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The lab dir when `--dir` is not given.
pub const DEFAULT_DIR: &str = "/tmp/rswarm-lab";
/// The lab's subnet, 198.18.0.0/24.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const PREFIX_LEN: u8 = 24;
pub const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
pub const REGISTRY_PORT: u16 = 5000;
/// The machine's address on the lab's switch.
pub const MACHINE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Every host's cluster port.
pub const CLUSTER_PORT: u16 = 2377;
/// Hosts per lab; hN is at .(10+N), so this could go to 239, but a lab is a few hosts.
pub const MAX_NODES: u32 = 64;
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The host end of every host's (and the registry's) veth, inside its namespace.
pub const HOST_LINK: &str = "eth0";
/// The switch end of the machine's leg, inside the switch namespace.
pub const MACHINE_PORT: &str = "machine";
/// The switch end of the registry's veth.
pub const REGISTRY_PORT_LINK: &str = "reg";
/// The longest path a Unix socket address holds (sun_path less its terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// A short hash of the lab dir (FNV-1a, 32 bits, as 8 hex digits).
pub fn lab_id(dir: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// Whether `ip` lies in the lab's subnet.
pub fn in_subnet(ip: Ipv4Addr) -> bool {
    ip.octets()[..3] == SUBNET.octets()[..3]
}

/// Whether the network `net/len` overlaps the lab's subnet (contains it or lies in it).
pub fn overlaps_subnet(net: Ipv4Addr, len: u8) -> bool {
    let mask = |l: u8| {
        if l == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(l.min(32)))
        }
    };
    let common = len.min(PREFIX_LEN);
    (u32::from(net) & mask(common)) == (u32::from(SUBNET) & mask(common))
}

/// An absolute, normalised form of `dir` (relative to the current directory; symbolic links
/// resolved in the part that exists), so that one lab always gets the same id.
pub fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    // Drop `.` and resolve `..` lexically first, then canonicalise the longest existing
    // ancestor and put the rest back.
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// One lab's names and paths.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
    pub id: String,
    pub nodes: u32,
}

impl Layout {
    /// `dir` must already be resolved ([`resolve_dir`]).
    pub fn new(dir: PathBuf, nodes: u32) -> Layout {
        let id = lab_id(&dir);
        Layout { dir, id, nodes }
    }

    pub fn hosts(&self) -> impl Iterator<Item = u32> {
        1..=self.nodes
    }

    pub fn host_name(n: u32) -> String {
        format!("h{n}")
    }

    pub fn host_ip(n: u32) -> Ipv4Addr {
        let o = SUBNET.octets();
        Ipv4Addr::new(o[0], o[1], o[2], (10 + n).min(249) as u8)
    }

    /// hN's cluster address, `198.18.0.(10+N):2377`.
    pub fn cluster_addr(n: u32) -> String {
        format!("{}:{CLUSTER_PORT}", Self::host_ip(n))
    }

    pub fn registry_addr() -> String {
        format!("{REGISTRY_IP}:{REGISTRY_PORT}")
    }

    fn prefix(&self) -> String {
        format!("rswlab-{}", self.id)
    }

    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix())
    }

    pub fn host_ns(&self, n: u32) -> String {
        format!("{}-h{n}", self.prefix())
    }

    pub fn registry_ns(&self) -> String {
        format!("{}-reg", self.prefix())
    }

    /// Every network namespace this lab may make, the switch first.
    pub fn all_netns(&self) -> Vec<String> {
        let mut v = vec![self.switch_ns()];
        v.extend(self.hosts().map(|n| self.host_ns(n)));
        v.push(self.registry_ns());
        v
    }

    /// hN's containerd namespace.
    pub fn ctr_namespace(&self, n: u32) -> String {
        format!("{}-h{n}", self.prefix())
    }

    /// The machine's leg: the one link the lab puts in the machine's own namespace.
    pub fn leg(&self) -> String {
        format!("rswl{}", self.id)
    }

    /// The switch end of hN's veth, inside the switch namespace.
    pub fn switch_port(n: u32) -> String {
        format!("h{n}")
    }

    pub fn ledger(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    pub fn host_dir(&self, n: u32) -> PathBuf {
        self.dir.join(Self::host_name(n))
    }

    pub fn socket(&self, n: u32) -> PathBuf {
        self.host_dir(n).join("rswarm.sock")
    }

    pub fn data_dir(&self, n: u32) -> PathBuf {
        self.host_dir(n).join("data")
    }

    pub fn daemon_log(&self, n: u32) -> PathBuf {
        self.host_dir(n).join("daemon.log")
    }

    pub fn daemon_pid(&self, n: u32) -> PathBuf {
        self.host_dir(n).join("daemon.pid")
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.dir.join("registry")
    }

    pub fn registry_pid(&self) -> PathBuf {
        self.registry_dir().join("pid")
    }

    /// Where the lab's own containerd lives, when it has to start one.
    pub fn containerd_dir(&self) -> PathBuf {
        self.dir.join("containerd")
    }

    pub fn own_containerd_socket(&self) -> PathBuf {
        self.containerd_dir().join("containerd.sock")
    }

    pub fn containerd_pid(&self) -> PathBuf {
        self.containerd_dir().join("pid")
    }

    /// `h2` → 2, if the lab has it.
    pub fn parse_host(&self, s: &str) -> anyhow::Result<u32> {
        let n = s
            .strip_prefix('h')
            .and_then(|d| d.parse::<u32>().ok())
            .filter(|n| (1..=self.nodes).contains(n) && s == Self::host_name(*n));
        n.ok_or_else(|| {
            anyhow::anyhow!(
                "no host {s:?} in the lab at {} (its hosts are h1..h{})",
                self.dir.display(),
                self.nodes
            )
        })
    }

    /// Refuses a lab dir whose sockets would not fit in a Unix socket address.
    pub fn check_socket_paths(&self) -> anyhow::Result<()> {
        let longest = [
            self.socket(self.nodes),
            self.own_containerd_socket().with_extension("sock.ttrpc"),
        ];
        for p in longest {
            let len = p.as_os_str().len();
            if len > SUN_PATH_MAX {
                anyhow::bail!(
                    "lab dir {} is too long: {} would be {len} bytes, over the {SUN_PATH_MAX} a Unix socket path allows",
                    self.dir.display(),
                    p.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_dir_and_fit_linux_limits() {
        let a = Layout::new(PathBuf::from("/tmp/lab-a"), 3);
        let b = Layout::new(PathBuf::from("/tmp/lab-b"), 3);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 8);
        assert!(a.leg().len() <= 15, "{}", a.leg());
        assert_eq!(a.host_ns(2), format!("rswlab-{}-h2", a.id));
        assert_eq!(a.all_netns().len(), 5);
        assert_eq!(a.ctr_namespace(1), format!("rswlab-{}-h1", a.id));
        assert_eq!(lab_id(Path::new("/tmp/lab-a")), a.id, "stable");
    }

    #[test]
    fn addresses_follow_the_issue() {
        assert_eq!(Layout::host_ip(1).to_string(), "198.18.0.11");
        assert_eq!(Layout::host_ip(3).to_string(), "198.18.0.13");
        assert_eq!(Layout::cluster_addr(2), "198.18.0.12:2377");
        assert_eq!(Layout::registry_addr(), "198.18.0.250:5000");
        assert!(in_subnet(MACHINE_IP));
        assert!(!in_subnet(Ipv4Addr::new(198, 18, 1, 1)));
    }

    #[test]
    fn overlap_covers_supernets_and_subnets() {
        assert!(overlaps_subnet(Ipv4Addr::new(198, 18, 0, 0), 24));
        assert!(overlaps_subnet(Ipv4Addr::new(198, 18, 0, 128), 25));
        assert!(overlaps_subnet(Ipv4Addr::new(198, 18, 0, 0), 15));
        assert!(overlaps_subnet(Ipv4Addr::new(0, 0, 0, 0), 0));
        assert!(!overlaps_subnet(Ipv4Addr::new(198, 18, 1, 0), 24));
        assert!(!overlaps_subnet(Ipv4Addr::new(10, 0, 0, 0), 8));
    }

    #[test]
    fn hosts_parse_only_within_the_lab() {
        let l = Layout::new(PathBuf::from("/tmp/x"), 3);
        assert_eq!(l.parse_host("h3").unwrap(), 3);
        for bad in ["h0", "h4", "h01", "x1", "h", "registry"] {
            assert!(l.parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dirs_resolve_to_one_absolute_form() {
        let cwd = std::env::current_dir().unwrap();
        let r = resolve_dir(Path::new("no-such-lab/./x/../y")).unwrap();
        assert!(r.is_absolute());
        assert_eq!(r, cwd.canonicalize().unwrap().join("no-such-lab/y"));
    }

    #[test]
    fn long_dirs_are_refused() {
        let l = Layout::new(PathBuf::from(format!("/tmp/{}", "x".repeat(100))), 3);
        assert!(l.check_socket_paths().is_err());
        assert!(Layout::new(PathBuf::from("/tmp/rswarm-lab"), 64)
            .check_socket_paths()
            .is_ok());
    }
}
