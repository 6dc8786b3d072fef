//! netd's core against the fake: desired states, plans, and convergence.
use proptest::prelude::*;
use rswarm_netd::diff::{diff, NetOp};
use rswarm_netd::fake::{FakeNetlink, Method};
use rswarm_netd::model::{
    desired, overlay_mtu, sandbox_name, veth_name, vxlan_name, Link, Mac, NetState, NodeView,
    RemoteTask, BRIDGE, VXLAN_PORT,
};
use rswarm_netd::netlink::{apply, apply_all, NetdError, Netlink, NetlinkError};
use rswarm_proto::model::{
    Ipv4Cidr, Network, NetworkAllocation, NetworkAttachment, NetworkId, Task, TaskId, TaskState,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const NET_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaa";
const NET_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbb";

fn network(id: &str, third: u8, vni: u32) -> Network {
    Network {
        id: id.into(),
        allocation: NetworkAllocation {
            subnet: Ipv4Cidr::new(Ipv4Addr::new(10, 0, third, 0), 24).expect("a /24"),
            gateway: Ipv4Addr::new(10, 0, third, 1),
            vni,
        },
        ..Network::default()
    }
}

fn nets() -> Vec<Network> {
    vec![network(NET_A, 1, 4096), network(NET_B, 2, 4097)]
}

/// A running task on `node` with `ip` on each of `nets`.
fn task(id: &str, node: &str, attachments: &[(&str, [u8; 4])]) -> Task {
    Task {
        id: id.into(),
        node_id: Some(node.into()),
        desired_state: TaskState::Running,
        status: rswarm_proto::model::TaskStatus {
            state: TaskState::Running,
            ..Default::default()
        },
        networks: attachments
            .iter()
            .map(|(net, ip)| NetworkAttachment {
                network: (*net).into(),
                addresses: vec![Ipv4Cidr::new(Ipv4Addr::from(*ip), 24).expect("a /24")],
            })
            .collect(),
        ..Task::default()
    }
}

fn underlay(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + node)
}

/// The view of node `n<node>` when `tasks` run across the cluster (node names `n1`, `n2`…).
fn view(node: u8, tasks: &[Task]) -> NodeView {
    let me = format!("n{node}");
    NodeView {
        node_id: me.as_str().into(),
        underlay_ip: underlay(node),
        underlay_mtu: 1500,
        networks: nets(),
        local_tasks: tasks
            .iter()
            .filter(|t| t.node_id.as_ref().is_some_and(|n| n.as_str() == me))
            .cloned()
            .collect(),
        remote_tasks: tasks
            .iter()
            .filter(|t| t.node_id.as_ref().is_some_and(|n| n.as_str() != me))
            .map(|t| {
                let n: u8 = t.node_id.as_ref().expect("scheduled").as_str()[1..]
                    .parse()
                    .expect("node names are n<digit>");
                RemoteTask {
                    underlay_ip: underlay(n),
                    task: t.clone(),
                }
            })
            .collect(),
    }
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().expect("a CIDR")
}

fn converge(fake: &mut FakeNetlink, want: &NetState) {
    let ops = diff(want, &fake.observed());
    apply(fake, &ops).unwrap_or_else(|e| panic!("{e}\nops: {ops:#?}"));
    assert_eq!(&fake.observed(), want);
    assert!(diff(want, &fake.observed()).is_empty());
}

#[test]
fn macs_are_docker_style_stable_and_unique() {
    let cases = [
        ([10, 0, 1, 2], "02:42:0a:00:01:02"),
        ([10, 0, 0, 255], "02:42:0a:00:00:ff"),
        ([192, 168, 255, 1], "02:42:c0:a8:ff:01"),
    ];
    for (ip, text) in cases {
        let ip = Ipv4Addr::from(ip);
        assert_eq!(Mac::from_ip(ip).to_string(), text);
        assert_eq!(Mac::from_ip(ip), Mac::from_ip(ip));
        // Locally administered, unicast.
        assert_eq!(Mac::from_ip(ip).0[0] & 0b11, 0b10);
    }
}

