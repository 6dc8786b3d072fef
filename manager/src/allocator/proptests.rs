//! Properties of the allocator over random histories of networks, services and tasks
//! coming and going, each decision applied through the store: no two networks overlap or
//! share a VNI, no address is held twice, every address is a host of its network, released
//! addresses are not shown any more and are handed out again (lowest free first).

use super::tests::{apply, cidr, create_network, create_service, create_task};
use super::*;
use crate::store::State;
use proptest::prelude::*;
use rswarm_proto::model::{Command, ServiceId, TaskId, TaskState, TaskStatus};

#[derive(Debug, Clone)]
enum Op {
    /// A network, with a requested subnet `10.0.X.0/P` (host bits cleared) or a default one.
    CreateNetwork(Option<(u8, u8)>),
    RemoveNetwork(usize),
    /// A service on the networks picked by the bits of the mask, under vip or dnsrr.
    CreateService(u8, bool),
    RemoveService(usize),
    CreateTask(usize),
    /// The task stops for good (failed).
    StopTask(usize),
    RemoveTask(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop::option::of((0u8..8, 22u8..=29)).prop_map(Op::CreateNetwork),
        1 => any::<usize>().prop_map(Op::RemoveNetwork),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(m, d)| Op::CreateService(m, d)),
        1 => any::<usize>().prop_map(Op::RemoveService),
        5 => any::<usize>().prop_map(Op::CreateTask),
        2 => any::<usize>().prop_map(Op::StopTask),
        1 => any::<usize>().prop_map(Op::RemoveTask),
    ]
}

