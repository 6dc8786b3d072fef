//! The containerd executor against a real containerd and a registry on loopback.
//!
//! Run with `RSWARM_CONTAINERD_TESTS=1` after `deploy/test-infra.sh` (as root): it needs
//! containerd on its default socket and `127.0.0.1:5055/busybox:latest` in a registry.
//! Without the variable each test says it is skipped and passes.
//!
//! Each test works in its own containerd namespace, `rswtest-<test>-<pid>`, which a guard
//! empties and deletes when the test ends, failed or not.

use rswarm_proto::model::{
    ContainerSpec, DeviceMapping, Mount, MountType, Resources, ServiceId, Task, TaskId, TaskSpec,
    Ulimit,
};
use rswarm_worker::containerd::{
    read_logs, ContainerdExecutor, ImageDigests, LogStream, LogWriterCommand, DEFAULT_SOCKET,
};
use rswarm_worker::exec::{Controller, ExecError, Executor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REGISTRY: &str = "127.0.0.1:5055";
const IMAGE: &str = "127.0.0.1:5055/busybox:latest";

fn enabled() -> bool {
    if std::env::var("RSWARM_CONTAINERD_TESTS").as_deref() == Ok("1") {
        true
    } else {
        println!("skipped: set RSWARM_CONTAINERD_TESTS=1");
        false
    }
}

fn log_writer() -> LogWriterCommand {
    LogWriterCommand {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_rswarm-test-log-writer")),
        mode: "log-writer".into(),
    }
}

/// A test's executor in its own namespace; dropping it removes everything it made.
struct Env {
    exec: ContainerdExecutor,
    state: tempfile::TempDir,
    ns: String,
}

impl Env {
    async fn new(test: &str) -> Env {
        let ns = format!("rswtest-{test}-{}", std::process::id());
        let state = tempfile::tempdir().expect("state dir");
        let exec = ContainerdExecutor::connect(
            Path::new(DEFAULT_SOCKET),
            &ns,
            vec![REGISTRY.into(), "127.0.0.1:1".into()],
            state.path(),
            log_writer(),
        )
        .await
        .expect("connect to containerd (run deploy/test-infra.sh)");
        Env { exec, state, ns }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The test's runtime may be the thread we are on (and it may be unwinding): clean
        // up from a thread with its own runtime and its own connection.
        let ns = self.ns.clone();
        let state = self.state.path().to_path_buf();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let exec = ContainerdExecutor::connect(
                    Path::new(DEFAULT_SOCKET),
                    &ns,
                    vec![],
                    &state,
                    log_writer(),
                )
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                exec.destroy_namespace()
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of namespace {}: {e}", self.ns),
            Err(_) => eprintln!("cleanup of namespace {} panicked", self.ns),
        }
    }
}

