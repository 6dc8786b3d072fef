//! The edge to the kernel, in intents (STYLE.md section 3): the real implementation wraps
//! rtnetlink (not built yet), [`crate::fake::FakeNetlink`] keeps an in-memory model.
use crate::diff::NetOp;
use crate::model::{BridgeSpec, Mac, ObservedState, VethSpec, VxlanSpec};
use rswarm_proto::model::Ipv4Cidr;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// What the kernel answered (an errno's text).
    #[error("{0}")]
    Os(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetdError {
    #[error("{op}: {source}")]
    Apply {
        op: Box<NetOp>,
        #[source]
        source: NetlinkError,
    },
}

/// What netd asks of the kernel. Every method names a sandbox by its namespace name; a
/// sandbox's links, addresses and entries live in it.
pub trait Netlink {
    /// The sandboxes this node has, with their links, addresses, FDB and neighbour entries.
    fn observe(&self) -> Result<ObservedState, NetlinkError>;
    fn create_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError>;
    /// With everything in it (veths take their task sides along).
    fn delete_sandbox(&mut self, sandbox: &str) -> Result<(), NetlinkError>;
    /// Create the bridge, up; fine if it exists as asked.
    fn ensure_bridge(&mut self, sandbox: &str, spec: &BridgeSpec) -> Result<(), NetlinkError>;
    /// Create the VXLAN device on the host, move it into the sandbox, enslave it, up; fine
    /// if it exists as asked.
    fn ensure_vxlan(&mut self, sandbox: &str, spec: &VxlanSpec) -> Result<(), NetlinkError>;
    /// Create the veth pair: one end on the sandbox's bridge, the other in the task's
    /// namespace with its MAC, both up; fine if it exists as asked.
    fn ensure_veth(&mut self, sandbox: &str, spec: &VethSpec) -> Result<(), NetlinkError>;
    /// On `link`, or on a veth's task side.
    fn add_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError>;
    fn del_addr(&mut self, sandbox: &str, link: &str, addr: Ipv4Cidr) -> Result<(), NetlinkError>;
    /// Add or replace a permanent FDB entry.
    fn set_fdb(
        &mut self,
        sandbox: &str,
        dev: &str,
        mac: Mac,
        dst: Ipv4Addr,
    ) -> Result<(), NetlinkError>;
    fn del_fdb(&mut self, sandbox: &str, dev: &str, mac: Mac) -> Result<(), NetlinkError>;
    /// Add or replace a permanent neighbour entry.
    fn set_neigh(
        &mut self,
        sandbox: &str,
        dev: &str,
        ip: Ipv4Addr,
        mac: Mac,
    ) -> Result<(), NetlinkError>;
    fn del_neigh(&mut self, sandbox: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NetlinkError>;
    fn del_link(&mut self, sandbox: &str, name: &str) -> Result<(), NetlinkError>;
}

/// Apply `ops` in order, stopping at the first that fails. What was done stays done: the
/// next diff against a fresh observation picks up from there.
pub fn apply(netlink: &mut dyn Netlink, ops: &[NetOp]) -> Result<(), NetdError> {
    for op in ops {
        tracing::debug!(%op, "netd");
        one(netlink, op).map_err(|source| NetdError::Apply {
            op: Box::new(op.clone()),
            source,
        })?;
    }
    Ok(())
}

/// Apply every op of `ops` in order, going on past failures, and return the failures: a
/// kernel call that fails for one task must not hold up the others (ops that depended on a
/// failed one fail too, and say so). The next diff retries what failed.
pub fn apply_all(netlink: &mut dyn Netlink, ops: &[NetOp]) -> Vec<NetdError> {
    let mut failed = Vec::new();
    for op in ops {
        tracing::debug!(%op, "netd");
        if let Err(source) = one(netlink, op) {
            failed.push(NetdError::Apply {
                op: Box::new(op.clone()),
                source,
            });
        }
    }
    failed
}

fn one(nl: &mut dyn Netlink, op: &NetOp) -> Result<(), NetlinkError> {
    match op {
        NetOp::CreateSandbox { sandbox } => nl.create_sandbox(sandbox),
        NetOp::CreateBridge { sandbox, spec } => nl.ensure_bridge(sandbox, spec),
        NetOp::CreateVxlan { sandbox, spec } => nl.ensure_vxlan(sandbox, spec),
        NetOp::CreateVeth { sandbox, spec } => nl.ensure_veth(sandbox, spec),
        NetOp::AddAddr {
            sandbox,
            link,
            addr,
        } => nl.add_addr(sandbox, link, *addr),
        NetOp::DelAddr {
            sandbox,
            link,
            addr,
        } => nl.del_addr(sandbox, link, *addr),
        NetOp::SetFdb {
            sandbox,
            dev,
            mac,
            dst,
        } => nl.set_fdb(sandbox, dev, *mac, *dst),
        NetOp::DelFdb { sandbox, dev, mac } => nl.del_fdb(sandbox, dev, *mac),
        NetOp::SetNeigh {
            sandbox,
            dev,
            ip,
            mac,
        } => nl.set_neigh(sandbox, dev, *ip, *mac),
        NetOp::DelNeigh { sandbox, dev, ip } => nl.del_neigh(sandbox, dev, *ip),
        NetOp::DelLink { sandbox, name } => nl.del_link(sandbox, name),
        NetOp::DeleteSandbox { sandbox } => nl.delete_sandbox(sandbox),
    }
}
