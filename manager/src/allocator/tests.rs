//! The allocator's decisions, checked through the store: what it hands out, `apply`
//! accepts; what two allocators hand out from the same view, `apply` accepts only once.

use super::*;
use crate::store::State;
use rswarm_proto::model::{
    Command, CommandError, IpamConfig, Meta, Network, NetworkAttachmentConfig, ServiceId, Task,
    TaskId, TaskState, TaskStatus,
};

pub(crate) fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().expect("a CIDR")
}

/// Applies `cmd` at the next index; the store's answer.
pub(crate) fn apply(s: &mut State, cmd: Command) -> Result<(), CommandError> {
    let index = s
        .networks
        .values()
        .map(|n| n.meta.version)
        .chain(s.services.values().map(|x| x.meta.version))
        .chain(s.tasks.values().map(|x| x.meta.version))
        .max()
        .unwrap_or(0)
        + 1;
    s.apply(index, &cmd).map(|_| ())
}

pub(crate) fn spec(name: &str, subnet: Option<&str>, gateway: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipam: IpamConfig {
            subnet: subnet.map(cidr),
            gateway: gateway.map(|g| g.parse().expect("an address")),
        },
        ..Default::default()
    }
}

/// Creates network `name` (id `name` too) as the control API does.
pub(crate) fn create_network(
    s: &mut State,
    name: &str,
    subnet: Option<&str>,
) -> Result<Network, AllocError> {
    let allocation = Allocator::new(s).allocate_network(&spec(name, subnet, None))?;
    let n = Network {
        id: NetworkId(name.into()),
        meta: Meta::default(),
        spec: spec(name, subnet, None),
        allocation,
        node_endpoints: Default::default(),
    };
    apply(s, Command::CreateNetwork(Box::new(n.clone()))).expect("apply takes a fresh allocation");
    Ok(n)
}

pub(crate) fn service_spec(name: &str, networks: &[&str], mode: EndpointMode) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        networks: networks
            .iter()
            .map(|n| NetworkAttachmentConfig {
                target: (*n).into(),
                aliases: Vec::new(),
            })
            .collect(),
        endpoint_mode: mode,
        ..Default::default()
    }
}

/// Creates service `name` (id `name`) with its VIPs.
pub(crate) fn create_service(
    s: &mut State,
    name: &str,
    networks: &[&str],
    mode: EndpointMode,
) -> Result<Service, AllocError> {
    let spec = service_spec(name, networks, mode);
    let endpoint = Allocator::new(s).allocate_endpoint(&spec, &Endpoint::default())?;
    let svc = Service {
        id: ServiceId(name.into()),
        spec,
        spec_version: 1,
        endpoint,
        ..Default::default()
    };
    apply(s, Command::CreateService(Box::new(svc.clone()))).expect("apply takes fresh VIPs");
    Ok(svc)
}

pub(crate) fn task_of(svc: &str, id: &str, networks: Vec<NetworkAttachment>) -> Task {
    Task {
        id: TaskId(id.into()),
        service_id: ServiceId(svc.into()),
        service_name: svc.into(),
        slot: 1,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Pending,
            ..Default::default()
        },
        networks,
        ..Default::default()
    }
}

/// Creates task `id` of service `svc` with addresses on the service's networks.
pub(crate) fn create_task(s: &mut State, svc: &str, id: &str) -> Result<Task, AllocError> {
    let nets = service_networks(s, &s.services[&ServiceId(svc.into())]);
    let attachments = Allocator::new(s).allocate_task(&nets)?;
    let t = task_of(svc, id, attachments);
    apply(s, Command::CreateTask(Box::new(t.clone()))).expect("apply takes fresh addresses");
    Ok(t)
}

fn addr(t: &Task, net: &str) -> Ipv4Cidr {
    t.networks
        .iter()
        .find(|a| a.network.as_str() == net)
        .and_then(|a| a.addresses.first().copied())
        .expect("an address on the network")
}

