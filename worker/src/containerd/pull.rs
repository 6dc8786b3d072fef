//! Pulling an image as containerd's own client does (containerd 1.6 has no server-side
//! pull): fetch the manifest, config and layers from the registry, write them into the
//! content store, register the image, and unpack its layers into snapshots through the diff
//! service. One pull per image at a time; tasks that want the same image share it.

use super::client::{is_already_exists, is_not_found, map_status, runtime, Lease};
use super::image::{
    chain_ids, host_platform, select_platform, sha256_digest, Descriptor, ImageConfig,
    ImageConfigFile, Manifest, ManifestDoc, OCI_MANIFEST,
};
use super::reference::Reference;
use super::{Inner, SNAPSHOTTER};
use crate::exec::ExecError;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, Info, InfoRequest,
    ReadContentRequest, UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as PbDescriptor;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per Content.Write message (containerd accepts up to 4 MiB per message).
const WRITE_CHUNK: usize = 1 << 20;
/// A registry that sends nothing for this long has stalled.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// Manifests and configs are read whole; nothing legitimate comes near this.
const MAX_DOC: usize = 16 << 20;
/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 3;

/// What creating a container needs from its image.
#[derive(Debug, Clone)]
pub(crate) struct ImageInfo {
    /// The name in containerd's image store.
    pub name: String,
    pub config: ImageConfig,
    /// The snapshot holding the unpacked top layer ("" for an image without layers).
    pub chain_id: String,
}

pub(crate) type PullResult = Result<Arc<ImageInfo>, Arc<ExecError>>;
pub(crate) type SharedPull = Shared<BoxFuture<'static, PullResult>>;

/// ExecError is not Clone (its definition is shared); a shared pull's error is rebuilt.
fn clone_err(e: &ExecError) -> ExecError {
    match e {
        ExecError::ImagePull { image, reason } => ExecError::ImagePull {
            image: image.clone(),
            reason: reason.clone(),
        },
        ExecError::InvalidImage(s) => ExecError::InvalidImage(s.clone()),
        ExecError::Create { task, reason } => ExecError::Create {
            task: task.clone(),
            reason: reason.clone(),
        },
        ExecError::Start { task, reason } => ExecError::Start {
            task: task.clone(),
            reason: reason.clone(),
        },
        ExecError::NotFound(t) => ExecError::NotFound(t.clone()),
        ExecError::Exec { task, reason } => ExecError::Exec {
            task: task.clone(),
            reason: reason.clone(),
        },
        ExecError::Runtime(s) => ExecError::Runtime(s.clone()),
        ExecError::Unavailable(s) => ExecError::Unavailable(s.clone()),
    }
}

/// Where a blob's bytes come from.
enum Source {
    Bytes(Bytes),
    Body(Incoming),
}

impl Source {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Source::Bytes(b) => Ok((!b.is_empty()).then(|| std::mem::take(b))),
            Source::Body(body) => loop {
                match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                    Err(_) => {
                        return Err(format!(
                            "registry sent nothing for {}s",
                            BODY_IDLE.as_secs()
                        ))
                    }
                    Ok(None) => return Ok(None),
                    Ok(Some(Err(e))) => return Err(format!("reading from registry: {e}")),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                return Ok(Some(data));
                            }
                        }
                    }
                }
            },
        }
    }
}