proptest! {
    #[test]
    fn macs_differ_when_ips_do(a: u32, b: u32) {
        prop_assume!(a != b);
        prop_assert_ne!(Mac::from_ip(Ipv4Addr::from(a)), Mac::from_ip(Ipv4Addr::from(b)));
    }
}

#[test]
fn overlay_mtu_leaves_room_for_vxlan() {
    for (underlay, overlay) in [(1500, 1450), (9000, 8950), (1450, 1400), (50, 0), (10, 0)] {
        assert_eq!(overlay_mtu(underlay), overlay, "underlay {underlay}");
    }
    let mut v = view(1, &[task("t1", "n1", &[(NET_A, [10, 0, 1, 2])])]);
    v.underlay_mtu = 9000;
    let state = desired(&v);
    let sb = &state.sandboxes[&sandbox_name(&NET_A.into())];
    for link in sb.links.values() {
        let mtu = match link {
            Link::Bridge(b) => b.mtu,
            Link::Vxlan(x) => x.mtu,
            Link::Veth(x) => x.mtu,
        };
        assert_eq!(mtu, 8950, "{}", link.name());
    }
}

#[test]
fn one_node_one_network() {
    let tasks = [
        task("t1aaaaaaaaaaaaaaaaaaaaaaa", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2aaaaaaaaaaaaaaaaaaaaaaa", "n1", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let state = desired(&view(1, &tasks));
    assert_eq!(
        state.sandboxes.keys().cloned().collect::<Vec<_>>(),
        ["rsw-aaaaaaaaaa"]
    );
    let sb = &state.sandboxes["rsw-aaaaaaaaaa"];
    assert_eq!(sb.links.len(), 4);
    assert_eq!(sb.addrs[BRIDGE], BTreeSet::from([cidr("10.0.1.1/24")]));
    let Link::Vxlan(vx) = &sb.links["vx-aaaaaaaaaa"] else {
        panic!("no vxlan");
    };
    assert_eq!(
        (
            vx.vni,
            vx.port,
            vx.learning,
            vx.proxy,
            vx.local,
            vx.master.as_str(),
            vx.mtu
        ),
        (4096, VXLAN_PORT, false, true, underlay(1), BRIDGE, 1450)
    );
    for (t, ip) in [
        ("t1aaaaaaaaaaaaaaaaaaaaaaa", "10.0.1.2/24"),
        ("t2aaaaaaaaaaaaaaaaaaaaaaa", "10.0.1.3/24"),
    ] {
        let name = veth_name(&t.into());
        assert!(name.len() <= 15);
        let Link::Veth(v) = &sb.links[&name] else {
            panic!("no veth for {t}");
        };
        assert_eq!(v.peer, "eth0");
        assert_eq!(v.master, BRIDGE);
        assert_eq!(v.mac, Mac::from_ip(cidr(ip).addr()));
        assert_eq!(sb.addrs[&name], BTreeSet::from([cidr(ip)]));
    }
    assert!(sb.fdb.is_empty() && sb.neigh.is_empty());
}

#[test]
fn three_nodes_program_each_other() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task(
            "t2",
            "n2",
            &[(NET_A, [10, 0, 1, 3]), (NET_B, [10, 0, 2, 3])],
        ),
        task("t3", "n3", &[(NET_A, [10, 0, 1, 4])]),
        task("t4", "n3", &[(NET_B, [10, 0, 2, 4])]),
    ];
    let vx_a = vxlan_name(&NET_A.into());
    let vx_b = vxlan_name(&NET_B.into());
    // (node, network, remote IPs and their nodes)
    type Case<'a> = (u8, &'a str, &'a str, &'a [([u8; 4], u8)]);
    let cases: &[Case] = &[
        (1, NET_A, &vx_a, &[([10, 0, 1, 3], 2), ([10, 0, 1, 4], 3)]),
        (2, NET_A, &vx_a, &[([10, 0, 1, 2], 1), ([10, 0, 1, 4], 3)]),
        (2, NET_B, &vx_b, &[([10, 0, 2, 4], 3)]),
        (3, NET_A, &vx_a, &[([10, 0, 1, 2], 1), ([10, 0, 1, 3], 2)]),
        (3, NET_B, &vx_b, &[([10, 0, 2, 3], 2)]),
    ];
    for (node, net, vx, remotes) in cases {
        let state = desired(&view(*node, &tasks));
        let sb = &state.sandboxes[&sandbox_name(&NetworkId::from(*net))];
        let fdb: Vec<_> = remotes
            .iter()
            .map(|(ip, n)| {
                (
                    (vx.to_string(), Mac::from_ip(Ipv4Addr::from(*ip))),
                    underlay(*n),
                )
            })
            .collect();
        let neigh: Vec<_> = remotes
            .iter()
            .map(|(ip, _)| {
                (
                    (vx.to_string(), Ipv4Addr::from(*ip)),
                    Mac::from_ip(Ipv4Addr::from(*ip)),
                )
            })
            .collect();
        assert_eq!(
            sb.fdb.clone().into_iter().collect::<Vec<_>>(),
            fdb,
            "n{node} {net}"
        );
        assert_eq!(
            sb.neigh.clone().into_iter().collect::<Vec<_>>(),
            neigh,
            "n{node} {net}"
        );
    }
    // n1 has no task on B: no sandbox for it, though remote tasks are there.
    assert_eq!(desired(&view(1, &tasks)).sandboxes.len(), 1);
    // t2 is on two networks: eth0 and eth1.
    let n2 = desired(&view(2, &tasks));
    let peer = |net: &str| match &n2.sandboxes[&sandbox_name(&net.into())].links
        [&veth_name(&"t2".into())]
    {
        Link::Veth(v) => v.peer.clone(),
        _ => unreachable!(),
    };
    assert_eq!((peer(NET_A), peer(NET_B)), ("eth0".into(), "eth1".into()));
}

