//! Overlay networks as the managers allocate them: `network create|ls|inspect|rm`, their
//! guards, service VIPs (`service inspect` `endpoint.virtual_ips`) and task addresses
//! (`service ps` `addresses`), on real daemons over loopback.
//!
//! No container needs to run: tasks get their addresses when the orchestrator makes them,
//! before they are scheduled, so the services here carry a constraint no node satisfies
//! and their tasks stay pending (with or without containerd on the machine). The kernel
//! side (netd) is not involved.
//!
//! Ports: 25400-25499, ten per test.

use rswarm_tests::services::s;
use rswarm_tests::{wait_for, Checks, Daemon};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);
/// The orchestrator makes a new service's tasks within this.
const TASKS: Duration = Duration::from_secs(15);
/// A constraint no node satisfies: tasks are made (with addresses) and stay pending.
const NOWHERE: &str = "node.labels.rswarm-test-nowhere==yes";

/// A manager, initialised, with one ready node.
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

/// The `network ls --format json` row of `name`.
fn network_row(m: &Daemon, name: &str) -> Result<Value, String> {
    rows(m.try_json(&["network", "ls"])?)
        .into_iter()
        .find(|r| s(r, "name") == name)
        .ok_or_else(|| format!("network ls does not list {name}"))
}

/// Sorted `name subnet vni` of every network: what a refusal must leave as it was.
fn networks_view(m: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = rows(m.json(&["network", "ls"]))
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                s(r, "id"),
                s(r, "name"),
                s(r, "subnet"),
                r["vni"]
            )
        })
        .collect();
    v.sort();
    v
}

fn service_names(m: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = rows(m.json(&["service", "ls"]))
        .iter()
        .map(|r| s(r, "name").to_owned())
        .collect();
    v.sort();
    v
}

fn parse_cidr(c: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, p) = c
        .split_once('/')
        .ok_or(format!("{c:?} is not in CIDR form"))?;
    Ok((
        ip.parse().map_err(|_| format!("{c:?}: bad address"))?,
        p.parse().map_err(|_| format!("{c:?}: bad prefix"))?,
    ))
}

/// Whether `addr` (CIDR) is a host address of `subnet` (CIDR) with the subnet's prefix.
fn host_of(subnet: &str, addr: &str) -> Result<(), String> {
    let (net, p) = parse_cidr(subnet)?;
    let (ip, q) = parse_cidr(addr)?;
    let mask = u32::MAX << (32 - u32::from(p));
    let inside = u32::from(ip) & mask == u32::from(net);
    let ends = u32::from(ip) == u32::from(net) || u32::from(ip) == u32::from(net) | !mask;
    if p == q && inside && !ends {
        Ok(())
    } else {
        Err(format!("{addr} is not a host address of {subnet}"))
    }
}

/// `service create --detach --constraint NOWHERE ARGS... busybox`, without asking Docker
/// Hub for the image's digest (these tests have no registry).
#[track_caller]
fn create_service(m: &Daemon, args: &[&str]) {
    let mut a = vec![
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--constraint",
        NOWHERE,
    ];
    a.extend_from_slice(args);
    a.push("busybox");
    m.ok(&a);
}

/// `endpoint.virtual_ips` of `service` as `(network, network_name, addr)`.
fn vips(m: &Daemon, service: &str) -> Result<Vec<(String, String, String)>, String> {
    let v = m.try_json(&["service", "inspect", service])?;
    let ips = v[0]["endpoint"]["virtual_ips"]
        .as_array()
        .ok_or_else(|| format!("service inspect {service}: no endpoint.virtual_ips: {v}"))?;
    Ok(ips
        .iter()
        .map(|x| {
            (
                s(x, "network").to_owned(),
                s(x, "network_name").to_owned(),
                s(x, "addr").to_owned(),
            )
        })
        .collect())
}

