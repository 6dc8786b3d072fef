//! `rswarm service ...`

use crate::client;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use rswarm_proto::model::reference;
use rswarm_proto::model::{
    container_opts, parse_duration, ContainerSpec, DeviceMapping, EndpointMode, HealthCheck, Mount,
    MountType, NetworkAttachmentConfig, Placement, PortConfig, Protocol, PublishMode,
    ResourceRequirements, Resources, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec,
    SpreadOver, TaskSpec, Ulimit, UpdateConfig, UpdateFailureAction, UpdateOrder, HOST_NETWORK,
};
use rswarm_proto::pb;
use rswarm_proto::pb::control_client::ControlClient;
use serde_json::{json, Value};
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// List services.
    Ls(FormatArg),
    /// List the tasks of services.
    Ps(PsArgs),
    /// Show services in full.
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Set the replica count of replicated services: NAME=N...
    Scale {
        #[arg(required = true)]
        scales: Vec<String>,
        /// Return at once instead of waiting for the tasks.
        #[arg(short, long)]
        detach: bool,
    },
    /// Show the logs of a service's tasks, from every node.
    Logs {
        service: String,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines per task to show from the end ("all" for everything).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Show each line's time.
        #[arg(short, long)]
        timestamps: bool,
        /// Leave out the task name and node prefix.
        #[arg(long)]
        no_task_ids: bool,
    },
    /// Change a service; its tasks are replaced by a rolling update.
    Update(Box<UpdateArgs>),
    /// Go back to the service's spec before its last update.
    Rollback {
        service: String,
        /// Return at once instead of waiting for the rollback.
        #[arg(short, long)]
        detach: bool,
    },
    /// Remove services.
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

#[derive(Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(required = true)]
    services: Vec<String>,
    /// desired-state=running|shutdown|accepted
    #[arg(short, long)]
    filter: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Service name (default: a generated one).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    replicas: Option<u64>,
    /// replicated or global.
    #[arg(long, default_value = "replicated", value_parser = ["replicated", "global"])]
    mode: String,
    /// KEY=VALUE; repeatable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// KEY=VALUE service label; repeatable.
    #[arg(long = "label")]
    label: Vec<String>,
    /// KEY=VALUE container label; repeatable.
    #[arg(long = "container-label")]
    container_label: Vec<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Overrides the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Placement constraint, e.g. node.role==worker; repeatable.
    #[arg(long = "constraint")]
    constraint: Vec<String>,
    /// spread=node.labels.KEY; repeatable.
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    #[arg(long = "replicas-max-per-node", default_value_t = 0)]
    replicas_max_per_node: u64,
    /// CPUs, e.g. 0.5.
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Bytes, e.g. 256M.
    #[arg(long)]
    limit_memory: Option<String>,
    #[arg(long)]
    reserve_cpu: Option<String>,
    #[arg(long)]
    reserve_memory: Option<String>,
    #[arg(long, default_value = "any", value_parser = ["none", "on-failure", "any"])]
    restart_condition: String,
    #[arg(long, default_value = "5s")]
    restart_delay: String,
    #[arg(long, default_value_t = 0)]
    restart_max_attempts: u64,
    #[arg(long, default_value = "0s")]
    restart_window: String,
    #[arg(long)]
    stop_grace_period: Option<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    /// Command run to check health (through a shell, as CMD-SHELL).
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long)]
    health_interval: Option<String>,
    #[arg(long)]
    health_timeout: Option<String>,
    #[arg(long)]
    health_retries: Option<u32>,
    #[arg(long)]
    health_start_period: Option<String>,
    /// Disable the image's health check.
    #[arg(long)]
    no_healthcheck: bool,
    /// type=bind|volume|tmpfs,source=...,target=...[,readonly]; repeatable.
    #[arg(long = "mount")]
    mount: Vec<String>,
    #[command(flatten)]
    opts: ContainerOptsArgs,
    /// A secret to mount: NAME, or source=NAME[,target=T][,uid=U][,gid=G][,mode=0400];
    /// at /run/secrets/NAME by default; repeatable.
    #[arg(long = "secret")]
    secret: Vec<String>,
    /// A config to mount, as --secret; at /NAME by default; repeatable.
    #[arg(long = "config")]
    config: Vec<String>,
    /// A network to join: NAME, or name=NAME[,alias=ALIAS...]; repeatable.
    #[arg(long = "network")]
    network: Vec<String>,
    /// How the service is reached on its networks: a virtual IP, or DNS round robin.
    #[arg(long, default_value = "vip", value_parser = ["vip", "dnsrr"])]
    endpoint_mode: String,
    /// Publish a port: PUBLISHED:TARGET[/PROTO], or
    /// [mode=host|ingress,]published=P,target=T[,protocol=tcp|udp]; repeatable.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    #[command(flatten)]
    update: UpdateFlags,
    /// Return at once instead of waiting for the tasks to run.
    #[arg(short, long)]
    detach: bool,
    /// Print the service id only.
    #[arg(short, long)]
    quiet: bool,
    /// Store the image as given, without asking the registry for its digest (by default the
    /// manager pins it, so that every node runs the same version).
    #[arg(long)]
    no_resolve_image: bool,
    image: String,
    /// The command and its arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Capabilities, read-only root, sysctls, ulimits and devices on `service create`.
#[derive(Args, Default)]
pub struct ContainerOptsArgs {
    /// Add a Linux capability (NET_ADMIN, CAP_SYS_TIME, ALL); repeatable.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL); repeatable.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Run an init (tini) as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// A namespaced kernel parameter, KEY=VALUE (net.*, kernel.shm*, ...); repeatable.
    #[arg(long = "sysctl")]
    sysctl: Vec<String>,
    /// A resource limit, NAME=SOFT[:HARD] (nofile, nproc, core, memlock, stack, ...);
    /// repeatable.
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    /// A host device: /dev/x[:/dev/y][:rwm]; repeatable.
    #[arg(long = "device")]
    device: Vec<String>,
}

fn parse_sysctls(
    flag: &'static str,
    items: &[String],
) -> Result<std::collections::BTreeMap<String, String>, FlagError> {
    items
        .iter()
        .map(|v| container_opts::parse_sysctl(v).map_err(|why| flag_err(flag, v, &why)))
        .collect()
}

fn parse_ulimit(flag: &'static str, v: &str) -> Result<Ulimit, FlagError> {
    Ulimit::parse(v).map_err(|why| flag_err(flag, v, &why))
}

fn parse_device(flag: &'static str, v: &str) -> Result<DeviceMapping, FlagError> {
    DeviceMapping::parse(v).map_err(|why| flag_err(flag, v, &why))
}

/// Normalises names as Docker's CLI does; the first unknown one is the error.
fn cap_lists(
    add: &[String],
    drop: &[String],
    f: impl Fn(&[String], &[String]) -> Result<(Vec<String>, Vec<String>), String>,
) -> Result<(Vec<String>, Vec<String>), FlagError> {
    for (flag, list) in [("--cap-add", add), ("--cap-drop", drop)] {
        for c in list {
            container_opts::normalize_capability(c).map_err(|why| flag_err(flag, c, &why))?;
        }
    }
    f(add, drop).map_err(|why| flag_err("--cap-add", &add.join(","), &why))
}

