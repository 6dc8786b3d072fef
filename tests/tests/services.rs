//! Services run for real: a manager and two workers on loopback, each daemon with its own
//! containerd namespace (`rswtest-svc-TEST-NODE`, removed again however the test ends),
//! pulling `127.0.0.1:5055/busybox:latest` over plain HTTP. What the manager says
//! (`service ps --format json`) is checked against what containerd runs (`ctr tasks ls`).
//!
//! Needs containerd and the registry (`deploy/test-infra.sh start`) and
//! `RSWARM_CONTAINERD_TESTS=1`; without it every test says it is skipped and passes.
//! Clusters use `--dispatcher-heartbeat 1s` (a node is down after 3 s without a beat).
//!
//! Ports: 25300-25399, ten per test.

// Real time: the tests measure what other processes do.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use rswarm_tests::services::{
    containerd_tests_enabled, ctr_containers, ctr_running, ctr_tasks, expect_running, running,
    running_per_node, s, summary, tasks, Cluster, IMAGE, LOOP,
};
use rswarm_tests::{hold_for, nodes, wait_for, Checks, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tasks get this long to run (pull, create, start) after a service is created or scaled.
const RUN: Duration = Duration::from_secs(40);
/// A containerd task gets this long to go after its task is no longer wanted.
const GONE: Duration = Duration::from_secs(30);
/// A killed node is marked down within this (3 missed 1 s beats, plus slack).
const DOWN: Duration = Duration::from_secs(20);
/// A restarted daemon is back in its session within this.
const BACK: Duration = Duration::from_secs(30);

/// `service create --detach ARGS...` on `m`, which must succeed.
#[track_caller]
fn create(m: &Daemon, args: &[&str]) {
    let mut a = vec!["service", "create", "--detach"];
    a.extend_from_slice(args);
    m.ok(&a);
}

/// `{m1: a, w1: b, w2: c}`, leaving out zeros (as [`running_per_node`] does).
fn spread(m1: usize, w1: usize, w2: usize) -> BTreeMap<String, usize> {
    [("m1", m1), ("w1", w1), ("w2", w2)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
}

/// `Ok` when containerd runs `want` tasks in each node's namespace.
fn expect_ctr(c: &Cluster, want: &BTreeMap<String, usize>) -> Result<(), String> {
    let mut got = c.ctr_running_per_node()?;
    got.retain(|_, n| *n > 0);
    if &got == want {
        Ok(())
    } else {
        Err(format!("containerd runs {got:?}, want {want:?}"))
    }
}

/// Milliseconds since the Unix epoch, as the store stamps `updated_at`.
fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(d.as_millis()).expect("a u64 holds the time in ms")
}

/// The names of the services `m` lists.
fn service_names(m: &Daemon) -> Result<Vec<String>, String> {
    let v = m.try_json(&["service", "ls"])?;
    Ok(v.as_array()
        .ok_or("service ls printed a non-array")?
        .iter()
        .map(|r| s(r, "name").to_owned())
        .collect())
}

/// `Ok` when `service ls` shows `service` with `n` replicas wanted and running, and
/// `service inspect` `n` replicas in its spec.
fn expect_listed(m: &Daemon, service: &str, n: u64) -> Result<(), String> {
    let v = m.try_json(&["service", "ls"])?;
    let row = v
        .as_array()
        .and_then(|rows| rows.iter().find(|r| s(r, "name") == service))
        .ok_or_else(|| format!("service ls does not list {service}: {v}"))?;
    if row["replicas_desired"] != n || row["replicas_running"] != n {
        return Err(format!("service ls: {row}, want {n}/{n} replicas"));
    }
    let v = m.try_json(&["service", "inspect", service])?;
    let replicas = &v[0]["spec"]["mode"]["replicated"]["replicas"];
    if *replicas != n {
        return Err(format!("service inspect: replicas {replicas}, want {n}"));
    }
    Ok(())
}

/// `(id, state)` of the tasks in `rows` on node `host`, sorted.
fn on_node(rows: &[Value], host: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows
        .iter()
        .filter(|r| s(r, "node") == host)
        .map(|r| (s(r, "id").to_owned(), s(r, "state").to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_replicated_service_spreads_and_scales() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("spread", 25300);
    let m = c.m1();

    create(
        m,
        &["--name", "web", "--replicas", "6", IMAGE, "sh", "-c", LOOP],
    );
    let rows = wait_for(RUN, || expect_running(m, "web", 6));
    wait_for(GONE, || expect_listed(m, "web", 6));
    assert_eq!(
        running_per_node(&rows),
        spread(2, 2, 2),
        "6 replicas not spread 2/2/2: {}",
        summary(&rows)
    );
    // The manager pinned the image to its digest (inspect shows it); ls and ps show the
    // reference without it, as Docker's do.
    let pinned = m.json(&["service", "inspect", "web"])[0]["spec"]["task_template"]
        ["container_spec"]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        pinned.starts_with(&format!("{IMAGE}@sha256:")),
        "service inspect shows image {pinned:?}"
    );
    let ls = m.json(&["service", "ls"]);
    assert_eq!(ls[0]["image"], IMAGE, "service ls: {ls}");
    assert!(
        rows.iter().all(|r| s(r, "image") == IMAGE),
        "service ps images: {rows:?}"
    );
    wait_for(GONE, || expect_ctr(&c, &spread(2, 2, 2)));

    m.ok(&["service", "scale", "--detach", "web=9"]);
    let rows = wait_for(RUN, || expect_running(m, "web", 9));
    wait_for(GONE, || expect_listed(m, "web", 9));
    assert_eq!(
        running_per_node(&rows),
        spread(3, 3, 3),
        "9 replicas not spread 3/3/3: {}",
        summary(&rows)
    );
    wait_for(GONE, || expect_ctr(&c, &spread(3, 3, 3)));

    m.ok(&["service", "scale", "--detach", "web=3"]);
    let rows = wait_for(RUN, || expect_running(m, "web", 3));
    wait_for(GONE, || expect_listed(m, "web", 3));
    assert_eq!(
        running_per_node(&rows),
        spread(1, 1, 1),
        "3 replicas (scaled down from 9) not spread 1/1/1: {}",
        summary(&rows)
    );
    // The six removed replicas' processes are gone, not just marked so.
    wait_for(GONE, || expect_ctr(&c, &spread(1, 1, 1)));
    // And so are their containers.
    wait_for(GONE, || {
        let mut got = BTreeMap::new();
        for d in &c.daemons {
            got.insert(
                d.name().to_owned(),
                ctr_containers(d.containerd_namespace())?.len(),
            );
        }
        if got.values().all(|n| *n == 1) {
            Ok(())
        } else {
            Err(format!("containers per node {got:?}, want one each"))
        }
    });

    // Removal leaves nothing behind.
    m.ok(&["service", "rm", "web"]);
    wait_for(GONE, || {
        let mut left = BTreeMap::new();
        for d in &c.daemons {
            let ns = d.containerd_namespace();
            let n = ctr_tasks(ns)?.len() + ctr_containers(ns)?.len();
            if n > 0 {
                left.insert(d.name().to_owned(), n);
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "containerd tasks + containers left after service rm: {left:?}"
            ))
        }
    });
    let names = service_names(m).unwrap_or_else(|e| panic!("{e}"));
    assert!(names.is_empty(), "services left after rm: {names:?}");
}

#[test]
fn a_global_service_follows_the_nodes_and_their_availability() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("global", 25310);
    let m = c.m1();
    let w1_ns = c.ns("w1");

    create(
        m,
        &[
            "--name", "agent", "--mode", "global", IMAGE, "sh", "-c", LOOP,
        ],
    );
    let rows = wait_for(RUN, || expect_running(m, "agent", 3));
    assert_eq!(
        running_per_node(&rows),
        spread(1, 1, 1),
        "a global service is not one task per node: {}",
        summary(&rows)
    );

    // Draining w1 removes its task, container included; the others keep theirs.
    let t0 = Instant::now();
    m.ok(&["node", "update", "--availability", "drain", "w1"]);
    wait_for(GONE, || {
        let rows = expect_running(m, "agent", 2)?;
        if running_per_node(&rows) != spread(1, 0, 1) {
            return Err(format!("agent not on m1 and w2 only: {}", summary(&rows)));
        }
        match ctr_running(&w1_ns)?.len() {
            0 => Ok(()),
            n => Err(format!(
                "w1 drained, but containerd still runs {n} task(s) there"
            )),
        }
    });

    eprintln!("w1 drained {:?} after the update", t0.elapsed());

    // Active again: the task comes back.
    let t0 = Instant::now();
    m.ok(&["node", "update", "--availability", "active", "w1"]);
    wait_for(RUN, || {
        let rows = expect_running(m, "agent", 3)?;
        if running_per_node(&rows) == spread(1, 1, 1) {
            Ok(())
        } else {
            Err(format!("agent not back on w1: {}", summary(&rows)))
        }
    });
    wait_for(GONE, || expect_ctr(&c, &spread(1, 1, 1)));
    eprintln!("agent back on w1 {:?} after the update", t0.elapsed());

    // node.role==worker keeps a global service off the manager: no task there at all.
    create(
        m,
        &[
            "--name",
            "onworkers",
            "--mode",
            "global",
            "--constraint",
            "node.role==worker",
            IMAGE,
            "sh",
            "-c",
            LOOP,
        ],
    );
    let rows = wait_for(RUN, || expect_running(m, "onworkers", 2));
    assert_eq!(
        running_per_node(&rows),
        spread(0, 1, 1),
        "{}",
        summary(&rows)
    );
    // ... and a replicated one too.
    create(
        m,
        &[
            "--name",
            "rep",
            "--replicas",
            "4",
            "--constraint",
            "node.role==worker",
            IMAGE,
            "sh",
            "-c",
            LOOP,
        ],
    );
    let rows = wait_for(RUN, || expect_running(m, "rep", 4));
    assert_eq!(
        running_per_node(&rows),
        spread(0, 2, 2),
        "{}",
        summary(&rows)
    );
    hold_for(Duration::from_secs(2), || {
        for svc in ["onworkers", "rep"] {
            let rows = tasks(m, svc, false)?;
            if rows.iter().any(|r| s(r, "node") == "m1") {
                return Err(format!(
                    "{svc} has a task on the manager: {}",
                    summary(&rows)
                ));
            }
        }
        let on_m1 = ctr_running(&c.ns("m1"))?.len();
        if on_m1 != 1 {
            return Err(format!(
                "containerd on m1 runs {on_m1} tasks, want 1 (agent)"
            ));
        }
        Ok(())
    });
}