/// The `addresses` of the tasks of `service` that should run, once there are `n` of them,
/// each with `per_task` addresses.
fn task_addresses(m: &Daemon, service: &str, n: usize, per_task: usize) -> Vec<Vec<String>> {
    wait_for(TASKS, || {
        let rows = rows(m.try_json(&[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
        ])?);
        let addrs: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                r["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        if rows.len() == n && addrs.iter().all(|a: &Vec<String>| a.len() == per_task) {
            Ok(addrs)
        } else {
            Err(format!(
                "{service}: want {n} tasks with {per_task} address(es) each, got {addrs:?}"
            ))
        }
    })
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    let m = manager(25400);
    let appnet = m
        .ok(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.31.0.0/24",
            "--gateway",
            "10.31.0.254",
            "--attachable",
            "--internal",
            "--label",
            "team=blue",
            "appnet",
        ])
        .trim()
        .to_owned();
    m.ok(&["network", "create", "auto1"]);
    m.ok(&["network", "create", "-d", "overlay", "auto2"]);

    let ls = rows(m.json(&["network", "ls"]));
    let names: Vec<&str> = ls.iter().map(|r| s(r, "name")).collect();
    assert_eq!(names, ["appnet", "auto1", "auto2"], "network ls: {ls:?}");
    for r in &ls {
        assert_eq!(s(r, "driver"), "overlay", "{r}");
        assert_eq!(s(r, "scope"), "swarm", "{r}");
        assert!(r["vni"].as_u64().is_some_and(|v| v >= 4096), "{r}");
        assert_eq!(s(r, "id").len(), 25, "{r}");
    }
    let row = network_row(&m, "appnet").unwrap();
    assert_eq!(s(&row, "id"), appnet, "create prints the id");
    assert_eq!(s(&row, "subnet"), "10.31.0.0/24");
    // Default subnets: consecutive /24s of 10.0.0.0/8, each with its own VNI.
    assert_eq!(
        s(&network_row(&m, "auto1").unwrap(), "subnet"),
        "10.0.0.0/24"
    );
    assert_eq!(
        s(&network_row(&m, "auto2").unwrap(), "subnet"),
        "10.0.1.0/24"
    );
    let vnis: BTreeSet<u64> = ls.iter().filter_map(|r| r["vni"].as_u64()).collect();
    assert_eq!(vnis.len(), 3, "VNIs are not unique: {ls:?}");

    // Inspect by name and by id prefix: the full object with its spec.
    let by_name = m.json(&["network", "inspect", "appnet"]);
    let by_prefix = m.json(&["network", "inspect", &appnet[..8]]);
    assert_eq!(by_name, by_prefix);
    let n = &by_name[0];
    assert_eq!(n["spec"]["name"], "appnet");
    assert_eq!(n["spec"]["attachable"], true);
    assert_eq!(n["spec"]["internal"], true);
    assert_eq!(n["spec"]["labels"]["team"], "blue");
    assert_eq!(n["spec"]["ipam"]["subnet"], "10.31.0.0/24");
    assert_eq!(n["allocation"]["gateway"], "10.31.0.254");
    assert_eq!(n["gateway"], "10.31.0.254");
    let both = m.json(&["network", "inspect", "auto1", "auto2"]);
    assert_eq!(both.as_array().map(Vec::len), Some(2));

    // The table has Docker's columns.
    let table = m.ok(&["network", "ls"]);
    assert!(
        table.contains("NETWORK ID") && table.contains("appnet"),
        "{table}"
    );

    // Removal, by name and by id; removed subnets and VNIs are handed out again, lowest
    // first.
    let lowest_vni = network_row(&m, "appnet").unwrap()["vni"].clone();
    m.ok(&["network", "rm", "auto1", &appnet]);
    assert_eq!(names_of(&m), ["auto2"]);
    m.ok(&["network", "create", "auto3"]);
    let auto3 = network_row(&m, "auto3").unwrap();
    assert_eq!(s(&auto3, "subnet"), "10.0.0.0/24");
    assert_eq!(auto3["vni"], lowest_vni);

    // Networks are in the replicated store: a restarted manager still has them.
    let before = networks_view(&m);
    let mut m = m;
    m.restart();
    wait_for(READY, || {
        let now = m.try_json(&["network", "ls"]).map(|_| networks_view(&m))?;
        if now == before {
            Ok(())
        } else {
            Err(format!("after a restart: {now:?}, before: {before:?}"))
        }
    });
}

fn names_of(m: &Daemon) -> Vec<String> {
    rows(m.json(&["network", "ls"]))
        .iter()
        .map(|r| s(r, "name").to_owned())
        .collect()
}

