//! An in-memory container runtime for tests (swarmkit's `agent/testutils`): [`FakeExecutor`]
//! keeps a model of the node's containers, one per task id at most (created, running, exited
//! with a code), and the tests assert on that model rather than on the calls made.
//!
//! What a container does is scripted per image or per task with a [`Script`] (a task's
//! script wins): fail at prepare or at start with a given [`ExecError`], run until stopped
//! or exit with a code after a delay, exit on the stop signal (after a delay) or ignore it,
//! answer its health check from some time after the start or never, and declare an image
//! health check or stop signal. A script is read when it applies, so a test may change it
//! between steps (a prepare that fails, then succeeds).
//!
//! All delays are `tokio::time`, so tests run with `#[tokio::test(start_paused = true)]`
//! and take no wall-clock time. Semantics follow `crate::containerd`: every method is
//! idempotent, `stop` sends the signal (empty: the one recorded at create, the spec's, else
//! the image's, else SIGTERM), waits up to the grace period, then SIGKILLs (exit 137).

use crate::containerd::spec::parse_signal;
use crate::exec::{ContainerRef, ContainerState, Controller, ExecError, ExecOutput, Executor};
use crate::health;
use rswarm_proto::model::{HealthCheck, Task, TaskId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub const SIGKILL: u32 = 9;
pub const SIGTERM: u32 = 15;

/// What the container's main process does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Runs until it is stopped (a server).
    UntilStopped,
    /// Exits with `code` this long after its start.
    Exit { code: i32, after: Duration },
}

/// What the process does on a stop signal other than SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// Exits with 128 + the signal's number this long after it (zero: at once).
    ExitAfter(Duration),
    /// Keeps running: only SIGKILL ends it.
    Ignore,
}

/// The behaviour of a container: see the module doc. The default starts, runs until
/// stopped, exits at once on the stop signal and passes its health check.
#[derive(Debug)]
pub struct Script {
    pub fail_prepare: Option<ExecError>,
    pub fail_start: Option<ExecError>,
    /// How long `prepare` (pull and create) and `start` take.
    pub prepare_takes: Duration,
    pub start_takes: Duration,
    pub run: Run,
    pub on_signal: OnSignal,
    /// The health command succeeds from this long after the start; `None`: never.
    pub healthy_from: Option<Duration>,
    /// ... and fails again from this long after the start.
    pub healthy_until: Option<Duration>,
    /// How long one health probe takes (longer than the check's timeout: a failed probe).
    pub probe_takes: Duration,
    /// The image's HEALTHCHECK and STOPSIGNAL.
    pub image_healthcheck: Option<HealthCheck>,
    pub image_stop_signal: String,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            fail_prepare: None,
            fail_start: None,
            prepare_takes: Duration::ZERO,
            start_takes: Duration::ZERO,
            run: Run::UntilStopped,
            on_signal: OnSignal::ExitAfter(Duration::ZERO),
            healthy_from: Some(Duration::ZERO),
            healthy_until: None,
            probe_takes: Duration::ZERO,
            image_healthcheck: None,
            image_stop_signal: String::new(),
        }
    }
}

impl Clone for Script {
    fn clone(&self) -> Self {
        Self {
            fail_prepare: self.fail_prepare.as_ref().map(copy_error),
            fail_start: self.fail_start.as_ref().map(copy_error),
            prepare_takes: self.prepare_takes,
            start_takes: self.start_takes,
            run: self.run,
            on_signal: self.on_signal,
            healthy_from: self.healthy_from,
            healthy_until: self.healthy_until,
            probe_takes: self.probe_takes,
            image_healthcheck: self.image_healthcheck.clone(),
            image_stop_signal: self.image_stop_signal.clone(),
        }
    }
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs until stopped (the default).
    pub fn hang(mut self) -> Self {
        self.run = Run::UntilStopped;
        self
    }

    /// Exits with `code` `after` its start.
    pub fn exit(mut self, code: i32, after: Duration) -> Self {
        self.run = Run::Exit { code, after };
        self
    }

    pub fn fail_prepare(mut self, e: ExecError) -> Self {
        self.fail_prepare = Some(e);
        self
    }

    pub fn fail_start(mut self, e: ExecError) -> Self {
        self.fail_start = Some(e);
        self
    }

    pub fn prepare_takes(mut self, d: Duration) -> Self {
        self.prepare_takes = d;
        self
    }

