//! Mutual TLS on the cluster port and on the channels to it.
//!
//! Every connection to the cluster port is TLS with certificates from the cluster CA. The
//! server asks for a client certificate but does not require one, because the join RPC must
//! accept a node that has none yet; each handler decides with [`peer_info`] whether the caller
//! may do what it asks. A joining node has no CA to trust yet, so [`join_client_config`]
//! trusts exactly the CA its join token pins (by digest), never the first one it sees.
//!
//! Entry points: server side [`CertSwitch`], [`server_config`], [`incoming`], [`peer_info`];
//! client side [`client_config`], [`join_client_config`], [`connect`], [`connect_lazy`].

use crate::ca::{ca_digest_base36, cert_der_to_pem, parse_cert_der, CertInfo, JoinToken};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, warn};

/// The name managers are dialled by: every manager certificate carries it as a SAN, so a
/// client checks "is a manager of this cluster" rather than a particular address.
pub const MANAGER_SERVER_NAME: &str = crate::ca::MANAGER_OU;

/// gRPC is HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";
/// A client that has not finished its handshake by then is dropped, so that idle sockets
/// cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings notice a dead peer (e.g. a partitioned manager) long before TCP would.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the {what} PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no {what} in the PEM")]
    Missing { what: &'static str },
    #[error("{what}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("invalid TLS server name {name:?}")]
    ServerName { name: String },
    #[error("invalid address {addr:?}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl TlsError {
    /// Worth retrying: the peer may come back. Everything else is a configuration problem.
    pub fn is_temporary(&self) -> bool {
        matches!(self, TlsError::Connect { .. })
    }
}

/// A node's TLS identity, all PEM. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// The crypto provider is chosen explicitly: relying on the process default would break as
/// soon as some other crate in the build enables a second rustls provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Missing { what });
    }
    Ok(certs)
}

fn leaf_from_pem(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    let what = "node certificate";
    certs_from_pem(pem, what)?
        .into_iter()
        .next()
        .ok_or(TlsError::Missing { what })
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| TlsError::Pem {
        what: "node key",
        source,
    })
}

/// Every certificate in `ca_pem` becomes a root (more than one during a CA rotation).
fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: "adding the cluster CA to the trust roots",
            source,
        })?;
    }
    Ok(roots)
}

/// The node certificate the cluster port presents, swappable at run time so that a renewed
/// or re-issued certificate (e.g. after promotion) applies to new connections without
/// restarting the listener. Established connections keep the certificate they started with.
#[derive(Debug)]
pub struct CertSwitch {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSwitch {
    pub fn new(creds: &NodeCredentials) -> Result<CertSwitch, TlsError> {
        Ok(CertSwitch {
            current: RwLock::new(Arc::new(certified_key(creds)?)),
        })
    }

