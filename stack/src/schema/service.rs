//! The `services:` section.

use super::deploy::deploy;
use super::{
    boolean, check_name, check_shape, duration, expected, fail, is_extension, list,
    list_of_strings, list_or_dict, mapping, mapping_or_null, one_of, string, string_map,
    string_or_list, unknown_key, unsigned, Cx, Shape,
};
use crate::compose::{
    ComposeFile, DeployMode, FileReference, Healthcheck, Service, ServiceNetwork, ServiceVolume,
    VolumeKind,
};
use crate::document::{Entry, Node, Pos, Value};
use crate::dotenv;
use crate::error::Located;
use crate::path::KeyPath;
use crate::spec::{EndpointMode, PortSpec, Protocol, PublishMode};
use crate::syntax::{parse_bytes, parse_port, parse_volume, split_command};
use rswarm_proto::model::{container_opts, DeviceMapping, Ulimit};
use std::collections::BTreeMap;

/// Keys of a service that a stack reads.
const USED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "user",
    "working_dir",
    "hostname",
    "healthcheck",
    "stop_grace_period",
    "stop_signal",
    "volumes",
    "ports",
    "networks",
    "secrets",
    "configs",
    "cap_add",
    "cap_drop",
    "read_only",
    "init",
    "sysctls",
    "ulimits",
    "devices",
    "deploy",
];

/// Keys a stack accepts and ignores: Docker's "unsupported" and "deprecated" ones, and
/// those Docker converts but rswarm cannot apply yet.
const IGNORED: &[(&str, Shape)] = &[
    ("build", Shape::StrOrMap),
    ("cgroup_parent", Shape::Str),
    ("cgroupns_mode", Shape::Str),
    ("container_name", Shape::Str),
    ("credential_spec", Shape::Map),
    ("depends_on", Shape::Any),
    ("dns", Shape::StrOrStrings),
    ("dns_search", Shape::StrOrStrings),
    ("domainname", Shape::Str),
    ("expose", Shape::Strings),
    ("external_links", Shape::Strings),
    ("extra_hosts", Shape::ListOrDict),
    ("ipc", Shape::Str),
    ("isolation", Shape::Str),
    ("links", Shape::Strings),
    ("logging", Shape::Map),
    ("mac_address", Shape::Str),
    ("network_mode", Shape::Str),
    ("oom_score_adj", Shape::Int),
    ("pid", Shape::Any),
    ("privileged", Shape::Bool),
    ("restart", Shape::Str),
    ("security_opt", Shape::Strings),
    ("shm_size", Shape::Any),
    ("stdin_open", Shape::Bool),
    ("tmpfs", Shape::StrOrStrings),
    ("tty", Shape::Bool),
    ("userns_mode", Shape::Str),
];

/// Keys Docker refuses in a stack, with its reasons.
const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "extends is not supported in a stack"),
    ("volume_driver", "instead of setting the volume driver on the service, define a volume under the top-level volumes with its driver"),
    ("volumes_from", "to share a volume between services, define it under the top-level volumes and use it in each service's volumes"),
    ("cpu_quota", "set resource limits with deploy.resources"),
    ("cpu_shares", "set resource limits with deploy.resources"),
    ("cpuset", "set resource limits with deploy.resources"),
    ("mem_limit", "set resource limits with deploy.resources"),
    ("memswap_limit", "set resource limits with deploy.resources"),
];

pub(super) fn services(
    node: &Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    file: &ComposeFile,
) -> Result<BTreeMap<String, Service>, Located> {
    let mut out = BTreeMap::new();
    for entry in mapping_or_null(node, path)? {
        if is_extension(&entry.key) {
            continue;
        }
        let p = path.key(&entry.key);
        check_name(entry, &p, "service")?;
        out.insert(entry.key.clone(), service(entry, &p, cx, file)?);
    }
    Ok(out)
}

