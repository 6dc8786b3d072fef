//! `worker::tasks::TaskManager` against `worker::fake::FakeExecutor`, in paused Tokio time:
//! statuses are read as the agent's session reads them (`Reports::take`, woken by
//! `notify`), and the containers from the fake's model.

mod common;

use common::{healthcheck, secs, task, with_health, Recorder};
use rswarm_proto::model::{HealthCheck, TaskState};
use rswarm_worker::exec::ExecError;
use rswarm_worker::fake::{FakeExecutor, Script, Signal, SIGKILL, SIGTERM};
use rswarm_worker::tasks::TaskManager;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SIGINT: u32 = 2;
const SIGQUIT: u32 = 3;
const WITHIN: Duration = Duration::from_secs(60);

fn manager(fake: &FakeExecutor) -> (Arc<TaskManager>, Recorder) {
    let tm = TaskManager::new(Arc::new(fake.clone()));
    let rec = Recorder::new(tm.reports.clone());
    (tm, rec)
}

/// Signals as (number, time after `t0`).
fn signals_since(
    fake: &FakeExecutor,
    id: &rswarm_proto::model::TaskId,
    t0: Instant,
) -> Vec<(u32, Duration)> {
    fake.signals(id)
        .iter()
        .map(|s: &Signal| (s.signal, s.at - t0))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_task_goes_through_preparing_and_starting_to_running() {
    let fake = FakeExecutor::new();
    fake.script_image(
        "busybox",
        Script::new().prepare_takes(secs(2)).start_takes(secs(1)),
    );
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "busybox");
    tm.update(vec![t.clone()], vec![]).await;

    let preparing = rec.until(&t.id, TaskState::Preparing, WITHIN).await;
    assert_eq!(rec.since_t0(&preparing), Duration::ZERO);
    assert!(
        fake.containers().is_empty(),
        "created before the pull ended"
    );
    let starting = rec.until(&t.id, TaskState::Starting, WITHIN).await;
    assert_eq!(rec.since_t0(&starting), secs(2));
    assert!(fake.running().is_empty());
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(3));
    assert_eq!(running.status.message, "started");
    assert_eq!(running.status.err, "");
    // Accepted and Preparing are reported in the same instant, so the pending report is
    // already Preparing when it is taken: only the latest status per task is sent.
    assert_eq!(
        rec.states(&t.id),
        vec![
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    assert_eq!(fake.running(), vec![t.id.clone()]);
    assert_eq!(fake.times_started(&t.id), 1);
}

#[tokio::test(start_paused = true)]
async fn states_reported_without_delays_only_move_forward() {
    let fake = FakeExecutor::new();
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "busybox");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    let states = rec.states(&t.id);
    assert!(states.windows(2).all(|w| w[0] < w[1]), "{states:?}");
}