    /// Presents `creds` from the next handshake on. On error the old certificate stays.
    pub fn set(&self, creds: &NodeCredentials) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(creds)?);
        // A poisoned lock still holds a whole Arc (the write is a single assignment).
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ResolvesServerCert for CertSwitch {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The chain is [node certificate, CA certificate(s)]: a joining node has no CA yet and
/// finds the one its token pins in this chain.
fn certified_key(creds: &NodeCredentials) -> Result<CertifiedKey, TlsError> {
    let mut chain = vec![leaf_from_pem(&creds.cert_pem)?];
    chain.extend(certs_from_pem(&creds.ca_pem, "CA certificate")?);
    CertifiedKey::from_der(chain, key_from_pem(&creds.key_pem)?, &provider()).map_err(|source| {
        TlsError::Rustls {
            what: "loading the node key and certificate",
            source,
        }
    })
}

/// The cluster port's TLS configuration: a client certificate is verified against the
/// cluster CA when one is presented (a bad one fails the handshake), and optional otherwise.
pub fn server_config(switch: Arc<CertSwitch>, ca_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(TlsError::ClientVerifier)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "choosing TLS versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(switch);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// TLS connections accepted on `listener`, for `Server::serve_with_incoming`. Handshakes run
/// concurrently in their own tasks, so a slow or failing client delays nobody; failures are
/// logged at debug and skipped, never ending the stream. The listener closes when the stream
/// is dropped. Must be called within a Tokio runtime.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>>
       + Send
       + 'static {
    incoming_with_timeout(listener, config, HANDSHAKE_TIMEOUT)
}

fn incoming_with_timeout(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>>
       + Send
       + 'static {
    // Small buffer: if the server stops taking connections, handshaken ones wait here.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        tx,
        handshake_timeout,
    ));
    ReceiverStream::new(rx).map(Ok)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<tokio_rustls::server::TlsStream<TcpStream>>,
    handshake_timeout: Duration,
) {
    loop {
        let accepted = tokio::select! {
            // The server dropped the stream: stop listening.
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, "accepting a connection on the cluster port");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(peer.addr = %peer, %error, "setting TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only if the server is gone; the connection is then dropped.
                    let _ = tx.send(tls).await;
                }
                Ok(Err(error)) => debug!(peer.addr = %peer, %error, "TLS handshake failed"),
                Err(_) => debug!(peer.addr = %peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Who the caller is, from the client certificate it presented on the cluster port, which
/// the handshake already verified against the cluster CA. `None` for a caller without a
/// certificate (a joining node) or with one that names no node. Whether that node is still a
/// member (not removed) is for the handler to check.
pub fn peer_info<T>(req: &tonic::Request<T>) -> Option<CertInfo> {
    // tonic's `Connected` impl for tokio-rustls' TlsStream puts the verified chain here.
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    match parse_cert_der(leaf) {
        Ok(info) => Some(info),
        Err(error) => {
            debug!(%error, "peer certificate names no node");
            None
        }
    }
}

/// TLS configuration for a node with credentials: the cluster CA is the only root, and the
/// node authenticates with its certificate.
pub fn client_config(creds: &NodeCredentials) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "choosing TLS versions",
            source,
        })?
        .with_root_certificates(root_store(&creds.ca_pem)?)
        .with_client_auth_cert(
            vec![leaf_from_pem(&creds.cert_pem)?],
            key_from_pem(&creds.key_pem)?,
        )
        .map_err(|source| TlsError::Rustls {
            what: "loading the node key and certificate",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificate a join handshake verified against its token, for the joining node to
/// store as its trust root. Empty until a handshake has succeeded.
#[derive(Debug, Clone, Default)]
pub struct VerifiedCa(Arc<Mutex<Option<Vec<u8>>>>);

impl VerifiedCa {
    pub fn der(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pem(&self) -> Option<String> {
        self.der().map(|der| cert_der_to_pem(&der))
    }

    fn set(&self, der: Vec<u8>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(der);
    }
}

/// TLS configuration for joining: no client certificate, and the server is trusted only if
/// its chain contains the CA the token pins and its certificate verifies against that CA.
/// The returned [`VerifiedCa`] yields that CA once a handshake has succeeded.
pub fn join_client_config(token: &JoinToken) -> Result<(Arc<ClientConfig>, VerifiedCa), TlsError> {
    let provider = provider();
    let verified = VerifiedCa::default();
    let verifier = JoinVerifier {
        ca_digest: token.ca_digest().to_owned(),
        provider: provider.clone(),
        verified: verified.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "choosing TLS versions",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((Arc::new(config), verified))
}

/// Pins the CA by the token's digest, then does the ordinary WebPKI check of the server
/// certificate (signature, validity, EKU, server name) with that CA as the only root.
#[derive(Debug)]
struct JoinVerifier {
    ca_digest: String,
    provider: Arc<CryptoProvider>,
    verified: VerifiedCa,
}

impl ServerCertVerifier for JoinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| ca_digest_base36(c) == self.ca_digest)
        else {
            debug!("the server's chain has no CA matching the join token");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("building the join verifier: {e}")))?;
        let verified =
            webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        self.verified.set(ca.to_vec());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Dials TCP and does the TLS handshake, for tonic's `connect_with_connector`; the URI is
/// ignored in favour of the address given at construction.
#[derive(Clone)]
struct TlsDialer {
    addr: Arc<str>,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl tower::Service<Uri> for TlsDialer {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&*this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

fn endpoint(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<(Endpoint, TlsDialer), TlsError> {
    let server_name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| TlsError::ServerName {
            name: server_name.to_owned(),
        })?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| TlsError::Address {
            addr: addr.to_owned(),
            source,
        })?
        // Covers TCP connect and the TLS handshake: tonic wraps the connector.
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let dialer = TlsDialer {
        addr: Arc::from(addr),
        server_name,
        connector: TlsConnector::from(config),
    };
    Ok((endpoint, dialer))
}

/// A channel to `addr` (`host:port`) over TLS, connected before returning. Managers are
/// addressed as [`MANAGER_SERVER_NAME`].
pub async fn connect(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TlsError> {
    let (endpoint, dialer) = endpoint(addr, server_name, config)?;
    endpoint
        .connect_with_connector(dialer)
        .await
        .map_err(|source| TlsError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

/// Like [`connect`], but connects on first use and reconnects by itself after a failure;
/// errors show up on the RPCs instead.
pub fn connect_lazy(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TlsError> {
    let (endpoint, dialer) = endpoint(addr, server_name, config)?;
    Ok(endpoint.connect_with_connector_lazy(dialer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{generate_key_and_csr, generate_secret, CaError, RootCa};
    use rswarm_proto::model::{ClusterId, NodeId, NodeRole};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tokio::io::AsyncReadExt;
    use tonic::codegen::http;
    use tonic::server::{NamedService, UnaryService};
    use tonic_prost::ProstCodec;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Connects, expecting a refusal; returns the error chain as text.
    async fn refused(addr: &str, config: Arc<ClientConfig>) -> Result<String, String> {
        match connect(addr, MANAGER_SERVER_NAME, config).await {
            Ok(_) => Err("connected".to_owned()),
            Err(e) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                Ok(text)
            }
        }
    }

    fn creds(ca: &RootCa, node: &str, role: NodeRole) -> Result<NodeCredentials, CaError> {
        let (key_pem, csr) = generate_key_and_csr()?;
        let cert_pem = ca.sign_csr(
            &csr,
            &NodeId::from(node),
            role,
            &ClusterId::from("c1"),
            Duration::from_secs(3600),
        )?;
        Ok(NodeCredentials {
            key_pem,
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        })
    }

    /// A one-method gRPC service that answers with who `peer_info` says the caller is.
    #[derive(Clone)]
    struct WhoAmI;

    impl NamedService for WhoAmI {
        const NAME: &'static str = "rswarm.test.WhoAmI";
    }

    struct WhoHandler;

    impl UnaryService<String> for WhoHandler {
        type Response = String;
        type Future = std::future::Ready<Result<tonic::Response<String>, tonic::Status>>;

        fn call(&mut self, req: tonic::Request<String>) -> Self::Future {
            let who = match peer_info(&req) {
                Some(info) => format!("{} {}", info.node_id, info.role.as_str()),
                None => "anonymous".to_owned(),
            };
            std::future::ready(Ok(tonic::Response::new(who)))
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, String>::default());
                Ok(grpc.unary(WhoHandler, req).await)
            })
        }
    }

    async fn who(channel: Channel) -> Result<String, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/rswarm.test.WhoAmI/Who");
        let resp = grpc
            .unary(
                tonic::Request::new(String::new()),
                path,
                ProstCodec::<String, String>::default(),
            )
            .await?;
        Ok(resp.into_inner())
    }

    /// A cluster port serving WhoAmI with `server` credentials.
    async fn serve(
        server: &NodeCredentials,
    ) -> Result<(String, Arc<CertSwitch>), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let switch = Arc::new(CertSwitch::new(server)?);
        let config = server_config(switch.clone(), &server.ca_pem)?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WhoAmI)
                .serve_with_incoming(incoming(listener, config)),
        );
        Ok((addr, switch))
    }

    #[tokio::test]
    async fn mutual_tls_names_the_client() -> TestResult {
        let ca = RootCa::generate()?;
        let (addr, _) = serve(&creds(&ca, "m1", NodeRole::Manager)?).await?;

        let worker = client_config(&creds(&ca, "w1", NodeRole::Worker)?)?;
        let channel = connect(&addr, MANAGER_SERVER_NAME, worker).await?;
        assert_eq!(who(channel).await?, "w1 worker");

        let manager = client_config(&creds(&ca, "m2", NodeRole::Manager)?)?;
        let channel = connect_lazy(&addr, MANAGER_SERVER_NAME, manager)?;
        assert_eq!(who(channel).await?, "m2 manager");
        Ok(())
    }

    #[tokio::test]
    async fn joining_client_without_certificate_is_anonymous() -> TestResult {
        let ca = RootCa::generate()?;
        let (addr, _) = serve(&creds(&ca, "m1", NodeRole::Manager)?).await?;

        let token = JoinToken::new(&ca, generate_secret());
        let (config, verified) = join_client_config(&token)?;
        assert_eq!(verified.der(), None);
        let channel = connect(&addr, MANAGER_SERVER_NAME, config).await?;
        assert_eq!(who(channel).await?, "anonymous");
        assert_eq!(verified.der().as_deref(), Some(ca.cert_der()));
        let pem = verified.pem().ok_or("no verified CA")?;
        assert_eq!(RootCa::from_pem(&pem, ca.key_pem())?.digest(), ca.digest());
        Ok(())
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_refused() -> TestResult {
        let ca = RootCa::generate()?;
        let other = RootCa::generate()?;
        let (addr, _) = serve(&creds(&ca, "m1", NodeRole::Manager)?).await?;

        // Trusts the right CA, but authenticates with a certificate from another one.
        let mut intruder = creds(&other, "w1", NodeRole::Worker)?;
        intruder.ca_pem = ca.cert_pem().to_owned();
        // With TLS 1.3 the client may finish its side before the server refuses, so the
        // refusal can show on connect or on the first RPC; either way no RPC gets through.
        let result = match connect(&addr, MANAGER_SERVER_NAME, client_config(&intruder)?).await {
            Ok(channel) => who(channel).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // Both CAs are named "swarm-ca", so the server finds a root by name and then the
        // signature check fails (rustls sends that as a decrypt_error alert).
        let err = result.err().ok_or("the RPC got through")?;
        assert!(err.contains("alert"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn join_refuses_a_token_for_another_ca() -> TestResult {
        let ca = RootCa::generate()?;
        let other = RootCa::generate()?;
        let (addr, _) = serve(&creds(&ca, "m1", NodeRole::Manager)?).await?;

        let (config, verified) = join_client_config(&JoinToken::new(&other, generate_secret()))?;
        let err = refused(&addr, config).await?;
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert_eq!(verified.der(), None);
        Ok(())
    }

    #[tokio::test]
    async fn join_refuses_a_server_certificate_not_signed_by_the_pinned_ca() -> TestResult {
        let ca = RootCa::generate()?;
        let other = RootCa::generate()?;
        // The impostor shows the real CA in its chain, but its own certificate is from another.
        let mut impostor = creds(&other, "m1", NodeRole::Manager)?;
        impostor.ca_pem = ca.cert_pem().to_owned();
        let (addr, _) = serve(&impostor).await?;

        let (config, verified) = join_client_config(&JoinToken::new(&ca, generate_secret()))?;
        let err = refused(&addr, config).await?;
        assert!(err.contains("BadSignature"), "{err}");
        assert_eq!(verified.der(), None);
        Ok(())
    }

    #[tokio::test]
    async fn a_worker_cannot_pose_as_a_manager() -> TestResult {
        let ca = RootCa::generate()?;
        let (addr, _) = serve(&creds(&ca, "w1", NodeRole::Worker)?).await?;

        let (config, _) = join_client_config(&JoinToken::new(&ca, generate_secret()))?;
        let err = refused(&addr, config).await?;
        assert!(err.contains("not valid for name"), "{err}");
        let member = client_config(&creds(&ca, "w2", NodeRole::Worker)?)?;
        let err = refused(&addr, member).await?;
        assert!(err.contains("not valid for name"), "{err}");
        Ok(())
    }

    /// The CN of the certificate a raw TLS handshake with `addr` sees.
    async fn server_cn(
        addr: &str,
        config: Arc<ClientConfig>,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = TlsConnector::from(config)
            .connect(ServerName::try_from(MANAGER_SERVER_NAME)?, tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no server certificate")?;
        Ok(parse_cert_der(leaf)?.node_id.to_string())
    }

    #[tokio::test]
    async fn switched_certificate_applies_to_new_connections() -> TestResult {
        let ca = RootCa::generate()?;
        let (addr, switch) = serve(&creds(&ca, "m1", NodeRole::Manager)?).await?;
        let client = creds(&ca, "w1", NodeRole::Worker)?;
        // A fresh client config each time, so no session is resumed.
        assert_eq!(server_cn(&addr, client_config(&client)?).await?, "m1");
        switch.set(&creds(&ca, "m1-renewed", NodeRole::Manager)?)?;
        assert_eq!(
            server_cn(&addr, client_config(&client)?).await?,
            "m1-renewed"
        );

        // A broken update leaves the current certificate in place.
        let mut broken = creds(&ca, "m3", NodeRole::Manager)?;
        broken.key_pem = creds(&ca, "m4", NodeRole::Manager)?.key_pem;
        assert!(switch.set(&broken).is_err());
        assert_eq!(
            server_cn(&addr, client_config(&client)?).await?,
            "m1-renewed"
        );
        Ok(())
    }

    /// Stalled and failing handshakes neither block a good one nor end the stream.
    #[tokio::test]
    async fn incoming_skips_stalled_and_failed_handshakes() -> TestResult {
        let ca = RootCa::generate()?;
        let other = RootCa::generate()?;
        let server = creds(&ca, "m1", NodeRole::Manager)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let config = server_config(Arc::new(CertSwitch::new(&server)?), &server.ca_pem)?;
        let mut conns = Box::pin(incoming_with_timeout(
            listener,
            config,
            Duration::from_millis(500),
        ));

        // Connects and never says a word.
        let mut stalled = TcpStream::connect(addr).await?;

        // Presents a certificate from another CA: its handshake fails on the server.
        let mut intruder = creds(&other, "x", NodeRole::Worker)?;
        intruder.ca_pem = ca.cert_pem().to_owned();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(MANAGER_SERVER_NAME)?;
        let refused = match TlsConnector::from(client_config(&intruder)?)
            .connect(name.clone(), tcp)
            .await
        {
            // TLS 1.3: the server's alert arrives after the client's side is done.
            Ok(mut tls) => tls.read(&mut [0u8; 1]).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "the server accepted a certificate from another CA");

        // A good client gets through, and is the first connection the stream yields.
        let good = creds(&ca, "w1", NodeRole::Worker)?;
        let tcp = TcpStream::connect(addr).await?;
        let client = tokio::spawn(async move {
            let tls = TlsConnector::from(client_config(&good)?)
                .connect(name, tcp)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(tls)
        });
        let conn = tokio::time::timeout(Duration::from_secs(5), conns.next())
            .await?
            .ok_or("the stream ended")??;
        let leaf = conn
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no client certificate")?;
        assert_eq!(parse_cert_der(leaf)?.node_id, NodeId::from("w1"));
        let _client_side = client.await?.map_err(|e| e.to_string())?;

        // The stalled connection is dropped after the handshake timeout.
        let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut [0u8; 1])).await?;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        Ok(())
    }
}
