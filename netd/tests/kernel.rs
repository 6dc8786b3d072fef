//! KernelNetlink against the real kernel: two scratch "hosts" (network namespaces joined by
//! a veth pair in 192.168.201.0/24), each with a task namespace, converged through the
//! diff. Root only, and only with `RSWARM_NET_TESTS=1`. Every namespace is made here, under
//! a scratch directory, and removed by a guard even on failure; no traffic leaves them.
use rswarm_netd::diff::diff;
use rswarm_netd::kernel::{underlay_mtu, KernelNetlink, TaskNetns};
use rswarm_netd::model::{
    desired, sandbox_name, veth_name, NetState, NodeView, RemoteTask, HOST_ENDPOINT,
    HOST_ENDPOINT_IF,
};
use rswarm_netd::netlink::{apply, Netlink};
use rswarm_netd::netns;
use rswarm_proto::model::{
    Ipv4Cidr, Network, NetworkAllocation, NetworkAttachment, Task, TaskId, TaskState,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NET: &str = "kntest000001aaaaaaaaaaaaa";
const VNI: u32 = 4242;

fn enabled(test: &str) -> bool {
    if std::env::var("RSWARM_NET_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipping {test}: set RSWARM_NET_TESTS=1 (as root) to run kernel tests");
    false
}

/// A scratch directory whose namespaces (and everything else) go when it drops.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "rswnt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&base).expect("scratch dir");
        Scratch { base }
    }

    /// A new namespace `rswnt-<name>` in the scratch directory.
    fn netns(&self, name: &str) -> PathBuf {
        let p = self.base.join(format!("rswnt-{name}"));
        netns::create(&p).expect("create netns");
        p
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Namespaces first (mount points cannot be removed), deepest first: sandboxes live
        // in subdirectories and hold links whose far ends are in the task namespaces.
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if netns::is_netns(&p) {
                    out.push(p);
                } else if p.is_dir() {
                    walk(&p, out);
                    out.push(p);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.base, &mut found);
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in found {
            if netns::is_netns(&p) {
                if let Err(e) = netns::delete(&p) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("cleanup: removing {}: {e}", self.base.display());
        }
    }
}

/// Runs a command, inside `ns` if given; panics on failure. Returns stdout.
fn run(ns: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--");
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{args:?} in {ns:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn underlay_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 201, host)
}

/// Two host namespaces joined by a veth pair `u1`—`u2` in 192.168.201.0/24.
fn two_hosts(s: &Scratch) -> (PathBuf, PathBuf) {
    let h1 = s.netns("h1");
    let h2 = s.netns("h2");
    let h2s = h2.to_string_lossy().into_owned();
    run(
        Some(&h1),
        &[
            "ip", "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", &h2s,
        ],
    );
    for (ns, dev, host) in [(&h1, "u1", 1), (&h2, "u2", 2)] {
        let addr = format!("{}/24", underlay_ip(host));
        run(Some(ns), &["ip", "addr", "add", &addr, "dev", dev]);
        run(Some(ns), &["ip", "link", "set", dev, "up"]);
    }
    (h1, h2)
}

fn network() -> Network {
    Network {
        id: NET.into(),
        allocation: NetworkAllocation {
            subnet: Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 0), 24).expect("a /24"),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            vni: VNI,
        },
        ..Network::default()
    }
}

fn task(id: &str, node: &str, ip: [u8; 4]) -> Task {
    Task {
        id: id.into(),
        node_id: Some(node.into()),
        desired_state: TaskState::Running,
        status: rswarm_proto::model::TaskStatus {
            state: TaskState::Running,
            ..Default::default()
        },
        networks: vec![NetworkAttachment {
            network: NET.into(),
            addresses: vec![Ipv4Cidr::new(Ipv4Addr::from(ip), 24).expect("a /24")],
        }],
        ..Task::default()
    }
}

fn view(host: u8, local: &[Task], remote: &[Task]) -> NodeView {
    NodeView {
        node_id: format!("n{host}").as_str().into(),
        underlay_ip: underlay_ip(host),
        underlay_mtu: 1500,
        networks: vec![network()],
        local_tasks: local.to_vec(),
        remote_tasks: remote
            .iter()
            .map(|t| RemoteTask {
                underlay_ip: underlay_ip(if host == 1 { 2 } else { 1 }),
                task: t.clone(),
            })
            .collect(),
    }
}