    pub fn start_takes(mut self, d: Duration) -> Self {
        self.start_takes = d;
        self
    }

    /// Only SIGKILL ends the process.
    pub fn ignore_stop(mut self) -> Self {
        self.on_signal = OnSignal::Ignore;
        self
    }

    /// The process takes `d` to exit after the stop signal.
    pub fn stop_takes(mut self, d: Duration) -> Self {
        self.on_signal = OnSignal::ExitAfter(d);
        self
    }

    /// The health command succeeds from `d` after the start.
    pub fn healthy_after(mut self, d: Duration) -> Self {
        self.healthy_from = Some(d);
        self
    }

    /// The health command never succeeds.
    pub fn never_healthy(mut self) -> Self {
        self.healthy_from = None;
        self
    }

    /// The health command fails from `d` after the start on.
    pub fn unhealthy_after(mut self, d: Duration) -> Self {
        self.healthy_until = Some(d);
        self
    }

    pub fn probe_takes(mut self, d: Duration) -> Self {
        self.probe_takes = d;
        self
    }

    pub fn image_healthcheck(mut self, hc: HealthCheck) -> Self {
        self.image_healthcheck = Some(hc);
        self
    }

    pub fn image_stop_signal(mut self, s: &str) -> Self {
        self.image_stop_signal = s.to_owned();
        self
    }

    fn healthy_at(&self, since_start: Duration) -> bool {
        self.healthy_from.is_some_and(|from| since_start >= from)
            && self.healthy_until.is_none_or(|until| since_start < until)
    }
}

/// `ExecError` is not `Clone`; a script hands out a copy each time it fails a call.
fn copy_error(e: &ExecError) -> ExecError {
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

/// A signal a container's process received, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    pub signal: u32,
    pub at: Instant,
}

/// A container as the fake holds it, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub task_id: TaskId,
    pub container_id: String,
    pub image: String,
    /// The signal `stop` sends when given none.
    pub stop_signal: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub started_at: Option<Instant>,
    pub exited_at: Option<Instant>,
}

/// What happened to a task's containers over the test, kept after they are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskHistory {
    pub created: u32,
    pub started: u32,
    pub removed: u32,
    pub signals: Vec<Signal>,
    pub health_probes: u32,
}

#[derive(Debug)]
enum Process {
    Created,
    Running {
        since: Instant,
    },
    Exited {
        code: i32,
        at: Instant,
        started: Option<Instant>,
    },
}

#[derive(Debug)]
struct Container {
    id: String,
    image: String,
    stop_signal: String,
    process: Process,
    exit: watch::Sender<Option<i32>>,
    timers: Vec<AbortHandle>,
}

impl Container {
    fn running_since(&self) -> Option<Instant> {
        match self.process {
            Process::Running { since } => Some(since),
            _ => None,
        }
    }

    fn view(&self, task: &TaskId) -> FakeContainer {
        let (running, exit_code, started_at, exited_at) = match self.process {
            Process::Created => (false, None, None, None),
            Process::Running { since } => (true, None, Some(since), None),
            Process::Exited { code, at, started } => (false, Some(code), started, Some(at)),
        };
        FakeContainer {
            task_id: task.clone(),
            container_id: self.id.clone(),
            image: self.image.clone(),
            stop_signal: self.stop_signal.clone(),
            running,
            exit_code,
            started_at,
            exited_at,
        }
    }
}

#[derive(Default)]
struct State {
    containers: BTreeMap<TaskId, Container>,
    history: BTreeMap<TaskId, TaskHistory>,
    by_image: BTreeMap<String, Script>,
    by_task: BTreeMap<TaskId, Script>,
    next_id: u64,
}