/// Where the parts of a service that need checking against others were written.
#[derive(Default)]
struct Sites<'n> {
    image: Option<&'n Node>,
    /// Path, required, where.
    env_files: Vec<(String, bool, Pos, KeyPath)>,
    environment: Vec<(String, Option<String>)>,
    /// Named volumes used, at their item.
    named_volumes: Vec<(String, &'n Node, KeyPath)>,
    /// Networks used, at their name.
    networks: Vec<(String, Pos, KeyPath)>,
    /// `ports:`, for refusing them on the host network.
    ports: Option<(&'n Node, KeyPath)>,
    secrets: Vec<(String, &'n Node, KeyPath)>,
    configs: Vec<(String, &'n Node, KeyPath)>,
}

fn service(
    entry: &Entry,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    file: &ComposeFile,
) -> Result<Service, Located> {
    let mut s = Service::default();
    let mut at = Sites::default();
    let mut deploy_read = None;
    for e in mapping(&entry.value, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "image" => {
                s.image = string(v, &p)?;
                at.image = Some(v);
            }
            "command" => s.command = command(v, &p)?,
            "entrypoint" => s.entrypoint = command(v, &p)?,
            "environment" => {
                at.environment = list_or_dict(v, &p, &['='])?;
                for (k, _) in &at.environment {
                    if k.is_empty() {
                        return Err(fail(v, &p, "a variable needs a name"));
                    }
                }
            }
            "env_file" => at.env_files = env_files(v, &p)?,
            "labels" => s.labels = string_map(v, &p)?,
            "user" => s.user = Some(string(v, &p)?),
            "working_dir" => s.working_dir = Some(string(v, &p)?),
            "hostname" => s.hostname = Some(string(v, &p)?),
            "healthcheck" => s.healthcheck = Some(healthcheck(v, &p, cx)?),
            "stop_grace_period" => s.stop_grace_period = Some(duration(v, &p)?),
            "stop_signal" => s.stop_signal = Some(super::nonempty_string(v, &p)?),
            "volumes" => s.volumes = volumes(v, &p, cx, &mut at)?,
            "ports" => {
                s.ports = ports(v, &p, cx)?;
                at.ports = Some((v, p.clone()));
            }
            "networks" => s.networks = networks(v, &p, cx, &mut at)?,
            "secrets" => s.secrets = file_refs(v, &p, &mut at.secrets)?,
            "configs" => s.configs = file_refs(v, &p, &mut at.configs)?,
            "cap_add" => s.cap_add = capabilities(v, &p)?,
            "cap_drop" => s.cap_drop = capabilities(v, &p)?,
            "read_only" => s.read_only = boolean(v, &p)?,
            "init" => s.init = boolean(v, &p)?,
            "sysctls" => s.sysctls = sysctls(v, &p)?,
            "ulimits" => s.ulimits = ulimits(v, &p)?,
            "devices" => s.devices = devices(v, &p)?,
            "deploy" => deploy_read = Some(deploy(v, &p, cx)?),
            k if is_extension(k) => {}
            k => {
                if let Some((_, shape)) = IGNORED.iter().find(|(name, _)| *name == k) {
                    check_shape(v, &p, *shape)?;
                    cx.ignore(k);
                } else if let Some((_, why)) = FORBIDDEN.iter().find(|(name, _)| *name == k) {
                    return Err(Located::new(e.key_pos, &p, format!("not supported: {why}")));
                } else {
                    let known: Vec<&str> = USED
                        .iter()
                        .copied()
                        .chain(IGNORED.iter().map(|(k, _)| *k))
                        .collect();
                    return Err(unknown_key(e, &p, &known));
                }
            }
        }
    }
    if let Some(read) = &deploy_read {
        s.deploy = read.deploy.clone();
    }
    // As Docker's CLI: deduplicated, sorted, an added capability not also dropped. The
    // names were checked one by one above.
    if let Ok((add, drop)) = container_opts::effective_cap_add_drop(&s.cap_add, &s.cap_drop) {
        (s.cap_add, s.cap_drop) = (add, drop);
    }
    if !cx.merged() {
        return Ok(s);
    }

    // The whole service, with the whole file.
    match at.image {
        None => {
            return Err(Located::new(
                entry.key_pos,
                path,
                "no image: a stack runs images (build is ignored)",
            ))
        }
        Some(node) => check_image(&s.image).map_err(|m| fail(node, &path.key("image"), m))?,
    }
    s.environment = environment(cx, &at)?;
    for (name, node, p) in &at.named_volumes {
        if !file.volumes.contains_key(name) {
            return Err(fail(
                node,
                p,
                format!("undefined volume {name:?}: define it under the top-level volumes"),
            ));
        }
    }
    for (name, pos, p) in &at.networks {
        if name != "default" && !file.networks.contains_key(name) {
            return Err(Located::new(
                *pos,
                p,
                format!("undefined network {name:?}: define it under the top-level networks"),
            ));
        }
    }
    // Docker's rules for the node's own network: it is the only one, and nothing is
    // published (the service binds its ports on the node itself).
    let on_host = |name: &str| file.networks.get(name).is_some_and(|d| d.is_host());
    if let Some((name, pos, p)) = at.networks.iter().find(|(n, ..)| on_host(n)) {
        if s.networks.len() > 1 {
            return Err(Located::new(
                *pos,
                p,
                format!("network {name:?} is the host network: a service on it cannot join other networks"),
            ));
        }
        if s.networks.get(name).is_some_and(|n| !n.aliases.is_empty()) {
            return Err(Located::new(
                *pos,
                p,
                "the host network takes no aliases (they are for overlay networks)",
            ));
        }
        if let Some((node, p)) = at.ports.as_ref().filter(|_| !s.ports.is_empty()) {
            return Err(fail(
                node,
                p,
                "a service on the host network publishes no ports: it binds them on the node itself",
            ));
        }
    }
    for (kind, refs, defined) in [
        ("secret", &at.secrets, &file.secrets),
        ("config", &at.configs, &file.configs),
    ] {
        for (name, node, p) in refs {
            if !defined.contains_key(name) {
                return Err(fail(
                    node,
                    p,
                    format!("undefined {kind} {name:?}: define it under the top-level {kind}s"),
                ));
            }
        }
    }
    if let Some(read) = deploy_read {
        if s.deploy.mode == DeployMode::Global {
            if let Some(n) = read.replicas_node {
                return Err(fail(
                    n,
                    &path.key("deploy").key("replicas"),
                    "replicas can only be used with mode: replicated",
                ));
            }
            if let Some(n) = read.max_per_node_node {
                return Err(fail(
                    n,
                    &path
                        .key("deploy")
                        .key("placement")
                        .key("max_replicas_per_node"),
                    "max_replicas_per_node can only be used with mode: replicated",
                ));
            }
        }
        if s.deploy.endpoint_mode == EndpointMode::Dnsrr
            && s.ports.iter().any(|p| p.mode == PublishMode::Ingress)
        {
            if let Some(n) = read.endpoint_node {
                return Err(fail(
                    n,
                    &path.key("deploy").key("endpoint_mode"),
                    "a service in dnsrr mode cannot publish ports through the routing mesh: publish them with mode: host",
                ));
            }
        }
    }
    Ok(s)
}

/// `cap_add`/`cap_drop`: names as Docker takes them (`NET_ADMIN`, `cap_net_admin`, `ALL`).
fn capabilities(node: &Node, path: &KeyPath) -> Result<Vec<String>, Located> {
    let names = list_of_strings(node, path)?;
    let items = list(node, path)?;
    names
        .iter()
        .zip(items)
        .enumerate()
        .map(|(i, (name, item))| {
            container_opts::normalize_capability(name).map_err(|m| fail(item, &path.index(i), m))
        })
        .collect()
}

/// `sysctls`: a mapping or a list of `KEY=VALUE`, namespaced ones only (Docker's rule).
fn sysctls(node: &Node, path: &KeyPath) -> Result<BTreeMap<String, String>, Located> {
    // Each key with the node to blame for it.
    let items: Vec<(String, Option<String>, &Node, KeyPath)> = match &node.value {
        Value::Map(entries) => entries
            .iter()
            .map(|e| {
                let p = path.key(&e.key);
                let v = match &e.value.value {
                    Value::Null => None,
                    Value::Seq(_) | Value::Map(_) => {
                        return Err(expected(&e.value, &p, "a string or a number"))
                    }
                    _ => e.value.scalar_text(),
                };
                Ok((e.key.clone(), v, &e.value, p))
            })
            .collect::<Result<_, _>>()?,
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let p = path.index(i);
                let text = string(item, &p)?;
                Ok(match text.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned()), item, p),
                    None => (text, None, item, p),
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(expected(
                node,
                path,
                "a mapping or a list of KEY=VALUE strings",
            ))
        }
    };
    let mut out = BTreeMap::new();
    for (k, v, at, p) in items {
        container_opts::validate_sysctl(&k).map_err(|m| fail(at, &p, m))?;
        let v = v.ok_or_else(|| fail(at, &p, format!("sysctl {k:?} needs a value")))?;
        out.insert(k, v);
    }
    Ok(out)
}