fn resolver(map: BTreeMap<TaskId, PathBuf>) -> TaskNetns {
    Arc::new(move |t: &TaskId| map.get(t).cloned())
}

/// A KernelNetlink whose underlay is `host`.
fn kernel_in(host: &Path, sandboxes: PathBuf, tasks: TaskNetns) -> KernelNetlink {
    netns::run_in(host, move || KernelNetlink::new(sandboxes, tasks))
        .expect("enter host netns")
        .expect("KernelNetlink::new")
}

/// Applies the diff to `want`, then checks the kernel reads back exactly `want`.
fn converge(k: &mut KernelNetlink, want: &NetState) {
    let before = k.observe().expect("observe");
    let ops = diff(want, &before);
    apply(k, &ops).unwrap_or_else(|e| panic!("{e}\nops: {ops:#?}"));
    let after = k.observe().expect("observe");
    let rest = diff(want, &after);
    assert!(
        rest.is_empty(),
        "still to do after applying {ops:#?}:\n{rest:#?}\nobserved: {after:#?}"
    );
    assert_eq!(&after, want);
}

/// A UDP round trip from `from` (a namespace) to `to_ip:7777`, answered in namespace `to`.
fn udp_round_trip(from: &Path, to: &Path, to_ip: Ipv4Addr) -> Result<(), String> {
    let to = to.to_owned();
    let server = std::thread::spawn(move || {
        netns::run_in(&to, move || -> Result<(), String> {
            let sock = UdpSocket::bind((to_ip, 7777)).map_err(|e| format!("bind: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let (n, peer) = sock.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
            sock.send_to(&buf[..n], peer)
                .map_err(|e| format!("send: {e}"))?;
            Ok(())
        })
    });
    let client = netns::run_in(from, move || -> Result<(), String> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let dst = SocketAddr::from((to_ip, 7777));
        let mut buf = [0u8; 64];
        for _ in 0..16 {
            // Errors while the server is not yet bound (ICMP port unreachable) are retried.
            let _ = sock.send_to(b"rswarm", dst);
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if &buf[..n] == b"rswarm" {
                    return Ok(());
                }
            }
        }
        Err(format!("no echo from {dst}"))
    })
    .map_err(|e| e.to_string())?;
    let served = server
        .join()
        .map_err(|_| "server thread panicked".to_owned())?;
    client?;
    served.map_err(|e| e.to_string())??;
    Ok(())
}

