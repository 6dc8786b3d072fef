//! What the store keeps in its maps, seen through one trait, so that creating, replacing,
//! removing and restoring work the same way for every kind (and the version rule, "an
//! object's version is the log index that last wrote it", lives in one place).

use rswarm_proto::model::{
    CommandError, Config, Meta, Network, NetworkId, Node, NodeId, Secret, Service, ServiceId, Task,
    TaskId,
};
use std::collections::BTreeMap;
use std::fmt::Display;

pub(super) trait Stored: Clone {
    type Id: Ord + Clone + Display;
    /// The kind's name in errors ("service").
    const KIND: &'static str;
    fn key(&self) -> &Self::Id;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
}

macro_rules! stored {
    ($t:ty, $id:ty, $kind:literal) => {
        impl Stored for $t {
            type Id = $id;
            const KIND: &'static str = $kind;
            fn key(&self) -> &$id {
                &self.id
            }
            fn meta(&self) -> &Meta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut Meta {
                &mut self.meta
            }
        }
    };
}

stored!(Node, NodeId, "node");
stored!(Service, ServiceId, "service");
stored!(Task, TaskId, "task");
stored!(Network, NetworkId, "network");
stored!(Secret, String, "secret");
stored!(Config, String, "config");

pub(super) fn not_found<T: Stored>(id: &T::Id) -> CommandError {
    CommandError::NotFound {
        kind: T::KIND.into(),
        id: id.to_string(),
    }
}

/// Refuses a create whose id is taken.
pub(super) fn ensure_absent<T: Stored>(
    map: &BTreeMap<T::Id, T>,
    obj: &T,
) -> Result<(), CommandError> {
    if map.contains_key(obj.key()) {
        return Err(CommandError::Exists {
            kind: T::KIND.into(),
            id: obj.key().to_string(),
        });
    }
    Ok(())
}

/// Stores a new object at version `index`; returns what was stored.
pub(super) fn insert_new<T: Stored>(map: &mut BTreeMap<T::Id, T>, index: u64, obj: &T) -> T {
    let mut obj = obj.clone();
    obj.meta_mut().version = index;
    map.insert(obj.key().clone(), obj.clone());
    obj
}

/// The stored object that `obj` would replace, if `obj` was based on its current version
/// (optimistic concurrency: a stale write is refused).
pub(super) fn current_for_update<T: Stored>(
    map: &BTreeMap<T::Id, T>,
    obj: &T,
) -> Result<T, CommandError> {
    let current = map
        .get(obj.key())
        .ok_or_else(|| not_found::<T>(obj.key()))?;
    check_version(
        T::KIND,
        &obj.key().to_string(),
        current.meta().version,
        obj.meta().version,
    )?;
    Ok(current.clone())
}

/// Replaces `old` with `obj` at version `index`, keeping its creation time; returns what
/// was stored.
pub(super) fn replace<T: Stored>(map: &mut BTreeMap<T::Id, T>, index: u64, old: &T, obj: &T) -> T {
    let mut obj = obj.clone();
    obj.meta_mut().version = index;
    obj.meta_mut().created_at = old.meta().created_at;
    map.insert(obj.key().clone(), obj.clone());
    obj
}

/// Removes and returns the object.
pub(super) fn take<T: Stored>(map: &mut BTreeMap<T::Id, T>, id: &T::Id) -> Result<T, CommandError> {
    map.remove(id).ok_or_else(|| not_found::<T>(id))
}

/// A whole map from a snapshot, every object at version `index`.
pub(super) fn restored<T: Stored>(items: &[T], index: u64) -> BTreeMap<T::Id, T> {
    items
        .iter()
        .map(|x| {
            let mut x = x.clone();
            x.meta_mut().version = index;
            (x.key().clone(), x)
        })
        .collect()
}

pub(super) fn check_version(
    kind: &str,
    id: &str,
    current: u64,
    given: u64,
) -> Result<(), CommandError> {
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
