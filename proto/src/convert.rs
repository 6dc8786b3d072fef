//! Conversions between wire messages (`pb`) and domain types (`model`). Wire to domain is
//! `TryFrom`: this is where a malformed request becomes one clear error.

use crate::model::{
    container_opts, ContainerSpec, DeviceMapping, EndpointMode, HealthCheck, IpamConfig, Ipv4Cidr,
    Meta, Mount, MountType, Network, NetworkAttachment, NetworkAttachmentConfig, NetworkDriver,
    NetworkSpec, Placement, PortConfig, Protocol, PublishMode, ResourceRequirements, Resources,
    RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, SpreadOver, Task, TaskSpec,
    TaskState, TaskStatus, Ulimit, UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState,
    PREDEFINED_NETWORKS,
};
use crate::pb;
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} is required")]
    Missing(&'static str),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn meta_to_pb(m: &Meta) -> pb::Meta {
    pb::Meta {
        version: m.version,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

impl From<&Mount> for pb::Mount {
    fn from(m: &Mount) -> Self {
        pb::Mount {
            r#type: match m.kind {
                MountType::Bind => "bind",
                MountType::Volume => "volume",
                MountType::Tmpfs => "tmpfs",
            }
            .into(),
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            tmpfs_size: m.tmpfs_size,
        }
    }
}

impl TryFrom<pb::Mount> for Mount {
    type Error = ConvertError;
    fn try_from(m: pb::Mount) -> Result<Self, ConvertError> {
        let kind = match m.r#type.as_str() {
            "bind" => MountType::Bind,
            "volume" | "" => MountType::Volume,
            "tmpfs" => MountType::Tmpfs,
            other => {
                return Err(invalid(
                    "mount type",
                    format!("{other:?}: expected bind, volume or tmpfs"),
                ))
            }
        };
        if !m.target.starts_with('/') {
            return Err(invalid(
                "mount target",
                format!("{:?}: must be an absolute path", m.target),
            ));
        }
        match kind {
            MountType::Bind if !m.source.starts_with('/') => {
                return Err(invalid(
                    "mount source",
                    format!("{:?}: a bind mount needs an absolute host path", m.source),
                ))
            }
            MountType::Volume if m.source.is_empty() || m.source.contains('/') => {
                return Err(invalid(
                    "mount source",
                    format!("{:?}: a volume mount needs a volume name", m.source),
                ))
            }
            _ => {}
        }
        Ok(Mount {
            kind,
            source: m.source,
            target: m.target,
            read_only: m.read_only,
            tmpfs_size: m.tmpfs_size,
        })
    }
}

impl From<&HealthCheck> for pb::HealthCheck {
    fn from(h: &HealthCheck) -> Self {
        pb::HealthCheck {
            test: h.test.clone(),
            interval_ms: ms(h.interval),
            timeout_ms: ms(h.timeout),
            start_period_ms: ms(h.start_period),
            retries: h.retries,
        }
    }
}

impl From<pb::HealthCheck> for HealthCheck {
    fn from(h: pb::HealthCheck) -> Self {
        let d = HealthCheck::default();
        let or = |v: u64, dflt: Duration| {
            if v == 0 {
                dflt
            } else {
                Duration::from_millis(v)
            }
        };
        HealthCheck {
            test: h.test,
            interval: or(h.interval_ms, d.interval),
            timeout: or(h.timeout_ms, d.timeout),
            start_period: Duration::from_millis(h.start_period_ms),
            retries: if h.retries == 0 { d.retries } else { h.retries },
        }
    }
}