impl State {
    fn script(&self, task: &TaskId, image: &str) -> Script {
        self.by_task
            .get(task)
            .or_else(|| self.by_image.get(image))
            .cloned()
            .unwrap_or_default()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change of the model, for [`FakeExecutor::wait_for`].
    changes: watch::Sender<u64>,
    log_dir: PathBuf,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The process of `container_id` exits with `code`, if it still runs.
    fn exit(&self, task: &TaskId, container_id: &str, code: i32) {
        {
            let mut st = self.lock();
            let Some(c) = st.containers.get_mut(task) else {
                return;
            };
            let Some(started) = c.running_since().filter(|_| c.id == container_id) else {
                return;
            };
            c.process = Process::Exited {
                code,
                at: Instant::now(),
                started: Some(started),
            };
            c.exit.send_replace(Some(code));
            for t in c.timers.drain(..) {
                t.abort();
            }
        }
        self.changed();
    }

    /// Delivers `signal` to the process of `task`'s container, as its script says.
    fn signal(self: &Arc<Self>, task: &TaskId, signal: u32) {
        let (id, on_signal) = {
            let mut st = self.lock();
            let Some(c) = st.containers.get(task) else {
                return;
            };
            if c.running_since().is_none() {
                return;
            }
            let id = c.id.clone();
            let on_signal = st.script(task, &c.image).on_signal;
            st.history
                .entry(task.clone())
                .or_default()
                .signals
                .push(Signal {
                    signal,
                    at: Instant::now(),
                });
            (id, on_signal)
        };
        self.changed();
        let code = 128 + i32::try_from(signal).unwrap_or(0);
        match (signal, on_signal) {
            (SIGKILL, _) | (_, OnSignal::ExitAfter(Duration::ZERO)) => self.exit(task, &id, code),
            (_, OnSignal::ExitAfter(d)) => self.after(task, &id, d, code),
            (_, OnSignal::Ignore) => {}
        }
    }

    /// Exits the process with `code` after `d`, unless it is gone by then.
    fn after(self: &Arc<Self>, task: &TaskId, id: &str, d: Duration, code: i32) {
        let me = self.clone();
        let (task2, id2) = (task.clone(), id.to_owned());
        let h = tokio::spawn(async move {
            tokio::time::sleep(d).await;
            me.exit(&task2, &id2, code);
        })
        .abort_handle();
        match self.lock().containers.get_mut(task) {
            Some(c) if c.id == id => c.timers.push(h),
            _ => h.abort(),
        }
    }

    /// Starts the created process of `task`'s container and arms its scripted exit.
    fn start_process(self: &Arc<Self>, task: &TaskId, since: Instant) -> Option<String> {
        let (id, run) = {
            let mut st = self.lock();
            let script_run = {
                let c = st.containers.get(task)?;
                st.script(task, &c.image).run
            };
            let c = st.containers.get_mut(task)?;
            if !matches!(c.process, Process::Created) {
                return Some(c.id.clone());
            }
            c.process = Process::Running { since };
            let id = c.id.clone();
            st.history.entry(task.clone()).or_default().started += 1;
            (id, script_run)
        };
        self.changed();
        if let Run::Exit { code, after } = run {
            let left = (since + after).saturating_duration_since(Instant::now());
            self.after(task, &id, left, code);
        }
        Some(id)
    }

    fn create(&self, task: &Task, script: &Script) -> String {
        let mut st = self.lock();
        if let Some(c) = st.containers.get(&task.id) {
            return c.id.clone();
        }
        st.next_id += 1;
        let id = format!("fake-{:04}-{}", st.next_id, task.id);
        let spec = &task.spec.container;
        let stop_signal = if spec.stop_signal.is_empty() {
            script.image_stop_signal.clone()
        } else {
            spec.stop_signal.clone()
        };
        st.containers.insert(
            task.id.clone(),
            Container {
                id: id.clone(),
                image: spec.image.clone(),
                stop_signal,
                process: Process::Created,
                exit: watch::channel(None).0,
                timers: Vec::new(),
            },
        );
        st.history.entry(task.id.clone()).or_default().created += 1;
        drop(st);
        self.changed();
        id
    }

    /// Stop signal, up to `grace` for the process to exit, then SIGKILL (as containerd's).
    async fn stop(self: &Arc<Self>, task: &TaskId, signal: &str, grace: Duration) {
        let (mut exited, name) = {
            let st = self.lock();
            let Some(c) = st.containers.get(task) else {
                return;
            };
            if c.running_since().is_none() {
                return;
            }
            let name = if signal.is_empty() {
                c.stop_signal.clone()
            } else {
                signal.to_owned()
            };
            (c.exit.subscribe(), name)
        };
        let sig = parse_signal(&name).unwrap_or(SIGTERM);
        if sig != SIGKILL && !grace.is_zero() {
            self.signal(task, sig);
            // An error: the container was removed meanwhile, so the process is gone too.
            let gone = tokio::time::timeout(grace, exited.wait_for(Option::is_some)).await;
            if gone.is_ok() {
                return;
            }
        }
        self.signal(task, SIGKILL);
    }

    /// Deletes `task`'s container (only if it is `container_id`), SIGKILLing a process
    /// that still runs.
    fn remove(self: &Arc<Self>, task: &TaskId, container_id: Option<&str>) {
        let running = match self.lock().containers.get(task) {
            Some(c) if container_id.is_none_or(|id| id == c.id) => c.running_since().is_some(),
            _ => return,
        };
        if running {
            self.signal(task, SIGKILL);
        }
        {
            let mut st = self.lock();
            if let Some(mut c) = st.containers.remove(task) {
                for t in c.timers.drain(..) {
                    t.abort();
                }
            }
            st.history.entry(task.clone()).or_default().removed += 1;
        }
        self.changed();
    }
}

/// The fake runtime of one node; clones share the model.
#[derive(Clone)]
pub struct FakeExecutor {
    shared: Arc<Shared>,
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
                log_dir: std::env::temp_dir().join("rswarm-fake-logs"),
            }),
        }
    }

    /// Every container of `image` follows `script` (unless its task has its own).
    pub fn script_image(&self, image: &str, script: Script) {
        self.shared.lock().by_image.insert(image.to_owned(), script);
    }

    /// `task`'s container follows `script`.
    pub fn script_task(&self, task: &TaskId, script: Script) {
        self.shared.lock().by_task.insert(task.clone(), script);
    }

    /// A container left created but never started (as by a daemon that died in between).
    pub fn add_created(&self, task: &Task) -> String {
        let script = self.script_of(task);
        self.shared.create(task, &script)
    }

    /// A container whose process already runs (as found after a daemon restart), started
    /// now and following its script from here. Call it inside a Tokio runtime.
    pub fn add_running(&self, task: &Task) -> String {
        let id = self.add_created(task);
        self.shared.start_process(&task.id, Instant::now());
        id
    }

    /// A container whose process has exited with `code`.
    pub fn add_exited(&self, task: &Task, code: i32) -> String {
        let id = self.add_created(task);
        {
            let mut st = self.shared.lock();
            if let Some(c) = st.containers.get_mut(&task.id) {
                c.process = Process::Exited {
                    code,
                    at: Instant::now(),
                    started: None,
                };
                c.exit.send_replace(Some(code));
            }
        }
        self.shared.changed();
        id
    }

    /// The process of `task`'s container exits with `code` now (a crash, or a job ending).
    pub fn exit_now(&self, task: &TaskId, code: i32) {
        let id = self
            .shared
            .lock()
            .containers
            .get(task)
            .map(|c| c.id.clone());
        if let Some(id) = id {
            self.shared.exit(task, &id, code);
        }
    }

    fn script_of(&self, task: &Task) -> Script {
        self.shared
            .lock()
            .script(&task.id, &task.spec.container.image)
    }

    pub fn container(&self, task: &TaskId) -> Option<FakeContainer> {
        self.shared
            .lock()
            .containers
            .get(task)
            .map(|c| c.view(task))
    }

    /// Every container, by task id.
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.shared
            .lock()
            .containers
            .iter()
            .map(|(t, c)| c.view(t))
            .collect()
    }

    /// The tasks whose containers run.
    pub fn running(&self) -> Vec<TaskId> {
        self.shared
            .lock()
            .containers
            .iter()
            .filter(|(_, c)| c.running_since().is_some())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// What happened to `task`'s containers so far (created, started, removed, signals).
    pub fn history(&self, task: &TaskId) -> TaskHistory {
        self.shared
            .lock()
            .history
            .get(task)
            .cloned()
            .unwrap_or_default()
    }

    pub fn times_started(&self, task: &TaskId) -> u32 {
        self.history(task).started
    }

    pub fn signals(&self, task: &TaskId) -> Vec<Signal> {
        self.history(task).signals
    }

    /// Bumped on every change of the model.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Waits until `check` holds, re-checking on every change of the model; after `within`
    /// (Tokio time), the last unmet condition `check` gave.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&FakeExecutor) -> Result<T, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + within;
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let unmet = match check(self) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Err(unmet) },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(format!("after {within:?}: {unmet}"));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Executor for FakeExecutor {
    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>, ExecError> {
        if task.spec.container.image.is_empty() {
            return Err(ExecError::InvalidImage(String::new()));
        }
        Ok(Box::new(FakeController {
            shared: self.shared.clone(),
            task: task.clone(),
        }))
    }

    async fn list(&self) -> Result<Vec<ContainerRef>, ExecError> {
        Ok(self
            .shared
            .lock()
            .containers
            .iter()
            .map(|(t, c)| ContainerRef {
                task_id: t.clone(),
                container_id: c.id.clone(),
                running: c.running_since().is_some(),
            })
            .collect())
    }

    async fn remove_orphan(&self, c: &ContainerRef, grace: Duration) -> Result<(), ExecError> {
        let same = self
            .shared
            .lock()
            .containers
            .get(&c.task_id)
            .is_some_and(|x| x.id == c.container_id);
        if same {
            self.shared.stop(&c.task_id, "", grace).await;
            self.shared.remove(&c.task_id, Some(&c.container_id));
        }
        Ok(())
    }

    fn log_file(&self, task: &TaskId) -> PathBuf {
        self.shared.log_dir.join(format!("{task}.log"))
    }
}