fn task(id: &str, image: &str, args: &[&str]) -> Task {
    Task {
        id: TaskId(format!("{id}{}", std::process::id())),
        service_id: ServiceId("svc1".into()),
        service_name: "svc".into(),
        slot: 1,
        spec: TaskSpec {
            container: ContainerSpec {
                image: image.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Polls `check` until it passes or `limit` runs out; the error names the last unmet state.
async fn wait_for<F: FnMut() -> Result<(), String>>(limit: Duration, mut check: F) {
    let end = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= end => panic!("timed out: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the task's log holds exactly `want`, line by line.
async fn wait_for_log_lines(env: &Env, task: &TaskId, want: &[String]) {
    let log = env.exec.log_path(task);
    wait_for(Duration::from_secs(5), || {
        let (lines, _) = read_logs(&log, None).map_err(|e| e.to_string())?;
        let got: Vec<String> = lines.into_iter().map(|l| l.line).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("log has {got:?}, want {want:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn pulls_once_for_concurrent_callers() {
    if !enabled() {
        return;
    }
    let env = Env::new("pull").await;
    let (a, b) = tokio::join!(env.exec.pull_image(IMAGE), env.exec.pull_image(IMAGE));
    a.expect("pull a");
    b.expect("pull b");
    assert_eq!(
        env.exec.pulls_started(),
        1,
        "two concurrent callers share one pull"
    );
    // Again, now with everything present: content and snapshots are reused.
    env.exec.pull_image(IMAGE).await.expect("pull again");
    assert_eq!(env.exec.pulls_started(), 2);
}

#[tokio::test]
async fn a_pinned_image_already_here_is_used_without_asking_the_registry() {
    if !enabled() {
        return;
    }
    let env = Env::new("pinned").await;
    let digest = ImageDigests::new(vec![REGISTRY.into()])
        .resolve(IMAGE)
        .await
        .expect("the test image's digest");
    let pinned = format!("{IMAGE}@{digest}");
    env.exec.pull_image(&pinned).await.expect("pull pinned");
    assert_eq!(env.exec.pulls_started(), 1);
    env.exec.pull_image(&pinned).await.expect("pinned again");
    assert_eq!(
        env.exec.pulls_started(),
        1,
        "a pinned image here whole is not pulled again"
    );

    // A node that cannot reach the registry at all (it would speak TLS to a plain HTTP
    // registry) runs it from what containerd has.
    let offline = ContainerdExecutor::connect(
        Path::new(DEFAULT_SOCKET),
        &env.ns,
        vec![],
        env.state.path(),
        log_writer(),
    )
    .await
    .expect("connect");
    let t = task("pinned", &pinned, &["sh", "-c", "exit 4"]);
    let mut c = offline.controller(&t).expect("controller");
    c.prepare().await.expect("prepare from the local image");
    c.start().await.expect("start");
    let code = tokio::time::timeout(Duration::from_secs(20), c.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(code, 4);
    c.remove().await.expect("remove");
    assert_eq!(offline.pulls_started(), 0, "the registry was not asked");

    // A tag still goes to the registry (here it fails: that tag was never stored locally).
    assert!(offline.pull_image(IMAGE).await.is_err());
    assert_eq!(offline.pulls_started(), 1);
}

#[tokio::test]
async fn runs_a_command_reports_its_exit_code_and_keeps_its_logs() {
    if !enabled() {
        return;
    }
    let env = Env::new("run").await;
    let t = task(
        "run",
        IMAGE,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.prepare().await.expect("prepare is idempotent");
    c.start().await.expect("start");
    let code = tokio::time::timeout(Duration::from_secs(20), c.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(code, 3);
    let st = c.inspect().await.expect("inspect");
    assert_eq!((st.running, st.exit_code), (false, Some(3)));

    let log = env.exec.log_path(&t.id);
    wait_for(Duration::from_secs(5), || {
        let (lines, _) = read_logs(&log, None).map_err(|e| e.to_string())?;
        let got: Vec<(LogStream, String)> = lines.into_iter().map(|l| (l.stream, l.line)).collect();
        let want = [
            (LogStream::Stdout, "out".to_string()),
            (LogStream::Stderr, "err".to_string()),
        ];
        if want.iter().all(|w| got.contains(w)) {
            Ok(())
        } else {
            Err(format!("log has {got:?}"))
        }
    })
    .await;
    let raw = std::fs::read_to_string(&log).expect("log file");
    assert!(raw.contains(r#""s":"stdout","l":"out""#), "{raw}");

    c.remove().await.expect("remove");
    c.remove().await.expect("remove is idempotent");
    assert!(matches!(c.inspect().await, Err(ExecError::NotFound(_))));
    assert!(!log.exists(), "the container's files go with it");
}

#[tokio::test]
async fn stop_kills_after_the_grace_period() {
    if !enabled() {
        return;
    }
    let env = Env::new("stop").await;
    // sleep as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM for it.
    let t = task("stop", IMAGE, &["sleep", "3600"]);
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    assert!(c.inspect().await.expect("inspect").running);
    let t0 = Instant::now();
    c.stop("", Duration::from_secs(1)).await.expect("stop");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "stop took {took:?}"
    );
    let st = c.inspect().await.expect("inspect");
    assert!(!st.running);
    assert_eq!(st.exit_code, Some(137), "killed by SIGKILL");
    c.stop("", Duration::from_secs(1))
        .await
        .expect("stopping a stopped container");
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn stop_signal_ends_a_process_that_handles_it() {
    if !enabled() {
        return;
    }
    let env = Env::new("stopsig").await;
    let mut t = task(
        "stopsig",
        IMAGE,
        &[
            "sh",
            "-c",
            "trap 'exit 0' USR1; while true; do sleep 0.1; done",
        ],
    );
    t.spec.container.stop_signal = "SIGUSR1".into();
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    // Let the shell install its trap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    c.stop("", Duration::from_secs(10)).await.expect("stop");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the stop signal was not the spec's"
    );
    assert_eq!(c.inspect().await.expect("inspect").exit_code, Some(0));
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn init_forwards_sigterm_to_a_command_that_ignores_it() {
    if !enabled() {
        return;
    }
    let env = Env::new("init").await;
    // The same `sleep` that waits out the grace period as PID 1 (see
    // stop_kills_after_the_grace_period) ends at once as tini's child.
    let mut t = task("init", IMAGE, &["sleep", "3600"]);
    t.spec.container.init = true;
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare()
        .await
        .expect("prepare (needs Debian's tini: /usr/bin/tini-static)");
    c.start().await.expect("start");
    let cmd = ["cat".to_string(), "/proc/1/cmdline".to_string()];
    let out = c.exec(&cmd, Duration::from_secs(10)).await.expect("exec");
    assert_eq!(out.exit_code, 0);
    // NUL-terminated arguments.
    let argv: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    assert_eq!(argv, ["/sbin/docker-init", "--", "sleep", "3600"]);
    let t0 = Instant::now();
    c.stop("", Duration::from_secs(10)).await.expect("stop");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    // tini exits as its child did: killed by SIGTERM, 128 + 15.
    assert_eq!(c.inspect().await.expect("inspect").exit_code, Some(143));
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn exec_runs_in_the_container() {
    if !enabled() {
        return;
    }
    let env = Env::new("exec").await;
    let t = task("exec", IMAGE, &["sleep", "3600"]);
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = c
        .exec(&cmd(&["echo", "hi"]), Duration::from_secs(10))
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"hi\n"[..]));

    let out = c
        .exec(
            &cmd(&["sh", "-c", "echo oops >&2; exit 4"]),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.stderr.as_slice(), out.stdout.len()),
        (4, &b"oops\n"[..], 0)
    );

    let t0 = Instant::now();
    let r = c
        .exec(&cmd(&["sleep", "30"]), Duration::from_millis(500))
        .await;
    assert!(
        matches!(&r, Err(ExecError::Exec { reason, .. }) if reason.contains("timed out")),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));

    assert!(c
        .exec(&cmd(&["/no/such/binary"]), Duration::from_secs(5))
        .await
        .is_err());
    c.stop("", Duration::ZERO).await.expect("stop");
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn busybox_has_no_image_healthcheck() {
    if !enabled() {
        return;
    }
    let env = Env::new("health").await;
    let t = task("health", IMAGE, &["true"]);
    let mut c = env.exec.controller(&t).expect("controller");
    assert_eq!(c.image_healthcheck().await.expect("healthcheck"), None);
}

#[tokio::test]
async fn missing_images_and_unreachable_registries_fail_with_the_reason() {
    if !enabled() {
        return;
    }
    let env = Env::new("missing").await;
    for (image, reason) in [
        ("127.0.0.1:5055/does-not-exist:1", "manifest unknown"),
        ("127.0.0.1:5055/busybox:no-such-tag", "manifest unknown"),
        ("127.0.0.1:1/busybox:latest", "connection refused"),
    ] {
        let t = task("missing", image, &["true"]);
        let mut c = env.exec.controller(&t).expect("controller");
        match c.prepare().await {
            Err(e @ ExecError::ImagePull { .. }) => {
                assert!(e.to_string().contains(reason), "{image}: {e}");
                assert!(!e.is_temporary());
            }
            other => panic!("{image}: {other:?}"),
        }
    }
    assert!(matches!(
        env.exec.controller(&task("bad", "Not A Reference", &[])),
        Err(ExecError::InvalidImage(_))
    ));
}

#[tokio::test]
async fn limits_user_env_and_hostname_reach_the_container() {
    if !enabled() {
        return;
    }
    let env = Env::new("limits").await;
    let mut t = task(
        "limits",
        IMAGE,
        &["sh", "-c", "echo $(id -u):$(id -g) $HOSTNAME $(hostname) $GREETING $PWD; cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
    );
    t.spec.resources.limits = Resources {
        nano_cpus: 500_000_000,
        memory_bytes: 32 << 20,
    };
    t.spec.container.user = "nobody".into();
    t.spec.container.env = vec!["GREETING=hello".into()];
    t.spec.container.dir = "/tmp".into();
    let ctl = env.exec.controller_with_netns(&t, None);
    let hostname = ctl.container_id()[..12].to_string();
    let mut c: Box<dyn Controller> = Box::new(ctl);
    c.prepare().await.expect("prepare");

    // The spec as containerd stored it.
    let spec = env
        .exec
        .controller_with_netns(&t, None)
        .spec()
        .await
        .expect("spec");
    let cpu = spec.linux.resources.cpu.as_ref().expect("cpu limit");
    assert_eq!((cpu.quota, cpu.period), (50_000, 100_000));
    assert_eq!(
        spec.linux.resources.memory.as_ref().map(|m| m.limit),
        Some(32 << 20)
    );
    assert_eq!(
        (spec.process.user.uid, spec.process.user.gid),
        (65534, 65534)
    );
    assert!(spec
        .process
        .env
        .iter()
        .any(|e| e.starts_with("PATH=/usr/local/sbin")));
    assert_eq!(spec.hostname, hostname);

    c.start().await.expect("start");
    assert_eq!(c.wait().await.expect("wait"), 0);
    let log = env.exec.log_path(&t.id);
    let want = format!("65534:65534 {hostname} {hostname} hello /tmp");
    wait_for(Duration::from_secs(5), || {
        let (lines, _) = read_logs(&log, None).map_err(|e| e.to_string())?;
        let got: Vec<String> = lines.into_iter().map(|l| l.line).collect();
        if got.len() == 2 && got[0] == want && got[1] == (32u64 << 20).to_string() {
            Ok(())
        } else {
            Err(format!("log has {got:?}, want [{want:?}, 33554432]"))
        }
    })
    .await;
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn a_host_network_task_runs_in_the_nodes_namespace_with_its_hostname() {
    if !enabled() {
        return;
    }
    let env = Env::new("hostnet").await;
    // The namespace and hostname this test runs with are the node's: containerd (from
    // deploy/test-infra.sh) runs in the same network namespace.
    let node_ns = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let node_hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    let mut t = task(
        "hostnet",
        IMAGE,
        &[
            "sh",
            "-c",
            "echo ns=$(readlink /proc/self/ns/net) host=$(hostname); \
             cmp -s /etc/resolv.conf /node/resolv.conf && echo resolv=same; \
             cmp -s /etc/hosts /node/hosts && echo hosts=same",
        ],
    );
    t.spec.host_network = true;
    // The node's files, to compare with what the container was given.
    let node = tempfile::tempdir().expect("dir");
    std::fs::write(node.path().join("resolv.conf"), &node_resolv).expect("write");
    std::fs::write(node.path().join("hosts"), &node_hosts).expect("write");
    t.spec.container.mounts = vec![Mount {
        kind: MountType::Bind,
        source: node.path().display().to_string(),
        target: "/node".into(),
        read_only: true,
        tmpfs_size: 0,
    }];
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    let spec = env
        .exec
        .controller_with_netns(&t, None)
        .spec()
        .await
        .expect("spec");
    assert!(
        spec.linux.namespaces.iter().all(|n| n.kind != "network"),
        "{:?}",
        spec.linux.namespaces
    );
    c.start().await.expect("start");
    assert_eq!(c.wait().await.expect("wait"), 0);
    let want = vec![
        format!("ns={} host={}", node_ns.display(), node_name.trim()),
        "resolv=same".to_string(),
        "hosts=same".to_string(),
    ];
    wait_for_log_lines(&env, &t.id, &want).await;
    c.remove().await.expect("remove");
}

#[tokio::test]
async fn bind_volume_and_tmpfs_mounts() {
    if !enabled() {
        return;
    }
    let env = Env::new("mounts").await;
    let host = tempfile::tempdir().expect("tmp");
    std::fs::write(host.path().join("f"), "from-host\n").expect("write");
    let mut t = task(
        "mounts",
        IMAGE,
        &["sh", "-c", "cat /b/f && echo kept > /v/x && grep -q ' /scratch tmpfs' /proc/mounts && ! touch /b/g"],
    );
    let mount = |kind, source: &str, target: &str, read_only| Mount {
        kind,
        source: source.into(),
        target: target.into(),
        read_only,
        tmpfs_size: 0,
    };
    t.spec.container.mounts = vec![
        mount(
            MountType::Bind,
            &host.path().display().to_string(),
            "/b",
            true,
        ),
        mount(MountType::Volume, "data", "/v", false),
        mount(MountType::Tmpfs, "", "/scratch", false),
    ];
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    assert_eq!(
        c.wait().await.expect("wait"),
        0,
        "a mount is missing or writable"
    );
    c.remove().await.expect("remove");
    let kept = std::fs::read_to_string(env.state.path().join("volumes/data/x"))
        .expect("volume outlives the container");
    assert_eq!(kept, "kept\n");

    let mut bad = task("badmount", IMAGE, &["true"]);
    bad.spec.container.mounts = vec![mount(MountType::Bind, "/no/such/dir", "/x", false)];
    let mut c = env.exec.controller(&bad).expect("controller");
    assert!(matches!(c.prepare().await, Err(ExecError::Create { .. })));
}

#[tokio::test]
async fn capabilities_readonly_root_ulimits_sysctls_and_devices() {
    if !enabled() {
        return;
    }
    let env = Env::new("caps").await;
    let mut t = task(
        "caps",
        IMAGE,
        &[
            "sh",
            "-c",
            "grep -E '^Cap(Bnd|Eff)' /proc/self/status | cut -f2; \
             if touch /rootfile 2>/dev/null; then echo rw; else echo ro; fi; \
             ulimit -n; ulimit -Hn; cat /proc/sys/net/ipv4/ip_forward; \
             [ -c /dev/mynull ] && echo x > /dev/mynull && echo dev-ok",
        ],
    );
    let c = &mut t.spec.container;
    c.capability_drop = vec!["ALL".into()];
    c.capability_add = vec!["CAP_NET_ADMIN".into()];
    c.read_only = true;
    // The task has a network namespace of its own (a fresh one here), so a net.* sysctl
    // applies to it alone.
    c.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    c.ulimits = vec![Ulimit::new("nofile", 123, 456).expect("ulimit")];
    c.devices = vec![DeviceMapping::parse("/dev/null:/dev/mynull").expect("device")];
    let mut c = env.exec.controller(&t).expect("controller");
    c.prepare().await.expect("prepare");
    c.start().await.expect("start");
    assert_eq!(c.wait().await.expect("wait"), 0);
    // CAP_NET_ADMIN is bit 12.
    let want = [
        "0000000000001000",
        "0000000000001000",
        "ro",
        "123",
        "456",
        "1",
        "dev-ok",
    ]
    .map(String::from);
    wait_for_log_lines(&env, &t.id, &want).await;
    c.remove().await.expect("remove");

    // A device the node lacks rejects the task, in Docker's words.
    let mut bad = task("nodev", IMAGE, &["true"]);
    bad.spec.container.devices = vec![DeviceMapping::parse("/dev/rswarm-no-such").expect("device")];
    let mut c = env.exec.controller(&bad).expect("controller");
    match c.prepare().await {
        Err(ExecError::Create { reason, .. }) => assert!(
            reason.contains(
                "error gathering device information while adding custom device \"/dev/rswarm-no-such\": no such file or directory"
            ),
            "{reason}"
        ),
        other => panic!("prepare with a missing device: {other:?}"),
    }
}

#[tokio::test]
async fn lists_containers_and_removes_orphans() {
    if !enabled() {
        return;
    }
    let env = Env::new("orphans").await;
    let running = task("orph-a", IMAGE, &["sleep", "3600"]);
    let created = task("orph-b", IMAGE, &["sleep", "3600"]);
    let mut a = env.exec.controller(&running).expect("controller");
    a.prepare().await.expect("prepare");
    a.start().await.expect("start");
    let mut b = env.exec.controller(&created).expect("controller");
    b.prepare().await.expect("prepare");

    let list = env.exec.list().await.expect("list");
    let mut seen: Vec<(String, bool)> = list
        .iter()
        .map(|c| (c.task_id.to_string(), c.running))
        .collect();
    seen.sort();
    let mut want = vec![
        (running.id.to_string(), true),
        (created.id.to_string(), false),
    ];
    want.sort();
    assert_eq!(seen, want);

    let orphan = list
        .iter()
        .find(|c| c.task_id == running.id)
        .expect("listed")
        .clone();
    let t0 = Instant::now();
    env.exec
        .remove_orphan(&orphan, Duration::from_secs(1))
        .await
        .expect("remove orphan");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let left: Vec<TaskId> = env
        .exec
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.task_id)
        .collect();
    assert_eq!(left, vec![created.id.clone()]);
    env.exec
        .remove_orphan(
            &list
                .iter()
                .find(|c| c.task_id == created.id)
                .expect("listed")
                .clone(),
            Duration::ZERO,
        )
        .await
        .expect("remove created");
    assert!(env.exec.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn containerd_down_is_temporary() {
    // Needs nothing running: a socket nobody listens on.
    let dir = tempfile::tempdir().expect("tmp");
    let r = ContainerdExecutor::connect(
        &dir.path().join("none.sock"),
        "rswtest-down",
        vec![],
        dir.path(),
        log_writer(),
    )
    .await;
    match r {
        Err(e @ ExecError::Unavailable(_)) => assert!(e.is_temporary()),
        Err(e) => panic!("not Unavailable: {e:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}
