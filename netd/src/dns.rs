//! The embedded DNS server every container sees at `127.0.0.11:53`, as in Docker Swarm.
//!
//! Cluster names (services, tasks, containers: whatever the [`NameSource`] knows) are answered
//! locally; everything else is forwarded to the node's upstream resolvers. The listening sockets
//! are created inside the container's network namespace, but the server itself runs as ordinary
//! tokio tasks in the daemon: a socket stays in the namespace it was created in, so no task ever
//! has to switch namespaces. Forwarded queries leave from sockets in the daemon's namespace, so
//! upstreams such as a host-local `127.0.0.53` stay reachable.
//!
//! All DNS wire handling goes through hickory: [`hickory_server::Server`] does the UDP/TCP
//! framing and request parsing, hickory-proto encodes and decodes upstream messages.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use nix::sched::{setns, CloneFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

/// Where containers find the embedded resolver (Docker's fixed address).
pub const DNS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// TTL of locally answered records. Docker uses 600 s for service and container names; we
/// match it because VIPs are stable for a service's lifetime and stub resolvers in containers
/// (glibc, musl) do not cache anyway.
pub const CLUSTER_TTL: u32 = 600;

/// How long one upstream gets to answer one forwarded query (per transport attempt).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle timeout of an inbound TCP connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per inbound TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Forwards in flight per server; beyond this a container flooding us gets SERVFAIL instead of
/// making the daemon open unbounded upstream sockets.
const MAX_INFLIGHT_FORWARDS: usize = 256;

/// The payload size we advertise to upstreams and to clients (the DNS-flag-day value that
/// avoids IP fragmentation).
const EDNS_PAYLOAD: u16 = 1232;

/// resolv.conf's MAXNS: glibc reads at most three nameservers, so do we.
const MAX_UPSTREAMS: usize = 3;

/// Where the cluster's names come from.
pub trait NameSource: Send + Sync + 'static {
    /// Addresses for `name` (lowercase, no trailing dot). `Some(addrs)`: the name is the
    /// cluster's (possibly with nothing running: `Some(vec![])`); `None`: not ours, so the
    /// query is forwarded upstream.
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>>;
}

/// Why the DNS server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path} (setns needs CAP_SYS_ADMIN): {source}")]
    EnterNetns { path: PathBuf, source: nix::Error },
    #[error(
        "cannot bind {proto} {addr} in network namespace {path}: address not available \
         (is `lo` up in that namespace?)"
    )]
    AddrNotAvailable {
        proto: &'static str,
        addr: SocketAddr,
        path: PathBuf,
    },
    #[error(
        "loopback is down in network namespace {path}: {addr} would be unreachable \
         (bring `lo` up first)"
    )]
    LoopbackDown { addr: SocketAddr, path: PathBuf },
    #[error("cannot bind {proto} {addr} in network namespace {path}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the thread creating DNS sockets in network namespace {path} failed: {reason}")]
    SetupThread { path: PathBuf, reason: String },
    #[error("cannot hand DNS {proto} socket to the async runtime: {source}")]
    Register {
        proto: &'static str,
        source: io::Error,
    },
    #[error("DNS server stopped with an error: {0}")]
    Server(String),
}

/// A running DNS server. Dropping it (or [`DnsHandle::shutdown`]) stops serving and closes its
/// sockets, so the same address can be bound again later.
pub struct DnsHandle {
    server: Server<DnsServer>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
}

impl DnsHandle {
    /// The address the UDP socket is bound to (in the namespace it was created in).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The address the TCP listener is bound to (in the namespace it was created in).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Stops serving and waits until the sockets are closed (unlike a plain drop, after which
    /// the tasks are aborted but may close their sockets a moment later).
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Server(e.to_string()))
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        // The server's JoinSet aborts its tasks on drop; cancelling first makes tasks that are
        // currently running stop at their next select as well.
        self.server.shutdown_token().cancel();
    }
}

impl std::fmt::Debug for DnsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHandle")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish()
    }
}