/// One task's container in a [`FakeExecutor`].
pub struct FakeController {
    shared: Arc<Shared>,
    task: Task,
}

impl FakeController {
    fn script(&self) -> Script {
        self.shared
            .lock()
            .script(&self.task.id, &self.task.spec.container.image)
    }

    fn exists(&self) -> bool {
        self.shared.lock().containers.contains_key(&self.task.id)
    }
}

#[tonic::async_trait]
impl Controller for FakeController {
    async fn prepare(&mut self) -> Result<(), ExecError> {
        if self.exists() {
            return Ok(());
        }
        let script = self.script();
        tokio::time::sleep(script.prepare_takes).await;
        if let Some(e) = &script.fail_prepare {
            return Err(copy_error(e));
        }
        self.shared.create(&self.task, &script);
        Ok(())
    }

    async fn start(&mut self) -> Result<(), ExecError> {
        let created = match self.shared.lock().containers.get(&self.task.id) {
            None => return Err(ExecError::NotFound(self.task.id.clone())),
            Some(c) => matches!(c.process, Process::Created),
        };
        // Running, or has run: starting again is a no-op.
        if !created {
            return Ok(());
        }
        let script = self.script();
        tokio::time::sleep(script.start_takes).await;
        if let Some(e) = &script.fail_start {
            return Err(copy_error(e));
        }
        match self.shared.start_process(&self.task.id, Instant::now()) {
            Some(_) => Ok(()),
            None => Err(ExecError::NotFound(self.task.id.clone())),
        }
    }

