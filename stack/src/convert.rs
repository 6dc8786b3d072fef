//! Conversion of a loaded Compose file into what a stack deploy creates, as
//! `docker stack deploy` converts it: every service, network, volume, secret and config is
//! named `STACK_NAME` (unless external or given a `name:`) and labelled
//! `com.docker.stack.namespace=STACK`; a service without networks joins `STACK_default`
//! and answers to its short name on every network.

use crate::compose::{
    ComposeFile, DeployMode, FileObject, FileReference, Healthcheck, Service, ServiceNetwork,
    UpdateConfigFile, VolumeKind,
};
use crate::error::ConvertError;
use crate::spec::{
    FileRef, NetworkAttachment, StackNetwork, StackSecret, StackService, StackSpec, StackVolume,
    UpdateConfig, IMAGE_LABEL, NAMESPACE_LABEL,
};
use rswarm_proto::model::{
    ContainerSpec, HealthCheck, Mount, MountType, Placement, ResourceRequirements, Resources,
    RestartPolicy, ServiceMode, ServiceSpec, SpreadOver, TaskSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The network a service joins when it names none.
const DEFAULT_NETWORK: &str = "default";
/// Swarm's limit on a service's name (a DNS label).
const MAX_NAME: usize = 63;

/// Converts a loaded file into the specs of stack `stack`.
pub fn convert(stack: &str, file: &ComposeFile) -> Result<StackSpec, ConvertError> {
    let valid_name = stack.starts_with(|c: char| c.is_ascii_alphanumeric())
        && stack
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid_name {
        return Err(ConvertError::InvalidStackName(stack.to_owned()));
    }
    let ns = Namespace(stack);
    let mut services = Vec::new();
    let mut used_networks = BTreeSet::new();
    let mut used_volumes = BTreeSet::new();
    for (name, svc) in &file.services {
        let full = ns.scope(name);
        if full.len() > MAX_NAME {
            return Err(ConvertError::NameTooLong {
                len: full.len(),
                name: full,
            });
        }
        let default_networks =
            BTreeMap::from([(DEFAULT_NETWORK.to_owned(), ServiceNetwork::default())]);
        let no_networks = BTreeMap::new();
        // On Docker's `host` network (the loader made it the only one), the tasks use
        // their node's stack: no network to create, check or attach.
        let host = svc
            .networks
            .keys()
            .any(|k| file.networks.get(k).is_some_and(|d| d.is_host()));
        let networks = if host {
            &no_networks
        } else if svc.networks.is_empty() {
            &default_networks
        } else {
            &svc.networks
        };
        used_networks.extend(networks.keys().cloned());
        used_volumes.extend(
            svc.volumes
                .iter()
                .filter(|v| v.kind == VolumeKind::Volume && !v.source.is_empty())
                .map(|v| v.source.clone()),
        );
        services.push(service(&ns, name, svc, networks, host, file));
    }

    let mut networks: Vec<StackNetwork> = used_networks
        .iter()
        .map(|key| {
            let def = file.networks.get(key).cloned().unwrap_or_default();
            let name = def.name.clone().unwrap_or_else(|| ns.scope(key));
            StackNetwork {
                name,
                external: def.external,
                driver: def.driver.clone().unwrap_or_else(|| "overlay".to_owned()),
                driver_opts: def.driver_opts.clone(),
                labels: ns.labels(&def.labels, def.external),
                internal: def.internal,
                attachable: def.attachable,
                ipam_driver: def.ipam_driver.clone(),
                subnets: def.subnets.clone(),
            }
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));

    let mut volumes: Vec<StackVolume> = used_volumes
        .iter()
        .map(|key| {
            let def = file.volumes.get(key).cloned().unwrap_or_default();
            StackVolume {
                name: def.name.clone().unwrap_or_else(|| ns.scope(key)),
                external: def.external,
                driver: def.driver.clone().unwrap_or_default(),
                driver_opts: def.driver_opts.clone(),
                labels: ns.labels(&def.labels, def.external),
            }
        })
        .collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(StackSpec {
        name: stack.to_owned(),
        services,
        networks,
        volumes,
        secrets: file_objects(&ns, &file.secrets),
        configs: file_objects(&ns, &file.configs),
    })
}

struct Namespace<'a>(&'a str);