#[test]
fn default_subnets_are_consecutive_24s_with_their_own_vni() {
    let mut s = State::default();
    let a = create_network(&mut s, "a", None).unwrap();
    let b = create_network(&mut s, "b", None).unwrap();
    assert_eq!(a.allocation.subnet, cidr("10.0.0.0/24"));
    assert_eq!(a.allocation.gateway.to_string(), "10.0.0.1");
    assert_eq!(b.allocation.subnet, cidr("10.0.1.0/24"));
    assert_eq!((a.allocation.vni, b.allocation.vni), (4096, 4097));
    // A requested subnet in the pool is skipped by later default ones.
    create_network(&mut s, "c", Some("10.0.2.0/23")).unwrap();
    let d = create_network(&mut s, "d", None).unwrap();
    assert_eq!(d.allocation.subnet, cidr("10.0.4.0/24"));
}

#[test]
fn requested_subnets_and_gateways_are_checked() {
    let mut s = State::default();
    create_network(&mut s, "a", Some("10.31.0.0/24")).unwrap();
    let mut alloc = Allocator::new(&s);
    let overlap = alloc.allocate_network(&spec("b", Some("10.31.0.128/25"), None));
    assert!(
        matches!(overlap, Err(AllocError::Overlap { .. })),
        "{overlap:?}"
    );
    let wider = alloc.allocate_network(&spec("b", Some("10.0.0.0/8"), None));
    assert!(
        matches!(wider, Err(AllocError::Overlap { .. })),
        "{wider:?}"
    );
    let host_bits = alloc.allocate_network(&spec("b", Some("10.32.0.1/24"), None));
    assert_eq!(
        host_bits.unwrap_err().to_string(),
        "invalid subnet 10.32.0.1/24: it has host bits set (did you mean 10.32.0.0/24?)"
    );
    let outside = alloc.allocate_network(&spec("b", Some("10.32.0.0/24"), Some("10.33.0.1")));
    assert!(matches!(outside, Err(AllocError::GatewayOutside { .. })));
    let broadcast = alloc.allocate_network(&spec("b", Some("10.32.0.0/24"), Some("10.32.0.255")));
    assert!(matches!(broadcast, Err(AllocError::GatewayOutside { .. })));
    let tiny = alloc.allocate_network(&spec("b", Some("10.32.0.0/31"), None));
    assert!(matches!(tiny, Err(AllocError::TooSmall(_))));
    let ok = alloc
        .allocate_network(&spec("b", Some("10.32.0.0/24"), Some("10.32.0.254")))
        .unwrap();
    assert_eq!(ok.gateway.to_string(), "10.32.0.254");
}

#[test]
fn a_removed_network_gives_back_its_subnet_and_vni() {
    let mut s = State::default();
    create_network(&mut s, "a", None).unwrap();
    create_network(&mut s, "b", None).unwrap();
    apply(&mut s, Command::RemoveNetwork { id: "a".into() }).unwrap();
    let c = create_network(&mut s, "c", None).unwrap();
    assert_eq!(c.allocation.subnet, cidr("10.0.0.0/24"));
    assert_eq!(c.allocation.vni, 4096);
}

#[test]
fn vips_one_per_network_none_under_dnsrr_kept_across_updates() {
    let mut s = State::default();
    create_network(&mut s, "a", None).unwrap();
    create_network(&mut s, "b", None).unwrap();
    let web = create_service(&mut s, "web", &["a", "b"], EndpointMode::Vip).unwrap();
    let vips: Vec<String> = web
        .endpoint
        .virtual_ips
        .iter()
        .map(|v| format!("{}={}", v.network, v.addr))
        .collect();
    assert_eq!(vips, ["a=10.0.0.2/24", "b=10.0.1.2/24"]);
    let rr = create_service(&mut s, "rr", &["a"], EndpointMode::Dnsrr).unwrap();
    assert!(rr.endpoint.virtual_ips.is_empty());

    // Leaving b and staying on a keeps a's VIP; b's is free again.
    let spec = service_spec("web", &["a"], EndpointMode::Vip);
    let endpoint = Allocator::new(&s)
        .allocate_endpoint(&spec, &web.endpoint)
        .unwrap();
    assert_eq!(endpoint.virtual_ips, web.endpoint.virtual_ips[..1].to_vec());
    let mut next = s.services[&ServiceId::from("web")].clone();
    next.spec = spec;
    next.endpoint = endpoint;
    apply(&mut s, Command::UpdateService(Box::new(next))).unwrap();
    let other = create_service(&mut s, "other", &["b"], EndpointMode::Vip).unwrap();
    assert_eq!(other.endpoint.virtual_ips[0].addr, cidr("10.0.1.2/24"));

    // Switching to dnsrr drops every VIP.
    let spec = service_spec("web", &["a"], EndpointMode::Dnsrr);
    let current = s.services[&ServiceId::from("web")].endpoint.clone();
    let endpoint = Allocator::new(&s)
        .allocate_endpoint(&spec, &current)
        .unwrap();
    assert!(endpoint.virtual_ips.is_empty());
}

