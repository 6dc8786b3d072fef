//! Stack file benchmark (issue 7): how long `rswarm_stack` takes to load (read, parse,
//! interpolate, merge, validate) and convert a Compose file of 200 services, i.e. the part of
//! `rswarm stack deploy` and `rswarm stack config` that runs before the CLI talks to a
//! daemon. Prints each figure's median and p90 over the iterations, and the cost per service.
//!
//! ```sh
//! cargo build --release -p rswarm-tests --bin stack_bench
//! target/release/stack_bench [--services 200] [--iterations 50] [--warmup 5] [--keep]
//! ```
//!
//! The file is generated deterministically into a temp dir (removed at the end unless
//! `--keep`), with what real stacks use: YAML anchors and `<<` merge keys from `x-` blocks,
//! `${VAR}` / `${VAR:-default}` from the given environment and a `.env` file, and per service
//! an image, command, environment, labels, healthcheck, deploy (replicas, labels,
//! update/rollback config, restart policy, placement constraints and preferences, resource
//! limits and reservations), networks with aliases, volumes (named, bind, tmpfs), secrets,
//! and published ports on every fourth service. See docs/benchmarks.md for the figures.

use rswarm_stack::Env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
// Wall-clock timing is the point of a benchmark binary; the daemon's code takes time from a
// clock instead.
#[allow(clippy::disallowed_types)]
use std::time::Instant;

/// Secret files the services share, `api_key_0` .. `api_key_{SECRETS-1}`.
const SECRETS: usize = 8;
const TEAMS: usize = 12;
const NETWORKS: &[&str] = &["front", "back", "data", "monitoring"];

struct Args {
    services: usize,
    iterations: usize,
    warmup: usize,
    /// Keep the generated files and print where they are.
    keep: bool,
    /// Leave out the per-service anchors (`labels: &labels-svcNNN`, merged into
    /// `deploy.labels`), so that the file only has its four shared `x-` anchors.
    shared_anchors_only: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        services: 200,
        iterations: 50,
        warmup: 5,
        keep: false,
        shared_anchors_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!(
                "usage: stack_bench [--services N] [--iterations N] [--warmup N] [--keep] \
                 [--shared-anchors-only]"
            );
            std::process::exit(0);
        }
        if flag == "--keep" {
            a.keep = true;
            continue;
        }
        if flag == "--shared-anchors-only" {
            a.shared_anchors_only = true;
            continue;
        }
        let value: usize = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--services" => a.services = value.max(1),
            "--iterations" => a.iterations = value.max(1),
            "--warmup" => a.warmup = value,
            _ => anyhow::bail!("unknown option {flag}"),
        }
    }
    Ok(a)
}

/// The Compose file: shared `x-` blocks with anchors, then the services, then the top-level
/// networks, volumes and secrets they use.
fn compose_file(services: usize, label_anchors: bool) -> anyhow::Result<String> {
    let mut y = String::with_capacity(services * 2500);
    y.push_str(
        r#"version: "3.8"

x-common-env: &common-env
  LOG_LEVEL: ${LOG_LEVEL:-info}
  REGION: ${REGION}
  TRACING_ENDPOINT: http://collector:4317
  FEATURE_FLAGS: "search,checkout-v2,new-ui"

x-healthcheck: &healthcheck
  interval: 30s
  timeout: 5s
  retries: 3
  start_period: 20s

x-update: &update
  parallelism: 2
  delay: 10s
  failure_action: rollback
  monitor: 30s
  max_failure_ratio: 0.1
  order: start-first

x-deploy: &deploy
  restart_policy:
    condition: on-failure
    delay: 5s
    max_attempts: 3
    window: 2m
  update_config: *update
  rollback_config:
    parallelism: 1
    order: stop-first

services:
"#,
    );
    for i in 0..services {
        let name = format!("svc{i:03}");
        let team = i % TEAMS;
        let tier = ["frontend", "api", "worker", "batch"][i % 4];
        let upstream = format!("svc{:03}", (i + 1) % services);
        let replicas = 1 + i % 5;
        let cpus = ["0.25", "0.50", "1.0", "2"][i % 4];
        let memory = ["128M", "256M", "512M", "1G"][i % 4];
        let net_a = NETWORKS[i % NETWORKS.len()];
        let net_b = NETWORKS[(i + 1) % NETWORKS.len()];
        writeln!(
            y,
            r#"  {name}:
    image: ${{REGISTRY}}/team{team}/{name}:${{TAG:-1.0.0}}
    command: ["/app/server", "--listen", ":8000", "--name", "{name}", "--upstream", "http://{upstream}:8000"]
    environment:
      <<: *common-env
      SERVICE_NAME: {name}
      UPSTREAM_URL: http://{upstream}:8000
      DATABASE_URL: postgres://app@db{db}:5432/{name}?sslmode=disable
      CACHE_TTL: "{ttl}"
      WORKERS: {workers}
      GREETING: "hello from ${{REGION}}"
    labels:{labels_anchor}
      com.example.team: team{team}
      com.example.tier: {tier}
      com.example.service: {name}
      com.example.oncall: team{team}@example.com
    hostname: "{{{{.Service.Name}}}}-{{{{.Task.Slot}}}}"
    healthcheck:
      <<: *healthcheck
      test: ["CMD", "wget", "-qO-", "http://localhost:8000/healthz"]
    stop_grace_period: 20s
    volumes:
      - data-{name}:/var/lib/app
      - ./config/{name}:/etc/app:ro
      - type: tmpfs
        target: /tmp
        tmpfs:
          size: 67108864
    networks:
      {net_a}:
        aliases:
          - {name}.internal
          - {tier}-{i}
      {net_b}: null
    secrets:
      - db_password
      - source: api_key_{key}
        target: api_key
        uid: "1000"
        gid: "1000"
        mode: "0400"
    deploy:
      <<: *deploy
      replicas: {replicas}
      labels:{labels_merge}
        com.example.owner: team{team}
        com.example.cost-center: "cc-{cost}"
      placement:
        constraints:
          - node.role == worker
          - node.labels.zone != dmz
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
      resources:
        limits:
          cpus: "{cpus}"
          memory: {memory}
        reservations:
          cpus: "0.10"
          memory: 64M
    x-owner: team{team}"#,
            db = i % 7,
            ttl = 60 * (1 + i % 10),
            workers = 2 + i % 6,
            key = i % SECRETS,
            cost = 1000 + team,
            labels_anchor = if label_anchors {
                format!(" &labels-{name}")
            } else {
                String::new()
            },
            labels_merge = if label_anchors {
                format!("\n        <<: *labels-{name}")
            } else {
                String::new()
            },
        )?;
        if i % 4 == 0 {
            writeln!(
                y,
                r#"    ports:
      - "{published}:8000"
      - target: 9100
        published: {metrics}
        protocol: tcp
        mode: host"#,
                published = 20000 + i,
                metrics = 30000 + i,
            )?;
        }
    }
    y.push_str("\nnetworks:\n");
    for (n, net) in NETWORKS.iter().enumerate() {
        writeln!(
            y,
            "  {net}:\n    driver: overlay\n    attachable: {}\n    labels:\n      com.example.network: {net}",
            n == 0
        )?;
    }
    y.push_str("\nvolumes:\n");
    for i in 0..services {
        writeln!(
            y,
            "  data-svc{i:03}:\n    labels:\n      com.example.backup: \"{}\"",
            i % 2 == 0
        )?;
    }
    y.push_str("\nsecrets:\n  db_password:\n    file: ./secrets/db_password.txt\n");
    for k in 0..SECRETS {
        writeln!(y, "  api_key_{k}:\n    file: ./secrets/api_key_{k}.txt")?;
    }
    Ok(y)
}

