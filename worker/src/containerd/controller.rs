//! One task's container on containerd: create (snapshot + spec), start (task with the
//! binary logger), wait, inspect, stop (signal, grace, SIGKILL), remove, exec.

use super::client::{is_already_exists, is_not_found, map_status, runtime, Lease};
use super::pull::ImageInfo;
use super::reference::Reference;
use super::spec::{self, EtcFiles, NetworkNs, ResolvedMount, SpecInput};
use super::{
    is_running, ContainerdExecutor, Inner, KILL_WAIT, LABEL_SERVICE_ID, LABEL_STOP_SIGNAL,
    LABEL_TASK_ID, LABEL_TASK_NAME, RUNTIME, SNAPSHOTTER,
};
use crate::exec::{ContainerState, Controller, ExecError, ExecOutput};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{MountsRequest, PrepareSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::types::Mount as PbMount;
use rswarm_proto::model::{naming, HealthCheck, MountType, Task, TaskId};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Exec output beyond this is cut (health checks keep far less).
const MAX_EXEC_OUTPUT: u64 = 1 << 20;
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

pub struct ContainerdController {
    inner: Arc<Inner>,
    task: Task,
    id: String,
    netns: Option<PathBuf>,
    /// The task's first overlay address, for its /etc/hosts.
    address: Option<std::net::Ipv4Addr>,
    image: Option<Arc<ImageInfo>>,
}

impl ContainerdController {
    pub(crate) fn new(
        inner: Arc<Inner>,
        task: Task,
        netns: Option<PathBuf>,
    ) -> ContainerdController {
        let id = ContainerdExecutor::container_id(&task.id);
        ContainerdController {
            inner,
            task,
            id,
            netns,
            address: None,
            image: None,
        }
    }

    /// The container's id in containerd.
    pub fn container_id(&self) -> &str {
        &self.id
    }

    /// The OCI spec the container was created with.
    pub async fn spec(&self) -> Result<spec::oci::Spec, ExecError> {
        let c = self.get_container().await?;
        let any = c
            .spec
            .ok_or_else(|| ExecError::Runtime(format!("container {} has no spec", self.id)))?;
        serde_json::from_slice(&any.value)
            .map_err(|e| ExecError::Runtime(format!("container {} spec: {e}", self.id)))
    }

    fn create_err(&self) -> impl Fn(String) -> ExecError + '_ {
        |reason| ExecError::Create {
            task: self.task.id.clone(),
            reason,
        }
    }

    async fn get_container(&self) -> Result<Container, ExecError> {
        let c = &self.inner.client;
        match c
            .containers()
            .get(c.req(GetContainerRequest {
                id: self.id.clone(),
            }))
            .await
        {
            Ok(r) => r
                .into_inner()
                .container
                .ok_or_else(|| ExecError::NotFound(self.task.id.clone())),
            Err(s) if is_not_found(&s) => Err(ExecError::NotFound(self.task.id.clone())),
            Err(s) => Err(runtime("get container", s)),
        }
    }

    async fn container_exists(&self) -> Result<bool, ExecError> {
        match self.get_container().await {
            Ok(_) => Ok(true),
            Err(ExecError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The task's process as containerd sees it, `None` when no task exists.
    async fn process(&self) -> Result<Option<containerd_client::types::v1::Process>, ExecError> {
        self.inner.process(&self.id).await
    }

    /// Where the container's network stack comes from: the node's own for a host-network
    /// task (whether or not the node runs its networking), else the namespace the node's
    /// networking made, else a fresh one.
    fn network_ns<'a>(&'a self, node_hostname: &'a str) -> NetworkNs<'a> {
        if self.task.spec.host_network {
            NetworkNs::Host { node_hostname }
        } else if let Some(p) = &self.netns {
            NetworkNs::Joined(p)
        } else {
            NetworkNs::Own
        }
    }

    /// Files bind-mounted over /etc: what Docker gives every container.
    fn write_etc_files(
        &self,
        dir: &Path,
        hostname: &str,
        network: NetworkNs<'_>,
    ) -> Result<EtcFiles, ExecError> {
        let err = self.create_err();
        let files = EtcFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let host_hosts = std::fs::read_to_string("/etc/hosts").ok();
        let address = self.address.map(|a| a.to_string());
        let (hosts, resolv) = spec::etc_contents(
            network,
            host_hosts.as_deref(),
            &host_resolv,
            hostname,
            address.as_deref(),
        );
        for (path, content) in [
            (&files.hostname, format!("{hostname}\n")),
            (&files.hosts, hosts),
            (&files.resolv_conf, resolv),
        ] {
            std::fs::write(path, content).map_err(|e| err(format!("{}: {e}", path.display())))?;
        }
        Ok(files)
    }

    /// Host paths for the service's mounts: bind sources must exist; named volumes are
    /// directories under the state dir, made on first use.
    fn resolve_mounts(&self) -> Result<Vec<ResolvedMount>, ExecError> {
        let err = self.create_err();
        let mut out = Vec::new();
        for (i, m) in self.task.spec.container.mounts.iter().enumerate() {
            let host_path = match m.kind {
                MountType::Bind => {
                    let p = PathBuf::from(&m.source);
                    if !p.is_absolute() {
                        return Err(err(format!(
                            "bind source {:?} is not an absolute path",
                            m.source
                        )));
                    }
                    if !p.exists() {
                        return Err(err(format!(
                            "bind source path does not exist: {}",
                            m.source
                        )));
                    }
                    p
                }
                MountType::Volume => {
                    // An unnamed volume belongs to this container alone, as Docker's
                    // anonymous volumes do.
                    let name = if m.source.is_empty() {
                        format!("{}-{i}", &self.id[..12])
                    } else {
                        m.source.clone()
                    };
                    spec::validate_volume_name(&name).map_err(|e| err(e.to_string()))?;
                    let p = self.inner.volume_dir(&name);
                    std::fs::create_dir_all(&p).map_err(|e| err(format!("volume {name}: {e}")))?;
                    p
                }
                MountType::Tmpfs => PathBuf::new(),
            };
            out.push(ResolvedMount {
                mount: m.clone(),
                host_path,
            });
        }
        Ok(out)
    }

    async fn create_leased(&self, lease: &Lease, image: &ImageInfo) -> Result<(), ExecError> {
        let c = &self.inner.client;
        let err = self.create_err();
        let prepared = c
            .snapshots()
            .prepare(c.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: self.id.clone(),
                    parent: image.chain_id.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        let mounts = match prepared {
            Ok(r) => r.into_inner().mounts,
            Err(s) if is_already_exists(&s) => {
                self.inner.rootfs_mounts(&self.id, &self.task.id).await?
            }
            Err(s) => return Err(map_status(s, |m| err(format!("prepare snapshot: {m}")))),
        };
        let result = self.create_container(lease, image, &mounts).await;
        if result.is_err() {
            // Leave nothing half made: the next prepare starts from scratch.
            self.inner.remove_snapshot(&self.id).await;
            let _ = self.inner.remove_files(&self.id);
        }
        result
    }

    async fn create_container(
        &self,
        lease: &Lease,
        image: &ImageInfo,
        mounts: &[PbMount],
    ) -> Result<(), ExecError> {
        let c = &self.inner.client;
        let cs = &self.task.spec.container;
        let err = self.create_err();
        let dir = self.inner.container_dir(&self.id);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let node_hostname = spec::node_hostname();
        let network = self.network_ns(&node_hostname);
        let hostname = spec::hostname(cs, &self.id, network);
        let etc = self.write_etc_files(&dir, &hostname, network)?;

        let user = if cs.user.is_empty() {
            image.config.user.clone().unwrap_or_default()
        } else {
            cs.user.clone()
        };
        let passwd = read_rootfs_file(mounts, "etc/passwd");
        let group = read_rootfs_file(mounts, "etc/group");
        let user = spec::resolve_user(&user, passwd.as_deref(), group.as_deref())
            .map_err(|e| err(e.to_string()))?;

        let input = SpecInput {
            container_id: &self.id,
            namespace: &c.namespace_name,
            spec: cs,
            limits: &self.task.spec.resources.limits,
            image: &image.config,
            user,
            mounts: {
                let mut m = self.resolve_mounts()?;
                m.extend(
                    self.inner
                        .prepare_files(&self.id, &self.task)
                        .map_err(&err)?,
                );
                m
            },
            etc: Some(etc),
            network,
            // Looked up on this node now: a missing device rejects the task.
            devices: spec::gather_devices(&cs.devices).map_err(&err)?,
            known_caps: spec::known_capabilities(),
            // Looked up per task, so installing tini on a node needs no restart.
            init: cs
                .init
                .then(|| spec::find_init(&spec::INIT_CANDIDATES))
                .flatten(),
        };
        let oci = spec::build_spec(&input).map_err(|e| err(e.to_string()))?;
        let json = serde_json::to_vec(&oci).map_err(|e| err(format!("spec: {e}")))?;

        let mut labels: HashMap<String, String> = cs.labels.clone().into_iter().collect();
        labels.insert(LABEL_TASK_ID.into(), self.task.id.to_string());
        labels.insert(LABEL_SERVICE_ID.into(), self.task.service_id.to_string());
        labels.insert(LABEL_TASK_NAME.into(), naming::container_name(&self.task));
        labels.insert(
            LABEL_STOP_SIGNAL.into(),
            spec::stop_signal(cs, &image.config),
        );
        let container = Container {
            id: self.id.clone(),
            labels,
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: spec::SPEC_TYPE_URL.into(),
                value: json,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: self.id.clone(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        match c
            .containers()
            .create(c.req_leased(
                CreateContainerRequest {
                    container: Some(container),
                },
                lease,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_already_exists(&s) => Ok(()),
            Err(s) => Err(map_status(s, |m| err(format!("create container: {m}")))),
        }
    }

    /// `binary:///path/to/rswarm?log-writer=/state/containers/ID/container.log`
    fn log_uri(&self) -> String {
        let lw = &self.inner.log_writer;
        let log = self.inner.container_dir(&self.id).join("container.log");
        format!(
            "binary://{}?{}={}",
            escape(&lw.binary.display().to_string(), true),
            escape(&lw.mode, false),
            escape(&log.display().to_string(), false)
        )
    }

    async fn create_task(&self) -> Result<(), ExecError> {
        let c = &self.inner.client;
        let rootfs = self.inner.rootfs_mounts(&self.id, &self.task.id).await?;
        let uri = self.log_uri();
        let r = c
            .tasks()
            .create(c.req(CreateTaskRequest {
                container_id: self.id.clone(),
                rootfs,
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if is_already_exists(&s) => Ok(()),
            Err(s) if is_not_found(&s) => Err(ExecError::NotFound(self.task.id.clone())),
            Err(s) => Err(map_status(s, |m| ExecError::Start {
                task: self.task.id.clone(),
                reason: m,
            })),
        }
    }

    async fn wait_exec(&self, exec_id: &str) -> Result<u32, tonic::Status> {
        let c = &self.inner.client;
        c.tasks()
            .wait(c.req(WaitRequest {
                container_id: self.id.clone(),
                exec_id: exec_id.into(),
            }))
            .await
            .map(|r| r.into_inner().exit_status)
    }

    async fn run_exec(
        &self,
        exec_id: &str,
        out: &Path,
        err_path: &Path,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<i32, ExecError> {
        let c = &self.inner.client;
        let task = self.task.id.clone();
        let exec_err = |reason: String| ExecError::Exec {
            task: task.clone(),
            reason,
        };
        let container_spec = self.spec().await?;
        let process = spec::exec_process(&container_spec.process, cmd);
        let json =
            serde_json::to_vec(&process).map_err(|e| exec_err(format!("process spec: {e}")))?;
        c.tasks()
            .exec(c.req(ExecProcessRequest {
                container_id: self.id.clone(),
                stdin: String::new(),
                stdout: out.display().to_string(),
                stderr: err_path.display().to_string(),
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: spec::PROCESS_TYPE_URL.into(),
                    value: json,
                }),
                exec_id: exec_id.into(),
            }))
            .await
            .map_err(|s| {
                if is_not_found(&s) {
                    exec_err("the container is not running".into())
                } else {
                    map_status(s, exec_err)
                }
            })?;
        let result = async {
            c.tasks()
                .start(c.req(StartRequest {
                    container_id: self.id.clone(),
                    exec_id: exec_id.into(),
                }))
                .await
                .map_err(|s| map_status(s, exec_err))?;
            match tokio::time::timeout(timeout, self.wait_exec(exec_id)).await {
                Ok(Ok(code)) => Ok(i32::try_from(code).unwrap_or(i32::MAX)),
                Ok(Err(s)) => Err(map_status(s, exec_err)),
                Err(_) => {
                    let _ = c
                        .tasks()
                        .kill(c.req(KillRequest {
                            container_id: self.id.clone(),
                            exec_id: exec_id.into(),
                            signal: SIGKILL,
                            all: false,
                        }))
                        .await;
                    let _ = tokio::time::timeout(KILL_WAIT, self.wait_exec(exec_id)).await;
                    Err(exec_err(format!(
                        "timed out after {}",
                        fmt_duration(timeout)
                    )))
                }
            }
        }
        .await;
        // The shim finishes copying the output before it deletes the process, so the
        // files are complete once this returns.
        let _ = c
            .tasks()
            .delete_process(c.req(DeleteProcessRequest {
                container_id: self.id.clone(),
                exec_id: exec_id.into(),
            }))
            .await;
        result
    }
}

#[tonic::async_trait]
impl Controller for ContainerdController {
    async fn prepare(&mut self) -> Result<(), ExecError> {
        if self.container_exists().await? {
            return Ok(());
        }
        let image = self
            .inner
            .ensure_image(&self.task.spec.container.image)
            .await?;
        self.image = Some(image.clone());
        // A host-network task uses the node's namespace: nothing to make or connect.
        if let Some(net) = self
            .inner
            .network()
            .filter(|_| !self.task.spec.host_network)
        {
            // A kernel call that fails here fails this task only, with the reason.
            let tn = net
                .attach(&self.task)
                .await
                .map_err(|e| ExecError::Create {
                    task: self.task.id.clone(),
                    reason: format!("network: {e}"),
                })?;
            if let Some(tn) = tn {
                self.netns = Some(tn.netns);
                self.address = tn.address;
            }
        }
        let lease = self.inner.client.lease("create").await?;
        let r = self.create_leased(&lease, &image).await;
        self.inner.client.release(lease).await;
        r
    }

    async fn start(&mut self) -> Result<(), ExecError> {
        let status = match self.process().await? {
            None => {
                self.create_task().await?;
                // runc has bind-mounted the secret and config files into the container's
                // mount namespace, which keeps their tmpfs alive: the host's mount can go,
                // so that the data is nowhere on the host's filesystem tree any more.
                if let Err(e) = self.inner.remove_files(&self.id) {
                    tracing::warn!(task.id = %self.task.id, "unmount the secrets tmpfs: {e}");
                }
                ProcessStatus::Created
            }
            Some(p) => ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown),
        };
        match status {
            // Running, or has run: starting again is a no-op (a new run is a new task).
            ProcessStatus::Running
            | ProcessStatus::Paused
            | ProcessStatus::Pausing
            | ProcessStatus::Stopped => return Ok(()),
            ProcessStatus::Created | ProcessStatus::Unknown => {}
        }
        let c = &self.inner.client;
        c.tasks()
            .start(c.req(StartRequest {
                container_id: self.id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| {
                if is_not_found(&s) {
                    ExecError::NotFound(self.task.id.clone())
                } else {
                    map_status(s, |m| ExecError::Start {
                        task: self.task.id.clone(),
                        reason: m,
                    })
                }
            })
    }

    async fn wait(&mut self) -> Result<i32, ExecError> {
        match self.wait_exec("").await {
            Ok(code) => Ok(i32::try_from(code).unwrap_or(i32::MAX)),
            Err(s) if is_not_found(&s) => Err(ExecError::NotFound(self.task.id.clone())),
            Err(s) => Err(runtime("wait", s)),
        }
    }

    async fn inspect(&mut self) -> Result<ContainerState, ExecError> {
        self.get_container().await?;
        let (running, exit_code) = match self.process().await? {
            None => (false, None),
            Some(p) => match ProcessStatus::try_from(p.status) {
                Ok(ProcessStatus::Stopped) => (
                    false,
                    Some(i32::try_from(p.exit_status).unwrap_or(i32::MAX)),
                ),
                _ => (is_running(p.status), None),
            },
        };
        Ok(ContainerState {
            container_id: self.id.clone(),
            running,
            exit_code,
        })
    }

    async fn stop(&mut self, signal: &str, grace: Duration) -> Result<(), ExecError> {
        self.inner
            .stop_container(&self.id, &self.task.id, signal, grace)
            .await
    }

    async fn remove(&mut self) -> Result<(), ExecError> {
        self.inner.remove_container(&self.id, &self.task.id).await?;
        // A host-network task was never attached (see `prepare`).
        if let Some(net) = self
            .inner
            .network()
            .filter(|_| !self.task.spec.host_network)
        {
            net.detach(&self.task.id).await;
        }
        Ok(())
    }

    async fn exec(&mut self, cmd: &[String], timeout: Duration) -> Result<ExecOutput, ExecError> {
        if cmd.is_empty() {
            return Err(ExecError::Exec {
                task: self.task.id.clone(),
                reason: "no command".into(),
            });
        }
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        let dir = self.inner.container_dir(&self.id);
        let out = dir.join(format!("{exec_id}.stdout"));
        let err_path = dir.join(format!("{exec_id}.stderr"));
        // Regular files, not FIFOs: the shim appends to a plain file it is given, and we
        // read it once the process is gone, with no reader to keep alive meanwhile.
        for p in [&out, &err_path] {
            std::fs::File::create(p).map_err(|e| ExecError::Exec {
                task: self.task.id.clone(),
                reason: format!("{}: {e}", p.display()),
            })?;
        }
        let result = self.run_exec(&exec_id, &out, &err_path, cmd, timeout).await;
        let stdout = read_capped(&out);
        let stderr = read_capped(&err_path);
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&err_path);
        Ok(ExecOutput {
            exit_code: result?,
            stdout,
            stderr,
        })
    }

    async fn image_healthcheck(&mut self) -> Result<Option<HealthCheck>, ExecError> {
        let image = &self.task.spec.container.image;
        let info = match &self.image {
            Some(i) => i.clone(),
            None => {
                let r = Reference::parse(image)
                    .map_err(|e| ExecError::InvalidImage(format!("{image}: {e}")))?;
                let info = match self.inner.local_image(&r).await? {
                    Some(i) => Arc::new(i),
                    None => self.inner.ensure_image(image).await?,
                };
                self.image = Some(info.clone());
                info
            }
        };
        Ok(info.config.healthcheck.as_ref().and_then(|h| h.to_model()))
    }
}

impl Inner {
    pub(crate) async fn process(
        &self,
        id: &str,
    ) -> Result<Option<containerd_client::types::v1::Process>, ExecError> {
        let c = &self.client;
        match c
            .tasks()
            .get(c.req(GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if is_not_found(&s) => Ok(None),
            Err(s) => Err(runtime("get task", s)),
        }
    }

    pub(crate) async fn rootfs_mounts(
        &self,
        id: &str,
        task: &TaskId,
    ) -> Result<Vec<PbMount>, ExecError> {
        let c = &self.client;
        match c
            .snapshots()
            .mounts(c.req(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().mounts),
            Err(s) if is_not_found(&s) => Err(ExecError::NotFound(task.clone())),
            Err(s) => Err(runtime("snapshot mounts", s)),
        }
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ExecError> {
        let c = &self.client;
        match c
            .tasks()
            .kill(c.req(KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone.
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(runtime("kill", s)),
        }
    }

    async fn wait_exit(&self, id: &str, limit: Duration) -> Result<bool, ExecError> {
        let c = &self.client;
        let mut tasks = c.tasks();
        let wait = tasks.wait(c.req(WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(s)) if is_not_found(&s) => Ok(true),
            Ok(Err(s)) => Err(runtime("wait", s)),
            Err(_) => Ok(false),
        }
    }

    /// Stop signal, up to `grace` for the process to exit, then SIGKILL to the whole
    /// container; returns once the process is gone.
    pub(crate) async fn stop_container(
        &self,
        id: &str,
        task: &TaskId,
        signal: &str,
        grace: Duration,
    ) -> Result<(), ExecError> {
        let Some(p) = self.process(id).await? else {
            return Ok(());
        };
        if ProcessStatus::try_from(p.status) == Ok(ProcessStatus::Stopped) {
            return Ok(());
        }
        let name = if signal.is_empty() {
            self.recorded_stop_signal(id).await.unwrap_or_default()
        } else {
            signal.to_string()
        };
        let sig = match spec::parse_signal(&name) {
            Some(s) => s,
            None => {
                if !name.is_empty() {
                    tracing::warn!(task.id = %task, signal = %name, "unknown stop signal; using SIGTERM");
                }
                SIGTERM
            }
        };
        if sig != SIGKILL && !grace.is_zero() {
            self.kill(id, sig, false).await?;
            if self.wait_exit(id, grace).await? {
                return Ok(());
            }
        }
        self.kill(id, SIGKILL, true).await?;
        if self.wait_exit(id, KILL_WAIT).await? {
            Ok(())
        } else {
            Err(ExecError::Runtime(format!(
                "task {task}: the container did not exit within {}s of SIGKILL",
                KILL_WAIT.as_secs()
            )))
        }
    }

    /// Deletes the task, the container, its snapshot and its state dir; what is already
    /// gone is skipped.
    pub(crate) async fn remove_container(&self, id: &str, task: &TaskId) -> Result<(), ExecError> {
        let c = &self.client;
        if let Some(p) = self.process(id).await? {
            if ProcessStatus::try_from(p.status) != Ok(ProcessStatus::Stopped) {
                self.kill(id, SIGKILL, true).await?;
                self.wait_exit(id, KILL_WAIT).await?;
            }
            match c
                .tasks()
                .delete(c.req(DeleteTaskRequest {
                    container_id: id.into(),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if is_not_found(&s) => {}
                Err(s) => return Err(runtime(&format!("task {task}: delete task"), s)),
            }
        }
        match c
            .containers()
            .delete(c.req(DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => {}
            Err(s) if is_not_found(&s) => {}
            Err(s) => return Err(runtime(&format!("task {task}: delete container"), s)),
        }
        self.remove_snapshot(id).await;
        self.remove_files(id)
            .map_err(|e| ExecError::Runtime(format!("task {task}: secrets: {e}")))?;
        match std::fs::remove_dir_all(self.container_dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ExecError::Runtime(format!("task {task}: {e}"))),
        }
    }
}

/// Reads a file of the container's root filesystem from the host, through the snapshot's
/// mounts (a bind of one directory, or overlay layers: upper first, then lowers top down),
/// without mounting anything. `None` when absent, deleted (whiteout) or not a regular file.
fn read_rootfs_file(mounts: &[PbMount], rel: &str) -> Option<String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "bind" => dirs.push(PathBuf::from(&m.source)),
            "overlay" => {
                let opt = |k: &str| {
                    m.options
                        .iter()
                        .find_map(|o| o.strip_prefix(k).map(str::to_string))
                };
                if let Some(u) = opt("upperdir=") {
                    dirs.push(PathBuf::from(u));
                }
                if let Some(l) = opt("lowerdir=") {
                    dirs.extend(l.split(':').map(PathBuf::from));
                }
            }
            _ => {}
        }
    }
    for d in dirs {
        let p = d.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() => return std::fs::read_to_string(&p).ok(),
            Ok(md) if md.file_type().is_char_device() => return None,
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

fn read_capped(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(MAX_EXEC_OUTPUT).read_to_end(&mut out);
    }
    out
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Percent-encodes for a URI: paths keep their slashes, query values do not.
fn escape(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (path && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escaping() {
        assert_eq!(escape("/usr/bin/rs warm", true), "/usr/bin/rs%20warm");
        assert_eq!(escape("/a/b.log", false), "%2Fa%2Fb.log");
    }

    #[test]
    fn rootfs_files_through_overlay_layers() {
        let d = tempfile::tempdir().expect("tmp");
        let upper = d.path().join("upper");
        let l1 = d.path().join("l1");
        let l2 = d.path().join("l2");
        for p in [&upper, &l1, &l2] {
            std::fs::create_dir_all(p.join("etc")).expect("mkdir");
        }
        std::fs::write(l2.join("etc/passwd"), "old").expect("write");
        std::fs::write(l1.join("etc/passwd"), "new").expect("write");
        std::fs::write(l2.join("etc/group"), "g").expect("write");
        let m = PbMount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                format!("workdir={}", d.path().join("work").display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}:{}", l1.display(), l2.display()),
            ],
        };
        assert_eq!(
            read_rootfs_file(std::slice::from_ref(&m), "etc/passwd").as_deref(),
            Some("new")
        );
        assert_eq!(
            read_rootfs_file(std::slice::from_ref(&m), "etc/group").as_deref(),
            Some("g")
        );
        assert_eq!(read_rootfs_file(&[m], "etc/shadow"), None);
    }
}