/// `ulimits`: `nofile: 1024` (soft and hard) or `nofile: {soft: 1024, hard: 2048}`.
fn ulimits(node: &Node, path: &KeyPath) -> Result<Vec<Ulimit>, Located> {
    let mut out = Vec::new();
    for e in mapping(node, path)? {
        let p = path.key(&e.key);
        let num = |n: &Node, p: &KeyPath| -> Result<i64, Located> {
            i64::try_from(super::integer(n, p)?).map_err(|_| expected(n, p, "an integer"))
        };
        let (soft, hard) = match &e.value.value {
            Value::Map(fields) => {
                let (mut soft, mut hard) = (None, None);
                for f in fields {
                    let fp = p.key(&f.key);
                    match f.key.as_str() {
                        "soft" => soft = Some(num(&f.value, &fp)?),
                        "hard" => hard = Some(num(&f.value, &fp)?),
                        _ => return Err(unknown_key(f, &fp, &["soft", "hard"])),
                    }
                }
                match (soft, hard) {
                    (Some(s), Some(h)) => (s, h),
                    _ => return Err(fail(&e.value, &p, "a ulimit needs both soft and hard")),
                }
            }
            _ => {
                let n = num(&e.value, &p)?;
                (n, n)
            }
        };
        out.push(Ulimit::new(&e.key, soft, hard).map_err(|m| fail(&e.value, &p, m))?);
    }
    Ok(out)
}

