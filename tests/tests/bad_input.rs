//! Bad input is refused cleanly and changes nothing.
//!
//! Every case checks the CLI's failure contract (DESIGN.md): a non-zero exit, exactly one
//! non-empty line on stderr, no panic and no Rust debug dump of a gRPC status; and that the
//! cluster is as it was (`node ls` unchanged, a node outside the cluster stays out).
//! Cases are collected with [`Checks`], so a run reports every broken case at once.
//!
//! Ports: 25100-25199, ten per test.

use rswarm_proto::pb;
use rswarm_tests::grpc::{block_on, control};
use rswarm_tests::{client, nodes, wait_for, Checks, Daemon};
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);

/// The node id this daemon's node has in a cluster; empty when it is in none.
fn node_id(d: &Daemon) -> String {
    block_on(async {
        let mut c = control(&d.socket()).await?;
        c.info(pb::InfoRequest {})
            .await
            .map(|r| r.into_inner().node_id)
            .map_err(|s| s.message().to_owned())
    })
    .unwrap_or_else(|e| panic!("{}: Info: {e}", d.name()))
}

/// `Ok` when `d` is in no cluster.
fn outside(d: &Daemon) -> Result<(), String> {
    match node_id(d) {
        id if id.is_empty() => Ok(()),
        id => Err(format!("{} is in a cluster now, as node {id}", d.name())),
    }
}

/// `Ok` when `m`'s `node ls` still shows `before`.
fn unchanged(m: &Daemon, before: &[String]) -> Result<(), String> {
    let now = nodes::stable_view(&m.nodes()?);
    if now == before {
        Ok(())
    } else {
        Err(format!(
            "node ls changed:\n  before {before:?}\n  after  {now:?}"
        ))
    }
}

