//! The registry side of a pull: the distribution (v2) HTTP API over HTTP/1.1, with the
//! anonymous bearer-token dance a `WWW-Authenticate: Bearer realm=...` challenge asks for.
//!
//! hyper's connection-level client is used directly (one connection per request): a pull
//! makes a handful of requests, so pooling buys nothing, and it keeps us off reqwest's
//! dependency tree. HTTPS uses rustls (ring) with the system's root certificates; plain HTTP
//! only for the hosts given as insecure registries.

use super::reference::Reference;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION, USER_AGENT, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Until the response head arrives; bodies are guarded per chunk by the caller.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_MANIFEST: usize = 8 << 20;
const MAX_REDIRECTS: usize = 5;
const AGENT: &str = concat!("rswarm/", env!("CARGO_PKG_VERSION"));

/// A manifest as served: its media type and bytes.
pub(crate) struct Fetched {
    pub media_type: String,
    pub body: Vec<u8>,
}

pub(crate) struct Registry {
    insecure: Vec<String>,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// Bearer tokens by "host repository", reused until the registry refuses one.
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry {
    pub fn new(insecure: Vec<String>) -> Registry {
        Registry {
            insecure,
            tls: tls_config().map(Arc::new),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn base(&self, r: &Reference) -> Url {
        let host = r.api_host();
        let https = !self.insecure.iter().any(|h| h == host || h == &r.domain);
        Url::new(https, host)
    }

    /// GET /v2/<repo>/manifests/<reference>.
    pub async fn manifest(&self, r: &Reference, reference: &str) -> Result<Fetched, String> {
        let mut url = self.base(r);
        url.path = format!("/v2/{}/manifests/{}", r.repository, reference);
        let resp = self
            .get(&url, Some(super::image::MANIFEST_ACCEPT), r)
            .await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let body = Limited::new(resp.into_body(), MAX_MANIFEST)
            .collect()
            .await
            .map_err(|e| format!("reading manifest: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Fetched { media_type, body })
    }

    /// GET /v2/<repo>/blobs/<digest>, following redirects; the body is streamed by the caller.
    pub async fn blob(&self, r: &Reference, digest: &str) -> Result<Incoming, String> {
        let mut url = self.base(r);
        url.path = format!("/v2/{}/blobs/{}", r.repository, digest);
        Ok(self.get(&url, None, r).await?.into_body())
    }

    /// A GET with auth and redirects; any status but 200 becomes the registry's reason.
    async fn get(
        &self,
        start: &Url,
        accept: Option<&str>,
        r: &Reference,
    ) -> Result<Response<Incoming>, String> {
        let key = format!("{} {}", start.authority, r.repository);
        let mut retried_auth = false;
        let mut url = start.clone();
        let mut redirects = 0;
        loop {
            // Credentials go only to the registry itself, never to a redirect target.
            let token = if url.authority == start.authority {
                self.tokens.lock().ok().and_then(|t| t.get(&key).cloned())
            } else {
                None
            };
            let resp = self.send(&url, accept, token.as_deref()).await?;
            let status = resp.status();
            if status == StatusCode::OK {
                return Ok(resp);
            }
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{status} without a Location"))?;
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err("too many redirects".into());
                }
                url = url.join(loc)?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && !retried_auth
                && url.authority == start.authority
            {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(ch) = challenge.as_deref().and_then(parse_bearer_challenge) {
                    let token = self.fetch_token(&ch, &r.repository).await?;
                    if let Ok(mut t) = self.tokens.lock() {
                        t.insert(key.clone(), token);
                    }
                    retried_auth = true;
                    continue;
                }
            }
            return Err(error_reason(resp).await);
        }
    }

    /// Asks the token service named by a Bearer challenge for an anonymous pull token.
    async fn fetch_token(
        &self,
        ch: &HashMap<String, String>,
        repository: &str,
    ) -> Result<String, String> {
        let realm = ch.get("realm").ok_or("bearer challenge without a realm")?;
        let mut url = Url::parse(realm)?;
        let scope = ch
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{repository}:pull"));
        let mut query = vec![format!("scope={}", query_escape(&scope))];
        if let Some(s) = ch.get("service") {
            query.push(format!("service={}", query_escape(s)));
        }
        let sep = if url.path.contains('?') { '&' } else { '?' };
        url.path = format!("{}{}{}", url.path, sep, query.join("&"));
        let mut redirects = 0;
        let resp = loop {
            let resp = self.send(&url, Some("application/json"), None).await?;
            if resp.status().is_redirection() && redirects < MAX_REDIRECTS {
                let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
                if let Some(loc) = loc {
                    url = url.join(loc)?;
                    redirects += 1;
                    continue;
                }
            }
            break resp;
        };
        if resp.status() != StatusCode::OK {
            return Err(format!("token service: {}", error_reason(resp).await));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("token service: {e}"))?
            .to_bytes();
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| format!("token service: malformed answer: {e}"))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "token service: no token in its answer".to_string())
    }

    /// One request on a fresh connection.
    async fn send(
        &self,
        url: &Url,
        accept: Option<&str>,
        token: Option<&str>,
    ) -> Result<Response<Incoming>, String> {
        let mut req = Request::get(url.path.as_str())
            .header(HOST, url.authority.as_str())
            .header(USER_AGENT, AGENT);
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "invalid token".to_string())?;
            req = req.header(AUTHORIZATION, v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request for {}: {e}", url.display()))?;
        let tcp =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(url.connect_addr()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(format!("dial {}: {}", url.connect_addr(), io_reason(&e)))
                }
                Err(_) => return Err(format!("dial {}: connection timed out", url.connect_addr())),
            };
        let _ = tcp.set_nodelay(true);
        let fut = async {
            if url.https {
                let cfg = self.tls.clone()?;
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| format!("{}: {e}", url.host))?;
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", url.authority))?;
                request_over(tls, req).await
            } else {
                request_over(tcp, req).await
            }
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, fut).await {
            Ok(r) => r.map_err(|e| format!("{}: {e}", url.display())),
            Err(_) => Err(format!(
                "{}: no answer within {}s",
                url.display(),
                RESPONSE_TIMEOUT.as_secs()
            )),
        }
    }
}

