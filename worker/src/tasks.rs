//! The agent's task manager: one runner per assigned task drives its container through the
//! lifecycle with the [`Controller`], and the latest observed status of every task is kept
//! until the leader has it (re-sent after a reconnect).
//!
//! A runner first inspects the container, so after a daemon restart it reattaches to a
//! running container instead of starting another (the task's state does not change), and
//! one prepared but not yet started (`ready`) is started once its desired state is running.

use crate::exec::{Controller, ExecError, Executor};
use crate::health::{self, Streak, Verdict};
use rswarm_proto::model::{Task, TaskId, TaskState, TaskStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Docker's default stop grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Statuses not yet delivered to the leader, latest per task.
#[derive(Default)]
pub struct Reports {
    pending: Mutex<BTreeMap<TaskId, TaskStatus>>,
    pub notify: Notify,
}

impl Reports {
    fn put(&self, id: &TaskId, status: TaskStatus) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), status);
        self.notify.notify_one();
    }

    /// Takes what is pending; give it back with [`Reports::restore`] if sending fails.
    pub fn take(&self) -> BTreeMap<TaskId, TaskStatus> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back unsent reports, unless a newer one arrived meanwhile.
    pub fn restore(&self, unsent: BTreeMap<TaskId, TaskStatus>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in unsent {
            p.entry(k).or_insert(v);
        }
    }
}

struct Runner {
    task: watch::Sender<Task>,
    handle: JoinHandle<()>,
}

