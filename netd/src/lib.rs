//! A node's networking. The pure core: what the overlay should look like ([`model`]), the
//! intent-level operations that take the kernel from what it has to that ([`diff`]), and the
//! narrow edge they are applied through ([`netlink`], with an in-memory [`fake`] for tests
//! and the rtnetlink [`kernel`] for real). Around it, the kernel edges of the rest: network
//! namespaces ([`netns`]), the egress bridge ([`gateway`]), nftables rulesets for VIPs and
//! published ports ([`nft`]), the embedded DNS ([`dns`]); and the [`agent`] that keeps all
//! of it in line with the cluster's view as the dispatcher sends it.

pub mod agent;
pub mod diff;
pub mod dns;
pub mod fake;
pub mod gateway;
pub mod kernel;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod nft;

pub use diff::{diff, NetOp};
pub use kernel::{underlay_mtu, KernelNetlink, TaskNetns};
pub use model::{desired, DesiredState, Mac, NodeView, ObservedState, RemoteTask};
pub use netlink::{apply, apply_all, NetdError, Netlink, NetlinkError};
