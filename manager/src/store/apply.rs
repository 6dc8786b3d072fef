//! Applying commands: pure, deterministic, all-or-nothing.
use super::networks::release_if_done;
use super::{Event, State};
use rswarm_proto::model::{Command, CommandError};

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
                self.nodes = nodes
                    .iter()
                    .map(|n| {
                        let mut n = n.clone();
                        n.meta.version = index;
                        (n.id.clone(), n)
                    })
                    .collect();
                self.services = services
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        x.meta.version = index;
                        (x.id.clone(), x)
                    })
                    .collect();
                self.tasks = tasks
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        x.meta.version = index;
                        (x.id.clone(), x)
                    })
                    .collect();
                self.networks = networks
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        x.meta.version = index;
                        (x.id.clone(), x)
                    })
                    .collect();
                self.secrets = secrets
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        x.meta.version = index;
                        (x.id.clone(), x)
                    })
                    .collect();
                self.configs = configs
                    .iter()
                    .map(|x| {
                        let mut x = x.clone();
                        x.meta.version = index;
                        (x.id.clone(), x)
                    })
                    .collect();
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
                if self.nodes.contains_key(&n.id) {
                    return Err(CommandError::Exists {
                        kind: "node".into(),
                        id: n.id.to_string(),
                    });
                }
                if self.is_removed(&n.id) {
                    return Err(CommandError::Removed(n.id.to_string()));
                }
                let mut n = (**n).clone();
                n.meta.version = index;
                self.nodes.insert(n.id.clone(), n.clone());
                Ok(vec![Event::NodeCreated(Box::new(n))])
            }
            Command::UpdateNode(n) => {
                let current = self
                    .nodes
                    .get(&n.id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "node".into(),
                        id: n.id.to_string(),
                    })?;
                check_version("node", n.id.as_str(), current.meta.version, n.meta.version)?;
                let old = current.clone();
                let mut n = (**n).clone();
                n.meta.version = index;
                n.meta.created_at = old.meta.created_at;
                self.nodes.insert(n.id.clone(), n.clone());
                Ok(vec![Event::NodeUpdated {
                    old: Box::new(old),
                    new: Box::new(n),
                }])
            }
            Command::RemoveNode { id } => {
                let old = self
                    .nodes
                    .remove(id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "node".into(),
                        id: id.to_string(),
                    })?;
                let mut events = vec![Event::NodeRemoved(Box::new(old))];
                if let Some(c) = self.cluster.as_mut() {
                    c.removed_nodes.insert(id.clone());
                    c.meta.version = index;
                    events.push(Event::ClusterUpdated(Box::new(c.clone())));
                }
                Ok(events)
            }
            Command::CreateService(svc) => {
                if self.services.contains_key(&svc.id) {
                    return Err(CommandError::Exists {
                        kind: "service".into(),
                        id: svc.id.to_string(),
                    });
                }
                self.check_service_name(svc)?;
                self.check_service_networks(svc)?;
                self.check_service_ports(svc)?;
                let mut svc = (**svc).clone();
                svc.meta.version = index;
                self.services.insert(svc.id.clone(), svc.clone());
                Ok(vec![Event::ServiceCreated(Box::new(svc))])
            }
            Command::UpdateService(svc) => {
                let current = self
                    .services
                    .get(&svc.id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "service".into(),
                        id: svc.id.to_string(),
                    })?;
                check_version(
                    "service",
                    svc.id.as_str(),
                    current.meta.version,
                    svc.meta.version,
                )?;
                self.check_service_name(svc)?;
                self.check_service_networks(svc)?;
                self.check_service_ports(svc)?;
                let old = current.clone();
                let mut svc = (**svc).clone();
                svc.meta.version = index;
                svc.meta.created_at = old.meta.created_at;
                self.services.insert(svc.id.clone(), svc.clone());
                Ok(vec![Event::ServiceUpdated {
                    old: Box::new(old),
                    new: Box::new(svc),
                }])
            }
            Command::RemoveService { id } => {
                let old = self
                    .services
                    .remove(id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "service".into(),
                        id: id.to_string(),
                    })?;
                Ok(vec![Event::ServiceRemoved(Box::new(old))])
            }
            Command::CreateTask(t) => {
                if self.tasks.contains_key(&t.id) {
                    return Err(CommandError::Exists {
                        kind: "task".into(),
                        id: t.id.to_string(),
                    });
                }
                self.check_task_addresses(t, None)?;
                let mut t = (**t).clone();
                t.meta.version = index;
                release_if_done(&mut t);
                self.tasks.insert(t.id.clone(), t.clone());
                Ok(vec![Event::TaskCreated(Box::new(t))])
            }
            Command::UpdateTask(t) => {
                let current = self
                    .tasks
                    .get(&t.id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "task".into(),
                        id: t.id.to_string(),
                    })?;
                check_version("task", t.id.as_str(), current.meta.version, t.meta.version)?;
                self.check_task_addresses(t, Some(current))?;
                let old = current.clone();
                let mut t = (**t).clone();
                t.meta.version = index;
                t.meta.created_at = old.meta.created_at;
                release_if_done(&mut t);
                self.tasks.insert(t.id.clone(), t.clone());
                Ok(vec![Event::TaskUpdated {
                    old: Box::new(old),
                    new: Box::new(t),
                }])
            }
            Command::RemoveTask { id } => {
                let old = self
                    .tasks
                    .remove(id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "task".into(),
                        id: id.to_string(),
                    })?;
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
                let mut n = (**n).clone();
                n.meta.version = index;
                self.networks.insert(n.id.clone(), n.clone());
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
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "network".into(),
                        id: network.to_string(),
                    })?;
                if let Some(addr) = addr {
                    if !self.nodes.contains_key(node) {
                        return Err(CommandError::NotFound {
                            kind: "node".into(),
                            id: node.to_string(),
                        });
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
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "network".into(),
                        id: id.to_string(),
                    })?;
                if let Some(by) = self.network_user(id) {
                    return Err(CommandError::InUse {
                        kind: "network".into(),
                        id: current.spec.name.clone(),
                        by,
                    });
                }
                let old = self
                    .networks
                    .remove(id)
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "network".into(),
                        id: id.to_string(),
                    })?;
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
                    .ok_or_else(|| CommandError::NotFound {
                        kind: "node".into(),
                        id: id.to_string(),
                    })?;
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

fn check_version(kind: &str, id: &str, current: u64, given: u64) -> Result<(), CommandError> {
    if current == given {
        Ok(())
    } else {
        Err(CommandError::StaleVersion {
            kind: kind.into(),
            id: id.into(),
            current,
            given,
        })
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