/// `devices`: `docker run --device` strings, `/dev/x[:/dev/y][:rwm]`.
fn devices(node: &Node, path: &KeyPath) -> Result<Vec<DeviceMapping>, Located> {
    let specs = list_of_strings(node, path)?;
    specs
        .iter()
        .zip(list(node, path)?)
        .enumerate()
        .map(|(i, (spec, item))| {
            DeviceMapping::parse(spec).map_err(|m| fail(item, &path.index(i), m))
        })
        .collect()
}

/// `env_file`s in order, then `environment`; a variable named without a value is taken
/// from the environment.
fn environment(
    cx: &mut Cx<'_>,
    at: &Sites<'_>,
) -> Result<BTreeMap<String, Option<String>>, Located> {
    let mut env = BTreeMap::new();
    for (written, required, pos, p) in &at.env_files {
        let abs = cx.host_path(written, p);
        let text = match std::fs::read_to_string(&abs) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let message = format!("cannot read {written}: {}", super::io_message(&e));
                return Err(Located::new(*pos, p, message));
            }
        };
        let vars = dotenv::parse(&text, cx.env)
            .map_err(|e| Located::new(*pos, p, format!("{written}:{}: {}", e.line, e.message)))?;
        for (k, v) in vars {
            env.insert(k, Some(v));
        }
    }
    for (k, v) in &at.environment {
        let value = v.clone().or_else(|| (cx.env)(k));
        env.insert(k.clone(), value);
    }
    Ok(env)
}

/// `env_file`: a path, a list of paths, or (the Compose Specification's long form) a list
/// of `{path, required}`.
fn env_files(node: &Node, path: &KeyPath) -> Result<Vec<(String, bool, Pos, KeyPath)>, Located> {
    let Value::Seq(items) = &node.value else {
        return Ok(string_or_list(node, path)?
            .into_iter()
            .map(|(f, pos, p)| (f, true, pos, p))
            .collect());
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Value::Map(entries) = &item.value else {
            out.push((string(item, &p)?, true, item.pos, p));
            continue;
        };
        let mut file = None;
        let mut required = true;
        for e in entries {
            let q = p.key(&e.key);
            match e.key.as_str() {
                "path" => file = Some((super::nonempty_string(&e.value, &q)?, e.value.pos, q)),
                "required" => required = boolean(&e.value, &q)?,
                k if is_extension(k) => {}
                _ => return Err(unknown_key(e, &q, &["path", "required"])),
            }
        }
        let (f, pos, q) = file.ok_or_else(|| fail(item, &p, "needs a path"))?;
        out.push((f, required, pos, q));
    }
    Ok(out)
}