#[test]
fn tasks_without_addresses_or_stopped_make_nothing() {
    let mut waiting = task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]);
    waiting.networks[0].addresses.clear();
    let mut stopped = task("t2", "n1", &[(NET_A, [10, 0, 1, 3])]);
    stopped.status.state = TaskState::Complete;
    let mut remote_stopped = task("t3", "n2", &[(NET_A, [10, 0, 1, 4])]);
    remote_stopped.status.state = TaskState::Failed;
    let unknown_net = task("t4", "n1", &[("nosuchnetwork", [10, 9, 9, 9])]);
    assert_eq!(
        desired(&view(1, &[waiting, stopped, unknown_net.clone()])),
        NetState::default()
    );
    let live = task("t5", "n1", &[(NET_A, [10, 0, 1, 5])]);
    let state = desired(&view(1, &[live, remote_stopped, unknown_net]));
    assert!(state.sandboxes["rsw-aaaaaaaaaa"].fdb.is_empty());
}

#[test]
fn remote_join_and_leave_touch_only_entries() {
    let base = vec![
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let mut joined = base.clone();
    joined.push(task("t3", "n3", &[(NET_A, [10, 0, 1, 4])]));
    let sb = sandbox_name(&NET_A.into());
    let vx = vxlan_name(&NET_A.into());
    let ip = Ipv4Addr::new(10, 0, 1, 4);
    for node in [1, 2] {
        let before = desired(&view(node, &base));
        let after = desired(&view(node, &joined));
        assert_eq!(
            diff(&after, &before),
            vec![
                NetOp::SetFdb {
                    sandbox: sb.clone(),
                    dev: vx.clone(),
                    mac: Mac::from_ip(ip),
                    dst: underlay(3)
                },
                NetOp::SetNeigh {
                    sandbox: sb.clone(),
                    dev: vx.clone(),
                    ip,
                    mac: Mac::from_ip(ip)
                },
            ],
            "join seen from n{node}"
        );
        assert_eq!(
            diff(&before, &after),
            vec![
                NetOp::DelNeigh {
                    sandbox: sb.clone(),
                    dev: vx.clone(),
                    ip
                },
                NetOp::DelFdb {
                    sandbox: sb.clone(),
                    dev: vx.clone(),
                    mac: Mac::from_ip(ip)
                },
            ],
            "leave seen from n{node}"
        );
    }
    // A task moving to another node repoints its FDB entry in place.
    let mut moved = joined.clone();
    moved[2].node_id = Some("n2".into());
    assert_eq!(
        diff(&desired(&view(1, &moved)), &desired(&view(1, &joined))),
        vec![NetOp::SetFdb {
            sandbox: sb,
            dev: vx,
            mac: Mac::from_ip(ip),
            dst: underlay(2)
        }]
    );
}

#[test]
fn diff_of_a_state_with_itself_is_empty() {
    let all = [
        task(
            "t1",
            "n1",
            &[(NET_A, [10, 0, 1, 2]), (NET_B, [10, 0, 2, 2])],
        ),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
        task("t3", "n3", &[(NET_B, [10, 0, 2, 4])]),
    ];
    for tasks in [&all[..0], &all[..1], &all[..]] {
        for node in 1..=3 {
            let s = desired(&view(node, tasks));
            assert!(diff(&s, &s).is_empty());
        }
    }
}

#[test]
fn creation_is_parent_first_and_removal_child_first() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let want = desired(&view(1, &tasks));
    let ops = diff(&want, &NetState::default());
    let pos = |pred: &dyn Fn(&NetOp) -> bool| ops.iter().position(pred).unwrap();
    let sandbox = pos(&|o| matches!(o, NetOp::CreateSandbox { .. }));
    let bridge = pos(&|o| matches!(o, NetOp::CreateBridge { .. }));
    let vxlan = pos(&|o| matches!(o, NetOp::CreateVxlan { .. }));
    let veth = pos(&|o| matches!(o, NetOp::CreateVeth { .. }));
    let addr = pos(&|o| matches!(o, NetOp::AddAddr { .. }));
    let fdb = pos(&|o| matches!(o, NetOp::SetFdb { .. }));
    let neigh = pos(&|o| matches!(o, NetOp::SetNeigh { .. }));
    assert_eq!(sandbox, 0);
    assert!(bridge < vxlan && bridge < veth && bridge < addr);
    assert!(vxlan < fdb && vxlan < neigh && veth < addr);
    assert_eq!(ops.len(), 8, "{ops:#?}");

    // The node's last task on the network goes: the sandbox goes, children first.
    let mut fake = FakeNetlink::new();
    converge(&mut fake, &want);
    let ops = diff(&desired(&view(1, &tasks[1..])), &fake.observed());
    let sb = sandbox_name(&NET_A.into());
    let del = |name: String| NetOp::DelLink {
        sandbox: sb.clone(),
        name,
    };
    assert_eq!(
        ops,
        vec![
            del(veth_name(&"t1".into())),
            del(vxlan_name(&NET_A.into())),
            del(BRIDGE.into()),
            NetOp::DeleteSandbox {
                sandbox: sb.clone()
            },
        ]
    );
    apply(&mut fake, &ops).unwrap();
    assert_eq!(fake.observed(), NetState::default());
    assert!(fake.task_interfaces(&"t1".into()).is_empty());
}