fn pb_desc(d: &Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

impl Inner {
    /// The image, pulled if need be; concurrent callers for the same image share one pull.
    pub(crate) async fn ensure_image(
        self: &Arc<Self>,
        image: &str,
    ) -> Result<Arc<ImageInfo>, ExecError> {
        let fut = {
            let mut pulls = self
                .pulls
                .lock()
                .map_err(|_| ExecError::Runtime("pull table lock poisoned".into()))?;
            match pulls.get(image) {
                Some(f) => f.clone(),
                None => {
                    let me = self.clone();
                    let img = image.to_string();
                    // Spawned, so that the pull finishes (and is reused) even if the task
                    // that started it stops waiting.
                    let handle = tokio::spawn(async move {
                        let r = me.pull_or_local(&img).await.map(Arc::new).map_err(Arc::new);
                        if let Ok(mut p) = me.pulls.lock() {
                            p.remove(&img);
                        }
                        r
                    });
                    let f = async move {
                        handle.await.unwrap_or_else(|e| {
                            Err(Arc::new(ExecError::Runtime(format!("pull: {e}"))))
                        })
                    }
                    .boxed()
                    .shared();
                    pulls.insert(image.to_string(), f.clone());
                    f
                }
            }
        };
        fut.await.map_err(|e| clone_err(&e))
    }

    /// Pulls; when the registry fails us but the image is here already, uses it (Docker
    /// does the same, so a node keeps working while the registry is away). An image pinned
    /// to a digest that is here whole is used without asking the registry at all: its
    /// content cannot have changed (moby's container adapter skips the pull the same way).
    async fn pull_or_local(&self, image: &str) -> Result<ImageInfo, ExecError> {
        let r = Reference::parse(image)
            .map_err(|e| ExecError::InvalidImage(format!("{image}: {e}")))?;
        if r.digest.is_some() {
            match self.local_image(&r).await {
                Ok(Some(info)) => {
                    tracing::debug!(image, "pinned image present; not pulling");
                    return Ok(info);
                }
                Ok(None) => {}
                // Pulling may still work (and says what is wrong if not).
                Err(e) => tracing::debug!(image, error = %e, "looking for the local image"),
            }
        }
        match self.pull(&r).await {
            Ok(info) => Ok(info),
            Err(e @ ExecError::Unavailable(_)) => Err(e),
            Err(e) => match self.local_image(&r).await {
                Ok(Some(info)) => {
                    tracing::warn!(image, error = %e, "pull failed; using the image already on this node");
                    Ok(info)
                }
                _ => Err(e),
            },
        }
    }

    async fn pull(&self, r: &Reference) -> Result<ImageInfo, ExecError> {
        self.pulls_started.fetch_add(1, Ordering::Relaxed);
        let name = r.to_string();
        let pull_err = |reason: String| ExecError::ImagePull {
            image: name.clone(),
            reason,
        };
        let top = self
            .registry
            .manifest(r, r.manifest_reference())
            .await
            .map_err(pull_err)?;
        let lease = self.client.lease("pull").await?;
        let result = self.pull_leased(&lease, r, top).await;
        self.client.release(lease).await;
        result.map_err(|e| match e {
            ExecError::Runtime(reason) => pull_err(reason),
            other => other,
        })
    }

    async fn pull_leased(
        &self,
        lease: &Lease,
        r: &Reference,
        top: super::registry::Fetched,
    ) -> Result<ImageInfo, ExecError> {
        let name = r.to_string();
        let pull_err = |reason: String| ExecError::ImagePull {
            image: name.clone(),
            reason,
        };
        let top_digest = sha256_digest(&top.body);
        if let Some(d) = &r.digest {
            if *d != top_digest {
                return Err(pull_err(format!(
                    "manifest digest {top_digest} does not match {d}"
                )));
            }
        }
        let doc = ManifestDoc::parse(&top.media_type, &top.body).map_err(pull_err)?;
        let top_media = |declared: Option<&String>, default: &str| {
            if !top.media_type.is_empty() && top.media_type != "application/json" {
                top.media_type.clone()
            } else {
                declared.cloned().unwrap_or_else(|| default.to_string())
            }
        };
        // The documents to store, parents last: (digest, media type, bytes, gc labels).
        let mut docs: Vec<(String, Bytes, HashMap<String, String>)> = Vec::new();
        let (target, manifest, manifest_digest, manifest_bytes) = match doc {
            ManifestDoc::Manifest(m) => {
                let target = Descriptor {
                    media_type: top_media(m.media_type.as_ref(), OCI_MANIFEST),
                    digest: top_digest.clone(),
                    size: top.body.len() as i64,
                    platform: None,
                };
                (target, m, top_digest.clone(), Bytes::from(top.body))
            }
            ManifestDoc::Index(idx) => {
                let (os, arch) = host_platform();
                let child = select_platform(&idx, os, arch)
                    .ok_or_else(|| {
                        pull_err(format!("no manifest for {os}/{arch} in the image index"))
                    })?
                    .clone();
                let fetched = self
                    .registry
                    .manifest(r, &child.digest)
                    .await
                    .map_err(pull_err)?;
                let got = sha256_digest(&fetched.body);
                if got != child.digest {
                    return Err(pull_err(format!(
                        "manifest digest {got} does not match {}",
                        child.digest
                    )));
                }
                let m =
                    match ManifestDoc::parse(&child.media_type, &fetched.body).map_err(pull_err)? {
                        ManifestDoc::Manifest(m) => m,
                        ManifestDoc::Index(_) => {
                            return Err(pull_err("nested image indexes are not supported".into()))
                        }
                    };
                let target = Descriptor {
                    media_type: top_media(idx.media_type.as_ref(), super::image::OCI_INDEX),
                    digest: top_digest.clone(),
                    size: top.body.len() as i64,
                    platform: None,
                };
                let labels = HashMap::from([(
                    "containerd.io/gc.ref.content.m.0".to_string(),
                    child.digest.clone(),
                )]);
                docs.push((top_digest.clone(), Bytes::from(top.body), labels));
                (target, m, child.digest.clone(), Bytes::from(fetched.body))
            }
        };

        // The config: small, read whole; it names the layers' uncompressed digests.
        let config_bytes = if self.content_exists(&manifest.config.digest).await? {
            self.read_content(&manifest.config.digest).await?
        } else {
            let body = self
                .registry
                .blob(r, &manifest.config.digest)
                .await
                .map_err(pull_err)?;
            let bytes = http_body_util::Limited::new(body, MAX_DOC)
                .collect()
                .await
                .map_err(|e| pull_err(format!("reading config: {e}")))?
                .to_bytes();
            let got = sha256_digest(&bytes);
            if got != manifest.config.digest {
                return Err(pull_err(format!(
                    "config digest {got} does not match {}",
                    manifest.config.digest
                )));
            }
            bytes.to_vec()
        };
        let cfg = parse_config(&config_bytes, &manifest).map_err(pull_err)?;
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        let top_chain = chains.last().cloned().unwrap_or_default();
        let mut config_labels = HashMap::new();
        if !top_chain.is_empty() {
            // Keeps the unpacked snapshots alive as long as the image is.
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                top_chain.clone(),
            );
        }
        self.store_blob(
            lease,
            &manifest.config.digest,
            manifest.config.size,
            config_labels,
            Source::Bytes(Bytes::from(config_bytes.clone())),
        )
        .await?;

        // Layers, a few at a time, skipping those containerd has.
        futures::stream::iter(manifest.layers.iter().map(Ok::<_, ExecError>))
            .try_for_each_concurrent(PARALLEL_LAYERS, |layer| async move {
                if self.content_exists(&layer.digest).await? {
                    return Ok(());
                }
                let body = self
                    .registry
                    .blob(r, &layer.digest)
                    .await
                    .map_err(|reason| ExecError::ImagePull {
                        image: r.to_string(),
                        reason,
                    })?;
                self.write_content(
                    lease,
                    &layer.digest,
                    layer.size,
                    HashMap::new(),
                    Source::Body(body),
                )
                .await
            })
            .await?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        )]);
        for (i, l) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        docs.insert(0, (manifest_digest, manifest_bytes, manifest_labels));
        for (digest, bytes, labels) in docs {
            let size = bytes.len() as i64;
            self.store_blob(lease, &digest, size, labels, Source::Bytes(bytes))
                .await?;
        }

        self.unpack(lease, &manifest.layers, &cfg.rootfs.diff_ids)
            .await?;
        self.register_image(&name, &target).await?;
        Ok(ImageInfo {
            name,
            config: cfg.config.unwrap_or_default(),
            chain_id: top_chain,
        })
    }

    /// The image as containerd already has it (unpacking it if its snapshots are gone), or
    /// `None` when it is not here whole.
    pub(crate) async fn local_image(&self, r: &Reference) -> Result<Option<ImageInfo>, ExecError> {
        let name = r.to_string();
        let img = match self
            .client
            .images()
            .get(self.client.req(GetImageRequest { name: name.clone() }))
            .await
        {
            Ok(resp) => resp.into_inner().image,
            Err(s) if is_not_found(&s) => return Ok(None),
            Err(s) => return Err(runtime("get image", s)),
        };
        let Some(target) = img.and_then(|i| i.target) else {
            return Ok(None);
        };
        // A pinned name must hold exactly that content.
        if r.digest.as_ref().is_some_and(|d| *d != target.digest) {
            return Ok(None);
        }
        let Some(body) = self.read_content_opt(&target.digest).await? else {
            return Ok(None);
        };
        let manifest = match ManifestDoc::parse(&target.media_type, &body)
            .map_err(ExecError::Runtime)?
        {
            ManifestDoc::Manifest(m) => m,
            ManifestDoc::Index(idx) => {
                let (os, arch) = host_platform();
                let Some(child) = select_platform(&idx, os, arch) else {
                    return Ok(None);
                };
                let Some(body) = self.read_content_opt(&child.digest).await? else {
                    return Ok(None);
                };
                match ManifestDoc::parse(&child.media_type, &body).map_err(ExecError::Runtime)? {
                    ManifestDoc::Manifest(m) => m,
                    ManifestDoc::Index(_) => return Ok(None),
                }
            }
        };
        let Some(config_bytes) = self.read_content_opt(&manifest.config.digest).await? else {
            return Ok(None);
        };
        let cfg = parse_config(&config_bytes, &manifest).map_err(ExecError::Runtime)?;
        let chains = chain_ids(&cfg.rootfs.diff_ids);
        let top_chain = chains.last().cloned().unwrap_or_default();
        if !top_chain.is_empty() && !self.snapshot_exists(&top_chain).await? {
            let lease = self.client.lease("unpack").await?;
            let r = self
                .unpack(&lease, &manifest.layers, &cfg.rootfs.diff_ids)
                .await;
            self.client.release(lease).await;
            r?;
        }
        Ok(Some(ImageInfo {
            name,
            config: cfg.config.unwrap_or_default(),
            chain_id: top_chain,
        }))
    }

    async fn register_image(&self, name: &str, target: &Descriptor) -> Result<(), ExecError> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(pb_desc(target)),
            created_at: None,
            updated_at: None,
        };
        let created = self
            .client
            .images()
            .create(self.client.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if is_already_exists(&s) => self
                .client
                .images()
                .update(self.client.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .map_err(|s| runtime("update image", s)),
            Err(s) => Err(runtime("create image", s)),
        }
    }

    /// Unpacks the layers into snapshots named by their chain ids (idempotent: layers whose
    /// snapshot exists are skipped).
    pub(crate) async fn unpack(
        &self,
        lease: &Lease,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<(), ExecError> {
        let chains = chain_ids(diff_ids);
        for (i, layer) in layers.iter().enumerate() {
            let chain = &chains[i];
            if self.snapshot_exists(chain).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("extract-{:016x}-{chain}", rand::random::<u64>());
            let mounts = self
                .client
                .snapshots()
                .prepare(self.client.req_leased(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map_err(|s| runtime("prepare snapshot", s))?
                .into_inner()
                .mounts;
            let applied = self
                .client
                .diff()
                .apply(self.client.req_leased(
                    ApplyRequest {
                        diff: Some(pb_desc(layer)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await;
            let applied = match applied {
                Ok(a) => a.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
                Err(s) => {
                    self.remove_snapshot(&key).await;
                    return Err(runtime(&format!("unpack layer {}", layer.digest), s));
                }
            };
            if applied != diff_ids[i] {
                self.remove_snapshot(&key).await;
                return Err(ExecError::Runtime(format!(
                    "layer {} unpacked to {applied}, but the image config says {}",
                    layer.digest, diff_ids[i]
                )));
            }
            let committed = self
                .client
                .snapshots()
                .commit(self.client.req_leased(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await;
            match committed {
                Ok(_) => {}
                // Someone else unpacked the same layer meanwhile: theirs will do.
                Err(s) if is_already_exists(&s) => self.remove_snapshot(&key).await,
                Err(s) => {
                    self.remove_snapshot(&key).await;
                    return Err(runtime("commit snapshot", s));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, ExecError> {
        let r = self
            .client
            .snapshots()
            .stat(self.client.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(runtime("stat snapshot", s)),
        }
    }

    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let r = self
            .client
            .snapshots()
            .remove(self.client.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
        if let Err(s) = r {
            if !is_not_found(&s) {
                tracing::debug!(key, error = %s.message(), "remove snapshot");
            }
        }
    }

    async fn content_exists(&self, digest: &str) -> Result<bool, ExecError> {
        match self
            .client
            .content()
            .info(self.client.req(InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(runtime("content info", s)),
        }
    }

    async fn read_content(&self, digest: &str) -> Result<Vec<u8>, ExecError> {
        self.read_content_opt(digest)
            .await?
            .ok_or_else(|| ExecError::Runtime(format!("content {digest} not found")))
    }

    async fn read_content_opt(&self, digest: &str) -> Result<Option<Vec<u8>>, ExecError> {
        let resp = self
            .client
            .content()
            .read(self.client.req(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await;
        let mut stream = match resp {
            Ok(s) => s.into_inner(),
            Err(s) if is_not_found(&s) => return Ok(None),
            Err(s) => return Err(runtime("read content", s)),
        };
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    out.extend_from_slice(&m.data);
                    if out.len() > MAX_DOC {
                        return Err(ExecError::Runtime(format!(
                            "content {digest} is too large to read whole"
                        )));
                    }
                }
                Ok(None) => return Ok(Some(out)),
                Err(s) if is_not_found(&s) => return Ok(None),
                Err(s) => return Err(runtime("read content", s)),
            }
        }
    }

    /// Writes a blob unless present; when present, makes sure it carries `labels`.
    async fn store_blob(
        &self,
        lease: &Lease,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        src: Source,
    ) -> Result<(), ExecError> {
        if self.content_exists(digest).await? {
            if labels.is_empty() {
                return Ok(());
            }
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            return self
                .client
                .content()
                .update(self.client.req(UpdateRequest {
                    info: Some(Info {
                        digest: digest.into(),
                        size,
                        created_at: None,
                        updated_at: None,
                        labels,
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await
                .map(|_| ())
                .map_err(|s| runtime("label content", s));
        }
        self.write_content(lease, digest, size, labels, src).await
    }

    /// Content.Write, as containerd's remote writer speaks it: a Stat to open (or resume)
    /// the ingest, Writes at increasing offsets, and a Commit that verifies size and digest.
    async fn write_content(
        &self,
        lease: &Lease,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        mut src: Source,
    ) -> Result<(), ExecError> {
        let what = format!("write {digest}");
        let fail = |m: String| ExecError::Runtime(format!("{what}: {m}"));
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let base = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: format!("rswarm-{digest}"),
            total: size,
            expected: digest.into(),
            offset: 0,
            data: Vec::new(),
            labels: HashMap::new(),
        };
        tx.send(base.clone())
            .await
            .map_err(|_| fail("stream closed".into()))?;
        let resp = self
            .client
            .content()
            .write(self.client.req_leased(ReceiverStream::new(rx), lease))
            .await;
        let mut responses = match resp {
            Ok(r) => r.into_inner(),
            Err(s) if is_already_exists(&s) => return Ok(()),
            Err(s) => return Err(runtime(&what, s)),
        };
        let status = match responses.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(fail("containerd closed the write".into())),
            Err(s) if is_already_exists(&s) => return Ok(()),
            Err(s) => return Err(runtime(&what, s)),
        };
        // An interrupted earlier write under the same ref resumes where it stopped.
        let mut skip = usize::try_from(status.offset.max(0)).unwrap_or(0);
        let mut offset = status.offset.max(0);
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut eof = false;
        while !eof {
            match src.next_chunk().await.map_err(fail)? {
                None => eof = true,
                Some(mut chunk) => {
                    if skip > 0 {
                        let n = skip.min(chunk.len());
                        skip -= n;
                        let _ = chunk.split_to(n);
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
            while buf.len() >= WRITE_CHUNK || (eof && !buf.is_empty()) {
                let n = buf.len().min(WRITE_CHUNK);
                let data: Vec<u8> = buf.drain(..n).collect();
                let len = data.len() as i64;
                let msg = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    offset,
                    data,
                    ..base.clone()
                };
                tx.send(msg)
                    .await
                    .map_err(|_| fail("containerd closed the write".into()))?;
                match responses.message().await {
                    Ok(Some(_)) => offset += len,
                    Ok(None) => return Err(fail("containerd closed the write".into())),
                    Err(s) => return Err(runtime(&what, s)),
                }
            }
        }
        if offset != size {
            return Err(ExecError::Runtime(format!(
                "{what}: the registry sent {offset} bytes, the manifest says {size}"
            )));
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            labels,
            ..base
        };
        tx.send(commit)
            .await
            .map_err(|_| fail("containerd closed the write".into()))?;
        let r = match responses.message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(fail("containerd closed the write before committing".into())),
            Err(s) if is_already_exists(&s) => Ok(()),
            Err(s) => Err(map_status(s, |m| {
                ExecError::Runtime(format!("{what}: {m}"))
            })),
        };
        drop(tx);
        r
    }
}

fn parse_config(bytes: &[u8], manifest: &Manifest) -> Result<ImageConfigFile, String> {
    let cfg: ImageConfigFile =
        serde_json::from_slice(bytes).map_err(|e| format!("malformed image config: {e}"))?;
    if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "image config lists {} layers, the manifest {}",
            cfg.rootfs.diff_ids.len(),
            manifest.layers.len()
        ));
    }
    Ok(cfg)
}