#[test]
fn bad_network_input_is_refused_and_changes_nothing() {
    let m = manager(25410);
    m.ok(&["network", "create", "--subnet", "10.31.0.0/24", "appnet"]);
    create_service(&m, &["--name", "web", "--network", "appnet"]);
    let nets = networks_view(&m);
    let services = service_names(&m);
    let mut checks = Checks::new();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "an overlapping subnet",
            &["network", "create", "--subnet", "10.31.0.128/25", "x"],
            &["overlaps", "appnet"],
        ),
        (
            "a subnet containing another",
            &["network", "create", "--subnet", "10.0.0.0/8", "x"],
            &["overlaps"],
        ),
        (
            "a malformed subnet",
            &["network", "create", "--subnet", "banana", "x"],
            &["banana"],
        ),
        (
            "a prefix longer than 32",
            &["network", "create", "--subnet", "10.40.0.0/33", "x"],
            &["/33"],
        ),
        (
            "a subnet with host bits set",
            &["network", "create", "--subnet", "10.40.0.1/24", "x"],
            &["10.40.0.0/24"],
        ),
        (
            "an IPv6 subnet",
            &["network", "create", "--subnet", "fd00::/64", "x"],
            &["IPv4"],
        ),
        (
            "a gateway outside the subnet",
            &[
                "network",
                "create",
                "--subnet",
                "10.40.0.0/24",
                "--gateway",
                "10.41.0.1",
                "x",
            ],
            &["gateway", "10.41.0.1"],
        ),
        (
            "the subnet's broadcast address as gateway",
            &[
                "network",
                "create",
                "--subnet",
                "10.40.0.0/24",
                "--gateway",
                "10.40.0.255",
                "x",
            ],
            &["gateway"],
        ),
        (
            "a malformed gateway",
            &[
                "network",
                "create",
                "--subnet",
                "10.40.0.0/24",
                "--gateway",
                "banana",
                "x",
            ],
            &["gateway"],
        ),
        (
            "a gateway without a subnet",
            &["network", "create", "--gateway", "10.40.0.1", "x"],
            &["subnet"],
        ),
        (
            "a name in use",
            &["network", "create", "appnet"],
            &["appnet", "already exists"],
        ),
        ("a bad name", &["network", "create", "bad name"], &["name"]),
        (
            "another driver",
            &["network", "create", "-d", "bridge", "x"],
            &["bridge"],
        ),
        (
            "removing a network a service uses",
            &["network", "rm", "appnet"],
            &["in use", "web"],
        ),
        (
            "removing a network that does not exist",
            &["network", "rm", "nope"],
            &["nope", "not found"],
        ),
        (
            "inspecting a network that does not exist",
            &["network", "inspect", "nope"],
            &["nope"],
        ),
        (
            "a service on a network that does not exist",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "api",
                "--network",
                "nope",
                "busybox",
            ],
            &["network nope not found"],
        ),
        (
            "a service on the same network twice",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "api",
                "--network",
                "appnet",
                "--network",
                "appnet",
                "busybox",
            ],
            &["more than once"],
        ),
        (
            "a --network without a name",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "api",
                "--network",
                "alias=x",
                "busybox",
            ],
            &["--network"],
        ),
        (
            "an unknown --endpoint-mode",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "api",
                "--endpoint-mode",
                "rr",
                "busybox",
            ],
            &["endpoint-mode"],
        ),
    ];
    for (what, args, expect) in cases {
        let out = m.run(args);
        checks.refused(what, &out, expect);
    }
    checks.that("networks unchanged", networks_view(&m) == nets, || {
        format!("before {nets:?}, after {:?}", networks_view(&m))
    });
    checks.that("services unchanged", service_names(&m) == services, || {
        format!("before {services:?}, after {:?}", service_names(&m))
    });
    checks.finish();
}

