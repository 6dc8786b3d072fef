//! The gRPC connection to containerd: one channel over its Unix socket, every request
//! tagged with our namespace (and, while a pull or a create is under way, with a lease that
//! keeps half-made content and snapshots from containerd's garbage collector).

use crate::exec::ExecError;
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient, namespaces_client::NamespacesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

/// Our messages to containerd are small, but a List of many containers carries their specs.
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct Client {
    channel: Channel,
    namespace: AsciiMetadataValue,
    pub(crate) namespace_name: String,
}

/// A lease held while content and snapshots are being made.
pub(crate) struct Lease {
    pub id: String,
    value: AsciiMetadataValue,
}

impl Client {
    /// A lazily connected channel: a containerd that is down (or restarting) is met by each
    /// call as `Unavailable`, and the channel reconnects by itself.
    pub fn new(socket: &Path, namespace: &str) -> Result<Client, ExecError> {
        let valid = !namespace.is_empty()
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && namespace
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic());
        if !valid {
            return Err(ExecError::Runtime(format!(
                "invalid containerd namespace {namespace:?}"
            )));
        }
        let ns: AsciiMetadataValue = MetadataValue::try_from(namespace).map_err(|_| {
            ExecError::Runtime(format!("invalid containerd namespace {namespace:?}"))
        })?;
        let path: PathBuf = socket.to_path_buf();
        // The URI is a placeholder: the connector below dials the socket.
        let endpoint = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(false);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }));
        Ok(Client {
            channel,
            namespace: ns,
            namespace_name: namespace.to_string(),
        })
    }

    /// A request in our namespace.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        r
    }

    /// A request in our namespace under `lease`.
    pub fn req_leased<T>(&self, msg: T, lease: &Lease) -> Request<T> {
        let mut r = self.req(msg);
        r.metadata_mut()
            .insert("containerd-lease", lease.value.clone());
        r
    }

    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    pub fn namespaces(&self) -> NamespacesClient<Channel> {
        NamespacesClient::new(self.channel.clone())
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// A lease that expires by itself after an hour, should we die before deleting it.
    pub async fn lease(&self, purpose: &str) -> Result<Lease, ExecError> {
        let id = format!("rswarm-{purpose}-{:016x}", rand::random::<u64>());
        let expire = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(3600))
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| ExecError::Runtime(format!("lease expiry: {e}")))?;
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        self.leases()
            .create(self.req(containerd_client::services::v1::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| runtime("create lease", s))?;
        let value = MetadataValue::try_from(id.as_str())
            .map_err(|_| ExecError::Runtime(format!("bad lease id {id}")))?;
        Ok(Lease { id, value })
    }

    /// Drops a lease; what it protected is now kept only by references (images, containers).
    pub async fn release(&self, lease: Lease) {
        let r = self
            .leases()
            .delete(self.req(containerd_client::services::v1::DeleteRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await;
        if let Err(s) = r {
            tracing::debug!(lease = %lease.id, error = %s.message(), "delete lease");
        }
    }
}

/// The text of a containerd error: its message, plus the transport's cause when the call
/// never reached containerd.
pub(crate) fn status_text(s: &Status) -> String {
    let mut msg = s.message().to_string();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        let t = e.to_string();
        if !msg.contains(&t) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&t);
        }
        src = e.source();
    }
    if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        msg
    }
}

/// A containerd error: `Unavailable` stays temporary whatever we were doing; anything else
/// becomes what `other` makes of its text.
pub(crate) fn map_status(s: Status, other: impl FnOnce(String) -> ExecError) -> ExecError {
    match s.code() {
        Code::Unavailable => ExecError::Unavailable(status_text(&s)),
        _ => other(status_text(&s)),
    }
}

/// `map_status` to `Runtime`, prefixed with what we were doing.
pub(crate) fn runtime(what: &str, s: Status) -> ExecError {
    map_status(s, |m| ExecError::Runtime(format!("{what}: {m}")))
}

pub(crate) fn is_not_found(s: &Status) -> bool {
    s.code() == Code::NotFound
}

pub(crate) fn is_already_exists(s: &Status) -> bool {
    s.code() == Code::AlreadyExists
}