#[test]
fn task_addresses_avoid_the_gateway_vips_and_each_other() {
    let mut s = State::default();
    create_network(&mut s, "a", Some("10.9.0.0/29")).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Vip).unwrap();
    let got: Vec<String> = (0..4)
        .map(|i| addr(&create_task(&mut s, "web", &format!("t{i}")).unwrap(), "a").to_string())
        .collect();
    // .1 is the gateway, .2 the VIP, .7 the broadcast address.
    assert_eq!(
        got,
        ["10.9.0.3/29", "10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]
    );
    let full = create_task(&mut s, "web", "t4");
    assert!(
        matches!(full, Err(AllocError::NetworkFull { .. })),
        "{full:?}"
    );
}

#[test]
fn a_task_gets_an_address_on_every_network_or_none() {
    let mut s = State::default();
    create_network(&mut s, "big", None).unwrap();
    create_network(&mut s, "small", Some("10.9.0.0/30")).unwrap();
    create_service(&mut s, "web", &["big", "small"], EndpointMode::Dnsrr).unwrap();
    let nets = [NetworkId::from("big"), NetworkId::from("small")];
    let mut alloc = Allocator::new(&s);
    assert_eq!(alloc.allocate_task(&nets).unwrap().len(), 2);
    // small (/30: gateway and one host) is full now; big's address is given back.
    assert!(alloc.allocate_task(&nets).is_err());
    let again = alloc.allocate_task(&[NetworkId::from("big")]).unwrap();
    assert_eq!(again[0].addresses, vec![cidr("10.0.0.3/24")]);
}

#[test]
fn a_stopped_task_releases_its_address_for_reuse() {
    let mut s = State::default();
    create_network(&mut s, "a", None).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Dnsrr).unwrap();
    let t1 = create_task(&mut s, "web", "t1").unwrap();
    let t2 = create_task(&mut s, "web", "t2").unwrap();
    assert_eq!(addr(&t1, "a"), cidr("10.0.0.2/24"));
    assert_eq!(addr(&t2, "a"), cidr("10.0.0.3/24"));
    apply(
        &mut s,
        Command::UpdateTaskStatus {
            id: "t1".into(),
            status: TaskStatus {
                state: TaskState::Failed,
                ..Default::default()
            },
        },
    )
    .unwrap();
    assert!(s.tasks[&TaskId::from("t1")].networks[0]
        .addresses
        .is_empty());
    let t3 = create_task(&mut s, "web", "t3").unwrap();
    assert_eq!(addr(&t3, "a"), cidr("10.0.0.2/24"));
    // A pending task that is no longer wanted will never run: its address goes too.
    apply(
        &mut s,
        Command::SetTaskDesiredState {
            id: "t2".into(),
            state: TaskState::Shutdown,
        },
    )
    .unwrap();
    assert!(s.tasks[&TaskId::from("t2")].networks[0]
        .addresses
        .is_empty());
    // A deleted task's address is free, and so is a removed service's VIP.
    apply(&mut s, Command::RemoveTask { id: "t3".into() }).unwrap();
    let t4 = create_task(&mut s, "web", "t4").unwrap();
    assert_eq!(addr(&t4, "a"), cidr("10.0.0.2/24"));
}

