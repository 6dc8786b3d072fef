//! Stacks: `stack deploy|ls|ps|services|rm` from Compose files, on real daemons over
//! loopback.
//!
//! Without containerd the services carry a constraint no node satisfies, so their tasks are
//! made (and keep their ids) but stay pending; what runs for real is checked by the test
//! gated on `RSWARM_CONTAINERD_TESTS=1` (containerd and the registry on 127.0.0.1:5055).
//!
//! Ports: 25500-25599, ten per test.
//!
//! Images of the tests without containerd name a registry on `127.0.0.1:1`, where nothing
//! answers: `stack deploy` asks for their digests (and is refused at once, on loopback),
//! so nothing leaves the machine.

// Real time: the tests measure what other processes do.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use rswarm_tests::services::{containerd_tests_enabled, ctr_running, s, Cluster, IMAGE, LOOP};
use rswarm_tests::{hold_for, wait_for, Checks, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);
/// The orchestrator makes a service's tasks within this.
const TASKS: Duration = Duration::from_secs(15);
/// Tasks get this long to run (pull, create, start).
const RUN: Duration = Duration::from_secs(60);
/// A constraint no node satisfies: tasks are made and stay pending.
const NOWHERE: &str = "node.labels.rswarm-test-nowhere==yes";

fn manager(port: u16) -> Daemon {
    let m = Daemon::start("m1", port);
    m.init();
    m.wait_ready(1, READY);
    m
}

fn rows(v: Value) -> Vec<Value> {
    match v {
        Value::Array(rows) => rows,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// Writes `text` to `dir/name`; its path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).expect("write a Compose file");
    p.to_string_lossy().into_owned()
}

/// A two-service stack: `web` (replicas `web_replicas`, environment `greeting`, an
/// update_config) on `front`, `api` on `front` and `back`; every task pinned nowhere.
fn two_services(web_replicas: u32, greeting: &str) -> String {
    format!(
        r#"version: "3.8"
services:
  web:
    image: 127.0.0.1:1/busybox:latest
    command: ["sleep", "3600"]
    environment:
      GREETING: {greeting}
    networks: [front]
    deploy:
      replicas: {web_replicas}
      placement:
        constraints: ["{NOWHERE}"]
      update_config: {{parallelism: 2, delay: 1s, order: start-first}}
  api:
    image: 127.0.0.1:1/busybox:latest
    command: sleep 3600
    networks: [front, back]
    deploy:
      replicas: 1
      placement:
        constraints: ["{NOWHERE}"]
networks:
  front: {{driver: overlay}}
  back: {{}}
"#
    )
}

/// `service inspect NAME` `version` of each service that exists, by name.
fn versions(m: &Daemon) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in rows(m.json(&["service", "ls"])) {
        let name = s(&r, "name").to_owned();
        let v = rows(m.json(&["service", "inspect", &name]));
        out.insert(name, v[0]["version"].as_u64().unwrap_or(0));
    }
    out
}

/// Sorted `service task-id` of the stack's tasks that should run.
fn task_ids(m: &Daemon, stack: &str) -> Result<Vec<String>, String> {
    let mut v: Vec<String> =
        rows(m.try_json(&["stack", "ps", stack, "--filter", "desired-state=running"])?)
            .iter()
            .map(|r| format!("{} {}", s(r, "service"), s(r, "id")))
            .collect();
    v.sort();
    Ok(v)
}

