//! Control-plane lifecycle on loopback: three managers and a worker form a cluster, survive
//! the loss of the leader and full restarts, change roles, and lose members by leave and
//! `node rm`; a removed node's certificate stops working on the cluster port.
//! Clusters use `--dispatcher-heartbeat 1s` (a node is down after 3 s without a beat).
//!
//! Ports: 25200-25299, ten per test.

// Real time: the tests measure and stamp what other processes do.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use rswarm_tests::grpc::{block_on, probe_heartbeat, probe_session, NodeCertFiles, ProbeOutcome};
use rswarm_tests::{hold_for, nodes, wait_for, Daemon};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FORM: Duration = Duration::from_secs(30);
const ELECTION: Duration = Duration::from_secs(15);
const DOWN: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(30);

/// m1 (leader at first), m2, m3 (managers) and w1 (worker) on ports `base..base+4`, all
/// ready as m1 sees them.
fn three_managers_and_a_worker(base: u16) -> Vec<Daemon> {
    let m1 = Daemon::start("m1", base);
    let m2 = Daemon::start("m2", base + 1);
    let m3 = Daemon::start("m3", base + 2);
    let w1 = Daemon::start("w1", base + 3);
    m1.init();
    let manager_token = m1.join_token("manager");
    let worker_token = m1.join_token("worker");
    assert_ne!(manager_token, worker_token, "the two join tokens are equal");
    m2.join(&manager_token, &m1);
    m3.join(&manager_token, &m1);
    w1.join(&worker_token, &m1);
    m1.wait_ready(4, FORM);
    vec![m1, m2, m3, w1]
}

fn by_name<'a>(ds: &'a [Daemon], name: &str) -> &'a Daemon {
    ds.iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("no daemon {name}"))
}

fn index_of(ds: &[Daemon], name: &str) -> usize {
    ds.iter()
        .position(|d| d.name() == name)
        .unwrap_or_else(|| panic!("no daemon {name}"))
}

/// The leader's hostname as `d` sees it.
fn leader_seen_by(d: &Daemon) -> Result<String, String> {
    nodes::leader(&d.nodes()?)
}

/// Waits until `d` sees label `key=value` on `host`.
fn wait_label(d: &Daemon, host: &str, key: &str, value: &str, timeout: Duration) {
    wait_for(timeout, || {
        let got = nodes::label(&d.nodes()?, host, key)?;
        if got == value {
            Ok(())
        } else {
            Err(format!(
                "{} sees {host} {key}={got:?}, want {value:?}",
                d.name()
            ))
        }
    });
}