#[test]
fn a_killed_worker_loses_its_tasks_and_removes_them_when_it_returns() {
    if !containerd_tests_enabled() {
        return;
    }
    let mut c = Cluster::start("kill", 25320);
    let w2_ns = c.ns("w2");

    create(
        c.m1(),
        &["--name", "web", "--replicas", "6", IMAGE, "sh", "-c", LOOP],
    );
    let rows = wait_for(RUN, || expect_running(c.m1(), "web", 6));
    assert_eq!(
        running_per_node(&rows),
        spread(2, 2, 2),
        "{}",
        summary(&rows)
    );
    let lost: Vec<String> = on_node(&rows, "w2").into_iter().map(|(id, _)| id).collect();
    wait_for(GONE, || expect_ctr(&c, &spread(2, 2, 2)));

    c.node_mut("w2").kill9();
    let t0 = Instant::now();
    wait_for(DOWN, || {
        nodes::expect_field(&c.m1().nodes()?, "w2", "state", "down")
    });
    eprintln!("w2 marked down {:?} after SIGKILL", t0.elapsed());
    // Its two tasks are replaced on the other nodes.
    let rows = wait_for(RUN, || {
        let rows = expect_running(c.m1(), "web", 6)?;
        if running_per_node(&rows) == spread(3, 3, 0) {
            Ok(rows)
        } else {
            Err(format!("web not moved off w2: {}", summary(&rows)))
        }
    });
    eprintln!("w2's tasks replaced {:?} after SIGKILL", t0.elapsed());
    let kept: Vec<&str> = rows.iter().map(|r| s(r, "id")).collect();
    for id in &lost {
        assert!(
            !kept.contains(&id.as_str()),
            "task {id} of the dead w2 still wanted: {}",
            summary(&rows)
        );
    }
    // Nobody stopped w2's containers while its daemon was dead.
    assert_eq!(
        ctr_running(&w2_ns).map(|v| v.len()),
        Ok(2),
        "w2's containers while its daemon is dead"
    );

    // Back again, w2 removes the containers of the tasks it no longer owns.
    c.node_mut("w2").start_again();
    c.m1().wait_ready(3, BACK);
    let t1 = Instant::now();
    let owned = |c: &Cluster| -> Result<usize, String> {
        Ok(tasks(c.m1(), "web", true)?
            .iter()
            .filter(|r| s(r, "node") == "w2")
            .count())
    };
    wait_for(GONE, || {
        let owned = owned(&c)?;
        let run = ctr_running(&w2_ns)?.len();
        let all = ctr_containers(&w2_ns)?.len();
        if run == owned && all == owned {
            Ok(())
        } else {
            Err(format!(
                "w2 owns {owned} task(s) but containerd has {run} running task(s) and \
                 {all} container(s) there"
            ))
        }
    });
    eprintln!("w2 cleaned up {:?} after its restart", t1.elapsed());
    // The manager learns that the old tasks stopped.
    wait_for(GONE, || {
        let rows = tasks(c.m1(), "web", false)?;
        let stale: Vec<&Value> = rows
            .iter()
            .filter(|r| lost.iter().any(|id| id == s(r, "id")) && s(r, "state") == "running")
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "w2's old tasks still reported running: {}",
                summary(&rows)
            ))
        }
    });
    let rows = expect_running(c.m1(), "web", 6).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        running_per_node(&rows),
        spread(3, 3, 0),
        "the service moved again after w2 returned: {}",
        summary(&rows)
    );
}