    async fn wait(&mut self) -> Result<i32, ExecError> {
        let rx = self
            .shared
            .lock()
            .containers
            .get(&self.task.id)
            .map(|c| c.exit.subscribe());
        let Some(mut rx) = rx else {
            return Err(ExecError::NotFound(self.task.id.clone()));
        };
        let exited = rx.wait_for(Option::is_some).await.map(|code| *code);
        match exited {
            Ok(code) => Ok(code.unwrap_or(-1)),
            // Removed while waiting.
            Err(_) => Err(ExecError::NotFound(self.task.id.clone())),
        }
    }

    async fn inspect(&mut self) -> Result<ContainerState, ExecError> {
        self.shared
            .lock()
            .containers
            .get(&self.task.id)
            .map(|c| {
                let v = c.view(&self.task.id);
                ContainerState {
                    container_id: v.container_id,
                    running: v.running,
                    exit_code: v.exit_code,
                }
            })
            .ok_or_else(|| ExecError::NotFound(self.task.id.clone()))
    }

    async fn stop(&mut self, signal: &str, grace: Duration) -> Result<(), ExecError> {
        self.shared.stop(&self.task.id, signal, grace).await;
        Ok(())
    }

    async fn remove(&mut self) -> Result<(), ExecError> {
        self.shared.remove(&self.task.id, None);
        Ok(())
    }