#[test]
fn two_hosts_converge_talk_and_clean_up() {
    if !enabled("two_hosts_converge_talk_and_clean_up") {
        return;
    }
    let s = Scratch::new("conv");
    let (h1, h2) = two_hosts(&s);
    let t1 = s.netns("t1");
    let t2 = s.netns("t2");
    let task1 = task("task1aaaaaaaa", "n1", [10, 77, 0, 2]);
    let task2 = task("task2bbbbbbbb", "n2", [10, 77, 0, 3]);
    let tasks = BTreeMap::from([
        (task1.id.clone(), t1.clone()),
        (task2.id.clone(), t2.clone()),
    ]);

    let mut k1 = kernel_in(&h1, s.dir("sb1"), resolver(tasks.clone()));
    let mut k2 = kernel_in(&h2, s.dir("sb2"), resolver(tasks.clone()));
    let want1 = desired(&view(
        1,
        std::slice::from_ref(&task1),
        std::slice::from_ref(&task2),
    ));
    let want2 = desired(&view(
        2,
        std::slice::from_ref(&task2),
        std::slice::from_ref(&task1),
    ));
    assert_eq!(want1.sandboxes.len(), 1);
    converge(&mut k1, &want1);
    converge(&mut k2, &want2);

    // A restarted daemon reads the same state from the kernel alone.
    let fresh = kernel_in(&h1, s.dir("sb1"), resolver(tasks.clone()));
    assert_eq!(fresh.observe().expect("observe"), want1);

    // Re-applying every creation is harmless (all of them tolerate what exists as asked).
    let again = diff(&want1, &NetState::default());
    apply(&mut k1, &again).unwrap_or_else(|e| panic!("re-apply: {e}"));
    assert_eq!(k1.observe().expect("observe"), want1);

    // The task side carries the task's address and MAC.
    let eth0 = run(Some(&t1), &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("10.77.0.2/24"), "{eth0}");
    let link = run(Some(&t1), &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("02:42:0a:4d:00:02"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");

    // Overlay traffic both ways, through VXLAN over the underlay veth.
    udp_round_trip(&t1, &t2, Ipv4Addr::new(10, 77, 0, 3)).expect("t1 -> t2");
    udp_round_trip(&t2, &t1, Ipv4Addr::new(10, 77, 0, 2)).expect("t2 -> t1");

    // The task leaves host 1: its sandbox goes, and the task side with it.
    let empty = desired(&view(1, &[], std::slice::from_ref(&task2)));
    assert!(empty.sandboxes.is_empty());
    converge(&mut k1, &empty);
    let sandbox = s.dir("sb1").join(sandbox_name(&NET.into()));
    assert!(!sandbox.exists(), "{} still there", sandbox.display());
    let left = run(Some(&t1), &["ip", "-o", "link", "show"]);
    assert!(!left.contains("eth0"), "{left}");
    let underlay = run(Some(&h1), &["ip", "-o", "link", "show"]);
    assert!(!underlay.contains("vx-"), "{underlay}");

    // And it can come back.
    converge(&mut k1, &want1);
    udp_round_trip(&t2, &t1, Ipv4Addr::new(10, 77, 0, 2)).expect("t2 -> t1 again");
}

#[test]
fn stale_entries_are_removed_and_changes_replace_links() {
    if !enabled("stale_entries_are_removed_and_changes_replace_links") {
        return;
    }
    let s = Scratch::new("stale");
    let (h1, _h2) = two_hosts(&s);
    let t1 = s.netns("t1");
    let task1 = task("task1aaaaaaaa", "n1", [10, 77, 0, 2]);
    let task2 = task("task2bbbbbbbb", "n2", [10, 77, 0, 3]);
    let task3 = task("task3cccccccc", "n2", [10, 77, 0, 4]);
    let tasks = BTreeMap::from([(task1.id.clone(), t1.clone())]);
    let mut k = kernel_in(&h1, s.dir("sb"), resolver(tasks));

    let both = desired(&view(
        1,
        std::slice::from_ref(&task1),
        &[task2.clone(), task3],
    ));
    converge(&mut k, &both);
    // A remote task goes: its FDB and neighbour entries are deleted.
    let one = desired(&view(
        1,
        std::slice::from_ref(&task1),
        std::slice::from_ref(&task2),
    ));
    converge(&mut k, &one);

    // Entries made behind netd's back are cleared.
    let sb = s.dir("sb").join(sandbox_name(&NET.into()));
    let vx = rswarm_netd::model::vxlan_name(&NET.into());
    run(
        Some(&sb),
        &[
            "ip",
            "neigh",
            "replace",
            "10.77.0.99",
            "lladdr",
            "02:42:0a:4d:00:63",
            "dev",
            &vx,
            "nud",
            "permanent",
        ],
    );
    run(
        Some(&sb),
        &[
            "bridge",
            "fdb",
            "append",
            "02:42:0a:4d:00:63",
            "dev",
            &vx,
            "self",
            "dst",
            "192.168.201.9",
            "permanent",
        ],
    );
    assert_ne!(k.observe().expect("observe"), one);
    converge(&mut k, &one);

    // Links found down (say, a daemon died halfway) are made again.
    run(Some(&t1), &["ip", "link", "set", "eth0", "down"]);
    assert_ne!(k.observe().expect("observe"), one);
    converge(&mut k, &one);
    run(Some(&sb), &["ip", "link", "set", "br0", "down"]);
    assert_ne!(k.observe().expect("observe"), one);
    converge(&mut k, &one);
    let link = run(Some(&t1), &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(",UP"), "{link}");

    // A different MTU replaces every link.
    let mut v = view(1, std::slice::from_ref(&task1), &[task2]);
    v.underlay_mtu = 1400;
    let smaller = desired(&v);
    converge(&mut k, &smaller);
    let link = run(Some(&t1), &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1350"), "{link}");

    // Deleting what is already gone is fine.
    let name = veth_name(&task1.id);
    k.del_link(&sandbox_name(&NET.into()), &name)
        .expect("delete veth");
    k.del_link(&sandbox_name(&NET.into()), &name)
        .expect("delete veth again");
    converge(&mut k, &smaller);
    converge(&mut k, &NetState::default());
}

#[test]
fn host_endpoint_lives_in_the_underlay() {
    if !enabled("host_endpoint_lives_in_the_underlay") {
        return;
    }
    let s = Scratch::new("host");
    let (h1, h2) = two_hosts(&s);
    let t2 = s.netns("t2");
    let endpoint = task(HOST_ENDPOINT, "n1", [10, 77, 0, 10]);
    let task2 = task("task2bbbbbbbb", "n2", [10, 77, 0, 3]);
    let tasks = BTreeMap::from([(task2.id.clone(), t2.clone())]);
    let mut k1 = kernel_in(&h1, s.dir("sb1"), resolver(tasks.clone()));
    let mut k2 = kernel_in(&h2, s.dir("sb2"), resolver(tasks));
    converge(
        &mut k1,
        &desired(&view(
            1,
            std::slice::from_ref(&endpoint),
            std::slice::from_ref(&task2),
        )),
    );
    converge(
        &mut k2,
        &desired(&view(
            2,
            std::slice::from_ref(&task2),
            std::slice::from_ref(&endpoint),
        )),
    );
    let ep = run(
        Some(&h1),
        &["ip", "-o", "addr", "show", "dev", HOST_ENDPOINT_IF],
    );
    assert!(ep.contains("10.77.0.10/24"), "{ep}");
    udp_round_trip(&h1, &t2, Ipv4Addr::new(10, 77, 0, 3)).expect("host 1 -> t2");
    converge(&mut k1, &NetState::default());
    let left = run(Some(&h1), &["ip", "-o", "link", "show"]);
    assert!(!left.contains(HOST_ENDPOINT_IF), "{left}");
}

#[test]
fn underlay_mtu_reads_the_link_holding_the_address() {
    if !enabled("underlay_mtu_reads_the_link_holding_the_address") {
        return;
    }
    let s = Scratch::new("mtu");
    let (h1, _h2) = two_hosts(&s);
    run(Some(&h1), &["ip", "link", "set", "u1", "mtu", "1420"]);
    let mtu = netns::run_in(&h1, || underlay_mtu(underlay_ip(1)))
        .expect("enter h1")
        .expect("underlay_mtu");
    assert_eq!(mtu, 1420);
    let none = netns::run_in(&h1, || underlay_mtu(Ipv4Addr::new(192, 168, 202, 1)))
        .expect("enter h1")
        .expect("underlay_mtu");
    assert_eq!(none, 1500);
    // Callable from inside a tokio runtime: the work happens on threads of its own.
    let inside = netns::run_in(&h1, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async { underlay_mtu(underlay_ip(1)) })
    })
    .expect("enter h1")
    .expect("underlay_mtu");
    assert_eq!(inside, 1420);
}

#[test]
fn netns_create_is_idempotent_and_delete_tolerates_absence() {
    if !enabled("netns_create_is_idempotent_and_delete_tolerates_absence") {
        return;
    }
    let s = Scratch::new("ns");
    let p = s.dir("deep/er/rswnt-x");
    netns::create(&p).expect("create");
    assert!(netns::is_netns(&p));
    netns::create(&p).expect("create again");
    let lo = run(Some(&p), &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    // A thread in it sees a different namespace than the caller's.
    let inner = netns::run_in(&p, || std::fs::read_link(netns::THREAD_NETNS).ok()).expect("run_in");
    let outer = std::fs::read_link(netns::THREAD_NETNS).ok();
    assert!(inner.is_some() && inner != outer);
    netns::delete(&p).expect("delete");
    assert!(!p.exists());
    netns::delete(&p).expect("delete again");
    assert!(netns::run_in(&p, || ()).is_err());
}