/// Serves DNS on `127.0.0.11:53` (UDP and TCP) inside the network namespace bind-mounted at
/// `netns`. The caller must have brought `lo` up in that namespace.
pub async fn serve_in_netns(
    netns: &Path,
    source: Arc<dyn NameSource>,
    upstreams: Vec<SocketAddr>,
) -> Result<DnsHandle, DnsError> {
    let path = netns.to_path_buf();
    let (tx, rx) = oneshot::channel();
    let thread_path = path.clone();
    // setns changes only the calling thread, so a throwaway thread enters the namespace; the
    // sockets it creates keep that namespace after it exits. Never a runtime worker thread.
    let spawned = std::thread::Builder::new()
        .name("rswarm-dns-netns".into())
        .spawn(move || {
            // The receiver is only gone if the caller was cancelled; the sockets then just close.
            let _ = tx.send(bind_in_netns(&thread_path));
        });
    if let Err(e) = spawned {
        return Err(DnsError::SetupThread {
            path,
            reason: e.to_string(),
        });
    }
    let (udp, tcp) = rx.await.map_err(|_| DnsError::SetupThread {
        path: path.clone(),
        reason: "it panicked".into(),
    })??;
    serve_on(udp, tcp, source, upstreams).await
}

fn bind_in_netns(path: &Path) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let file = File::open(path).map_err(|source| DnsError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| DnsError::EnterNetns {
        path: path.to_path_buf(),
        source,
    })?;
    let bind_err = |proto: &'static str, source: io::Error| {
        if source.kind() == io::ErrorKind::AddrNotAvailable {
            DnsError::AddrNotAvailable {
                proto,
                addr: DNS_ADDR,
                path: path.to_path_buf(),
            }
        } else {
            DnsError::Bind {
                proto,
                addr: DNS_ADDR,
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let udp = std::net::UdpSocket::bind(DNS_ADDR).map_err(|e| bind_err("udp", e))?;
    // std sets SO_REUSEADDR on Unix listeners, so a restarted server can rebind while old
    // connections sit in TIME_WAIT.
    let tcp = std::net::TcpListener::bind(DNS_ADDR).map_err(|e| bind_err("tcp", e))?;
    // Binding succeeds even while `lo` is down, but then nothing can reach the address; a UDP
    // connect does the route lookup without sending anything, so it tells the two apart.
    let probe = std::net::UdpSocket::bind((DNS_ADDR.ip(), 0)).and_then(|p| p.connect(DNS_ADDR));
    if let Err(e) = probe {
        if e.kind() == io::ErrorKind::NetworkUnreachable {
            return Err(DnsError::LoopbackDown {
                addr: DNS_ADDR,
                path: path.to_path_buf(),
            });
        }
        debug!(error = %e, "loopback reachability probe failed; serving anyway");
    }
    Ok((udp, tcp))
}

/// Serves DNS on already-bound sockets (any namespace, any address); must be called inside a
/// tokio runtime. Used by [`serve_in_netns`] and by tests on ephemeral loopback ports.
pub async fn serve_on(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    source: Arc<dyn NameSource>,
    upstreams: Vec<SocketAddr>,
) -> Result<DnsHandle, DnsError> {
    let register = |proto: &'static str| move |source| DnsError::Register { proto, source };
    udp.set_nonblocking(true).map_err(register("udp"))?;
    tcp.set_nonblocking(true).map_err(register("tcp"))?;
    let udp_addr = udp.local_addr().map_err(register("udp"))?;
    let tcp_addr = tcp.local_addr().map_err(register("tcp"))?;
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(register("udp"))?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(register("tcp"))?;

    let mut server = Server::new(DnsServer::new(source, upstreams));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    Ok(DnsHandle {
        server,
        udp_addr,
        tcp_addr,
    })
}

/// The nameservers of a resolv.conf, on port 53, at most three (as glibc reads). Lines that do
/// not parse are skipped; IPv6 zone suffixes (`fe80::1%eth0`) are not supported and skipped.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_UPSTREAMS)
        .collect()
}

