//! Secrets and configs: `secret|config create|ls|inspect|rm`, names, the size limit, the
//! in-use guard, and (with `RSWARM_CONTAINERD_TESTS=1`) a service that mounts a secret and
//! a config, whose secret is never written under the daemon's data dir.
//!
//! Ports: 25600-25699, ten per test.

use rswarm_tests::rswarm_bin;
use rswarm_tests::services::{containerd_tests_enabled, expect_running, s, Cluster, IMAGE, LOOP};
use rswarm_tests::{wait_for, Daemon};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(40);
/// A constraint no node satisfies: the service exists, its tasks stay pending.
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

/// `rswarm KIND create NAME -` with `data` on stdin; stdout, or stderr as the error.
fn create_stdin(m: &Daemon, kind: &str, name: &str, data: &[u8]) -> Result<String, String> {
    let mut child = Command::new(rswarm_bin())
        .args(["-H", &m.host(), kind, "create", name, "-"])
        .env_remove("RSWARM_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// One line on stderr, no panic or debug dump.
#[track_caller]
fn refused(m: &Daemon, args: &[&str], contains: &str) {
    let out = m.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rswarm {args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "rswarm {args:?}: {err}");
    assert!(err.contains(contains), "rswarm {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn secrets_and_configs_create_ls_inspect_rm_and_the_in_use_guard() {
    let m = manager(25600);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pw.txt");
    std::fs::write(&file, "s3cr3t-value\n").expect("write");
    let file = file.to_str().expect("utf-8 path");

    let id = m.ok(&["secret", "create", "db_pw", file]);
    let id = id.trim();
    assert_eq!(id.len(), 25, "{id}");
    create_stdin(&m, "secret", "api_key", b"from-stdin").expect("create from stdin");
    let cfg = dir.path().join("app.conf");
    std::fs::write(&cfg, "listen 80\n").expect("write");
    m.ok(&["config", "create", "app_conf", cfg.to_str().expect("utf-8")]);

    let ls = rows(m.json(&["secret", "ls"]));
    let names: Vec<&str> = ls.iter().map(|r| s(r, "name")).collect();
    assert_eq!(names, ["api_key", "db_pw"]);
    for r in &ls {
        assert!(r["created_at"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["updated_at"].as_u64().unwrap_or(0) > 0, "{r}");
        assert_eq!(s(r, "id").len(), 25, "{r}");
    }
    // inspect never shows a secret's data; a config's it does.
    let out = m.ok(&["secret", "inspect", "db_pw", "--format", "json"]);
    assert!(!out.contains("s3cr3t"), "{out}");
    let v = rows(serde_json::from_str(&out).expect("json"));
    assert_eq!(s(&v[0], "id"), id);
    let v = rows(m.json(&["config", "inspect", "app_conf"]));
    assert_eq!(v[0]["spec"]["data"], "listen 80\n");
    assert_eq!(rows(m.json(&["config", "ls"])).len(), 1);

    // Bad input: one clear line each.
    refused(&m, &["secret", "create", "db_pw", file], "already exists");
    refused(
        &m,
        &["secret", "create", "bad/name", file],
        "invalid secret name",
    );
    refused(
        &m,
        &["secret", "create", "x", "/nonexistent/file"],
        "read /nonexistent/file",
    );
    let big = vec![b'x'; 500 * 1024 + 1];
    let err = create_stdin(&m, "secret", "big", &big).unwrap_err();
    assert!(err.contains("too long"), "{err}");
    create_stdin(&m, "secret", "just_fits", &big[1..]).expect("500 KiB is allowed");
    refused(&m, &["secret", "inspect", "nope"], "secret nope not found");
    refused(&m, &["secret", "rm", "nope"], "secret nope not found");
    refused(
        &m,
        &[
            "service", "create", "--detach", "--name", "bad", "--secret", "nope", IMAGE,
        ],
        "secret nope not found",
    );
    refused(
        &m,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            "--secret",
            "source=db_pw,mode=99",
            IMAGE,
        ],
        "--secret",
    );

    // A service that uses them holds them.
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--constraint",
        NOWHERE,
        "--secret",
        "source=db_pw,target=pw,uid=1,gid=2,mode=0400",
        "--config",
        "app_conf",
        IMAGE,
    ]);
    let svc = rows(m.json(&["service", "inspect", "web"]));
    let c = &svc[0]["spec"]["task_template"]["container_spec"];
    assert_eq!(c["secrets"][0]["source_id"], id, "{c}");
    assert_eq!(c["secrets"][0]["target"], "/run/secrets/pw", "{c}");
    assert_eq!(c["secrets"][0]["mode"], "0400", "{c}");
    assert_eq!(c["configs"][0]["target"], "/app_conf", "{c}");
    assert_eq!(c["configs"][0]["mode"], "0444", "{c}");
    refused(
        &m,
        &["secret", "rm", "db_pw"],
        "secret db_pw is in use by service web",
    );
    refused(
        &m,
        &["config", "rm", "app_conf"],
        "config app_conf is in use by service web",
    );
    assert_eq!(rows(m.json(&["secret", "ls"])).len(), 3);

    // update --secret-rm/--secret-add move the guard.
    m.ok(&[
        "service",
        "update",
        "--detach",
        "--secret-rm",
        "db_pw",
        "--secret-add",
        "api_key",
        "web",
    ]);
    let svc = rows(m.json(&["service", "inspect", "web"]));
    let c = &svc[0]["spec"]["task_template"]["container_spec"];
    assert_eq!(c["secrets"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c["secrets"][0]["target"], "/run/secrets/api_key", "{c}");
    refused(
        &m,
        &["secret", "rm", "api_key"],
        "secret api_key is in use by service web",
    );
    assert_eq!(m.ok(&["secret", "rm", "db_pw"]).trim(), "db_pw");

    m.ok(&["service", "rm", "web"]);
    assert_eq!(m.ok(&["secret", "rm", "api_key"]).trim(), "api_key");
    m.ok(&["config", "rm", "app_conf"]);
    let names: Vec<String> = rows(m.json(&["secret", "ls"]))
        .iter()
        .map(|r| s(r, "name").to_owned())
        .collect();
    assert_eq!(names, ["just_fits"]);
    assert!(rows(m.json(&["config", "ls"])).is_empty());

    // The store holds no plaintext: the Raft log and snapshots are under the data dir.
    m.ok(&["secret", "create", "marker", file]);
    assert_no_file_contains(&m.data_dir(), b"s3cr3t-value");
}

/// Fails if any file under `dir` contains `needle` (as `grep -r`).
#[track_caller]
fn assert_no_file_contains(dir: &std::path::Path, needle: &[u8]) {
    let out = Command::new("grep")
        .args(["-r", "-l", "-a", "-F"])
        .arg(String::from_utf8_lossy(needle).as_ref())
        .arg(dir)
        .output()
        .expect("grep");
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.trim().is_empty(),
        "the secret is on disk under {}: {found}",
        dir.display()
    );
}

#[test]
fn a_service_mounts_its_secret_and_config() {
    if !containerd_tests_enabled() {
        return;
    }
    let c = Cluster::start("secrets", 25610);
    let m = c.m1();
    let secret = "t0p-s3cret-payload";
    create_stdin(m, "secret", "db_pw", secret.as_bytes()).expect("create secret");
    create_stdin(m, "config", "app_conf", b"config-payload").expect("create config");
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "svc",
        "--secret",
        "db_pw",
        "--config",
        "source=app_conf,target=/etc/app.conf,mode=0440",
        IMAGE,
        "sh",
        "-c",
        LOOP,
    ]);
    wait_for(RUN, || expect_running(m, "svc", 1));
    let out = wait_for(RUN, || {
        m.try_ok(&["exec", "svc.1", "--", "cat", "/run/secrets/db_pw"])
    });
    assert_eq!(out, secret);
    let out = m.ok(&["exec", "svc.1", "--", "cat", "/etc/app.conf"]);
    assert_eq!(out, "config-payload");
    let out = m.ok(&[
        "exec",
        "svc.1",
        "--",
        "stat",
        "-c",
        "%a",
        "/run/secrets/db_pw",
        "/etc/app.conf",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["444", "440"]);
    // Read-only in the container.
    let out = m.run(&[
        "exec",
        "svc.1",
        "--",
        "sh",
        "-c",
        "echo x > /run/secrets/db_pw",
    ]);
    assert!(!out.status.success(), "the secret is writable");
    // Nowhere under any daemon's data dir: after the start, the tmpfs is only mounted
    // inside the container.
    for d in &c.daemons {
        assert_no_file_contains(&d.data_dir(), secret.as_bytes());
        let dir = d.data_dir().join("executor").join("secrets");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = dir.display().to_string();
        assert!(
            !mounts.lines().any(|l| l.contains(&dir)),
            "a secrets tmpfs is still mounted on the host under {dir}"
        );
    }
    m.ok(&["service", "rm", "svc"]);
    wait_for(RUN, || {
        let left = c
            .daemons
            .iter()
            .map(|d| {
                rswarm_tests::services::ctr_containers(d.containerd_namespace())
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
            .sum::<usize>();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} containers left"))
        }
    });
    m.ok(&["secret", "rm", "db_pw"]);
    m.ok(&["config", "rm", "app_conf"]);
}