#[test]
fn restarting_a_worker_daemon_leaves_its_containers_and_tasks_alone() {
    if !containerd_tests_enabled() {
        return;
    }
    let mut c = Cluster::start("restart", 25330);
    let w1_ns = c.ns("w1");

    create(
        c.m1(),
        &["--name", "web", "--replicas", "6", IMAGE, "sh", "-c", LOOP],
    );
    let rows = wait_for(RUN, || expect_running(c.m1(), "web", 6));
    let mut ids_before: Vec<String> = rows.iter().map(|r| s(r, "id").to_owned()).collect();
    ids_before.sort();
    let w1_before = on_node(&rows, "w1");
    assert_eq!(w1_before.len(), 2, "{}", summary(&rows));
    let ctr_before = wait_for(GONE, || {
        let t = ctr_tasks(&w1_ns)?;
        if t.iter().filter(|t| t.status == "RUNNING").count() == 2 {
            Ok(t)
        } else {
            Err(format!("containerd on w1: {t:?}, want 2 running"))
        }
    });

    let stopped_at = now_ms();
    let t0 = Instant::now();
    c.node_mut("w1").restart();
    // Back in its session: it registered again.
    wait_for(BACK, || {
        let v = c.m1().try_json(&["node", "inspect", "w1"])?;
        let n = &v[0];
        let updated = n["updated_at"].as_u64().unwrap_or(0);
        if updated < stopped_at {
            return Err(format!("w1 not registered since its restart: {n}"));
        }
        nodes::expect_field(&c.m1().nodes()?, "w1", "state", "ready")
    });
    eprintln!("w1 back in its session {:?} after SIGTERM", t0.elapsed());
    // For a while after it is back, nothing changes: same tasks, same states, same
    // processes.
    hold_for(Duration::from_secs(5), || {
        let rows = tasks(c.m1(), "web", true)?;
        let mut ids: Vec<String> = rows.iter().map(|r| s(r, "id").to_owned()).collect();
        ids.sort();
        if ids != ids_before {
            return Err(format!(
                "web's tasks changed across w1's restart: {ids_before:?} -> {ids:?}: {}",
                summary(&rows)
            ));
        }
        let w1_now = on_node(&rows, "w1");
        if w1_now != w1_before {
            return Err(format!(
                "w1's tasks changed across its restart: {w1_before:?} -> {w1_now:?}"
            ));
        }
        let ctr_now = ctr_tasks(&w1_ns)?;
        if ctr_now != ctr_before {
            return Err(format!(
                "w1's containerd tasks changed across its restart: {ctr_before:?} -> {ctr_now:?}"
            ));
        }
        Ok(())
    });
}

