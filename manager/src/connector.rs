//! Channels to other nodes' cluster ports, authenticated with this node's certificate.

use crate::tls::{self, NodeCredentials, TlsError};
use std::sync::{Arc, RwLock};
use tonic::transport::Channel;

/// Opens (lazily connecting) gRPC channels to a manager's cluster port.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, TlsError>;
    /// A channel to any node's cluster port (workers too), verified by the node id its
    /// certificate names.
    fn node_channel(&self, addr: &str, _node_id: &str) -> Result<Channel, TlsError> {
        self.channel(addr)
    }
}

/// The real connector: mutual TLS with the node's current credentials, which change when
/// the certificate is renewed or re-issued for a new role.
pub struct TlsConnector {
    config: RwLock<Arc<rustls::ClientConfig>>,
}

impl TlsConnector {
    pub fn new(creds: &NodeCredentials) -> Result<Self, TlsError> {
        Ok(Self {
            config: RwLock::new(tls::client_config(creds)?),
        })
    }

    pub fn update(&self, creds: &NodeCredentials) -> Result<(), TlsError> {
        let cfg = tls::client_config(creds)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(())
    }
}

impl Connector for TlsConnector {
    fn channel(&self, addr: &str) -> Result<Channel, TlsError> {
        let cfg = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tls::connect_lazy(addr, tls::MANAGER_SERVER_NAME, cfg)
    }

    fn node_channel(&self, addr: &str, node_id: &str) -> Result<Channel, TlsError> {
        let cfg = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tls::connect_lazy(addr, node_id, cfg)
    }
}
