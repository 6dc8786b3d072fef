//! What a stack deploy creates: the output of [`crate::convert`]. Services are
//! `proto::model::ServiceSpec`s; what the model does not hold yet (published ports, network
//! attachments, secret and config references, update and rollback settings, the endpoint
//! mode) sits beside each spec in typed form, and so do the stack's networks, volumes,
//! secrets and configs, with their final (stack-prefixed or external) names.

use rswarm_proto::model::ServiceSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The label on every object of a stack, whose value is the stack's name (Docker's).
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label on a stack's service holding the image as the file wrote it (Docker's).
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackSpec {
    pub name: String,
    /// By name.
    pub services: Vec<StackService>,
    /// The networks the services use, the stack's default network among them when a
    /// service names none; external ones are to exist already.
    pub networks: Vec<StackNetwork>,
    /// Named volumes, created on each node that runs a task using them.
    pub volumes: Vec<StackVolume>,
    pub secrets: Vec<StackSecret>,
    pub configs: Vec<StackConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackService {
    /// Named `STACK_SERVICE`, labelled with the stack.
    pub spec: ServiceSpec,
    /// Sorted, as Docker sorts them.
    pub ports: Vec<PortSpec>,
    /// Sorted by network name.
    pub networks: Vec<NetworkAttachment>,
    /// Sorted by secret name.
    pub secrets: Vec<FileRef>,
    /// Sorted by config name.
    pub configs: Vec<FileRef>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub endpoint_mode: EndpointMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node accepts the port.
    #[default]
    Ingress,
    /// Only the node running the task.
    Host,
}

impl PublishMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

/// A published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub target: u16,
    /// `None`: the cluster picks one (from 30000 up, as Swarm).
    pub published: Option<u16>,
    pub mode: PublishMode,
}

/// A network a service's tasks join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's full name: `STACK_NAME`, or an external network's name.
    pub target: String,
    /// The names the service answers to on this network besides `STACK_SERVICE`: the
    /// file's aliases, then the service's short name, as Docker adds it.
    pub aliases: Vec<String>,
}

/// A secret or config made available to a service's tasks as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The object's full name: `STACK_NAME`, or the `name:` or external name.
    pub name: String,
    /// As Docker: the file's target, or else the name the service file used. A relative
    /// target is under `/run/secrets/` for a secret and under `/` for a config.
    pub target: String,
    pub uid: String,
    pub gid: String,
    /// Default `0o444`.
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// How a service's tasks are replaced on an update (or a rollback), with Swarm's defaults
/// filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0: all. Default 1.
    pub parallelism: u64,
    pub delay: Duration,
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure. Default 5 s.
    pub monitor: Duration,
    /// The share of failed tasks tolerated, 0 to 1.
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP per network, balanced over the tasks.
    #[default]
    Vip,
    /// DNS round robin over the tasks' addresses.
    Dnsrr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackNetwork {
    /// `STACK_NAME`, the `name:` given, or the external network's name.
    pub name: String,
    /// External: not created nor removed by the stack, only used.
    pub external: bool,
    /// `overlay`.
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    /// With the namespace label (none for an external network).
    pub labels: BTreeMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub ipam_driver: Option<String>,
    pub subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackVolume {
    pub name: String,
    pub external: bool,
    /// Empty: the node's default (local).
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A secret the stack creates (`file`) or uses (`external`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSecret {
    pub name: String,
    pub external: bool,
    /// The file holding the data, absolute; `None` when external.
    pub file: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

/// A config the stack creates or uses; as a secret.
pub type StackConfig = StackSecret;