#[tokio::test(start_paused = true)]
async fn exit_0_completes() {
    let fake = FakeExecutor::new();
    fake.script_image("job", Script::new().exit(0, secs(5)));
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "job");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    let done = rec.until(&t.id, TaskState::Complete, WITHIN).await;
    assert_eq!(rec.since_t0(&done), secs(5));
    assert_eq!(done.status.exit_code, Some(0));
    assert_eq!(done.status.err, "");
    // The container stays (for logs) until the task is removed.
    let c = fake.container(&t.id).expect("container kept");
    assert_eq!((c.running, c.exit_code), (false, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn exit_3_fails_with_the_code() {
    let fake = FakeExecutor::new();
    fake.script_image("job", Script::new().exit(3, secs(5)));
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "job");
    tm.update(vec![t.clone()], vec![]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert_eq!(rec.since_t0(&failed), secs(5));
    assert_eq!(failed.status.err, "task: non-zero exit (3)");
    assert_eq!(failed.status.exit_code, Some(3));
    assert_eq!(
        fake.times_started(&t.id),
        1,
        "a failed task is not restarted here"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prepare_error_rejects_the_task() {
    let fake = FakeExecutor::new();
    fake.script_image(
        "nope:latest",
        Script::new().fail_prepare(ExecError::ImagePull {
            image: "nope:latest".into(),
            reason: "manifest unknown".into(),
        }),
    );
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "nope:latest");
    tm.update(vec![t.clone()], vec![]).await;
    let rejected = rec.until(&t.id, TaskState::Rejected, WITHIN).await;
    assert_eq!(rejected.status.err, "pull nope:latest: manifest unknown");
    assert_eq!(rejected.status.exit_code, None);
    assert!(fake.containers().is_empty());
    assert_eq!(fake.history(&t.id).created, 0);
}

#[tokio::test(start_paused = true)]
async fn a_start_error_fails_the_task() {
    let fake = FakeExecutor::new();
    let t = task("t1", "busybox");
    fake.script_task(
        &t.id,
        Script::new().fail_start(ExecError::Start {
            task: t.id.clone(),
            reason: "exec: \"nginx\": executable file not found in $PATH".into(),
        }),
    );
    let (tm, mut rec) = manager(&fake);
    tm.update(vec![t.clone()], vec![]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert!(
        failed.status.err.contains("executable file not found"),
        "{failed:?}"
    );
    assert_eq!(fake.times_started(&t.id), 0);
}

#[tokio::test(start_paused = true)]
async fn desired_shutdown_stops_with_the_specs_signal_and_grace() {
    let fake = FakeExecutor::new();
    // Shuts down cleanly, 2 s after the signal.
    fake.script_image("srv", Script::new().stop_takes(secs(2)));
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "srv");
    t.spec.container.stop_signal = "SIGINT".into();
    t.spec.container.stop_grace_period = Some(secs(5));
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    rec.quiet_for(secs(30)).await;

    let t1 = Instant::now();
    t.desired_state = TaskState::Shutdown;
    tm.update(vec![t.clone()], vec![]).await;
    let down = rec.until(&t.id, TaskState::Shutdown, WITHIN).await;
    assert_eq!(down.at - t1, secs(2), "reported once the process is gone");
    assert_eq!(down.status.exit_code, Some(128 + 2));
    assert_eq!(
        signals_since(&fake, &t.id, t1),
        vec![(SIGINT, Duration::ZERO)]
    );
    let c = fake
        .container(&t.id)
        .expect("container kept until the task is removed");
    assert_eq!((c.running, c.exit_code), (false, Some(130)));
}

#[tokio::test(start_paused = true)]
async fn a_process_ignoring_the_signal_is_killed_after_the_grace_period() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().ignore_stop());
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "srv");
    t.spec.container.stop_grace_period = Some(secs(7));
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;

    let t1 = Instant::now();
    t.desired_state = TaskState::Shutdown;
    tm.update(vec![t.clone()], vec![]).await;
    let down = rec.until(&t.id, TaskState::Shutdown, WITHIN).await;
    // No stop signal in the spec or the image: SIGTERM.
    assert_eq!(
        signals_since(&fake, &t.id, t1),
        vec![(SIGTERM, Duration::ZERO), (SIGKILL, secs(7))]
    );
    assert_eq!(down.at - t1, secs(7));
    assert_eq!(down.status.exit_code, Some(137));
}

#[tokio::test(start_paused = true)]
async fn the_images_stop_signal_applies_when_the_spec_has_none() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().image_stop_signal("SIGQUIT"));
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "srv");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    t.desired_state = TaskState::Shutdown;
    tm.update(vec![t.clone()], vec![]).await;
    let down = rec.until(&t.id, TaskState::Shutdown, WITHIN).await;
    assert_eq!(down.status.exit_code, Some(128 + 3));
    assert_eq!(
        fake.signals(&t.id)
            .iter()
            .map(|s| s.signal)
            .collect::<Vec<_>>(),
        vec![SIGQUIT]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_the_pull_creates_nothing() {
    let fake = FakeExecutor::new();
    fake.script_image("big", Script::new().prepare_takes(secs(600)));
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "big");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Preparing, WITHIN).await;
    t.desired_state = TaskState::Shutdown;
    tm.update(vec![t.clone()], vec![]).await;
    let down = rec.until(&t.id, TaskState::Shutdown, WITHIN).await;
    assert_eq!(rec.since_t0(&down), Duration::ZERO);
    assert_eq!(fake.times_started(&t.id), 0);
}