#[test]
fn on_failure_restarts_stop_after_max_attempts() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("policy", 25340);
    let m = c.m1();

    create(
        m,
        &[
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "2",
            "--restart-delay",
            "1s",
            IMAGE,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    let failed_with_3 = |r: &Value| s(r, "state") == "failed" && r["exit_code"] == 3;
    let t0 = Instant::now();
    wait_for(Duration::from_secs(45), || {
        let rows = tasks(m, "crash", false)?;
        if rows.iter().filter(|r| failed_with_3(r)).count() == 3 {
            Ok(())
        } else {
            Err(format!(
                "want 3 failed tasks with exit code 3: {}",
                summary(&rows)
            ))
        }
    });
    eprintln!("3 failed attempts after {:?}", t0.elapsed());
    // No fourth attempt: the first run and two restarts, then nothing (delay is 1 s).
    hold_for(Duration::from_secs(4), || {
        let rows = tasks(m, "crash", false)?;
        if rows.len() == 3 && rows.iter().all(failed_with_3) {
            Ok(())
        } else {
            Err(format!(
                "more than 1 + 2 attempts, or not all failed with exit code 3: {rows:?}"
            ))
        }
    });
}

/// A restart's replacement is made as soon as the task stops, with desired state `ready`: it
/// is placed and prepared (image, container) during the restart delay and started only
/// after it (swarmkit's restart supervisor). `--filter desired-state=running` does not list
/// it meanwhile, as Docker's does not.
#[test]
fn a_restarts_replacement_is_prepared_during_the_delay_and_started_after_it() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("delay", 25370);
    let m = c.m1();
    create(
        m,
        &[
            "--name",
            "flaky",
            "--restart-delay",
            "10s",
            IMAGE,
            "sh",
            "-c",
            "sleep 1; exit 3",
        ],
    );
    let held = |rows: &[Value]| -> Option<String> {
        rows.iter()
            .find(|r| s(r, "desired_state") == "ready" && s(r, "state") == "ready")
            .map(|r| s(r, "id").to_owned())
    };
    let id = wait_for(Duration::from_secs(45), || {
        let rows = tasks(m, "flaky", false)?;
        let failed = rows
            .iter()
            .filter(|r| s(r, "state") == "failed" && s(r, "desired_state") == "shutdown")
            .count();
        match held(&rows) {
            Some(id) if failed == 1 => Ok(id),
            _ => Err(format!(
                "want one failed task and its replacement prepared: {}",
                summary(&rows)
            )),
        }
    });
    let seen = Instant::now();
    // Within the delay: held, not started anywhere, not listed as desired running.
    hold_for(Duration::from_secs(3), || {
        let rows = tasks(m, "flaky", false)?;
        if held(&rows).as_deref() != Some(id.as_str()) {
            return Err(format!(
                "the replacement left ready early: {}",
                summary(&rows)
            ));
        }
        let listed = tasks(m, "flaky", true)?;
        if !listed.is_empty() {
            return Err(format!("desired-state=running lists {}", summary(&listed)));
        }
        let started: usize = c.ctr_running_per_node()?.values().sum();
        if started > 0 {
            return Err(format!("{started} containers run during the delay"));
        }
        Ok(())
    });
    // Then it is started (and fails again, 1 s later).
    wait_for(Duration::from_secs(30), || {
        let rows = tasks(m, "flaky", false)?;
        let row = rows
            .iter()
            .find(|r| s(r, "id") == id)
            .ok_or_else(|| format!("task {id} is gone: {}", summary(&rows)))?;
        if matches!(s(row, "state"), "running" | "failed") {
            Ok(())
        } else {
            Err(format!("task {id} not started: {}", summary(&rows)))
        }
    });
    eprintln!(
        "the replacement started {:?} after it was seen prepared",
        seen.elapsed()
    );
}