impl ContainerOptsArgs {
    fn apply(&self, c: &mut ContainerSpec) -> Result<(), FlagError> {
        (c.capability_add, c.capability_drop) =
            cap_lists(&self.cap_add, &self.cap_drop, |a, d| {
                container_opts::effective_cap_add_drop(a, d)
            })?;
        c.read_only = self.read_only;
        c.init = self.init;
        c.sysctls = parse_sysctls("--sysctl", &self.sysctl)?;
        c.ulimits = Vec::new();
        for v in &self.ulimit {
            let u = parse_ulimit("--ulimit", v)?;
            // As Docker's UlimitOpt: the last one of a name wins.
            c.ulimits.retain(|o| o.name != u.name);
            c.ulimits.push(u);
        }
        c.devices = self
            .device
            .iter()
            .map(|v| parse_device("--device", v))
            .collect::<Result<_, _>>()?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct FlagError {
    flag: &'static str,
    value: String,
    reason: String,
}

fn flag_err(flag: &'static str, value: &str, reason: &str) -> FlagError {
    FlagError {
        flag,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn duration(flag: &'static str, v: &str) -> Result<Duration, FlagError> {
    parse_duration(v).map_err(|_| flag_err(flag, v, "expected a duration such as 500ms, 2s, 1m30s"))
}

/// CPUs as Docker writes them (`0.5`, `2`) in billionths.
pub fn parse_cpus(flag: &'static str, v: &str) -> Result<u64, FlagError> {
    let f: f64 = v
        .trim()
        .parse()
        .map_err(|_| flag_err(flag, v, "expected a number of CPUs such as 0.5"))?;
    if !f.is_finite() || !(0.0..=1e6).contains(&f) {
        return Err(flag_err(flag, v, "expected a number of CPUs such as 0.5"));
    }
    Ok((f * 1e9).round() as u64)
}

/// Bytes as Docker writes them: `512`, `64k`, `256m`, `1g` (binary units; `b` optional).
pub fn parse_bytes(flag: &'static str, v: &str) -> Result<u64, FlagError> {
    let t = v.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| flag_err(flag, v, "expected a size such as 256M or 1G"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(flag_err(flag, v, "expected a size such as 256M or 1G"));
    }
    Ok((n * mult as f64) as u64)
}

fn parse_mount(v: &str) -> Result<Mount, FlagError> {
    let mut kind = MountType::Volume;
    let (mut source, mut target, mut read_only, mut size) =
        (String::new(), String::new(), false, 0);
    for part in v.split(',') {
        let (k, val) = part.split_once('=').unwrap_or((part, "true"));
        match k.trim() {
            "type" => {
                kind = match val {
                    "bind" => MountType::Bind,
                    "volume" => MountType::Volume,
                    "tmpfs" => MountType::Tmpfs,
                    _ => return Err(flag_err("--mount", v, "type must be bind, volume or tmpfs")),
                }
            }
            "source" | "src" => source = val.to_owned(),
            "target" | "destination" | "dst" => target = val.to_owned(),
            "readonly" | "ro" => read_only = val != "false" && val != "0",
            "tmpfs-size" => size = parse_bytes("--mount", val)?,
            _ => {
                return Err(flag_err(
                    "--mount",
                    v,
                    "unknown key (expected type, source, target, readonly, tmpfs-size)",
                ))
            }
        }
    }
    if target.is_empty() {
        return Err(flag_err("--mount", v, "target is required"));
    }
    Ok(Mount {
        kind,
        source,
        target,
        read_only,
        tmpfs_size: size,
    })
}

/// `--network NAME` or `--network name=NAME,alias=A,...`.
/// `--publish`: Docker's short form `PUBLISHED:TARGET[/PROTO]` (or `TARGET[/PROTO]`, the
/// managers choosing the published port) or the long form `key=value,...`.
pub fn parse_publish(v: &str) -> Result<PortConfig, FlagError> {
    const EXPECTED: &str =
        "expected PUBLISHED:TARGET[/PROTO] or [mode=host,]published=P,target=T[,protocol=udp]";
    let bad = |why: &str| flag_err("--publish", v, why);
    let num = |s: &str, what: &str| -> Result<u16, FlagError> {
        match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(&format!("{what} {s:?} is not a port (1-65535)"))),
        }
    };
    let proto = |s: &str| Protocol::parse(s).ok_or_else(|| bad("protocol must be tcp or udp"));
    let mut p = PortConfig::default();
    if v.contains('=') {
        let mut target = None;
        for part in v.split(',') {
            match part.split_once('=') {
                Some(("mode", m)) => {
                    p.mode =
                        PublishMode::parse(m).ok_or_else(|| bad("mode must be ingress or host"))?
                }
                Some(("published", n)) => p.published = num(n, "published")?,
                Some(("target", n)) => target = Some(num(n, "target")?),
                Some(("protocol", s)) => p.protocol = proto(s)?,
                _ => return Err(bad(EXPECTED)),
            }
        }
        p.target = target.ok_or_else(|| bad("target is required"))?;
    } else {
        let (ports, pr) = v.split_once('/').unwrap_or((v, "tcp"));
        p.protocol = proto(pr)?;
        match ports.split_once(':') {
            Some((published, target)) => {
                p.published = num(published, "published")?;
                p.target = num(target, "target")?;
            }
            None if !ports.is_empty() => p.target = num(ports, "target")?,
            None => return Err(bad(EXPECTED)),
        }
    }
    if p.mode == PublishMode::Host && p.published == 0 {
        return Err(bad("a host-mode port needs published=P"));
    }
    Ok(p)
}

fn parse_network(v: &str) -> Result<NetworkAttachmentConfig, FlagError> {
    if !v.contains('=') {
        if v.trim().is_empty() || v.contains(',') {
            return Err(flag_err(
                "--network",
                v,
                "expected NAME or name=NAME[,alias=ALIAS]",
            ));
        }
        return Ok(NetworkAttachmentConfig {
            target: v.to_owned(),
            aliases: Vec::new(),
        });
    }
    let mut out = NetworkAttachmentConfig::default();
    for part in v.split(',') {
        match part.split_once('=') {
            Some(("name" | "target", n)) if !n.is_empty() => out.target = n.to_owned(),
            Some(("alias", a)) if !a.is_empty() => out.aliases.push(a.to_owned()),
            _ => {
                return Err(flag_err(
                    "--network",
                    v,
                    "expected NAME or name=NAME[,alias=ALIAS]",
                ))
            }
        }
    }
    if out.target.is_empty() {
        return Err(flag_err("--network", v, "name is required"));
    }
    Ok(out)
}

/// Whether `--network` asks for the node's network (`host`), refusing what cannot go with
/// it: Docker's containers on the host network join no other, and the service's ports
/// are bound on the node itself, so there is nothing to publish.
fn host_network_from(
    networks: &[NetworkAttachmentConfig],
    publishes: bool,
) -> Result<bool, FlagError> {
    let Some(host) = networks.iter().find(|n| n.target == HOST_NETWORK) else {
        return Ok(false);
    };
    if !host.aliases.is_empty() {
        return Err(flag_err(
            "--network",
            HOST_NETWORK,
            "the host network takes no aliases (they are for overlay networks)",
        ));
    }
    if networks.len() > 1 {
        return Err(flag_err(
            "--network",
            HOST_NETWORK,
            "a service on the host network cannot join other networks",
        ));
    }
    if publishes {
        return Err(flag_err(
            "--network",
            HOST_NETWORK,
            "a service on the host network publishes no ports: it binds them on the node itself",
        ));
    }
    Ok(true)
}

fn key_values(
    flag: &'static str,
    items: &[String],
) -> Result<std::collections::BTreeMap<String, String>, FlagError> {
    let mut out = std::collections::BTreeMap::new();
    for l in items {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(flag_err(flag, l, "expected KEY=VALUE"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The spec the flags describe. Bad values fail here, before anything is sent.
pub fn spec_from_args(a: &CreateArgs) -> Result<ServiceSpec, FlagError> {
    let mode = match a.mode.as_str() {
        "global" => {
            if a.replicas.is_some() {
                return Err(flag_err(
                    "--replicas",
                    &a.replicas.unwrap_or(0).to_string(),
                    "a global service has no replica count",
                ));
            }
            ServiceMode::Global
        }
        _ => ServiceMode::Replicated {
            replicas: a.replicas.unwrap_or(1),
        },
    };
    let healthcheck = if a.no_healthcheck {
        Some(HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    } else if let Some(cmd) = &a.health_cmd {
        let d = HealthCheck::default();
        Some(HealthCheck {
            test: vec!["CMD-SHELL".into(), cmd.clone()],
            interval: a
                .health_interval
                .as_deref()
                .map(|v| duration("--health-interval", v))
                .transpose()?
                .unwrap_or(d.interval),
            timeout: a
                .health_timeout
                .as_deref()
                .map(|v| duration("--health-timeout", v))
                .transpose()?
                .unwrap_or(d.timeout),
            start_period: a
                .health_start_period
                .as_deref()
                .map(|v| duration("--health-start-period", v))
                .transpose()?
                .unwrap_or(d.start_period),
            retries: a.health_retries.unwrap_or(d.retries),
        })
    } else {
        None
    };
    let mut container = ContainerSpec {
        image: a.image.clone(),
        command: a
            .entrypoint
            .as_ref()
            .map(|e| vec![e.clone()])
            .unwrap_or_default(),
        args: a.args.clone(),
        env: a.env.clone(),
        dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        labels: key_values("--container-label", &a.container_label)?,
        mounts: a
            .mount
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<_, _>>()?,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_grace_period: a
            .stop_grace_period
            .as_deref()
            .map(|v| duration("--stop-grace-period", v))
            .transpose()?,
        healthcheck,
        secrets: a
            .secret
            .iter()
            .map(|v| {
                crate::commands::secret::parse_file_ref(v)
                    .map_err(|why| flag_err("--secret", v, &why))
            })
            .collect::<Result<_, _>>()?,
        configs: a
            .config
            .iter()
            .map(|v| {
                crate::commands::secret::parse_file_ref(v)
                    .map_err(|why| flag_err("--config", v, &why))
            })
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    a.opts.apply(&mut container)?;
    let res = |flag_cpu: &'static str,
               cpu: &Option<String>,
               flag_mem: &'static str,
               mem: &Option<String>|
     -> Result<Resources, FlagError> {
        Ok(Resources {
            nano_cpus: cpu
                .as_deref()
                .map(|v| parse_cpus(flag_cpu, v))
                .transpose()?
                .unwrap_or(0),
            memory_bytes: mem
                .as_deref()
                .map(|v| parse_bytes(flag_mem, v))
                .transpose()?
                .unwrap_or(0),
        })
    };
    let mut preferences = Vec::new();
    for p in &a.placement_pref {
        let descriptor = p
            .strip_prefix("spread=")
            .ok_or_else(|| flag_err("--placement-pref", p, "expected spread=node.labels.KEY"))?;
        preferences.push(SpreadOver {
            descriptor: descriptor.to_owned(),
        });
    }
    let networks = a
        .network
        .iter()
        .map(|n| parse_network(n))
        .collect::<Result<Vec<_>, _>>()?;
    let host_network = host_network_from(&networks, !a.publish.is_empty())?;
    Ok(ServiceSpec {
        name: a.name.clone().unwrap_or_else(generated_name),
        labels: key_values("--label", &a.label)?,
        task: TaskSpec {
            container,
            resources: ResourceRequirements {
                limits: res(
                    "--limit-cpu",
                    &a.limit_cpu,
                    "--limit-memory",
                    &a.limit_memory,
                )?,
                reservations: res(
                    "--reserve-cpu",
                    &a.reserve_cpu,
                    "--reserve-memory",
                    &a.reserve_memory,
                )?,
            },
            restart: RestartPolicy {
                condition: match a.restart_condition.as_str() {
                    "none" => RestartCondition::None,
                    "on-failure" => RestartCondition::OnFailure,
                    _ => RestartCondition::Any,
                },
                delay: duration("--restart-delay", &a.restart_delay)?,
                max_attempts: a.restart_max_attempts,
                window: duration("--restart-window", &a.restart_window)?,
            },
            placement: Placement {
                constraints: a.constraint.clone(),
                preferences,
                max_replicas_per_node: a.replicas_max_per_node,
            },
            force_update: 0,
            host_network,
        },
        mode,
        // `host` is not a network object: it becomes `host_network` instead.
        networks: if host_network { Vec::new() } else { networks },
        endpoint_mode: EndpointMode::parse(&a.endpoint_mode).unwrap_or_default(),
        ports: a
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<_, _>>()?,
        update_config: a.update.apply(UpdateConfig::default())?,
        rollback_config: UpdateConfig::default(),
    })
}

/// The rolling-update flags of `service create` and `service update`.
#[derive(Args, Default)]
pub struct UpdateFlags {
    /// Tasks updated at once (0: all at once).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Wait between batches.
    #[arg(long)]
    update_delay: Option<String>,
    #[arg(long, value_parser = ["pause", "continue", "rollback"])]
    update_failure_action: Option<String>,
    /// How long a new task is watched for failure.
    #[arg(long)]
    update_monitor: Option<String>,
    /// Failures tolerated, as a fraction (0 to 1).
    #[arg(long)]
    update_max_failure_ratio: Option<f64>,
    #[arg(long, value_parser = ["stop-first", "start-first"])]
    update_order: Option<String>,
}

impl UpdateFlags {
    fn apply(&self, mut cfg: UpdateConfig) -> Result<UpdateConfig, FlagError> {
        if let Some(p) = self.update_parallelism {
            cfg.parallelism = p;
        }
        if let Some(d) = &self.update_delay {
            cfg.delay = duration("--update-delay", d)?;
        }
        if let Some(m) = &self.update_monitor {
            cfg.monitor = duration("--update-monitor", m)?;
        }
        if let Some(r) = self.update_max_failure_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(flag_err(
                    "--update-max-failure-ratio",
                    &r.to_string(),
                    "expected a number from 0 to 1",
                ));
            }
            cfg.max_failure_ratio_permille = (r * 1000.0).round() as u32;
        }
        match self.update_failure_action.as_deref() {
            Some("continue") => cfg.failure_action = UpdateFailureAction::Continue,
            Some("rollback") => cfg.failure_action = UpdateFailureAction::Rollback,
            Some(_) => cfg.failure_action = UpdateFailureAction::Pause,
            None => {}
        }
        match self.update_order.as_deref() {
            Some("start-first") => cfg.order = UpdateOrder::StartFirst,
            Some(_) => cfg.order = UpdateOrder::StopFirst,
            None => {}
        }
        Ok(cfg)
    }
}

#[derive(Args)]
pub struct UpdateArgs {
    service: String,
    /// A new image.
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    replicas: Option<u64>,
    /// Add or change an environment variable (KEY=VALUE); repeatable.
    #[arg(long = "env-add")]
    env_add: Vec<String>,
    /// Remove an environment variable by key; repeatable.
    #[arg(long = "env-rm")]
    env_rm: Vec<String>,
    /// Add or change a service label; repeatable.
    #[arg(long = "label-add")]
    label_add: Vec<String>,
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    #[arg(long = "constraint-add")]
    constraint_add: Vec<String>,
    #[arg(long = "constraint-rm")]
    constraint_rm: Vec<String>,
    /// The command's arguments, whitespace separated (replace the current ones).
    #[arg(long)]
    args: Option<String>,
    #[arg(long)]
    stop_grace_period: Option<String>,
    /// Add a secret, as `create --secret`; repeatable.
    #[arg(long = "secret-add")]
    secret_add: Vec<String>,
    /// Remove a secret by name; repeatable.
    #[arg(long = "secret-rm")]
    secret_rm: Vec<String>,
    /// Add a config, as `create --config`; repeatable.
    #[arg(long = "config-add")]
    config_add: Vec<String>,
    /// Remove a config by name; repeatable.
    #[arg(long = "config-rm")]
    config_rm: Vec<String>,
    /// Publish a port, as `create --publish` (replacing one with the same target and
    /// protocol); repeatable.
    #[arg(long = "publish-add")]
    publish_add: Vec<String>,
    /// Stop publishing a port: TARGET[/PROTO]; repeatable.
    #[arg(long = "publish-rm")]
    publish_rm: Vec<String>,
    /// Add a Linux capability (dropping it from the dropped ones); repeatable.
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (removing it from the added ones); repeatable.
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Mount the root filesystem read-only (--read-only=false: writable again).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    read_only: Option<bool>,
    /// Run an init (tini) as PID 1 (--init=false: the command is PID 1 again).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    init: Option<bool>,
    /// Add or change a sysctl, KEY=VALUE; repeatable.
    #[arg(long = "sysctl-add")]
    sysctl_add: Vec<String>,
    /// Remove a sysctl by key; repeatable.
    #[arg(long = "sysctl-rm")]
    sysctl_rm: Vec<String>,
    /// Add or change a ulimit, NAME=SOFT[:HARD]; repeatable.
    #[arg(long = "ulimit-add")]
    ulimit_add: Vec<String>,
    /// Remove a ulimit by name; repeatable.
    #[arg(long = "ulimit-rm")]
    ulimit_rm: Vec<String>,
    /// Add a device, as `create --device`; repeatable.
    #[arg(long = "device-add")]
    device_add: Vec<String>,
    /// Remove a device by its path in the container (or on the host); repeatable.
    #[arg(long = "device-rm")]
    device_rm: Vec<String>,
    /// Replace the tasks even if nothing changed (and resolve the image's tag again).
    #[arg(long)]
    force: bool,
    /// With --image or --force: store the image as given, without asking the registry for
    /// its digest.
    #[arg(long)]
    no_resolve_image: bool,
    #[command(flatten)]
    update: UpdateFlags,
    /// Return at once instead of waiting for the update.
    #[arg(short, long)]
    detach: bool,
}

impl UpdateArgs {
    /// The service's spec with the flags' changes.
    fn apply(&self, mut spec: ServiceSpec) -> Result<ServiceSpec, FlagError> {
        let c = &mut spec.task.container;
        if let Some(i) = &self.image {
            c.image.clone_from(i);
        }
        for kv in &self.env_add {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            if key.is_empty() {
                return Err(flag_err("--env-add", kv, "expected KEY=VALUE"));
            }
            c.env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            c.env.push(kv.clone());
        }
        for key in &self.env_rm {
            c.env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        }
        if let Some(a) = &self.args {
            c.args = a.split_whitespace().map(str::to_owned).collect();
        }
        if let Some(g) = &self.stop_grace_period {
            c.stop_grace_period = Some(duration("--stop-grace-period", g)?);
        }
        if !self.cap_add.is_empty() || !self.cap_drop.is_empty() {
            let (cur_add, cur_drop) = (c.capability_add.clone(), c.capability_drop.clone());
            (c.capability_add, c.capability_drop) =
                cap_lists(&self.cap_add, &self.cap_drop, |a, d| {
                    container_opts::update_capabilities(&cur_add, &cur_drop, a, d)
                })?;
        }
        if let Some(ro) = self.read_only {
            c.read_only = ro;
        }
        if let Some(init) = self.init {
            c.init = init;
        }
        for k in &self.sysctl_rm {
            c.sysctls.remove(k);
        }
        c.sysctls
            .extend(parse_sysctls("--sysctl-add", &self.sysctl_add)?);
        c.ulimits.retain(|u| !self.ulimit_rm.contains(&u.name));
        for v in &self.ulimit_add {
            let u = parse_ulimit("--ulimit-add", v)?;
            c.ulimits.retain(|o| o.name != u.name);
            c.ulimits.push(u);
        }
        c.devices.retain(|d| {
            !self.device_rm.contains(&d.path_in_container)
                && !self.device_rm.contains(&d.path_on_host)
        });
        for v in &self.device_add {
            let d = parse_device("--device-add", v)?;
            c.devices
                .retain(|o| o.path_in_container != d.path_in_container);
            c.devices.push(d);
        }
        for v in &self.publish_rm {
            let (port, proto) = v.split_once('/').unwrap_or((v.as_str(), "tcp"));
            let (Ok(target), Some(proto)) = (port.parse::<u16>(), Protocol::parse(proto)) else {
                return Err(flag_err("--publish-rm", v, "expected TARGET[/tcp|udp]"));
            };
            spec.ports
                .retain(|p| !(p.target == target && p.protocol == proto));
        }
        for v in &self.publish_add {
            if spec.task.host_network {
                return Err(flag_err(
                    "--publish-add",
                    v,
                    "a service on the host network publishes no ports: it binds them on the node itself",
                ));
            }
            let p = parse_publish(v)?;
            spec.ports
                .retain(|o| !(o.target == p.target && o.protocol == p.protocol));
            spec.ports.push(p);
        }
        for (k, v) in key_values("--label-add", &self.label_add)? {
            spec.labels.insert(k, v);
        }
        for k in &self.label_rm {
            spec.labels.remove(k);
        }
        for (flag, refs, rm, add) in [
            (
                "--secret-add",
                &mut spec.task.container.secrets,
                &self.secret_rm,
                &self.secret_add,
            ),
            (
                "--config-add",
                &mut spec.task.container.configs,
                &self.config_rm,
                &self.config_add,
            ),
        ] {
            refs.retain(|r| !rm.contains(&r.source_name) && !rm.contains(&r.source_id));
            for v in add {
                let r = crate::commands::secret::parse_file_ref(v)
                    .map_err(|why| flag_err(flag, v, &why))?;
                refs.retain(|o| o.source_name != r.source_name);
                refs.push(r);
            }
        }
        let p = &mut spec.task.placement;
        p.constraints.retain(|c| !self.constraint_rm.contains(c));
        for c in &self.constraint_add {
            if !p.constraints.contains(c) {
                p.constraints.push(c.clone());
            }
        }
        if let Some(n) = self.replicas {
            match spec.mode {
                ServiceMode::Replicated { .. } => {
                    spec.mode = ServiceMode::Replicated { replicas: n }
                }
                ServiceMode::Global => {
                    return Err(flag_err(
                        "--replicas",
                        &n.to_string(),
                        "a global service has no replica count",
                    ))
                }
            }
        }
        if self.force {
            spec.task.force_update += 1;
        }
        spec.update_config = self.update.apply(spec.update_config.clone())?;
        Ok(spec)
    }

    /// Whether the manager is to resolve the image to a digest again: with `--image` or
    /// `--force`, unless `--no-resolve-image` (as Docker's). Other updates keep the pinned
    /// image as it is. For `--force` alone the current tag goes back unpinned, so the
    /// manager can find where it points now.
    fn resolve_image(&self, spec: &mut ServiceSpec) -> bool {
        if self.no_resolve_image || (self.image.is_none() && !self.force) {
            return false;
        }
        if self.image.is_none() {
            let c = &mut spec.task.container;
            c.image = reference::without_digest(&c.image).to_owned();
        }
        true
    }
}

/// Prints the manager's warnings (an image it could not pin, ...) on stderr, as Docker does.
pub fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("{w}");
    }
}

/// Docker names unnamed services adjective_name; ours are `svc-` and six base-36 characters.
fn generated_name() -> String {
    let id = rswarm_manager::ids::random_id();
    format!("svc-{}", &id[..6])
}

fn mode_value(spec: &pb::ServiceSpec) -> Value {
    if spec.mode == "global" {
        json!({ "global": {} })
    } else {
        json!({ "replicated": { "replicas": spec.replicas } })
    }
}

pub fn ls_row(s: &pb::Service) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    let image = spec
        .task
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .map(|c| reference::without_digest(&c.image).to_owned())
        .unwrap_or_default();
    json!({
        "id": s.id,
        "name": spec.name,
        "mode": if spec.mode.is_empty() { "replicated".to_owned() } else { spec.mode.clone() },
        "replicas_desired": s.replicas_desired,
        "replicas_running": s.replicas_running,
        "image": image,
        "ports": s.endpoint.as_ref().map(|e| e.ports.iter().map(port_json).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// `service ls`'s PORTS, as Docker writes them: `*:8080->80/tcp`, host-mode ones
/// with `(host)`.
fn ports_column(s: &pb::Service) -> String {
    s.endpoint
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .map(|p| {
                    let proto = if p.protocol.is_empty() {
                        "tcp"
                    } else {
                        &p.protocol
                    };
                    let host = if p.mode == "host" { " (host)" } else { "" };
                    format!("*:{}->{}/{proto}{host}", p.published, p.target)
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A published port as `ls` and `inspect` show it (DESIGN.md).
fn port_json(p: &pb::PortConfig) -> Value {
    json!({
        "published": p.published,
        "target": p.target,
        "protocol": if p.protocol.is_empty() { "tcp" } else { p.protocol.as_str() },
        "mode": if p.mode.is_empty() { "ingress" } else { p.mode.as_str() },
    })
}

fn ms_str(ms: u64) -> String {
    rswarm_proto::model::format_duration(Duration::from_millis(ms))
}

pub fn inspect_value(s: &pb::Service) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    let meta = s.meta.unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let c = task.container.clone().unwrap_or_default();
    let res = task.resources.unwrap_or_default();
    let r = task.restart.clone().unwrap_or_default();
    let p = task.placement.clone().unwrap_or_default();
    let labels: std::collections::BTreeMap<_, _> = spec.labels.clone().into_iter().collect();
    json!({
        "id": s.id,
        "version": meta.version,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
        "spec": {
            "name": spec.name,
            "labels": labels,
            "mode": mode_value(&spec),
            "networks": spec.networks.iter().map(|n| json!({"target": n.target, "aliases": n.aliases})).collect::<Vec<_>>(),
            "host_network": task.host_network,
            "endpoint_mode": if spec.endpoint_mode.is_empty() { "vip" } else { spec.endpoint_mode.as_str() },
            "ports": spec.ports.iter().map(port_json).collect::<Vec<_>>(),
            "task_template": {
                "container_spec": {
                    "image": c.image, "command": c.command, "args": c.args, "env": c.env,
                    "dir": c.dir, "user": c.user, "hostname": c.hostname,
                    "mounts": c.mounts.iter().map(|m| json!({"type": m.r#type, "source": m.source, "target": m.target, "read_only": m.read_only})).collect::<Vec<_>>(),
                    "secrets": c.secrets.iter().map(crate::commands::secret::file_ref_json).collect::<Vec<_>>(),
                    "configs": c.configs.iter().map(crate::commands::secret::file_ref_json).collect::<Vec<_>>(),
                    "stop_signal": c.stop_signal,
                    "stop_grace_period": c.stop_grace_period_ms.map(ms_str),
                    "capability_add": c.capability_add,
                    "capability_drop": c.capability_drop,
                    "read_only": c.read_only,
                    "init": c.init,
                    "sysctls": c.sysctls.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "ulimits": c.ulimits.iter().map(|u| json!({"name": u.name, "soft": u.soft, "hard": u.hard})).collect::<Vec<_>>(),
                    "devices": c.devices.iter().map(|d| json!({
                        "path_on_host": d.path_on_host, "path_in_container": d.path_in_container,
                        "permissions": d.permissions,
                    })).collect::<Vec<_>>(),
                    "healthcheck": c.healthcheck.as_ref().map(|h| json!({
                        "test": h.test, "interval": ms_str(h.interval_ms), "timeout": ms_str(h.timeout_ms),
                        "start_period": ms_str(h.start_period_ms), "retries": h.retries,
                    })),
                },
                "resources": {
                    "limits": res.limits.map(|l| json!({"nano_cpus": l.nano_cpus, "memory_bytes": l.memory_bytes})),
                    "reservations": res.reservations.map(|l| json!({"nano_cpus": l.nano_cpus, "memory_bytes": l.memory_bytes})),
                },
                "restart_policy": {
                    "condition": r.condition, "delay": ms_str(r.delay_ms),
                    "max_attempts": r.max_attempts, "window": ms_str(r.window_ms),
                },
                "placement": {
                    "constraints": p.constraints,
                    "preferences": p.spread.iter().map(|s| json!({"spread": s})).collect::<Vec<_>>(),
                    "max_replicas": p.max_replicas_per_node,
                },
            },
        },
        "endpoint": {
            "mode": if spec.endpoint_mode.is_empty() { "vip" } else { spec.endpoint_mode.as_str() },
            "virtual_ips": s.endpoint.as_ref().map(|e| e.virtual_ips.iter().map(|v| json!({
                "network": v.network_id, "network_name": v.network_name, "addr": v.addr,
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "ports": s.endpoint.as_ref().map(|e| e.ports.iter().map(port_json).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "replicas_desired": s.replicas_desired,
        "replicas_running": s.replicas_running,
    })
}

pub fn task_row(t: &pb::Task) -> Value {
    let st = t.status.clone().unwrap_or_default();
    let image = t
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .map(|c| reference::without_digest(&c.image).to_owned())
        .unwrap_or_default();
    json!({
        "id": t.id,
        "name": t.name,
        "service": t.service_name,
        "service_id": t.service_id,
        "slot": t.slot,
        "node": t.node_hostname,
        "node_id": t.node_id,
        "desired_state": t.desired_state,
        "state": st.state,
        "message": st.message,
        "error": st.err,
        "exit_code": st.exit_code,
        "image": image,
        "addresses": t.networks.iter().flat_map(|n| n.addresses.iter()).collect::<Vec<_>>(),
        "networks": t.networks.iter().map(|n| json!({
            "network": n.network_id, "network_name": n.network_name, "addresses": n.addresses,
        })).collect::<Vec<_>>(),
        "timestamp": st.timestamp,
        "created_at": t.meta.map(|m| m.created_at).unwrap_or(0),
    })
}

/// Parses `--filter desired-state=X` (repeatable).
pub fn desired_filter(filters: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in filters {
        match f.split_once('=') {
            Some(("desired-state", v)) if ["running", "shutdown", "accepted"].contains(&v) => {
                out.push(v.to_owned())
            }
            _ => anyhow::bail!(
                "invalid filter {f:?}: expected desired-state=running|shutdown|accepted"
            ),
        }
    }
    Ok(out)
}

/// Prints tasks as `service ps`/`node ps` do, newest first within each name.
pub fn print_tasks(mut tasks: Vec<pb::Task>, format: Format) -> anyhow::Result<()> {
    tasks.sort_by(|a, b| {
        (a.service_name.as_str(), a.slot, a.node_id.as_str())
            .cmp(&(b.service_name.as_str(), b.slot, b.node_id.as_str()))
            .then(
                b.meta
                    .map(|m| m.created_at)
                    .cmp(&a.meta.map(|m| m.created_at)),
            )
    });
    match format {
        Format::Json => output::json(&Value::Array(tasks.iter().map(task_row).collect())),
        Format::Table => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let mut last = String::new();
            let rows = tasks
                .iter()
                .map(|t| {
                    let row = task_row(t);
                    let s = |k: &str| row[k].as_str().unwrap_or("").to_owned();
                    // Older tasks of the same slot are shown indented, as Docker does.
                    let name = if t.name == last {
                        format!(" \\_ {}", t.name)
                    } else {
                        t.name.clone()
                    };
                    last = t.name.clone();
                    let err = s("error");
                    vec![
                        t.id.chars().take(12).collect(),
                        name,
                        s("image"),
                        s("node"),
                        capitalize(&s("desired_state")),
                        output::state_since(
                            &s("state"),
                            t.status.as_ref().map_or(0, |st| st.timestamp),
                            now,
                        ),
                        if err.is_empty() {
                            String::new()
                        } else {
                            format!("\"{err}\"")
                        },
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "NAME",
                    "IMAGE",
                    "NODE",
                    "DESIRED STATE",
                    "CURRENT STATE",
                    "ERROR",
                ],
                rows,
            );
            Ok(())
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub async fn run(host: &str, cmd: ServiceCommand) -> anyhow::Result<()> {
    // Flags are checked before the daemon is asked anything.
    let create_spec = match &cmd {
        ServiceCommand::Create(a) => Some(spec_from_args(a)?),
        _ => None,
    };
    let mut c = client::connect(host).await?;
    match cmd {
        ServiceCommand::Create(a) => {
            let spec = create_spec.ok_or_else(|| anyhow::anyhow!("no spec"))?;
            let resp = c
                .create_service(pb::CreateServiceRequest {
                    spec: Some(pb::ServiceSpec::from(&spec)),
                    query_registry: !a.no_resolve_image,
                })
                .await?
                .into_inner();
            let svc = resp
                .service
                .ok_or_else(|| anyhow::anyhow!("the daemon returned no service"))?;
            print_warnings(&resp.warnings);
            println!("{}", svc.id);
            if !a.detach {
                converge(&mut c, &svc.id, a.quiet).await?;
            }
        }
        ServiceCommand::Ls(f) => {
            let mut services = c
                .list_services(pb::ListServicesRequest {})
                .await?
                .into_inner()
                .services;
            services.sort_by(|a, b| {
                let n =
                    |s: &pb::Service| s.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                n(a).cmp(&n(b))
            });
            match f.format {
                Format::Json => output::json(&Value::Array(services.iter().map(ls_row).collect()))?,
                Format::Table => {
                    let rows = services
                        .iter()
                        .map(|s| {
                            let r = ls_row(s);
                            vec![
                                s.id.chars().take(12).collect(),
                                r["name"].as_str().unwrap_or("").to_owned(),
                                r["mode"].as_str().unwrap_or("").to_owned(),
                                format!("{}/{}", s.replicas_running, s.replicas_desired),
                                r["image"].as_str().unwrap_or("").to_owned(),
                                ports_column(s),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], rows);
                }
            }
        }
        ServiceCommand::Ps(a) => {
            let desired = desired_filter(&a.filter)?;
            let mut all = Vec::new();
            for s in &a.services {
                let tasks = c
                    .list_tasks(pb::ListTasksRequest {
                        service: s.clone(),
                        node: String::new(),
                        desired_state: desired.clone(),
                    })
                    .await?
                    .into_inner()
                    .tasks;
                all.extend(tasks);
            }
            print_tasks(all, a.format.format)?;
        }
        ServiceCommand::Inspect { services, format } => {
            let all = c
                .list_services(pb::ListServicesRequest {})
                .await?
                .into_inner()
                .services;
            let mut out = Vec::new();
            for key in &services {
                out.push(inspect_value(find(&all, key)?));
            }
            let _ = format;
            output::json(&Value::Array(out))?;
        }
        ServiceCommand::Scale { scales, detach } => {
            let mut parsed = Vec::new();
            for s in &scales {
                let (name, n) = s.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("invalid scale {s:?}: expected SERVICE=REPLICAS")
                })?;
                let n: u64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("invalid replica count {n:?}: expected a non-negative integer")
                })?;
                parsed.push((name.to_owned(), n));
            }
            for (name, n) in parsed {
                let all = c
                    .list_services(pb::ListServicesRequest {})
                    .await?
                    .into_inner()
                    .services;
                let svc = find(&all, &name)?;
                let mut spec = svc.spec.clone().unwrap_or_default();
                if spec.mode == "global" {
                    anyhow::bail!(
                        "scale can only be used with replicated mode: {name} is a global service"
                    );
                }
                spec.replicas = n;
                let updated = c
                    .update_service(pb::UpdateServiceRequest {
                        service: svc.id.clone(),
                        version: svc.meta.map(|m| m.version).unwrap_or(0),
                        spec: Some(spec),
                        query_registry: false,
                    })
                    .await?
                    .into_inner();
                println!("{name} scaled to {n}");
                if !detach {
                    if let Some(s) = updated.service {
                        converge(&mut c, &s.id, true).await?;
                    }
                }
            }
        }
        ServiceCommand::Logs {
            service,
            follow,
            tail,
            timestamps,
            no_task_ids,
        } => {
            use futures::StreamExt;
            use std::io::Write;
            let tail: i64 = if tail == "all" {
                -1
            } else {
                tail.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid --tail {tail:?}: expected a number of lines or \"all\""
                    )
                })?
            };
            let mut stream = c
                .service_logs(pb::ServiceLogsRequest {
                    service,
                    tail,
                    follow,
                })
                .await?
                .into_inner();
            while let Some(msg) = stream.next().await {
                let l = msg?;
                let mut out = String::new();
                if timestamps {
                    out.push_str(&l.timestamp);
                    out.push(' ');
                }
                if !no_task_ids {
                    let short: String = l.task_id.chars().take(12).collect();
                    out.push_str(&format!(
                        "{}.{}@{}    | ",
                        l.task_name, short, l.node_hostname
                    ));
                }
                out.push_str(&l.line);
                // Docker writes a task's stderr to stderr.
                if l.stream == "stderr" {
                    let _ = writeln!(std::io::stderr(), "{out}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{out}");
                }
            }
        }
        ServiceCommand::Update(a) => {
            let all = c
                .list_services(pb::ListServicesRequest {})
                .await?
                .into_inner()
                .services;
            let svc = find(&all, &a.service)?.clone();
            let current = ServiceSpec::try_from(svc.spec.clone().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("service {}: {e}", a.service))?;
            let mut next = a.apply(current)?;
            let query_registry = a.resolve_image(&mut next);
            let updated = c
                .update_service(pb::UpdateServiceRequest {
                    service: svc.id.clone(),
                    version: svc.meta.map(|m| m.version).unwrap_or(0),
                    spec: Some(pb::ServiceSpec::from(&next)),
                    query_registry,
                })
                .await?
                .into_inner();
            print_warnings(&updated.warnings);
            println!("{}", a.service);
            if !a.detach {
                if let Some(s) = updated.service {
                    converge(&mut c, &s.id, false).await?;
                }
            }
        }
        ServiceCommand::Rollback { service, detach } => {
            let updated = c
                .rollback_service(pb::RollbackServiceRequest {
                    service: service.clone(),
                })
                .await?
                .into_inner();
            println!("{service}");
            if !detach {
                if let Some(s) = updated.service {
                    converge(&mut c, &s.id, false).await?;
                }
            }
        }
        ServiceCommand::Rm { services } => {
            for s in services {
                c.remove_service(pb::RemoveServiceRequest { service: s.clone() })
                    .await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

fn find<'a>(all: &'a [pb::Service], key: &str) -> anyhow::Result<&'a pb::Service> {
    let name = |s: &pb::Service| s.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    if let Some(s) = all.iter().find(|s| s.id == key || name(s) == key) {
        return Ok(s);
    }
    let by_prefix: Vec<_> = all.iter().filter(|s| s.id.starts_with(key)).collect();
    match by_prefix.len() {
        1 => Ok(by_prefix[0]),
        0 => anyhow::bail!("service {key} not found"),
        _ => anyhow::bail!("service {key} is ambiguous: use a longer id"),
    }
}

/// Waits until the service's tasks run, showing progress as Docker does; says why when
/// tasks cannot be placed or keep failing.
async fn converge(c: &mut ControlClient<Channel>, id: &str, quiet: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let show = !quiet && std::io::stderr().is_terminal();
    let started = tokio::time::Instant::now();
    let mut last_line = String::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let svc = c
            .list_services(pb::ListServicesRequest {})
            .await?
            .into_inner()
            .services
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| anyhow::anyhow!("service {id} was removed while starting"))?;
        let tasks = c
            .list_tasks(pb::ListTasksRequest {
                service: id.to_owned(),
                node: String::new(),
                desired_state: vec!["running".into()],
            })
            .await?
            .into_inner()
            .tasks;
        let desired = svc.replicas_desired;
        let running = svc.replicas_running;
        let is_global = svc.spec.as_ref().is_some_and(|s| s.mode == "global");
        // A global service has converged once every eligible node's task runs.
        let updating = matches!(svc.update_state.as_str(), "updating" | "rollback_started");
        if svc.update_state == "paused" {
            anyhow::bail!("service {id}: {}", svc.update_message);
        }
        let outdated = tasks.iter().any(|t| t.spec_version != svc.spec_version);
        let converged = running == desired
            && (desired > 0 || !is_global || tasks.is_empty())
            && !updating
            && !outdated;
        let line = format!("overall progress: {running} out of {desired} tasks");
        if show && line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        // Each task's state and, when it is stuck or failing, why: as it changes.
        if show {
            for t in &tasks {
                let st = t.status.clone().unwrap_or_default();
                let why = if st.err.is_empty() {
                    st.message.clone()
                } else {
                    st.err.clone()
                };
                // "scheduled", "preparing" and the like add nothing to the state.
                let why = if why == st.state || why == "scheduled" {
                    String::new()
                } else {
                    why
                };
                let now = format!(
                    "{}: {}{}",
                    t.name,
                    st.state,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                );
                if seen.insert(now.clone()) && st.state != "running" {
                    eprintln!("{now}");
                }
            }
        }
        if converged {
            if show {
                eprintln!(
                    "verify: Service {} converged",
                    svc.spec.map(|s| s.name).unwrap_or_default()
                );
            }
            return Ok(());
        }
        // Say why, once it is clear that something is wrong.
        if started.elapsed() > Duration::from_secs(120) {
            let reasons: Vec<String> = tasks
                .iter()
                .filter_map(|t| t.status.as_ref())
                .map(|s| {
                    if s.err.is_empty() {
                        s.message.clone()
                    } else {
                        s.err.clone()
                    }
                })
                .filter(|s| !s.is_empty())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            anyhow::bail!(
                "service {id} did not converge ({running} of {desired} tasks running): {}",
                if reasons.is_empty() {
                    "no reason reported".to_owned()
                } else {
                    reasons.join("; ")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_like_docker() {
        let p = parse_publish("8080:80").expect("short");
        assert_eq!(
            (p.published, p.target, p.protocol, p.mode),
            (8080, 80, Protocol::Tcp, PublishMode::Ingress)
        );
        let p = parse_publish("53:53/udp").expect("udp");
        assert_eq!(p.protocol, Protocol::Udp);
        let p = parse_publish("80").expect("target only");
        assert_eq!((p.published, p.target), (0, 80));
        let p = parse_publish("mode=host,published=8081,target=80").expect("long");
        assert_eq!(
            (p.published, p.target, p.mode),
            (8081, 80, PublishMode::Host)
        );
        for bad in [
            "",
            "x:80",
            "8080:0",
            "70000:80",
            "8080:80/sctp",
            "mode=host,target=80",
            "published=80",
            "mode=x,published=1,target=2",
            "a=b",
        ] {
            let e = parse_publish(bad).expect_err(bad);
            assert!(e.to_string().contains("--publish"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_and_cpus_parse_like_docker() {
        assert_eq!(parse_bytes("x", "256M").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("x", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("x", "512").unwrap(), 512);
        assert!(parse_bytes("x", "lots").is_err());
        assert_eq!(parse_cpus("x", "0.5").unwrap(), 500_000_000);
        assert!(parse_cpus("x", "-1").is_err());
    }

    #[test]
    fn mounts_parse() {
        let m = parse_mount("type=bind,source=/srv,target=/data,readonly").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=tmpfs").is_err());
    }

    #[test]
    fn networks_parse_short_and_long() {
        assert_eq!(parse_network("appnet").unwrap().target, "appnet");
        let n = parse_network("name=appnet,alias=www,alias=web").unwrap();
        assert_eq!(n.target, "appnet");
        assert_eq!(n.aliases, ["www", "web"]);
        for bad in ["", "alias=www", "name=appnet,bogus=1", "a,b", "name="] {
            assert!(parse_network(bad).is_err(), "{bad:?} parsed");
        }
    }

    const PINNED: &str = "reg:5000/busybox:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn update_args(argv: &[&str]) -> UpdateArgs {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            a: UpdateArgs,
        }
        let mut all = vec!["update"];
        all.extend_from_slice(argv);
        match <Cmd as clap::Parser>::try_parse_from(all) {
            Ok(c) => c.a,
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    fn pinned_spec() -> ServiceSpec {
        let mut spec = ServiceSpec::default();
        spec.task.container.image = PINNED.into();
        spec
    }

    #[test]
    fn update_resolves_the_image_only_with_image_or_force() {
        // Other updates keep the pinned image and do not ask the registry.
        let a = update_args(&["--env-add", "A=1", "web"]);
        let mut spec = a.apply(pinned_spec()).expect("apply");
        assert!(!a.resolve_image(&mut spec));
        assert_eq!(spec.task.container.image, PINNED);

        let a = update_args(&["--image", "reg:5000/busybox:2", "web"]);
        let mut spec = a.apply(pinned_spec()).expect("apply");
        assert!(a.resolve_image(&mut spec));
        assert_eq!(spec.task.container.image, "reg:5000/busybox:2");

        // --force looks up where the current tag points now.
        let a = update_args(&["--force", "web"]);
        let mut spec = a.apply(pinned_spec()).expect("apply");
        assert!(a.resolve_image(&mut spec));
        assert_eq!(spec.task.container.image, "reg:5000/busybox:latest");

        let a = update_args(&["--force", "--no-resolve-image", "web"]);
        let mut spec = a.apply(pinned_spec()).expect("apply");
        assert!(!a.resolve_image(&mut spec));
        assert_eq!(spec.task.container.image, PINNED);
    }

    fn create_spec(argv: &[&str]) -> Result<ServiceSpec, FlagError> {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            a: CreateArgs,
        }
        let mut all = vec!["create"];
        all.extend_from_slice(argv);
        match <Cmd as clap::Parser>::try_parse_from(all) {
            Ok(c) => spec_from_args(&c.a),
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    #[test]
    fn host_network_flag_and_its_refusals() {
        for form in ["host", "name=host"] {
            let s = create_spec(&["--network", form, "busybox"]).expect(form);
            assert!(s.task.host_network, "{form}");
            assert!(s.networks.is_empty(), "{form}: host is no network object");
        }
        let s = create_spec(&["--network", "appnet", "busybox"]).expect("overlay");
        assert!(!s.task.host_network);
        for argv in [
            &["--network", "host", "--network", "appnet", "busybox"][..],
            &["--network", "appnet", "--network", "host", "busybox"],
            &["--network", "host", "-p", "8080:80", "busybox"],
            &[
                "--network",
                "host",
                "-p",
                "mode=host,published=8080,target=80",
                "busybox",
            ],
            &["--network", "name=host,alias=www", "busybox"],
        ] {
            let e = create_spec(argv).expect_err("refused").to_string();
            assert!(
                e.contains("--network") && e.contains("host network"),
                "{argv:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let e = create_spec(&["--network", "host", "-p", "80", "busybox"]).expect_err("ports");
        assert!(
            e.to_string().contains("binds them on the node itself"),
            "{e}"
        );
        // Publishing a port later is refused the same way.
        let mut spec = pinned_spec();
        spec.task.host_network = true;
        let e = update_args(&["--publish-add", "8080:80", "web"])
            .apply(spec)
            .expect_err("publish on host");
        assert!(e.to_string().contains("--publish-add"), "{e}");
    }

    #[test]
    fn container_option_flags_parse_like_docker() {
        let s = create_spec(&[
            "--cap-add",
            "net_admin",
            "--cap-add",
            "CAP_SYS_TIME",
            "--cap-drop",
            "all",
            "--read-only",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--ulimit",
            "nofile=123:456",
            "--ulimit",
            "core=0",
            "--device",
            "/dev/null:/dev/mynull",
            "--device",
            "/dev/zero:r",
            "busybox",
        ])
        .expect("spec");
        let c = &s.task.container;
        assert_eq!(c.capability_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(c.capability_drop, ["ALL"]);
        assert!(c.read_only);
        assert_eq!(
            c.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
        assert_eq!(c.ulimits[0], Ulimit::new("nofile", 123, 456).expect("u"));
        assert_eq!(c.ulimits[1], Ulimit::new("core", 0, 0).expect("u"));
        assert_eq!(c.devices[0].to_string(), "/dev/null:/dev/mynull:rwm");
        assert_eq!(c.devices[1].to_string(), "/dev/zero:/dev/zero:r");
        // And back through the wire unchanged.
        assert_eq!(
            ServiceSpec::try_from(pb::ServiceSpec::from(&s)).expect("convert"),
            s
        );
        let v = inspect_value(&pb::Service {
            spec: Some(pb::ServiceSpec::from(&s)),
            ..Default::default()
        });
        let cs = &v["spec"]["task_template"]["container_spec"];
        assert_eq!(cs["read_only"], true);
        assert_eq!(cs["ulimits"][0]["soft"], 123);
        assert_eq!(cs["devices"][0]["path_in_container"], "/dev/mynull");
        assert_eq!(cs["capability_drop"][0], "ALL");

        for (bad, flag) in [
            (["--cap-add", "fly"], "--cap-add"),
            (["--cap-drop", "CAP_X"], "--cap-drop"),
            (["--sysctl", "kernel.hostname=x"], "--sysctl"),
            (["--sysctl", "net.core.somaxconn"], "--sysctl"),
            (["--ulimit", "nofiles=1"], "--ulimit"),
            (["--ulimit", "nofile=456:123"], "--ulimit"),
            (["--device", "/dev/null:/x:rwz"], "--device"),
            (["--device", "null"], "--device"),
        ] {
            let mut argv = bad.to_vec();
            argv.push("busybox");
            let e = create_spec(&argv).expect_err(bad[1]);
            assert!(
                e.to_string().starts_with(&format!("invalid {flag} ")),
                "{e}"
            );
        }
    }

    #[test]
    fn init_flag_on_create_update_and_inspect() {
        let s = create_spec(&["--init", "busybox", "sleep", "3600"]).expect("spec");
        assert!(s.task.container.init);
        assert_eq!(s.task.container.args, ["sleep", "3600"]);
        assert!(!create_spec(&["busybox"]).expect("spec").task.container.init);
        let v = inspect_value(&pb::Service {
            spec: Some(pb::ServiceSpec::from(&s)),
            ..Default::default()
        });
        assert_eq!(v["spec"]["task_template"]["container_spec"]["init"], true);
        // The service name right after --init is not taken as its value.
        let on = update_args(&["--init", "web"])
            .apply(pinned_spec())
            .expect("apply");
        assert!(on.task.container.init);
        let off = update_args(&["--init=false", "web"])
            .apply(on)
            .expect("apply");
        assert!(!off.task.container.init);
        // Left alone when not given.
        let mut keep = pinned_spec();
        keep.task.container.init = true;
        let kept = update_args(&["--read-only", "web"])
            .apply(keep)
            .expect("apply");
        assert!(kept.task.container.init);
    }

    #[test]
    fn container_option_updates() {
        let mut spec = pinned_spec();
        let c = &mut spec.task.container;
        c.capability_add = vec!["CAP_NET_ADMIN".into()];
        c.capability_drop = vec!["CAP_KILL".into()];
        c.sysctls.insert("net.core.somaxconn".into(), "1".into());
        c.ulimits = vec![Ulimit::new("nofile", 1, 2).expect("u")];
        c.devices = vec![DeviceMapping::parse("/dev/null:/dev/a").expect("d")];
        let a = update_args(&[
            "--cap-add",
            "kill",
            "--cap-drop",
            "net_admin",
            "--read-only",
            "--sysctl-rm",
            "net.core.somaxconn",
            "--sysctl-add",
            "net.ipv4.ip_forward=1",
            "--ulimit-add",
            "nofile=5:6",
            "--ulimit-add",
            "nproc=10",
            "--device-rm",
            "/dev/a",
            "--device-add",
            "/dev/zero",
            "web",
        ]);
        let spec = a.apply(spec).expect("apply");
        let c = &spec.task.container;
        assert_eq!(c.capability_add, ["CAP_KILL"]);
        assert_eq!(c.capability_drop, ["CAP_NET_ADMIN"]);
        assert!(c.read_only);
        assert_eq!(
            c.sysctls.keys().collect::<Vec<_>>(),
            ["net.ipv4.ip_forward"]
        );
        assert_eq!(c.ulimits.len(), 2);
        assert_eq!(c.ulimits[0], Ulimit::new("nofile", 5, 6).expect("u"));
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.devices[0].path_on_host, "/dev/zero");

        let spec = update_args(&["--read-only=false", "--ulimit-rm", "nproc", "web"])
            .apply(spec)
            .expect("apply");
        assert!(!spec.task.container.read_only);
        assert_eq!(spec.task.container.ulimits.len(), 1);
        assert!(update_args(&["--cap-add", "nope", "web"])
            .apply(pinned_spec())
            .is_err());
        assert!(update_args(&["--sysctl-add", "vm.swappiness=1", "web"])
            .apply(pinned_spec())
            .is_err());
    }

    #[test]
    fn ls_and_ps_show_the_image_without_its_digest() {
        let spec = pinned_spec();
        let svc = pb::Service {
            spec: Some(pb::ServiceSpec::from(&spec)),
            ..Default::default()
        };
        assert_eq!(ls_row(&svc)["image"], "reg:5000/busybox:latest");
        assert_eq!(
            inspect_value(&svc)["spec"]["task_template"]["container_spec"]["image"],
            PINNED
        );
        let task = pb::Task {
            spec: svc.spec.and_then(|s| s.task),
            ..Default::default()
        };
        assert_eq!(task_row(&task)["image"], "reg:5000/busybox:latest");
    }
}