#[test]
fn three_managers_and_a_worker_form_a_cluster() {
    let ds = three_managers_and_a_worker(25200);
    let rows = by_name(&ds, "m1").nodes().expect("node ls on m1");
    let count = |role: &str| rows.iter().filter(|r| r["role"] == role).count();
    assert_eq!(count("manager"), 3, "{}", nodes::summary(&rows));
    assert_eq!(count("worker"), 1, "{}", nodes::summary(&rows));
    for host in ["m1", "m2", "m3"] {
        nodes::expect_field(&rows, host, "role", "manager").unwrap_or_else(|e| panic!("{e}"));
    }
    nodes::expect_field(&rows, "w1", "role", "worker").unwrap_or_else(|e| panic!("{e}"));
    for r in &rows {
        assert_eq!(r["availability"], "active", "{r}");
        assert_eq!(r["addr"], "127.0.0.1", "{r}");
        assert!(r["labels"].is_object(), "{r}");
        assert!(r["id"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    }
    let leader = nodes::leader(&rows).unwrap_or_else(|e| panic!("{e}"));

    // Every manager knows the whole cluster and agrees on the leader.
    for name in ["m2", "m3"] {
        let d = by_name(&ds, name);
        d.wait_ready(4, CONVERGE);
        let seen = wait_for(CONVERGE, || leader_seen_by(d));
        assert_eq!(seen, leader, "{name} sees another leader");
    }

    // A follower forwards writes to the leader.
    let follower = ["m1", "m2", "m3"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    by_name(&ds, follower).ok(&["node", "update", "--label-add", "zone=a", "w1"]);
    wait_label(by_name(&ds, &leader), "w1", "zone", "a", CONVERGE);
    for name in ["m1", "m2", "m3"] {
        wait_label(by_name(&ds, name), "w1", "zone", "a", CONVERGE);
    }
}

#[test]
fn a_new_leader_takes_over_and_the_old_one_catches_up() {
    let mut ds = three_managers_and_a_worker(25210);
    let old = leader_seen_by(&ds[0]).unwrap_or_else(|e| panic!("{e}"));
    let survivors: Vec<&str> = ["m1", "m2", "m3"]
        .into_iter()
        .filter(|n| *n != old)
        .collect();
    let observer = survivors[0].to_owned();

    let i = index_of(&ds, &old);
    ds[i].kill9();
    let t0 = Instant::now();
    let new = wait_for(ELECTION, || {
        let l = leader_seen_by(by_name(&ds, &observer))?;
        if l == old {
            Err(format!("{observer} still sees {old} as the leader"))
        } else {
            Ok(l)
        }
    });
    eprintln!("new leader {new} after {:?}", t0.elapsed());
    wait_for(DOWN, || {
        nodes::expect_field(&by_name(&ds, &observer).nodes()?, &old, "state", "down")
    });

    // A write on a follower of the new leader (forwarded) commits with two of three managers.
    let follower = survivors
        .iter()
        .find(|n| **n != new)
        .expect("two managers survive");
    by_name(&ds, follower).ok(&["node", "update", "--label-add", "zone=b", "w1"]);
    wait_label(by_name(&ds, &new), "w1", "zone", "b", CONVERGE);

    // The old leader comes back, catches up and follows.
    ds[i].start_again();
    by_name(&ds, &observer).wait_ready(4, CONVERGE);
    let back = by_name(&ds, &old);
    wait_label(back, "w1", "zone", "b", CONVERGE);
    let seen = wait_for(CONVERGE, || leader_seen_by(back));
    assert_eq!(seen, new, "the restarted manager sees another leader");
}

/// Milliseconds since the Unix epoch, as the store stamps `updated_at`.
fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(d.as_millis()).expect("a u64 holds the time in ms")
}

#[test]
fn the_state_survives_a_full_restart() {
    let mut ds = three_managers_and_a_worker(25220);
    ds[0].ok(&["node", "update", "--label-add", "zone=c", "w1"]);
    ds[0].ok(&["node", "update", "--availability", "drain", "m3"]);
    for d in &ds[..3] {
        wait_label(d, "w1", "zone", "c", CONVERGE);
    }
    let before = nodes::stable_view(&ds[0].nodes().expect("node ls"));

    for d in ds.iter_mut() {
        d.stop();
    }
    let stopped_at = now_ms();
    for d in ds.iter_mut() {
        d.start_again();
    }
    // Every node registers again with the (new) leader: its node object is updated.
    wait_for(Duration::from_secs(40), || {
        let v = ds[0].try_json(&["node", "inspect", "m1", "m2", "m3", "w1"])?;
        let stale: Vec<String> = v
            .as_array()
            .ok_or("node inspect printed a non-array")?
            .iter()
            .filter(|n| n["updated_at"].as_u64().unwrap_or(0) < stopped_at)
            .map(|n| n["description"]["hostname"].to_string())
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not registered since the restart: {}",
                stale.join(" ")
            ))
        }
    });
    for d in &ds[..3] {
        d.wait_ready(4, CONVERGE);
        let leader = wait_for(CONVERGE, || leader_seen_by(d));
        let rows = d.nodes().expect("node ls");
        assert_eq!(
            nodes::stable_view(&rows),
            before,
            "{} sees other nodes after the restart (leader {leader})",
            d.name()
        );
    }
    // Heartbeats flow: nobody is marked down over more than three heartbeat periods.
    hold_for(Duration::from_secs(4), || {
        nodes::expect_ready(&ds[0].nodes()?, 4)
    });
    // And the cluster takes writes, through a follower too.
    ds[2].ok(&["node", "update", "--label-add", "after=restart", "w1"]);
    for d in &ds[..3] {
        wait_label(d, "w1", "after", "restart", CONVERGE);
    }
}