async fn request_over<S>(io: S, req: Request<Empty<Bytes>>) -> Result<Response<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends when the response body has been read or dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the system store holds but rustls cannot parse is skipped, as
        // browsers do; the others still verify.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The registry's own words for a failed request: the `errors[].message` of the
/// distribution API's error body (e.g. "manifest unknown"), else the HTTP status.
async fn error_reason(resp: Response<Incoming>) -> String {
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        let msgs: Vec<String> = e
            .errors
            .into_iter()
            .map(|e| {
                if e.message.is_empty() {
                    e.code.to_lowercase()
                } else {
                    e.message
                }
            })
            .filter(|m| !m.is_empty())
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    match status.canonical_reason() {
        Some(r) => format!("{} {}", status.as_u16(), r.to_lowercase()),
        None => format!("HTTP status {}", status.as_u16()),
    }
}

/// "Connection refused (os error 111)" -> "connection refused".
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// The parameters of a `Bearer` challenge; `None` for other schemes.
fn parse_bearer_challenge(h: &str) -> Option<HashMap<String, String>> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(out)
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Just enough of a URL for registry requests: scheme, authority, and path with query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    /// As written, for the Host header (`host[:port]`).
    authority: String,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn new(https: bool, authority: &str) -> Url {
        let (host, port) = split_authority(authority, if https { 443 } else { 80 });
        Url {
            https,
            authority: authority.to_string(),
            host,
            port,
            path: "/".into(),
        }
    }

    fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("unsupported URL {s:?}"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("unsupported URL {s:?}"));
        }
        let mut u = Url::new(https, authority);
        u.path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(u)
    }

    /// Resolves a Location header against this URL.
    fn join(&self, loc: &str) -> Result<Url, String> {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Url::parse(loc)
        } else if loc.starts_with('/') {
            Ok(Url {
                path: loc.to_string(),
                ..self.clone()
            })
        } else {
            Err(format!("unsupported redirect to {loc:?}"))
        }
    }

    fn connect_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn display(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path
        )
    }
}