/// The request handler: answers cluster names, forwards the rest. [`serve_on`] and
/// [`serve_in_netns`] wrap it in a [`hickory_server::Server`]; it is public for callers that
/// want to register other sockets themselves.
pub struct DnsServer {
    source: Arc<dyn NameSource>,
    upstreams: Vec<SocketAddr>,
    forwards: Semaphore,
}

impl DnsServer {
    /// A handler answering from `source` and forwarding everything else to `upstreams`
    /// (tried in order, each with [`UPSTREAM_TIMEOUT`]).
    pub fn new(source: Arc<dyn NameSource>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            source,
            upstreams,
            forwards: Semaphore::new(MAX_INFLIGHT_FORWARDS),
        }
    }

    async fn handle<R: ResponseHandler>(
        &self,
        request: &Request,
        mut responder: R,
    ) -> ResponseInfo {
        let meta = request.metadata;
        let reply = self.reply(request).await;

        // Answer with EDNS only if asked with it (RFC 6891 6.1.1); never advertise more than
        // the client did, since that limit also decides where a UDP answer gets truncated.
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD))
                .set_version(0)
                .set_dnssec_ok(req.flags().dnssec_ok);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }

        let mut metadata = Metadata::response_from_request(&meta);
        metadata.recursion_available = true;
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.authentic_data = reply.authentic_data;
        metadata.truncation = reply.truncated;
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match responder.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, id = meta.id, "cannot send DNS response");
                let mut failed = Metadata::response_from_request(&meta);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }

    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let info = match request.request_info() {
            Ok(info) => info,
            // Not exactly one question.
            Err(_) => return Reply::code(ResponseCode::FormErr),
        };
        let query = info.query;
        if query.query_class() == DNSClass::IN {
            let name = query.name().to_string();
            let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
            if let Some(addrs) = self.source.lookup(&name) {
                return local_reply(query.original(), addrs);
            }
        }

        let Ok(_permit) = self.forwards.try_acquire() else {
            warn!("too many DNS queries being forwarded; answering SERVFAIL");
            return Reply::code(ResponseCode::ServFail);
        };
        let dnssec_ok = request
            .edns
            .as_ref()
            .is_some_and(|edns| edns.flags().dnssec_ok);
        let mut last_error = None;
        for upstream in &self.upstreams {
            match forward(*upstream, query.original(), &request.metadata, dnssec_ok).await {
                Ok(msg) => {
                    let code = msg.metadata.response_code;
                    // Like glibc, another server may do better after SERVFAIL/REFUSED; remember
                    // the answer in case none does.
                    if code == ResponseCode::ServFail || code == ResponseCode::Refused {
                        debug!(%upstream, %code, "upstream failed the query; trying the next");
                        last_error = Some(msg);
                        continue;
                    }
                    return Reply::relay(msg);
                }
                Err(error) => debug!(%upstream, %error, "forwarding DNS query failed"),
            }
        }
        // Docker answers SERVFAIL both when no upstream is configured and when none answered.
        last_error.map_or_else(|| Reply::code(ResponseCode::ServFail), Reply::relay)
    }
}

impl RequestHandler for DnsServer {
    // `RequestHandler` is declared with `#[async_trait]`; this is that macro's expansion,
    // written out so netd need not depend on async-trait.
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}

/// What goes into a response besides what the request fixes.
#[derive(Default)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    authentic_data: bool,
    truncated: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Self {
        Self {
            code,
            ..Self::default()
        }
    }

    fn relay(msg: Message) -> Self {
        Self {
            code: msg.metadata.response_code,
            authoritative: msg.metadata.authoritative,
            authentic_data: msg.metadata.authentic_data,
            truncated: msg.metadata.truncation,
            answers: msg.answers,
            authorities: msg.authorities,
            additionals: msg.additionals,
        }
    }
}

