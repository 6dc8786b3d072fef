//! What the control API does for services and tasks.

use crate::allocator::Allocator;
use crate::control::ControlError;
use crate::control_networks::{catch_up, ALLOCATION_ATTEMPTS};
use crate::ids::{now_ms, random_id};
use crate::image_pin::{pin_image, RESOLVE_TIMEOUT};
use crate::manager::Manager;
use crate::proposer::{ProposeError, Proposer};
use crate::store::State;
use rswarm_proto::convert::{service_to_pb, task_to_pb};
use rswarm_proto::model::{
    Command, CommandError, Endpoint, Meta, NetworkId, PortConfig, Protocol, PublishMode, Service,
    ServiceId, ServiceMode, ServiceSpec, TaskState, HOST_NETWORK,
};
use rswarm_proto::pb;
use std::collections::BTreeSet;

fn spec_from_pb(spec: Option<pb::ServiceSpec>) -> Result<ServiceSpec, ControlError> {
    let spec =
        spec.ok_or_else(|| ControlError::InvalidArgument("a service spec is required".into()))?;
    let mut spec =
        ServiceSpec::try_from(spec).map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    host_network(&mut spec)?;
    // A malformed constraint is refused now, not discovered by the scheduler later.
    crate::scheduler::parse_constraints(&spec.task.placement.constraints)
        .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    crate::scheduler::parse_preferences(&spec.task.placement.preferences)
        .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    Ok(spec)
}

/// Docker's predefined `host` network named among the networks (as other clients than
/// ours send it) becomes `host_network`; no user network can be called `host`. A service
/// on the node's network joins no other (Docker's rule) and publishes nothing: its ports
/// are bound on the node itself.
fn host_network(spec: &mut ServiceSpec) -> Result<(), ControlError> {
    if let Some(i) = spec.networks.iter().position(|n| n.target == HOST_NETWORK) {
        if !spec.networks[i].aliases.is_empty() {
            return Err(ControlError::InvalidArgument(
                "the host network takes no aliases (they are for overlay networks)".into(),
            ));
        }
        spec.networks.remove(i);
        spec.task.host_network = true;
    }
    if !spec.task.host_network {
        return Ok(());
    }
    if !spec.networks.is_empty() {
        return Err(ControlError::InvalidArgument(
            "a service on the host network cannot join other networks".into(),
        ));
    }
    if !spec.ports.is_empty() {
        return Err(ControlError::InvalidArgument(
            "a service on the host network publishes no ports: it binds them on the node itself"
                .into(),
        ));
    }
    Ok(())
}

/// `spec` with its networks named by id, and the VIPs it should have (keeping those of
/// `current` on networks it stays on). A network that does not exist, or is named twice,
/// is refused.
fn attach_networks(
    s: &State,
    spec: &ServiceSpec,
    current: &Endpoint,
    me: Option<&ServiceId>,
) -> Result<(ServiceSpec, Endpoint), ControlError> {
    let mut spec = spec.clone();
    // Secrets and configs are named by id too.
    crate::control_secrets::resolve_file_refs(s, &mut spec)?;
    let mut seen = BTreeSet::new();
    for c in &mut spec.networks {
        let n = s.find_network(&c.target)?;
        if !seen.insert(n.id.clone()) {
            return Err(ControlError::InvalidArgument(format!(
                "network {} is attached more than once",
                n.spec.name
            )));
        }
        c.target = n.id.to_string();
    }
    let mut endpoint = Allocator::new(s)
        .allocate_endpoint(&spec, current)
        .map_err(|e| ControlError::FailedPrecondition(e.to_string()))?;
    endpoint.ports = publish_ports(s, &spec, current, me)?;
    Ok((spec, endpoint))
}