#[test]
fn a_node_missing_after_a_full_restart_is_marked_down() {
    let mut m1 = Daemon::start("m1", 25270);
    let mut w1 = Daemon::start("w1", 25271);
    m1.init();
    w1.join(&m1.join_token("worker"), &m1);
    m1.wait_ready(2, FORM);
    w1.stop();
    m1.restart();
    wait_for(DOWN, || {
        nodes::expect_field(&m1.nodes()?, "w1", "state", "down")
    });
    w1.start_again();
    m1.wait_ready(2, CONVERGE);
}

/// Waits until `m` (a manager) shows `host` with `role` in effect (`node inspect`'s `role`,
/// not only the desired role that `node ls` shows) and, for a worker, no manager status left.
fn wait_role_in_effect(m: &Daemon, host: &str, role: &str) {
    wait_for(CONVERGE, || {
        let v = m.try_json(&["node", "inspect", host])?;
        let n = &v[0];
        let in_effect = n["role"].as_str().unwrap_or("");
        let has_manager_status = !n["manager_status"].is_null();
        if in_effect == role && has_manager_status == (role == "manager") {
            Ok(())
        } else {
            Err(format!(
                "{host}: role in effect {in_effect:?}, manager_status {}, want {role}",
                n["manager_status"]
            ))
        }
    });
}

