//! The domain types of rswarm, shared by every crate: the objects of the cluster store and
//! the commands that change them. Wire (`pb`) messages are converted into these once, at the
//! edge.

mod cluster;
mod command;
pub mod container_opts;
mod duration;
mod ids;
mod netview;
mod network;
mod node;
pub mod reference;
mod secret;
mod service;
mod task;

pub use cluster::{Cluster, ClusterSpec, JoinSecrets, RootCaMaterial};
pub use command::{Command, CommandError, CommandResponse};
pub use container_opts::{DeviceMapping, Ulimit};
pub use duration::{format_duration, parse_duration, DurationError};
pub use ids::{ClusterId, NetworkId, NodeId, RaftId, ServiceId, TaskId};
pub use netview::{NetworkView, ServiceView, TaskView};
pub use network::{
    CidrError, Endpoint, IpamConfig, Ipv4Cidr, Network, NetworkAllocation, NetworkAttachment,
    NetworkDriver, NetworkSpec, PortConfig, Protocol, PublishMode, VirtualIp, HOST_NETWORK,
    PREDEFINED_NETWORKS,
};
pub use node::{
    ManagerInfo, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus,
};
pub use secret::{
    valid_secret_name, Config, FileReference, Secret, SecretSpec, DEFAULT_FILE_MODE,
    MAX_SECRET_BYTES,
};
pub use service::{
    ContainerSpec, EndpointMode, HealthCheck, Mount, MountType, NetworkAttachmentConfig, Placement,
    ResourceRequirements, Resources, RestartCondition, RestartPolicy, Service, ServiceMode,
    ServiceSpec, SpreadOver, TaskSpec, UpdateConfig, UpdateFailureAction, UpdateOrder, UpdateState,
    UpdateStatus,
};
pub use task::{naming, Task, TaskState, TaskStatus};

use serde::{Deserialize, Serialize};

/// Bookkeeping every stored object carries. `version` is the Raft log index of the write
/// that last changed the object; an update must carry the version it read (optimistic
/// concurrency, as swarmkit's `Meta.Version`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
}