/// Swarm's range for published ports the managers choose.
const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The service's published ports with every number chosen: a port asked for must not be
/// published through the mesh by another service (a mesh port answers on every node); a
/// port left to the managers keeps the number it had, else takes the lowest free one of
/// 30000–32767. Host-mode ports are only checked for duplicates within the service (they
/// bind on the nodes that run a task, as Swarm's).
fn publish_ports(
    s: &State,
    spec: &ServiceSpec,
    current: &Endpoint,
    me: Option<&ServiceId>,
) -> Result<Vec<PortConfig>, ControlError> {
    let mut taken: std::collections::BTreeMap<(Protocol, u16), &str> = Default::default();
    for o in s.services.values().filter(|o| Some(&o.id) != me) {
        for p in o
            .endpoint
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress)
        {
            taken.insert((p.protocol, p.published), &o.spec.name);
        }
    }
    let mut mine: BTreeSet<(Protocol, u16, PublishMode)> = BTreeSet::new();
    let mut out = Vec::with_capacity(spec.ports.len());
    for p in &spec.ports {
        let mut p = *p;
        if p.published == 0 {
            let kept = current
                .ports
                .iter()
                .find(|c| c.target == p.target && c.protocol == p.protocol && c.mode == p.mode);
            let free = |n: &u16| {
                !taken.contains_key(&(p.protocol, *n)) && !mine.contains(&(p.protocol, *n, p.mode))
            };
            p.published = match kept.map(|c| c.published).filter(free) {
                Some(n) => n,
                None => DYNAMIC_PORTS.clone().find(free).ok_or_else(|| {
                    ControlError::FailedPrecondition(
                        "no free port left in 30000-32767 to publish".into(),
                    )
                })?,
            };
        }
        if p.mode == PublishMode::Ingress {
            if let Some(by) = taken.get(&(p.protocol, p.published)) {
                return Err(ControlError::FailedPrecondition(format!(
                    "port {}/{} is already published by service {by}",
                    p.published,
                    p.protocol.as_str()
                )));
            }
        }
        if !mine.insert((p.protocol, p.published, p.mode)) {
            return Err(ControlError::InvalidArgument(format!(
                "port {}/{} is published twice",
                p.published,
                p.protocol.as_str()
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// Whether a refused write lost a race with another allocation (or a network going), so
/// that allocating again from a fresh view may succeed or say what is wrong.
fn retry_allocation(e: &ProposeError) -> bool {
    matches!(
        e,
        ProposeError::Refused(CommandError::Conflict(_))
            | ProposeError::Refused(CommandError::NotFound { .. })
    )
}

/// The name of a network, for the API's views ("" once it is gone).
fn network_name(s: &State, id: &str) -> String {
    s.networks
        .get(&NetworkId(id.to_owned()))
        .map(|n| n.spec.name.clone())
        .unwrap_or_default()
}

/// The API's view of a service, with its replica counts and the names of its networks.
fn service_view(m: &Manager, svc: &Service) -> pb::Service {
    let mut out = service_to_pb(svc);
    m.store.view(|s| {
        if let Some(e) = out.endpoint.as_mut() {
            for v in &mut e.virtual_ips {
                v.network_name = network_name(s, &v.network_id);
            }
        }
        // Live tasks: a restart's replacement waiting out its delay (desired `Ready`) is
        // still one of the global service's desired tasks, though not running.
        let live: Vec<_> = s
            .tasks_of(&svc.id)
            .filter(|t| t.desired_state <= TaskState::Running)
            .collect();
        out.replicas_running = live
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .count() as u64;
        out.replicas_desired = match svc.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global => live.len() as u64,
        };
    });
    out
}

/// Pins `spec`'s image to its digest when `query` asks for it and this manager has a
/// resolver (see [`crate::image_pin`]); returns the warnings for the user. `current` is the
/// image of the service being updated.
async fn pin_spec_image(
    m: &Manager,
    spec: &mut ServiceSpec,
    query: bool,
    current: Option<&str>,
) -> Vec<String> {
    let Some(resolver) = m.image_resolver.as_deref().filter(|_| query) else {
        return Vec::new();
    };
    let pinned = pin_image(
        resolver,
        &spec.task.container.image,
        current,
        RESOLVE_TIMEOUT,
    )
    .await;
    spec.task.container.image = pinned.image;
    pinned.warning.into_iter().collect()
}

pub async fn create_service(
    m: &Manager,
    req: pb::CreateServiceRequest,
) -> Result<pb::CreateServiceResponse, ControlError> {
    let mut asked = spec_from_pb(req.spec)?;
    if asked.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
        crate::control_networks::ensure_ingress(m).await?;
    }
    // A request that will be refused is refused before the registry is asked; the check
    // is repeated for real below, since the registry may take seconds to answer.
    m.store.view(|s| {
        if s.services.values().any(|o| o.spec.name == asked.name) {
            return Err(service_name_taken(&asked.name));
        }
        attach_networks(s, &asked, &Endpoint::default(), None).map(drop)
    })?;
    // Outside any store view: this may wait on the registry.
    let warnings = pin_spec_image(m, &mut asked, req.query_registry, None).await;
    let now = now_ms();
    let id = ServiceId(random_id());
    for attempt in 1..=ALLOCATION_ATTEMPTS {
        let svc = m.store.view(|s| {
            if s.services.values().any(|o| o.spec.name == asked.name) {
                return Err(service_name_taken(&asked.name));
            }
            let (spec, endpoint) = attach_networks(s, &asked, &Endpoint::default(), None)?;
            Ok(Service {
                id: id.clone(),
                meta: Meta {
                    version: 0,
                    created_at: now,
                    updated_at: now,
                },
                spec,
                spec_version: 1,
                endpoint,
                previous_spec: None,
                update_status: Default::default(),
            })
        })?;
        match m
            .proposer
            .propose(Command::CreateService(Box::new(svc.clone())))
            .await
        {
            Ok(_) => {
                let stored = m
                    .store
                    .view(|s| s.services.get(&svc.id).cloned())
                    .unwrap_or(svc);
                return Ok(pb::CreateServiceResponse {
                    service: Some(service_view(m, &stored)),
                    warnings,
                });
            }
            Err(ProposeError::Refused(CommandError::Exists { .. })) => {
                return Err(service_name_taken(&asked.name))
            }
            Err(e) if retry_allocation(&e) && attempt < ALLOCATION_ATTEMPTS => {
                tracing::debug!(service.name = %asked.name, "allocation lost a race ({e}); allocating again");
                catch_up(m).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::FailedPrecondition(format!(
        "service {}: its VIPs kept colliding with concurrent changes; try again",
        asked.name
    )))
}

fn service_name_taken(name: &str) -> ControlError {
    ControlError::FailedPrecondition(format!("a service named {name} already exists"))
}

pub fn list_services(m: &Manager) -> Vec<pb::Service> {
    let services: Vec<Service> = m.store.view(|s| s.services.values().cloned().collect());
    services.iter().map(|svc| service_view(m, svc)).collect()
}

/// Replaces a service's spec. Its tasks follow when the task part changed.
pub async fn update_service(
    m: &Manager,
    req: pb::UpdateServiceRequest,
) -> Result<pb::UpdateServiceResponse, ControlError> {
    let mut asked = spec_from_pb(req.spec)?;
    if asked.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
        crate::control_networks::ensure_ingress(m).await?;
    }
    let warnings = if req.query_registry {
        // As in create: a request that will be refused is refused before the registry is
        // asked.
        let current = m.store.view(|s| {
            let c = s.find_service(&req.service)?;
            attach_networks(s, &asked, &c.endpoint, Some(&c.id))?;
            Ok::<_, ControlError>(c.spec.task.container.image.clone())
        })?;
        pin_spec_image(m, &mut asked, true, Some(&current)).await
    } else {
        Vec::new()
    };
    let respond = |svc: &Service, warnings: Vec<String>| pb::UpdateServiceResponse {
        service: Some(service_view(m, svc)),
        warnings,
    };
    for attempt in 0..5 {
        let (current, (spec, endpoint)) = m.store.view(|s| {
            let current = s.find_service(&req.service)?.clone();
            let attached = attach_networks(s, &asked, &current.endpoint, Some(&current.id))?;
            Ok::<_, ControlError>((current, attached))
        })?;
        if req.version != 0 && req.version != current.meta.version {
            return Err(ProposeError::Refused(CommandError::StaleVersion {
                kind: "service".into(),
                id: current.id.to_string(),
                current: current.meta.version,
                given: req.version,
            })
            .into());
        }
        if matches!(current.spec.mode, ServiceMode::Global)
            != matches!(spec.mode, ServiceMode::Global)
        {
            return Err(ControlError::InvalidArgument(
                "a service's mode cannot change".into(),
            ));
        }
        // `stack deploy` asks for its images to be resolved again on every deploy: when the
        // digest is the one stored and nothing else changed, the service is left untouched
        // (same version, no rolling update).
        if req.query_registry && spec == current.spec && endpoint == current.endpoint {
            return Ok(respond(&current, warnings));
        }
        let mut next = current.clone();
        if next.spec.task != spec.task
            || next.spec.networks != spec.networks
            || next.spec.ports != spec.ports
        {
            next.spec_version += 1;
            // A rolling update starts; `service rollback` goes back to this spec.
            next.update_status = rswarm_proto::model::UpdateStatus {
                state: rswarm_proto::model::UpdateState::Updating,
                message: "update in progress".into(),
            };
        }
        if next.spec != spec {
            next.previous_spec = Some(Box::new(next.spec.clone()));
        }
        next.spec = spec;
        next.endpoint = endpoint;
        next.meta.updated_at = now_ms();
        match m
            .proposer
            .propose(Command::UpdateService(Box::new(next)))
            .await
        {
            Ok(_) => {
                let svc = m
                    .store
                    .view(|s| s.services.get(&current.id).cloned())
                    .unwrap_or(current);
                return Ok(respond(&svc, warnings));
            }
            Err(ProposeError::Refused(CommandError::StaleVersion { .. }))
                if req.version == 0 && attempt < 4 =>
            {
                continue
            }
            Err(e) if retry_allocation(&e) && attempt < 4 => {
                catch_up(m).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::FailedPrecondition(format!(
        "service {} kept changing; try again",
        req.service
    )))
}

pub async fn remove_service(m: &Manager, key: &str) -> Result<(), ControlError> {
    let svc = m.store.view(|s| s.find_service(key).cloned())?;
    m.proposer
        .propose(Command::RemoveService { id: svc.id })
        .await?;
    Ok(())
}

pub fn list_tasks(m: &Manager, req: &pb::ListTasksRequest) -> Result<Vec<pb::Task>, ControlError> {
    let mut desired = Vec::new();
    for d in &req.desired_state {
        desired.push(TaskState::parse(d).ok_or_else(|| {
            ControlError::InvalidArgument(format!(
                "invalid desired-state {d:?}: expected running, shutdown or accepted"
            ))
        })?);
    }
    m.store.view(|s| {
        let service = if req.service.is_empty() {
            None
        } else {
            Some(s.find_service(&req.service)?.id.clone())
        };
        let node = if req.node.is_empty() {
            None
        } else {
            Some(s.find_node(&req.node)?.id.clone())
        };
        Ok(s.tasks
            .values()
            .filter(|t| service.as_ref().is_none_or(|id| &t.service_id == id))
            .filter(|t| node.is_none() || t.node_id == node)
            .filter(|t| desired.is_empty() || desired.contains(&t.desired_state))
            .map(|t| {
                let host = t
                    .node_id
                    .as_ref()
                    .and_then(|n| s.nodes.get(n))
                    .map(|n| n.description.hostname.as_str())
                    .unwrap_or("");
                let mut out = task_to_pb(t, host);
                for a in &mut out.networks {
                    a.network_name = network_name(s, &a.network_id);
                }
                out
            })
            .collect())
    })
}

/// The stream of a service's logs.
pub type LogStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LogMessage, tonic::Status>> + Send>>;

/// Gathers the logs of a service's tasks from the nodes that ran them. Without `follow`,
/// the lines of all nodes come in time order; with it, new lines as they arrive. A node
/// that cannot be reached is skipped (and logged).
pub async fn service_logs(
    m: &Manager,
    req: pb::ServiceLogsRequest,
) -> Result<LogStream, ControlError> {
    use futures::StreamExt;
    use std::collections::BTreeMap;
    struct Target {
        addr: String,
        hostname: String,
        tasks: BTreeMap<String, String>,
    }
    let targets: BTreeMap<String, Target> = m.store.view(|s| {
        let svc = s.find_service(&req.service)?;
        let mut out: BTreeMap<String, Target> = BTreeMap::new();
        for t in s.tasks_of(&svc.id) {
            let Some(node_id) = &t.node_id else { continue };
            let Some(node) = s.nodes.get(node_id) else {
                continue;
            };
            out.entry(node_id.to_string())
                .or_insert_with(|| Target {
                    addr: node.cluster_addr.clone(),
                    hostname: node.description.hostname.clone(),
                    tasks: BTreeMap::new(),
                })
                .tasks
                .insert(t.id.to_string(), rswarm_proto::model::naming::task_name(t));
        }
        Ok::<_, crate::store::LookupError>(out)
    })?;
    let mut streams = Vec::new();
    for (node_id, target) in targets {
        let channel = match m.connector.node_channel(&target.addr, &node_id) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(node.id = %node_id, "logs: {e}");
                continue;
            }
        };
        let mut client = pb::node_agent_client::NodeAgentClient::new(channel)
            .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES);
        let request = pb::TaskLogsRequest {
            task_ids: target.tasks.keys().cloned().collect(),
            tail: req.tail,
            follow: req.follow,
        };
        match client.task_logs(request).await {
            Ok(resp) => {
                let (names, host, nid) = (target.tasks, target.hostname, node_id.clone());
                streams.push(
                    resp.into_inner()
                        .map(move |r| {
                            r.map(|mut l| {
                                l.task_name = names.get(&l.task_id).cloned().unwrap_or_default();
                                l.node_id.clone_from(&nid);
                                l.node_hostname.clone_from(&host);
                                l
                            })
                        })
                        .boxed(),
                );
            }
            Err(s) => tracing::warn!(node.id = %node_id, "logs: {}", s.message()),
        }
    }
    if req.follow {
        return Ok(futures::stream::select_all(streams).boxed());
    }
    // Everything at once, in time order across nodes (RFC 3339 UTC sorts as text).
    let mut all = Vec::new();
    for s in streams {
        let lines: Vec<Result<pb::LogMessage, tonic::Status>> = s.collect().await;
        all.extend(lines.into_iter().filter_map(Result::ok));
    }
    all.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    Ok(futures::stream::iter(all.into_iter().map(Ok)).boxed())
}

/// Runs a command in a running task's container on its node. `task` is a task id (or
/// prefix), a task name (`web.1`), or a service name (then any running task of it).
pub async fn exec(m: &Manager, req: pb::ExecRequest) -> Result<pb::ExecResponse, tonic::Status> {
    let (task_id, node_id, addr) = m
        .store
        .view(|s| {
            let running = |t: &&rswarm_proto::model::Task| {
                t.status.state == TaskState::Running && t.desired_state == TaskState::Running
            };
            let task = match s.find_task(&req.task) {
                Ok(t) => t.clone(),
                Err(e) => {
                    let svc = s.find_service(&req.task).map_err(|_| e)?;
                    s.tasks_of(&svc.id)
                        .filter(running)
                        .min_by_key(|t| t.slot)
                        .cloned()
                        .ok_or_else(|| {
                            crate::store::LookupError::TaskNotFound(format!(
                                "running task of {}",
                                req.task
                            ))
                        })?
                }
            };
            let node = task.node_id.clone().and_then(|n| s.nodes.get(&n).cloned());
            Ok::<_, crate::store::LookupError>((task, node))
        })
        .map_err(|e| tonic::Status::from(ControlError::from(e)))
        .and_then(|(task, node)| {
            if task.status.state != TaskState::Running {
                return Err(tonic::Status::failed_precondition(format!(
                    "task {} is not running ({})",
                    rswarm_proto::model::naming::task_name(&task),
                    task.status.state.as_str()
                )));
            }
            let node = node.ok_or_else(|| {
                tonic::Status::failed_precondition("the task's node is not in the cluster")
            })?;
            Ok((task.id, node.id, node.cluster_addr))
        })?;
    let channel = m
        .connector
        .node_channel(&addr, node_id.as_str())
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = pb::node_agent_client::NodeAgentClient::new(channel)
        .max_decoding_message_size(rswarm_proto::MAX_MESSAGE_BYTES);
    let resp = client
        .exec(pb::ExecRequest {
            task: task_id.to_string(),
            cmd: req.cmd,
            timeout_ms: req.timeout_ms,
        })
        .await?;
    Ok(resp.into_inner())
}

/// `service rollback`: back to the spec before the last update.
pub async fn rollback_service(m: &Manager, key: &str) -> Result<pb::Service, ControlError> {
    let svc = m.store.view(|s| s.find_service(key).cloned())?;
    if svc.previous_spec.is_none() {
        return Err(ControlError::FailedPrecondition(format!(
            "service {} has no previous spec to roll back to",
            svc.spec.name
        )));
    }
    m.proposer
        .propose(Command::RollbackService {
            id: svc.id.clone(),
            message: "manually requested rollback".into(),
        })
        .await?;
    let svc = m
        .store
        .view(|s| s.services.get(&svc.id).cloned())
        .unwrap_or(svc);
    Ok(service_view(m, &svc))
}

#[cfg(test)]
mod port_tests {
    use super::*;
    use crate::allocator::tests::{apply, service_spec};

    fn port(published: u16, target: u16, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: Protocol::Tcp,
            target,
            published,
            mode,
        }
    }

    fn with_ports(s: &mut State, name: &str, ports: Vec<PortConfig>) -> Service {
        let mut spec = service_spec(name, &[], EndpointMode::Vip);
        spec.ports = ports;
        let endpoint = Endpoint {
            ports: publish_ports(s, &spec, &Endpoint::default(), None).expect("free"),
            ..Default::default()
        };
        let svc = Service {
            id: ServiceId(name.into()),
            spec,
            endpoint,
            ..Default::default()
        };
        apply(s, Command::CreateService(Box::new(svc.clone()))).expect("create");
        svc
    }

    use rswarm_proto::model::EndpointMode;

    #[test]
    fn mesh_ports_are_unique_in_the_cluster_and_chosen_from_30000() {
        let mut s = State::default();
        let a = with_ports(
            &mut s,
            "a",
            vec![
                port(8080, 80, PublishMode::Ingress),
                port(0, 81, PublishMode::Ingress),
            ],
        );
        assert_eq!(a.endpoint.ports[1].published, 30000);
        let mut spec = service_spec("b", &[], EndpointMode::Vip);
        spec.ports = vec![port(8080, 80, PublishMode::Ingress)];
        let err = publish_ports(&s, &spec, &Endpoint::default(), None).expect_err("taken");
        assert!(
            err.to_string().contains("already published by service a"),
            "{err}"
        );
        // Host-mode ports bind per node: not a cluster-wide conflict.
        spec.ports = vec![
            port(8080, 80, PublishMode::Host),
            port(0, 90, PublishMode::Ingress),
        ];
        let got = publish_ports(&s, &spec, &Endpoint::default(), None).expect("free");
        assert_eq!(got[1].published, 30001, "30000 is a's");
        // A service keeps its own ports when updated.
        let again = publish_ports(&s, &a.spec, &a.endpoint, Some(&a.id)).expect("its own");
        assert_eq!(again, a.endpoint.ports);
        spec.ports = vec![
            port(9000, 80, PublishMode::Ingress),
            port(9000, 81, PublishMode::Ingress),
        ];
        let err = publish_ports(&s, &spec, &Endpoint::default(), None).expect_err("twice");
        assert!(err.to_string().contains("published twice"), "{err}");
    }
}

#[cfg(test)]
mod host_network_tests {
    use super::*;
    use rswarm_proto::model::NetworkAttachmentConfig;

    fn spec(f: impl FnOnce(&mut ServiceSpec)) -> Result<ServiceSpec, ControlError> {
        let mut s = ServiceSpec {
            name: "agent".into(),
            ..Default::default()
        };
        s.task.container.image = "busybox".into();
        f(&mut s);
        spec_from_pb(Some(pb::ServiceSpec::from(&s)))
    }

    fn net(target: &str) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn host_network_is_exclusive_whatever_the_client_sends() {
        let s = spec(|s| s.task.host_network = true).expect("host");
        assert!(s.task.host_network && s.networks.is_empty());
        // Another client naming Docker's `host` network gets the same.
        let s = spec(|s| s.networks = vec![net("host")]).expect("named host");
        assert!(s.task.host_network && s.networks.is_empty());
        let refused = [
            spec(|s| {
                s.task.host_network = true;
                s.networks = vec![net("appnet")];
            }),
            spec(|s| s.networks = vec![net("host"), net("appnet")]),
            spec(|s| {
                s.task.host_network = true;
                s.ports = vec![PortConfig {
                    target: 80,
                    published: 8080,
                    ..Default::default()
                }];
            }),
            spec(|s| {
                s.networks = vec![net("host")];
                s.ports = vec![PortConfig {
                    target: 80,
                    published: 8080,
                    mode: PublishMode::Host,
                    ..Default::default()
                }];
            }),
            spec(|s| {
                s.networks = vec![NetworkAttachmentConfig {
                    target: "host".into(),
                    aliases: vec!["www".into()],
                }]
            }),
        ];
        for r in refused {
            match r {
                Err(ControlError::InvalidArgument(m)) => {
                    assert!(m.contains("host network") && !m.contains('\n'), "{m}")
                }
                other => panic!("not refused: {other:?}"),
            }
        }
    }
}