/// Waits until `d` refuses control commands as a worker does.
fn wait_not_manager(d: &Daemon) {
    wait_for(CONVERGE, || {
        let out = d.run(&["node", "ls"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("not a manager") {
            Ok(())
        } else {
            Err(format!("{} still answers node ls as a manager", d.name()))
        }
    });
}

#[test]
fn a_manager_is_demoted_and_promoted_again() {
    let ds = three_managers_and_a_worker(25230);
    let (m1, m3) = (by_name(&ds, "m1"), by_name(&ds, "m3"));
    // Start from settled roles: the joins are complete, in Raft and in the store.
    for host in ["m1", "m2", "m3"] {
        wait_role_in_effect(m1, host, "manager");
    }

    m1.ok(&["node", "demote", "m3"]);
    wait_for(CONVERGE, || {
        nodes::expect_field(&m1.nodes()?, "m3", "role", "worker")
    });
    wait_role_in_effect(m1, "m3", "worker");
    wait_not_manager(m3);
    m1.wait_ready(4, CONVERGE);

    m1.ok(&["node", "promote", "m3"]);
    wait_for(CONVERGE, || {
        nodes::expect_field(&m1.nodes()?, "m3", "role", "manager")
    });
    wait_role_in_effect(m1, "m3", "manager");
    m1.wait_ready(4, CONVERGE);
    // m3 is a manager again and catches up on a write made after its promotion.
    m1.ok(&["node", "update", "--label-add", "after=promote", "w1"]);
    wait_label(m3, "w1", "after", "promote", CONVERGE);
    let leader = wait_for(CONVERGE, || leader_seen_by(m3));
    assert_eq!(leader_seen_by(m1).as_deref(), Ok(leader.as_str()));
}

/// As the acceptance script does it: demote a manager as soon as the cluster is ready, wait
/// for `node ls` to show it as a worker, promote it again. The cluster must keep working.
#[test]
fn a_manager_demoted_right_after_joining_can_be_promoted_again() {
    let ds = three_managers_and_a_worker(25260);
    let (m1, m3) = (by_name(&ds, "m1"), by_name(&ds, "m3"));
    m1.ok(&["node", "demote", "m3"]);
    wait_for(CONVERGE, || {
        nodes::expect_field(&m1.nodes()?, "m3", "role", "worker")
    });
    m1.ok(&["node", "promote", "m3"]);
    wait_for(CONVERGE, || {
        nodes::expect_field(&m1.nodes()?, "m3", "role", "manager")
    });
    m1.wait_ready(4, CONVERGE);
    // Writes still commit (allowing for an election), and m3 follows them.
    wait_for(Duration::from_secs(10), || {
        m1.try_ok(&["node", "update", "--label-add", "after=promote", "w1"])
            .map(|_| ())
    });
    wait_label(m3, "w1", "after", "promote", CONVERGE);
    wait_role_in_effect(m1, "m3", "manager");
}

/// The acceptance script's order on a settled cluster: demote, wait for `node ls` to show a
/// worker, promote at once (the demotion may still be under way in Raft).
#[test]
fn a_settled_manager_demoted_and_promoted_at_once_keeps_the_cluster_working() {
    let ds = three_managers_and_a_worker(25280);
    let (m1, m3) = (by_name(&ds, "m1"), by_name(&ds, "m3"));
    for host in ["m1", "m2", "m3"] {
        wait_role_in_effect(m1, host, "manager");
    }
    m1.ok(&["node", "demote", "m3"]);
    wait_for(CONVERGE, || {
        nodes::expect_field(&m1.nodes()?, "m3", "role", "worker")
    });
    m1.ok(&["node", "promote", "m3"]);
    wait_role_in_effect(m1, "m3", "manager");
    m1.wait_ready(4, CONVERGE);
    wait_for(Duration::from_secs(10), || {
        m1.try_ok(&["node", "update", "--label-add", "after=promote", "w1"])
            .map(|_| ())
    });
    wait_label(m3, "w1", "after", "promote", CONVERGE);
}

#[test]
fn a_worker_leaves_and_is_removed() {
    let m1 = Daemon::start("m1", 25240);
    let w1 = Daemon::start("w1", 25241);
    m1.init();
    let token = m1.join_token("worker");
    w1.join(&token, &m1);
    m1.wait_ready(2, FORM);

    w1.ok(&["leave"]);
    wait_for(DOWN, || {
        nodes::expect_field(&m1.nodes()?, "w1", "state", "down")
    });
    m1.ok(&["node", "rm", "w1"]);
    let rows = m1.nodes().expect("node ls");
    assert!(
        !nodes::has(&rows, "w1"),
        "w1 still listed: {}",
        nodes::summary(&rows)
    );

    // The node that left can join again, as a new node.
    w1.join(&token, &m1);
    m1.wait_ready(2, FORM);
    let rows = m1.nodes().expect("node ls");
    assert_eq!(rows.len(), 2, "{}", nodes::summary(&rows));
}

/// Whether `outcome` is a refusal of the caller's identity (not "session not found", which
/// a member gets, and not a success).
fn is_identity_refusal(outcome: &ProbeOutcome) -> bool {
    match outcome {
        ProbeOutcome::NoConnection(_) => true,
        ProbeOutcome::Status(s) => matches!(
            s.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ),
        ProbeOutcome::Accepted => false,
    }
}

#[test]
fn a_removed_nodes_certificate_is_refused() {
    let m1 = Daemon::start("m1", 25250);
    let mut w1 = Daemon::start("w1", 25251);
    m1.init();
    w1.join(&m1.join_token("worker"), &m1);
    m1.wait_ready(2, FORM);
    let w1_certs = NodeCertFiles::in_data_dir(&w1.data_dir())
        .read()
        .expect("w1's certificate files");
    let m1_certs = NodeCertFiles::in_data_dir(&m1.data_dir())
        .read()
        .expect("m1's certificate files");

    // Control: a member's certificate is accepted (its unknown session is not).
    match block_on(probe_heartbeat(&m1.addr(), &w1_certs)) {
        ProbeOutcome::Status(s) if s.code() == tonic::Code::NotFound => {}
        other => panic!(
            "w1's certificate, before removal: expected \"session not found\", got {other:?}"
        ),
    }

    m1.ok(&["node", "rm", "--force", "w1"]);
    let rows = m1.nodes().expect("node ls");
    assert!(
        !nodes::has(&rows, "w1"),
        "w1 still listed: {}",
        nodes::summary(&rows)
    );

    // w1's daemon keeps running, but its session keeps failing: it never comes back, not even
    // after several heartbeat periods.
    hold_for(Duration::from_secs(4), || {
        let rows = m1.nodes()?;
        if nodes::has(&rows, "w1") {
            Err(format!("w1 came back: {}", nodes::summary(&rows)))
        } else {
            Ok(())
        }
    });
    assert!(w1.is_running(), "w1's daemon exited");
    wait_for(CONVERGE, || {
        if w1.log_contains("removed from the cluster") {
            Ok(())
        } else {
            Err("w1's log does not say it was removed from the cluster".into())
        }
    });

    // Its certificate is refused on the cluster port, for heartbeats and new sessions.
    let heartbeat = block_on(probe_heartbeat(&m1.addr(), &w1_certs));
    assert!(
        is_identity_refusal(&heartbeat),
        "a heartbeat with the removed node's certificate: {heartbeat:?}"
    );
    let session = block_on(probe_session(&m1.addr(), &w1_certs));
    assert!(
        is_identity_refusal(&session),
        "a session with the removed node's certificate: {session:?}"
    );
    let rows = m1.nodes().expect("node ls");
    assert!(
        !nodes::has(&rows, "w1"),
        "the probe brought w1 back: {}",
        nodes::summary(&rows)
    );

    // The manager's own certificate still works.
    match block_on(probe_heartbeat(&m1.addr(), &m1_certs)) {
        ProbeOutcome::Status(s) if s.code() == tonic::Code::NotFound => {}
        other => panic!("m1's certificate: expected \"session not found\", got {other:?}"),
    }
}

/// `init --force-new-cluster` on the one surviving manager of three: the cluster comes back
/// with its state, the lost managers are recorded as workers, and writes work again.
#[test]
fn force_new_cluster_recovers_from_lost_quorum() {
    let mut ds = three_managers_and_a_worker(25290);
    ds[0].ok(&["node", "update", "--label-add", "keep=yes", "w1"]);
    wait_label(&ds[0], "w1", "keep", "yes", CONVERGE);
    // Lose two of three managers: no quorum.
    ds[1].kill9();
    ds[2].kill9();
    ds[0].ok(&["init", "--force-new-cluster"]);
    wait_for(CONVERGE, || {
        let rows = ds[0].nodes()?;
        let leader = nodes::leader(&rows)?;
        if leader != "m1" {
            return Err(format!("leader is {leader}, want m1"));
        }
        let managers: Vec<&str> = rows
            .iter()
            .filter(|n| n["role"] == "manager")
            .filter_map(|n| n["hostname"].as_str())
            .collect();
        if managers != ["m1"] {
            return Err(format!("managers {managers:?}, want only m1"));
        }
        Ok(())
    });
    // The state survived, and the cluster takes writes again.
    wait_label(&ds[0], "w1", "keep", "yes", CONVERGE);
    ds[0].ok(&["node", "update", "--label-add", "after=1", "w1"]);
    wait_label(&ds[0], "w1", "after", "1", CONVERGE);
    // The worker finds the surviving manager.
    wait_for(CONVERGE, || {
        let rows = ds[0].nodes()?;
        match rows.iter().find(|n| n["hostname"] == "w1") {
            Some(n) if n["state"] == "ready" => Ok(()),
            Some(n) => Err(format!("w1 is {}", n["state"])),
            None => Err("w1 is gone".into()),
        }
    });
}