/// A replacement prepared during its restart delay (container created, not started) is
/// kept across a restart of its node's daemon and started when the delay is over.
#[test]
fn a_prepared_replacement_is_started_after_a_daemon_restart() {
    if !containerd_tests_enabled() {
        return;
    }
    let mut c = Cluster::start("prepared", 25380);
    create(
        c.m1(),
        &[
            "--name",
            "flaky",
            "--constraint",
            "node.hostname==w1",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "1",
            "--restart-delay",
            "20s",
            IMAGE,
            "sh",
            "-c",
            "sleep 1; exit 3",
        ],
    );
    let held = |m: &Daemon| -> Result<String, String> {
        let rows = tasks(m, "flaky", false)?;
        rows.iter()
            .find(|r| s(r, "desired_state") == "ready" && s(r, "state") == "ready")
            .map(|r| s(r, "id").to_owned())
            .ok_or_else(|| format!("no prepared replacement: {}", summary(&rows)))
    };
    let id = wait_for(Duration::from_secs(45), || held(c.m1()));
    let seen = Instant::now();
    let stopped_at = now_ms();
    c.node_mut("w1").restart();
    wait_for(BACK, || {
        let v = c.m1().try_json(&["node", "inspect", "w1"])?;
        let n = &v[0];
        if n["updated_at"].as_u64().unwrap_or(0) < stopped_at {
            return Err(format!("w1 not registered since its restart: {n}"));
        }
        nodes::expect_field(&c.m1().nodes()?, "w1", "state", "ready")
    });
    eprintln!(
        "w1 back {:?} after the replacement was seen prepared",
        seen.elapsed()
    );
    if seen.elapsed() < Duration::from_secs(12) {
        let still = held(c.m1()).unwrap_or_default();
        assert_eq!(
            still, id,
            "the prepared replacement changed across the restart"
        );
        assert_eq!(
            c.ctr_running_per_node().map(|m| m.values().sum::<usize>()),
            Ok(0)
        );
    }
    // Once the delay is over it runs its command: it fails with its exit code, and no
    // third task is made (max attempts 1).
    wait_for(Duration::from_secs(45), || {
        let rows = tasks(c.m1(), "flaky", false)?;
        let row = rows
            .iter()
            .find(|r| s(r, "id") == id)
            .ok_or_else(|| format!("task {id} is gone: {}", summary(&rows)))?;
        if s(row, "state") == "failed" && row["exit_code"] == 3 {
            Ok(())
        } else {
            Err(format!("task {id} has not run: {}", summary(&rows)))
        }
    });
    eprintln!(
        "it ran and failed {:?} after it was seen prepared",
        seen.elapsed()
    );
    hold_for(Duration::from_secs(3), || {
        let rows = tasks(c.m1(), "flaky", false)?;
        if rows.len() == 2 {
            Ok(())
        } else {
            Err(format!("want 2 tasks: {}", summary(&rows)))
        }
    });
}