#[tokio::test(start_paused = true)]
async fn with_a_health_check_the_task_is_running_only_once_healthy() {
    let fake = FakeExecutor::new();
    // Probes at 1 s and 2 s fail, the one at 3 s passes (retries 3: not yet unhealthy).
    fake.script_image(
        "srv",
        Script::new().healthy_after(Duration::from_millis(2500)),
    );
    let (tm, mut rec) = manager(&fake);
    let t = with_health(task("t1", "srv"), healthcheck(secs(1), 3, Duration::ZERO));
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Starting, WITHIN).await;
    assert_eq!(
        fake.running(),
        vec![t.id.clone()],
        "the process runs meanwhile"
    );
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(3));
    assert_eq!(fake.history(&t.id).health_probes, 3);
    assert_eq!(rec.states(&t.id).last().copied(), Some(TaskState::Running));
    // Healthy from then on: it stays running.
    rec.quiet_for(secs(60)).await;
    assert!(fake.history(&t.id).health_probes >= 60);
}

#[tokio::test(start_paused = true)]
async fn retries_consecutive_failures_stop_the_task_and_fail_it_as_unhealthy() {
    let fake = FakeExecutor::new();
    // Healthy at 1 s and 2 s, failing from 2.5 s on: probes at 3, 4 and 5 s fail.
    fake.script_image(
        "srv",
        Script::new().unhealthy_after(Duration::from_millis(2500)),
    );
    let (tm, mut rec) = manager(&fake);
    let mut t = with_health(task("t1", "srv"), healthcheck(secs(1), 3, Duration::ZERO));
    t.spec.container.stop_grace_period = Some(secs(4));
    tm.update(vec![t.clone()], vec![]).await;
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(1));
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert_eq!(rec.since_t0(&failed), secs(5));
    assert!(failed.status.err.contains("unhealthy"), "{failed:?}");
    assert_eq!(
        signals_since(&fake, &t.id, rec.t0),
        vec![(SIGTERM, secs(5))]
    );
    let c = fake.container(&t.id).expect("container");
    assert!(!c.running);
    assert_eq!(fake.times_started(&t.id), 1);
}

