//! The cluster store: every object of the cluster, kept in memory on each manager by
//! applying the Raft log, with change events for the components that react to it.
//!
//! The store never decides anything by itself: [`State::apply`] is a pure function of the
//! state and a command, so every replica ends in the same state. Writers go through a
//! [`crate::proposer::Proposer`]; readers take a consistent view with [`Store::view`].

mod apply;
mod event;

pub use event::Event;

use rswarm_proto::model::{Cluster, Command, CommandResponse, Node, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;
use tokio::sync::broadcast;

/// Everything the store holds. Serialized whole into Raft snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<NodeId, Node>,
}

impl State {
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
        let outcome = {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            guard.apply(index, cmd)
        };
        match outcome {
            Ok(events) => {
                for e in events {
                    let _ = self.events.send(e);
                }
                let _ = self.events.send(Event::Commit { index });
                CommandResponse {
                    result: None,
                    index,
                }
            }
            Err(e) => CommandResponse {
                result: Some(e),
                index,
            },
        }
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