/// Waits while the task's desired state is below running: true once it is to run, false
/// when it is to stop instead (or its runner is being dropped).
async fn until_desired_running(rx: &mut watch::Receiver<Task>) -> bool {
    loop {
        let desired = rx.borrow_and_update().desired_state;
        if desired >= TaskState::Shutdown {
            return false;
        }
        if desired >= TaskState::Running {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Runs this node's tasks.
pub struct TaskManager {
    executor: Arc<dyn Executor>,
    runners: Mutex<BTreeMap<TaskId, Runner>>,
    pub reports: Arc<Reports>,
    /// The last status each runner reported, so a re-sent assignment does not regress it.
    observed: Arc<Mutex<BTreeMap<TaskId, TaskStatus>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TaskManager {
    pub fn new(executor: Arc<dyn Executor>) -> Arc<Self> {
        Arc::new(Self {
            executor,
            runners: Mutex::new(BTreeMap::new()),
            reports: Arc::new(Reports::default()),
            observed: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The container runtime behind this manager.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.executor
    }

    /// The task as last assigned, if it is assigned here.
    pub fn task(&self, id: &TaskId) -> Option<Task> {
        self.runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|r| r.task.borrow().clone())
    }

    /// Queues every known status again: a new leader may have missed some.
    pub fn resend_all(&self) {
        let all = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (id, st) in all {
            self.reports.put(&id, st);
        }
    }

    /// The whole set of assignments: tasks not in it are no longer this node's.
    pub async fn set_all(self: &Arc<Self>, tasks: Vec<Task>) {
        let keep: BTreeSet<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<TaskId> = self
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        self.update(tasks, gone.clone()).await;
        // Containers of tasks this node no longer owns (e.g. it was down while they were
        // moved elsewhere) are stopped and removed. Those of `gone` are being stopped by
        // `update`, with their own signal and grace period.
        match self.executor.list().await {
            Ok(found) => {
                for c in found
                    .into_iter()
                    .filter(|c| !keep.contains(&c.task_id) && !gone.contains(&c.task_id))
                {
                    info!(task.id = %c.task_id, "removing the container of a task this node no longer owns");
                    // In the background: a container that ignores SIGTERM must not hold up
                    // the session (heartbeats) for its grace period.
                    let exec = self.executor.clone();
                    tokio::spawn(async move {
                        if let Err(e) = exec.remove_orphan(&c, DEFAULT_GRACE).await {
                            warn!(task.id = %c.task_id, "remove orphaned container: {e}");
                        }
                    });
                }
            }
            Err(e) => warn!("list containers: {e}"),
        }
    }

    /// New or changed tasks, and tasks no longer assigned here.
    pub async fn update(self: &Arc<Self>, tasks: Vec<Task>, removed: Vec<TaskId>) {
        for id in removed {
            let runner = self
                .runners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            self.observed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let Some(r) = runner else {
                // Never ran here since the daemon started: the orphan sweep of the next
                // complete assignment set removes its container if there is one.
                continue;
            };
            r.handle.abort();
            let task = r.task.borrow().clone();
            let exec = self.executor.clone();
            tokio::spawn(async move {
                match exec.controller(&task) {
                    Ok(mut ctl) => {
                        let grace = task
                            .spec
                            .container
                            .stop_grace_period
                            .unwrap_or(DEFAULT_GRACE);
                        let _ = ctl.stop(&task.spec.container.stop_signal, grace).await;
                        if let Err(e) = ctl.remove().await {
                            warn!(task.id = %id, "remove container: {e}");
                        }
                    }
                    Err(e) => warn!(task.id = %id, "remove container: {e}"),
                }
            });
        }
        for t in tasks {
            let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = runners.get(&t.id) {
                r.task.send_replace(t);
                continue;
            }
            let ctl = match self.executor.controller(&t) {
                Ok(c) => c,
                Err(e) => {
                    self.report(
                        &t,
                        TaskState::Rejected,
                        "rejected",
                        Some(e.to_string()),
                        None,
                    );
                    continue;
                }
            };
            let (tx, rx) = watch::channel(t.clone());
            let me = self.clone();
            let handle = tokio::spawn(async move { me.drive(rx, ctl).await });
            runners.insert(t.id.clone(), Runner { task: tx, handle });
        }
    }

    fn report(
        &self,
        t: &Task,
        state: TaskState,
        message: &str,
        err: Option<String>,
        exit: Option<i32>,
    ) {
        let mut status = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&t.id)
            .cloned()
            .unwrap_or_else(|| t.status.clone());
        if state < status.state {
            return;
        }
        status.state = state;
        status.message = message.to_owned();
        status.timestamp = now_ms();
        if let Some(e) = err {
            status.err = e;
        }
        if exit.is_some() {
            status.exit_code = exit;
        }
        info!(task.id = %t.id, state = state.as_str(), "task state");
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.id.clone(), status.clone());
        self.reports.put(&t.id, status);
    }

    fn known_state(&self, t: &Task) -> TaskState {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&t.id)
            .map_or(t.status.state, |s| s.state.max(t.status.state))
    }

    /// Drives one task until it is finished; then waits to be removed.
    async fn drive(self: Arc<Self>, mut rx: watch::Receiver<Task>, mut ctl: Box<dyn Controller>) {
        let t = rx.borrow().clone();
        if let Err(e) = self.lifecycle(&mut rx, ctl.as_mut()).await {
            let t2 = rx.borrow().clone();
            let (state, msg) = if self.known_state(&t2) < TaskState::Starting {
                (TaskState::Rejected, "rejected")
            } else {
                (TaskState::Failed, "failed")
            };
            warn!(task.id = %t.id, "{e}");
            self.report(&t2, state, msg, Some(e.to_string()), None);
        }
        // A finished task keeps its container until the leader removes the task; a later
        // desired shutdown needs nothing more.
        while rx.changed().await.is_ok() {}
    }

    async fn lifecycle(
        &self,
        rx: &mut watch::Receiver<Task>,
        ctl: &mut dyn Controller,
    ) -> Result<(), ExecError> {
        let t = rx.borrow().clone();
        let state = self.known_state(&t);
        if state.is_terminal() {
            return Ok(());
        }
        // Reattach: the container may already exist (daemon restart).
        let existing = match ctl.inspect().await {
            Ok(c) => Some(c),
            Err(ExecError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if t.desired_state >= TaskState::Shutdown {
            return self.shutdown(rx, ctl, existing.is_some()).await;
        }
        let running_already = existing.as_ref().is_some_and(|c| c.running);
        match existing {
            Some(c) if !c.running && c.exit_code.is_some() && state >= TaskState::Starting => {
                // It exited while the daemon was away.
                self.exited(&t, c.exit_code.unwrap_or(-1));
                return Ok(());
            }
            _ => {}
        }
        if !running_already && state >= TaskState::Running {
            // It ran, and its process is gone without an exit we saw (the node rebooted, or
            // the container was removed): the task failed; the orchestrator decides on a
            // replacement, as Swarm does. Starting it again here would bypass the policy.
            let err = if existing.is_some() {
                "task: the container stopped while the node was away"
            } else {
                "task: the container is gone"
            };
            self.report(&t, TaskState::Failed, "failed", Some(err.into()), None);
            return Ok(());
        }
        if !running_already {
            if state < TaskState::Accepted {
                self.report(&t, TaskState::Accepted, "accepted", None, None);
            }
            self.report(&t, TaskState::Preparing, "preparing", None, None);
            self.until_shutdown(rx, ctl.prepare()).await?;
            if rx.borrow().desired_state >= TaskState::Shutdown {
                return self.shutdown(rx, ctl, true).await;
            }
            self.report(&t, TaskState::Ready, "prepared", None, None);
            // A restart's replacement is prepared during its restart delay and started
            // once the leader moves it to desired running (swarmkit's restart supervisor).
            if !until_desired_running(rx).await {
                return self.shutdown(rx, ctl, true).await;
            }
            self.report(&t, TaskState::Starting, "starting", None, None);
            ctl.start().await?;
        }
        // With a health check the task is running only once healthy (Docker's and Swarm's
        // rule); it fails when it turns unhealthy.
        let check = health::effective(
            &t.spec.container,
            ctl.image_healthcheck().await.ok().flatten(),
        );
        if check.is_none() && self.known_state(&t) < TaskState::Running {
            self.report(&t, TaskState::Running, "started", None, None);
        }
        let period = check.as_ref().map_or(Duration::from_secs(3600), |h| {
            h.interval.max(Duration::from_millis(100))
        });
        let started = tokio::time::Instant::now();
        let mut streak = Streak::default();
        loop {
            tokio::select! {
                r = tokio::time::timeout(period, ctl.wait()) => match r {
                    Ok(Ok(code)) => {
                        self.exited(&t, code);
                        return Ok(());
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        let Some(hc) = &check else { continue };
                        let ok = health::probe(ctl, hc).await;
                        match streak.record(hc, ok, started.elapsed()) {
                            Verdict::Healthy if self.known_state(&t) < TaskState::Running => {
                                self.report(&t, TaskState::Running, "started", None, None);
                            }
                            Verdict::Unhealthy => {
                                let grace = t.spec.container.stop_grace_period.unwrap_or(DEFAULT_GRACE);
                                let _ = ctl.stop(&t.spec.container.stop_signal, grace).await;
                                self.report(&t, TaskState::Failed, "unhealthy", Some("task: unhealthy container".into()), None);
                                return Ok(());
                            }
                            _ => {}
                        }
                    }
                },
                changed = rx.changed() => {
                    if changed.is_err() || rx.borrow().desired_state >= TaskState::Shutdown {
                        return self.shutdown(rx, ctl, true).await;
                    }
                }
            }
        }
    }

    /// Runs `work` unless the task is told to stop first.
    async fn until_shutdown<F: std::future::Future<Output = Result<(), ExecError>>>(
        &self,
        rx: &mut watch::Receiver<Task>,
        work: F,
    ) -> Result<(), ExecError> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => return r,
                changed = rx.changed() => {
                    if changed.is_err() || rx.borrow().desired_state >= TaskState::Shutdown {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn exited(&self, t: &Task, code: i32) {
        if code == 0 {
            self.report(t, TaskState::Complete, "finished", None, Some(0));
        } else {
            self.report(
                t,
                TaskState::Failed,
                "failed",
                Some(format!("task: non-zero exit ({code})")),
                Some(code),
            );
        }
    }

    async fn shutdown(
        &self,
        rx: &mut watch::Receiver<Task>,
        ctl: &mut dyn Controller,
        exists: bool,
    ) -> Result<(), ExecError> {
        let t = rx.borrow().clone();
        let mut exit = None;
        if exists {
            let grace = t.spec.container.stop_grace_period.unwrap_or(DEFAULT_GRACE);
            ctl.stop(&t.spec.container.stop_signal, grace).await?;
            exit = ctl.inspect().await.ok().and_then(|c| c.exit_code);
        }
        self.report(&t, TaskState::Shutdown, "shutdown", None, exit);
        Ok(())
    }
}