#[test]
fn a_changed_underlay_remakes_the_vxlan_and_its_entries_only() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let mut fake = FakeNetlink::new();
    converge(&mut fake, &desired(&view(1, &tasks)));
    let mut v = view(1, &tasks);
    v.underlay_ip = Ipv4Addr::new(198, 18, 0, 99);
    let want = desired(&v);
    let ops = diff(&want, &fake.observed());
    let kinds: Vec<&str> = ops
        .iter()
        .map(|o| match o {
            NetOp::DelLink { .. } => "del",
            NetOp::CreateVxlan { .. } => "vxlan",
            NetOp::SetFdb { .. } => "fdb",
            NetOp::SetNeigh { .. } => "neigh",
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(kinds, ["del", "vxlan", "fdb", "neigh"]);
    converge(&mut fake, &want);
}

#[test]
fn a_remade_bridge_takes_its_ports_along() {
    let tasks = [task("t1", "n1", &[(NET_A, [10, 0, 1, 2])])];
    let mut fake = FakeNetlink::new();
    converge(&mut fake, &desired(&view(1, &tasks)));
    let mut v = view(1, &tasks);
    v.underlay_mtu = 9000;
    let want = desired(&v);
    let ops = diff(&want, &fake.observed());
    assert!(matches!(ops.last(), Some(NetOp::AddAddr { .. })));
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, NetOp::DelLink { .. }))
            .count(),
        3
    );
    converge(&mut fake, &want);
}