#[tokio::test(start_paused = true)]
async fn never_healthy_fails_without_ever_running() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().never_healthy().ignore_stop());
    let (tm, mut rec) = manager(&fake);
    let mut t = with_health(task("t1", "srv"), healthcheck(secs(2), 2, Duration::ZERO));
    t.spec.container.stop_grace_period = Some(secs(3));
    tm.update(vec![t.clone()], vec![]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    // Failed once the process is gone: SIGTERM ignored, SIGKILL after the grace period.
    assert_eq!(rec.since_t0(&failed), secs(4 + 3));
    assert!(!rec.states(&t.id).contains(&TaskState::Running));
    assert!(failed.status.err.contains("unhealthy"));
    assert_eq!(
        signals_since(&fake, &t.id, rec.t0),
        vec![(SIGTERM, secs(4)), (SIGKILL, secs(7))]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_in_the_start_period_do_not_count() {
    let fake = FakeExecutor::new();
    // Healthy only from 3.5 s: with retries 1 it would fail at 1 s, but for the start
    // period of 5 s failures do not count.
    fake.script_image(
        "slow",
        Script::new().healthy_after(Duration::from_millis(3500)),
    );
    let (tm, mut rec) = manager(&fake);
    let t = with_health(task("t1", "slow"), healthcheck(secs(1), 1, secs(5)));
    tm.update(vec![t.clone()], vec![]).await;
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(4));
    assert!(fake.signals(&t.id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn failures_count_once_the_start_period_is_over() {
    let fake = FakeExecutor::new();
    fake.script_image("slow", Script::new().never_healthy());
    let (tm, mut rec) = manager(&fake);
    // Probes at 1..4 s are in the start period; those at 5 and 6 s count.
    let t = with_health(task("t1", "slow"), healthcheck(secs(1), 2, secs(5)));
    tm.update(vec![t.clone()], vec![]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert_eq!(rec.since_t0(&failed), secs(6));
    assert_eq!(
        signals_since(&fake, &t.id, rec.t0),
        vec![(SIGTERM, secs(6))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_images_health_check_applies_unless_the_spec_disables_it() {
    let fake = FakeExecutor::new();
    fake.script_image(
        "srv",
        Script::new()
            .image_healthcheck(HealthCheck {
                test: vec!["CMD".into(), "/healthz".into()],
                interval: secs(2),
                timeout: secs(1),
                start_period: Duration::ZERO,
                retries: 3,
            })
            .healthy_after(secs(3)),
    );
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "srv");
    let mut off = task("t2", "srv");
    off.spec.container.healthcheck = Some(HealthCheck {
        test: vec!["NONE".into()],
        ..Default::default()
    });
    tm.update(vec![t.clone(), off.clone()], vec![]).await;
    let running_off = rec.until(&off.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running_off), Duration::ZERO);
    // Probes every 2 s: the one at 4 s is the first to pass.
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(4));
    assert_eq!(fake.history(&off.id).health_probes, 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_slower_than_its_timeout_fails() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().probe_takes(secs(5)));
    let (tm, mut rec) = manager(&fake);
    // timeout 1 s: every probe fails; interval 1 s, so probes start at 1, 3 and 5 s.
    let t = with_health(task("t1", "srv"), healthcheck(secs(1), 3, Duration::ZERO));
    tm.update(vec![t.clone()], vec![]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert_eq!(rec.since_t0(&failed), secs(6));
    assert!(failed.status.err.contains("unhealthy"));
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_running_container_is_reattached_not_restarted() {
    let fake = FakeExecutor::new();
    let mut t = task("t1", "srv");
    t.status.state = TaskState::Running;
    t.status.message = "started".into();
    let cid = fake.add_running(&t);

    // A fresh manager, as after a daemon restart, given the complete assignment set.
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![t.clone()]).await;
    rec.quiet_for(secs(3 * 3600)).await;
    let c = fake.container(&t.id).expect("container");
    assert_eq!((c.container_id.as_str(), c.running), (cid.as_str(), true));
    assert_eq!(fake.times_started(&t.id), 1);
    assert_eq!(fake.history(&t.id).created, 1);
    assert!(fake.signals(&t.id).is_empty());

    // It is followed: its exit is reported.
    fake.exit_now(&t.id, 0);
    let done = rec.until(&t.id, TaskState::Complete, WITHIN).await;
    assert_eq!(done.status.exit_code, Some(0));
    assert_eq!(rec.states(&t.id), vec![TaskState::Complete]);
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_healthy_running_task_does_not_go_back_to_starting() {
    let fake = FakeExecutor::new();
    let mut t = with_health(task("t1", "srv"), healthcheck(secs(1), 3, Duration::ZERO));
    t.status.state = TaskState::Running;
    fake.add_running(&t);
    let (tm, mut rec) = manager(&fake);
    tm.update(vec![t.clone()], vec![]).await;
    rec.quiet_for(secs(30)).await;
    let probes = fake.history(&t.id).health_probes;
    assert!(
        probes >= 29,
        "still checked every second: {probes} probes in 30 s"
    );
    assert_eq!(fake.times_started(&t.id), 1);
    // A re-sent assignment changes nothing either.
    tm.update(vec![t.clone()], vec![]).await;
    rec.quiet_for(secs(30)).await;
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_container_that_exited_meanwhile_is_reported() {
    let fake = FakeExecutor::new();
    let mut t = task("t1", "srv");
    t.status.state = TaskState::Running;
    fake.add_exited(&t, 3);
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![t.clone()]).await;
    let failed = rec.until(&t.id, TaskState::Failed, WITHIN).await;
    assert_eq!(failed.status.exit_code, Some(3));
    assert_eq!(rec.states(&t.id), vec![TaskState::Failed]);
    assert_eq!(fake.times_started(&t.id), 0, "not started again");
}

#[tokio::test(start_paused = true)]
async fn set_all_removes_orphans_and_update_removes_dropped_tasks() {
    let fake = FakeExecutor::new();
    let (a, b) = (task("a", "srv"), task("b", "srv"));
    let mut a = a;
    a.spec.container.stop_signal = "SIGQUIT".into();
    // Containers of tasks this node no longer owns: one running, one exited.
    let x = task("x", "srv");
    let y = task("y", "srv");
    fake.add_running(&x);
    fake.add_exited(&y, 0);

    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![a.clone(), b.clone()]).await;
    rec.until(&a.id, TaskState::Running, WITHIN).await;
    rec.until(&b.id, TaskState::Running, WITHIN).await;
    let ids = |fake: &FakeExecutor| {
        fake.containers()
            .into_iter()
            .map(|c| c.task_id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&fake), vec!["a", "b"]);
    assert_eq!(
        fake.signals(&x.id)
            .iter()
            .map(|s| s.signal)
            .collect::<Vec<_>>(),
        vec![SIGTERM]
    );
    assert_eq!(fake.history(&x.id).removed, 1);
    assert_eq!(fake.history(&y.id).removed, 1);
    assert!(rec.states(&x.id).is_empty(), "orphans are not reported");

    // Dropped from the assignments: stopped with its signal, and removed.
    tm.update(vec![], vec![a.id.clone()]).await;
    fake.wait_for(WITHIN, |f| {
        if f.container(&a.id).is_none() {
            Ok(())
        } else {
            Err(format!("containers {:?}", ids(f)))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        fake.signals(&a.id)
            .iter()
            .map(|s| s.signal)
            .collect::<Vec<_>>(),
        vec![SIGQUIT]
    );
    assert_eq!(fake.running(), vec![b.id.clone()]);
    assert!(tm.task(&a.id).is_none());
    assert!(tm.task(&b.id).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_task_left_out_of_a_complete_set_is_stopped_once_with_its_own_grace() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().ignore_stop());
    let mut a = task("a", "srv");
    a.spec.container.stop_signal = "SIGINT".into();
    a.spec.container.stop_grace_period = Some(secs(2));
    let b = task("b", "srv");
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![a.clone(), b.clone()]).await;
    rec.until(&a.id, TaskState::Running, WITHIN).await;

    let t1 = Instant::now();
    tm.set_all(vec![b.clone()]).await;
    fake.wait_for(WITHIN, |f| match f.container(&a.id) {
        None => Ok(()),
        Some(c) => Err(format!("{c:?}")),
    })
    .await
    .unwrap();
    assert_eq!(
        signals_since(&fake, &a.id, t1),
        vec![(SIGINT, Duration::ZERO), (SIGKILL, secs(2))]
    );
    assert_eq!(fake.history(&a.id).removed, 1);
    assert_eq!(fake.running(), vec![b.id.clone()]);
}

#[tokio::test(start_paused = true)]
async fn resent_assignments_make_no_second_runner_or_container() {
    let fake = FakeExecutor::new();
    fake.script_image("srv", Script::new().prepare_takes(secs(5)));
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "srv");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Preparing, WITHIN).await;
    // Again while it pulls, as an incremental and as a complete set.
    tm.update(vec![t.clone()], vec![]).await;
    tm.set_all(vec![t.clone()]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    // And again once it runs (as after a reconnect).
    tm.set_all(vec![t.clone()]).await;
    tm.update(vec![t.clone()], vec![]).await;
    rec.quiet_for(secs(60)).await;
    assert_eq!(fake.containers().len(), 1);
    let h = fake.history(&t.id);
    assert_eq!((h.created, h.started, h.removed), (1, 1, 0));
    assert!(h.signals.is_empty());
    // Starting and Running fall in the same instant here, so only Running is taken.
    assert_eq!(
        rec.states(&t.id),
        vec![TaskState::Preparing, TaskState::Running]
    );
}

#[tokio::test(start_paused = true)]
async fn resend_all_queues_the_latest_status_again() {
    let fake = FakeExecutor::new();
    let (tm, mut rec) = manager(&fake);
    let t = task("t1", "srv");
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    tm.resend_all();
    let again = tm.reports.take();
    assert_eq!(again.get(&t.id).map(|s| s.state), Some(TaskState::Running));
}

#[tokio::test(start_paused = true)]
async fn a_task_left_out_of_a_complete_set_gets_its_whole_grace_period() {
    let fake = FakeExecutor::new();
    // Takes 20 s to shut down cleanly; the spec allows 30 s (more than Docker's 10 s).
    fake.script_image("db", Script::new().stop_takes(secs(20)));
    let mut a = task("a", "db");
    a.spec.container.stop_grace_period = Some(secs(30));
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![a.clone()]).await;
    rec.until(&a.id, TaskState::Running, WITHIN).await;

    let t1 = Instant::now();
    tm.set_all(vec![]).await;
    let set_all_took = t1.elapsed();
    let gone = fake
        .wait_for(WITHIN, |f| match f.container(&a.id) {
            None => Ok(Instant::now()),
            Some(c) => Err(format!("{c:?}")),
        })
        .await
        .unwrap();
    assert_eq!(gone - t1, secs(20));
    assert_eq!(
        signals_since(&fake, &a.id, t1),
        vec![(SIGTERM, Duration::ZERO)]
    );
    assert_eq!(
        set_all_took,
        Duration::ZERO,
        "set_all does not wait for the stop"
    );
}

/// After a node reboot containerd still has the container but no process: a task the
/// leader has as running is then started again, silently (its state stays running, no exit
/// is reported, and a `restart: none` task runs twice). Swarm fails such a task instead and
/// lets the orchestrator decide. Kept ignored until the runner does the same.
#[tokio::test(start_paused = true)]
async fn after_a_reboot_a_running_task_whose_process_is_gone_is_not_restarted() {
    let fake = FakeExecutor::new();
    let mut t = task("t1", "srv");
    t.status.state = TaskState::Running;
    // Created, no process: what containerd shows after a reboot.
    fake.add_created(&t);
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![t.clone()]).await;
    rec.until_terminal(&t.id, WITHIN).await;
    assert_eq!(fake.times_started(&t.id), 0);
}

#[tokio::test(start_paused = true)]
async fn a_task_desired_ready_is_prepared_but_started_only_when_desired_running() {
    let fake = FakeExecutor::new();
    fake.script_image(
        "srv",
        Script::new().prepare_takes(secs(2)).start_takes(secs(1)),
    );
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "srv");
    t.desired_state = TaskState::Ready;
    tm.update(vec![t.clone()], vec![]).await;
    let ready = rec.until(&t.id, TaskState::Ready, WITHIN).await;
    assert_eq!(rec.since_t0(&ready), secs(2));
    assert_eq!(ready.status.message, "prepared");
    // Its restart delay runs: created, not started, nothing more reported.
    rec.quiet_for(secs(30)).await;
    let c = fake.container(&t.id).expect("created while ready");
    assert!(!c.running);
    assert_eq!(fake.times_started(&t.id), 0);
    // The leader moves it to running: only the start is left to do.
    t.desired_state = TaskState::Running;
    tm.update(vec![t.clone()], vec![]).await;
    let running = rec.until(&t.id, TaskState::Running, WITHIN).await;
    assert_eq!(rec.since_t0(&running), secs(33));
    assert_eq!(fake.times_started(&t.id), 1);
    assert_eq!(fake.history(&t.id).created, 1);
    assert_eq!(
        rec.states(&t.id),
        vec![
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Running
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_shut_down_while_ready_is_never_started() {
    let fake = FakeExecutor::new();
    let (tm, mut rec) = manager(&fake);
    let mut t = task("t1", "srv");
    t.desired_state = TaskState::Ready;
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Ready, WITHIN).await;
    t.desired_state = TaskState::Shutdown;
    tm.update(vec![t.clone()], vec![]).await;
    let down = rec.until(&t.id, TaskState::Shutdown, WITHIN).await;
    assert_eq!(rec.since_t0(&down), Duration::ZERO);
    assert_eq!(fake.times_started(&t.id), 0);
    assert!(fake.signals(&t.id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_prepared_task_is_started_once_desired_running() {
    let fake = FakeExecutor::new();
    let mut t = task("t1", "srv");
    t.desired_state = TaskState::Ready;
    t.status.state = TaskState::Ready;
    t.status.message = "prepared".into();
    let cid = fake.add_created(&t);

    // A fresh manager, as after a daemon restart: the container is kept as it is.
    let (tm, mut rec) = manager(&fake);
    tm.set_all(vec![t.clone()]).await;
    rec.until(&t.id, TaskState::Ready, WITHIN).await;
    rec.quiet_for(secs(30)).await;
    assert_eq!(fake.times_started(&t.id), 0);
    t.desired_state = TaskState::Running;
    tm.update(vec![t.clone()], vec![]).await;
    rec.until(&t.id, TaskState::Running, WITHIN).await;
    let c = fake.container(&t.id).expect("container");
    assert_eq!((c.container_id.as_str(), c.running), (cid.as_str(), true));
    assert_eq!(fake.history(&t.id).created, 1, "prepared only once");
    assert_eq!(fake.times_started(&t.id), 1);
}
