//! Scheduler benchmark: placements per second of `rswarm_manager::scheduler::schedule` for
//! 100,000 pending tasks (100 services × 1,000 replicas, a third of them constrained, all
//! with small reservations) onto 5,000 simulated nodes. Prints each run and the median.
//!
//! ```sh
//! cargo build --release -p rswarm-tests --bin scheduler_bench
//! target/release/scheduler_bench [--nodes 5000] [--services 100] [--replicas 1000] [--runs 5]
//! target/release/scheduler_bench --running   # onto a cluster already running 100,000 tasks
//! ```
//!
//! The cluster is synthetic and deterministic (no randomness): nodes of 8–32 CPUs and
//! 16–64 GiB in 5 zones and 10 racks, half with `disk=ssd`; 2 % drained, 1 % down, 3 %
//! managers. See docs/benchmarks.md for the figures.

use rswarm_manager::scheduler::{schedule, ClusterSnapshot, Plan};
use rswarm_proto::model::{
    Node, NodeAvailability, NodeRole, NodeState, Resources, SpreadOver, Task, TaskState,
};
use std::collections::BTreeMap;
// Wall-clock timing is the point of a benchmark binary; the daemon's code takes time from a
// clock instead.
#[allow(clippy::disallowed_types)]
use std::time::Instant;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Args {
    nodes: usize,
    services: usize,
    replicas: usize,
    runs: usize,
    /// Start from a cluster already running one full batch of the same services.
    running: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: 5000,
        services: 100,
        replicas: 1000,
        runs: 5,
        running: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!(
                "usage: scheduler_bench [--nodes N] [--services N] [--replicas N] [--runs N] \
                 [--running]"
            );
            std::process::exit(0);
        }
        if flag == "--running" {
            a.running = true;
            continue;
        }
        let value: usize = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--nodes" => a.nodes = value,
            "--services" => a.services = value,
            "--replicas" => a.replicas = value,
            "--runs" => a.runs = value.max(1),
            _ => anyhow::bail!("unknown option {flag}"),
        }
    }
    Ok(a)
}

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node {
                id: format!("node{i:021}").as_str().into(),
                role: if i % 100 < 3 {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                },
                ..Default::default()
            };
            node.description.hostname = format!("host-{i}");
            node.description.os = "linux".into();
            node.description.arch = "x86_64".into();
            node.description.cpus = 8 << (i % 3); // 8, 16, 32
            node.description.memory_bytes = (16 + 16 * (i as u64 % 4)) * GIB;
            node.status.state = if i % 100 == 50 {
                NodeState::Down
            } else {
                NodeState::Ready
            };
            node.spec.availability = if i % 50 == 7 {
                NodeAvailability::Drain
            } else {
                NodeAvailability::Active
            };
            let labels = &mut node.spec.labels;
            labels.insert("zone".into(), format!("z{}", i % 5));
            labels.insert("rack".into(), format!("r{}", (i / 5) % 10));
            if i % 2 == 0 {
                labels.insert("disk".into(), "ssd".into());
            }
            node
        })
        .collect()
}

/// Service k's placement: a third constrained (zone, disk or role), a fifth spread over
/// zones, every seventh at most 2 per node.
fn pending(services: usize, replicas: usize) -> Vec<Task> {
    let mut out = Vec::with_capacity(services * replicas);
    for k in 0..services {
        let mut proto = Task {
            service_id: format!("svc{k:022}").as_str().into(),
            service_name: format!("svc{k}"),
            desired_state: TaskState::Running,
            ..Default::default()
        };
        proto.status.state = TaskState::Pending;
        proto.spec.resources.reservations = Resources {
            nano_cpus: 10_000_000 * (1 + k as u64 % 10), // 0.01–0.1 CPU
            memory_bytes: 16 * MIB * (1 + k as u64 % 4), // 16–64 MiB
        };
        let placement = &mut proto.spec.placement;
        placement.constraints = match k % 9 {
            0 => vec![format!("node.labels.zone==z{}", k % 5)],
            3 => vec!["node.labels.disk==ssd".into(), "node.role!=manager".into()],
            6 => vec![
                "node.labels.zone!=z0".into(),
                "node.platform.os==linux".into(),
            ],
            _ => Vec::new(),
        };
        if k % 5 == 1 {
            placement.preferences = vec![SpreadOver {
                descriptor: "node.labels.zone".into(),
            }];
        }
        if k % 7 == 2 {
            placement.max_replicas_per_node = 2;
        }
        for r in 0..replicas {
            let mut t = proto.clone();
            t.id = format!("task{k:06}{r:015}").as_str().into();
            t.slot = r as u64 + 1;
            out.push(t);
        }
    }
    out
}

/// The tasks of `plan` as running on their nodes, their IDs prefixed.
fn placed(pending: &[Task], plan: Plan, prefix: &str) -> Vec<Task> {
    let by_id: BTreeMap<_, _> = plan.assign.into_iter().collect();
    pending
        .iter()
        .filter_map(|t| {
            let node = by_id.get(&t.id)?;
            let mut t = t.clone();
            t.id = format!("{prefix}{}", t.id).as_str().into();
            t.node_id = Some(node.clone());
            t.status.state = TaskState::Running;
            Some(t)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let nodes = nodes(args.nodes);
    let pending = pending(args.services, args.replicas);
    let mut snap = ClusterSnapshot::from_state(&nodes, &[]);
    let mut running = Vec::new();
    if args.running {
        // Place one batch (untimed) and run it, so the measured batch lands on a cluster
        // that already has as many tasks of the same services.
        running = placed(&pending, schedule(&snap, &pending, u64::MAX), "running-");
        snap = ClusterSnapshot::from_state(&nodes, &running);
    }
    println!(
        "{} pending tasks ({} services x {}) onto {} nodes ({} tasks running), {} runs",
        pending.len(),
        args.services,
        args.replicas,
        nodes.len(),
        snap.nodes.iter().map(|n| n.total_tasks).sum::<u64>(),
        args.runs
    );

    let mut rates = Vec::new();
    let mut last = None;
    for run in 0..args.runs {
        let start = Instant::now();
        let plan = schedule(&snap, &pending, run as u64);
        let secs = start.elapsed().as_secs_f64();
        let rate = plan.assign.len() as f64 / secs;
        println!(
            "run {}: {:.1} ms, {} assigned, {} unschedulable, {:.0} placements/s",
            run + 1,
            secs * 1e3,
            plan.assign.len(),
            plan.unschedulable.len(),
            rate
        );
        rates.push(rate);
        last = Some(plan);
    }
    println!("median: {:.0} placements/s", median(rates));

    // The next tick's cost: rebuilding the snapshot with every placed task running.
    if let Some(plan) = last {
        let mut reasons: BTreeMap<(&str, &String), usize> = BTreeMap::new();
        for (t, why) in &plan.unschedulable {
            let svc = pending
                .iter()
                .find(|p| p.id == *t)
                .map_or("?", |p| &p.service_name);
            *reasons.entry((svc, why)).or_default() += 1;
        }
        for ((svc, why), n) in reasons {
            println!("unschedulable: {n} tasks of {svc}: {why}");
        }
        let mut all = placed(&pending, plan, "");
        all.append(&mut running);
        let start = Instant::now();
        let snap = ClusterSnapshot::from_state(&nodes, &all);
        let secs = start.elapsed().as_secs_f64();
        let total: u64 = snap.nodes.iter().map(|n| n.total_tasks).sum();
        println!(
            "ClusterSnapshot::from_state with {total} running tasks: {:.1} ms",
            secs * 1e3
        );
    }
    Ok(())
}