/// Roughly what Docker's reference parser accepts: `[host[:port]/]path[:tag][@digest]`,
/// the path in lowercase.
fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("no image specified".to_owned());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid image reference {image:?}: it contains whitespace"
        ));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty() && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !ok {
            return Err(format!("invalid image reference {image:?}: bad digest"));
        }
    }
    let (name, tag) = match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(format!("invalid image reference {image:?}: bad tag {t:?}"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains(['.', ':']) || first == "localhost" {
            parts.remove(0);
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "invalid image reference {image:?}: a repository name is lowercase letters, digits and separators"
            ));
        }
    }
    Ok(())
}

fn command(node: &Node, path: &KeyPath) -> Result<Option<Vec<String>>, Located> {
    match &node.value {
        Value::Null => Ok(None),
        Value::Seq(_) => list_of_strings(node, path).map(Some),
        Value::Map(_) => Err(expected(node, path, "a string or a list of strings")),
        _ => {
            let text = string(node, path)?;
            split_command(&text)
                .map(Some)
                .map_err(|m| fail(node, path, m))
        }
    }
}

const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "disable",
    "interval",
    "timeout",
    "start_period",
    "start_interval",
    "retries",
];

fn healthcheck(node: &Node, path: &KeyPath, cx: &mut Cx<'_>) -> Result<Healthcheck, Located> {
    let mut h = Healthcheck::default();
    let mut test_node = None;
    for e in mapping(node, path)? {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "test" => {
                h.test = Some(health_test(v, &p)?);
                test_node = Some(v);
            }
            "disable" => h.disable = boolean(v, &p)?,
            "interval" => h.interval = Some(duration(v, &p)?),
            "timeout" => h.timeout = Some(duration(v, &p)?),
            "start_period" => h.start_period = Some(duration(v, &p)?),
            "start_interval" => {
                duration(v, &p)?;
                cx.ignore("healthcheck.start_interval");
            }
            "retries" => h.retries = Some(unsigned(v, &p)?),
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, HEALTHCHECK_KEYS)),
        }
    }
    let none = h.test.as_deref() == Some(&["NONE".to_owned()][..]);
    if let (true, Some(t)) = (h.disable && !none, test_node) {
        return Err(fail(
            t,
            &path.key("test"),
            "test and disable: true cannot be set together",
        ));
    }
    if none {
        h.disable = true;
    }
    Ok(h)
}

fn health_test(node: &Node, path: &KeyPath) -> Result<Vec<String>, Located> {
    match &node.value {
        Value::Seq(_) => {
            let test = list_of_strings(node, path)?;
            let ok = match test.first().map(String::as_str) {
                Some("NONE") => test.len() == 1,
                Some("CMD") | Some("CMD-SHELL") => test.len() >= 2,
                _ => false,
            };
            if !ok {
                return Err(fail(
                    node,
                    path,
                    "expected [\"CMD\", program, args...], [\"CMD-SHELL\", command] or [\"NONE\"], or a string (run by the shell)",
                ));
            }
            Ok(test)
        }
        Value::Map(_) | Value::Null => Err(expected(node, path, "a string or a list of strings")),
        _ => {
            let cmd = super::nonempty_string(node, path)?;
            Ok(vec!["CMD-SHELL".to_owned(), cmd])
        }
    }
}

const PROPAGATIONS: &[&str] = &[
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

fn volumes<'n>(
    node: &'n Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    at: &mut Sites<'n>,
) -> Result<Vec<ServiceVolume>, Located> {
    let mut out = Vec::new();
    for (i, item) in list(node, path)?.iter().enumerate() {
        let p = path.index(i);
        let v = match &item.value {
            Value::Map(_) => long_volume(item, &p, cx)?,
            Value::Str(spec) => {
                let short = parse_volume(spec).map_err(|m| fail(item, &p, m))?;
                let bind = short.is_bind();
                if !bind && short.propagation.is_some() {
                    return Err(fail(item, &p, "a propagation option is for bind mounts"));
                }
                if bind && short.nocopy {
                    return Err(fail(item, &p, "nocopy is for volumes, not bind mounts"));
                }
                ServiceVolume {
                    kind: if bind {
                        VolumeKind::Bind
                    } else {
                        VolumeKind::Volume
                    },
                    source: if bind {
                        cx.host_path(&short.source, &p)
                    } else {
                        short.source
                    },
                    target: short.target,
                    read_only: short.read_only,
                    propagation: short.propagation,
                    nocopy: short.nocopy,
                    tmpfs_size: None,
                }
            }
            _ => {
                return Err(expected(
                    item,
                    &p,
                    "a string such as ./data:/data, or a mapping",
                ))
            }
        };
        if v.kind == VolumeKind::Volume && !v.source.is_empty() {
            at.named_volumes.push((v.source.clone(), item, p));
        }
        out.push(v);
    }
    Ok(out)
}

