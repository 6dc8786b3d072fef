//! Services: what the user asks to run, as Swarm's `ServiceSpec`.
use super::{Endpoint, Meta, ServiceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    /// One task on every node that satisfies the placement.
    Global,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    /// Swarm's default: restart whatever the exit.
    #[default]
    Any,
}

/// Swarm's defaults: condition any, 5 s delay, no attempt limit, no window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay: Duration,
    /// 0: unlimited.
    pub max_attempts: u64,
    /// Attempts are counted within this window; zero: since the service was created.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: RestartCondition::Any,
            delay: Duration::from_secs(5),
            max_attempts: 0,
            window: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs in billionths (Docker's NanoCPUs).
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    pub limits: Resources,
    pub reservations: Resources,
}

/// A placement preference: spread tasks evenly over the values of a node label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadOver {
    /// e.g. `node.labels.zone`
    pub descriptor: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Expressions such as `node.role==worker`, `node.labels.zone!=a`.
    pub constraints: Vec<String>,
    pub preferences: Vec<SpreadOver>,
    /// 0: unlimited.
    pub max_replicas_per_node: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// As Docker: `["CMD", ...]`, `["CMD-SHELL", "..."]`, or `["NONE"]` to disable the image's.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        // Docker's defaults.
        Self {
            test: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            start_period: Duration::ZERO,
            retries: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountType,
    /// Host path (bind) or volume name (volume); empty for tmpfs.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// tmpfs size in bytes; 0: unlimited.
    pub tmpfs_size: u64,
}

/// What runs in each task's container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    /// Replaces the image's entrypoint when set (Docker's `--entrypoint`).
    pub command: Vec<String>,
    /// Replaces the image's CMD when set (what follows the image on `service create`).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub dir: String,
    pub user: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    /// Empty: SIGTERM (or the image's STOPSIGNAL).
    pub stop_signal: String,
    /// None: 10 s, Docker's default.
    pub stop_grace_period: Option<Duration>,
    pub healthcheck: Option<HealthCheck>,
    /// Secrets mounted as files (by id; see [`super::FileReference`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::FileReference>,
    /// Configs mounted as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<super::FileReference>,
    /// Capabilities added to and dropped from Docker's default set, normalised
    /// (`CAP_NET_ADMIN`, or `ALL`); see [`super::container_opts`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    /// The root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Namespaced sysctls only (`net.*`, `kernel.shm*`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<super::Ulimit>,
    /// Host devices, looked up on the node when the task is prepared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<super::DeviceMapping>,
    /// Run the node's static tini as PID 1 (Docker's `--init`): it forwards signals
    /// to the command and reaps zombies, which a bare PID 1 often does not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    pub resources: ResourceRequirements,
    pub restart: RestartPolicy,
    pub placement: Placement,
    /// Bumped to force a redeploy without other changes (`--force`).
    pub force_update: u64,
    /// The task runs in its node's own network namespace (Docker's predefined `host`
    /// network): no overlay attachments, addresses, VIP or embedded DNS. Exclusive with
    /// the service's networks and published ports (the control API refuses both).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

/// How a service is reached on its networks: through one virtual IP per network,
/// balanced over its tasks (Swarm's default), or by DNS round robin over the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vip" => Some(EndpointMode::Vip),
            "dnsrr" => Some(EndpointMode::Dnsrr),
            _ => None,
        }
    }
}

/// A network the service's tasks join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachmentConfig {
    /// A network name or id as the user wrote it; the control API stores the network's
    /// id, so a stored spec always names networks by id.
    pub target: String,
    /// More names the service answers to on this network.
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task: TaskSpec,
    pub mode: ServiceMode,
    #[serde(default)]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<super::PortConfig>,
    /// How tasks are replaced when the task spec changes.
    #[serde(default)]
    pub update_config: UpdateConfig,
    /// How a rollback replaces them.
    #[serde(default)]
    pub rollback_config: UpdateConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateFailureAction {
    /// Swarm's default: stop updating, leave the service as it is.
    #[default]
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Swarm's default: the old task stops before its replacement starts.
    #[default]
    StopFirst,
    StartFirst,
}

/// Rolling updates, with Swarm's defaults: one task at a time, no delay, pause on failure,
/// a failure counted if a new task fails within 5 s of starting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0: all at once.
    pub parallelism: u64,
    /// Between one batch running and the next starting.
    pub delay: Duration,
    pub failure_action: UpdateFailureAction,
    pub monitor: Duration,
    /// Failures tolerated, as a fraction of the tasks updated.
    pub max_failure_ratio_permille: u32,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: UpdateFailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio_permille: 0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// Where a rolling update stands (Swarm's `UpdateStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    #[default]
    None,
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackCompleted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub meta: Meta,
    pub spec: ServiceSpec,
    /// Bumped on every spec change; tasks remember the one they were made from.
    pub spec_version: u64,
    /// The service's VIPs, chosen by the allocator when the service is created or updated.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// The spec before the last update, for `service rollback`.
    #[serde(default)]
    pub previous_spec: Option<Box<ServiceSpec>>,
    #[serde(default)]
    pub update_status: UpdateStatus,
}

impl Service {
    /// Whether it publishes a port through the routing mesh (its tasks join `ingress`).
    pub fn publishes_through_mesh(&self) -> bool {
        self.spec
            .ports
            .iter()
            .any(|p| p.mode == super::PublishMode::Ingress)
    }
}
