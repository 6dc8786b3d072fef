//! netd's pure core: what a node's overlay networking should look like ([`model`]), the
//! intent-level operations that take the kernel from what it has to that ([`diff`]), and the
//! narrow edge those operations are applied through ([`netlink`], with an in-memory
//! [`fake`]). Nothing here touches the kernel: the rtnetlink implementation of [`Netlink`]
//! and the wiring into the worker come later (STYLE.md section 3).

pub mod diff;
pub mod fake;
pub mod model;
pub mod netlink;

pub use diff::{diff, NetOp};
pub use model::{desired, DesiredState, Mac, NodeView, ObservedState, RemoteTask};
pub use netlink::{apply, NetdError, Netlink, NetlinkError};