#[test]
fn services_get_vips_and_their_tasks_addresses() {
    let m = manager(25420);
    m.ok(&["network", "create", "--subnet", "10.31.0.0/24", "appnet"]);
    m.ok(&["network", "create", "backnet"]);
    let appnet_id = s(&network_row(&m, "appnet").unwrap(), "id").to_owned();

    // A VIP per network under the default endpoint mode; an address per task per network.
    create_service(
        &m,
        &["--name", "web", "--replicas", "3", "--network", "appnet"],
    );
    let web_vips = vips(&m, "web").unwrap();
    assert_eq!(web_vips.len(), 1, "{web_vips:?}");
    let (net, net_name, vip) = &web_vips[0];
    assert_eq!(
        (net.as_str(), net_name.as_str()),
        (appnet_id.as_str(), "appnet")
    );
    host_of("10.31.0.0/24", vip).unwrap();
    let web = m.json(&["service", "inspect", "web"]);
    assert_eq!(web[0]["spec"]["endpoint_mode"], "vip");
    assert_eq!(web[0]["spec"]["networks"][0]["target"], appnet_id.as_str());

    let addrs = task_addresses(&m, "web", 3, 1);
    let mut seen = BTreeSet::new();
    for a in addrs.iter().flatten() {
        host_of("10.31.0.0/24", a).unwrap();
        assert_ne!(a, vip, "a task has the VIP");
        assert_ne!(a, "10.31.0.1/24", "a task has the gateway");
        assert!(seen.insert(a.clone()), "{a} given twice: {addrs:?}");
    }

    // dnsrr: no VIP; two networks, one in the long form with an alias.
    create_service(
        &m,
        &[
            "--name",
            "rr",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "name=backnet,alias=db",
            "--network",
            "appnet",
        ],
    );
    assert_eq!(vips(&m, "rr").unwrap(), vec![]);
    let rr = m.json(&["service", "inspect", "rr"]);
    assert_eq!(rr[0]["spec"]["networks"][0]["aliases"][0], "db");
    let rr_addrs = task_addresses(&m, "rr", 1, 2);
    host_of("10.0.0.0/24", &rr_addrs[0][0]).unwrap();
    host_of("10.31.0.0/24", &rr_addrs[0][1]).unwrap();
    assert!(
        !seen.contains(&rr_addrs[0][1]),
        "{rr_addrs:?} reuses a web address"
    );

    // A second VIP service on appnet gets its own VIP.
    create_service(&m, &["--name", "api", "--network", "appnet"]);
    let api_vip = vips(&m, "api").unwrap()[0].2.clone();
    assert_ne!(&api_vip, vip);
    assert!(!seen.contains(&api_vip) && api_vip != rr_addrs[0][1]);

    // Scaling down releases the addresses of the tasks that go; scaling up reuses them,
    // and the VIP stays.
    m.ok(&["service", "scale", "--detach", "web=1"]);
    let one = task_addresses(&m, "web", 1, 1);
    wait_for(TASKS, || {
        let all = rows(m.try_json(&["service", "ps", "web"])?);
        let shown: Vec<&Value> = all
            .iter()
            .filter(|r| s(r, "desired_state") != "running")
            .filter(|r| r["addresses"].as_array().is_some_and(|a| !a.is_empty()))
            .collect();
        if shown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "tasks no longer wanted still show addresses: {shown:?}"
            ))
        }
    });
    m.ok(&["service", "scale", "--detach", "web=3"]);
    let again: BTreeSet<String> = task_addresses(&m, "web", 3, 1)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        again, seen,
        "scaling back up did not reuse the released addresses"
    );
    assert!(again.contains(&one[0][0]));
    assert_eq!(
        vips(&m, "web").unwrap(),
        web_vips,
        "the VIP changed on scaling"
    );

    // A restarted manager shows the same VIPs and addresses.
    let mut m = m;
    m.restart();
    wait_for(READY, || {
        let v = vips(&m, "web")?;
        if v == web_vips {
            Ok(())
        } else {
            Err(format!(
                "after a restart, web's VIPs are {v:?}, were {web_vips:?}"
            ))
        }
    });
    let after: BTreeSet<String> = task_addresses(&m, "web", 3, 1)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(after, seen);

    // Removing the services frees the networks at once, though their tasks may still be
    // on their way out.
    let refused = m.run(&["network", "rm", "appnet"]);
    assert!(!refused.status.success(), "appnet removed while in use");
    for svc in ["web", "rr", "api"] {
        m.ok(&["service", "rm", svc]);
    }
    m.ok(&["network", "rm", "appnet", "backnet"]);
    assert!(names_of(&m).is_empty());
}

/// Networks created at once through two managers (the follower forwards its writes to the
/// leader): allocations made from the same view collide in the store, and the loser
/// allocates again, so every network still gets its own subnet and VNI.
#[test]
fn concurrent_creates_through_two_managers_never_share_a_subnet() {
    let m1 = manager(25430);
    let m2 = Daemon::start("m2", 25431);
    m2.join(&m1.join_token("manager"), &m1);
    m1.wait_ready(2, READY);
    // m2 answers control commands once it is a manager.
    wait_for(READY, || m2.try_json(&["network", "ls"]).map(|_| ()));
    std::thread::scope(|scope| {
        for (d, prefix) in [(&m1, "a"), (&m2, "b")] {
            scope.spawn(move || {
                for i in 0..4 {
                    d.ok(&["network", "create", &format!("{prefix}{i}")]);
                }
            });
        }
    });
    let ls = rows(m1.json(&["network", "ls"]));
    assert_eq!(ls.len(), 8, "{ls:?}");
    let subnets: BTreeSet<&str> = ls.iter().map(|r| s(r, "subnet")).collect();
    let vnis: BTreeSet<u64> = ls.iter().filter_map(|r| r["vni"].as_u64()).collect();
    assert_eq!(subnets.len(), 8, "subnets shared: {ls:?}");
    assert_eq!(vnis.len(), 8, "VNIs shared: {ls:?}");
}