const LONG_VOLUME_KEYS: &[&str] = &[
    "type",
    "source",
    "target",
    "read_only",
    "consistency",
    "bind",
    "volume",
    "tmpfs",
];

fn long_volume(node: &Node, path: &KeyPath, cx: &mut Cx<'_>) -> Result<ServiceVolume, Located> {
    let mut kind = None;
    let mut source = None;
    let mut target = None;
    let mut v = ServiceVolume {
        kind: VolumeKind::Volume,
        source: String::new(),
        target: String::new(),
        read_only: false,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
    };
    // Which option mappings were given, for the type check.
    let mut options: Vec<(&str, &Entry)> = Vec::new();
    for e in mapping(node, path)? {
        let p = path.key(&e.key);
        let val = &e.value;
        match e.key.as_str() {
            "type" => {
                kind = Some(match string(val, &p)?.as_str() {
                    "bind" => VolumeKind::Bind,
                    "volume" => VolumeKind::Volume,
                    "tmpfs" => VolumeKind::Tmpfs,
                    t @ ("npipe" | "cluster" | "image") => {
                        return Err(fail(val, &p, format!("{t} mounts are not supported")))
                    }
                    _ => return Err(expected(val, &p, "volume, bind or tmpfs")),
                });
            }
            "source" => source = Some((string(val, &p)?, p)),
            "target" => target = Some(super::nonempty_string(val, &p)?),
            "read_only" => v.read_only = boolean(val, &p)?,
            "consistency" => {
                string(val, &p)?;
            }
            "bind" => {
                options.push(("bind", e));
                for f in mapping_or_null(val, &p)? {
                    let q = p.key(&f.key);
                    match f.key.as_str() {
                        "propagation" => {
                            v.propagation = Some(one_of(&f.value, &q, PROPAGATIONS)?.to_owned())
                        }
                        k if is_extension(k) => {}
                        _ => return Err(unknown_key(f, &q, &["propagation"])),
                    }
                }
            }
            "volume" => {
                options.push(("volume", e));
                for f in mapping_or_null(val, &p)? {
                    let q = p.key(&f.key);
                    match f.key.as_str() {
                        "nocopy" => v.nocopy = boolean(&f.value, &q)?,
                        k if is_extension(k) => {}
                        _ => return Err(unknown_key(f, &q, &["nocopy"])),
                    }
                }
            }
            "tmpfs" => {
                options.push(("tmpfs", e));
                for f in mapping_or_null(val, &p)? {
                    let q = p.key(&f.key);
                    match f.key.as_str() {
                        "size" => {
                            v.tmpfs_size = Some(match &f.value.value {
                                Value::Int(_) => unsigned(&f.value, &q)?,
                                _ => parse_bytes(&string(&f.value, &q)?)
                                    .map_err(|m| fail(&f.value, &q, m))?,
                            })
                        }
                        k if is_extension(k) => {}
                        _ => return Err(unknown_key(f, &q, &["size"])),
                    }
                }
            }
            k if is_extension(k) => {}
            _ => return Err(unknown_key(e, &p, LONG_VOLUME_KEYS)),
        }
    }
    let Some(kind) = kind else {
        return Err(fail(
            node,
            path,
            "a volume in long syntax needs a type: volume, bind or tmpfs",
        ));
    };
    v.kind = kind;
    let Some(target) = target else {
        return Err(fail(
            node,
            path,
            "a volume needs a target: the path in the container",
        ));
    };
    if !target.starts_with('/') {
        return Err(fail(
            node,
            &path.key("target"),
            format!("the target {target:?} must be an absolute path in the container"),
        ));
    }
    v.target = target;
    let type_name = match kind {
        VolumeKind::Bind => "bind",
        VolumeKind::Volume => "volume",
        VolumeKind::Tmpfs => "tmpfs",
    };
    if let Some((opt, e)) = options.iter().find(|(opt, _)| *opt != type_name) {
        return Err(Located::new(
            e.key_pos,
            path.key(opt),
            format!("{opt} options are incompatible with type {type_name}"),
        ));
    }
    match (kind, source) {
        (VolumeKind::Bind, None) => {
            return Err(fail(
                node,
                path,
                "a bind mount needs a source: the path on the host",
            ))
        }
        (VolumeKind::Bind, Some((s, p))) => v.source = cx.host_path(&s, &p),
        (VolumeKind::Tmpfs, Some((s, _))) if !s.is_empty() => {
            return Err(fail(
                node,
                &path.key("source"),
                "a tmpfs mount has no source",
            ))
        }
        (VolumeKind::Volume, Some((s, _))) => v.source = s,
        _ => {}
    }
    Ok(v)
}