/// Writes the stack file, its `.env` and its secret files into `dir`; returns the file.
fn write_stack(dir: &Path, services: usize, label_anchors: bool) -> anyhow::Result<PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::write(secrets.join("db_password.txt"), "s3cr3t\n")?;
    for k in 0..SECRETS {
        std::fs::write(
            secrets.join(format!("api_key_{k}.txt")),
            format!("key-{k}\n"),
        )?;
    }
    std::fs::write(dir.join(".env"), "TAG=2.3.1\nLOG_LEVEL=debug\n")?;
    let path = dir.join("stack.yml");
    std::fs::write(&path, compose_file(services, label_anchors)?)?;
    Ok(path)
}

/// Nearest-rank percentile (`p` in 0..=100) of the samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

struct Figure {
    name: &'static str,
    /// Milliseconds, one per iteration.
    ms: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::Builder::new()
        .prefix("rsw-stack-bench.")
        .tempdir()?;
    let path = write_stack(dir.path(), args.services, !args.shared_anchors_only)?;
    let bytes = std::fs::metadata(&path)?.len();
    let lines = std::fs::read_to_string(&path)?.lines().count();
    // The process's environment is not used: loading is hermetic, the bench too.
    let env: Env = [
        ("REGISTRY", "registry.example.com:5000"),
        ("REGION", "eu-west-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let files = [path.clone()];

    // One checked pass: the file loads without warnings and converts to every service.
    let loaded = rswarm_stack::load(&files, &env)?;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    let spec = rswarm_stack::convert("bench", &loaded.compose)?;
    anyhow::ensure!(
        spec.services.len() == args.services,
        "converted {} services, expected {}",
        spec.services.len(),
        args.services
    );
    let tasks: u64 = loaded
        .compose
        .services
        .values()
        .map(|s| s.deploy.replicas.unwrap_or(1))
        .sum();
    println!(
        "{}: {} services ({tasks} replicas), {} networks, {} volumes, {} secrets; \
         {bytes} bytes, {lines} lines",
        path.display(),
        spec.services.len(),
        spec.networks.len(),
        spec.volumes.len(),
        spec.secrets.len(),
    );
    println!(
        "{} warmup iterations, {} measured",
        args.warmup, args.iterations
    );

    let mut figures = [
        Figure {
            name: "load (read, parse, interpolate, validate)",
            ms: Vec::new(),
        },
        Figure {
            name: "convert",
            ms: Vec::new(),
        },
        Figure {
            name: "load + convert",
            ms: Vec::new(),
        },
        Figure {
            name: "to_yaml (stack config's output)",
            ms: Vec::new(),
        },
    ];
    for i in 0..args.warmup + args.iterations {
        let t0 = Instant::now();
        let loaded = rswarm_stack::load(&files, &env)?;
        let t1 = Instant::now();
        let spec = rswarm_stack::convert("bench", &loaded.compose)?;
        let t2 = Instant::now();
        let yaml = loaded.to_yaml()?;
        let t3 = Instant::now();
        std::hint::black_box((&spec, &yaml));
        if i < args.warmup {
            continue;
        }
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        figures[0].ms.push(ms(t0, t1));
        figures[1].ms.push(ms(t1, t2));
        figures[2].ms.push(ms(t0, t2));
        figures[3].ms.push(ms(t2, t3));
    }

    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>14}",
        "", "median ms", "p90 ms", "min ms", "µs/service"
    );
    for f in &mut figures {
        f.ms.sort_by(f64::total_cmp);
        let med = median(&f.ms);
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>14.1}",
            f.name,
            med,
            percentile(&f.ms, 90.0),
            f.ms[0],
            med * 1e3 / args.services as f64
        );
    }

    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
