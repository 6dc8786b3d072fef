//! What the node's network agent derives from the cluster's view, purely: the overlay
//! state netd should reach, each task's DNS names and VIP balancing, and the node's
//! published-port rules.
use crate::model::HOST_ENDPOINT;
use crate::nft::{HostPort, HostRules, IngressPort, Proto, VipBackends};
use crate::{NodeView, RemoteTask};
use rswarm_proto::model::{
    EndpointMode, Ipv4Cidr, NetworkAttachment, NetworkId, NetworkView, NodeId, Protocol,
    PublishMode, ServiceId, Task, TaskId, TaskState, TaskView,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// A task as netd's model wants it: holding its addresses.
fn as_task(t: &TaskView, id: TaskId, node: Option<NodeId>) -> Task {
    Task {
        id,
        service_id: t.service_id.clone(),
        node_id: node,
        networks: t.networks.clone(),
        desired_state: TaskState::Running,
        status: rswarm_proto::model::TaskStatus {
            state: TaskState::Running,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// netd's input: the local tasks whose namespaces exist (`ready`), the remote tasks on the
/// same networks, and the nodes' endpoints on the ingress network (this node's as a veth
/// into its own namespace, the others' as peers).
pub fn node_view(
    view: &NetworkView,
    me: &NodeId,
    underlay_ip: Ipv4Addr,
    underlay_mtu: u32,
    ready: &BTreeSet<TaskId>,
) -> NodeView {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for t in &view.tasks {
        match &t.node_id {
            Some(n) if n == me && ready.contains(&t.id) => {
                local.push(as_task(t, t.id.clone(), Some(me.clone())));
            }
            Some(n) if n == me => {}
            Some(n) => {
                if let Some(ip) = view.nodes.get(n) {
                    remote.push(RemoteTask {
                        underlay_ip: *ip,
                        task: as_task(t, t.id.clone(), Some(n.clone())),
                    });
                }
            }
            None => {}
        }
    }
    if let Some(ingress) = view.ingress() {
        for (node, addr) in &ingress.node_endpoints {
            let endpoint = TaskView {
                networks: vec![NetworkAttachment {
                    network: ingress.id.clone(),
                    addresses: vec![*addr],
                }],
                ..Default::default()
            };
            if node == me {
                local.push(as_task(
                    &endpoint,
                    TaskId(HOST_ENDPOINT.into()),
                    Some(me.clone()),
                ));
            } else if let Some(ip) = view.nodes.get(node) {
                remote.push(RemoteTask {
                    underlay_ip: *ip,
                    task: as_task(
                        &endpoint,
                        TaskId(format!("{HOST_ENDPOINT}-{node}")),
                        Some(node.clone()),
                    ),
                });
            }
        }
    }
    NodeView {
        node_id: me.clone(),
        underlay_ip,
        underlay_mtu,
        networks: view.networks.clone(),
        local_tasks: local,
        remote_tasks: remote,
    }
}

/// This node's address on the ingress network, if it has one.
pub fn my_ingress_endpoint(view: &NetworkView, me: &NodeId) -> Option<Ipv4Cidr> {
    view.ingress()?.node_endpoints.get(me).copied()
}

fn address_on(t: &TaskView, net: &NetworkId) -> Option<Ipv4Addr> {
    t.networks
        .iter()
        .find(|a| &a.network == net)
        .and_then(|a| a.addresses.first())
        .map(|a| a.addr())
}

/// The addresses on `net` of `service`'s tasks that take traffic, in order.
fn serving_addresses(view: &NetworkView, service: &ServiceId, net: &NetworkId) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = view
        .tasks
        .iter()
        .filter(|t| &t.service_id == service && t.serving)
        .filter_map(|t| address_on(t, net))
        .collect();
    out.sort();
    out
}

/// The names a task resolves through the embedded DNS: on every network it shares with a
/// service (the ingress network is not one for names), the service's name and aliases
/// (its VIP there, or under dnsrr its serving tasks' addresses) and `tasks.NAME` (the
/// serving tasks' addresses). Names are lowercase.
pub fn task_names(view: &NetworkView, task: &TaskView) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let ingress = view.ingress().map(|n| n.id.clone());
    for att in &task.networks {
        if Some(&att.network) == ingress.as_ref() || att.addresses.is_empty() {
            continue;
        }
        for svc in &view.services {
            let Some((_, aliases)) = svc.networks.iter().find(|(n, _)| n == &att.network) else {
                continue;
            };
            let tasks = serving_addresses(view, &svc.id, &att.network);
            let vip = svc
                .virtual_ips
                .iter()
                .find(|v| v.network == att.network)
                .map(|v| v.addr.addr());
            let answer = match (svc.endpoint_mode, vip) {
                (EndpointMode::Vip, Some(vip)) => vec![vip],
                _ => tasks.clone(),
            };
            for name in std::iter::once(&svc.name).chain(aliases) {
                let name = name.to_ascii_lowercase();
                out.entry(format!("tasks.{name}"))
                    .or_default()
                    .extend(tasks.iter().copied());
                out.entry(name).or_default().extend(answer.iter().copied());
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// The VIPs a task balances: every VIP on a network it is on (the ingress network's
/// balancing is the node's, in its own namespace), over the service's serving tasks there.
pub fn task_vips(view: &NetworkView, task: &TaskView) -> Vec<VipBackends> {
    let ingress = view.ingress().map(|n| n.id.clone());
    let mut out = Vec::new();
    for att in &task.networks {
        if Some(&att.network) == ingress.as_ref() || att.addresses.is_empty() {
            continue;
        }
        for svc in &view.services {
            if svc.endpoint_mode != EndpointMode::Vip {
                continue;
            }
            let Some(vip) = svc.virtual_ips.iter().find(|v| v.network == att.network) else {
                continue;
            };
            let backends = serving_addresses(view, &svc.id, &att.network);
            out.push(VipBackends {
                vip: vip.addr.addr(),
                backends,
            });
        }
    }
    out.sort_by_key(|v| v.vip);
    out
}

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

/// The node's published ports: every mesh port of the cluster, balanced over the serving
/// tasks' ingress addresses; the host-mode ports of this node's tasks, at their
/// gateway-bridge addresses (`gateway_ips`).
pub fn host_rules(
    view: &NetworkView,
    me: &NodeId,
    gateway_ips: &BTreeMap<TaskId, Ipv4Addr>,
    gateway: crate::gateway::GatewayConfig,
) -> HostRules {
    let ingress = view.ingress();
    let mut rules = HostRules {
        gateway,
        isolated: view.subnets.clone(),
        ..Default::default()
    };
    if let Some(ing) = ingress {
        if ing.node_endpoints.contains_key(me) {
            rules.ingress_if = Some(crate::model::HOST_ENDPOINT_IF.to_owned());
            rules.ingress_subnet = Some(ing.allocation.subnet);
        }
    }
    for svc in &view.services {
        for p in &svc.ports {
            match p.mode {
                PublishMode::Ingress => {
                    let (Some(ing), Some(_)) = (ingress, rules.ingress_if.as_ref()) else {
                        continue;
                    };
                    let backends = serving_addresses(view, &svc.id, &ing.id);
                    rules.ingress.push(IngressPort {
                        proto: proto(p.protocol),
                        published: p.published,
                        target: p.target,
                        backends,
                    });
                }
                PublishMode::Host => {
                    // One backend per port: a second local task of the service cannot
                    // bind the same host port (Swarm refuses to place it; the first wins).
                    let local = view.tasks.iter().find(|t| {
                        t.service_id == svc.id
                            && t.node_id.as_ref() == Some(me)
                            && t.serving
                            && gateway_ips.contains_key(&t.id)
                    });
                    if let Some(t) = local {
                        rules.host_mode.push(HostPort {
                            proto: proto(p.protocol),
                            published: p.published,
                            target: p.target,
                            backend: gateway_ips[&t.id],
                        });
                    }
                }
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{
        Network, NetworkAllocation, NetworkSpec, PortConfig, ServiceId, ServiceView, VirtualIp,
    };

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }
    fn net(id: &str, subnet: &str, ingress: bool) -> Network {
        let subnet = cidr(subnet);
        Network {
            id: NetworkId(id.into()),
            spec: NetworkSpec {
                name: id.into(),
                ingress,
                ..Default::default()
            },
            allocation: NetworkAllocation {
                subnet,
                gateway: Ipv4Addr::from(u32::from(subnet.addr()) + 1),
                vni: 4096,
            },
            ..Default::default()
        }
    }
    fn task(id: &str, svc: &str, node: &str, nets: &[(&str, &str)], serving: bool) -> TaskView {
        TaskView {
            id: TaskId(id.into()),
            service_id: ServiceId(svc.into()),
            node_id: Some(NodeId(node.into())),
            networks: nets
                .iter()
                .map(|(n, a)| NetworkAttachment {
                    network: NetworkId((*n).into()),
                    addresses: vec![cidr(a)],
                })
                .collect(),
            serving,
        }
    }
    fn service(
        id: &str,
        nets: &[(&str, &[&str], Option<&str>)],
        mode: EndpointMode,
    ) -> ServiceView {
        ServiceView {
            id: ServiceId(id.into()),
            name: id.into(),
            networks: nets
                .iter()
                .map(|(n, aliases, _)| {
                    (
                        NetworkId((*n).into()),
                        aliases.iter().map(|a| (*a).to_owned()).collect(),
                    )
                })
                .collect(),
            endpoint_mode: mode,
            virtual_ips: nets
                .iter()
                .filter_map(|(n, _, vip)| {
                    vip.map(|v| VirtualIp {
                        network: NetworkId((*n).into()),
                        addr: cidr(v),
                    })
                })
                .collect(),
            ports: Vec::new(),
        }
    }

    /// Two networks, `web` (3 tasks on two nodes, one not serving) and `db` on `back`,
    /// `client` on `app` only.
    fn view() -> NetworkView {
        NetworkView {
            networks: vec![
                net("app", "10.1.0.0/24", false),
                net("back", "10.2.0.0/24", false),
            ],
            services: vec![
                service(
                    "web",
                    &[("app", &["www"], Some("10.1.0.2/24"))],
                    EndpointMode::Vip,
                ),
                service("db", &[("back", &[], None)], EndpointMode::Dnsrr),
                service(
                    "client",
                    &[("app", &[], Some("10.1.0.3/24"))],
                    EndpointMode::Vip,
                ),
            ],
            tasks: vec![
                task("w1", "web", "n1", &[("app", "10.1.0.10/24")], true),
                task("w2", "web", "n2", &[("app", "10.1.0.11/24")], true),
                task("w3", "web", "n2", &[("app", "10.1.0.12/24")], false),
                task("d1", "db", "n2", &[("back", "10.2.0.10/24")], true),
                task("c1", "client", "n1", &[("app", "10.1.0.20/24")], true),
            ],
            nodes: [
                (NodeId("n1".into()), ip("198.18.0.11")),
                (NodeId("n2".into()), ip("198.18.0.12")),
            ]
            .into(),
            subnets: vec![cidr("10.1.0.0/24"), cidr("10.2.0.0/24")],
        }
    }

    #[test]
    fn names_are_scoped_to_shared_networks_vip_or_tasks() {
        let v = view();
        let client = &v.tasks[4];
        let names = task_names(&v, client);
        assert_eq!(names["web"], vec![ip("10.1.0.2")], "the VIP");
        assert_eq!(names["www"], vec![ip("10.1.0.2")], "an alias");
        assert_eq!(
            names["tasks.web"],
            vec![ip("10.1.0.10"), ip("10.1.0.11")],
            "serving tasks only"
        );
        assert!(
            !names.contains_key("db"),
            "db is on a network client is not on"
        );
        let d = &v.tasks[3];
        let names = task_names(&v, d);
        assert_eq!(names["db"], vec![ip("10.2.0.10")], "dnsrr: the tasks");
        assert!(!names.contains_key("web"));
    }

    #[test]
    fn vips_balance_over_serving_tasks_of_shared_networks() {
        let v = view();
        let vips = task_vips(&v, &v.tasks[4]);
        assert_eq!(
            vips,
            vec![
                VipBackends {
                    vip: ip("10.1.0.2"),
                    backends: vec![ip("10.1.0.10"), ip("10.1.0.11")],
                },
                VipBackends {
                    vip: ip("10.1.0.3"),
                    backends: vec![ip("10.1.0.20")],
                },
            ]
        );
        assert!(task_vips(&v, &v.tasks[3]).is_empty(), "dnsrr has no VIP");
    }

    #[test]
    fn node_view_has_ready_local_tasks_and_remote_peers() {
        let v = view();
        let me = NodeId("n1".into());
        let ready: BTreeSet<TaskId> = [TaskId("w1".into())].into();
        let nv = node_view(&v, &me, ip("198.18.0.11"), 1500, &ready);
        let local: Vec<&str> = nv.local_tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(local, vec!["w1"], "c1's namespace is not made yet");
        let remote: Vec<(&str, Ipv4Addr)> = nv
            .remote_tasks
            .iter()
            .map(|r| (r.task.id.as_str(), r.underlay_ip))
            .collect();
        assert_eq!(
            remote,
            vec![
                ("w2", ip("198.18.0.12")),
                ("w3", ip("198.18.0.12")),
                ("d1", ip("198.18.0.12"))
            ]
        );
        let desired = crate::desired(&nv);
        assert_eq!(desired.sandboxes.len(), 1, "only app has a local task");
    }

    #[test]
    fn the_ingress_endpoint_is_local_and_peers_get_theirs() {
        let mut v = view();
        let mut ing = net("ing", "10.255.0.0/24", true);
        ing.node_endpoints
            .insert(NodeId("n1".into()), cidr("10.255.0.2/24"));
        ing.node_endpoints
            .insert(NodeId("n2".into()), cidr("10.255.0.3/24"));
        v.networks.push(ing);
        v.tasks
            .push(task("p1", "pub", "n2", &[("ing", "10.255.0.10/24")], true));
        let mut pubsvc = service("pub", &[], EndpointMode::Vip);
        pubsvc.ports = vec![
            PortConfig {
                target: 80,
                published: 8080,
                ..Default::default()
            },
            PortConfig {
                target: 80,
                published: 8081,
                mode: PublishMode::Host,
                ..Default::default()
            },
        ];
        v.services.push(pubsvc);
        let me = NodeId("n1".into());
        let nv = node_view(&v, &me, ip("198.18.0.11"), 1500, &BTreeSet::new());
        assert_eq!(nv.local_tasks.len(), 1);
        assert_eq!(nv.local_tasks[0].id.as_str(), HOST_ENDPOINT);
        let desired = crate::desired(&nv);
        let sb = desired
            .sandboxes
            .values()
            .next()
            .expect("the ingress sandbox");
        assert!(sb.links.contains_key("ve-host"), "{:?}", sb.links.keys());
        assert_eq!(sb.fdb.len(), 2, "n2's endpoint and its task: {:?}", sb.fdb);

        let gw: BTreeMap<TaskId, Ipv4Addr> = BTreeMap::new();
        let rules = host_rules(&v, &me, &gw, Default::default());
        assert_eq!(rules.ingress_if.as_deref(), Some("rsw_ingress"));
        assert_eq!(rules.ingress.len(), 1);
        assert_eq!(rules.ingress[0].backends, vec![ip("10.255.0.10")]);
        assert!(rules.host_mode.is_empty(), "the host-mode task runs on n2");
        let n2 = NodeId("n2".into());
        let gw: BTreeMap<TaskId, Ipv4Addr> = [(TaskId("p1".into()), ip("172.18.0.2"))].into();
        let rules = host_rules(&v, &n2, &gw, Default::default());
        assert_eq!(rules.host_mode.len(), 1);
        assert_eq!(rules.host_mode[0].backend, ip("172.18.0.2"));
        assert_eq!(rules.host_mode[0].published, 8081);
    }
}