/// `token` with the character `index_from_end` places before its last one replaced by
/// another character of the same base-36 alphabet.
fn one_char_changed(token: &str, index_from_end: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 1 - index_from_end;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// A manager `m1` (initialised, one ready node) and a worker `w1` joined to it.
fn manager_and_worker(base: u16) -> (Daemon, Daemon) {
    let m1 = Daemon::start("m1", base);
    let w1 = Daemon::start("w1", base + 1);
    m1.init();
    w1.join(&m1.join_token("worker"), &m1);
    m1.wait_ready(2, READY);
    (m1, w1)
}

#[test]
fn bad_tokens_are_refused_and_change_nothing() {
    let m1 = Daemon::start("m1", 25100);
    let m2 = Daemon::start("m2", 25101);
    let other = Daemon::start("c1", 25102);
    m1.init();
    other.init();
    let worker_token = m1.join_token("worker");
    let manager_token = m1.join_token("manager");
    let foreign_token = other.join_token("worker");
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    // The token is SWMTKN-1-<CA digest>-<secret>: change one of each.
    let secret_changed = one_char_changed(&worker_token, 0);
    let digest_changed = {
        let digest_end = worker_token.rfind('-').expect("a token has dashes");
        one_char_changed(&worker_token, worker_token.len() - digest_end)
    };
    assert_ne!(secret_changed, worker_token);
    assert_ne!(digest_changed, worker_token);

    let mut checks = Checks::new();
    let case = |checks: &mut Checks, what: &str, token: &str| {
        let out = m2.run(&["join", "--token", token, &m1.addr()]);
        checks.refused(what, &out, &[]);
        checks.result(what, outside(&m2));
        checks.result(what, unchanged(&m1, &before));
    };
    case(&mut checks, "garbled token", "not-a-token");
    case(&mut checks, "empty token", "");
    case(
        &mut checks,
        "one character of the secret changed",
        &secret_changed,
    );
    case(
        &mut checks,
        "one character of the CA digest changed",
        &digest_changed,
    );
    case(
        &mut checks,
        "a manager token with its secret changed",
        &one_char_changed(&manager_token, 3),
    );
    case(&mut checks, "the token of another cluster", &foreign_token);

    m1.ok(&["join-token", "worker", "--rotate"]);
    let rotated = m1.join_token("worker");
    checks.that("rotation", rotated != worker_token, || {
        "join-token --rotate did not change the token".into()
    });
    case(
        &mut checks,
        "the worker token from before a rotation",
        &worker_token,
    );
    checks.finish();

    // The refusals left nothing behind: the current token still works.
    m2.join(&rotated, &m1);
    m1.wait_ready(2, READY);
}

#[test]
fn joining_an_unreachable_address_fails_cleanly() {
    let m1 = Daemon::start("m1", 25110);
    let n1 = Daemon::start("n1", 25111);
    m1.init();
    let token = m1.join_token("worker");
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let mut checks = Checks::new();
    // Nothing listens on 25119: the port range is this test's own.
    let out = n1.run(&["join", "--token", &token, "127.0.0.1:25119"]);
    checks.refused("join through a closed port", &out, &["127.0.0.1:25119"]);
    checks.result("join through a closed port", outside(&n1));
    let out = n1.run(&["join", "--token", &token, "not an address"]);
    checks.refused("join through a malformed address", &out, &[]);
    checks.result("join through a malformed address", outside(&n1));
    checks.result("the cluster", unchanged(&m1, &before));
    checks.finish();

    // The failed attempt freed the node's cluster port: a real join works.
    n1.join(&token, &m1);
    m1.wait_ready(2, READY);
}

#[test]
fn init_twice_and_joining_from_inside_a_cluster_are_refused() {
    let (m1, w1) = manager_and_worker(25120);
    let other = Daemon::start("c1", 25122);
    other.init();
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let m1_id = node_id(&m1);
    let w1_id = node_id(&w1);
    let token = m1.join_token("worker");
    let mut checks = Checks::new();

    let out = m1.run(&["init"]);
    checks.refused("init on a manager", &out, &["already"]);
    let out = w1.run(&["init", "--dispatcher-heartbeat", "1s"]);
    checks.refused("init on a worker", &out, &["already"]);
    let out = w1.run(&["join", "--token", &token, &m1.addr()]);
    checks.refused("join again on a worker", &out, &["already"]);
    let out = m1.run(&["join", "--token", &token, &m1.addr()]);
    checks.refused("join on the manager itself", &out, &["already"]);
    let out = w1.run(&[
        "join",
        "--token",
        &other.join_token("worker"),
        &other.addr(),
    ]);
    checks.refused("join another cluster from inside one", &out, &["already"]);

    checks.result("the cluster", unchanged(&m1, &before));
    checks.that("m1's identity", node_id(&m1) == m1_id, || {
        "m1 changed node id".into()
    });
    checks.that("w1's identity", node_id(&w1) == w1_id, || {
        "w1 changed node id".into()
    });
    checks.result(
        "the other cluster",
        other.nodes().and_then(|rows| match rows.len() {
            1 => Ok(()),
            n => Err(format!(
                "{n} nodes in the other cluster: {}",
                nodes::summary(&rows)
            )),
        }),
    );
    checks.finish();
}

#[test]
fn a_worker_refuses_control_commands() {
    let (m1, w1) = manager_and_worker(25130);
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let mut checks = Checks::new();
    let cases: &[(&str, &[&str])] = &[
        ("node ls", &["node", "ls"]),
        ("node ls --format json", &["node", "ls", "--format", "json"]),
        ("node inspect", &["node", "inspect", "m1"]),
        (
            "node update",
            &["node", "update", "--label-add", "a=b", "m1"],
        ),
        ("node promote", &["node", "promote", "w1"]),
        ("node demote", &["node", "demote", "m1"]),
        ("node rm", &["node", "rm", "--force", "m1"]),
        ("join-token", &["join-token", "worker"]),
        (
            "join-token --rotate",
            &["join-token", "manager", "--rotate"],
        ),
    ];
    for (what, args) in cases {
        let out = w1.run(args);
        checks.refused(
            &format!("{what} on a worker"),
            &out,
            &["this node is not a manager"],
        );
    }
    checks.result("the cluster", unchanged(&m1, &before));
    checks.finish();
}

#[test]
fn guards_on_demote_rm_and_leave() {
    let (m1, w1) = manager_and_worker(25140);
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let mut checks = Checks::new();

    let out = m1.run(&["node", "demote", "m1"]);
    checks.refused("demote the last manager", &out, &["last manager"]);
    let out = m1.run(&["node", "rm", "w1"]);
    checks.refused(
        "node rm of a ready node without --force",
        &out,
        &["--force"],
    );
    let out = m1.run(&["node", "rm", "m1"]);
    checks.refused("node rm of a manager", &out, &["demote"]);
    let out = m1.run(&["node", "rm", "--force", "m1"]);
    checks.refused("node rm --force of a manager", &out, &["demote"]);
    let out = m1.run(&["leave"]);
    checks.refused(
        "leave on the only manager without --force",
        &out,
        &["--force"],
    );
    let out = m1.run(&["node", "inspect", "no-such-node"]);
    checks.refused("node inspect of an unknown node", &out, &["not found"]);
    let out = m1.run(&["node", "update", "--label-add", "a=b", "no-such-node"]);
    checks.refused("node update of an unknown node", &out, &["not found"]);
    let out = m1.run(&["node", "update", "--label-rm", "no-such-label", "w1"]);
    checks.refused(
        "node update --label-rm of a missing label",
        &out,
        &["no-such-label"],
    );

    checks.result("the cluster", unchanged(&m1, &before));
    checks.result(
        "m1 still leads",
        m1.nodes()
            .and_then(|r| nodes::leader(&r))
            .and_then(|l| match l.as_str() {
                "m1" => Ok(()),
                _ => Err(format!("the leader is {l}")),
            }),
    );
    checks.result(
        "w1 still ready",
        m1.nodes()
            .and_then(|r| nodes::expect_field(&r, "w1", "state", "ready")),
    );
    checks.that("w1 still in the cluster", !node_id(&w1).is_empty(), || {
        "w1 left".into()
    });
    checks.finish();
}

#[test]
fn commands_without_a_daemon_fail_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!("unix://{}", dir.path().join("rswarm.sock").display());
    // A socket file that nothing serves, as a killed daemon leaves behind.
    let stale_path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale_path).expect("bind a socket"));
    let stale = format!("unix://{}", stale_path.display());
    let mut checks = Checks::new();
    let cases: &[&[&str]] = &[
        &["node", "ls"],
        &["node", "ls", "--format", "json"],
        &["node", "inspect", "x"],
        &["node", "update", "--availability", "drain", "x"],
        &["node", "rm", "x"],
        &["init"],
        &["join", "--token", "SWMTKN-1-x-y", "127.0.0.1:25199"],
        &["join-token", "worker"],
        &["leave"],
    ];
    for args in cases {
        let out = client(&missing, args);
        checks.refused(
            &format!("{} (no socket)", args.join(" ")),
            &out,
            &["is it running"],
        );
        let out = client(&stale, args);
        checks.refused(
            &format!("{} (stale socket)", args.join(" ")),
            &out,
            &["is it running"],
        );
    }
    let out = client("tcp://127.0.0.1:25199", &["node", "ls"]);
    checks.refused("an unsupported -H scheme", &out, &["unix://"]);
    checks.finish();
}