fn pick<T: Clone>(items: impl Iterator<Item = T>, i: usize) -> Option<T> {
    let v: Vec<T> = items.collect();
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

/// Every invariant of the store's networks and addresses.
fn check(s: &State) -> Result<(), String> {
    let nets: Vec<_> = s.networks.values().collect();
    for (i, a) in nets.iter().enumerate() {
        let al = &a.allocation;
        if !al.subnet.is_host(al.gateway) {
            return Err(format!(
                "{}: gateway {} outside {}",
                a.id, al.gateway, al.subnet
            ));
        }
        for b in &nets[i + 1..] {
            if al.subnet.overlaps(&b.allocation.subnet) {
                return Err(format!("{} and {} overlap", a.id, b.id));
            }
            if al.vni == b.allocation.vni {
                return Err(format!("{} and {} share VNI {}", a.id, b.id, al.vni));
            }
        }
    }
    // Every held address, per network: gateway, VIPs, tasks' addresses.
    let mut held: BTreeMap<NetworkId, Vec<(Ipv4Cidr, String)>> = BTreeMap::new();
    for svc in s.services.values() {
        for v in &svc.endpoint.virtual_ips {
            held.entry(v.network.clone())
                .or_default()
                .push((v.addr, format!("vip of {}", svc.id)));
        }
    }
    for t in s.tasks.values() {
        for a in &t.networks {
            if !t.holds_addresses() && !a.addresses.is_empty() {
                return Err(format!(
                    "{} stopped but still shows {:?}",
                    t.id, a.addresses
                ));
            }
            for x in &a.addresses {
                held.entry(a.network.clone())
                    .or_default()
                    .push((*x, format!("task {}", t.id)));
            }
        }
    }
    for (net, addrs) in held {
        let Some(n) = s.networks.get(&net) else {
            // Tasks of removed services may outlive their network; they hold nothing then
            // that the allocator could hand out again.
            continue;
        };
        let mut seen = BTreeSet::new();
        for (x, who) in addrs {
            if x.prefix() != n.allocation.subnet.prefix() || !n.allocation.subnet.is_host(x.addr())
            {
                return Err(format!(
                    "{who}: {x} is not a host of {}",
                    n.allocation.subnet
                ));
            }
            if x.addr() == n.allocation.gateway {
                return Err(format!("{who}: {x} is the gateway"));
            }
            if !seen.insert(x.addr()) {
                return Err(format!("{who}: {x} is held twice on {net}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn histories_keep_every_allocation_unique(ops in prop::collection::vec(op(), 1..80)) {
        let mut s = State::default();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::CreateNetwork(req) => {
                    let subnet = req.and_then(|(x, p)| {
                        Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 0, x, 0), p).ok()
                    })
                    .map(|c| c.subnet().to_string());
                    let before = s.clone();
                    match create_network(&mut s, &format!("n{i}"), subnet.as_deref()) {
                        Ok(_) => {}
                        // Refused requests are overlaps, and change nothing.
                        Err(AllocError::Overlap { .. }) => prop_assert_eq!(&s, &before),
                        Err(e) => prop_assert!(false, "network: {e}"),
                    }
                }
                Op::RemoveNetwork(k) => {
                    if let Some(id) = pick(s.networks.keys().cloned(), k) {
                        let used = s.services.values().any(|svc| {
                            service_networks(&s, svc).contains(&id)
                        });
                        let r = apply(&mut s, Command::RemoveNetwork { id });
                        prop_assert_eq!(r.is_ok(), !used, "{:?}", r);
                    }
                }
                Op::CreateService(mask, dnsrr) => {
                    let ids: Vec<String> = s
                        .networks
                        .keys()
                        .enumerate()
                        .filter(|(j, _)| mask & (1 << (j % 8)) != 0)
                        .map(|(_, id)| id.to_string())
                        .collect();
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let mode = if dnsrr { EndpointMode::Dnsrr } else { EndpointMode::Vip };
                    match create_service(&mut s, &format!("s{i}"), &ids, mode) {
                        Ok(_) | Err(AllocError::NetworkFull { .. }) => {}
                        Err(e) => prop_assert!(false, "service: {e}"),
                    }
                }
                Op::RemoveService(k) => {
                    if let Some(id) = pick(s.services.keys().cloned(), k) {
                        apply(&mut s, Command::RemoveService { id }).map_err(|e| {
                            TestCaseError::fail(e.to_string())
                        })?;
                    }
                }
                Op::CreateTask(k) => {
                    if let Some(id) = pick(s.services.keys().cloned(), k) {
                        let svc = s.services[&id].clone();
                        // The lowest free address of each network is what the task gets.
                        let lowest: Vec<Option<std::net::Ipv4Addr>> = service_networks(&s, &svc)
                            .iter()
                            .map(|n| {
                                let used: BTreeSet<_> =
                                    s.addresses_in_use(n, None).into_keys().collect();
                                next_host(s.networks[n].allocation.subnet, &used)
                            })
                            .collect();
                        match create_task(&mut s, id.as_str(), &format!("t{i}")) {
                            Ok(t) => {
                                let got: Vec<Option<std::net::Ipv4Addr>> = t
                                    .networks
                                    .iter()
                                    .map(|a| a.addresses.first().map(|x| x.addr()))
                                    .collect();
                                prop_assert_eq!(got, lowest);
                            }
                            Err(AllocError::NetworkFull { .. }) => {
                                prop_assert!(lowest.contains(&None));
                            }
                            Err(e) => prop_assert!(false, "task: {e}"),
                        }
                    }
                }
                Op::StopTask(k) => {
                    if let Some(id) = pick(s.tasks.keys().cloned(), k) {
                        apply(&mut s, Command::UpdateTaskStatus {
                            id,
                            status: TaskStatus { state: TaskState::Failed, ..Default::default() },
                        }).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
                Op::RemoveTask(k) => {
                    if let Some(id) = pick(s.tasks.keys().cloned(), k) {
                        apply(&mut s, Command::RemoveTask { id })
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
            }
            check(&s).map_err(TestCaseError::fail)?;
        }
    }

    /// `next_subnet` gives the lowest aligned subnet of the pool that overlaps nothing
    /// taken, by brute force over a small pool.
    #[test]
    fn next_subnet_is_the_lowest_free(
        taken in prop::collection::vec((0u8..16, 0u8..=255, 20u8..=28), 0..8)
    ) {
        let pool = cidr("10.0.0.0/20");
        let taken: Vec<Ipv4Cidr> = taken
            .into_iter()
            .filter_map(|(x, y, p)| Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 0, x, y), p).ok())
            .map(|c| c.subnet())
            .collect();
        let brute = (0u8..16)
            .map(|x| cidr(&format!("10.0.{x}.0/24")))
            .find(|c| !taken.iter().any(|t| t.overlaps(c)));
        prop_assert_eq!(next_subnet(pool, 24, &taken), brute);
    }
}

#[test]
fn released_addresses_come_back_lowest_first() {
    let mut s = State::default();
    create_network(&mut s, "a", Some("10.5.0.0/24")).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Dnsrr).unwrap();
    for i in 0..5 {
        create_task(&mut s, "web", &format!("t{i}")).unwrap();
    }
    for gone in ["t3", "t1"] {
        apply(
            &mut s,
            Command::RemoveTask {
                id: TaskId::from(gone),
            },
        )
        .unwrap();
    }
    let a = create_task(&mut s, "web", "t5").unwrap();
    let b = create_task(&mut s, "web", "t6").unwrap();
    let c = create_task(&mut s, "web", "t7").unwrap();
    let first = |t: &rswarm_proto::model::Task| t.networks[0].addresses[0].to_string();
    // t1 had .3, t3 had .5; then the next never used.
    assert_eq!(
        [first(&a), first(&b), first(&c)],
        ["10.5.0.3/24", "10.5.0.5/24", "10.5.0.7/24"]
    );
    assert!(s.services.contains_key(&ServiceId::from("web")));
}