#[test]
fn restart_reconciliation_removes_exactly_the_stale() {
    let tasks = vec![
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
        task("t3", "n3", &[(NET_A, [10, 0, 1, 4])]),
    ];
    let mut fake = FakeNetlink::new();
    converge(&mut fake, &desired(&view(1, &tasks)));
    // While the daemon was down: t3 went, a stray entry and address appeared, and a sandbox
    // of a network this node no longer has a task on was left behind.
    let sb = sandbox_name(&NET_A.into());
    let vx = vxlan_name(&NET_A.into());
    let stray_ip = Ipv4Addr::new(10, 0, 1, 77);
    fake.set_fdb(&sb, &vx, Mac::from_ip(stray_ip), underlay(7))
        .unwrap();
    fake.set_neigh(&sb, &vx, stray_ip, Mac::from_ip(stray_ip))
        .unwrap();
    fake.add_addr(&sb, BRIDGE, cidr("10.0.1.200/24")).unwrap();
    let old = sandbox_name(&NET_B.into());
    fake.create_sandbox(&old).unwrap();
    let after: Vec<Task> = tasks[..2].to_vec();
    let want = desired(&view(1, &after));
    let ops: BTreeSet<String> = diff(&want, &fake.observed())
        .iter()
        .map(ToString::to_string)
        .collect();
    let t3 = Ipv4Addr::new(10, 0, 1, 4);
    let expected: BTreeSet<String> = [
        NetOp::DelFdb {
            sandbox: sb.clone(),
            dev: vx.clone(),
            mac: Mac::from_ip(stray_ip),
        },
        NetOp::DelNeigh {
            sandbox: sb.clone(),
            dev: vx.clone(),
            ip: stray_ip,
        },
        NetOp::DelFdb {
            sandbox: sb.clone(),
            dev: vx.clone(),
            mac: Mac::from_ip(t3),
        },
        NetOp::DelNeigh {
            sandbox: sb.clone(),
            dev: vx.clone(),
            ip: t3,
        },
        NetOp::DelAddr {
            sandbox: sb.clone(),
            link: BRIDGE.into(),
            addr: cidr("10.0.1.200/24"),
        },
        NetOp::DeleteSandbox { sandbox: old },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(ops, expected);
    converge(&mut fake, &want);
}

#[test]
fn a_failed_call_names_the_op_and_the_next_pass_finishes() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let want = desired(&view(1, &tasks));
    let mut fake = FakeNetlink::new();
    fake.fail_on(
        Method::SetFdb,
        NetlinkError::Os("Operation not permitted".into()),
    );
    let ops = diff(&want, &fake.observed());
    let err = apply(&mut fake, &ops).unwrap_err();
    let NetdError::Apply { op, source } = &err;
    assert!(matches!(**op, NetOp::SetFdb { .. }));
    assert_eq!(source, &NetlinkError::Os("Operation not permitted".into()));
    assert!(
        err.to_string()
            .starts_with("set fdb 02:42:0a:00:01:03 -> 198.18.0.12"),
        "{err}"
    );
    assert_ne!(fake.observed(), want);
    converge(&mut fake, &want);
}