/// Flag values that parse as strings but that rswarm validates itself.
#[test]
fn bad_flag_values_are_refused() {
    let m1 = Daemon::start("m1", 25150);
    let mut checks = Checks::new();
    let init_cases: &[(&str, &[&str])] = &[
        (
            "init --dispatcher-heartbeat banana",
            &["init", "--dispatcher-heartbeat", "banana"],
        ),
        (
            "init --dispatcher-heartbeat 10ms",
            &["init", "--dispatcher-heartbeat", "10ms"],
        ),
        (
            "init --dispatcher-heartbeat -1s",
            &["init", "--dispatcher-heartbeat=-1s"],
        ),
        (
            "init --cert-expiry soon",
            &["init", "--cert-expiry", "soon"],
        ),
        ("init --cert-expiry 1m", &["init", "--cert-expiry", "1m"]),
        (
            "init --advertise-addr banana",
            &["init", "--advertise-addr", "banana"],
        ),
        (
            "init --listen-addr banana",
            &["init", "--listen-addr", "banana"],
        ),
        ("join with an empty address", &["join", "--token", "x", ""]),
    ];
    for (what, args) in init_cases {
        let out = m1.run(args);
        checks.refused(what, &out, &[]);
        checks.result(what, outside(&m1));
    }

    m1.init();
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let cases: &[(&str, &[&str])] = &[
        (
            "node update --label-add =v",
            &["node", "update", "--label-add", "=v", "m1"],
        ),
        (
            "node update --label-add with an empty key and value",
            &["node", "update", "--label-add", "=", "m1"],
        ),
    ];
    for (what, args) in cases {
        let out = m1.run(args);
        checks.refused(what, &out, &[]);
    }
    checks.result("the cluster", unchanged(&m1, &before));

    // The daemon validates its flags before binding anything.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let sock = dir.path().join("rswarm.sock");
    let (data, sock) = (data.to_string_lossy(), sock.to_string_lossy());
    let daemon_cases: &[(&str, &str)] = &[
        ("daemon --listen-addr banana", "banana"),
        ("daemon --listen-addr 127.0.0.1:99999", "127.0.0.1:99999"),
    ];
    for (what, listen) in daemon_cases {
        let out = client(
            "unix:///nonexistent",
            &[
                "daemon",
                "--data-dir",
                &data,
                "--socket",
                &sock,
                "--listen-addr",
                listen,
            ],
        );
        checks.refused(what, &out, &["--listen-addr"]);
        checks.that(what, !std::path::Path::new(&*sock).exists(), || {
            "the daemon created its socket".into()
        });
    }
    checks.finish();
}