impl Namespace<'_> {
    fn scope(&self, name: &str) -> String {
        format!("{}_{name}", self.0)
    }

    /// The labels with the stack's; an external object's are not ours to set.
    fn labels(
        &self,
        labels: &BTreeMap<String, String>,
        external: bool,
    ) -> BTreeMap<String, String> {
        let mut out = labels.clone();
        if !external {
            out.insert(NAMESPACE_LABEL.to_owned(), self.0.to_owned());
        }
        out
    }
}

/// Every secret (or config) of the file, as Docker creates them all, used or not.
fn file_objects(ns: &Namespace<'_>, objects: &BTreeMap<String, FileObject>) -> Vec<StackSecret> {
    let mut out: Vec<StackSecret> = objects
        .iter()
        .map(|(key, o)| StackSecret {
            name: o.name.clone().unwrap_or_else(|| ns.scope(key)),
            external: o.external,
            file: if o.external { None } else { o.file.clone() },
            labels: ns.labels(&o.labels, o.external),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn service(
    ns: &Namespace<'_>,
    name: &str,
    svc: &Service,
    networks: &BTreeMap<String, ServiceNetwork>,
    host_network: bool,
    file: &ComposeFile,
) -> StackService {
    let d = &svc.deploy;
    let mut labels = ns.labels(&d.labels, false);
    labels.insert(IMAGE_LABEL.to_owned(), svc.image.clone());
    let container = ContainerSpec {
        image: svc.image.clone(),
        command: svc.entrypoint.clone().unwrap_or_default(),
        args: svc.command.clone().unwrap_or_default(),
        env: svc
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect(),
        dir: svc.working_dir.clone().unwrap_or_default(),
        user: svc.user.clone().unwrap_or_default(),
        hostname: svc.hostname.clone().unwrap_or_default(),
        labels: ns.labels(&svc.labels, false),
        mounts: svc
            .volumes
            .iter()
            .map(|v| Mount {
                kind: match v.kind {
                    VolumeKind::Bind => MountType::Bind,
                    VolumeKind::Volume => MountType::Volume,
                    VolumeKind::Tmpfs => MountType::Tmpfs,
                },
                source: match v.kind {
                    VolumeKind::Volume if !v.source.is_empty() => file
                        .volumes
                        .get(&v.source)
                        .and_then(|def| def.name.clone())
                        .unwrap_or_else(|| ns.scope(&v.source)),
                    _ => v.source.clone(),
                },
                target: v.target.clone(),
                read_only: v.read_only,
                tmpfs_size: v.tmpfs_size.unwrap_or(0),
            })
            .collect(),
        stop_signal: svc.stop_signal.clone().unwrap_or_default(),
        stop_grace_period: svc.stop_grace_period,
        healthcheck: svc.healthcheck.as_ref().map(healthcheck),
        // The stack's `secrets`/`configs` (below) become these at deploy, once the
        // objects exist: `FileReference { source_name, target, uid, gid, mode }`.
        secrets: Vec::new(),
        configs: Vec::new(),
        capability_add: svc.cap_add.clone(),
        capability_drop: svc.cap_drop.clone(),
        read_only: svc.read_only,
        init: svc.init,
        sysctls: svc.sysctls.clone(),
        ulimits: svc.ulimits.clone(),
        devices: svc.devices.clone(),
    };
    let resources = ResourceRequirements {
        limits: Resources {
            nano_cpus: d.resources.limits.nano_cpus.unwrap_or(0),
            memory_bytes: d.resources.limits.memory_bytes.unwrap_or(0),
        },
        reservations: Resources {
            nano_cpus: d.resources.reservations.nano_cpus.unwrap_or(0),
            memory_bytes: d.resources.reservations.memory_bytes.unwrap_or(0),
        },
    };
    let restart = match &d.restart_policy {
        None => RestartPolicy::default(),
        Some(r) => {
            let swarm = RestartPolicy::default();
            RestartPolicy {
                condition: r.condition.unwrap_or(swarm.condition),
                delay: r.delay.unwrap_or(swarm.delay),
                max_attempts: r.max_attempts.unwrap_or(swarm.max_attempts),
                window: r.window.unwrap_or(swarm.window),
            }
        }
    };
    let placement = Placement {
        constraints: d.placement.constraints.clone(),
        preferences: d
            .placement
            .preferences
            .iter()
            .map(|p| SpreadOver {
                descriptor: p.clone(),
            })
            .collect(),
        max_replicas_per_node: d.placement.max_replicas_per_node.unwrap_or(0),
    };
    let mode = match d.mode {
        DeployMode::Global => ServiceMode::Global,
        DeployMode::Replicated => ServiceMode::Replicated {
            replicas: d.replicas.unwrap_or(1),
        },
    };
    let spec = ServiceSpec {
        name: ns.scope(name),
        labels,
        task: TaskSpec {
            container,
            resources,
            restart,
            placement,
            host_network,
            ..TaskSpec::default()
        },
        mode,
        ..ServiceSpec::default()
    };

    let mut ports = svc.ports.clone();
    ports.sort();
    let mut attachments: Vec<NetworkAttachment> = networks
        .iter()
        .map(|(key, n)| {
            let target = file
                .networks
                .get(key)
                .and_then(|def| def.name.clone())
                .unwrap_or_else(|| ns.scope(key));
            let mut aliases = n.aliases.clone();
            if !aliases.iter().any(|a| a == name) {
                aliases.push(name.to_owned());
            }
            NetworkAttachment { target, aliases }
        })
        .collect();
    attachments.sort_by(|a, b| a.target.cmp(&b.target));

    StackService {
        spec,
        ports,
        networks: attachments,
        secrets: file_refs(ns, &svc.secrets, &file.secrets),
        configs: file_refs(ns, &svc.configs, &file.configs),
        update_config: d.update_config.as_ref().map(update_config),
        rollback_config: d.rollback_config.as_ref().map(update_config),
        endpoint_mode: d.endpoint_mode,
    }
}

fn healthcheck(h: &Healthcheck) -> HealthCheck {
    let docker = HealthCheck::default();
    if h.disable {
        return HealthCheck {
            test: vec!["NONE".to_owned()],
            ..docker
        };
    }
    HealthCheck {
        test: h.test.clone().unwrap_or_default(),
        interval: h.interval.unwrap_or(docker.interval),
        timeout: h.timeout.unwrap_or(docker.timeout),
        start_period: h.start_period.unwrap_or(docker.start_period),
        retries: h
            .retries
            .map(|r| u32::try_from(r).unwrap_or(u32::MAX))
            .unwrap_or(docker.retries),
    }
}

fn file_refs(
    ns: &Namespace<'_>,
    refs: &[FileReference],
    defined: &BTreeMap<String, FileObject>,
) -> Vec<FileRef> {
    let mut out: Vec<FileRef> = refs
        .iter()
        .map(|r| FileRef {
            name: defined
                .get(&r.source)
                .and_then(|o| o.name.clone())
                .unwrap_or_else(|| ns.scope(&r.source)),
            target: r.target.clone().unwrap_or_else(|| r.source.clone()),
            uid: r.uid.clone().unwrap_or_else(|| "0".to_owned()),
            gid: r.gid.clone().unwrap_or_else(|| "0".to_owned()),
            mode: r.mode.unwrap_or(0o444),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn update_config(u: &UpdateConfigFile) -> UpdateConfig {
    let swarm = UpdateConfig::default();
    UpdateConfig {
        parallelism: u.parallelism.unwrap_or(swarm.parallelism),
        delay: u.delay.unwrap_or(Duration::ZERO),
        failure_action: u.failure_action.unwrap_or(swarm.failure_action),
        monitor: u.monitor.unwrap_or(swarm.monitor),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(swarm.max_failure_ratio),
        order: u.order.unwrap_or(swarm.order),
    }
}