fn local_reply(query: &Query, mut addrs: Vec<Ipv4Addr>) -> Reply {
    if addrs.is_empty() {
        // A known name with nothing running. Docker has no record for it then and its lookup
        // falls through to the upstreams, which answer NXDOMAIN for a bare cluster name; we
        // give that answer ourselves without leaking cluster names or waiting on upstreams.
        return Reply {
            code: ResponseCode::NXDomain,
            authoritative: true,
            ..Reply::default()
        };
    }
    // Other types (AAAA, MX, ...) get an empty NOERROR, like Docker: the name exists, and an
    // error would send stub resolvers on to search domains or other servers.
    let answers = if query.query_type() == RecordType::A {
        shuffle(&mut addrs);
        addrs
            .into_iter()
            .map(|ip| Record::from_rdata(query.name().clone(), CLUSTER_TTL, RData::A(A(ip))))
            .collect()
    } else {
        Vec::new()
    };
    Reply {
        code: ResponseCode::NoError,
        authoritative: true,
        answers,
        ..Reply::default()
    }
}

/// Fisher-Yates with std's randomly keyed SipHash as the random source: clients mostly take
/// the first address, so a fresh order per answer spreads them (Docker shuffles too).
fn shuffle<T>(items: &mut [T]) {
    let state = RandomState::new();
    for i in (1..items.len()).rev() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        // The modulo bias is irrelevant for a handful of addresses.
        let j = (hasher.finish() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot encode the query: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
    #[error("no answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout,
    #[error("answer too long for TCP framing")]
    TooLong,
}

/// Asks one upstream: UDP first, TCP if the UDP answer came back truncated.
async fn forward(
    upstream: SocketAddr,
    query: &Query,
    request: &Metadata,
    dnssec_ok: bool,
) -> Result<Message, ForwardError> {
    // A fresh random id (Message::query picks one) rather than the client's, so an off-path
    // attacker cannot predict it; the answer is relayed under the client's id.
    let mut msg = Message::query();
    msg.metadata.recursion_desired = request.recursion_desired;
    msg.metadata.checking_disabled = request.checking_disabled;
    msg.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(dnssec_ok);
    msg.set_edns(edns);
    let id = msg.metadata.id;
    let wire = msg.to_vec()?;

    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(upstream, &wire, id, query))
        .await
        .map_err(|_| ForwardError::Timeout)??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    debug!(%upstream, "truncated UDP answer; retrying over TCP");
    tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(upstream, &wire, id, query))
        .await
        .map_err(|_| ForwardError::Timeout)?
}