    async fn exec(&mut self, cmd: &[String], timeout: Duration) -> Result<ExecOutput, ExecError> {
        let exec_err = |reason: &str| ExecError::Exec {
            task: self.task.id.clone(),
            reason: reason.to_owned(),
        };
        let since = self
            .shared
            .lock()
            .containers
            .get(&self.task.id)
            .and_then(Container::running_since);
        let Some(since) = since else {
            return Err(exec_err("the container is not running"));
        };
        let script = self.script();
        let check = health::effective(&self.task.spec.container, script.image_healthcheck.clone());
        if check.as_ref().map(health::command).as_deref() != Some(cmd) {
            // Any other command succeeds at once.
            return Ok(ExecOutput::default());
        }
        self.shared
            .lock()
            .history
            .entry(self.task.id.clone())
            .or_default()
            .health_probes += 1;
        self.shared.changed();
        if script.probe_takes > timeout {
            tokio::time::sleep(timeout).await;
            return Err(exec_err(&format!("timed out after {timeout:?}")));
        }
        tokio::time::sleep(script.probe_takes).await;
        let healthy = script.healthy_at(Instant::now().saturating_duration_since(since));
        Ok(ExecOutput {
            exit_code: if healthy { 0 } else { 1 },
            stdout: Vec::new(),
            stderr: if healthy {
                Vec::new()
            } else {
                b"unhealthy\n".to_vec()
            },
        })
    }

    async fn image_healthcheck(&mut self) -> Result<Option<HealthCheck>, ExecError> {
        Ok(self.script().image_healthcheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::model::{ContainerSpec, TaskSpec};

    fn task(id: &str, image: &str) -> Task {
        Task {
            id: id.into(),
            spec: TaskSpec {
                container: ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_runs_its_script() {
        let fake = FakeExecutor::new();
        fake.script_image("job", Script::new().exit(4, Duration::from_secs(5)));
        let t = task("t1", "job");
        let mut ctl = fake.controller(&t).unwrap();
        assert!(matches!(ctl.inspect().await, Err(ExecError::NotFound(_))));
        ctl.prepare().await.unwrap();
        ctl.prepare().await.unwrap();
        assert_eq!(fake.history(&t.id).created, 1);
        let t0 = Instant::now();
        ctl.start().await.unwrap();
        ctl.start().await.unwrap();
        assert_eq!(fake.running(), vec![t.id.clone()]);
        assert_eq!(ctl.wait().await.unwrap(), 4);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        let c = fake.container(&t.id).unwrap();
        assert_eq!((c.running, c.exit_code), (false, Some(4)));
        assert_eq!(fake.times_started(&t.id), 1);
        ctl.remove().await.unwrap();
        assert!(fake.containers().is_empty());
        assert_eq!(fake.history(&t.id).removed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_falls_back_to_the_image_signal_then_sigkill() {
        let fake = FakeExecutor::new();
        fake.script_image(
            "srv",
            Script::new().image_stop_signal("SIGQUIT").ignore_stop(),
        );
        let t = task("t1", "srv");
        fake.add_running(&t);
        let t0 = Instant::now();
        let refs = fake.list().await.unwrap();
        fake.remove_orphan(&refs[0], Duration::from_secs(3))
            .await
            .unwrap();
        let sigs: Vec<(u32, Duration)> = fake
            .signals(&t.id)
            .iter()
            .map(|s| (s.signal, s.at - t0))
            .collect();
        assert_eq!(
            sigs,
            vec![(3, Duration::ZERO), (SIGKILL, Duration::from_secs(3))]
        );
        assert!(fake.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_health_command_follows_the_script() {
        let fake = FakeExecutor::new();
        let hc = HealthCheck {
            test: vec!["CMD".into(), "check".into()],
            timeout: Duration::from_secs(2),
            ..Default::default()
        };
        fake.script_image(
            "srv",
            Script::new()
                .image_healthcheck(hc)
                .healthy_after(Duration::from_secs(10)),
        );
        let t = task("t1", "srv");
        let mut ctl = fake.controller(&t).unwrap();
        let cmd = vec!["check".to_owned()];
        assert!(ctl.exec(&cmd, Duration::from_secs(2)).await.is_err());
        ctl.prepare().await.unwrap();
        ctl.start().await.unwrap();
        assert_eq!(
            ctl.exec(&cmd, Duration::from_secs(2))
                .await
                .unwrap()
                .exit_code,
            1
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            ctl.exec(&cmd, Duration::from_secs(2))
                .await
                .unwrap()
                .exit_code,
            0
        );
        assert_eq!(fake.history(&t.id).health_probes, 2);
        // Another command is not a probe.
        assert_eq!(
            ctl.exec(&["ls".into()], Duration::from_secs(2))
                .await
                .unwrap()
                .exit_code,
            0
        );
        assert_eq!(fake.history(&t.id).health_probes, 2);
    }
}