fn split_authority(a: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (h.to_string(), port);
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (a.to_string(), default_port),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("bearer");
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull,push");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://auth.example/token?x=1").expect("url");
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "auth.example", 443, "/token?x=1")
        );
        let u = Url::parse("http://127.0.0.1:5055").expect("url");
        assert_eq!(
            (u.connect_addr().as_str(), u.path.as_str()),
            ("127.0.0.1:5055", "/")
        );
        let j = u.join("/v2/x/blobs/y").expect("join");
        assert_eq!(j.display(), "http://127.0.0.1:5055/v2/x/blobs/y");
        assert_eq!(Url::new(true, "[::1]:5000").connect_addr(), "[::1]:5000");
        assert!(Url::parse("ftp://x").is_err());
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    /// A registry that wants a bearer token and redirects blob downloads: answers each
    /// connection's one request from `route`, and records what it was asked.
    pub(crate) async fn fake_registry() -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (addr.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                // A TLS ClientHello (0x16) gets what a plain HTTP server answers to it.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.first() != Some(&0x16) {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if buf.first() == Some(&0x16) {
                    let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
                    continue;
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                let authed = head
                    .to_ascii_lowercase()
                    .contains("authorization: bearer tok3n");
                s.lock()
                    .expect("lock")
                    .push(format!("{line} auth={authed}"));
                let path = line.split(' ').nth(1).unwrap_or("");
                let (status, headers, body): (&str, String, &str) = if path.starts_with("/token?") {
                    ("200 OK", String::new(), r#"{"token":"tok3n"}"#)
                } else if !authed && path.starts_with("/v2/") {
                    let ch = format!(
                        "WWW-Authenticate: Bearer realm=\"http://{a}/token\",service=\"fake\",scope=\"repository:app:pull\"\r\n"
                    );
                    (
                        "401 Unauthorized",
                        ch,
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    )
                } else if path == "/v2/app/manifests/1" {
                    (
                        "200 OK",
                        format!(
                            "Content-Type: {}\r\n",
                            crate::containerd::image::OCI_MANIFEST
                        ),
                        "{}",
                    )
                } else if path == "/v2/app/blobs/sha256:b" {
                    (
                        "307 Temporary Redirect",
                        "Location: /storage/b\r\n".to_string(),
                        "",
                    )
                } else if path == "/storage/b" {
                    ("200 OK", String::new(), "blob-bytes")
                } else {
                    (
                        "404 Not Found",
                        String::new(),
                        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn bearer_token_dance_and_redirected_blobs() {
        let (addr, seen) = fake_registry().await;
        let reg = Registry::new(vec![addr.clone()]);
        let r = Reference::parse(&format!("{addr}/app:1")).expect("reference");
        let m = reg.manifest(&r, "1").await.expect("manifest");
        assert_eq!(
            (m.media_type.as_str(), m.body.as_slice()),
            (crate::containerd::image::OCI_MANIFEST, &b"{}"[..])
        );
        let body = reg.blob(&r, "sha256:b").await.expect("blob");
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"blob-bytes");
        let e = reg.manifest(&r, "2").await.err().expect("missing tag");
        assert_eq!(e, "manifest unknown");
        let log = seen.lock().expect("lock").clone();
        assert_eq!(
            log,
            vec![
                "GET /v2/app/manifests/1 HTTP/1.1 auth=false".to_string(),
                "GET /token?scope=repository%3Aapp%3Apull&service=fake HTTP/1.1 auth=false".into(),
                "GET /v2/app/manifests/1 HTTP/1.1 auth=true".into(),
                // The token is reused, and not sent along a redirect to another host (here
                // the same host, so it is).
                "GET /v2/app/blobs/sha256:b HTTP/1.1 auth=true".into(),
                "GET /storage/b HTTP/1.1 auth=true".into(),
                "GET /v2/app/manifests/2 HTTP/1.1 auth=true".into(),
            ]
        );
    }

    #[tokio::test]
    async fn https_unless_insecure() {
        let (addr, _) = fake_registry().await;
        let reg = Registry::new(vec![]);
        let r = Reference::parse(&format!("{addr}/app:1")).expect("reference");
        let e = reg
            .manifest(&r, "1")
            .await
            .err()
            .expect("plain HTTP server refuses TLS");
        assert!(e.contains("TLS"), "{e}");
    }

    #[test]
    fn io_reasons_read_like_docker() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_reason(&e), "connection refused");
    }
}