fn names(m: &Daemon, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rows(m.json(args))
        .iter()
        .map(|r| s(r, "name").to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn deploy_is_declarative_and_idempotent() {
    let m = manager(25500);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "stack.yml", &two_services(2, "hello"));

    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    for want in [
        "Creating network demo_front",
        "Creating network demo_back",
        "Creating service demo_web",
        "Creating service demo_api",
    ] {
        assert!(out.contains(want), "deploy did not say {want:?}: {out}");
    }
    assert_eq!(names(&m, &["service", "ls"]), ["demo_api", "demo_web"]);
    let nets = rows(m.json(&["network", "ls"]));
    for n in ["demo_front", "demo_back"] {
        let row = nets
            .iter()
            .find(|r| s(r, "name") == n)
            .unwrap_or_else(|| panic!("network {n} missing: {nets:?}"));
        assert_eq!(
            row["labels"]["com.docker.stack.namespace"], "demo",
            "network {n} lacks the stack label: {row}"
        );
    }
    let inspect = rows(m.json(&["service", "inspect", "demo_api"]));
    assert_eq!(
        inspect[0]["spec"]["labels"]["com.docker.stack.namespace"], "demo",
        "{inspect:?}"
    );
    assert_eq!(
        inspect[0]["endpoint"]["virtual_ips"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "demo_api should have a VIP on demo_front and demo_back: {inspect:?}"
    );
    let ids = wait_for(TASKS, || {
        let ids = task_ids(&m, "demo")?;
        if ids.len() == 3 {
            Ok(ids)
        } else {
            Err(format!("expected 3 tasks, got {ids:?}"))
        }
    });
    let v1 = versions(&m);

    // The same file again: nothing is updated, no task replaced.
    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(
        !out.contains("Updating") && !out.contains("Creating"),
        "an unchanged redeploy changed something: {out}"
    );
    assert_eq!(versions(&m), v1, "an unchanged redeploy bumped versions");
    hold_for(Duration::from_secs(3), || {
        let now = task_ids(&m, "demo")?;
        if now == ids {
            Ok(())
        } else {
            Err(format!("tasks changed: {ids:?} -> {now:?}"))
        }
    });

    // One service changed: only it is updated.
    let file = write(dir.path(), "stack.yml", &two_services(3, "bonjour"));
    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(
        out.contains("Updating service demo_web") && !out.contains("demo_api"),
        "expected only demo_web to be updated: {out}"
    );
    let v2 = versions(&m);
    assert!(v2["demo_web"] > v1["demo_web"], "{v1:?} -> {v2:?}");
    assert_eq!(v2["demo_api"], v1["demo_api"], "demo_api was touched");
    let inspect = rows(m.json(&["service", "inspect", "demo_web"]));
    let spec = &inspect[0]["spec"];
    assert_eq!(spec["mode"]["replicated"]["replicas"], 3, "{spec}");
    assert_eq!(
        spec["task_template"]["container_spec"]["env"],
        serde_json::json!(["GREETING=bonjour"]),
        "{spec}"
    );
    let api_ids: Vec<String> = ids
        .iter()
        .filter(|i| i.starts_with("demo_api "))
        .cloned()
        .collect();
    let now = task_ids(&m, "demo").expect("stack ps");
    assert!(
        api_ids.iter().all(|i| now.contains(i)),
        "demo_api's task was replaced: {api_ids:?} -> {now:?}"
    );

    // Without --prune a service left out of the file stays; with it, it goes.
    let web_only = two_services(3, "bonjour")
        .replace(
            &format!(
                "  api:\n    image: 127.0.0.1:1/busybox:latest\n    command: sleep 3600\n    networks: [front, back]\n    deploy:\n      replicas: 1\n      placement:\n        constraints: [\"{NOWHERE}\"]\n"
            ),
            "",
        )
        .replace("  back: {}\n", "");
    assert!(!web_only.contains("api:"), "{web_only}");
    let file = write(dir.path(), "web.yml", &web_only);
    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(!out.contains("Removing"), "{out}");
    assert_eq!(names(&m, &["service", "ls"]), ["demo_api", "demo_web"]);
    let out = m.ok(&["stack", "deploy", "--prune", "-c", &file, "demo"]);
    assert!(out.contains("Removing service demo_api"), "{out}");
    assert_eq!(names(&m, &["service", "ls"]), ["demo_web"]);
    assert_eq!(
        versions(&m)["demo_web"],
        v2["demo_web"],
        "demo_web was touched"
    );
}

#[test]
fn a_failing_deploy_changes_nothing() {
    let m = manager(25510);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "stack.yml", &two_services(2, "hello"));
    m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    let services = versions(&m);
    let networks = names(&m, &["network", "ls"]);

    let mut checks = Checks::new();
    let bad = write(
        dir.path(),
        "bad.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    deploy:\n      replicas: three\n",
    );
    let out = m.run(&["stack", "deploy", "-c", &bad, "demo"]);
    let line = checks.refused("replicas: three", &out, &["bad.yml", "replicas"]);
    checks.that(
        "replicas: three points at line 6",
        line.contains("bad.yml:6") || line.contains("line 6"),
        || format!("no line 6 in {line:?}"),
    );
    let broken = write(dir.path(), "broken.yml", "services: [\n");
    let out = m.run(&["stack", "deploy", "-c", &broken, "demo"]);
    checks.refused("broken YAML", &out, &["broken.yml"]);

    // Loads, but a network it names as external does not exist: refused before any change
    // (web would otherwise be updated and extra created).
    let external = two_services(5, "changed")
        .replace(
            "\nnetworks:\n",
            "\n  extra:\n    image: 127.0.0.1:1/busybox\n    networks: [outside]\nnetworks:\n",
        )
        .replace(
            "  back: {}\n",
            "  back: {}\n  outside: {external: true, name: nosuch}\n",
        );
    let f = write(dir.path(), "external.yml", &external);
    let out = m.run(&["stack", "deploy", "-c", &f, "demo"]);
    checks.refused("missing external network", &out, &["nosuch", "external"]);

    let secrets = format!(
        "{}secrets:\n  pw: {{external: true, name: nosuch-secret}}\n",
        two_services(5, "changed").replace(
            "    command: sleep 3600\n",
            "    command: sleep 3600\n    secrets: [pw]\n"
        )
    );
    let f = write(dir.path(), "secrets.yml", &secrets);
    let out = m.run(&["stack", "deploy", "-c", &f, "demo"]);
    checks.refused(
        "missing external secret",
        &out,
        &["nosuch-secret", "external"],
    );

    // web is replicated; a file that makes it global is refused before any change.
    let global = two_services(5, "changed").replace("      replicas: 5\n", "      mode: global\n");
    assert!(global.contains("mode: global"), "{global}");
    let f = write(dir.path(), "global.yml", &global);
    let out = m.run(&["stack", "deploy", "-c", &f, "demo"]);
    checks.refused("mode change", &out, &["demo_web", "mode cannot change"]);

    let bad_name = m.run(&["stack", "deploy", "-c", &file, "bad name!"]);
    checks.refused("bad stack name", &bad_name, &["bad name!"]);

    checks.that("services unchanged", versions(&m) == services, || {
        format!("{services:?} -> {:?}", versions(&m))
    });
    checks.that(
        "networks unchanged",
        names(&m, &["network", "ls"]) == networks,
        || format!("{networks:?} -> {:?}", names(&m, &["network", "ls"])),
    );
    checks.finish();
}

#[test]
fn ls_ps_services_and_rm() {
    let m = manager(25520);
    let dir = tempfile::tempdir().expect("tempdir");
    m.ok(&["network", "create", "shared"]);
    let one = two_services(2, "hello").replace(
        "networks:\n  front: {driver: overlay}\n",
        "networks:\n  front: {driver: overlay}\n  shared: {external: true}\n",
    );
    let one = one.replace("    networks: [front]\n", "    networks: [front, shared]\n");
    let file = write(dir.path(), "one.yml", &one);
    m.ok(&["stack", "deploy", "-c", &file, "one"]);
    let file = write(dir.path(), "two.yml", &two_services(1, "hi"));
    m.ok(&["stack", "deploy", "-c", &file, "two"]);
    // A service outside any stack is not listed as one.
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "loose",
        "--constraint",
        NOWHERE,
        "--no-resolve-image",
        "busybox",
    ]);

    let ls = rows(m.json(&["stack", "ls"]));
    assert_eq!(
        Value::Array(ls.clone()),
        serde_json::json!([{"name": "one", "services": 2}, {"name": "two", "services": 2}]),
        "stack ls"
    );
    let table = m.ok(&["stack", "ls"]);
    assert!(
        table.contains("NAME") && table.contains("one") && !table.contains("loose"),
        "{table}"
    );

    assert_eq!(
        names(&m, &["stack", "services", "one"]),
        ["one_api", "one_web"]
    );
    let svc = rows(m.json(&["stack", "services", "two"]));
    for r in &svc {
        for k in [
            "id",
            "name",
            "mode",
            "replicas_desired",
            "replicas_running",
            "image",
        ] {
            assert!(r.get(k).is_some(), "stack services row lacks {k}: {r}");
        }
    }
    assert_eq!(rows(m.json(&["stack", "services", "nosuch"])).len(), 0);

    let tasks = wait_for(TASKS, || {
        let t = rows(m.try_json(&["stack", "ps", "one"])?);
        if t.len() == 3 {
            Ok(t)
        } else {
            Err(format!("expected 3 tasks of one, got {}", t.len()))
        }
    });
    for r in &tasks {
        for k in [
            "id",
            "name",
            "service",
            "node",
            "desired_state",
            "state",
            "image",
        ] {
            assert!(r.get(k).is_some(), "stack ps row lacks {k}: {r}");
        }
        assert!(s(r, "service").starts_with("one_"), "{r}");
        assert_eq!(s(r, "desired_state"), "running", "{r}");
    }
    let shut = rows(m.json(&["stack", "ps", "one", "--filter", "desired-state=shutdown"]));
    assert!(shut.is_empty(), "{shut:?}");
    let out = m.run(&["stack", "ps", "nosuch"]);
    let mut checks = Checks::new();
    checks.refused("ps of a missing stack", &out, &["nothing found in stack"]);
    let out = m.run(&["stack", "ps", "one", "--filter", "bogus=1"]);
    checks.refused("bad filter", &out, &["filter"]);
    checks.finish();

    let out = m.ok(&["stack", "rm", "one"]);
    assert!(
        out.contains("Removing service one_web") && out.contains("Removing network one_front"),
        "{out}"
    );
    assert_eq!(
        names(&m, &["service", "ls"]),
        ["loose", "two_api", "two_web"]
    );
    let nets = names(&m, &["network", "ls"]);
    assert!(
        !nets.iter().any(|n| n.starts_with("one_")),
        "one's networks left: {nets:?}"
    );
    assert!(
        nets.iter().any(|n| n == "shared"),
        "the external network was removed: {nets:?}"
    );
    // No task of one's services is left.
    let all = rows(m.json(&["service", "ps", "two_web", "two_api", "loose"]));
    assert_eq!(all.len(), 3, "{all:?}");

    let out = m.run(&["stack", "rm", "nosuch"]);
    assert!(out.status.success(), "rm of a missing stack: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Nothing found in stack: nosuch"),
        "{out:?}"
    );
    m.ok(&["stack", "rm", "two"]);
    assert_eq!(names(&m, &["service", "ls"]), ["loose"]);
    assert_eq!(names(&m, &["network", "ls"]), ["shared"]);
    assert_eq!(rows(m.json(&["stack", "ls"])).len(), 0);
}

