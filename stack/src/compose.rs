//! The Compose file once loaded: merged, interpolated, validated and typed. Short forms are
//! expanded (a port range is one entry per port, `"./data:/data:ro"` a bind mount), paths
//! are absolute, `env_file`s are read into `environment`, references between services and
//! the top-level networks, volumes, secrets and configs are known to resolve. What rswarm
//! does not use is not kept (the loader warns about it).

use crate::spec::{EndpointMode, FailureAction, PortSpec, UpdateOrder};
use rswarm_proto::model::{DeviceMapping, RestartCondition, Ulimit};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeFile {
    /// As written (`"3.8"`), if written.
    pub version: Option<String>,
    /// By name.
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub image: String,
    /// Replaces the image's CMD (the container spec's `args`); a string is split as a
    /// shell would.
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT (the container spec's `command`).
    pub entrypoint: Option<Vec<String>>,
    /// From the `env_file`s, then `environment`; `None`: named without a value and not
    /// set in the environment either, so left out.
    pub environment: BTreeMap<String, Option<String>>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub volumes: Vec<ServiceVolume>,
    pub ports: Vec<PortSpec>,
    /// Empty: the stack's default network.
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub secrets: Vec<FileReference>,
    pub configs: Vec<FileReference>,
    /// Normalised capability names (`CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only: bool,
    /// Tini as PID 1 (`--init`).
    pub init: bool,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    pub devices: Vec<DeviceMapping>,
    pub deploy: Deploy,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`; `None`: the image's.
    pub test: Option<Vec<String>>,
    pub disable: bool,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceVolume {
    pub kind: VolumeKind,
    /// An absolute host path (bind), a volume key of the file (volume; empty for an
    /// anonymous volume), empty (tmpfs).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Bind propagation (`rprivate`, ...).
    pub propagation: Option<String>,
    /// Do not copy the image's content into a new volume.
    pub nocopy: bool,
    /// tmpfs size in bytes.
    pub tmpfs_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

/// A service's use of a secret or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// The key under the top-level `secrets:` or `configs:`.
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployMode {
    #[default]
    Replicated,
    Global,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deploy {
    pub mode: DeployMode,
    pub replicas: Option<u64>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfigFile>,
    pub rollback_config: Option<UpdateConfigFile>,
    pub resources: ResourcesFile,
    pub restart_policy: Option<RestartPolicyFile>,
    pub placement: PlacementFile,
    pub endpoint_mode: EndpointMode,
}

/// `update_config` / `rollback_config` as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateConfigFile {
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcesFile {
    pub limits: ResourceValues,
    pub reservations: ResourceValues,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceValues {
    pub nano_cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestartPolicyFile {
    pub condition: Option<RestartCondition>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementFile {
    pub constraints: Vec<String>,
    /// `spread` descriptors, e.g. `node.labels.zone`.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

/// A top-level network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// `name:`, or for an external network its name (the key when not given).
    pub name: Option<String>,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub ipam_driver: Option<String>,
    pub subnets: Vec<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// Docker's predefined `host` network, joined as an external network named `host`:
    /// the service's tasks use their node's own network stack.
    pub fn is_host(&self) -> bool {
        self.external && self.name.as_deref() == Some(rswarm_proto::model::HOST_NETWORK)
    }
}

/// A top-level volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Volume {
    pub name: Option<String>,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileObject {
    pub name: Option<String>,
    pub external: bool,
    /// Absolute; set unless external.
    pub file: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}
