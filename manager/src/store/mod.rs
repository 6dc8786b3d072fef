//! The cluster store: every object of the cluster, kept in memory on each manager by
//! applying the Raft log, with change events for the components that react to it.
//!
//! The store never decides anything by itself: [`State::apply`] is a pure function of the
//! state and a command, so every replica ends in the same state. Writers go through a
//! [`crate::proposer::Proposer`]; readers take a consistent view with [`Store::view`].

mod apply;
mod event;
mod networks;
mod object;
mod ports;
mod secrets;

pub use event::Event;
pub use networks::{Holder, VNI_MAX};

use rswarm_proto::model::{
    Cluster, Command, CommandResponse, Network, NetworkId, Node, NodeId, Service, ServiceId, Task,
    TaskId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;
use tokio::sync::broadcast;

/// Everything the store holds. Serialized whole into Raft snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<NodeId, Node>,
    #[serde(default)]
    pub services: BTreeMap<ServiceId, Service>,
    #[serde(default)]
    pub tasks: BTreeMap<TaskId, Task>,
    #[serde(default)]
    pub networks: BTreeMap<NetworkId, Network>,
    /// Secrets by id; their data is encrypted (`crate::secrets`).
    #[serde(default)]
    pub secrets: BTreeMap<String, rswarm_proto::model::Secret>,
    /// Configs by id, in clear.
    #[serde(default)]
    pub configs: BTreeMap<String, rswarm_proto::model::Config>,
}

impl State {
    /// Finds a service by id, name, or unique id prefix.
    pub fn find_service(&self, key: &str) -> Result<&Service, LookupError> {
        find_by(
            self.services.values(),
            key,
            |s| s.id.as_str(),
            |s| Some(s.spec.name.clone()),
        )
        .map_err(|ambiguous| {
            if ambiguous {
                LookupError::ServiceAmbiguous(key.to_owned())
            } else {
                LookupError::ServiceNotFound(key.to_owned())
            }
        })
    }

    /// The routing mesh's network, once made.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }

    /// Finds a network by id, name, or unique id prefix.
    pub fn find_network(&self, key: &str) -> Result<&Network, LookupError> {
        if key.is_empty() {
            return Err(LookupError::NetworkNotFound(String::new()));
        }
        find_by(
            self.networks.values(),
            key,
            |n| n.id.as_str(),
            |n| Some(n.spec.name.clone()),
        )
        .map_err(|ambiguous| {
            if ambiguous {
                LookupError::NetworkAmbiguous(key.to_owned())
            } else {
                LookupError::NetworkNotFound(key.to_owned())
            }
        })
    }