#[test]
fn of_two_racing_allocations_only_one_is_applied() {
    let mut s = State::default();
    create_network(&mut s, "a", None).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Dnsrr).unwrap();
    let nets = [NetworkId::from("a")];
    let first = Allocator::new(&s).allocate_task(&nets).unwrap();
    let second = Allocator::new(&s).allocate_task(&nets).unwrap();
    assert_eq!(first, second, "the same view gives the same answer");
    apply(
        &mut s,
        Command::CreateTask(Box::new(task_of("web", "t1", first))),
    )
    .unwrap();
    let refused = apply(
        &mut s,
        Command::CreateTask(Box::new(task_of("web", "t2", second))),
    );
    assert!(
        matches!(refused, Err(CommandError::Conflict(_))),
        "{refused:?}"
    );

    // A VIP against a task address.
    let api_spec = service_spec("api", &["a"], EndpointMode::Vip);
    let endpoint = Allocator::new(&s)
        .allocate_endpoint(&api_spec, &Endpoint::default())
        .unwrap();
    create_task(&mut s, "web", "t3").unwrap();
    let api = Service {
        id: "api".into(),
        spec: api_spec,
        endpoint,
        ..Default::default()
    };
    let refused = apply(&mut s, Command::CreateService(Box::new(api)));
    assert!(
        matches!(refused, Err(CommandError::Conflict(_))),
        "{refused:?}"
    );

    // Two networks from the same view: the same subnet and VNI.
    let n1 = Allocator::new(&s)
        .allocate_network(&spec("b", None, None))
        .unwrap();
    let n2 = Allocator::new(&s)
        .allocate_network(&spec("c", None, None))
        .unwrap();
    let net = |id: &str, allocation| Network {
        id: id.into(),
        spec: spec(id, None, None),
        allocation,
        ..Default::default()
    };
    apply(&mut s, Command::CreateNetwork(Box::new(net("b", n1)))).unwrap();
    let refused = apply(&mut s, Command::CreateNetwork(Box::new(net("c", n2))));
    assert!(
        matches!(refused, Err(CommandError::Conflict(_))),
        "{refused:?}"
    );
}

#[test]
fn apply_refuses_addresses_that_are_not_hosts_of_the_network() {
    let mut s = State::default();
    create_network(&mut s, "a", Some("10.9.0.0/24")).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Dnsrr).unwrap();
    let before = s.clone();
    for bad in [
        "10.9.0.1/24",
        "10.9.0.0/24",
        "10.9.0.255/24",
        "10.9.1.5/24",
        "10.9.0.5/16",
    ] {
        let t = task_of(
            "web",
            "t1",
            vec![NetworkAttachment {
                network: "a".into(),
                addresses: vec![cidr(bad)],
            }],
        );
        assert!(
            apply(&mut s, Command::CreateTask(Box::new(t))).is_err(),
            "{bad} was accepted"
        );
    }
    let on_missing = task_of(
        "web",
        "t1",
        vec![NetworkAttachment {
            network: "nope".into(),
            addresses: vec![cidr("10.9.0.5/24")],
        }],
    );
    assert!(apply(&mut s, Command::CreateTask(Box::new(on_missing))).is_err());
    // A service naming a missing network, or without its VIP, is refused.
    let mut svc = Service {
        id: "x".into(),
        spec: service_spec("x", &["nope"], EndpointMode::Dnsrr),
        ..Default::default()
    };
    assert!(apply(&mut s, Command::CreateService(Box::new(svc.clone()))).is_err());
    svc.spec = service_spec("x", &["a"], EndpointMode::Vip);
    assert!(apply(&mut s, Command::CreateService(Box::new(svc))).is_err());
    assert_eq!(s, before, "refusals changed the store");
}

#[test]
fn a_network_in_use_cannot_be_removed_until_its_services_go() {
    let mut s = State::default();
    create_network(&mut s, "a", None).unwrap();
    create_service(&mut s, "web", &["a"], EndpointMode::Vip).unwrap();
    create_task(&mut s, "web", "t1").unwrap();
    let refused = apply(&mut s, Command::RemoveNetwork { id: "a".into() });
    assert_eq!(
        refused.unwrap_err().to_string(),
        "network a is in use by service web"
    );
    // Once the service is gone, its tasks (on their way out) do not hold the network up.
    apply(&mut s, Command::RemoveService { id: "web".into() }).unwrap();
    apply(&mut s, Command::RemoveNetwork { id: "a".into() }).unwrap();
    assert!(s.networks.is_empty());
}