impl From<&ContainerSpec> for pb::ContainerSpec {
    fn from(c: &ContainerSpec) -> Self {
        pb::ContainerSpec {
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c.env.clone(),
            dir: c.dir.clone(),
            user: c.user.clone(),
            hostname: c.hostname.clone(),
            labels: c.labels.clone().into_iter().collect(),
            mounts: c.mounts.iter().map(pb::Mount::from).collect(),
            stop_signal: c.stop_signal.clone(),
            stop_grace_period_ms: c.stop_grace_period.map(ms),
            healthcheck: c.healthcheck.as_ref().map(pb::HealthCheck::from),
            secrets: c
                .secrets
                .iter()
                .map(crate::convert_secrets::file_ref_to_pb)
                .collect(),
            configs: c
                .configs
                .iter()
                .map(crate::convert_secrets::file_ref_to_pb)
                .collect(),
            capability_add: c.capability_add.clone(),
            capability_drop: c.capability_drop.clone(),
            read_only: c.read_only,
            init: c.init,
            sysctls: c.sysctls.clone().into_iter().collect(),
            ulimits: c
                .ulimits
                .iter()
                .map(|u| pb::Ulimit {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            devices: c
                .devices
                .iter()
                .map(|d| pb::DeviceMapping {
                    path_on_host: d.path_on_host.clone(),
                    path_in_container: d.path_in_container.clone(),
                    permissions: d.permissions.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::ContainerSpec> for ContainerSpec {
    type Error = ConvertError;
    fn try_from(c: pb::ContainerSpec) -> Result<Self, ConvertError> {
        if c.image.trim().is_empty() {
            return Err(ConvertError::Missing("an image"));
        }
        if c.image
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_ascii_uppercase())
        {
            return Err(invalid(
                "image",
                format!("{:?}: invalid reference format", c.image),
            ));
        }
        for e in &c.env {
            if e.starts_with('=') || e.is_empty() {
                return Err(invalid("env", format!("{e:?}: expected KEY=VALUE")));
            }
        }
        // Checked here so that any client's bad value is refused at create time, as
        // Docker's daemon validates them; capabilities are stored normalised.
        let (capability_add, capability_drop) =
            container_opts::effective_cap_add_drop(&c.capability_add, &c.capability_drop)
                .map_err(|e| invalid("capabilities", e))?;
        let mut sysctls = std::collections::BTreeMap::new();
        for (k, v) in c.sysctls {
            container_opts::validate_sysctl(&k).map_err(|e| invalid("sysctls", e))?;
            sysctls.insert(k, v);
        }
        let mut ulimits: Vec<Ulimit> = Vec::new();
        for u in c.ulimits {
            let u = Ulimit::new(&u.name, u.soft, u.hard).map_err(|e| invalid("ulimits", e))?;
            if ulimits.iter().any(|o| o.name == u.name) {
                return Err(invalid("ulimits", format!("{} is set twice", u.name)));
            }
            ulimits.push(u);
        }
        let devices = c
            .devices
            .into_iter()
            .map(|d| {
                let perms = if d.permissions.is_empty() {
                    "rwm"
                } else {
                    d.permissions.as_str()
                };
                let ctr = if d.path_in_container.is_empty() {
                    d.path_on_host.as_str()
                } else {
                    d.path_in_container.as_str()
                };
                DeviceMapping::new(&d.path_on_host, ctr, perms).map_err(|e| invalid("devices", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ContainerSpec {
            capability_add,
            capability_drop,
            read_only: c.read_only,
            init: c.init,
            sysctls,
            ulimits,
            devices,
            image: c.image,
            command: c.command,
            args: c.args,
            env: c.env,
            dir: c.dir,
            user: c.user,
            hostname: c.hostname,
            labels: c.labels.into_iter().collect(),
            mounts: c
                .mounts
                .into_iter()
                .map(Mount::try_from)
                .collect::<Result<_, _>>()?,
            stop_signal: c.stop_signal,
            stop_grace_period: c.stop_grace_period_ms.map(Duration::from_millis),
            healthcheck: c.healthcheck.map(HealthCheck::from),
            secrets: c
                .secrets
                .into_iter()
                .map(crate::convert_secrets::file_ref_from_pb)
                .collect(),
            configs: c
                .configs
                .into_iter()
                .map(crate::convert_secrets::file_ref_from_pb)
                .collect(),
        })
    }
}

fn resources_to_pb(r: &Resources) -> pb::Resources {
    pb::Resources {
        nano_cpus: r.nano_cpus,
        memory_bytes: r.memory_bytes,
    }
}

fn resources_from_pb(r: Option<pb::Resources>) -> Resources {
    let r = r.unwrap_or_default();
    Resources {
        nano_cpus: r.nano_cpus,
        memory_bytes: r.memory_bytes,
    }
}

impl From<&TaskSpec> for pb::TaskSpec {
    fn from(t: &TaskSpec) -> Self {
        pb::TaskSpec {
            container: Some(pb::ContainerSpec::from(&t.container)),
            resources: Some(pb::ResourceRequirements {
                limits: Some(resources_to_pb(&t.resources.limits)),
                reservations: Some(resources_to_pb(&t.resources.reservations)),
            }),
            restart: Some(pb::RestartPolicy {
                condition: match t.restart.condition {
                    RestartCondition::None => "none",
                    RestartCondition::OnFailure => "on-failure",
                    RestartCondition::Any => "any",
                }
                .into(),
                delay_ms: ms(t.restart.delay),
                max_attempts: t.restart.max_attempts,
                window_ms: ms(t.restart.window),
            }),
            placement: Some(pb::Placement {
                constraints: t.placement.constraints.clone(),
                spread: t
                    .placement
                    .preferences
                    .iter()
                    .map(|p| p.descriptor.clone())
                    .collect(),
                max_replicas_per_node: t.placement.max_replicas_per_node,
            }),
            force_update: t.force_update,
            host_network: t.host_network,
        }
    }
}

impl TryFrom<pb::TaskSpec> for TaskSpec {
    type Error = ConvertError;
    fn try_from(t: pb::TaskSpec) -> Result<Self, ConvertError> {
        let container = ContainerSpec::try_from(
            t.container
                .ok_or(ConvertError::Missing("a container spec"))?,
        )?;
        let res = t.resources.unwrap_or_default();
        let restart = match t.restart {
            None => RestartPolicy::default(),
            Some(r) => RestartPolicy {
                condition: match r.condition.as_str() {
                    "" | "any" => RestartCondition::Any,
                    "none" => RestartCondition::None,
                    "on-failure" => RestartCondition::OnFailure,
                    other => {
                        return Err(invalid(
                            "restart condition",
                            format!("{other:?}: expected none, on-failure or any"),
                        ))
                    }
                },
                delay: Duration::from_millis(r.delay_ms),
                max_attempts: r.max_attempts,
                window: Duration::from_millis(r.window_ms),
            },
        };
        let placement = t.placement.unwrap_or_default();
        Ok(TaskSpec {
            container,
            resources: ResourceRequirements {
                limits: resources_from_pb(res.limits),
                reservations: resources_from_pb(res.reservations),
            },
            restart,
            placement: Placement {
                constraints: placement.constraints,
                preferences: placement
                    .spread
                    .into_iter()
                    .map(|descriptor| SpreadOver { descriptor })
                    .collect(),
                max_replicas_per_node: placement.max_replicas_per_node,
            },
            force_update: t.force_update,
            host_network: t.host_network,
        })
    }
}

impl From<&ServiceSpec> for pb::ServiceSpec {
    fn from(s: &ServiceSpec) -> Self {
        let (mode, replicas) = match s.mode {
            ServiceMode::Replicated { replicas } => ("replicated", replicas),
            ServiceMode::Global => ("global", 0),
        };
        pb::ServiceSpec {
            name: s.name.clone(),
            labels: s.labels.clone().into_iter().collect(),
            task: Some(pb::TaskSpec::from(&s.task)),
            mode: mode.into(),
            replicas,
            networks: s
                .networks
                .iter()
                .map(|n| pb::NetworkAttachmentConfig {
                    target: n.target.clone(),
                    aliases: n.aliases.clone(),
                })
                .collect(),
            endpoint_mode: s.endpoint_mode.as_str().into(),
            update_config: Some(update_config_to_pb(&s.update_config)),
            rollback_config: Some(update_config_to_pb(&s.rollback_config)),
            ports: s.ports.iter().map(port_to_pb).collect(),
        }
    }
}

pub fn port_to_pb(p: &PortConfig) -> pb::PortConfig {
    pb::PortConfig {
        protocol: p.protocol.as_str().into(),
        target: p.target.into(),
        published: p.published.into(),
        mode: p.mode.as_str().into(),
    }
}

impl TryFrom<pb::PortConfig> for PortConfig {
    type Error = ConvertError;
    fn try_from(p: pb::PortConfig) -> Result<Self, ConvertError> {
        let protocol = match p.protocol.as_str() {
            "" => Protocol::Tcp,
            s => Protocol::parse(s)
                .ok_or_else(|| invalid("port protocol", format!("{s:?}: expected tcp or udp")))?,
        };
        let mode = match p.mode.as_str() {
            "" => PublishMode::Ingress,
            s => PublishMode::parse(s)
                .ok_or_else(|| invalid("port mode", format!("{s:?}: expected ingress or host")))?,
        };
        let port = |what: &'static str, v: u32| {
            u16::try_from(v).map_err(|_| invalid(what, format!("{v}: ports go up to 65535")))
        };
        let target = port("target port", p.target)?;
        if target == 0 {
            return Err(invalid(
                "target port",
                "a published port needs its target port",
            ));
        }
        let published = port("published port", p.published)?;
        if published == 0 && mode == PublishMode::Host {
            return Err(invalid(
                "published port",
                format!("{target}: a host-mode port needs its published port"),
            ));
        }
        Ok(PortConfig {
            protocol,
            target,
            published,
            mode,
        })
    }
}

fn update_config_to_pb(u: &UpdateConfig) -> pb::UpdateConfig {
    pb::UpdateConfig {
        parallelism: u.parallelism,
        delay_ms: ms(u.delay),
        failure_action: match u.failure_action {
            UpdateFailureAction::Pause => "pause",
            UpdateFailureAction::Continue => "continue",
            UpdateFailureAction::Rollback => "rollback",
        }
        .into(),
        monitor_ms: ms(u.monitor),
        max_failure_ratio_permille: u.max_failure_ratio_permille,
        order: match u.order {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
        .into(),
    }
}

/// An absent config is Swarm's default.
fn update_config_from_pb(u: Option<pb::UpdateConfig>) -> Result<UpdateConfig, ConvertError> {
    let Some(u) = u else {
        return Ok(UpdateConfig::default());
    };
    Ok(UpdateConfig {
        parallelism: u.parallelism,
        delay: Duration::from_millis(u.delay_ms),
        failure_action: match u.failure_action.as_str() {
            "" | "pause" => UpdateFailureAction::Pause,
            "continue" => UpdateFailureAction::Continue,
            "rollback" => UpdateFailureAction::Rollback,
            other => {
                return Err(invalid(
                    "update failure action",
                    format!("{other:?}: expected pause, continue or rollback"),
                ))
            }
        },
        monitor: Duration::from_millis(u.monitor_ms),
        max_failure_ratio_permille: u.max_failure_ratio_permille.min(1000),
        order: match u.order.as_str() {
            "" | "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => {
                return Err(invalid(
                    "update order",
                    format!("{other:?}: expected stop-first or start-first"),
                ))
            }
        },
    })
}

/// Network names follow the same rules as service names.
pub fn valid_network_name(name: &str) -> bool {
    valid_service_name(name)
}

/// Service names as Docker accepts them: letters, digits, `-`, `_`, `.`, starting with a
/// letter or digit, at most 63 characters.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TryFrom<pb::ServiceSpec> for ServiceSpec {
    type Error = ConvertError;
    fn try_from(s: pb::ServiceSpec) -> Result<Self, ConvertError> {
        if !valid_service_name(&s.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit",
                    s.name
                ),
            ));
        }
        let mode = match s.mode.as_str() {
            "" | "replicated" => ServiceMode::Replicated {
                replicas: s.replicas,
            },
            "global" => {
                if s.replicas != 0 {
                    return Err(invalid("replicas", "a global service has no replica count"));
                }
                ServiceMode::Global
            }
            other => {
                return Err(invalid(
                    "mode",
                    format!("{other:?}: expected replicated or global"),
                ))
            }
        };
        let endpoint_mode = match s.endpoint_mode.as_str() {
            "" => EndpointMode::default(),
            m => EndpointMode::parse(m)
                .ok_or_else(|| invalid("endpoint mode", format!("{m:?}: expected vip or dnsrr")))?,
        };
        let mut networks = Vec::with_capacity(s.networks.len());
        for n in s.networks {
            if n.target.trim().is_empty() {
                return Err(invalid("network", "a network name or id is required"));
            }
            for a in &n.aliases {
                if !valid_service_name(a) {
                    return Err(invalid(
                        "network alias",
                        format!("{a:?}: use letters, digits, '-', '_' and '.'"),
                    ));
                }
            }
            networks.push(NetworkAttachmentConfig {
                target: n.target,
                aliases: n.aliases,
            });
        }
        Ok(ServiceSpec {
            name: s.name,
            labels: s.labels.into_iter().collect(),
            task: TaskSpec::try_from(s.task.ok_or(ConvertError::Missing("a task spec"))?)?,
            mode,
            networks,
            endpoint_mode,
            update_config: update_config_from_pb(s.update_config)?,
            rollback_config: update_config_from_pb(s.rollback_config)?,
            ports: s
                .ports
                .into_iter()
                .map(PortConfig::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A service as the API shows it; `network_name`s and replica counts are the caller's to
/// fill (they need the store).
pub fn update_state_str(s: UpdateState) -> &'static str {
    match s {
        UpdateState::None => "none",
        UpdateState::Updating => "updating",
        UpdateState::Paused => "paused",
        UpdateState::Completed => "completed",
        UpdateState::RollbackStarted => "rollback_started",
        UpdateState::RollbackCompleted => "rollback_completed",
    }
}

pub fn service_to_pb(s: &Service) -> pb::Service {
    pb::Service {
        id: s.id.to_string(),
        meta: Some(meta_to_pb(&s.meta)),
        spec: Some(pb::ServiceSpec::from(&s.spec)),
        spec_version: s.spec_version,
        replicas_running: 0,
        replicas_desired: 0,
        update_state: update_state_str(s.update_status.state).into(),
        update_message: s.update_status.message.clone(),
        has_previous_spec: s.previous_spec.is_some(),
        endpoint: Some(pb::Endpoint {
            virtual_ips: s
                .endpoint
                .virtual_ips
                .iter()
                .map(|v| pb::VirtualIp {
                    network_id: v.network.to_string(),
                    network_name: String::new(),
                    addr: v.addr.to_string(),
                })
                .collect(),
            ports: s.endpoint.ports.iter().map(port_to_pb).collect(),
        }),
    }
}

fn attachment_to_pb(a: &NetworkAttachment) -> pb::NetworkAttachment {
    pb::NetworkAttachment {
        network_id: a.network.to_string(),
        network_name: String::new(),
        addresses: a.addresses.iter().map(ToString::to_string).collect(),
    }
}

impl TryFrom<pb::NetworkAttachment> for NetworkAttachment {
    type Error = ConvertError;
    fn try_from(a: pb::NetworkAttachment) -> Result<Self, ConvertError> {
        Ok(NetworkAttachment {
            network: a.network_id.as_str().into(),
            addresses: a
                .addresses
                .iter()
                .map(|x| x.parse().map_err(|e| invalid("address", format!("{e}"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&NetworkSpec> for pb::NetworkSpec {
    fn from(n: &NetworkSpec) -> Self {
        pb::NetworkSpec {
            name: n.name.clone(),
            driver: n.driver.as_str().into(),
            labels: n.labels.clone().into_iter().collect(),
            attachable: n.attachable,
            internal: n.internal,
            ingress: n.ingress,
            ipam: Some(pb::IpamConfig {
                subnet: n.ipam.subnet.map(|s| s.to_string()).unwrap_or_default(),
                gateway: n.ipam.gateway.map(|g| g.to_string()).unwrap_or_default(),
            }),
        }
    }
}

/// A network spec as a user asks for it: the syntax is checked here; whether the subnet
/// is free (and the gateway inside it) is the allocator's to say.
impl TryFrom<pb::NetworkSpec> for NetworkSpec {
    type Error = ConvertError;
    fn try_from(n: pb::NetworkSpec) -> Result<Self, ConvertError> {
        if !valid_network_name(&n.name) {
            return Err(invalid(
                "network name",
                format!(
                    "{:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit",
                    n.name
                ),
            ));
        }
        if PREDEFINED_NETWORKS.contains(&n.name.as_str()) {
            return Err(invalid(
                "network name",
                format!(
                    "{:?} is reserved for Docker's predefined network of that name",
                    n.name
                ),
            ));
        }
        let driver = match n.driver.as_str() {
            "" => NetworkDriver::default(),
            d => NetworkDriver::parse(d).ok_or_else(|| {
                invalid(
                    "driver",
                    format!("{d:?} is not supported: the only driver is overlay"),
                )
            })?,
        };
        if n.labels.keys().any(String::is_empty) {
            return Err(invalid("label", "a label needs a key"));
        }
        let ipam = n.ipam.unwrap_or_default();
        let subnet = match ipam.subnet.trim() {
            "" => None,
            s => Some(
                s.parse::<Ipv4Cidr>()
                    .map_err(|e| invalid("subnet", e.to_string()))?,
            ),
        };
        let gateway = match ipam.gateway.trim() {
            "" => None,
            g => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| invalid("gateway", format!("{g:?}: expected an IPv4 address")))?,
            ),
        };
        if gateway.is_some() && subnet.is_none() {
            return Err(invalid("gateway", "a gateway needs a subnet (--subnet)"));
        }
        Ok(NetworkSpec {
            name: n.name,
            driver,
            labels: n.labels.into_iter().collect(),
            attachable: n.attachable,
            internal: n.internal,
            ipam: IpamConfig { subnet, gateway },
            ingress: n.ingress,
        })
    }
}

pub fn network_to_pb(n: &Network) -> pb::Network {
    pb::Network {
        id: n.id.to_string(),
        meta: Some(meta_to_pb(&n.meta)),
        spec: Some(pb::NetworkSpec::from(&n.spec)),
        allocation: Some(pb::NetworkAllocation {
            subnet: n.allocation.subnet.to_string(),
            gateway: n.allocation.gateway.to_string(),
            vni: n.allocation.vni,
        }),
    }
}

pub fn task_status_to_pb(st: &TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        state: st.state.as_str().into(),
        timestamp: st.timestamp,
        message: st.message.clone(),
        err: st.err.clone(),
        exit_code: st.exit_code,
        container_id: st.container_id.clone(),
    }
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = ConvertError;
    fn try_from(st: pb::TaskStatus) -> Result<Self, ConvertError> {
        Ok(TaskStatus {
            state: TaskState::parse(&st.state)
                .ok_or_else(|| invalid("task state", st.state.clone()))?,
            timestamp: st.timestamp,
            message: st.message,
            err: st.err,
            exit_code: st.exit_code,
            container_id: st.container_id,
        })
    }
}

pub fn task_to_pb(t: &Task, node_hostname: &str) -> pb::Task {
    pb::Task {
        id: t.id.to_string(),
        meta: Some(meta_to_pb(&t.meta)),
        service_id: t.service_id.to_string(),
        slot: t.slot,
        node_id: t
            .node_id
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        spec: Some(pb::TaskSpec::from(&t.spec)),
        spec_version: t.spec_version,
        desired_state: t.desired_state.as_str().into(),
        status: Some(task_status_to_pb(&t.status)),
        service_name: t.service_name.clone(),
        name: crate::model::naming::task_name(t),
        node_hostname: node_hostname.to_owned(),
        networks: t.networks.iter().map(attachment_to_pb).collect(),
    }
}

/// A task as a node receives it in its assignments.
impl TryFrom<pb::Task> for Task {
    type Error = ConvertError;
    fn try_from(t: pb::Task) -> Result<Self, ConvertError> {
        let meta = t.meta.unwrap_or_default();
        Ok(Task {
            id: t.id.as_str().into(),
            meta: Meta {
                version: meta.version,
                created_at: meta.created_at,
                updated_at: meta.updated_at,
            },
            service_id: t.service_id.as_str().into(),
            slot: t.slot,
            node_id: (!t.node_id.is_empty()).then(|| t.node_id.as_str().into()),
            spec: TaskSpec::try_from(t.spec.ok_or(ConvertError::Missing("a task spec"))?)?,
            spec_version: t.spec_version,
            desired_state: TaskState::parse(&t.desired_state)
                .ok_or_else(|| invalid("desired state", t.desired_state.clone()))?,
            status: TaskStatus::try_from(t.status.unwrap_or_default()).unwrap_or_default(),
            service_name: t.service_name,
            networks: t
                .networks
                .into_iter()
                .map(NetworkAttachment::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        let mut s = ServiceSpec {
            name: "web".into(),
            ..Default::default()
        };
        s.task.container.image = "127.0.0.1:5055/busybox:latest".into();
        s.task.container.args = vec!["sleep".into(), "1".into()];
        s.task.container.stop_grace_period = Some(Duration::from_secs(2));
        s.task.container.healthcheck = Some(HealthCheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            ..Default::default()
        });
        s.task.restart.condition = RestartCondition::OnFailure;
        s.task.placement.constraints = vec!["node.role==worker".into()];
        s.mode = ServiceMode::Replicated { replicas: 3 };
        s.networks = vec![NetworkAttachmentConfig {
            target: "appnet".into(),
            aliases: vec!["www".into()],
        }];
        s.endpoint_mode = EndpointMode::Dnsrr;
        let c = &mut s.task.container;
        c.capability_add = vec!["CAP_NET_ADMIN".into()];
        c.capability_drop = vec!["ALL".into()];
        c.read_only = true;
        c.init = true;
        c.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        c.ulimits = vec![Ulimit::new("nofile", 123, 456).unwrap()];
        c.devices = vec![DeviceMapping::new("/dev/null", "/dev/mynull", "rw").unwrap()];
        s
    }

    #[test]
    fn container_options_are_checked_and_normalised() {
        let with = |f: &dyn Fn(&mut pb::ContainerSpec)| {
            let mut p = pb::ServiceSpec::from(&spec());
            if let Some(c) = p.task.as_mut().and_then(|t| t.container.as_mut()) {
                f(c);
            }
            ServiceSpec::try_from(p)
        };
        let s = with(&|c| c.capability_add = vec!["net_admin".into(), "sys_time".into()]).unwrap();
        assert_eq!(
            s.task.container.capability_add,
            vec!["CAP_NET_ADMIN".to_string(), "CAP_SYS_TIME".to_string()]
        );
        assert!(with(&|c| c.capability_drop = vec!["CAP_FLY".into()]).is_err());
        assert!(with(&|c| {
            c.sysctls.insert("kernel.hostname".into(), "x".into());
        })
        .is_err());
        assert!(with(&|c| c.ulimits[0].soft = 1000).is_err());
        assert!(with(&|c| c.ulimits[0].name = "nofiles".into()).is_err());
        assert!(with(&|c| c.devices[0].permissions = "x".into()).is_err());
        assert!(with(&|c| c.devices[0].path_on_host = "dev/null".into()).is_err());
        // Raft state written before these fields existed still loads.
        let old = r#"{"image":"busybox","command":[],"args":[],"env":[],"dir":"","user":"","hostname":"","labels":{},"mounts":[],"stop_signal":"","stop_grace_period":null,"healthcheck":null}"#;
        let c: ContainerSpec = serde_json::from_str(old).unwrap();
        assert!(!c.read_only && c.ulimits.is_empty() && c.devices.is_empty() && !c.init);
    }

    #[test]
    fn service_specs_round_trip() {
        let s = spec();
        let back = ServiceSpec::try_from(pb::ServiceSpec::from(&s)).unwrap();
        assert_eq!(back, s);
        let mut g = spec();
        g.mode = ServiceMode::Global;
        assert_eq!(ServiceSpec::try_from(pb::ServiceSpec::from(&g)).unwrap(), g);
        // Host networking goes over the wire and back; the control API (not the
        // conversion) refuses it with networks, so clear them here.
        let mut h = spec();
        h.networks.clear();
        h.task.host_network = true;
        let p = pb::ServiceSpec::from(&h);
        assert!(p.task.as_ref().is_some_and(|t| t.host_network));
        assert_eq!(ServiceSpec::try_from(p).unwrap(), h);
        // Raft state written before the field existed loads as "not host".
        let old = serde_json::to_value(&spec().task).unwrap();
        assert!(old.get("host_network").is_none());
        let t: TaskSpec = serde_json::from_value(old).unwrap();
        assert!(!t.host_network);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut p = pb::ServiceSpec::from(&spec());
        p.name = "bad name".into();
        assert!(ServiceSpec::try_from(p).is_err());
        let mut p = pb::ServiceSpec::from(&spec());
        p.mode = "global".into();
        assert!(ServiceSpec::try_from(p).is_err(), "global with replicas");
        let mut p = pb::ServiceSpec::from(&spec());
        if let Some(t) = p.task.as_mut() {
            if let Some(c) = t.container.as_mut() {
                c.image = String::new();
            }
        }
        assert!(ServiceSpec::try_from(p).is_err());
        let mut p = pb::ServiceSpec::from(&spec());
        p.endpoint_mode = "round-robin".into();
        assert!(ServiceSpec::try_from(p).is_err());
    }

    #[test]
    fn network_specs_round_trip_and_bad_ones_are_refused() {
        let n = NetworkSpec {
            name: "appnet".into(),
            ipam: IpamConfig {
                subnet: Some("10.31.0.0/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 31, 0, 254)),
            },
            attachable: true,
            ..Default::default()
        };
        assert_eq!(NetworkSpec::try_from(pb::NetworkSpec::from(&n)).unwrap(), n);
        let bad = |f: &dyn Fn(&mut pb::NetworkSpec)| {
            let mut p = pb::NetworkSpec::from(&n);
            f(&mut p);
            NetworkSpec::try_from(p).is_err()
        };
        assert!(bad(&|p| p.name = "bad name".into()));
        assert!(bad(&|p| p.driver = "bridge".into()));
        // Docker's predefined networks keep their names.
        for reserved in ["host", "bridge", "none"] {
            assert!(bad(&|p| p.name = reserved.into()), "{reserved}");
        }
        assert!(bad(&|p| p.ipam = Some(pb::IpamConfig {
            subnet: "10.31.0.0/33".into(),
            gateway: String::new()
        })));
        assert!(bad(&|p| p.ipam = Some(pb::IpamConfig {
            subnet: String::new(),
            gateway: "10.31.0.1".into()
        })));
        assert!(bad(&|p| p.ipam = Some(pb::IpamConfig {
            subnet: "10.31.0.0/24".into(),
            gateway: "banana".into()
        })));
    }
}