/// Usage errors caught by the argument parser (a value outside a fixed set, an unknown
/// flag or command, a missing argument) follow the same contract: one line on stderr.
#[test]
fn usage_errors_are_refused_in_one_line() {
    let m1 = Daemon::start("m1", 25170);
    m1.init();
    let before = nodes::stable_view(&m1.nodes().expect("node ls on m1"));
    let mut checks = Checks::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "node update --availability nope",
            &["node", "update", "--availability", "nope", "m1"],
        ),
        (
            "node update without a node",
            &["node", "update", "--availability", "drain"],
        ),
        ("node ls --format yaml", &["node", "ls", "--format", "yaml"]),
        ("join-token bogus", &["join-token", "bogus"]),
        ("join without --token", &["join", "127.0.0.1:25170"]),
        ("init --unknown-flag", &["init", "--unknown-flag"]),
        ("an unknown command", &["frobnicate"]),
    ];
    for (what, args) in cases {
        let out = m1.run(args);
        checks.refused(what, &out, &[]);
    }
    checks.result("the cluster", unchanged(&m1, &before));
    checks.finish();
}

#[test]
fn an_update_with_a_stale_version_is_refused() {
    let m1 = Daemon::start("m1", 25160);
    m1.init();
    m1.wait_ready(1, READY);
    let version_of = |d: &Daemon| -> u64 {
        d.json(&["node", "inspect", "m1"])[0]["version"]
            .as_u64()
            .expect("node inspect shows a version")
    };
    let old = version_of(&m1);
    m1.ok(&["node", "update", "--label-add", "color=blue", "m1"]);
    let current = version_of(&m1);
    assert!(
        current > old,
        "the label update did not move the version ({old} -> {current})"
    );
    let id = node_id(&m1);

    let result = block_on(async {
        let mut c = control(&m1.socket()).await.expect("control API");
        c.update_node(pb::UpdateNodeRequest {
            node: id.clone(),
            version: old,
            label_add: [("color".to_owned(), "red".to_owned())].into(),
            ..Default::default()
        })
        .await
    });
    match result {
        Ok(r) => panic!(
            "an update based on version {old} (current {current}) was applied: {:?}",
            r.into_inner().node
        ),
        Err(s) => assert!(
            s.message().contains("out of sequence"),
            "the stale update was refused, but not as out of sequence: {:?}: {}",
            s.code(),
            s.message()
        ),
    }
    let rows = m1.nodes().expect("node ls");
    assert_eq!(
        nodes::label(&rows, "m1", "color").expect("m1 listed"),
        "blue"
    );

    // The same update based on the current version is applied (retried if the node moved).
    wait_for(Duration::from_secs(10), || {
        let v = version_of(&m1);
        block_on(async {
            let mut c = control(&m1.socket()).await?;
            c.update_node(pb::UpdateNodeRequest {
                node: id.clone(),
                version: v,
                label_add: [("color".to_owned(), "green".to_owned())].into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("update at version {v}: {}", s.message()))
        })
    });
    let rows = m1.nodes().expect("node ls");
    assert_eq!(
        nodes::label(&rows, "m1", "color").expect("m1 listed"),
        "green"
    );
}

/// STYLE.md section 6: the daemon validates its configuration before binding anything and
/// exits 64 (EX_USAGE) on bad usage, as the client does for parser errors.
#[test]
fn the_daemon_exits_64_on_bad_usage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let sock = dir.path().join("rswarm.sock");
    let (data, sock) = (data.to_string_lossy(), sock.to_string_lossy());
    let mut checks = Checks::new();
    let cases: &[(&str, &[&str])] = &[
        ("--listen-addr banana", &["--listen-addr", "banana"]),
        ("--advertise-addr banana", &["--advertise-addr", "banana"]),
        ("--unknown-flag", &["--unknown-flag"]),
    ];
    for (what, extra) in cases {
        let mut args = vec!["daemon", "--data-dir", &data, "--socket", &sock];
        args.extend_from_slice(extra);
        let out = client("unix:///nonexistent", &args);
        checks.that(what, out.status.code() == Some(64), || {
            format!(
                "exit {}, want 64; stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        });
    }
    checks.finish();
}

/// A join token names the cluster's CA. When the manager at the address presents another
/// CA (another cluster's token, or a token whose CA digest was changed), the join is
/// refused, and the one line says so: the manager was reached, so "could not reach a
/// manager" sends the user looking for a network problem that is not there.
#[test]
fn a_token_for_another_ca_is_reported_as_such() {
    let m1 = Daemon::start("m1", 25180);
    let m2 = Daemon::start("m2", 25181);
    let other = Daemon::start("c1", 25182);
    m1.init();
    other.init();
    let token = m1.join_token("worker");
    let digest_end = token.rfind('-').expect("a token has dashes");
    let cases = [
        ("the token of another cluster", other.join_token("worker")),
        (
            "one character of the CA digest changed",
            one_char_changed(&token, token.len() - digest_end),
        ),
    ];
    let mut checks = Checks::new();
    for (what, t) in &cases {
        let out = m2.run(&["join", "--token", t, &m1.addr()]);
        let line = checks.refused(what, &out, &[]);
        checks.that(what, !line.contains("could not reach"), || {
            format!("the manager was reachable, but the error says: {line}")
        });
        checks.that(
            what,
            ["CA", "certificate", "token"]
                .iter()
                .any(|w| line.contains(w)),
            || format!("the error names neither the token, the CA nor a certificate: {line}"),
        );
        checks.result(what, outside(&m2));
    }
    checks.finish();
}
