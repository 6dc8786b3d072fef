//! What one node's networking needs to know (see `model::NetworkView`), computed from the
//! store. Pure; the dispatcher sends it whenever it changes.
use crate::dispatcher::is_assigned;
use crate::store::State;
use rswarm_proto::model::{NetworkId, NetworkView, NodeId, ServiceView, TaskState, TaskView};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The node's view: the networks its tasks hold addresses on, and the ingress network
/// (every node is on the routing mesh); every service on them or publishing a port, or
/// owning one of the node's tasks; every task holding an address on them, and the node's
/// own tasks; the underlay addresses of the nodes involved.
pub fn network_view(s: &State, node: &NodeId) -> NetworkView {
    // Tasks on the node's own network stack have no part in its networks (no
    // attachment, address or DNS name), so they and their services are left out.
    let local: Vec<_> = s
        .tasks
        .values()
        .filter(|t| is_assigned(t, node) && !t.spec.host_network)
        .collect();
    let mut nets: BTreeSet<NetworkId> = local
        .iter()
        .filter(|t| t.holds_addresses())
        .flat_map(|t| t.networks.iter().map(|a| a.network.clone()))
        .collect();
    if let Some(n) = s.ingress_network() {
        nets.insert(n.id.clone());
    }
    let local_services: BTreeSet<_> = local.iter().map(|t| &t.service_id).collect();
    let mut view = NetworkView {
        networks: nets
            .iter()
            .filter_map(|id| s.networks.get(id).cloned())
            .collect(),
        ..Default::default()
    };
    for svc in s.services.values().filter(|v| !v.spec.task.host_network) {
        let on: Vec<_> = svc
            .spec
            .networks
            .iter()
            .filter(|c| nets.contains(&NetworkId(c.target.clone())))
            .map(|c| (NetworkId(c.target.clone()), c.aliases.clone()))
            .collect();
        if on.is_empty() && svc.spec.ports.is_empty() && !local_services.contains(&svc.id) {
            continue;
        }
        view.services.push(ServiceView {
            id: svc.id.clone(),
            name: svc.spec.name.clone(),
            networks: on,
            endpoint_mode: svc.spec.endpoint_mode,
            virtual_ips: svc.endpoint.virtual_ips.clone(),
            ports: svc.endpoint.ports.clone(),
        });
    }
    let mut nodes: BTreeSet<&NodeId> = BTreeSet::new();
    for t in s.tasks.values().filter(|t| !t.spec.host_network) {
        let mine = is_assigned(t, node);
        let on_nets = t.holds_addresses()
            && t.networks
                .iter()
                .any(|a| !a.addresses.is_empty() && nets.contains(&a.network));
        if !mine && !on_nets {
            continue;
        }
        // Addresses only for tasks that hold them (a stopped task's are free again).
        let networks = if t.holds_addresses() {
            t.networks.clone()
        } else {
            Vec::new()
        };
        if let Some(n) = &t.node_id {
            nodes.insert(n);
        }
        view.tasks.push(TaskView {
            id: t.id.clone(),
            service_id: t.service_id.clone(),
            node_id: t.node_id.clone(),
            networks,
            serving: t.status.state == TaskState::Running
                && t.desired_state <= TaskState::Running
                && s.services.contains_key(&t.service_id),
        });
    }
    for n in &view.networks {
        nodes.extend(n.node_endpoints.keys());
    }
    view.subnets = s.networks.values().map(|n| n.allocation.subnet).collect();
    view.nodes = nodes
        .into_iter()
        .filter_map(|id| {
            let n = s.nodes.get(id)?;
            let ip: Ipv4Addr = n.status.addr.parse().ok()?;
            Some((id.clone(), ip))
        })
        .collect();
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::tests::{
        apply, cidr, create_network, create_service, create_task, service_spec,
    };
    use crate::allocator::Allocator;
    use rswarm_proto::model::{
        Command, CommandError, EndpointMode, Network, NetworkSpec, Node, NodeStatus, PortConfig,
        Service, ServiceId, TaskId, TaskStatus,
    };

    fn node(s: &mut State, id: &str, addr: &str) {
        let n = Node {
            id: NodeId(id.into()),
            status: NodeStatus {
                addr: addr.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        s.apply(
            1000 + s.nodes.len() as u64,
            &Command::CreateNode(Box::new(n)),
        )
        .expect("create node");
    }

    fn place(s: &mut State, task: &str, node_id: &str, state: TaskState) {
        let mut t = s.tasks[&TaskId(task.into())].clone();
        t.node_id = Some(NodeId(node_id.into()));
        t.status = TaskStatus {
            state,
            ..Default::default()
        };
        apply(s, Command::UpdateTask(Box::new(t))).expect("update task");
    }

    /// app: web (tasks on n1 and n2), client (on n3); other: lonely (on n1).
    fn cluster() -> State {
        let mut s = State::default();
        for (id, addr) in [
            ("n1", "198.18.0.11"),
            ("n2", "198.18.0.12"),
            ("n3", "198.18.0.13"),
        ] {
            node(&mut s, id, addr);
        }
        create_network(&mut s, "app", None).expect("app");
        create_network(&mut s, "other", None).expect("other");
        create_service(&mut s, "web", &["app"], EndpointMode::Vip).expect("web");
        create_service(&mut s, "client", &["app"], EndpointMode::Vip).expect("client");
        create_service(&mut s, "lonely", &["other"], EndpointMode::Vip).expect("lonely");
        for (t, svc, n) in [
            ("w1", "web", "n1"),
            ("w2", "web", "n2"),
            ("c1", "client", "n3"),
            ("l1", "lonely", "n1"),
        ] {
            create_task(&mut s, svc, t).expect("task");
            place(&mut s, t, n, TaskState::Running);
        }
        s
    }

    #[test]
    fn a_node_sees_the_networks_of_its_tasks_and_their_peers() {
        let s = cluster();
        let v = network_view(&s, &NodeId("n3".into()));
        let nets: Vec<&str> = v.networks.iter().map(|n| n.spec.name.as_str()).collect();
        assert_eq!(nets, vec!["app"]);
        let mut tasks: Vec<&str> = v.tasks.iter().map(|t| t.id.as_str()).collect();
        tasks.sort();
        assert_eq!(tasks, vec!["c1", "w1", "w2"], "not lonely's task on other");
        assert!(v.tasks.iter().all(|t| t.serving));
        let mut svcs: Vec<&str> = v.services.iter().map(|s| s.name.as_str()).collect();
        svcs.sort();
        assert_eq!(svcs, vec!["client", "web"]);
        assert_eq!(v.nodes.len(), 3, "{:?}", v.nodes);
        let n1 = network_view(&s, &NodeId("n1".into()));
        assert_eq!(n1.networks.len(), 2);
    }

    #[test]
    fn host_network_tasks_and_their_services_are_left_out() {
        let mut s = cluster();
        // Even a spec that names a network (the control API refuses it) gets no VIP, no
        // attachment and no place in the view.
        let mut spec = service_spec("agent", &["app"], EndpointMode::Vip);
        spec.task.host_network = true;
        let endpoint = Allocator::new(&s)
            .allocate_endpoint(&spec, &Default::default())
            .expect("endpoint");
        assert!(endpoint.virtual_ips.is_empty(), "{endpoint:?}");
        let svc = Service {
            id: ServiceId("agent".into()),
            spec: spec.clone(),
            spec_version: 1,
            endpoint,
            ..Default::default()
        };
        assert!(crate::allocator::service_networks(&s, &svc).is_empty());
        // Apply refuses it, as the control API does.
        let refused = apply(&mut s, Command::CreateService(Box::new(svc.clone())));
        assert!(
            matches!(&refused, Err(CommandError::Invalid(m)) if m.contains("host network")),
            "{refused:?}"
        );
        let mut svc = svc;
        svc.spec.networks.clear();
        let spec = svc.spec.clone();
        apply(&mut s, Command::CreateService(Box::new(svc))).expect("service");
        let t = create_task(&mut s, "agent", "a1").expect("task");
        assert!(t.networks.is_empty());
        let mut t = s.tasks[&TaskId("a1".into())].clone();
        t.spec = spec.task;
        apply(&mut s, Command::UpdateTask(Box::new(t))).expect("spec");
        place(&mut s, "a1", "n3", TaskState::Running);
        let v = network_view(&s, &NodeId("n3".into()));
        assert!(
            v.tasks.iter().all(|t| t.id.as_str() != "a1"),
            "{:?}",
            v.tasks
        );
        assert!(v.services.iter().all(|s| s.name != "agent"));
        assert_eq!(v.networks.len(), 1, "only app, for c1");
    }

    #[test]
    fn tasks_not_running_or_no_longer_wanted_do_not_serve() {
        let mut s = cluster();
        place(&mut s, "w2", "n2", TaskState::Starting);
        apply(
            &mut s,
            Command::SetTaskDesiredState {
                id: TaskId("w1".into()),
                state: TaskState::Shutdown,
            },
        )
        .expect("desired");
        let v = network_view(&s, &NodeId("n3".into()));
        let serving: Vec<&str> = v
            .tasks
            .iter()
            .filter(|t| t.serving)
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(serving, vec!["c1"]);
    }

    #[test]
    fn ingress_endpoints_are_unique_and_checked_again_in_apply() {
        let mut s = cluster();
        let mut ing = Network {
            id: NetworkId("ing".into()),
            spec: NetworkSpec {
                name: "ingress".into(),
                ingress: true,
                ..Default::default()
            },
            ..Default::default()
        };
        ing.allocation = Allocator::new(&s)
            .allocate_network(&ing.spec)
            .expect("allocation");
        apply(&mut s, Command::CreateNetwork(Box::new(ing))).expect("ingress");
        let (cmds, _) = crate::orchestrator::pass(&s, 0);
        let eps: Vec<&Command> = cmds
            .iter()
            .filter(|c| matches!(c, Command::SetNodeEndpoint { .. }))
            .collect();
        assert_eq!(eps.len(), 3, "one per node");
        for c in eps {
            apply(&mut s, c.clone()).expect("fresh endpoint");
        }
        let ing = s.ingress_network().expect("ingress").clone();
        let addrs: BTreeSet<_> = ing.node_endpoints.values().collect();
        assert_eq!(addrs.len(), 3, "distinct: {:?}", ing.node_endpoints);
        // A second node endpoint on a taken address is refused.
        let taken = *ing.node_endpoints.values().next().expect("one");
        let r = apply(
            &mut s,
            Command::SetNodeEndpoint {
                network: ing.id.clone(),
                node: NodeId("n3".into()),
                addr: Some(if ing.node_endpoints[&NodeId("n3".into())] == taken {
                    ing.node_endpoints[&NodeId("n1".into())]
                } else {
                    taken
                }),
            },
        );
        assert!(matches!(r, Err(CommandError::Conflict(_))), "{r:?}");
        // Each node sees the ingress network and the other nodes' addresses.
        let v = network_view(&s, &NodeId("n2".into()));
        assert!(v.ingress().is_some());
        assert_eq!(v.nodes.len(), 3);
        let (again, _) = crate::orchestrator::pass(&s, 0);
        assert!(
            !again
                .iter()
                .any(|c| matches!(c, Command::SetNodeEndpoint { .. })),
            "nothing left to do"
        );
        let _ = cidr("10.0.0.0/24");
    }

    #[test]
    fn a_service_publishing_through_the_mesh_puts_its_tasks_on_ingress() {
        let mut s = cluster();
        let ing = Network {
            id: NetworkId("ing".into()),
            spec: NetworkSpec {
                name: "ingress".into(),
                ingress: true,
                ..Default::default()
            },
            allocation: Allocator::new(&s)
                .allocate_network(&NetworkSpec::default())
                .expect("allocation"),
            ..Default::default()
        };
        apply(&mut s, Command::CreateNetwork(Box::new(ing))).expect("ingress");
        let mut spec = service_spec("pub", &[], EndpointMode::Vip);
        spec.ports = vec![PortConfig {
            target: 80,
            published: 8080,
            ..Default::default()
        }];
        let svc = Service {
            id: ServiceId("pub".into()),
            spec,
            ..Default::default()
        };
        apply(&mut s, Command::CreateService(Box::new(svc))).expect("service");
        let t = create_task(&mut s, "pub", "p1").expect("task");
        assert_eq!(t.networks.len(), 1);
        assert_eq!(t.networks[0].network.as_str(), "ing");
        let r = apply(
            &mut s,
            Command::RemoveNetwork {
                id: NetworkId("ing".into()),
            },
        );
        assert!(matches!(r, Err(CommandError::InUse { .. })), "{r:?}");
    }
}
