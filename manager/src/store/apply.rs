//! Applying commands: pure, deterministic, all-or-nothing.
use super::networks::release_if_done;
use super::object::{
    check_version, current_for_update, ensure_absent, insert_new, not_found, replace, restored,
    take,
};
use super::{Event, State};
use rswarm_proto::model::{Command, CommandError, Network, Node};

impl State {
    /// Applies `cmd` as log entry `index`. On error nothing has changed.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Vec<Event>, CommandError> {
        match cmd {
            Command::Batch(cmds) => {
                // All or nothing: work on a copy and keep it only if every command applies.
                let mut next = self.clone();
                let mut events = Vec::new();
                for c in cmds {
                    events.extend(next.apply(index, c)?);
                }
                *self = next;
                Ok(events)
            }
            Command::Restore {
                cluster,
                nodes,
                services,
                tasks,
                networks,
                secrets,
                configs,
            } => {
                let mut c = (**cluster).clone();
                c.meta.version = index;
                self.cluster = Some(c);
                self.nodes = restored(nodes, index);
                self.services = restored(services, index);
                self.tasks = restored(tasks, index);
                self.networks = restored(networks, index);
                self.secrets = restored(secrets, index);
                self.configs = restored(configs, index);
                Ok(vec![Event::Reset])
            }
            // The store applies `Multi` command by command (see `Store::apply`); nested
            // in a `Batch` it is all-or-nothing like the rest of the batch.
            Command::Multi(cmds) => {
                let mut next = self.clone();
                let mut events = Vec::new();
                for c in cmds {
                    events.extend(next.apply(index, c)?);
                }
                *self = next;
                Ok(events)
            }
            Command::CreateCluster(c) => {
                if let Some(existing) = &self.cluster {
                    return Err(CommandError::Exists {
                        kind: "cluster".into(),
                        id: existing.id.to_string(),
                    });
                }
                let mut c = (**c).clone();
                c.meta.version = index;
                self.cluster = Some(c.clone());
                Ok(vec![Event::ClusterUpdated(Box::new(c))])
            }
            Command::UpdateCluster(c) => {
                let current = self
                    .cluster
                    .as_ref()
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "cluster".into(),
                        id: c.id.to_string(),
                    })?;
                check_version(
                    "cluster",
                    c.id.as_str(),
                    current.meta.version,
                    c.meta.version,
                )?;
                let mut c = (**c).clone();
                c.meta.version = index;
                c.meta.created_at = current.meta.created_at;
                self.cluster = Some(c.clone());
                Ok(vec![Event::ClusterUpdated(Box::new(c))])
            }
            Command::CreateNode(n) => {
                ensure_absent(&self.nodes, &**n)?;
                if self.is_removed(&n.id) {
                    return Err(CommandError::Removed(n.id.to_string()));
                }
                let n = insert_new(&mut self.nodes, index, &**n);
                Ok(vec![Event::NodeCreated(Box::new(n))])
            }
            Command::UpdateNode(n) => {
                let old = current_for_update(&self.nodes, &**n)?;
                let n = replace(&mut self.nodes, index, &old, &**n);
                Ok(vec![Event::NodeUpdated {
                    old: Box::new(old),
                    new: Box::new(n),
                }])
            }
            Command::RemoveNode { id } => {
                let old = take(&mut self.nodes, id)?;
                let mut events = vec![Event::NodeRemoved(Box::new(old))];
                if let Some(c) = self.cluster.as_mut() {
                    c.removed_nodes.insert(id.clone());
                    c.meta.version = index;
                    events.push(Event::ClusterUpdated(Box::new(c.clone())));
                }
                Ok(events)
            }
            Command::CreateService(svc) => {
                ensure_absent(&self.services, &**svc)?;
                self.check_service_name(svc)?;
                self.check_service_networks(svc)?;
                self.check_service_ports(svc)?;
                let svc = insert_new(&mut self.services, index, &**svc);
                Ok(vec![Event::ServiceCreated(Box::new(svc))])
            }
            Command::UpdateService(svc) => {
                let old = current_for_update(&self.services, &**svc)?;
                self.check_service_name(svc)?;
                self.check_service_networks(svc)?;
                self.check_service_ports(svc)?;
                let svc = replace(&mut self.services, index, &old, &**svc);
                Ok(vec![Event::ServiceUpdated {
                    old: Box::new(old),
                    new: Box::new(svc),
                }])
            }
            Command::RemoveService { id } => {
                let old = take(&mut self.services, id)?;
                Ok(vec![Event::ServiceRemoved(Box::new(old))])
            }
            Command::CreateTask(t) => {
                ensure_absent(&self.tasks, &**t)?;
                self.check_task_addresses(t, None)?;
                let mut t = (**t).clone();
                release_if_done(&mut t);
                let t = insert_new(&mut self.tasks, index, &t);
                Ok(vec![Event::TaskCreated(Box::new(t))])
            }
            Command::UpdateTask(t) => {
                let old = current_for_update(&self.tasks, &**t)?;
                self.check_task_addresses(t, Some(&old))?;
                let mut t = (**t).clone();
                release_if_done(&mut t);
                let t = replace(&mut self.tasks, index, &old, &t);
                Ok(vec![Event::TaskUpdated {
                    old: Box::new(old),
                    new: Box::new(t),
                }])
            }
            Command::RemoveTask { id } => {
                let old = take(&mut self.tasks, id)?;
                Ok(vec![Event::TaskRemoved(Box::new(old))])
            }
            Command::UpdateTaskStatus { id, status } => {
                let Some(current) = self.tasks.get_mut(id) else {
                    // The task was reaped while the report was in flight.
                    return Ok(Vec::new());
                };
                if status.state < current.status.state {
                    return Ok(Vec::new());
                }
                let old = current.clone();
                current.status = status.clone();
                current.meta.version = index;
                release_if_done(current);
                Ok(vec![Event::TaskUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
            Command::SetTaskDesiredState { id, state } => {
                let Some(current) = self.tasks.get_mut(id) else {
                    return Ok(Vec::new());
                };
                if *state <= current.desired_state {
                    return Ok(Vec::new());
                }
                let old = current.clone();
                current.desired_state = *state;
                current.meta.version = index;
                release_if_done(current);
                Ok(vec![Event::TaskUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
            Command::AssignTask {
                id,
                node,
                timestamp,
            } => {
                let Some(current) = self.tasks.get_mut(id) else {
                    return Ok(Vec::new());
                };
                let assignable = current.status.state <= rswarm_proto::model::TaskState::Pending
                    && current.desired_state <= rswarm_proto::model::TaskState::Running
                    && current.node_id.as_ref().is_none_or(|n| n == node);
                if !assignable {
                    return Ok(Vec::new());
                }
                let old = current.clone();
                current.node_id = Some(node.clone());
                current.status.state = rswarm_proto::model::TaskState::Assigned;
                current.status.message = "scheduled".into();
                current.status.err.clear();
                current.status.timestamp = *timestamp;
                current.meta.version = index;
                Ok(vec![Event::TaskUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
            Command::CreateNetwork(n) => {
                self.check_new_network(n)?;
                let n = insert_new(&mut self.networks, index, &**n);
                Ok(vec![Event::NetworkCreated(Box::new(n))])
            }
            Command::SetNodeEndpoint {
                network,
                node,
                addr,
            } => {
                let net = self
                    .networks
                    .get(network)
                    .ok_or_else(|| not_found::<Network>(network))?;
                if let Some(addr) = addr {
                    if !self.nodes.contains_key(node) {
                        return Err(not_found::<Node>(node));
                    }
                    if net.node_endpoints.get(node) != Some(addr) {
                        super::networks::check_host(net, addr)?;
                        let used = self.addresses_in_use(network, Some(super::Holder::Node(node)));
                        if let Some(by) = used.get(&addr.addr()) {
                            return Err(super::networks::taken(net, addr.addr(), by));
                        }
                    }
                }
                let mut n = net.clone();
                match addr {
                    Some(a) => n.node_endpoints.insert(node.clone(), *a),
                    None => n.node_endpoints.remove(node),
                };
                n.meta.version = index;
                self.networks.insert(n.id.clone(), n.clone());
                Ok(vec![Event::NetworkUpdated(Box::new(n))])
            }
            Command::RemoveNetwork { id } => {
                let current = self
                    .networks
                    .get(id)
                    .ok_or_else(|| not_found::<Network>(id))?;
                if let Some(by) = self.network_user(id) {
                    return Err(CommandError::InUse {
                        kind: "network".into(),
                        id: current.spec.name.clone(),
                        by,
                    });
                }
                let old = take(&mut self.networks, id)?;
                Ok(vec![Event::NetworkRemoved(Box::new(old))])
            }
            Command::SetServiceUpdateStatus { id, status } => {
                let Some(current) = self.services.get_mut(id) else {
                    return Ok(Vec::new());
                };
                if current.update_status == *status {
                    return Ok(Vec::new());
                }
                let old = current.clone();
                current.update_status = status.clone();
                current.meta.version = index;
                Ok(vec![Event::ServiceUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
            Command::RollbackService { id, message } => {
                let Some(current) = self.services.get_mut(id) else {
                    return Ok(Vec::new());
                };
                let Some(previous) = current.previous_spec.take() else {
                    return Ok(Vec::new());
                };
                let old = current.clone();
                let was = std::mem::replace(&mut current.spec, *previous);
                if was.task != current.spec.task {
                    current.spec_version += 1;
                }
                current.previous_spec = Some(Box::new(was));
                current.update_status = rswarm_proto::model::UpdateStatus {
                    state: rswarm_proto::model::UpdateState::RollbackStarted,
                    message: message.clone(),
                };
                current.meta.version = index;
                Ok(vec![Event::ServiceUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
            Command::CreateSecret(_)
            | Command::RemoveSecret { .. }
            | Command::CreateConfig(_)
            | Command::RemoveConfig { .. } => self.apply_secrets(index, cmd),
            Command::SetNodeState {
                id,
                state,
                addr,
                message,
            } => {
                let current = self
                    .nodes
                    .get_mut(id)
                    .ok_or_else(|| not_found::<Node>(id))?;
                let old = current.clone();
                current.status.state = *state;
                current.status.message.clone_from(message);
                if let Some(a) = addr {
                    current.status.addr.clone_from(a);
                }
                current.meta.version = index;
                Ok(vec![Event::NodeUpdated {
                    old: Box::new(old),
                    new: Box::new(current.clone()),
                }])
            }
        }
    }

    /// Service names are unique.
    fn check_service_name(&self, svc: &rswarm_proto::model::Service) -> Result<(), CommandError> {
        let taken = self
            .services
            .values()
            .any(|other| other.id != svc.id && other.spec.name == svc.spec.name);
        if taken {
            return Err(CommandError::Exists {
                kind: "service".into(),
                id: svc.spec.name.clone(),
            });
        }
        Ok(())
    }

    pub fn is_removed(&self, id: &rswarm_proto::model::NodeId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.removed_nodes.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{Cluster, ClusterId, Node, NodeId, NodeState};

    fn node(id: &str) -> Node {
        Node {
            id: NodeId::from(id),
            ..Default::default()
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            id: ClusterId::from("c1"),
            ..Default::default()
        }
    }

    #[test]
    fn versions_follow_the_log_index() {
        let mut s = State::default();
        s.apply(3, &Command::CreateNode(Box::new(node("a"))))
            .unwrap();
        assert_eq!(s.nodes[&NodeId::from("a")].meta.version, 3);
        let mut n = s.nodes[&NodeId::from("a")].clone();
        n.spec.labels.insert("k".into(), "v".into());
        s.apply(5, &Command::UpdateNode(Box::new(n))).unwrap();
        assert_eq!(s.nodes[&NodeId::from("a")].meta.version, 5);
    }

    #[test]
    fn a_stale_update_is_refused_and_changes_nothing() {
        let mut s = State::default();
        s.apply(1, &Command::CreateNode(Box::new(node("a"))))
            .unwrap();
        let stale = s.nodes[&NodeId::from("a")].clone();
        let mut fresh = stale.clone();
        fresh.spec.labels.insert("zone".into(), "a".into());
        s.apply(2, &Command::UpdateNode(Box::new(fresh))).unwrap();
        let before = s.clone();
        let mut late = stale;
        late.spec.labels.insert("zone".into(), "b".into());
        let err = s
            .apply(3, &Command::UpdateNode(Box::new(late)))
            .unwrap_err();
        assert!(matches!(
            err,
            CommandError::StaleVersion {
                current: 2,
                given: 1,
                ..
            }
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let mut s = State::default();
        s.apply(1, &Command::CreateNode(Box::new(node("a"))))
            .unwrap();
        let before = s.clone();
        let batch = Command::Batch(vec![
            Command::CreateNode(Box::new(node("b"))),
            Command::CreateNode(Box::new(node("a"))),
        ]);
        assert!(s.apply(2, &batch).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn a_removed_node_cannot_come_back() {
        let mut s = State::default();
        s.apply(1, &Command::CreateCluster(Box::new(cluster())))
            .unwrap();
        s.apply(2, &Command::CreateNode(Box::new(node("a"))))
            .unwrap();
        s.apply(3, &Command::RemoveNode { id: "a".into() }).unwrap();
        assert!(s.is_removed(&NodeId::from("a")));
        let err = s
            .apply(4, &Command::CreateNode(Box::new(node("a"))))
            .unwrap_err();
        assert_eq!(err, CommandError::Removed("a".into()));
    }

    #[test]
    fn node_state_updates_need_no_version() {
        let mut s = State::default();
        s.apply(1, &Command::CreateNode(Box::new(node("a"))))
            .unwrap();
        s.apply(
            2,
            &Command::SetNodeState {
                id: "a".into(),
                state: NodeState::Ready,
                addr: Some("10.0.0.1".into()),
                message: String::new(),
            },
        )
        .unwrap();
        let n = &s.nodes[&NodeId::from("a")];
        assert_eq!(n.status.state, NodeState::Ready);
        assert_eq!(n.status.addr, "10.0.0.1");
        assert_eq!(n.meta.version, 2);
    }

    #[test]
    fn restore_replaces_everything_at_one_version() {
        let mut s = State::default();
        s.apply(1, &Command::CreateNode(Box::new(node("old"))))
            .unwrap();
        s.apply(
            9,
            &Command::Restore {
                cluster: Box::new(cluster()),
                nodes: vec![node("a"), node("b")],
                services: Vec::new(),
                tasks: Vec::new(),
                networks: Vec::new(),
                secrets: Vec::new(),
                configs: Vec::new(),
            },
        )
        .unwrap();
        assert!(!s.nodes.contains_key(&NodeId::from("old")));
        assert!(s.nodes.values().all(|n| n.meta.version == 9));
        assert_eq!(s.cluster.as_ref().map(|c| c.meta.version), Some(9));
    }

    #[test]
    fn find_node_by_id_prefix_and_hostname() {
        let mut s = State::default();
        let mut a = node("abc123");
        a.description.hostname = "h1".into();
        let mut b = node("abd456");
        b.description.hostname = "h2".into();
        s.apply(1, &Command::CreateNode(Box::new(a))).unwrap();
        s.apply(2, &Command::CreateNode(Box::new(b))).unwrap();
        assert_eq!(s.find_node("abc").unwrap().id.as_str(), "abc123");
        assert_eq!(s.find_node("h2").unwrap().id.as_str(), "abd456");
        assert!(matches!(
            s.find_node("ab"),
            Err(super::super::LookupError::Ambiguous(_))
        ));
        assert!(matches!(
            s.find_node("zz"),
            Err(super::super::LookupError::NotFound(_))
        ));
    }
}
