use rswarm_proto::model::{Cluster, Network, Node, Service, Task};

/// A change in the store, published after it is applied.
#[derive(Debug, Clone)]
pub enum Event {
    ClusterUpdated(Box<Cluster>),
    NodeCreated(Box<Node>),
    NodeUpdated {
        old: Box<Node>,
        new: Box<Node>,
    },
    NodeRemoved(Box<Node>),
    ServiceCreated(Box<Service>),
    ServiceUpdated {
        old: Box<Service>,
        new: Box<Service>,
    },
    ServiceRemoved(Box<Service>),
    TaskCreated(Box<Task>),
    TaskUpdated {
        old: Box<Task>,
        new: Box<Task>,
    },
    TaskRemoved(Box<Task>),
    NetworkCreated(Box<Network>),
    NetworkRemoved(Box<Network>),
    NetworkUpdated(Box<Network>),
    /// Every event of one log entry has been published.
    Commit {
        index: u64,
    },
    /// The whole state was replaced (a snapshot was installed): re-read everything.
    Reset,
}