async fn forward_udp(
    upstream: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    // Created here, on a runtime thread, so it lives in the daemon's namespace; connecting
    // makes the kernel drop datagrams from anyone but the upstream.
    let socket = tokio::net::UdpSocket::bind((local, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(wire).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Garbage or an answer to something else: keep waiting for ours until the timeout.
        match Message::from_vec(&buf[..n]) {
            Ok(msg) if answers(&msg, id, query) => return Ok(msg),
            Ok(_) => debug!(%upstream, "ignoring a mismatched DNS answer"),
            Err(error) => debug!(%upstream, %error, "ignoring an undecodable DNS answer"),
        }
    }
}

async fn forward_tcp(
    upstream: SocketAddr,
    wire: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, ForwardError> {
    let len = u16::try_from(wire.len()).map_err(|_| ForwardError::TooLong)?;
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    // RFC 1035 4.2.2: each message is preceded by its length as two bytes.
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        match Message::from_vec(&buf) {
            Ok(msg) if answers(&msg, id, query) => return Ok(msg),
            Ok(_) => debug!(%upstream, "ignoring a mismatched DNS answer"),
            Err(error) => debug!(%upstream, %error, "ignoring an undecodable DNS answer"),
        }
    }
}

/// Whether `msg` is the answer to our query `id` for `query` (names compared ignoring case).
fn answers(msg: &Message, id: u16, query: &Query) -> bool {
    msg.metadata.id == id
        && msg.metadata.message_type == hickory_proto::op::MessageType::Response
        && msg.queries.len() == 1
        && msg.queries[0].query_type() == query.query_type()
        && msg.queries[0].query_class() == query.query_class()
        && *msg.queries[0].name() == *query.name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::Name;
    use std::collections::HashMap;
    use std::str::FromStr;

    struct Names(HashMap<&'static str, Vec<Ipv4Addr>>);

    impl NameSource for Names {
        fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
            self.0.get(name).cloned()
        }
    }

    fn names() -> Arc<dyn NameSource> {
        Arc::new(Names(HashMap::from([
            (
                "web",
                vec![
                    Ipv4Addr::new(10, 0, 0, 2),
                    Ipv4Addr::new(10, 0, 0, 3),
                    Ipv4Addr::new(10, 0, 0, 4),
                ],
            ),
            ("idle", vec![]),
        ])))
    }

    async fn start(upstreams: Vec<SocketAddr>) -> DnsHandle {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        serve_on(udp, tcp, names(), upstreams)
            .await
            .expect("serve_on")
    }

    fn query(name: &str, rtype: RecordType) -> Message {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        // from_ascii keeps the case (from_str goes through IDNA, which lowercases).
        msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        msg
    }

    async fn ask_udp(server: SocketAddr, msg: &Message) -> Message {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        socket.connect(server).await.expect("connect");
        socket
            .send(&msg.to_vec().expect("encode"))
            .await
            .expect("send");
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("answer in time")
            .expect("recv");
        let answer = Message::from_vec(&buf[..n]).expect("decode");
        assert_eq!(answer.metadata.id, msg.metadata.id);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        answer
    }

    async fn ask_tcp(server: SocketAddr, msg: &Message) -> Message {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .expect("connect");
        let wire = msg.to_vec().expect("encode");
        let len = u16::try_from(wire.len()).expect("short");
        stream.write_all(&len.to_be_bytes()).await.expect("write");
        stream.write_all(&wire).await.expect("write");
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let len = stream.read_u16().await.expect("read len");
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.expect("read");
            buf
        })
        .await
        .expect("answer in time");
        let answer = Message::from_vec(&answer).expect("decode");
        assert_eq!(answer.metadata.id, msg.metadata.id);
        answer
    }

    fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    /// A fake upstream on loopback: answers A queries with `ip` (other types with an empty
    /// NOERROR), or, with `truncate`, sets TC on every UDP answer and serves the full answer on
    /// TCP at the same port. Returns its address and a count of UDP queries it saw.
    async fn fake_upstream(
        ip: Ipv4Addr,
        truncate: bool,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        fn answer(query: &Message, ip: Ipv4Addr) -> Message {
            let mut resp = Message::response(query.metadata.id, OpCode::Query);
            resp.metadata.recursion_available = true;
            resp.add_queries(query.queries.clone());
            if let Some(q) = query.queries.first() {
                if q.query_type() == RecordType::A {
                    resp.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(ip))));
                }
            }
            resp
        }
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = udp.local_addr().expect("addr");
        let tcp = tokio::net::TcpListener::bind(addr).await.expect("bind tcp");
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = answer(&query, ip);
                if truncate {
                    resp = resp.truncate();
                }
                let _ = udp.send_to(&resp.to_vec().expect("encode"), from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let Ok(len) = stream.read_u16().await else {
                    continue;
                };
                let mut buf = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                let Ok(query) = Message::from_vec(&buf) else {
                    continue;
                };
                let wire = answer(&query, ip).to_vec().expect("encode");
                let len = u16::try_from(wire.len()).expect("short");
                let _ = stream.write_all(&len.to_be_bytes()).await;
                let _ = stream.write_all(&wire).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn cluster_name_gets_a_records() {
        let server = start(vec![]).await;
        let answer = ask_udp(server.udp_addr(), &query("Web.", RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative);
        let mut addrs = a_records(&answer);
        addrs.sort();
        assert_eq!(
            addrs,
            vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 4)
            ]
        );
        assert!(answer.answers.iter().all(|r| r.ttl == CLUSTER_TTL));
        // The question is echoed in the client's spelling (resolvers using 0x20 check it);
        // owner names may come back compressed onto it, so compare those ignoring case.
        assert_eq!(answer.queries[0].name().to_string(), "Web.");
        assert!(answer
            .answers
            .iter()
            .all(|r| r.name == *answer.queries[0].name()));
    }

    #[tokio::test]
    async fn cluster_answers_are_shuffled() {
        let server = start(vec![]).await;
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..40 {
            let answer = ask_udp(server.udp_addr(), &query("web.", RecordType::A)).await;
            firsts.insert(a_records(&answer)[0]);
        }
        // With three addresses, 40 answers all starting alike would be a 1-in-3^39 fluke.
        assert!(firsts.len() > 1, "order never changed: {firsts:?}");
    }

    #[tokio::test]
    async fn cluster_name_other_types_are_empty_noerror() {
        let (upstream, seen) = fake_upstream(Ipv4Addr::new(192, 0, 2, 1), false).await;
        let server = start(vec![upstream]).await;
        for rtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let answer = ask_udp(server.udp_addr(), &query("web.", rtype)).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert!(answer.answers.is_empty(), "{rtype}: {:?}", answer.answers);
        }
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "forwarded a cluster name"
        );
    }

    #[tokio::test]
    async fn known_name_with_nothing_running_is_nxdomain() {
        let (upstream, seen) = fake_upstream(Ipv4Addr::new(192, 0, 2, 1), false).await;
        let server = start(vec![upstream]).await;
        let answer = ask_udp(server.udp_addr(), &query("idle.", RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert!(answer.answers.is_empty());
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "forwarded a cluster name"
        );
    }

    #[tokio::test]
    async fn other_names_are_relayed_from_upstream() {
        let (dead, _) = {
            // An upstream that never answers comes first: the next one must still be tried.
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = socket.local_addr().expect("addr");
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while socket.recv(&mut buf).await.is_ok() {}
            });
            (addr, ())
        };
        let (upstream, seen) = fake_upstream(Ipv4Addr::new(192, 0, 2, 7), false).await;
        let server = start(vec![dead, upstream]).await;
        let answer = ask_udp(server.udp_addr(), &query("example.test.", RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&answer), vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert!(answer.metadata.recursion_available);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn truncated_upstream_answer_is_retried_over_tcp() {
        let (upstream, _) = fake_upstream(Ipv4Addr::new(192, 0, 2, 9), true).await;
        let server = start(vec![upstream]).await;
        let answer = ask_udp(server.udp_addr(), &query("big.test.", RecordType::A)).await;
        assert!(!answer.metadata.truncation);
        assert_eq!(a_records(&answer), vec![Ipv4Addr::new(192, 0, 2, 9)]);
    }

    #[tokio::test]
    async fn no_upstream_is_servfail() {
        let server = start(vec![]).await;
        let answer = ask_udp(server.udp_addr(), &query("example.test.", RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert!(answer.answers.is_empty());
    }

    #[tokio::test]
    async fn tcp_queries_work() {
        let (upstream, _) = fake_upstream(Ipv4Addr::new(192, 0, 2, 8), false).await;
        let server = start(vec![upstream]).await;
        let answer = ask_tcp(server.tcp_addr(), &query("web.", RecordType::A)).await;
        assert_eq!(a_records(&answer).len(), 3);
        let answer = ask_tcp(server.tcp_addr(), &query("example.test.", RecordType::A)).await;
        assert_eq!(a_records(&answer), vec![Ipv4Addr::new(192, 0, 2, 8)]);
    }

    #[tokio::test]
    async fn edns_is_echoed() {
        let server = start(vec![]).await;
        let mut msg = query("web.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        msg.set_edns(edns);
        let answer = ask_udp(server.udp_addr(), &msg).await;
        let edns = answer.edns.expect("EDNS in the answer");
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        let answer = ask_udp(server.udp_addr(), &query("web.", RecordType::A)).await;
        assert!(answer.edns.is_none());
    }

    #[tokio::test]
    async fn shutdown_frees_the_ports() {
        let server = start(vec![]).await;
        let (udp, tcp) = (server.udp_addr(), server.tcp_addr());
        ask_tcp(tcp, &query("web.", RecordType::A)).await;
        server.shutdown().await.expect("shutdown");
        std::net::UdpSocket::bind(udp).expect("udp port free again");
        std::net::TcpListener::bind(tcp).expect("tcp port free again");
    }

    #[tokio::test]
    async fn dropping_the_handle_frees_the_ports() {
        let server = start(vec![]).await;
        let (udp, tcp) = (server.udp_addr(), server.tcp_addr());
        drop(server);
        // Aborted tasks release their sockets when the runtime next drops them: soon, not
        // synchronously (shutdown() is the synchronous way).
        for _ in 0..100 {
            if std::net::UdpSocket::bind(udp).is_ok() && std::net::TcpListener::bind(tcp).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("ports still bound a second after the handle was dropped");
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.1.2.3\n\
                    nameserver   2001:db8::1  \n;nameserver 9.9.9.9\nnameserver bogus\n\
                    nameserver 127.0.0.53\nnameserver 10.9.9.9\noptions edns0\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                SocketAddr::from(([10, 1, 2, 3], 53)),
                SocketAddr::from((Ipv6Addr::from_str("2001:db8::1").expect("ip"), 53)),
                SocketAddr::from(([127, 0, 0, 53], 53)),
            ]
        );
        assert!(upstreams_from_resolv_conf("").is_empty());
    }

    /// A scratch network namespace, deleted on drop even when the test fails.
    struct ScratchNetns(String);

    impl ScratchNetns {
        fn new(lo_up: bool) -> Self {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            let name = format!("rswnd-{:08x}", hasher.finish() as u32);
            run("ip", &["netns", "add", &name]);
            let netns = Self(name);
            if lo_up {
                run("ip", &["-n", &netns.0, "link", "set", "lo", "up"]);
            }
            netns
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/run/netns/{}", self.0))
        }
    }

    impl Drop for ScratchNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }

    fn run(cmd: &str, args: &[&str]) {
        let status = std::process::Command::new(cmd)
            .args(args)
            .status()
            .expect("spawn");
        assert!(status.success(), "{cmd} {args:?}: {status}");
    }

    async fn nslookup(netns: &Path, name: &str) -> String {
        let out = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["/bin/busybox", "nslookup", name, "127.0.0.11"])
            .output()
            .await
            .expect("run nsenter");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Needs root, `ip`, `nsenter` and busybox; opt in with RSWARM_NET_TESTS=1.
    #[tokio::test]
    async fn serves_inside_a_network_namespace() {
        if std::env::var("RSWARM_NET_TESTS").as_deref() != Ok("1") {
            eprintln!("skipped: set RSWARM_NET_TESTS=1 (as root) to run");
            return;
        }
        let netns = ScratchNetns::new(true);
        // The upstream listens on the daemon's loopback, unreachable from inside the
        // namespace: relayed answers prove forwarding happens from the daemon's namespace.
        let (upstream, _) = fake_upstream(Ipv4Addr::new(192, 0, 2, 7), false).await;
        let server = serve_in_netns(&netns.path(), names(), vec![upstream])
            .await
            .expect("serve_in_netns");
        assert_eq!(server.udp_addr(), DNS_ADDR);

        let out = nslookup(&netns.path(), "web").await;
        for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            assert!(out.contains(ip), "{ip} missing in:\n{out}");
        }
        let out = nslookup(&netns.path(), "example.test").await;
        assert!(
            out.contains("192.0.2.7"),
            "forwarded answer missing in:\n{out}"
        );

        // Stopping frees 127.0.0.11:53 in the namespace for the next server.
        server.shutdown().await.expect("shutdown");
        let again = serve_in_netns(&netns.path(), names(), vec![])
            .await
            .expect("rebind after shutdown");
        drop(again);

        // With `lo` down 127.0.0.11 is not a local address there: say so.
        let down = ScratchNetns::new(false);
        let err = serve_in_netns(&down.path(), names(), vec![])
            .await
            .expect_err("lo is down");
        assert!(matches!(err, DnsError::LoopbackDown { .. }), "{err}");
        eprintln!("{err}");
    }

    #[tokio::test]
    async fn missing_netns_is_a_clear_error() {
        let err = serve_in_netns(Path::new("/nonexistent/netns"), names(), vec![])
            .await
            .expect_err("no such namespace");
        assert!(matches!(err, DnsError::OpenNetns { .. }), "{err}");
    }
}