    /// Finds a task by id, unique id prefix, or name (`web.1`, `web.<node id>`; the
    /// newest task of that slot).
    pub fn find_task(&self, key: &str) -> Result<&Task, LookupError> {
        if let Some(t) = self.tasks.get(&TaskId(key.to_owned())) {
            return Ok(t);
        }
        let named = self
            .tasks
            .values()
            .filter(|t| rswarm_proto::model::naming::task_name(t) == key)
            .max_by_key(|t| (t.meta.created_at, t.id.clone()));
        if let Some(t) = named {
            return Ok(t);
        }
        let by_prefix: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.id.as_str().starts_with(key))
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0]),
            0 => Err(LookupError::TaskNotFound(key.to_owned())),
            _ => Err(LookupError::TaskAmbiguous(key.to_owned())),
        }
    }

    /// The tasks of one service.
    pub fn tasks_of<'a>(&'a self, service: &'a ServiceId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .values()
            .filter(move |t| &t.service_id == service)
    }

    /// Finds a node by id, unique id prefix, or hostname (in that order, as Docker does).
    pub fn find_node(&self, key: &str) -> Result<&Node, LookupError> {
        if let Some(n) = self.nodes.get(&NodeId(key.to_owned())) {
            return Ok(n);
        }
        let by_prefix: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.id.as_str().starts_with(key))
            .collect();
        match by_prefix.len() {
            1 => return Ok(by_prefix[0]),
            n if n > 1 => return Err(LookupError::Ambiguous(key.to_owned())),
            _ => {}
        }
        let by_name: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.description.hostname == key)
            .collect();
        match by_name.len() {
            1 => Ok(by_name[0]),
            0 => Err(LookupError::NotFound(key.to_owned())),
            _ => Err(LookupError::Ambiguous(key.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("node {0} not found")]
    NotFound(String),
    #[error("node {0} is ambiguous: use a longer id")]
    Ambiguous(String),
    #[error("service {0} not found")]
    ServiceNotFound(String),
    #[error("service {0} is ambiguous: use a longer id")]
    ServiceAmbiguous(String),
    #[error("task {0} not found")]
    TaskNotFound(String),
    #[error("task {0} is ambiguous: use a longer id")]
    TaskAmbiguous(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("network {0} is ambiguous: use a longer id")]
    NetworkAmbiguous(String),
    /// A secret or config (the kind) not found.
    #[error("{0} {1} not found")]
    Missing(&'static str, String),
    #[error("{0} {1} is ambiguous: use a longer id")]
    AmbiguousKey(&'static str, String),
}

/// Finds one of `items` by exact key, then unique prefix of its id, then exact name.
fn find_by<'a, T>(
    items: impl Iterator<Item = &'a T> + Clone,
    key: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> Option<String>,
) -> Result<&'a T, bool /* ambiguous */> {
    if let Some(t) = items.clone().find(|t| id(t) == key) {
        return Ok(t);
    }
    let by_name: Vec<&T> = items
        .clone()
        .filter(|t| name(t).as_deref() == Some(key))
        .collect();
    if by_name.len() == 1 {
        return Ok(by_name[0]);
    }
    if by_name.len() > 1 {
        return Err(true);
    }
    let by_prefix: Vec<&T> = items.filter(|t| id(t).starts_with(key)).collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0]),
        0 => Err(false),
        _ => Err(true),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("decode snapshot: {0}")]
    Snapshot(#[from] serde_json::Error),
}

/// The in-memory store with its event feed.
pub struct Store {
    state: RwLock<State>,
    events: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            state: RwLock::new(State::default()),
            events,
        }
    }

    /// Reads a consistent view. Keep `f` short: writers wait for it.
    pub fn view<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Subscribe before taking a view, so no change falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Applies one committed command at log index `index`. A refused command changes
    /// nothing and reports why in the response.
    pub fn apply(&self, index: u64, cmd: &Command) -> CommandResponse {
        if let Command::Multi(cmds) = cmd {
            let mut results = Vec::with_capacity(cmds.len());
            let mut events = Vec::new();
            {
                let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
                for c in cmds {
                    match guard.apply(index, c) {
                        Ok(e) => {
                            events.extend(e);
                            results.push(None);
                        }
                        Err(e) => results.push(Some(e)),
                    }
                }
            }
            self.publish(events, index);
            return CommandResponse {
                result: None,
                index,
                results,
            };
        }
        let outcome = {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            guard.apply(index, cmd)
        };
        match outcome {
            Ok(events) => {
                self.publish(events, index);
                CommandResponse {
                    result: None,
                    index,
                    results: Vec::new(),
                }
            }
            Err(e) => CommandResponse {
                result: Some(e),
                index,
                results: Vec::new(),
            },
        }
    }

    fn publish(&self, events: Vec<Event>, index: u64) {
        for e in events {
            let _ = self.events.send(e);
        }
        let _ = self.events.send(Event::Commit { index });
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        self.view(serde_json::to_vec).map_err(StoreError::from)
    }

    /// Replaces the whole state (installing a snapshot) and tells subscribers to resync.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let state: State = if bytes.is_empty() {
            State::default()
        } else {
            serde_json::from_slice(bytes)?
        };
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        let _ = self.events.send(Event::Reset);
        Ok(())
    }
}