#[test]
fn a_failure_for_one_task_does_not_hold_up_the_others() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n1", &[(NET_A, [10, 0, 1, 3])]),
        task("t3", "n2", &[(NET_A, [10, 0, 1, 4])]),
    ];
    let want = desired(&view(1, &tasks));
    let mut fake = FakeNetlink::new();
    fake.fail_on(
        Method::EnsureVeth,
        NetlinkError::Os("No space left on device".into()),
    );
    let ops = diff(&want, &fake.observed());
    let failed = apply_all(&mut fake, &ops);
    // The first veth and its address fail; the other task's veth and the peers are made.
    assert_eq!(failed.len(), 2, "{failed:?}");
    let NetdError::Apply { op, .. } = &failed[0];
    assert!(matches!(**op, NetOp::CreateVeth { .. }), "{op}");
    let observed = fake.observed();
    let sb = observed.sandboxes.values().next().expect("the sandbox");
    let veths = sb.links.keys().filter(|n| n.starts_with("ve-")).count();
    assert_eq!(veths, 1, "the other task's veth: {:?}", sb.links.keys());
    assert_eq!(sb.fdb.len(), 1, "the remote task's entry");
    converge(&mut fake, &want);
}

#[test]
fn the_fake_refuses_what_the_kernel_would() {
    let tasks = [task("t1", "n1", &[(NET_A, [10, 0, 1, 2])])];
    let want = desired(&view(1, &tasks));
    let mut fake = FakeNetlink::new();
    // Links before their sandbox, ports before their bridge.
    let ops = diff(&want, &NetState::default());
    let mut reversed = ops[1..].to_vec();
    reversed.reverse();
    assert!(matches!(
        apply(&mut fake, &reversed),
        Err(NetdError::Apply {
            source: NetlinkError::NotFound(_),
            ..
        })
    ));
    converge(&mut fake, &want);
    // Creating the same again is fine (ensure), the same VNI elsewhere is not.
    apply(&mut fake, &ops[1..4]).unwrap();
    let Some(NetOp::CreateVxlan { spec, .. }) =
        ops.iter().find(|o| matches!(o, NetOp::CreateVxlan { .. }))
    else {
        panic!("no vxlan op");
    };
    fake.create_sandbox("other").unwrap();
    fake.ensure_bridge(
        "other",
        &rswarm_netd::model::BridgeSpec {
            name: BRIDGE.into(),
            mtu: 1450,
        },
    )
    .unwrap();
    let mut dup = spec.clone();
    dup.name = "vx-dup".into();
    assert!(matches!(
        fake.ensure_vxlan("other", &dup),
        Err(NetlinkError::Exists(_))
    ));
    assert!(matches!(
        fake.del_link("other", "nope"),
        Err(NetlinkError::NotFound(_))
    ));
    assert!(matches!(
        fake.delete_sandbox("nope"),
        Err(NetlinkError::NotFound(_))
    ));
}

