use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A node's id: 25 lowercase base-36 characters, as Swarm's.
    NodeId
);
string_id!(
    /// The cluster's id, carried in every node certificate's organisation.
    ClusterId
);

string_id!(
    /// A service's id: 25 base-36 characters.
    ServiceId
);
string_id!(
    /// A task's id: 25 base-36 characters.
    TaskId
);
string_id!(
    /// A network's id: 25 base-36 characters.
    NetworkId
);

/// A manager's member id in Raft. Distinct from [`NodeId`] so that a demoted and re-promoted
/// manager joins Raft as a new member, never reusing an id whose log it no longer has.
pub type RaftId = u64;