fn ports(node: &Node, path: &KeyPath, cx: &mut Cx<'_>) -> Result<Vec<PortSpec>, Located> {
    let mut out = Vec::new();
    for (i, item) in list(node, path)?.iter().enumerate() {
        let p = path.index(i);
        match &item.value {
            Value::Map(entries) => out.push(long_port(item, entries, &p)?),
            Value::Str(_) | Value::Int(_) => {
                let spec = string(item, &p)?;
                let short = parse_port(&spec).map_err(|m| fail(item, &p, m))?;
                if let Some(ip) = &short.host_ip {
                    cx.warn(format!(
                        "{p}: ignoring the IP address {ip}: a service's published port listens on every address"
                    ));
                }
                out.extend(short.mappings.iter().map(|(published, target)| PortSpec {
                    protocol: short.protocol,
                    target: *target,
                    published: *published,
                    mode: PublishMode::Ingress,
                }));
            }
            _ => {
                return Err(expected(
                    item,
                    &p,
                    "a port such as \"8080:80\", or a mapping with target, published, protocol and mode",
                ))
            }
        }
    }
    Ok(out)
}

fn long_port(node: &Node, entries: &[Entry], path: &KeyPath) -> Result<PortSpec, Located> {
    let mut target = None;
    let mut port = PortSpec {
        protocol: Protocol::Tcp,
        target: 0,
        published: None,
        mode: PublishMode::Ingress,
    };
    let port_number = |n: &Node, p: &KeyPath, min: u64| {
        let v = unsigned(n, p)?;
        u16::try_from(v)
            .ok()
            .filter(|v| u64::from(*v) >= min)
            .ok_or_else(|| expected(n, p, &format!("a port number ({min}-65535)")))
    };
    for e in entries {
        let p = path.key(&e.key);
        let v = &e.value;
        match e.key.as_str() {
            "target" => target = Some(port_number(v, &p, 1)?),
            "published" => port.published = Some(port_number(v, &p, 0)?).filter(|p| *p != 0),
            "protocol" => {
                port.protocol = match one_of(v, &p, &["tcp", "udp", "sctp"])? {
                    "udp" => Protocol::Udp,
                    "sctp" => Protocol::Sctp,
                    _ => Protocol::Tcp,
                }
            }
            "mode" => {
                port.mode = match one_of(v, &p, &["ingress", "host"])? {
                    "host" => PublishMode::Host,
                    _ => PublishMode::Ingress,
                }
            }
            k if is_extension(k) => {}
            _ => {
                return Err(unknown_key(
                    e,
                    &p,
                    &["target", "published", "protocol", "mode"],
                ))
            }
        }
    }
    port.target = target.ok_or_else(|| fail(node, path, "a port needs a target"))?;
    Ok(port)
}