/// One step of the cluster's life.
#[derive(Debug, Clone)]
enum Event {
    /// A task on node (1..=3) on networks (bit 0: A, bit 1: B).
    Start { node: u8, nets: u8 },
    /// The i-th running task (mod count) stops.
    Stop(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (1u8..=3, 1u8..=3).prop_map(|(node, nets)| Event::Start { node, nets }),
        2 => any::<usize>().prop_map(Event::Stop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every node's fake converges to its desired state after each arrival or departure, and
    /// a second diff is empty.
    #[test]
    fn every_node_converges(events in prop::collection::vec(event(), 1..30)) {
        let mut fakes = [FakeNetlink::new(), FakeNetlink::new(), FakeNetlink::new()];
        let mut tasks: Vec<Task> = Vec::new();
        let mut next = 0u32;
        for ev in events {
            match ev {
                Event::Start { node, nets } => {
                    next += 1;
                    let host = [0, 0, (next >> 8) as u8, next as u8];
                    let mut atts = Vec::new();
                    if nets & 1 != 0 {
                        atts.push((NET_A, [10, 0, 1, host[3]]));
                    }
                    if nets & 2 != 0 {
                        atts.push((NET_B, [10, 0, 2, host[3]]));
                    }
                    tasks.push(task(&format!("task{next:05}"), &format!("n{node}"), &atts));
                }
                Event::Stop(i) => {
                    if !tasks.is_empty() {
                        let i = i % tasks.len();
                        tasks.remove(i);
                    }
                }
            }
            for (i, fake) in fakes.iter_mut().enumerate() {
                let want = desired(&view(i as u8 + 1, &tasks));
                let ops = diff(&want, &fake.observed());
                let before = fake.changes();
                apply(fake, &ops).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(fake.changes() - before, ops.len());
                prop_assert_eq!(&fake.observed(), &want);
                prop_assert!(diff(&want, &fake.observed()).is_empty());
                // Nothing is left of tasks that are gone.
                for t in 0..=next {
                    let id = TaskId::from(format!("task{t:05}").as_str());
                    if !tasks.iter().any(|x| x.id == id) {
                        prop_assert!(fake.task_interfaces(&id).is_empty());
                    }
                }
            }
        }
    }
}

/// Tasks from (node, networks) pairs, addresses by position.
fn tasks_from(spec: &[(u8, u8)]) -> Vec<Task> {
    spec.iter()
        .enumerate()
        .map(|(i, (node, nets))| {
            let host = i as u8 + 2;
            let mut atts = Vec::new();
            if nets & 1 != 0 {
                atts.push((NET_A, [10, 0, 1, host]));
            }
            if nets & 2 != 0 {
                atts.push((NET_B, [10, 0, 2, host]));
            }
            task(&format!("task{i:05}"), &format!("n{node}"), &atts)
        })
        .collect()
}

fn cluster() -> impl Strategy<Value = Vec<(u8, u8)>> {
    prop::collection::vec((1u8..=3, 0u8..=3), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn diff_is_idempotent(spec in cluster(), node in 1u8..=3) {
        let s = desired(&view(node, &tasks_from(&spec)));
        prop_assert!(diff(&s, &s).is_empty());
    }

    /// A daemon restarting into any other cluster state: one pass from what the kernel still
    /// has reaches the new desired state.
    #[test]
    fn one_pass_reconciles_any_change(old in cluster(), new in cluster(), node in 1u8..=3) {
        let mut fake = FakeNetlink::new();
        let was = desired(&view(node, &tasks_from(&old)));
        let first = diff(&was, &fake.observed());
        apply(&mut fake, &first).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = desired(&view(node, &tasks_from(&new)));
        let ops = diff(&want, &fake.observed());
        apply(&mut fake, &ops).map_err(|e| TestCaseError::fail(format!("{e}\n{ops:#?}")))?;
        prop_assert_eq!(fake.observed(), want);
        if old == new {
            prop_assert!(ops.is_empty());
        }
    }
}

#[test]
fn remote_entries_skip_this_node_and_local_addresses() {
    let local = task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]);
    let mut v = view(1, std::slice::from_ref(&local));
    // The same task reported as remote, and another node claiming a local address.
    v.remote_tasks.push(RemoteTask {
        underlay_ip: underlay(2),
        task: local.clone(),
    });
    v.remote_tasks.push(RemoteTask {
        underlay_ip: underlay(3),
        task: task("t9", "n3", &[(NET_A, [10, 0, 1, 2])]),
    });
    let sb = &desired(&v).sandboxes["rsw-aaaaaaaaaa"];
    assert!(sb.fdb.is_empty() && sb.neigh.is_empty());
}

#[test]
fn a_bridge_that_differs_is_remade_with_its_ports() {
    let tasks = [
        task("t1", "n1", &[(NET_A, [10, 0, 1, 2])]),
        task("t2", "n2", &[(NET_A, [10, 0, 1, 3])]),
    ];
    let want = desired(&view(1, &tasks));
    let sb = sandbox_name(&NET_A.into());
    // Only the bridge's MTU was changed behind netd's back.
    let mut observed = want.clone();
    let Some(Link::Bridge(br)) = observed
        .sandboxes
        .get_mut(&sb)
        .and_then(|s| s.links.get_mut(BRIDGE))
    else {
        panic!("no bridge");
    };
    br.mtu = 1400;
    let ops = diff(&want, &observed);
    let del = |name: String| NetOp::DelLink {
        sandbox: sb.clone(),
        name,
    };
    assert_eq!(
        ops[..3],
        [
            del(veth_name(&"t1".into())),
            del(vxlan_name(&NET_A.into())),
            del(BRIDGE.into()),
        ]
    );
    // Everything in the sandbox is made again, addresses and entries included.
    let again = diff(&want, &NetState::default());
    assert_eq!(ops[3..], again[1..]);
}