#[test]
fn logs_come_from_every_replica_and_exec_runs_in_a_task() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("logs", 25350);
    let m = c.m1();
    let script = format!("echo hello-from-$(hostname); echo oops-from-$(hostname) >&2; {LOOP}");
    create(
        m,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            IMAGE,
            "sh",
            "-c",
            &script,
        ],
    );
    let rows = wait_for(RUN, || expect_running(m, "web", 3));
    assert_eq!(
        running_per_node(&rows),
        spread(1, 1, 1),
        "{}",
        summary(&rows)
    );

    // One line from each replica, prefixed `NAME.ID@NODE`, written by that task's container
    // (whose hostname is the first 12 characters of its id); what a task writes on stderr
    // comes out on stderr, prefixed the same way.
    wait_for(Duration::from_secs(20), || {
        let out = m.run(&["service", "logs", "web"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!(
                "service logs web failed ({}): {stderr}",
                out.status
            ));
        }
        for r in running(&rows) {
            let id12: String = s(r, "id").chars().take(12).collect();
            let prefix = format!("{}.{}@{}", s(r, "name"), id12, s(r, "node"));
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&prefix) && l.contains("hello-from-"))
                .ok_or_else(|| {
                    format!("no hello-from- line prefixed {prefix} on stdout:\n{stdout}")
                })?;
            let host = line.rsplit("hello-from-").next().unwrap_or_default().trim();
            let ns = c.ns(s(r, "node"));
            let containers = ctr_running(&ns)?;
            if host.is_empty() || !containers.iter().any(|id| id.starts_with(host)) {
                return Err(format!(
                    "{prefix}: hostname {host:?} is not one of {ns}'s containers {containers:?}"
                ));
            }
            let oops = format!("oops-from-{host}");
            if !stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&oops))
            {
                return Err(format!(
                    "no {oops} line prefixed {prefix} on stderr:\n{stderr}"
                ));
            }
        }
        Ok(())
    });

    // exec runs where the task is, prints what the command prints and exits with its code;
    // web.1..3 are on the three nodes, so two of them are remote to m1.
    let mut checks = Checks::new();
    for slot in ["web.1", "web.2", "web.3"] {
        let out = m.run(&["exec", slot, "--", "sh", "-c", "echo hi; exit 5"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        checks.that(
            &format!("exec {slot}"),
            out.status.code() == Some(5) && stdout == "hi\n" && stderr.is_empty(),
            || format!("exit {}, stdout {stdout:?}, stderr {stderr:?}", out.status),
        );
    }
    // By task id too.
    let id = s(&rows[0], "id").to_owned();
    let out = m.run(&["exec", &id, "--", "cat", "/proc/1/cmdline"]);
    checks.that(
        "exec by task id",
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sh"),
        || format!("{out:?}"),
    );
    // A task that does not exist: one clear line.
    for bad in ["web.9", "nosuch"] {
        let t0 = Instant::now();
        let out = m.run(&["exec", bad, "--", "true"]);
        checks.refused(&format!("exec {bad}"), &out, &[bad, "not found"]);
        checks.that(
            &format!("exec {bad} at once"),
            t0.elapsed() < Duration::from_secs(5),
            || format!("took {:?}", t0.elapsed()),
        );
    }
    checks.finish();
}

#[test]
fn bad_service_input_is_refused_and_unplaceable_tasks_say_why() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("badinput", 25360);
    let m = c.m1();
    create(
        m,
        &[
            "--name", "agent", "--mode", "global", IMAGE, "sh", "-c", LOOP,
        ],
    );
    // Needs 100 TiB of memory: no node has it, so it stays pending and says why.
    create(
        m,
        &[
            "--name",
            "big",
            "--reserve-memory",
            "100T",
            IMAGE,
            "sh",
            "-c",
            LOOP,
        ],
    );
    let before = service_names(m).unwrap_or_else(|e| panic!("{e}"));

    let mut checks = Checks::new();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "malformed constraint",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "bad1",
                "--constraint",
                "node.role=worker",
                IMAGE,
            ],
            &["constraint", "node.role=worker"],
        ),
        (
            "bad duration",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "bad2",
                "--restart-delay",
                "soon",
                IMAGE,
            ],
            &["restart-delay", "soon"],
        ),
        (
            "negative replicas",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "bad3",
                "--replicas",
                "-1",
                IMAGE,
            ],
            &["-1"],
        ),
        (
            "negative replicas with =",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "bad4",
                "--replicas=-1",
                IMAGE,
            ],
            &["replicas", "-1"],
        ),
        (
            "negative scale",
            &["service", "scale", "--detach", "big=-1"],
            &["-1"],
        ),
        (
            "scale of a global service",
            &["service", "scale", "--detach", "agent=3"],
            &["global"],
        ),
    ];
    for (case, args, expect) in cases {
        let t0 = Instant::now();
        let out = m.run(args);
        checks.refused(case, &out, expect);
        checks.that(
            &format!("{case}: at once"),
            t0.elapsed() < Duration::from_secs(5),
            || format!("took {:?}", t0.elapsed()),
        );
    }
    checks.result("no service created", {
        match service_names(m) {
            Ok(now) if now == before => Ok(()),
            Ok(now) => Err(format!("services {before:?} -> {now:?}")),
            Err(e) => Err(e),
        }
    });
    checks.result("specs unchanged", {
        m.try_json(&["service", "inspect", "agent", "big"])
            .and_then(|v| {
                let agent = &v[0]["spec"]["mode"];
                let big = &v[1]["spec"]["mode"]["replicated"]["replicas"];
                if agent.get("global").is_some() && *big == 1 {
                    Ok(())
                } else {
                    Err(format!("agent mode {agent}, big replicas {big}"))
                }
            })
    });

    // The memory-hungry task is pending, nowhere, and says it is about memory ...
    let pending = |rows: &[Value]| -> Result<(), String> {
        match rows {
            [r] if s(r, "state") == "pending"
                && s(r, "node").is_empty()
                // Swarm reports the scheduler's reason as the task's error.
                && s(r, "error").to_lowercase().contains("memory") =>
            {
                Ok(())
            }
            _ => Err(format!(
                "big: want one pending task whose error mentions memory: {rows:?}"
            )),
        }
    };
    wait_for(Duration::from_secs(20), || pending(&tasks(m, "big", true)?));
    // ... and stays so.
    hold_for(Duration::from_secs(3), || pending(&tasks(m, "big", false)?));
    // The table says why too, as Docker's ERROR column does ("no suitable node (...)").
    checks.result("service ps table shows why big is pending", {
        m.try_ok(&["service", "ps", "big"]).and_then(|out| {
            let line = out.lines().find(|l| l.contains("big.1")).unwrap_or("");
            if line.to_lowercase().contains("memory") {
                Ok(())
            } else {
                Err(format!("the big.1 row does not mention memory:\n{out}"))
            }
        })
    });

    // A missing image: the service is still made, with the image as given and Docker's
    // warning; its task is rejected with the reason.
    let out = m.run(&[
        "service",
        "create",
        "--detach",
        "--name",
        "nope",
        "127.0.0.1:5055/nope:1",
        "sleep",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "create nope: {stderr}");
    checks.that(
        "create warns that the image could not be pinned",
        stderr.contains(
            "image 127.0.0.1:5055/nope:1 could not be accessed on a registry to record its digest",
        ),
        || format!("stderr {stderr:?}"),
    );
    let why = wait_for(RUN, || {
        let rows = tasks(m, "nope", false)?;
        rows.iter()
            .find(|r| {
                matches!(s(r, "state"), "rejected" | "failed") && !s(r, "error").trim().is_empty()
            })
            .map(|r| s(r, "error").to_owned())
            .ok_or_else(|| format!("nope not rejected with an error: {}", summary(&rows)))
    });
    eprintln!("missing image: {why}");
    checks.that(
        "missing image error names the image",
        why.contains("nope"),
        || format!("error {why:?}"),
    );
    checks.finish();
}