fn networks(
    node: &Node,
    path: &KeyPath,
    cx: &mut Cx<'_>,
    at: &mut Sites<'_>,
) -> Result<BTreeMap<String, ServiceNetwork>, Located> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = path.index(i);
                let name = super::nonempty_string(item, &p)?;
                at.networks.push((name.clone(), item.pos, p));
                out.insert(name, ServiceNetwork::default());
            }
        }
        Value::Map(entries) => {
            for e in entries {
                let p = path.key(&e.key);
                let mut n = ServiceNetwork::default();
                for f in mapping_or_null(&e.value, &p)? {
                    let q = p.key(&f.key);
                    match f.key.as_str() {
                        "aliases" => n.aliases = list_of_strings(&f.value, &q)?,
                        "ipv4_address" => {
                            n.ipv4_address = Some(string(&f.value, &q)?);
                            cx.ignore("networks.ipv4_address");
                        }
                        "ipv6_address" => {
                            n.ipv6_address = Some(string(&f.value, &q)?);
                            cx.ignore("networks.ipv6_address");
                        }
                        "driver_opts" => {
                            string_map(&f.value, &q)?;
                            cx.ignore("networks.driver_opts");
                        }
                        k if is_extension(k) => {}
                        _ => {
                            return Err(unknown_key(
                                f,
                                &q,
                                &["aliases", "ipv4_address", "ipv6_address", "driver_opts"],
                            ))
                        }
                    }
                }
                at.networks.push((e.key.clone(), e.key_pos, p));
                out.insert(e.key.clone(), n);
            }
        }
        _ => {
            return Err(expected(
                node,
                path,
                "a list of network names, or a mapping of network names",
            ))
        }
    }
    Ok(out)
}

fn file_refs<'n>(
    node: &'n Node,
    path: &KeyPath,
    sites: &mut Vec<(String, &'n Node, KeyPath)>,
) -> Result<Vec<FileReference>, Located> {
    let mut out = Vec::new();
    for (i, item) in list(node, path)?.iter().enumerate() {
        let p = path.index(i);
        let r = match &item.value {
            Value::Map(entries) => {
                let mut r = FileReference {
                    source: String::new(),
                    target: None,
                    uid: None,
                    gid: None,
                    mode: None,
                };
                let mut source = None;
                for e in entries {
                    let q = p.key(&e.key);
                    let v = &e.value;
                    match e.key.as_str() {
                        "source" => source = Some(super::nonempty_string(v, &q)?),
                        "target" => r.target = Some(super::nonempty_string(v, &q)?),
                        "uid" => r.uid = Some(string(v, &q)?),
                        "gid" => r.gid = Some(string(v, &q)?),
                        "mode" => r.mode = Some(file_mode(v, &q)?),
                        k if is_extension(k) => {}
                        _ => {
                            return Err(unknown_key(
                                e,
                                &q,
                                &["source", "target", "uid", "gid", "mode"],
                            ))
                        }
                    }
                }
                r.source = source.ok_or_else(|| {
                    fail(
                        item,
                        &p,
                        "needs a source: the name under the top-level section",
                    )
                })?;
                r
            }
            Value::Seq(_) | Value::Null => {
                return Err(expected(
                    item,
                    &p,
                    "a name, or a mapping with source and target",
                ))
            }
            _ => FileReference {
                source: super::nonempty_string(item, &p)?,
                target: None,
                uid: None,
                gid: None,
                mode: None,
            },
        };
        sites.push((r.source.clone(), item, p));
        out.push(r);
    }
    Ok(out)
}

/// A file mode: an integer as written (`0440` and `0o440` are octal, `288` decimal).
fn file_mode(node: &Node, path: &KeyPath) -> Result<u32, Located> {
    let what = "a file mode such as 0440";
    let value = match &node.value {
        Value::Int(i) => u32::try_from(*i).ok(),
        Value::Str(s) => {
            let s = s.trim();
            if let Some(oct) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
                u32::from_str_radix(oct, 8).ok()
            } else if s.len() > 1 && s.starts_with('0') {
                u32::from_str_radix(&s[1..], 8).ok()
            } else {
                s.parse::<u32>().ok()
            }
        }
        _ => None,
    };
    value
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| expected(node, path, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images() {
        for ok in [
            "busybox",
            "busybox:latest",
            "198.18.0.250:5000/busybox:latest",
            "localhost/app",
            "Registry.Example.com/team/app:1.2-rc_3",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a/b/c:v1",
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "bus box",
            "app:",
            "app:-x",
            "app@sha256:xyz",
            "a//b",
            "-app",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
