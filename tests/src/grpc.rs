//! Direct gRPC calls, for what the CLI cannot express: the control API on a daemon's Unix
//! socket (as `cli/src/client.rs` dials it), and the cluster port over mutual TLS with a
//! node's certificate files, through a TLS client of our own (rustls), not the product's.

use hyper_util::rt::TokioIo;
use rswarm_proto::pb;
use rswarm_proto::pb::control_client::ControlClient;
use rswarm_proto::pb::dispatcher_client::DispatcherClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Runs `f` to completion on a fresh current-thread runtime (the tests themselves are
/// synchronous).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(f)
}

/// A control API client on the daemon's Unix socket at `socket`.
pub async fn control(socket: &Path) -> Result<ControlClient<Channel>, String> {
    let path = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://rswarm.sock")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
    Ok(ControlClient::new(channel))
}

/// A node's TLS identity as `rswarm daemon` keeps it in `DATA_DIR/certificates/`.
pub struct NodeCertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NodeCertFiles {
    /// The files under `data_dir/certificates`: `ca.crt`, `node.crt`, `node.key`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        let d = data_dir.join("certificates");
        Self {
            ca: d.join("ca.crt"),
            cert: d.join("node.crt"),
            key: d.join("node.key"),
        }
    }

    /// Reads them into memory (a daemon that leaves the cluster deletes them).
    pub fn read(&self) -> Result<NodeCerts, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
        Ok(NodeCerts {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
        })
    }
}

/// PEM bytes of a node's CA certificate, certificate and key.
#[derive(Clone)]
pub struct NodeCerts {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn tls_config(certs: &NodeCerts) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&certs.ca_pem) {
        roots
            .add(c.map_err(|e| format!("CA PEM: {e}"))?)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(&certs.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("node certificate PEM: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(&certs.key_pem).map_err(|e| format!("node key PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A Dispatcher client on the cluster port at `addr` (`127.0.0.1:PORT`), authenticated with
/// `certs`; the server must present a manager certificate of the same CA.
/// `Err` when the TCP connection or the TLS handshake fails.
pub async fn dispatcher(
    addr: &str,
    certs: &NodeCerts,
) -> Result<DispatcherClient<Channel>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(certs)?));
    let server_name = ServerName::try_from(rswarm_manager::tls::MANAGER_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .to_owned();
    let target = addr.to_owned();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, name, target) =
                (connector.clone(), server_name.clone(), target.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(target).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text = format!("{text}: {s}");
                src = s.source();
            }
            format!("connect to {addr} over TLS: {text}")
        })?;
    Ok(DispatcherClient::new(channel))
}

/// How the cluster port answered a Dispatcher call made with some node's certificate.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// The TCP connection or the TLS handshake failed.
    NoConnection(String),
    /// The RPC answered with this status.
    Status(tonic::Status),
    /// The RPC succeeded.
    Accepted,
}

/// Connects to `addr` with `certs` and sends a `Dispatcher.Heartbeat` for a session that
/// does not exist. A member's certificate gets "session not found" (it was authenticated);
/// a removed node's must be refused before that.
pub async fn probe_heartbeat(addr: &str, certs: &NodeCerts) -> ProbeOutcome {
    let mut client = match dispatcher(addr, certs).await {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::NoConnection(e),
    };
    let mut req = tonic::Request::new(pb::HeartbeatRequest {
        session_id: "rswarm-tests-no-such-session".into(),
    });
    req.set_timeout(Duration::from_secs(10));
    match client.heartbeat(req).await {
        Ok(_) => ProbeOutcome::Accepted,
        Err(s) => ProbeOutcome::Status(s),
    }
}

/// Opens a `Dispatcher.Session` with `certs` and reads its first message.
pub async fn probe_session(addr: &str, certs: &NodeCerts) -> ProbeOutcome {
    let mut client = match dispatcher(addr, certs).await {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::NoConnection(e),
    };
    let mut req = tonic::Request::new(pb::SessionRequest {
        description: None,
        advertise_addr: String::new(),
    });
    req.set_timeout(Duration::from_secs(10));
    match client.session(req).await {
        Err(s) => ProbeOutcome::Status(s),
        Ok(resp) => match resp.into_inner().message().await {
            Ok(Some(_)) => ProbeOutcome::Accepted,
            Ok(None) => ProbeOutcome::Status(tonic::Status::unknown("session stream ended")),
            Err(s) => ProbeOutcome::Status(s),
        },
    }
}