/// The containerd part: an unchanged redeploy leaves the running tasks alone, a change to
/// one service leaves the other's tasks alone, and `stack rm` waits for the containers.
#[test]
fn redeploy_keeps_running_tasks() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("stack", 25530);
    let m = c.m1();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = |web_env: &str| {
        format!(
            r#"services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    environment:
      MODE: {web_env}
    stop_grace_period: 2s
    deploy:
      replicas: 2
  api:
    image: {IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    stop_grace_period: 2s
    deploy:
      replicas: 2
"#
        )
    };
    let file = write(dir.path(), "stack.yml", &stack("one"));
    m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    let running = |n: usize| {
        move || -> Result<Vec<String>, String> {
            let rows =
                rows(m.try_json(&["stack", "ps", "demo", "--filter", "desired-state=running"])?);
            let up: Vec<String> = rows
                .iter()
                .filter(|r| s(r, "state") == "running")
                .map(|r| format!("{} {}", s(r, "service"), s(r, "id")))
                .collect();
            if up.len() == n && rows.len() == n {
                let mut up = up;
                up.sort();
                Ok(up)
            } else {
                Err(format!("{} of {n} running", up.len()))
            }
        }
    };
    let ids = wait_for(RUN, running(4));
    let v1 = versions(m);

    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(!out.contains("Updating"), "{out}");
    hold_for(Duration::from_secs(5), || {
        let now = running(4)()?;
        if now == ids {
            Ok(())
        } else {
            Err(format!("tasks changed: {ids:?} -> {now:?}"))
        }
    });
    assert_eq!(versions(m), v1);

    let file = write(dir.path(), "stack.yml", &stack("two"));
    let out = m.ok(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(
        out.contains("Updating service demo_web") && !out.contains("demo_api"),
        "{out}"
    );
    let api: Vec<String> = ids
        .iter()
        .filter(|i| i.starts_with("demo_api "))
        .cloned()
        .collect();
    hold_for(Duration::from_secs(5), || {
        let rows =
            rows(m.try_json(&["stack", "ps", "demo", "--filter", "desired-state=running"])?);
        let now: Vec<String> = rows
            .iter()
            .filter(|r| s(r, "service") == "demo_api" && s(r, "state") == "running")
            .map(|r| format!("{} {}", s(r, "service"), s(r, "id")))
            .collect();
        if api.iter().all(|i| now.contains(i)) {
            Ok(())
        } else {
            Err(format!("demo_api's tasks changed: {api:?} -> {now:?}"))
        }
    });

    m.ok(&["stack", "rm", "demo"]);
    // stack rm returns once the tasks are gone: their containers have stopped.
    wait_for(Duration::from_secs(10), || {
        let mut left = Vec::new();
        for d in &c.daemons {
            left.extend(ctr_running(d.containerd_namespace())?);
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("containers still running after stack rm: {left:?}"))
        }
    });
    assert_eq!(rows(m.json(&["service", "ls"])).len(), 0);
    let nets = names(m, &["network", "ls"]);
    assert!(nets.is_empty(), "{nets:?}");
}
